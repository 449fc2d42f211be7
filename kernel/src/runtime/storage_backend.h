// Opens what trellisd stores state in, as trellis.yaml chose: SQLite under data_dir (the
// default) or a shared PostgreSQL database (storage.url).
//
//   auto storage = openStorage(cfg);   // UNAVAILABLE: one line naming host:port, no password
//   registry = std::move(storage->tenants); kv = std::move(storage->kv);
#pragma once

#include <memory>

#include "trellis/kernel/config/config.h"
#include "trellis/kernel/storage/kv_store.h"
#include "trellis/status.hpp"
#include "trellis/tenants/postgres.h"
#include "trellis/tenants/registry.h"

namespace trellis::kernel::runtime {

struct StorageBackends {
  std::unique_ptr<tenants::TenantRegistry> tenants;
  std::unique_ptr<storage::KvStore> kv;
  // PostgreSQL only (else null): the app role's session pool, for anything else that
  // keeps shared state in the same database.
  std::shared_ptr<tenants::PostgresPool> pool;
};

// PostgreSQL: applies the schema with storage.owner_url if given, opens the pool, then
// refuses to serve if the schema is missing or outdated, or the app role could get past
// row-level security (owner, superuser, BYPASSRLS).
Result<StorageBackends> openStorage(const config::Config& cfg);

}  // namespace trellis::kernel::runtime
