// W3C Trace Context parsing and propagation: valid traceparents are continued with a new
// span, malformed ones are replaced by a new root, invalid tracestate is dropped.
#include "services/trace/trace_context.h"

#include <gtest/gtest.h>

#include <regex>
#include <string>

namespace trellis::kernel::services {
namespace {

const std::regex kShape("00-[0-9a-f]{32}-[0-9a-f]{16}-0[01]");
constexpr const char* kValid = "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01";

TEST(TraceContextTest, ContinuesAValidTraceWithANewSpan) {
  auto t = TraceContext::fromHeaders(kValid, "congo=t61rcWkgMzE,rojo=00f067aa0ba902b7");
  EXPECT_TRUE(std::regex_match(t.traceparent(), kShape)) << t.traceparent();
  EXPECT_EQ(t.traceId(), "4bf92f3577b34da6a3ce929d0e0e4736");
  EXPECT_NE(t.spanId(), "00f067aa0ba902b7");      // our span, child of the caller's
  EXPECT_TRUE(t.traceparent().ends_with("-01"));  // sampled flag kept
  EXPECT_EQ(t.tracestate(), "congo=t61rcWkgMzE,rojo=00f067aa0ba902b7");

  auto hop = t.child();
  EXPECT_EQ(hop.traceId(), t.traceId());
  EXPECT_NE(hop.spanId(), t.spanId());
  EXPECT_EQ(hop.tracestate(), t.tracestate());
}

TEST(TraceContextTest, StartsANewTraceWhenAbsent) {
  auto a = TraceContext::fromHeaders("", "congo=t61rcWkgMzE");
  auto b = TraceContext::fromHeaders("", "");
  EXPECT_TRUE(std::regex_match(a.traceparent(), kShape)) << a.traceparent();
  EXPECT_NE(a.traceId(), b.traceId());
  EXPECT_EQ(a.tracestate(), "");  // tracestate without a valid traceparent is meaningless
}

TEST(TraceContextTest, ReplacesMalformedTraceparents) {
  const char* bad[] = {
      "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7",        // no flags
      "00-4BF92F3577B34DA6A3CE929D0E0E4736-00f067aa0ba902b7-01",     // upper case
      "00-00000000000000000000000000000000-00f067aa0ba902b7-01",     // zero trace id
      "00-4bf92f3577b34da6a3ce929d0e0e4736-0000000000000000-01",     // zero span id
      "ff-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01",     // forbidden version
      "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01-xx",  // 00 has no extra fields
      "00_4bf92f3577b34da6a3ce929d0e0e4736_00f067aa0ba902b7_01",     // wrong separators
      "00-4bf92f3577b34da6a3ce929d0e0e473g-00f067aa0ba902b7-01",     // not hex
      "garbage",
  };
  for (const char* value : bad) {
    EXPECT_FALSE(TraceContext::validTraceparent(value)) << value;
    auto t = TraceContext::fromHeaders(value, "congo=t61rcWkgMzE");
    EXPECT_NE(t.traceId(), "4bf92f3577b34da6a3ce929d0e0e4736") << value;
    EXPECT_TRUE(std::regex_match(t.traceparent(), kShape)) << t.traceparent();
    EXPECT_EQ(t.tracestate(), "") << value;
  }
}

TEST(TraceContextTest, AcceptsLaterVersionsAsVersion00) {
  auto t = TraceContext::fromHeaders(
      "cc-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-09-extra", "");
  EXPECT_EQ(t.traceId(), "4bf92f3577b34da6a3ce929d0e0e4736");
  EXPECT_TRUE(t.traceparent().starts_with("00-"));
  EXPECT_TRUE(t.traceparent().ends_with("-01"));  // only the sampled bit is understood
}

TEST(TraceContextTest, DropsInvalidTracestate) {
  EXPECT_TRUE(TraceContext::validTracestate("a=1, b@vendor=x y,,c=3"));
  EXPECT_FALSE(TraceContext::validTracestate("Upper=1"));
  EXPECT_FALSE(TraceContext::validTracestate("a=1,b"));
  EXPECT_FALSE(TraceContext::validTracestate("a=va,lue=x=y"));
  EXPECT_FALSE(TraceContext::validTracestate("a=\x01"));
  EXPECT_FALSE(TraceContext::validTracestate(std::string(600, 'a') + "=1"));
  std::string many;
  for (int i = 0; i < 33; ++i) many += "k" + std::to_string(i) + "=v,";
  EXPECT_FALSE(TraceContext::validTracestate(many));
  auto t = TraceContext::fromHeaders(kValid, "Upper=1");
  EXPECT_EQ(t.traceId(), "4bf92f3577b34da6a3ce929d0e0e4736");
  EXPECT_EQ(t.tracestate(), "");
}

TEST(TraceContextTest, RestoresOnlyWhatIsValid) {
  auto t = TraceContext::restore(kValid, "a=1");
  ASSERT_TRUE(t);
  EXPECT_EQ(t->traceparent(), kValid);
  EXPECT_EQ(t->tracestate(), "a=1");
  EXPECT_FALSE(TraceContext::restore("00-zz", ""));
}

}  // namespace
}  // namespace trellis::kernel::services
