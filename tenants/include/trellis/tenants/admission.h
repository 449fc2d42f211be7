// Admission control: the per-tenant quotas checked before a request reaches a plugin.
// One Admission object per host; per-tenant state is created on first use and kept in a
// sharded table so threads contend only when they serve the same tenant.
//
//   Admission admission;
//   auto ticket = admission.admit("acme", quotas, body_bytes);
//   if (!ticket.admitted()) return reject(ticket.rejection());   // 429 / 413
//   ...serve...                                                  // ticket releases the
//                                                                // concurrency slot
#pragma once

#include <chrono>
#include <cstdint>
#include <functional>
#include <memory>
#include <optional>
#include <string>
#include <string_view>
#include <utility>
#include <vector>

#include "trellis/tenants/registry.h"

namespace trellis::tenants {

// Why a request was refused, with everything the client and the logs need.
struct Rejection {
  unsigned http_status = 429;  // 429 rate/concurrency, 413 body
  std::string quota;           // "requests_per_second", "max_concurrent", "max_body_bytes"
  uint64_t limit = 0;          // for requests_per_second: the burst (bucket capacity)
  uint64_t remaining = 0;      // always 0
  uint64_t reset_seconds = 0;  // RateLimit-Reset and Retry-After; 0 for 413, else >= 1
  std::string decision_id;     // unique, for logs and support
};

// Headers every admitted or rejected request on a rate-limited tenant gets (RFC draft
// "RateLimit header fields for HTTP": RateLimit-Limit/-Remaining/-Reset).
struct RateLimitState {
  uint64_t limit = 0;          // the burst: the bucket's capacity in requests
  uint64_t remaining = 0;      // whole tokens left after this request
  uint64_t reset_seconds = 0;  // until a token is available if none is left, else until full
};

class Admission;

class RateLeaseStore;

// Holds one concurrency slot until destroyed (a moved-from Ticket holds none). Move-only.
// On a rejection, send the RateLimit-* headers from rejection(); on an admission, from
// rateLimit() if set.
class Ticket {
 public:
  Ticket() = default;
  Ticket(Ticket&&) noexcept;
  Ticket& operator=(Ticket&&) noexcept;
  ~Ticket();

  bool admitted() const { return !rejection_; }
  const Rejection& rejection() const { return *rejection_; }
  // Set when the tenant has a rate quota.
  const std::optional<RateLimitState>& rateLimit() const { return rate_; }

 private:
  friend class Admission;
  std::shared_ptr<void> slot_;  // the tenant's admission state; ~Ticket gives the slot back
  std::optional<Rejection> rejection_;
  std::optional<RateLimitState> rate_;
};

class Admission {
 public:
  using Clock = std::chrono::steady_clock;
  Admission();
  ~Admission();

  // Checks, in order: body size (413), concurrency (429), rate with burst (429, token
  // bucket refilled continuously). A rejected request consumes no token and no slot.
  // The first form reads the clock itself, and only for a tenant with a rate quota; pass
  // `now` to reuse one reading per request or, in tests, to control time. Every tenant's
  // use is counted, limited or not, so operators see it in `trellis tenant usage`.
  Ticket admit(std::string_view tenant, const Quotas& quotas, uint64_t body_bytes);
  Ticket admit(std::string_view tenant, const Quotas& quotas, uint64_t body_bytes,
               Clock::time_point now);

  // Current use, for `trellis tenant usage`: requests in flight, admitted and rejected
  // since start (or since forget()).
  struct Usage {
    uint64_t in_flight = 0;
    uint64_t admitted = 0;
    uint64_t rejected = 0;
  };
  Usage usage(std::string_view tenant) const;
  // Every tracked tenant's use, for /metrics.
  std::vector<std::pair<std::string, Usage>> allUsage() const;

  // Shares rate quotas with the other hosts using `leases` (rate_leases.h): from now on a
  // tenant's rate tokens come from blocks a background thread leases, so admit() still
  // never waits for the database. While the store is unreachable each host falls back to
  // its own bucket at the full rate (precision is lost, availability is not);
  // `on_health(status)` hears of each change (the error, then ok() once leases work again).
  // Call once, before traffic. RateLimit-Remaining then counts this host's leased tokens.
  void shareRates(std::shared_ptr<RateLeaseStore> leases,
                  std::function<void(const Status&)> on_health);

  // Forget a deleted tenant's state. Tickets still held release into the old state; a
  // later admit() starts afresh (full bucket, no slots in use).
  void forget(std::string_view tenant);

 private:
  struct Impl;
  std::unique_ptr<Impl> impl_;
};

// A fresh decision id: 16 hex digits, 64 bits from a CSPRNG (so ids reveal nothing about
// other tenants' traffic).
std::string newDecisionId();
// `bytes` random bytes (at most 512) from OpenSSL's CSPRNG as lowercase hex; thread-safe.
std::string randomHexId(size_t bytes);

}  // namespace trellis::tenants
