// Opens what trellisd stores state in, as trellis.yaml chose: SQLite under data_dir (the
// default) or a shared PostgreSQL database (storage.url).
//
//   auto storage = openStorage(cfg);   // UNAVAILABLE: one line naming host:port, no password
//   registry = std::move(storage->tenants); kv = std::move(storage->kv);
#pragma once

#include <memory>

#include "trellis/kernel/config/config.h"
#include "trellis/kernel/services/blob_store.h"
#include "trellis/kernel/storage/kv_store.h"
#include "trellis/status.hpp"
#include "trellis/tenants/postgres.h"
#include "trellis/tenants/registry.h"

namespace trellis::kernel::runtime {

struct StorageBackends {
  std::unique_ptr<tenants::TenantRegistry> tenants;
  // KV with the tenant's blobs folded into its storage accounting (see withBlobs).
  std::unique_ptr<storage::KvStore> kv;
  std::unique_ptr<services::blobs::BlobStore> blobs;  // files under data_dir/blobs, or PG
  // PostgreSQL only (else null): the app role's session pool, for anything else that
  // keeps shared state in the same database.
  std::shared_ptr<tenants::PostgresPool> pool;
};

// The tenant's storage quota covers KV and blobs together. This KvStore forwards to `kv`
// but charges KV writes against what blobs leave of the quota, reports KV + blob bytes as
// the tenant's storage, and removes both with the tenant. `blobs` must outlive it.
std::unique_ptr<storage::KvStore> withBlobs(std::unique_ptr<storage::KvStore> kv,
                                            services::blobs::BlobStore& blobs);

// PostgreSQL: applies the schema with storage.owner_url if given, opens the pool, then
// refuses to serve if the schema is missing or outdated, or the app role could get past
// row-level security (owner, superuser, BYPASSRLS).
Result<StorageBackends> openStorage(const config::Config& cfg);

}  // namespace trellis::kernel::runtime
