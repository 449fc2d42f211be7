#include "trellis/kernel/util/log_limiter.h"

#include <gtest/gtest.h>

namespace trellis::kernel::util {
namespace {

using namespace std::chrono_literals;

TEST(LogLimiterTest, WritesAtMostItsLinesPerWindowAndCountsTheRest) {
  LogLimiter limiter(3, 10s);
  const auto t0 = LogLimiter::Clock::time_point{} + 1h;
  uint64_t left_out = 99;
  for (int i = 0; i < 3; ++i) {
    ASSERT_TRUE(limiter.allowAt(t0 + std::chrono::seconds(i), &left_out));
    EXPECT_EQ(left_out, 0u);
  }
  for (int i = 0; i < 5; ++i) EXPECT_FALSE(limiter.allowAt(t0 + 5s, &left_out));
  // The next window's first line says how many were left out; then the count starts over.
  ASSERT_TRUE(limiter.allowAt(t0 + 10s, &left_out));
  EXPECT_EQ(left_out, 5u);
  ASSERT_TRUE(limiter.allowAt(t0 + 11s, &left_out));
  EXPECT_EQ(left_out, 0u);
}

TEST(LogLimiterTest, SaysHowManyLinesWereLeftOut) {
  EXPECT_EQ(leftOut(0), "");
  EXPECT_EQ(leftOut(1), " (1 similar line left out)");
  EXPECT_EQ(leftOut(42), " (42 similar lines left out)");
}

}  // namespace
}  // namespace trellis::kernel::util
