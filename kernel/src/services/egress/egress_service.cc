#include "services/egress/egress_service.h"

#include <spdlog/spdlog.h>

namespace trellis::kernel::services::egress {

EgressService::EgressService(std::unique_ptr<EgressClient> client,
                             metrics::MetricsRegistry& metrics, std::shared_ptr<EgressMeter> meter)
    : client_(std::move(client)),
      meter_(meter ? std::move(meter) : std::make_shared<EgressMeter>()),
      requests_(metrics.counter("trellis_egress_requests_total",
                                "Outbound HTTP requests plugins made, by destination and outcome",
                                {"plugin", "destination", "outcome"})),
      bytes_(metrics.counter("trellis_egress_bytes_total",
                             "Request and response body bytes of plugin egress",
                             {"plugin", "destination"})) {}

void EgressService::shareBytes(std::unique_ptr<SharedEgressBytes> shared) {
  meter_->shareBytes(std::move(shared));
}

Result<Response> EgressService::send(const std::string& tenant, const std::string& plugin,
                                     const Request& request, const Policy& policy,
                                     const std::optional<Limits>& limits) {
  auto url = parseUrl(request.url);
  const std::string destination = url ? url->origin() : "invalid";
  const auto started = std::chrono::steady_clock::now();
  Result<Response> r = Status::internal("not sent");
  if (Status s = limits ? meter_->admit(tenant, *limits, EgressMeter::kRequest) : Status::ok();
      !s) {
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
    if (limits) meter_->charge(tenant, bytes);
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
  return meter_->usage(tenant);
}

}  // namespace trellis::kernel::services::egress
