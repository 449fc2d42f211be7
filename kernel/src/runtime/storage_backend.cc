#include "runtime/storage_backend.h"

#include <spdlog/spdlog.h>

namespace trellis::kernel::runtime {
namespace {

Result<StorageBackends> openSqlite(const config::Config& cfg) {
  StorageBackends out;
  auto registry = tenants::TenantRegistry::openSqlite(cfg.data_dir / "system.db");
  if (!registry) return registry.status();
  out.tenants = std::move(*registry);
  auto kv = storage::openSqliteKvStore(cfg.data_dir / "tenants");
  if (!kv) return kv.status();
  out.kv = std::move(*kv);
  return out;
}

Result<StorageBackends> openPostgres(const config::Config& cfg) {
  const config::PostgresConfig& pg = cfg.postgres;
  const tenants::PostgresUrl& url = *pg.url;
  if (pg.owner_url) {
    spdlog::info("applying the Trellis schema as {}", pg.owner_url->redacted());
    if (Status s = tenants::postgres_schema::migrate(*pg.owner_url, url.user); !s) return s;
  }
  StorageBackends out;
  auto pool = tenants::PostgresPool::open(url, {.size = pg.pool_size});
  if (!pool) return pool.status();
  out.pool = std::move(*pool);
  if (Status s = tenants::postgres_schema::verify(*out.pool); !s) return s;
  // Hosts keep serving the registry they last loaded while PostgreSQL is away: say so once
  // when refreshing stops working and once when it works again.
  auto registry =
      tenants::TenantRegistry::openPostgres(url, std::chrono::seconds(1), [](const Status& s) {
        if (!s) {
          spdlog::warn(
              "tenant registry: {}; serving the last loaded tenants and keys until "
              "PostgreSQL answers",
              s.toString());
        } else {
          spdlog::info("tenant registry: refreshing from PostgreSQL again");
        }
      });
  if (!registry) return registry.status();
  out.tenants = std::move(*registry);
  auto kv = storage::openPostgresKvStore(out.pool);
  if (!kv) return kv.status();
  out.kv = std::move(*kv);
  spdlog::info("storage: PostgreSQL {} ({} sessions for plugin storage)", url.redacted(),
               pg.pool_size);
  return out;
}

}  // namespace

Result<StorageBackends> openStorage(const config::Config& cfg) {
  return cfg.postgres.url ? openPostgres(cfg) : openSqlite(cfg);
}

}  // namespace trellis::kernel::runtime
