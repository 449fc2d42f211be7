#include "trellis/kernel/exec/blocking_pool.h"

#include <gtest/gtest.h>

#include <atomic>
#include <chrono>
#include <future>
#include <stdexcept>
#include <thread>

namespace trellis::kernel::exec {
namespace {

using namespace std::chrono_literals;

TEST(BlockingPoolTest, RunsTasksOnOtherThreads) {
  BlockingPool pool(2, 16);
  std::promise<std::thread::id> where;
  ASSERT_TRUE(pool.trySubmit([&] { where.set_value(std::this_thread::get_id()); }));
  auto f = where.get_future();
  ASSERT_EQ(f.wait_for(10s), std::future_status::ready);
  EXPECT_NE(f.get(), std::this_thread::get_id());
}

TEST(BlockingPoolTest, RunsTasksConcurrently) {
  BlockingPool pool(2, 16);
  std::promise<void> a_started, b_started;
  std::promise<void> release;
  auto gate = release.get_future().share();
  ASSERT_TRUE(pool.trySubmit([&, gate] {
    a_started.set_value();
    gate.wait();
  }));
  ASSERT_TRUE(pool.trySubmit([&, gate] {
    b_started.set_value();
    gate.wait();
  }));
  // Both start while the other is still blocked.
  EXPECT_EQ(a_started.get_future().wait_for(10s), std::future_status::ready);
  EXPECT_EQ(b_started.get_future().wait_for(10s), std::future_status::ready);
  release.set_value();
}

TEST(BlockingPoolTest, RefusesWhenQueueIsFull) {
  BlockingPool pool(1, 2);
  std::promise<void> started, release;
  auto gate = release.get_future().share();
  ASSERT_TRUE(pool.trySubmit([&, gate] {
    started.set_value();
    gate.wait();
  }));
  ASSERT_EQ(started.get_future().wait_for(10s), std::future_status::ready);
  std::atomic<int> ran{0};
  EXPECT_TRUE(pool.trySubmit([&] { ++ran; }));
  EXPECT_TRUE(pool.trySubmit([&] { ++ran; }));
  EXPECT_EQ(pool.queued(), 2u);
  EXPECT_FALSE(pool.trySubmit([&] { ++ran; }));
  EXPECT_FALSE(pool.trySubmit(nullptr));
  release.set_value();
  auto deadline = std::chrono::steady_clock::now() + 10s;
  while (ran.load() < 2 && std::chrono::steady_clock::now() < deadline) {
    std::this_thread::sleep_for(1ms);
  }
  EXPECT_EQ(ran.load(), 2);
  EXPECT_EQ(pool.queued(), 0u);
  EXPECT_TRUE(pool.trySubmit([&] { ++ran; }));
}

TEST(BlockingPoolTest, DestructorRunsQueuedTasks) {
  std::atomic<int> ran{0};
  {
    BlockingPool pool(1, 100);
    for (int i = 0; i < 50; ++i) {
      ASSERT_TRUE(pool.trySubmit([&] {
        std::this_thread::sleep_for(1ms);
        ++ran;
      }));
    }
  }
  EXPECT_EQ(ran.load(), 50);
}

TEST(BlockingPoolTest, SurvivesThrowingTasks) {
  BlockingPool pool(1, 16);
  ASSERT_TRUE(pool.trySubmit([] { throw std::runtime_error("boom"); }));
  ASSERT_TRUE(pool.trySubmit([] { throw 42; }));
  std::promise<void> done;
  ASSERT_TRUE(pool.trySubmit([&] { done.set_value(); }));
  EXPECT_EQ(done.get_future().wait_for(10s), std::future_status::ready);
}

TEST(BlockingPoolTest, ZeroThreadsStillRuns) {
  BlockingPool pool(0, 4);
  std::promise<void> done;
  ASSERT_TRUE(pool.trySubmit([&] { done.set_value(); }));
  EXPECT_EQ(done.get_future().wait_for(10s), std::future_status::ready);
}

}  // namespace
}  // namespace trellis::kernel::exec
