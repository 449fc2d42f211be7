// In-process publish/subscribe by topic. Publishing never blocks the caller: events go to
// a bounded queue drained by one dispatcher thread; when the queue is full the event is
// dropped and counted (delivery is at-most-once, as the ABI documents).
//
//   EventBus bus(10000);
//   bus.subscribe("request.*", [](const Event& e) { ... });
//   bus.publish({"acme", "trellis/hello", "request.completed", R"({"status":200})"});
#pragma once

#include <atomic>
#include <condition_variable>
#include <cstdint>
#include <deque>
#include <functional>
#include <mutex>
#include <string>
#include <thread>
#include <vector>

namespace trellis::kernel::events {

struct Event {
  std::string tenant;     // "" for host-wide events
  std::string publisher;  // plugin id, or "kernel"
  std::string topic;
  std::string payload;
};

using Subscriber = std::function<void(const Event&)>;

class EventBus {
 public:
  explicit EventBus(size_t max_queued);
  ~EventBus();  // delivers what is queued, then joins
  EventBus(const EventBus&) = delete;
  EventBus& operator=(const EventBus&) = delete;

  // `pattern` is an exact topic or "prefix.*". Returns an id for unsubscribe().
  uint64_t subscribe(std::string pattern, Subscriber fn);
  void unsubscribe(uint64_t id);
  // False (and counted in dropped()) if the queue is full or the bus is stopping.
  bool publish(Event event);
  // Waits until everything published so far is delivered (tests, shutdown).
  void flush();

  uint64_t published() const { return published_.load(); }
  uint64_t dropped() const { return dropped_.load(); }

  static bool topicMatches(std::string_view pattern, std::string_view topic);

 private:
  void run();

  struct Subscription {
    uint64_t id;
    std::string pattern;
    Subscriber fn;
  };
  const size_t max_queued_;
  std::mutex mu_;
  std::condition_variable cv_;
  std::condition_variable idle_cv_;
  std::deque<Event> queue_;
  std::vector<Subscription> subs_;
  uint64_t next_id_ = 1;
  bool delivering_ = false;
  bool stopping_ = false;
  std::atomic<uint64_t> published_{0};
  std::atomic<uint64_t> dropped_{0};
  std::thread thread_;
};

}  // namespace trellis::kernel::events
