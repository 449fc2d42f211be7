#include "trellis/kernel/exec/blocking_pool.h"

#include <spdlog/spdlog.h>

#include <exception>
#include <utility>

namespace trellis::kernel::exec {
namespace {
// Set on a pool thread whose own task destroyed the pool.
thread_local bool t_pool_destroyed = false;
}  // namespace

BlockingPool::BlockingPool(size_t threads, size_t max_queued) : max_queued_(max_queued) {
  if (threads == 0) threads = 1;
  threads_.reserve(threads);
  for (size_t i = 0; i < threads; ++i) threads_.emplace_back([this] { run(); });
}

BlockingPool::~BlockingPool() {
  {
    std::lock_guard lock(mu_);
    stopping_ = true;
  }
  cv_.notify_all();
  for (auto& t : threads_) {
    if (t.get_id() != std::this_thread::get_id()) {
      t.join();
    } else {  // joining itself would throw: this thread leaves run() as soon as it is back
      t_pool_destroyed = true;
      t.detach();
    }
  }
}

bool BlockingPool::trySubmit(std::function<void()> task) {
  if (!task) return false;
  {
    std::lock_guard lock(mu_);
    if (stopping_ || queue_.size() >= max_queued_) return false;
    queue_.push_back(std::move(task));
  }
  cv_.notify_one();
  return true;
}

size_t BlockingPool::queued() const {
  std::lock_guard lock(mu_);
  return queue_.size();
}

void BlockingPool::run() {
  while (true) {
    {
      std::function<void()> task;
      {
        std::unique_lock lock(mu_);
        cv_.wait(lock, [this] { return stopping_ || !queue_.empty(); });
        // Shutting down still empties the queue: callers were promised an answer.
        if (queue_.empty()) return;
        task = std::move(queue_.front());
        queue_.pop_front();
      }
      try {
        task();
      } catch (const std::exception& e) {
        spdlog::error("blocking pool: task threw: {}", e.what());
      } catch (...) {
        spdlog::error("blocking pool: task threw a non-standard exception");
      }
    }  // the task's captures go here, and may take the pool with them
    if (t_pool_destroyed) return;
  }
}

}  // namespace trellis::kernel::exec
