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

Status EgressService::admit(const std::string& tenant, const Limits& limits) {
  std::lock_guard lock(mu_);
  Meter& m = meters_[tenant];
  const auto now = std::chrono::steady_clock::now();
  if (m.day != utcDay()) {
    m.day = utcDay();
    m.today = {};
  }
  if (limits.bytes_per_day && m.today.bytes_today >= *limits.bytes_per_day) {
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
  std::lock_guard lock(mu_);
  meters_[tenant].today.bytes_today += bytes;
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
  std::lock_guard lock(mu_);
  auto it = meters_.find(tenant);
  if (it == meters_.end() || it->second.day != utcDay()) return {};
  return it->second.today;
}

}  // namespace trellis::kernel::services::egress
