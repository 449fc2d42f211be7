#include "trellis/tenants/rate_leases.h"

#include <algorithm>
#include <cmath>
#include <string>

namespace trellis::tenants {
namespace {

using sql::Query;

class PostgresRateLeases final : public RateLeaseStore {
 public:
  explicit PostgresRateLeases(std::shared_ptr<PostgresPool> pool) : pool_(std::move(pool)) {}

  Result<uint64_t> lease(std::string_view tenant, uint64_t rate, uint64_t burst,
                         uint64_t want) override {
    uint64_t granted = 0;
    Status s = withBucket(tenant, rate, burst, "lease rate tokens", [&](double available) {
      granted = std::min<uint64_t>(want, static_cast<uint64_t>(std::floor(available)));
      return available - static_cast<double>(granted);
    });
    if (!s) return s;
    return granted;
  }

  Status giveBack(std::string_view tenant, uint64_t rate, uint64_t burst,
                  uint64_t tokens) override {
    return withBucket(tenant, rate, burst, "return rate tokens", [&](double available) {
      return std::min(static_cast<double>(burst), available + static_cast<double>(tokens));
    });
  }

 private:
  // Locks the tenant's bucket row, refills it by the database clock, and stores what
  // `update(available)` returns, all in one transaction: hosts leasing at once queue on the
  // row lock, so no token is handed out twice.
  template <typename Update>
  Status withBucket(std::string_view tenant, uint64_t rate, uint64_t burst, const char* what,
                    Update update) {
    const std::string id(tenant);
    const double capacity = static_cast<double>(burst);
    // No tenant setting: rate_buckets holds counters, not tenant data (no row security).
    return pool_->transaction(what, "", [&](soci::session& sql) {
      Query(sql,
            "INSERT INTO rate_buckets(tenant_id, tokens, refilled_at) "
            "VALUES(:t, :b, clock_timestamp()) ON CONFLICT (tenant_id) DO NOTHING")
          .use(id)
          .use(capacity)
          .run();
      double tokens = 0, elapsed = 0;
      Query(sql,
            "SELECT tokens, GREATEST(0, EXTRACT(EPOCH FROM clock_timestamp() - refilled_at))"
            "::float8 FROM rate_buckets WHERE tenant_id = :t FOR UPDATE")
          .use(id)
          .into(tokens)
          .into(elapsed)
          .run();
      const double available = std::min(capacity, tokens + elapsed * static_cast<double>(rate));
      // refilled_at only moves forward: time already credited is never credited again.
      Query(sql,
            "UPDATE rate_buckets SET tokens = :k, "
            "refilled_at = GREATEST(refilled_at, clock_timestamp()) WHERE tenant_id = :t")
          .use(update(available))
          .use(id)
          .run();
      return Status::ok();
    });
  }

  std::shared_ptr<PostgresPool> pool_;
};

}  // namespace

uint64_t leaseBlock(uint64_t rate, uint64_t burst) {
  return std::clamp<uint64_t>(rate / 10, 1, std::max<uint64_t>(burst, 1));
}

std::unique_ptr<RateLeaseStore> openPostgresRateLeases(std::shared_ptr<PostgresPool> pool) {
  return std::make_unique<PostgresRateLeases>(std::move(pool));
}

}  // namespace trellis::tenants
