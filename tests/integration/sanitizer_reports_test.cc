// A sanitizer report in trellisd's log (its own, or a plugin worker's: they share its
// stderr) fails the test that owns the server, once per report, at stop, kill or restart.
#include <gmock/gmock.h>
#include <gtest/gtest-spi.h>
#include <gtest/gtest.h>

#include <fstream>
#include <string>

#include "support/test_support.h"

namespace trellis::test {
namespace {

const std::map<std::string, std::string> kAcme = {{"Authorization", "Bearer acme-key"}};

// What ASan would print; planted, so the test does not depend on a real bug.
const std::string kPlanted =
    "==4242==ERROR: AddressSanitizer: heap-use-after-free on address 0x602000000010\n"
    "READ of size 4 at 0x602000000010 thread T3\n"
    "SUMMARY: AddressSanitizer: heap-use-after-free kernel/src/foo.cc:42 in Foo::bar()\n";

void plant(const TrellisdProcess& server) {
  std::ofstream(server.dir() / "trellisd.log", std::ios::app) << kPlanted;
}

TEST(SanitizerReportsTest, AReportInTheLogFailsTheTestAtStopAndOnlyOnce) {
  TrellisdProcess server(defaultTestConfig());
  ASSERT_TRUE(server.start()) << server.log();
  plant(server);
  EXPECT_NONFATAL_FAILURE(server.stop(), "heap-use-after-free on address 0x602000000010");
  // The restart appends to the same log: the report already seen is not seen again.
  ASSERT_TRUE(server.start()) << server.log();
  EXPECT_EQ(server.stop(), 0);
}

TEST(SanitizerReportsTest, AReportFailsTheTestWhenTheServerIsKilledOrDestroyed) {
  {
    TrellisdProcess server(defaultTestConfig());
    ASSERT_TRUE(server.start()) << server.log();
    plant(server);
    EXPECT_NONFATAL_FAILURE(server.kill(), "sanitizer report in");
  }
  EXPECT_NONFATAL_FAILURE(
      {
        TrellisdProcess server(defaultTestConfig());
        ASSERT_TRUE(server.start()) << server.log();
        plant(server);
      },
      "heap-use-after-free");
}

TEST(SanitizerReportsTest, AWorkerThatCrashesOnPurposeIsNoFinding) {
  TrellisdProcess server(
      defaultTestConfig("    - id: fixture/crashy\n"
                        "      isolation: process\n"));
  ASSERT_TRUE(server.start()) << server.log();
  EXPECT_NE(request(server.port(), "GET", "/crashy/segv", kAcme).status, 200);
  EXPECT_EQ(server.stop(), 0) << server.log();
}

// A real report: the crashy fixture's /crashy/ub overflows an int in its worker, which
// UBSan reports. The worker then answers, or ends when the UBSAN_OPTIONS it gets from
// trellisd say halt_on_error (scripts/test.sh sets it): the report fails the test either way.
TEST(SanitizerReportsTest, UndefinedBehaviourInAWorkerFailsTheTest) {
#ifndef TRELLIS_TEST_UBSAN
  GTEST_SKIP() << "needs a build with UBSan (the asan preset)";
#else
  TrellisdProcess server(
      defaultTestConfig("    - id: fixture/crashy\n"
                        "      isolation: process\n"));
  ASSERT_TRUE(server.start()) << server.log();
  auto r = request(server.port(), "GET", "/crashy/ub", kAcme);
  EXPECT_THAT(r.status, ::testing::AnyOf(200, 502)) << r.body;
  EXPECT_NONFATAL_FAILURE(server.stop(), "runtime error: signed integer overflow");
#endif
}

}  // namespace
}  // namespace trellis::test
