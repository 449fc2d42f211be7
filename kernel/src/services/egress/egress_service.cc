#include "services/egress/egress_service.h"

#include <spdlog/spdlog.h>

namespace trellis::kernel::services::egress {
namespace {

int64_t utcDay() {
  return std::chrono::duration_cast<std::chrono::hours>(
             std::chrono::system_clock::now().time_since_epoch())
             .count() /
         24;
}

}  // namespace

EgressService::EgressService(std::unique_ptr<EgressClient> client,
                             metrics::MetricsRegistry& metrics)
    : client_(std::move(client)),
      requests_(metrics.counter("trellis_egress_requests_total",
                                "Outbound HTTP requests plugins made, by destination and outcome",
                                {"plugin", "destination", "outcome"})),
      bytes_(metrics.counter("trellis_egress_bytes_total",
                             "Request and response body bytes of plugin egress",
                             {"plugin", "destination"})) {}

void EgressService::shareBytes(std::unique_ptr<SharedEgressBytes> shared) {
  shared_ = std::move(shared);
}

Status EgressService::admit(const std::string& tenant, const Limits& limits) {
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

void EgressService::charge(const std::string& tenant, uint64_t bytes) {
  {
    std::lock_guard lock(mu_);
    meters_[tenant].today.bytes_today += bytes;
  }
  if (shared_ && bytes > 0) {
    if (Status s = shared_->add(tenant, utcDay(), bytes); !s) {
      spdlog::error("egress: cannot add {} bytes to tenant {}'s shared count: {}", bytes, tenant,
                    s.message());
    }
  }
}

Result<Response> EgressService::send(const std::string& tenant, const std::string& plugin,
                                     const Request& request, const Policy& policy,
                                     const Limits& limits) {
  auto url = parseUrl(request.url);
  const std::string destination = url ? url->origin() : "invalid";
  const auto started = std::chrono::steady_clock::now();
  Result<Response> r = Status::internal("not sent");
  if (Status s = admit(tenant, limits); !s) {
    r = s;
  } else {
    r = client_->send(request, policy);
  }
  const auto ms = std::chrono::duration_cast<std::chrono::milliseconds>(
                      std::chrono::steady_clock::now() - started)
                      .count();
  const std::string outcome =
      r ? std::to_string(r->status) : std::string(statusCodeName(r.status().code()));
  requests_.labels({plugin, destination, outcome}).add(1);
  if (r) {
    const uint64_t bytes = r->bytes_sent + r->body.size();
    charge(tenant, bytes);
    bytes_.labels({plugin, destination}).add(static_cast<double>(bytes));
    // The URL without its query string; headers are never logged.
    spdlog::info("egress tenant={} plugin={} {} {} -> {} ({} bytes in, {} ms, {} redirects)",
                 tenant, plugin, request.method, r->url, r->status, r->body.size(), ms,
                 r->redirects);
  } else {
    spdlog::warn("egress tenant={} plugin={} {} {} refused or failed after {} ms: {}", tenant,
                 plugin, request.method, url ? url->redacted() : "(invalid url)", ms,
                 r.status().toString());
  }
  return r;
}

TenantUsage EgressService::usage(const std::string& tenant) const {
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
