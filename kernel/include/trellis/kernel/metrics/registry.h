// Metrics in the Prometheus text exposition format (version 0.0.4). Families are created
// once (start-up, plugin init); the returned handles are updated lock-free on hot paths.
//
//   MetricsRegistry reg;
//   auto& reqs = reg.counter("trellis_http_requests_total", "Requests served",
//                            {"plane", "code"});
//   reqs.labels({"data", "200"}).add(1);    // cache the child on hot paths
//   std::string text = reg.render();
#pragma once

#include <atomic>
#include <cstdint>
#include <map>
#include <memory>
#include <mutex>
#include <string>
#include <string_view>
#include <vector>

#include "trellis/status.hpp"

namespace trellis::kernel::metrics {

class Counter {
 public:
  void add(double v = 1);  // negative values are ignored
  double value() const;

 private:
  std::atomic<double> value_{0};
};

class Gauge {
 public:
  void set(double v);
  void add(double v);
  double value() const;

 private:
  std::atomic<double> value_{0};
};

class Histogram {
 public:
  // Bounds are sorted; duplicates, NaN and +Inf dropped (+Inf is always the last bucket).
  explicit Histogram(std::vector<double> upper_bounds);
  void observe(double v);  // NaN counts in +Inf only
  const std::vector<double>& bounds() const { return bounds_; }
  // Cumulative counts per bound plus +Inf, and the sum — a consistent-enough snapshot.
  std::vector<uint64_t> cumulativeCounts() const;
  double sum() const;
  uint64_t count() const;

 private:
  std::vector<double> bounds_;
  std::unique_ptr<std::atomic<uint64_t>[]> buckets_;  // bounds_.size() + 1
  std::atomic<double> sum_{0};
};

// Default latency buckets in seconds: 100µs … 10s.
std::vector<double> defaultLatencyBuckets();

template <typename Child>
class Family {
 public:
  // The child for these label values (same order as the family's label names); created
  // on first use. Takes a lock: cache the reference on hot paths. Children live as long
  // as the registry. Throws std::invalid_argument for the wrong number of values.
  Child& labels(const std::vector<std::string>& values);
  // As labels(), but INVALID instead of throwing: for values that come from plugins.
  Result<Child*> tryLabels(const std::vector<std::string>& values);

 private:
  friend class MetricsRegistry;
  Family(std::string name, std::string help, std::vector<std::string> label_names,
         std::vector<double> buckets = {});
  std::string name_, help_;
  std::vector<std::string> label_names_;
  std::vector<double> buckets_;
  mutable std::mutex mu_;
  std::map<std::vector<std::string>, std::unique_ptr<Child>> children_;
};

class MetricsRegistry {
 public:
  MetricsRegistry();
  ~MetricsRegistry();  // out of line: Entry is only complete in registry.cc
  MetricsRegistry(const MetricsRegistry&) = delete;
  MetricsRegistry& operator=(const MetricsRegistry&) = delete;

  // Same name again returns the existing family if kind and labels agree; otherwise,
  // or for a name not matching [a-zA-Z_:][a-zA-Z0-9_:]*, these throw std::invalid_argument
  // (start-up only). tryCounter & co. return INVALID/CONFLICT instead, for plugin input.
  // Label names match [a-zA-Z_][a-zA-Z0-9_]*, do not start with "__", are unique, and a
  // histogram cannot use "le". Histogram bounds must be strictly increasing; +Inf is
  // implicit.
  Family<Counter>& counter(std::string name, std::string help,
                           std::vector<std::string> label_names = {});
  Family<Gauge>& gauge(std::string name, std::string help,
                       std::vector<std::string> label_names = {});
  Family<Histogram>& histogram(std::string name, std::string help,
                               std::vector<std::string> label_names = {},
                               std::vector<double> buckets = defaultLatencyBuckets());

  Result<Family<Counter>*> tryCounter(std::string name, std::string help,
                                      std::vector<std::string> label_names);
  Result<Family<Gauge>*> tryGauge(std::string name, std::string help,
                                  std::vector<std::string> label_names);
  Result<Family<Histogram>*> tryHistogram(std::string name, std::string help,
                                          std::vector<std::string> label_names);

  // Every family, sorted by name, with # HELP and # TYPE lines; label values escaped.
  // Children are sorted by label values; a family without labels always shows its one
  // child (0 until updated).
  std::string render() const;

 private:
  struct Entry;
  template <typename Child>
  Result<Family<Child>*> getOrCreate(std::string name, std::string help,
                                     std::vector<std::string> label_names,
                                     std::vector<double> buckets);
  template <typename Child>
  static void renderFamily(const Family<Child>& family, std::string& out);
  mutable std::mutex mu_;
  std::map<std::string, std::unique_ptr<Entry>> families_;
};

}  // namespace trellis::kernel::metrics
