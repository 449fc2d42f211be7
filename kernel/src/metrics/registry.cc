#include "trellis/kernel/metrics/registry.h"

#include <algorithm>
#include <charconv>
#include <cmath>
#include <limits>
#include <stdexcept>
#include <type_traits>
#include <utility>
#include <variant>

namespace trellis::kernel::metrics {
namespace {

// A CAS loop: lock-free wherever atomic<double> is, and never loses a concurrent update.
void atomicAdd(std::atomic<double>& target, double v) {
  double current = target.load(std::memory_order_relaxed);
  while (!target.compare_exchange_weak(current, current + v, std::memory_order_relaxed)) {
  }
}

bool isValidMetricName(std::string_view name) {
  if (name.empty()) return false;
  auto first = [](char c) {
    return (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || c == '_' || c == ':';
  };
  if (!first(name[0])) return false;
  return std::all_of(name.begin() + 1, name.end(),
                     [&](char c) { return first(c) || (c >= '0' && c <= '9'); });
}

bool isValidLabelName(std::string_view name) {
  if (name.empty() || name.substr(0, 2) == "__") return false;
  auto first = [](char c) { return (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || c == '_'; };
  if (!first(name[0])) return false;
  return std::all_of(name.begin() + 1, name.end(),
                     [&](char c) { return first(c) || (c >= '0' && c <= '9'); });
}

// Go's strconv formatting as Prometheus clients print it: integers without a fraction,
// everything else in the shortest form that round-trips.
std::string formatValue(double v) {
  if (std::isnan(v)) return "NaN";
  if (std::isinf(v)) return v > 0 ? "+Inf" : "-Inf";
  char buf[64];
  std::to_chars_result r;
  if (v == std::trunc(v) && std::fabs(v) < 1e15) {
    r = std::to_chars(buf, buf + sizeof buf, v, std::chars_format::fixed);
  } else {
    r = std::to_chars(buf, buf + sizeof buf, v);
  }
  return std::string(buf, r.ptr);
}

std::string escapeHelp(std::string_view s) {
  std::string out;
  out.reserve(s.size());
  for (char c : s) {
    if (c == '\\') {
      out += "\\\\";
    } else if (c == '\n') {
      out += "\\n";
    } else {
      out += c;
    }
  }
  return out;
}

std::string escapeLabelValue(std::string_view s) {
  std::string out;
  out.reserve(s.size());
  for (char c : s) {
    if (c == '\\') {
      out += "\\\\";
    } else if (c == '"') {
      out += "\\\"";
    } else if (c == '\n') {
      out += "\\n";
    } else {
      out += c;
    }
  }
  return out;
}

// `{a="x",b="y"}` plus an optional extra pair (the histogram's le); "" when empty.
std::string labelSet(const std::vector<std::string>& names, const std::vector<std::string>& values,
                     std::string_view extra_name = {}, std::string_view extra_value = {}) {
  if (names.empty() && extra_name.empty()) return "";
  std::string out = "{";
  for (size_t i = 0; i < names.size(); ++i) {
    if (i > 0) out += ',';
    out += names[i] + "=\"" + escapeLabelValue(values[i]) + '"';
  }
  if (!extra_name.empty()) {
    if (!names.empty()) out += ',';
    out += std::string(extra_name) + "=\"" + escapeLabelValue(extra_value) + '"';
  }
  out += '}';
  return out;
}

template <typename Child>
constexpr const char* typeName() {
  if constexpr (std::is_same_v<Child, Counter>) return "counter";
  if constexpr (std::is_same_v<Child, Gauge>) return "gauge";
  if constexpr (std::is_same_v<Child, Histogram>) return "histogram";
}

Status validateFamily(const std::string& name, const std::vector<std::string>& label_names,
                      const std::vector<double>& buckets, bool histogram) {
  if (!isValidMetricName(name)) {
    return Status::invalid("metric name \"" + name + "\" must match [a-zA-Z_:][a-zA-Z0-9_:]*");
  }
  for (size_t i = 0; i < label_names.size(); ++i) {
    const std::string& l = label_names[i];
    if (!isValidLabelName(l)) {
      return Status::invalid("metric " + name + ": label name \"" + l +
                             "\" must match [a-zA-Z_][a-zA-Z0-9_]* and not start with __");
    }
    if (histogram && l == "le") {
      return Status::invalid("metric " + name + ": histograms reserve the label \"le\"");
    }
    if (std::find(label_names.begin(), label_names.begin() + i, l) != label_names.begin() + i) {
      return Status::invalid("metric " + name + ": duplicate label name \"" + l + "\"");
    }
  }
  for (size_t i = 0; i < buckets.size(); ++i) {
    if (std::isnan(buckets[i]) || (i > 0 && !(buckets[i] > buckets[i - 1]))) {
      return Status::invalid("metric " + name + ": bucket bounds must be strictly increasing");
    }
  }
  return Status::ok();
}

}  // namespace

void Counter::add(double v) {
  if (!(v >= 0)) return;  // also refuses NaN: a counter only goes up
  atomicAdd(value_, v);
}
double Counter::value() const {
  return value_.load(std::memory_order_relaxed);
}

void Gauge::set(double v) {
  value_.store(v, std::memory_order_relaxed);
}
void Gauge::add(double v) {
  atomicAdd(value_, v);
}
double Gauge::value() const {
  return value_.load(std::memory_order_relaxed);
}

Histogram::Histogram(std::vector<double> upper_bounds) : bounds_(std::move(upper_bounds)) {
  std::erase_if(bounds_, [](double b) { return std::isnan(b) || b == HUGE_VAL; });
  std::sort(bounds_.begin(), bounds_.end());
  bounds_.erase(std::unique(bounds_.begin(), bounds_.end()), bounds_.end());
  buckets_ = std::make_unique<std::atomic<uint64_t>[]>(bounds_.size() + 1);
}

void Histogram::observe(double v) {
  size_t i = std::isnan(v)
                 ? bounds_.size()
                 : static_cast<size_t>(std::lower_bound(bounds_.begin(), bounds_.end(), v) -
                                       bounds_.begin());  // first bound >= v: "le" semantics
  buckets_[i].fetch_add(1, std::memory_order_relaxed);
  atomicAdd(sum_, v);
}

std::vector<uint64_t> Histogram::cumulativeCounts() const {
  std::vector<uint64_t> out(bounds_.size() + 1);
  uint64_t running = 0;
  for (size_t i = 0; i <= bounds_.size(); ++i) {
    running += buckets_[i].load(std::memory_order_relaxed);
    out[i] = running;
  }
  return out;
}

double Histogram::sum() const {
  return sum_.load(std::memory_order_relaxed);
}

uint64_t Histogram::count() const {
  return cumulativeCounts().back();
}

std::vector<double> defaultLatencyBuckets() {
  return {0.0001, 0.00025, 0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025,
          0.05,   0.1,     0.25,   0.5,   1,      2.5,   5,    10};
}

template <typename Child>
Family<Child>::Family(std::string name, std::string help, std::vector<std::string> label_names,
                      std::vector<double> buckets)
    : name_(std::move(name)),
      help_(std::move(help)),
      label_names_(std::move(label_names)),
      buckets_(std::move(buckets)) {}

template <typename Child>
Result<Child*> Family<Child>::tryLabels(const std::vector<std::string>& values) {
  if (values.size() != label_names_.size()) {
    return Status::invalid("metric " + name_ + " takes " + std::to_string(label_names_.size()) +
                           " label values, got " + std::to_string(values.size()));
  }
  std::lock_guard lock(mu_);
  auto it = children_.find(values);
  if (it == children_.end()) {
    std::unique_ptr<Child> child;
    if constexpr (std::is_same_v<Child, Histogram>) {
      child = std::make_unique<Histogram>(buckets_);
    } else {
      child = std::make_unique<Child>();
    }
    it = children_.emplace(values, std::move(child)).first;
  }
  return it->second.get();
}

template <typename Child>
Child& Family<Child>::labels(const std::vector<std::string>& values) {
  auto child = tryLabels(values);
  if (!child) throw std::invalid_argument(child.status().message());
  return **child;
}

template class Family<Counter>;
template class Family<Gauge>;
template class Family<Histogram>;

struct MetricsRegistry::Entry {
  std::variant<std::unique_ptr<Family<Counter>>, std::unique_ptr<Family<Gauge>>,
               std::unique_ptr<Family<Histogram>>>
      family;
};

MetricsRegistry::MetricsRegistry() = default;
MetricsRegistry::~MetricsRegistry() = default;

template <typename Child>
Result<Family<Child>*> MetricsRegistry::getOrCreate(std::string name, std::string help,
                                                    std::vector<std::string> label_names,
                                                    std::vector<double> buckets) {
  constexpr bool kHistogram = std::is_same_v<Child, Histogram>;
  if (auto s = validateFamily(name, label_names, buckets, kHistogram); !s) return s;
  std::lock_guard lock(mu_);
  if (auto it = families_.find(name); it != families_.end()) {
    auto* existing = std::get_if<std::unique_ptr<Family<Child>>>(&it->second->family);
    if (existing == nullptr || (*existing)->label_names_ != label_names) {
      return Status::conflict("metric " + name +
                              " is already registered with another type or labels");
    }
    return existing->get();
  }
  // The constructor is private to keep families owned by a registry: no make_unique.
  std::unique_ptr<Family<Child>> family(
      new Family<Child>(name, std::move(help), std::move(label_names), std::move(buckets)));
  Family<Child>* ptr = family.get();
  // A family without labels has exactly one child; create it so it is exported as 0.
  if (ptr->label_names_.empty()) ptr->labels({});
  families_.emplace(std::move(name), std::make_unique<Entry>(Entry{std::move(family)}));
  return ptr;
}

Family<Counter>& MetricsRegistry::counter(std::string name, std::string help,
                                          std::vector<std::string> label_names) {
  auto r = tryCounter(std::move(name), std::move(help), std::move(label_names));
  if (!r) throw std::invalid_argument(r.status().message());
  return **r;
}

Family<Gauge>& MetricsRegistry::gauge(std::string name, std::string help,
                                      std::vector<std::string> label_names) {
  auto r = tryGauge(std::move(name), std::move(help), std::move(label_names));
  if (!r) throw std::invalid_argument(r.status().message());
  return **r;
}

Family<Histogram>& MetricsRegistry::histogram(std::string name, std::string help,
                                              std::vector<std::string> label_names,
                                              std::vector<double> buckets) {
  auto r = getOrCreate<Histogram>(std::move(name), std::move(help), std::move(label_names),
                                  std::move(buckets));
  if (!r) throw std::invalid_argument(r.status().message());
  return **r;
}

Result<Family<Counter>*> MetricsRegistry::tryCounter(std::string name, std::string help,
                                                     std::vector<std::string> label_names) {
  return getOrCreate<Counter>(std::move(name), std::move(help), std::move(label_names), {});
}

Result<Family<Gauge>*> MetricsRegistry::tryGauge(std::string name, std::string help,
                                                 std::vector<std::string> label_names) {
  return getOrCreate<Gauge>(std::move(name), std::move(help), std::move(label_names), {});
}

Result<Family<Histogram>*> MetricsRegistry::tryHistogram(std::string name, std::string help,
                                                         std::vector<std::string> label_names) {
  return getOrCreate<Histogram>(std::move(name), std::move(help), std::move(label_names),
                                defaultLatencyBuckets());
}

template <typename Child>
void MetricsRegistry::renderFamily(const Family<Child>& family, std::string& out) {
  const std::string& name = family.name_;
  out += "# HELP " + name + ' ' + escapeHelp(family.help_) + '\n';
  out += "# TYPE " + name + ' ' + typeName<Child>() + '\n';
  std::lock_guard lock(family.mu_);
  for (const auto& [values, child] : family.children_) {
    if constexpr (std::is_same_v<Child, Histogram>) {
      // One snapshot serves the buckets and _count, so they always agree.
      std::vector<uint64_t> counts = child->cumulativeCounts();
      const std::vector<double>& bounds = child->bounds();
      for (size_t i = 0; i < counts.size(); ++i) {
        std::string le = i < bounds.size() ? formatValue(bounds[i]) : "+Inf";
        out += name + "_bucket" + labelSet(family.label_names_, values, "le", le) + ' ' +
               std::to_string(counts[i]) + '\n';
      }
      std::string labels = labelSet(family.label_names_, values);
      out += name + "_sum" + labels + ' ' + formatValue(child->sum()) + '\n';
      out += name + "_count" + labels + ' ' + std::to_string(counts.back()) + '\n';
    } else {
      out +=
          name + labelSet(family.label_names_, values) + ' ' + formatValue(child->value()) + '\n';
    }
  }
}

std::string MetricsRegistry::render() const {
  std::string out;
  std::lock_guard lock(mu_);
  for (const auto& [name, entry] : families_) {
    std::visit([&](const auto& family) { renderFamily(*family, out); }, entry->family);
  }
  return out;
}

}  // namespace trellis::kernel::metrics
