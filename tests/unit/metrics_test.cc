#include <gtest/gtest.h>

#include <cmath>
#include <limits>
#include <stdexcept>
#include <thread>
#include <vector>

#include "trellis/kernel/metrics/registry.h"

namespace trellis::kernel::metrics {
namespace {

TEST(MetricsTest, RendersASmallRegistryExactly) {
  MetricsRegistry reg;
  auto& reqs = reg.counter("trellis_http_requests_total", "Requests served", {"plane", "code"});
  reqs.labels({"data", "200"}).add(3);
  reqs.labels({"admin", "401"}).add();
  reqs.labels({"data", "404"}).add(0.5);
  reg.gauge("trellis_up", "1 while serving").labels({}).set(1);
  auto& lat = reg.histogram("trellis_latency_seconds", "Latency\nwith \\ in help", {"tenant"},
                            {0.25, 0.5, 1});
  auto& acme = lat.labels({"a\"c\\m\ne"});
  acme.observe(0.125);
  acme.observe(0.25);  // le is inclusive
  acme.observe(0.75);
  acme.observe(3);

  EXPECT_EQ(reg.render(),
            "# HELP trellis_http_requests_total Requests served\n"
            "# TYPE trellis_http_requests_total counter\n"
            "trellis_http_requests_total{plane=\"admin\",code=\"401\"} 1\n"
            "trellis_http_requests_total{plane=\"data\",code=\"200\"} 3\n"
            "trellis_http_requests_total{plane=\"data\",code=\"404\"} 0.5\n"
            "# HELP trellis_latency_seconds Latency\\nwith \\\\ in help\n"
            "# TYPE trellis_latency_seconds histogram\n"
            "trellis_latency_seconds_bucket{tenant=\"a\\\"c\\\\m\\ne\",le=\"0.25\"} 2\n"
            "trellis_latency_seconds_bucket{tenant=\"a\\\"c\\\\m\\ne\",le=\"0.5\"} 2\n"
            "trellis_latency_seconds_bucket{tenant=\"a\\\"c\\\\m\\ne\",le=\"1\"} 3\n"
            "trellis_latency_seconds_bucket{tenant=\"a\\\"c\\\\m\\ne\",le=\"+Inf\"} 4\n"
            "trellis_latency_seconds_sum{tenant=\"a\\\"c\\\\m\\ne\"} 4.125\n"
            "trellis_latency_seconds_count{tenant=\"a\\\"c\\\\m\\ne\"} 4\n"
            "# HELP trellis_up 1 while serving\n"
            "# TYPE trellis_up gauge\n"
            "trellis_up 1\n");
}

TEST(MetricsTest, UnlabelledFamiliesShowZeroBeforeAnyUpdate) {
  MetricsRegistry reg;
  reg.counter("a_total", "A");
  reg.histogram("b_seconds", "B", {}, {1});
  EXPECT_EQ(reg.render(),
            "# HELP a_total A\n"
            "# TYPE a_total counter\n"
            "a_total 0\n"
            "# HELP b_seconds B\n"
            "# TYPE b_seconds histogram\n"
            "b_seconds_bucket{le=\"1\"} 0\n"
            "b_seconds_bucket{le=\"+Inf\"} 0\n"
            "b_seconds_sum 0\n"
            "b_seconds_count 0\n");
}

TEST(MetricsTest, SpecialValuesUseThePrometheusSpelling) {
  MetricsRegistry reg;
  auto& g = reg.gauge("g", "G", {"k"});
  g.labels({"a"}).set(std::numeric_limits<double>::infinity());
  g.labels({"b"}).set(-std::numeric_limits<double>::infinity());
  g.labels({"c"}).set(std::nan(""));
  g.labels({"d"}).set(-2.5e-7);
  g.labels({"e"}).set(123456789);
  g.labels({"f"}).set(1e20);
  EXPECT_EQ(reg.render(),
            "# HELP g G\n# TYPE g gauge\n"
            "g{k=\"a\"} +Inf\n"
            "g{k=\"b\"} -Inf\n"
            "g{k=\"c\"} NaN\n"
            "g{k=\"d\"} -2.5e-07\n"
            "g{k=\"e\"} 123456789\n"
            "g{k=\"f\"} 1e+20\n");
}

TEST(MetricsTest, CounterIgnoresNegativeAndNaN) {
  Counter c;
  c.add(2);
  c.add(-1);
  c.add(std::nan(""));
  EXPECT_EQ(c.value(), 2);
}

TEST(MetricsTest, GaugeSetsAndAdds) {
  Gauge g;
  g.set(5);
  g.add(-7);
  EXPECT_EQ(g.value(), -2);
}

TEST(MetricsTest, HistogramBucketsAreCumulative) {
  Histogram h({5, 1, 1, 10});  // sorted and deduplicated
  EXPECT_EQ(h.bounds(), (std::vector<double>{1, 5, 10}));
  for (double v : {0.5, 1.0, 2.0, 6.0, 100.0}) h.observe(v);
  EXPECT_EQ(h.cumulativeCounts(), (std::vector<uint64_t>{2, 3, 4, 5}));
  EXPECT_EQ(h.count(), 5u);
  EXPECT_DOUBLE_EQ(h.sum(), 109.5);
}

TEST(MetricsTest, SameNameReturnsTheSameFamilyOrConflicts) {
  MetricsRegistry reg;
  auto& a = reg.counter("x_total", "X", {"k"});
  EXPECT_EQ(&reg.counter("x_total", "other help", {"k"}), &a);
  EXPECT_THROW(reg.counter("x_total", "X", {"j"}), std::invalid_argument);
  EXPECT_THROW(reg.gauge("x_total", "X", {"k"}), std::invalid_argument);
  EXPECT_EQ(reg.tryGauge("x_total", "X", {"k"}).status().code(), StatusCode::kConflict);
  EXPECT_EQ(reg.tryCounter("x_total", "X", {}).status().code(), StatusCode::kConflict);
  auto again = reg.tryCounter("x_total", "X", {"k"});
  ASSERT_TRUE(again);
  EXPECT_EQ(*again, &a);
}

TEST(MetricsTest, InvalidNamesAndLabelsAreRefused) {
  MetricsRegistry reg;
  for (const char* bad : {"", "1abc", "a-b", "a b", "é"}) {
    EXPECT_THROW(reg.counter(bad, "h"), std::invalid_argument) << bad;
    EXPECT_EQ(reg.tryCounter(bad, "h", {}).status().code(), StatusCode::kInvalid) << bad;
  }
  EXPECT_NO_THROW(reg.counter("ns:sub_total", "h"));
  EXPECT_NO_THROW(reg.counter("_x", "h"));
  for (const char* bad : {"", "1a", "a:b", "__reserved", "a-b"}) {
    EXPECT_EQ(reg.tryGauge("g", "h", {bad}).status().code(), StatusCode::kInvalid) << bad;
  }
  EXPECT_EQ(reg.tryGauge("g", "h", {"a", "a"}).status().code(), StatusCode::kInvalid);
  EXPECT_EQ(reg.tryHistogram("h", "h", {"le"}).status().code(), StatusCode::kInvalid);
  EXPECT_TRUE(reg.tryGauge("g", "h", {"le", "_ok"}));
  EXPECT_THROW(reg.histogram("h2", "h", {}, {1, 1}), std::invalid_argument);
  EXPECT_THROW(reg.histogram("h3", "h", {}, {2, 1}), std::invalid_argument);
}

TEST(MetricsTest, WrongNumberOfLabelValuesIsRefused) {
  MetricsRegistry reg;
  auto& f = reg.counter("c_total", "C", {"a", "b"});
  EXPECT_THROW(f.labels({"x"}), std::invalid_argument);
  EXPECT_EQ(f.tryLabels({"x", "y", "z"}).status().code(), StatusCode::kInvalid);
  auto ok = f.tryLabels({"x", "y"});
  ASSERT_TRUE(ok);
  EXPECT_EQ(*ok, &f.labels({"x", "y"}));
}

TEST(MetricsTest, ConcurrentUpdatesAreNotLost) {
  MetricsRegistry reg;
  auto& fam = reg.counter("hits_total", "Hits", {"t"});
  auto& hist = reg.histogram("lat_seconds", "Lat", {}, {1});
  std::vector<std::thread> threads;
  for (int t = 0; t < 4; ++t) {
    threads.emplace_back([&, t] {
      Counter& c = fam.labels({t % 2 == 0 ? "even" : "odd"});
      Histogram& h = hist.labels({});
      for (int i = 0; i < 10000; ++i) {
        c.add(1);
        h.observe(0.5);
      }
      reg.render();  // rendering concurrently with updates is safe
    });
  }
  for (auto& t : threads) t.join();
  EXPECT_EQ(fam.labels({"even"}).value(), 20000);
  EXPECT_EQ(fam.labels({"odd"}).value(), 20000);
  EXPECT_EQ(hist.labels({}).count(), 40000u);
  EXPECT_EQ(hist.labels({}).sum(), 20000);
}

TEST(MetricsTest, DefaultLatencyBucketsAreIncreasingFrom100MicrosecondsTo10Seconds) {
  auto b = defaultLatencyBuckets();
  ASSERT_FALSE(b.empty());
  EXPECT_DOUBLE_EQ(b.front(), 0.0001);
  EXPECT_DOUBLE_EQ(b.back(), 10);
  for (size_t i = 1; i < b.size(); ++i) EXPECT_LT(b[i - 1], b[i]);
}

}  // namespace
}  // namespace trellis::kernel::metrics
