// In-process publish/subscribe by topic. Publishing never blocks the caller: events go to
// a bounded queue drained by one dispatcher thread; when the queue is full the event is
// dropped and counted (delivery is at-most-once, as the ABI documents). An event whose
// topic no subscription matches when it is published goes nowhere (counted as published;
// a later subscription never sees it) and takes no room in the queue.
//
// An event published as Delivery::kBatched does not wake the dispatcher by itself: it is
// delivered with the next prompt event, once kBatchSize events wait, or kBatchDelay after
// the dispatcher saw it, whichever comes first. For records published once per request that
// nobody waits for (plugins' audit records): one wake-up per batch instead of one futex
// wake and two context switches per request.
//
//   EventBus bus(10000);
//   bus.subscribe("request.*", [](const Event& e) { ... });
//   bus.publish({"acme", "trellis/hello", "request.completed", R"({"status":200})"});
//   bus.publish({"acme", "trellis/secrets", "audit.plugin", payload}, Delivery::kBatched);
#pragma once

#include <atomic>
#include <chrono>
#include <condition_variable>
#include <cstdint>
#include <deque>
#include <functional>
#include <memory>
#include <mutex>
#include <string>
#include <string_view>
#include <thread>
#include <vector>

namespace trellis::kernel::events {

struct Event {
  Event() = default;
  Event(std::string tenant, std::string publisher, std::string topic, std::string payload,
        std::string traceparent = {}, std::string tracestate = {})
      : tenant(std::move(tenant)),
        publisher(std::move(publisher)),
        topic(std::move(topic)),
        payload(std::move(payload)),
        traceparent(std::move(traceparent)),
        tracestate(std::move(tracestate)) {}

  std::string tenant;     // "" for host-wide events
  std::string publisher;  // plugin id, or "kernel"
  std::string topic;
  std::string payload;
  // W3C trace context of the call that published it ("" when none); the subscriber's call
  // continues that trace.
  std::string traceparent;
  std::string tracestate;
};

using Subscriber = std::function<void(const Event&)>;

enum class Delivery { kPrompt, kBatched };

class EventBus {
 public:
  explicit EventBus(size_t max_queued);
  ~EventBus();  // delivers what is queued, then joins; never call from a subscriber
  EventBus(const EventBus&) = delete;
  EventBus& operator=(const EventBus&) = delete;

  // `pattern` is an exact topic, "prefix.*" (any topic starting with "prefix."), or "*"
  // (every topic). Returns an id for unsubscribe(). Subscribers run on the dispatcher
  // thread, one event at a time; they may call subscribe/unsubscribe/publish. An exception
  // escaping a subscriber is logged and does not affect other subscribers.
  uint64_t subscribe(std::string pattern, Subscriber fn);
  // Once this returns, `fn` is not running and will not run again — except when called
  // from a subscriber (on the dispatcher thread), where waiting would deadlock: then only
  // later calls are prevented. Unknown ids are ignored.
  void unsubscribe(uint64_t id);
  // False (and counted in dropped()) if the queue is full or the bus is stopping.
  bool publish(Event event, Delivery delivery = Delivery::kPrompt);
  // Waits until everything published before the call is delivered (tests, shutdown).
  // Returns at once when called from a subscriber.
  void flush();

  uint64_t published() const { return published_.load(); }  // accepted by publish()
  uint64_t dropped() const { return dropped_.load(); }

  static bool topicMatches(std::string_view pattern, std::string_view topic);

  static constexpr size_t kBatchSize = 64;
  static constexpr std::chrono::milliseconds kBatchDelay{2};

 private:
  void run();
  // The dispatcher should deliver now rather than let batched events gather.
  bool dueLocked() const {
    return stopping_ || prompt_ > 0 || flushes_ > 0 || waiting_ >= kBatchSize;
  }
  bool onDispatcherThread() const { return std::this_thread::get_id() == thread_.get_id(); }

  struct Subscription {
    uint64_t id;
    std::string pattern;
    Subscriber fn;
    bool active = true;  // guarded by mu_
  };
  // Runs every matching subscriber on one event; called and returns with `lock` held.
  void deliver(const Event& event, std::unique_lock<std::mutex>& lock,
               std::vector<std::shared_ptr<Subscription>>& targets);
  const size_t max_queued_;
  std::mutex mu_;
  std::condition_variable cv_;       // work arrived or stopping
  std::condition_variable idle_cv_;  // a delivery finished
  std::deque<Event> queue_;          // published, not yet taken by the dispatcher
  size_t waiting_ = 0;               // events queued or taken but not yet being delivered
  size_t prompt_ = 0;                // kPrompt events in queue_
  size_t flushes_ = 0;               // flush() calls waiting
  std::vector<std::shared_ptr<Subscription>> subs_;
  uint64_t next_id_ = 1;
  uint64_t calling_ = 0;    // id of the subscriber running now, 0 if none
  uint64_t accepted_ = 0;   // events enqueued so far
  uint64_t delivered_ = 0;  // events fully delivered so far
  bool stopping_ = false;
  std::atomic<uint64_t> published_{0};
  std::atomic<uint64_t> dropped_{0};
  std::thread thread_;
};

}  // namespace trellis::kernel::events
