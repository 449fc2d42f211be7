// The `policy:` section of trellis.yaml: budgets, fail modes and the decision log.
#include <gmock/gmock.h>
#include <gtest/gtest.h>

#include "trellis/kernel/config/config.h"

namespace trellis::kernel::config {
namespace {

using ::testing::HasSubstr;

std::string errorOf(const std::string& yaml) {
  try {
    Config::parse(yaml, "/etc/trellis");
  } catch (const ConfigError& e) {
    return e.what();
  }
  return "";
}

TEST(PolicyConfigTest, DefaultsAreMeteredAndLogless) {
  Config c = Config::parse("", "/etc/trellis");
  EXPECT_EQ(c.policy.instructions, 1'000'000u);
  EXPECT_EQ(c.policy.memory_bytes, 8u * 1024 * 1024);
  EXPECT_EQ(c.policy.wall_time.count(), 50);
  EXPECT_TRUE(c.policy.fail_open.empty());
  EXPECT_EQ(c.policy.decision_log, "off");
}

TEST(PolicyConfigTest, ReadsBudgetsFailModesAndDecisionLog) {
  Config c = Config::parse(
      "policy:\n"
      "  instructions: 5000\n"
      "  memory_bytes: 2097152\n"
      "  wall_time_ms: 20\n"
      "  fail: {on_request: open, on_plugin_install: closed}\n"
      "  decision_log: ../var/decisions.log\n"
      "  decision_log_sample: 0.25\n",
      "/etc/trellis");
  EXPECT_EQ(c.policy.instructions, 5000u);
  EXPECT_EQ(c.policy.memory_bytes, 2097152u);
  EXPECT_EQ(c.policy.wall_time.count(), 20);
  EXPECT_TRUE(c.policy.fail_open.at("on_request"));
  EXPECT_FALSE(c.policy.fail_open.at("on_plugin_install"));
  EXPECT_EQ(c.policy.decision_log, "/etc/var/decisions.log");
  EXPECT_DOUBLE_EQ(c.policy.decision_log_sample, 0.25);
}

TEST(PolicyConfigTest, BadValuesNameTheKey) {
  EXPECT_THAT(errorOf("policy: {fail: {on_request: maybe}}"),
              HasSubstr("policy.fail.on_request: expected open or closed"));
  EXPECT_THAT(errorOf("policy: {fail: {on_everything: open}}"),
              HasSubstr("policy.fail.on_everything: unknown key"));
  EXPECT_THAT(errorOf("policy: {decision_log_sample: 2}"),
              HasSubstr("policy.decision_log_sample: expected a number from 0 to 1"));
  EXPECT_THAT(errorOf("policy: {memory_bytes: 1024}"), HasSubstr("policy.memory_bytes"));
  EXPECT_THAT(errorOf("policy: {instructions: many}"), HasSubstr("policy.instructions"));
  EXPECT_THAT(errorOf("policy: {budget: 1}"), HasSubstr("policy.budget: unknown key"));
}

}  // namespace
}  // namespace trellis::kernel::config
