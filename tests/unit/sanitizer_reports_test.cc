// The test harness's scan of a server's log or a command's output for sanitizer reports
// (support/test_support.h): what counts as a report, what does not, and that a report fails
// the test.
#include <gmock/gmock.h>
#include <gtest/gtest-spi.h>
#include <gtest/gtest.h>

#include <string>

#include "support/test_support.h"

namespace trellis::test {
namespace {

using ::testing::HasSubstr;
using ::testing::IsEmpty;
using ::testing::Not;
using ::testing::SizeIs;
using ::testing::StartsWith;

const std::string kLogBefore =
    "2026-12-07T04:00:00.000 info trellisd listening on 127.0.0.1:41000\n"
    "2026-12-07T04:00:00.100 warning plugin fixture/crashy: worker exited\n";

const std::string kAsan =
    "=================================================================\n"
    "==4242==ERROR: AddressSanitizer: heap-use-after-free on address 0x602000000010 at pc "
    "0x55 bp 0x7ff sp 0x7fe\n"
    "READ of size 4 at 0x602000000010 thread T3\n"
    "    #0 0x55 in trellis::kernel::Foo::bar() kernel/src/foo.cc:42\n"
    "    #1 0x56 in main kernel/src/main.cc:80\n"
    "SUMMARY: AddressSanitizer: heap-use-after-free kernel/src/foo.cc:42 in Foo::bar()\n"
    "==4242==ABORTING\n";

const std::string kLeak =
    "=================================================================\n"
    "==4243==ERROR: LeakSanitizer: detected memory leaks\n"
    "\n"
    "Direct leak of 64 byte(s) in 1 object(s) allocated from:\n"
    "    #0 0x7f in operator new(unsigned long)\n"
    "    #1 0x55 in trellis::kernel::Leaky::make() kernel/src/leaky.cc:7\n"
    "\n"
    "SUMMARY: AddressSanitizer: 64 byte(s) leaked in 1 allocation(s).\n";

const std::string kUbsan =
    "/work/kernel/src/http/parser.cc:120:17: runtime error: signed integer overflow: "
    "2147483647 + 1 cannot be represented in type 'int'\n"
    "    #0 0x55 in parse /work/kernel/src/http/parser.cc:120\n"
    "SUMMARY: UndefinedBehaviorSanitizer: undefined-behavior "
    "/work/kernel/src/http/parser.cc:120:17 in\n";

const std::string kTsan =
    "==================\n"
    "WARNING: ThreadSanitizer: data race (pid=4244)\n"
    "  Write of size 8 at 0x7b0c00000000 by main thread:\n"
    "    #0 operator delete(void*) <null> (libtsan.so.2+0x4f9c9)\n"
    "  Previous read of size 8 at 0x7b0c00000000 by thread T2:\n"
    "    #0 spdlog::logger::sink_it_() <null>\n"
    "SUMMARY: ThreadSanitizer: data race (/work/build/tsan/kernel/trellisd+0x1) in main\n"
    "==================\n";

// What the crash fixtures make a worker print: deadly signals, not findings.
const std::string kSegv =
    "AddressSanitizer:DEADLYSIGNAL\n"
    "=================================================================\n"
    "==4245==ERROR: AddressSanitizer: SEGV on unknown address 0x000000000000 (pc 0x7f bp "
    "0x7ff sp 0x7fe T0)\n"
    "==4245==The signal is caused by a WRITE memory access.\n"
    "==4245==Hint: address points to the zero page.\n"
    "    #0 0x7f in segv tests/fixtures/crashy/crashy.c:43\n"
    "SUMMARY: AddressSanitizer: SEGV tests/fixtures/crashy/crashy.c:43 in segv\n"
    "==4245==ABORTING\n";
const std::string kStackOverflow =
    "AddressSanitizer:DEADLYSIGNAL\n"
    "==4246==ERROR: AddressSanitizer: stack-overflow on address 0x7ffd (pc 0x55 bp 0x7ff sp "
    "0x7fe T0)\n"
    "SUMMARY: AddressSanitizer: stack-overflow in recurse\n";
const std::string kOutOfMemory =
    "==4247==ERROR: AddressSanitizer: out of memory: allocator is trying to allocate 0x8000000 "
    "bytes\n"
    "SUMMARY: AddressSanitizer: out-of-memory in malloc\n";

TEST(SanitizerReportsTest, FindsEachSanitizersReportWithItsFirstLines) {
  for (const std::string* report : {&kAsan, &kLeak, &kUbsan, &kTsan}) {
    auto found = sanitizerReports(kLogBefore + *report + kLogBefore);
    ASSERT_THAT(found, SizeIs(1)) << *report;
    EXPECT_THAT(found[0], Not(HasSubstr("listening on"))) << "starts at the report";
    EXPECT_THAT(found[0], HasSubstr("SUMMARY: ")) << "runs to the summary";
    EXPECT_THAT(found[0], Not(HasSubstr("worker exited"))) << "ends at the summary";
  }
  EXPECT_THAT(sanitizerReports(kAsan)[0], StartsWith("==4242==ERROR: AddressSanitizer: "));
  EXPECT_THAT(sanitizerReports(kUbsan)[0], HasSubstr("runtime error: signed integer overflow"));
  EXPECT_THAT(sanitizerReports(kTsan)[0], StartsWith("WARNING: ThreadSanitizer: data race"));
}

TEST(SanitizerReportsTest, FindsEveryReportInALog) {
  auto found = sanitizerReports(kAsan + kLogBefore + kUbsan + kUbsan + kTsan + kLeak);
  ASSERT_THAT(found, SizeIs(5));
  EXPECT_THAT(found[1], HasSubstr("runtime error:"));
  EXPECT_THAT(found[2], HasSubstr("runtime error:"));
  EXPECT_THAT(found[4], HasSubstr("LeakSanitizer"));
}

TEST(SanitizerReportsTest, ADeadlySignalOrRunningOutOfMemoryIsACrashNotAFinding) {
  EXPECT_THAT(sanitizerReports(kLogBefore + kSegv + kStackOverflow + kOutOfMemory), IsEmpty());
  EXPECT_THAT(sanitizerReports(kSegv + kUbsan), SizeIs(1));
}

TEST(SanitizerReportsTest, AnOrdinaryLogHasNone) {
  EXPECT_THAT(sanitizerReports(""), IsEmpty());
  EXPECT_THAT(sanitizerReports(kLogBefore), IsEmpty());
  // Words a log may hold that are no sanitizer's report.
  EXPECT_THAT(sanitizerReports("error: lua runtime error in policy\n"
                               "warning: AddressSanitizer is not in use\n"),
              IsEmpty());
}

TEST(SanitizerReportsTest, AReportFailsTheTestWithTheExcerptAndWhereItWas) {
  EXPECT_NONFATAL_FAILURE(expectNoSanitizerReports(kLogBefore + kAsan, "/tmp/x/trellisd.log"),
                          "heap-use-after-free on address");
  EXPECT_NONFATAL_FAILURE(expectNoSanitizerReports(kLogBefore + kAsan, "/tmp/x/trellisd.log"),
                          "sanitizer report in /tmp/x/trellisd.log");
  EXPECT_EQ(expectNoSanitizerReports(kLogBefore + kSegv, "/tmp/x/trellisd.log"), 0u);
}

TEST(SanitizerReportsTest, ACommandsReportOnStderrFailsTheTest) {
  int status = 0;
  EXPECT_NONFATAL_FAILURE(
      runCommand("echo '/x/cli.cc:1:2: runtime error: load of null pointer' >&2", &status),
      "runtime error: load of null pointer");
  EXPECT_EQ(status, 0);
  EXPECT_EQ(runCommand("echo out; echo err >&2", &status), "out\n");
}

}  // namespace
}  // namespace trellis::test
