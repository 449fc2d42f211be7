// A bounded pool of threads for work that blocks (disk, egress, plugin routes declared
// blocking), so the event loops never stall. When the queue is full, submit() refuses
// at once and the caller answers 503 instead of queueing without bound.
//
//   BlockingPool pool(8, 1024);
//   if (!pool.trySubmit([&] { slowThing(); })) respond(problem(503, ...));
#pragma once

#include <condition_variable>
#include <cstddef>
#include <deque>
#include <functional>
#include <mutex>
#include <thread>
#include <vector>

namespace trellis::kernel::exec {

class BlockingPool {
 public:
  // `threads` 0 is taken as 1. `max_queued` counts waiting tasks, not running ones.
  BlockingPool(size_t threads, size_t max_queued);
  // Runs what is queued, then joins. A task that throws is logged; its thread carries on.
  // May run on one of the pool's own threads (a task dropped the last owner of the pool):
  // that thread is then detached and ends without touching the pool again.
  ~BlockingPool();
  BlockingPool(const BlockingPool&) = delete;
  BlockingPool& operator=(const BlockingPool&) = delete;

  // False if `max_queued` tasks are already waiting or the pool is shutting down.
  bool trySubmit(std::function<void()> task);
  size_t queued() const;

 private:
  void run();

  const size_t max_queued_;
  mutable std::mutex mu_;
  std::condition_variable cv_;
  std::deque<std::function<void()>> queue_;
  bool stopping_ = false;
  std::vector<std::thread> threads_;
};

}  // namespace trellis::kernel::exec
