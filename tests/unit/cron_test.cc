// Five-field UTC cron expressions: what fires when, and refusals that name the field.
#include "services/jobs/cron.h"

#include <gtest/gtest.h>

namespace trellis::kernel::services {
namespace {

int64_t nextAfter(const char* expression, int64_t after_ms) {
  auto c = CronSchedule::parse(expression);
  EXPECT_TRUE(c) << c.status().message();
  return c ? c->next(after_ms) : 0;
}

std::string errorOf(const char* expression) {
  auto c = CronSchedule::parse(expression);
  return c ? "" : c.status().message();
}

TEST(CronTest, NextMatchingMinute) {
  constexpr int64_t kJan1_0007 = 1767226020000;                     // Thursday 2026-01-01 00:07 UTC
  EXPECT_EQ(nextAfter("*/15 * * * *", kJan1_0007), 1767226500000);  // 00:15
  EXPECT_EQ(nextAfter("* * * * *", kJan1_0007), kJan1_0007 + 60000);  // strictly after
  EXPECT_EQ(nextAfter("30 3 * * mon-fri", 1767434400000),             // Saturday 10:00
            1767583800000);                                           // Monday 03:30
  EXPECT_EQ(nextAfter("0 12 * * 7", 1767441600000), 1767528000000);   // 7 is Sunday
  // Both day fields restricted: either matches (the 1st, or a Monday).
  EXPECT_EQ(nextAfter("0 0 1 * 1", 1767225600000), 1767571200000);
  EXPECT_EQ(nextAfter("0 0 1 JAN *", 1798761540000), 1798761600000);     // year rollover
  EXPECT_EQ(nextAfter("0 0 30 2 *", kJan1_0007), -1);                    // never
  EXPECT_EQ(nextAfter("5/20 1-3,22 * * *", kJan1_0007), 1767229500000);  // 01:05
}

TEST(CronTest, RefusalsNameTheField) {
  EXPECT_EQ(errorOf("* * * *"),
            "cron expression \"* * * *\" has 4 fields; expected 5: minute hour day-of-month "
            "month day-of-week");
  EXPECT_EQ(errorOf("61 * * * *"), "cron field 1 (minute): 61 is out of range 0-59");
  EXPECT_EQ(errorOf("* 24 * * *"), "cron field 2 (hour): 24 is out of range 0-23");
  EXPECT_EQ(errorOf("* * 0 * *"), "cron field 3 (day-of-month): 0 is out of range 1-31");
  EXPECT_EQ(errorOf("* * * foo *"), "cron field 4 (month): \"foo\" is not a number");
  EXPECT_EQ(errorOf("*/0 * * * *"), "cron field 1 (minute): step \"0\" must be 1-59");
  EXPECT_EQ(errorOf("5-1 * * * *"), "cron field 1 (minute): range 5-1 is backwards");
  EXPECT_EQ(errorOf("1,,2 * * * *"), "cron field 1 (minute): empty list item");
  EXPECT_EQ(errorOf("@daily"),
            "cron expression \"@daily\" has 1 fields; expected 5: minute hour day-of-month "
            "month day-of-week");
}

}  // namespace
}  // namespace trellis::kernel::services
