// Egress bytes per tenant and UTC day in trellis.egress_usage: counters only, no tenant
// data, so no row-level security (like rate_buckets). One upsert per response adds its
// bytes; admission reads the day's total.
#include "services/egress/egress_service.h"
#include "trellis/tenants/postgres.h"

namespace trellis::kernel::services::egress {
namespace {

using tenants::sql::Query;

class PostgresEgressBytes final : public SharedEgressBytes {
 public:
  explicit PostgresEgressBytes(std::shared_ptr<tenants::PostgresPool> pool)
      : pool_(std::move(pool)) {}

  Result<uint64_t> today(const std::string& tenant, int64_t day) override {
    long long bytes = 0;
    long long d = day;
    Status s = pool_->transaction("reading egress bytes", "", [&](soci::session& sql) {
      bytes = 0;
      Query(sql, "SELECT bytes FROM egress_usage WHERE tenant_id = :t AND day = :d")
          .use(tenant)
          .use(d)
          .into(bytes)
          .run();
      return Status::ok();
    });
    if (!s) return s;
    return static_cast<uint64_t>(bytes);
  }

  Status add(const std::string& tenant, int64_t day, uint64_t bytes) override {
    long long d = day, b = static_cast<long long>(bytes);
    return pool_->transaction("counting egress bytes", "", [&](soci::session& sql) {
      Query(sql,
            "INSERT INTO egress_usage AS u (tenant_id, day, bytes) VALUES (:t, :d, :b) "
            "ON CONFLICT (tenant_id, day) DO UPDATE SET bytes = u.bytes + EXCLUDED.bytes")
          .use(tenant)
          .use(d)
          .use(b)
          .run();
      // Days before yesterday are of no use to anyone.
      long long old = day - 2;
      Query(sql, "DELETE FROM egress_usage WHERE tenant_id = :t AND day < :o")
          .use(tenant)
          .use(old)
          .run();
      return Status::ok();
    });
  }

 private:
  std::shared_ptr<tenants::PostgresPool> pool_;
};

}  // namespace

std::unique_ptr<SharedEgressBytes> openPostgresEgressBytes(
    std::shared_ptr<tenants::PostgresPool> pool) {
  return std::make_unique<PostgresEgressBytes>(std::move(pool));
}

}  // namespace trellis::kernel::services::egress
