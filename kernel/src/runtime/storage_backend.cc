#include "runtime/storage_backend.h"

#include <spdlog/spdlog.h>

#include <algorithm>

namespace trellis::kernel::runtime {
namespace {

class KvWithBlobs final : public storage::KvStore {
 public:
  KvWithBlobs(std::unique_ptr<storage::KvStore> kv, services::blobs::BlobStore& blobs)
      : kv_(std::move(kv)), blobs_(blobs) {}

  Result<storage::KvEntry> get(const storage::Scope& scope, std::string_view key) override {
    return kv_->get(scope, key);
  }
  Result<uint64_t> put(const storage::Scope& scope, std::string_view key, std::string_view value,
                       uint64_t expected_version) override {
    auto left = withBlobsCharged(scope);
    if (!left) return left.status();
    return kv_->put(*left, key, value, expected_version);
  }
  void putAsync(const storage::Scope& scope, std::string_view key, std::string_view value,
                uint64_t expected_version, PutDone done) override {
    auto left = withBlobsCharged(scope);
    if (!left) return done(left.status());
    kv_->putAsync(*left, key, value, expected_version, std::move(done));
  }
  Status remove(const storage::Scope& scope, std::string_view key,
                uint64_t expected_version) override {
    return kv_->remove(scope, key, expected_version);
  }
  Result<std::vector<storage::KvEntry>> list(const storage::Scope& scope, std::string_view prefix,
                                             std::string_view start_after,
                                             uint32_t limit) override {
    return kv_->list(scope, prefix, start_after, limit);
  }
  Result<uint64_t> storageBytes(std::string_view tenant) override {
    auto kv = kv_->storageBytes(tenant);
    if (!kv) return kv;
    auto blobs = blobs_.storageBytes(tenant);
    if (!blobs) return blobs;
    return *kv + *blobs;
  }
  Status removeTenant(std::string_view tenant) override {
    if (Status s = blobs_.removeTenant(tenant); !s) return s;
    return kv_->removeTenant(tenant);
  }

 private:
  // The scope with the tenant's blob bytes taken off its storage quota: one quota covers
  // KV and blobs together.
  Result<storage::Scope> withBlobsCharged(const storage::Scope& scope) {
    if (!scope.max_storage_bytes) return scope;
    auto blob_bytes = blobs_.storageBytes(scope.tenant);
    if (!blob_bytes) return blob_bytes.status();
    storage::Scope left = scope;
    left.max_storage_bytes =
        *scope.max_storage_bytes - std::min(*scope.max_storage_bytes, *blob_bytes);
    return left;
  }

  std::unique_ptr<storage::KvStore> kv_;
  services::blobs::BlobStore& blobs_;
};

Result<StorageBackends> openSqlite(const config::Config& cfg) {
  StorageBackends out;
  auto registry = tenants::TenantRegistry::openSqlite(cfg.data_dir / "system.db");
  if (!registry) return registry.status();
  out.tenants = std::move(*registry);
  auto kv = storage::openSqliteKvStore(cfg.data_dir / "tenants");
  if (!kv) return kv.status();
  auto blobs = services::blobs::openFileBlobStore(cfg.data_dir / "blobs");
  if (!blobs) return blobs.status();
  out.blobs = std::move(*blobs);
  out.kv = withBlobs(std::move(*kv), *out.blobs);
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
  auto blobs = services::blobs::openPostgresBlobStore(out.pool);
  if (!blobs) return blobs.status();
  out.blobs = std::move(*blobs);
  out.kv = withBlobs(std::move(*kv), *out.blobs);
  spdlog::info("storage: PostgreSQL {} ({} sessions for plugin storage)", url.redacted(),
               pg.pool_size);
  return out;
}

}  // namespace

std::unique_ptr<storage::KvStore> withBlobs(std::unique_ptr<storage::KvStore> kv,
                                            services::blobs::BlobStore& blobs) {
  return std::make_unique<KvWithBlobs>(std::move(kv), blobs);
}

Result<StorageBackends> openStorage(const config::Config& cfg) {
  return cfg.postgres.url ? openPostgres(cfg) : openSqlite(cfg);
}

}  // namespace trellis::kernel::runtime
