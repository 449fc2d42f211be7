// The host side of egress for plugins: the shared client plus what the host adds around
// each request: the (plugin, tenant) policy, per-tenant quotas (requests per second,
// bytes per day), metrics per plugin and destination, and one log line that never holds
// headers, cookies or query strings.
#pragma once

#include <chrono>
#include <map>
#include <memory>
#include <mutex>
#include <optional>
#include <string>

#include "trellis/kernel/metrics/registry.h"
#include "trellis/kernel/services/egress_client.h"

namespace trellis::tenants {
class PostgresPool;
}

namespace trellis::kernel::services::egress {

// Per-tenant egress limits; unset = unlimited.
struct Limits {
  std::optional<uint64_t> requests_per_second;
  std::optional<uint64_t> bytes_per_day;  // request + response bodies, UTC day
};

struct TenantUsage {
  uint64_t requests_today = 0;
  uint64_t bytes_today = 0;
};

// Egress bytes per UTC day kept where several hosts see them (PostgreSQL), so that
// egress_bytes_per_day holds for the tenant across hosts.
class SharedEgressBytes {
 public:
  virtual ~SharedEgressBytes() = default;
  virtual Result<uint64_t> today(const std::string& tenant, int64_t day) = 0;
  virtual Status add(const std::string& tenant, int64_t day, uint64_t bytes) = 0;
};

// The egress_usage table of the shared schema.
std::unique_ptr<SharedEgressBytes> openPostgresEgressBytes(
    std::shared_ptr<tenants::PostgresPool> pool);

class EgressService {
 public:
  EgressService(std::unique_ptr<EgressClient> client, metrics::MetricsRegistry& metrics);

  // Hosts sharing PostgreSQL: bytes per day are counted there (requests per second stay
  // per host: each host admits up to the full rate). If the store fails, this host
  // counts alone until it answers again.
  void shareBytes(std::unique_ptr<SharedEgressBytes> shared);

  // QUOTA_EXCEEDED naming egress_requests_per_second or egress_bytes_per_day before
  // anything is sent; otherwise the client's answer. Counted and logged either way.
  Result<Response> send(const std::string& tenant, const std::string& plugin,
                        const Request& request, const Policy& policy, const Limits& limits);

  TenantUsage usage(const std::string& tenant) const;

 private:
  struct Meter {
    double tokens = -1;  // < 0: not started
    std::chrono::steady_clock::time_point refilled;
    int64_t day = -1;
    TenantUsage today;
  };
  Status admit(const std::string& tenant, const Limits& limits);
  void charge(const std::string& tenant, uint64_t bytes);

  std::unique_ptr<EgressClient> client_;
  std::unique_ptr<SharedEgressBytes> shared_;
  metrics::Family<metrics::Counter>& requests_;
  metrics::Family<metrics::Counter>& bytes_;
  mutable std::mutex mu_;
  std::map<std::string, Meter, std::less<>> meters_;
};

}  // namespace trellis::kernel::services::egress
