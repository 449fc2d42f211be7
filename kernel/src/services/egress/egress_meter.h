// A tenant's egress quotas, shared by egress HTTP and byte streams (services/stream/) so
// both count against the same egress_requests_per_second and egress_bytes_per_day: an HTTP
// request or a stream connect is one request; request and response bodies, and the bytes a
// stream writes and reads, are bytes.
//
//   auto meter = std::make_shared<EgressMeter>();
//   if (Status s = meter->admit("acme", limits, EgressMeter::kRequest); !s) ...  // QUOTA_EXCEEDED
//   meter->charge("acme", bytes);
#pragma once

#include <chrono>
#include <cstdint>
#include <map>
#include <memory>
#include <mutex>
#include <optional>
#include <string>

#include "trellis/status.hpp"

namespace trellis::tenants {
class PostgresPool;
}

namespace trellis::kernel::services::egress {

// Per-tenant egress limits; unset = unlimited.
struct Limits {
  std::optional<uint64_t> requests_per_second;
  std::optional<uint64_t> bytes_per_day;  // request + response bodies, stream bytes; UTC day
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

class EgressMeter {
 public:
  // kRequest: a new request or connect (the rate and the bytes left are checked, the
  // request counted); kBytes: more bytes on an open stream (the bytes left only).
  enum Admission { kRequest, kBytes };

  // Hosts sharing PostgreSQL: bytes per day are counted there (requests per second stay
  // per host: each host admits up to the full rate). If the store fails, this host
  // counts alone until it answers again.
  void shareBytes(std::unique_ptr<SharedEgressBytes> shared);

  // QUOTA_EXCEEDED naming egress_requests_per_second or egress_bytes_per_day (the message
  // starts with the quota's name). Thread-safe.
  Status admit(const std::string& tenant, const Limits& limits, Admission what);
  void charge(const std::string& tenant, uint64_t bytes);

  TenantUsage usage(const std::string& tenant) const;

 private:
  struct Meter {
    double tokens = -1;  // < 0: not started
    std::chrono::steady_clock::time_point refilled;
    int64_t day = -1;
    TenantUsage today;
  };

  std::unique_ptr<SharedEgressBytes> shared_;
  mutable std::mutex mu_;
  std::map<std::string, Meter, std::less<>> meters_;
};

}  // namespace trellis::kernel::services::egress
