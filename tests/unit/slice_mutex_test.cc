#include "storage/internal/slice_mutex.h"

#include <gtest/gtest.h>

#include <atomic>
#include <chrono>
#include <mutex>
#include <shared_mutex>
#include <thread>

namespace trellis::kernel::storage::internal {
namespace {

using namespace std::chrono_literals;

// A holder keeps the lock; a waiter asks for it (WaiterLock: exclusive or shared); the
// owner of a sliced job, between two slices, lets waiters in. That call must return only
// once the waiter has had the lock, so after the holder let go of it.
template <typename WaiterLock>
void letWaitersInReturnsOnlyAfterTheWaiterGotTheLock() {
  SliceMutex mu;
  std::atomic<bool> holding{false};
  std::atomic<bool> released{false};
  std::atomic<bool> waiter_got_it{false};
  std::thread holder([&] {
    std::unique_lock lock(mu);
    holding = true;
    std::this_thread::sleep_for(300ms);  // the waiter blocks, the owner starts waiting
    released = true;
  });
  while (!holding) std::this_thread::yield();
  std::thread waiter([&] {
    WaiterLock lock(mu);
    waiter_got_it = true;
  });
  std::this_thread::sleep_for(100ms);  // the waiter is blocked in lock() by now

  mu.letWaitersIn();
  EXPECT_TRUE(released);
  waiter.join();
  holder.join();
  EXPECT_TRUE(waiter_got_it);
}

TEST(SliceMutexTest, LettingWaitersInWaitsForAThreadWaitingToLock) {
  letWaitersInReturnsOnlyAfterTheWaiterGotTheLock<std::unique_lock<SliceMutex>>();
}

TEST(SliceMutexTest, LettingWaitersInWaitsForAThreadWaitingToLockShared) {
  letWaitersInReturnsOnlyAfterTheWaiterGotTheLock<std::shared_lock<SliceMutex>>();
}

TEST(SliceMutexTest, LettingWaitersInReturnsAtOnceWhenNobodyWaits) {
  SliceMutex mu;
  { std::shared_lock lock(mu); }
  mu.letWaitersIn();
  std::unique_lock lock(mu);
  EXPECT_TRUE(lock.owns_lock());
}

}  // namespace
}  // namespace trellis::kernel::storage::internal
