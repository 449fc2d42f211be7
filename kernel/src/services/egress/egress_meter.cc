#include "services/egress/egress_meter.h"

#include <spdlog/spdlog.h>

#include <algorithm>

namespace trellis::kernel::services::egress {
namespace {

int64_t utcDay() {
  return std::chrono::duration_cast<std::chrono::hours>(
             std::chrono::system_clock::now().time_since_epoch())
             .count() /
         24;
}

}  // namespace

void EgressMeter::shareBytes(std::unique_ptr<SharedEgressBytes> shared) {
  shared_ = std::move(shared);
}

Status EgressMeter::admit(const std::string& tenant, const Limits& limits, Admission what) {
  std::optional<uint64_t> shared_bytes;
  if (shared_ && limits.bytes_per_day) {
    auto today = shared_->today(tenant, utcDay());
    if (today) {
      shared_bytes = *today;
    } else {
      spdlog::error(
          "egress: cannot read tenant {}'s bytes today from the shared store ({}); "
          "counting this host's alone",
          tenant, today.status().message());
    }
  }
  std::lock_guard lock(mu_);
  Meter& m = meters_[tenant];
  const auto now = std::chrono::steady_clock::now();
  if (m.day != utcDay()) {
    m.day = utcDay();
    m.today = {};
  }
  const uint64_t bytes_today = shared_bytes.value_or(m.today.bytes_today);
  if (limits.bytes_per_day && bytes_today >= *limits.bytes_per_day) {
    return Status::quotaExceeded("egress_bytes_per_day quota of " +
                                 std::to_string(*limits.bytes_per_day) +
                                 " bytes exceeded; it resets at 00:00 UTC");
  }
  if (what == kBytes) return Status::ok();
  if (limits.requests_per_second) {
    const double rate = static_cast<double>(*limits.requests_per_second);
    if (m.tokens < 0) {
      m.tokens = rate;
    } else {
      m.tokens =
          std::min(rate, m.tokens + rate * std::chrono::duration<double>(now - m.refilled).count());
    }
    m.refilled = now;
    if (m.tokens < 1) {
      return Status::quotaExceeded("egress_requests_per_second quota of " +
                                   std::to_string(*limits.requests_per_second) + " exceeded");
    }
    m.tokens -= 1;
  }
  ++m.today.requests_today;
  return Status::ok();
}

void EgressMeter::charge(const std::string& tenant, uint64_t bytes) {
  {
    std::lock_guard lock(mu_);
    Meter& m = meters_[tenant];
    if (m.day != utcDay()) {
      m.day = utcDay();
      m.today = {};
    }
    m.today.bytes_today += bytes;
  }
  if (shared_ && bytes > 0) {
    if (Status s = shared_->add(tenant, utcDay(), bytes); !s) {
      spdlog::error("egress: cannot add {} bytes to tenant {}'s shared count: {}", bytes, tenant,
                    s.message());
    }
  }
}

TenantUsage EgressMeter::usage(const std::string& tenant) const {
  TenantUsage out;
  {
    std::lock_guard lock(mu_);
    auto it = meters_.find(tenant);
    if (it != meters_.end() && it->second.day == utcDay()) out = it->second.today;
  }
  if (shared_) {  // bytes of every host; requests stay this host's
    if (auto today = shared_->today(tenant, utcDay()); today) out.bytes_today = *today;
  }
  return out;
}

}  // namespace trellis::kernel::services::egress
