#include "runtime/access_log.h"

#include <gmock/gmock.h>
#include <gtest/gtest.h>

#include <algorithm>
#include <string>

#include "support/test_support.h"

namespace trellis::kernel::runtime {
namespace {

using ::testing::HasSubstr;

// The destructor joins the writer thread (no thread touches the logger while it is freed):
// every line recorded before is in the file once it returns, and a second log may follow.
TEST(AccessLogTest, EveryLineIsInTheFileWhenTheLogIsDestroyed) {
  test::TempDir dir;
  const auto file = dir / "logs/access.log";
  for (int round = 0; round < 3; ++round) {
    AccessLog log(file.string());
    ASSERT_TRUE(log.enabled());
    for (int i = 0; i < 200; ++i) {
      const std::string id = "req-" + std::to_string(round) + "-" + std::to_string(i);
      AccessEntry e;
      e.request_id = id;
      e.method = "GET";
      e.status = 200;
      log.record(e);
    }
  }
  const std::string text = test::readFile(file);
  EXPECT_THAT(text, HasSubstr(R"("id":"req-0-0")"));
  EXPECT_THAT(text, HasSubstr(R"("id":"req-2-199")"));
  EXPECT_EQ(std::count(text.begin(), text.end(), '\n'), 600);
}

TEST(AccessLogTest, OffWritesNothing) {
  AccessLog log("off");
  EXPECT_FALSE(log.enabled());
  log.record(AccessEntry{});
}

}  // namespace
}  // namespace trellis::kernel::runtime
