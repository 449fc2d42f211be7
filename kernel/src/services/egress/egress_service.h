// The host side of egress for plugins: the shared client plus what the host adds around
// each request: the (plugin, tenant) policy, per-tenant quotas (requests per second,
// bytes per day; the EgressMeter byte streams share), metrics per plugin and destination,
// and one log line that never holds headers, cookies or query strings.
#pragma once

#include <memory>
#include <optional>
#include <string>

#include "services/egress/egress_meter.h"
#include "trellis/kernel/metrics/registry.h"
#include "trellis/kernel/services/egress_client.h"

namespace trellis::kernel::services::egress {

class EgressService {
 public:
  // `meter` is shared with the stream service so both count against one quota; null = a
  // meter of its own.
  EgressService(std::unique_ptr<EgressClient> client, metrics::MetricsRegistry& metrics,
                std::shared_ptr<EgressMeter> meter = nullptr);

  // See EgressMeter::shareBytes.
  void shareBytes(std::unique_ptr<SharedEgressBytes> shared);

  // QUOTA_EXCEEDED naming egress_requests_per_second or egress_bytes_per_day before
  // anything is sent; otherwise the client's answer. Counted and logged either way.
  // `limits` unset: a system plugin's tenant-less request, which no tenant quota counts
  // (`tenant` is then the label "_system").
  Result<Response> send(const std::string& tenant, const std::string& plugin,
                        const Request& request, const Policy& policy,
                        const std::optional<Limits>& limits);

  TenantUsage usage(const std::string& tenant) const;
  const std::shared_ptr<EgressMeter>& meter() const { return meter_; }

 private:
  std::unique_ptr<EgressClient> client_;
  std::shared_ptr<EgressMeter> meter_;
  metrics::Family<metrics::Counter>& requests_;
  metrics::Family<metrics::Counter>& bytes_;
};

}  // namespace trellis::kernel::services::egress
