// Rate quotas shared by several trellisd hosts. Each tenant's rate quota is one token
// bucket in PostgreSQL (capacity = burst, refilled at requests_per_second by the database's
// clock, so host clocks do not matter). A host never asks PostgreSQL per request: it leases
// blocks of tokens in the background and admits from its lease, giving back what it did not
// use once the tenant goes quiet on it.
//
//   auto leases = openPostgresRateLeases(pool);
//   admission.shareRates(*leases);           // Admission now admits from leased blocks
//
// The bound (docs/admin-guide.md): over any interval T, the hosts together admit at most
// burst + rate*T + hosts*leaseCredit(rate, burst) requests of a tenant. The last term is
// each host's credit: a host that has run out of leased tokens may admit up to that many on
// credit while its next lease is in flight, so a tenant's first request on a host is not
// refused while the host fetches tokens; the credit is repaid from the next lease.
#pragma once

#include <cstdint>
#include <memory>
#include <string_view>

#include "trellis/status.hpp"
#include "trellis/tenants/postgres.h"

namespace trellis::tenants {

// The tokens one lease asks for and the credit a host may run ahead by: a tenth of the
// rate (so a busy host leases about ten times a second), at least 1, at most the burst.
uint64_t leaseBlock(uint64_t rate, uint64_t burst);
inline uint64_t leaseCredit(uint64_t rate, uint64_t burst) {
  return leaseBlock(rate, burst);
}

class RateLeaseStore {
 public:
  virtual ~RateLeaseStore() = default;
  // Takes up to `want` whole tokens from the tenant's shared bucket (created full on first
  // use) and returns how many it took: fewer when the bucket holds fewer. UNAVAILABLE if
  // the database cannot be reached.
  virtual Result<uint64_t> lease(std::string_view tenant, uint64_t rate, uint64_t burst,
                                 uint64_t want) = 0;
  // Puts unused leased tokens back (the bucket never grows past `burst`).
  virtual Status giveBack(std::string_view tenant, uint64_t rate, uint64_t burst,
                          uint64_t tokens) = 0;
};

// Buckets in trellis.rate_buckets, through the app role's pool.
std::unique_ptr<RateLeaseStore> openPostgresRateLeases(std::shared_ptr<PostgresPool> pool);

}  // namespace trellis::tenants
