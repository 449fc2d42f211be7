// Holds rate-limit refusals for a moment before sending them. The listener reads a
// connection's next request only after answering the current one, so a client flooding past
// its rate limit on keep-alive connections then costs about one request per connection per
// delay, instead of competing with other tenants for the event loop at full speed.
//
//   Tarpit tarpit;
//   tarpit.hold(std::move(respond), std::move(res), std::chrono::milliseconds(1000));
#pragma once

#include <chrono>
#include <condition_variable>
#include <map>
#include <mutex>
#include <thread>
#include <utility>

#include "trellis/kernel/http/message.h"

namespace trellis::kernel::runtime {

class Tarpit {
 public:
  Tarpit();
  ~Tarpit();  // sends whatever is still held, at once
  Tarpit(const Tarpit&) = delete;
  Tarpit& operator=(const Tarpit&) = delete;

  // Calls respond(res) after `delay`, from the tarpit's thread.
  void hold(http::Respond respond, http::Response res, std::chrono::milliseconds delay);

 private:
  using Clock = std::chrono::steady_clock;
  void run();

  std::mutex mu_;
  std::condition_variable cv_;
  std::multimap<Clock::time_point, std::pair<http::Respond, http::Response>> held_;
  bool stopping_ = false;
  std::thread thread_;
};

}  // namespace trellis::kernel::runtime
