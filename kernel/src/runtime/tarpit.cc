#include "runtime/tarpit.h"

#include <vector>

namespace trellis::kernel::runtime {

Tarpit::Tarpit() : thread_([this] { run(); }) {}

Tarpit::~Tarpit() {
  {
    std::lock_guard lock(mu_);
    stopping_ = true;
  }
  cv_.notify_one();
  thread_.join();
}

void Tarpit::hold(http::Respond respond, http::Response res, std::chrono::milliseconds delay) {
  {
    std::lock_guard lock(mu_);
    if (!stopping_) {
      held_.emplace(Clock::now() + delay, std::make_pair(std::move(respond), std::move(res)));
      cv_.notify_one();
      return;
    }
  }
  respond(std::move(res));  // shutting down: no more waiting
}

void Tarpit::run() {
  std::unique_lock lock(mu_);
  while (true) {
    if (stopping_ && held_.empty()) return;
    if (!stopping_) {
      if (held_.empty()) {
        cv_.wait(lock);
        continue;
      }
      if (Clock::now() < held_.begin()->first) {
        cv_.wait_until(lock, held_.begin()->first);
        continue;
      }
    }
    // Due (or shutting down): answer outside the lock, oldest first.
    std::vector<std::pair<http::Respond, http::Response>> due;
    auto now = Clock::now();
    for (auto it = held_.begin(); it != held_.end() && (stopping_ || it->first <= now);) {
      due.push_back(std::move(it->second));
      it = held_.erase(it);
    }
    lock.unlock();
    for (auto& [respond, res] : due) respond(std::move(res));
    lock.lock();
  }
}

}  // namespace trellis::kernel::runtime
