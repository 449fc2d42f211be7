#include "trellis/kernel/config/config_merge.h"

#include <gtest/gtest.h>

#include <string>

namespace trellis::kernel::config {
namespace {

std::string merged(std::string_view base, std::string_view over) {
  auto m = mergeConfig(base, over);
  EXPECT_TRUE(m.isOk()) << m.status().message();
  return m.isOk() ? *m : "";
}

TEST(ConfigMergeTest, OverrideWinsPerKeyAndObjectsMergeDeeply) {
  EXPECT_EQ(
      merged(R"({"greeting":"Hello","limits":{"min":1,"max":10}})", R"({"limits":{"max":50}})"),
      R"({"greeting":"Hello","limits":{"max":50,"min":1}})");
  EXPECT_EQ(merged(R"({"greeting":"Hello"})", R"({"greeting":"Bonjour"})"),
            R"({"greeting":"Bonjour"})");
}

TEST(ConfigMergeTest, ArraysAndScalarsAreReplacedWhole) {
  EXPECT_EQ(merged(R"({"tags":["a","b"],"n":1})", R"({"tags":["c"]})"), R"({"n":1,"tags":["c"]})");
  EXPECT_EQ(merged(R"({"limits":{"max":1}})", R"({"limits":5})"), R"({"limits":5})");
}

TEST(ConfigMergeTest, AGlobalConfigThatIsNoObjectIsReplaced) {
  EXPECT_EQ(merged("", R"({"greeting":"Hi"})"), R"({"greeting":"Hi"})");
  EXPECT_EQ(merged("12", R"({"greeting":"Hi"})"), R"({"greeting":"Hi"})");
  EXPECT_EQ(merged("null", "{}"), "{}");
}

TEST(ConfigMergeTest, RefusesAnOverrideThatIsNoObjectOrNoJson) {
  auto scalar = mergeConfig("{}", "5");
  ASSERT_FALSE(scalar.isOk());
  EXPECT_EQ(scalar.status().message(), "override must be a JSON object");
  auto broken = mergeConfig("{}", "{\"a\":");
  ASSERT_FALSE(broken.isOk());
  EXPECT_EQ(broken.status().message().rfind("override is not valid JSON", 0), 0u);
}

}  // namespace
}  // namespace trellis::kernel::config
