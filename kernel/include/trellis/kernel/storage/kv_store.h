// Key/value storage scoped to (tenant, plugin). Plugins reach it only through the host
// API, never with SQL. Keys and values are arbitrary bytes; every write is durable
// (fsync'd) and atomic before it returns. Two backends behave the same: SQLite (one file
// per tenant) and PostgreSQL (shared tables under row-level security). Both group-commit
// (group_commit.h): concurrent writes share one transaction and one flush, and each is
// answered only after the flush that covers it; reads never wait for writers.
//
//   auto store = openSqliteKvStore("/var/lib/trellis/data");
//   auto store = openPostgresKvStore(pool);   // pool: tenants::PostgresPool::open(...)
//   auto v = store->put({"acme", "trellis/hello"}, "visits/ann", "1", kAnyVersion);
#pragma once

#include <cstdint>
#include <filesystem>
#include <functional>
#include <memory>
#include <optional>
#include <string>
#include <string_view>
#include <vector>

#include "trellis/kernel/storage/group_commit.h"
#include "trellis/status.hpp"

namespace trellis::tenants {
class PostgresPool;
}

namespace trellis::kernel::storage {

inline constexpr uint64_t kAnyVersion = UINT64_MAX;  // unconditional write
inline constexpr uint64_t kAbsent = 0;               // only if the key does not exist
inline constexpr size_t kMaxKeyBytes = 1024;
inline constexpr size_t kMaxValueBytes = 1024 * 1024;
inline constexpr uint32_t kMaxListLimit = 1000;

// Whose data: the host fills this from the call's context, never from plugin input.
// The tenant of a system plugin's own storage, outside every tenant (its admin routes,
// on_init and on_start run without one). No tenant id can take it: they start with [a-z0-9].
inline constexpr std::string_view kSystemScopeTenant = "_system";
// A tenant id, or kSystemScopeTenant.
bool isValidScopeTenant(std::string_view tenant);

struct Scope {
  std::string tenant;  // validated tenant id: [a-z0-9][a-z0-9-]{0,62}, or kSystemScopeTenant
  std::string plugin;  // plugin id "namespace/name"
  // The tenant's storage quota (its `storage bytes` quota), shared by all its plugins:
  // the sum of key + value bytes of every entry of the tenant. Unset = unlimited. Only
  // writes that grow the total are checked, so a tenant over a lowered quota can still
  // shrink and delete.
  std::optional<uint64_t> max_storage_bytes = std::nullopt;
};

struct KvEntry {
  std::string key;
  std::string value;
  uint64_t version = 0;  // starts at 1, +1 per write
};

class KvStore {
 public:
  virtual ~KvStore() = default;
  // NOT_FOUND if absent; INVALID for an empty or oversized key.
  virtual Result<KvEntry> get(const Scope& scope, std::string_view key) = 0;
  // Returns the new version. CONFLICT if expected_version does not match: kAbsent needs
  // the key to be absent, a version number needs it present at exactly that version.
  // INVALID for a bad key or a value over kMaxValueBytes. QUOTA_EXCEEDED, writing
  // nothing, if the write would take the tenant's storage over scope.max_storage_bytes;
  // the check and the charge are one transaction with the write, so the quota is exact.
  virtual Result<uint64_t> put(const Scope& scope, std::string_view key, std::string_view value,
                               uint64_t expected_version) = 0;
  // put() for a caller that must not block (an event loop): `done` gets what put() would
  // return, exactly once, after the commit that covers the write — on a storage thread,
  // or before putAsync returns for input refused at once. It must not block. Both backends
  // join their group commit (GroupCommit::submitAsync).
  using PutDone = std::function<void(Result<uint64_t>)>;
  virtual void putAsync(const Scope& scope, std::string_view key, std::string_view value,
                        uint64_t expected_version, PutDone done) = 0;
  // NOT_FOUND if absent (whatever expected_version), CONFLICT if present at another
  // version than expected_version (kAnyVersion: any).
  virtual Status remove(const Scope& scope, std::string_view key, uint64_t expected_version) = 0;
  // Keys starting with `prefix`, strictly after `start_after`, ascending by bytes,
  // at most min(limit, kMaxListLimit) (limit 0 = kMaxListLimit). To page, pass the last
  // key returned as start_after. INVALID if prefix or start_after exceed kMaxKeyBytes.
  virtual Result<std::vector<KvEntry>> list(const Scope& scope, std::string_view prefix,
                                            std::string_view start_after, uint32_t limit) = 0;
  // Bytes `tenant` stores, over all its plugins (keys + values): what max_storage_bytes
  // limits. 0 for a tenant without data; asking creates no file. INVALID for a bad id.
  virtual Result<uint64_t> storageBytes(std::string_view tenant) = 0;
  // Deletes every plugin's data of `tenant` (its database file). OK if it had none.
  virtual Status removeTenant(std::string_view tenant) = 0;
  // Group-commit counters of put() and remove() over every tenant (metrics, tests).
  virtual GroupCommit::Stats writeStats() const { return {}; }
};

// SQLite via SOCI: one database file per tenant under `dir` (<tenant>.db, WAL,
// synchronous=FULL), opened lazily and kept open (sqlite_database.h). Creates `dir` if
// needed. Every method is thread-safe; a tenant's writes are group-committed in the order
// they arrive, its reads run beside them. An invalid Scope (tenant id not
// [a-z0-9][a-z0-9-]{0,62}, empty plugin) is INVALID; UNAVAILABLE if a file cannot be
// opened or written (the message says which and why).
struct SqliteKvOptions {
  // Runs on a tenant's batch leader after it has decided the batch and before it appends
  // the batch to the redo log. Tests hold it to make writes queue, as a slow disk would.
  std::function<void(const std::string& tenant)> before_log_append;
};
Result<std::unique_ptr<KvStore>> openSqliteKvStore(const std::filesystem::path& dir,
                                                   SqliteKvOptions options = {});

// PostgreSQL: tables trellis.kv and trellis.kv_usage (created by
// tenants::postgres_schema::migrate), shared by every tenant and every host using the
// database, isolated by row-level security on `trellis.tenant`, which each call sets for
// its own transaction. Keys are bytea, so order and equality are bytewise. Thread-safe;
// writes are group-committed (postgres_batch_writer.h) on up to half the pool's sessions,
// reads run on the others. UNAVAILABLE (naming host:port, never the
// password) when PostgreSQL cannot be reached; the call's transaction is rolled back, and
// the next call reconnects. removeTenant deletes the tenant's rows and usage.
Result<std::unique_ptr<KvStore>> openPostgresKvStore(std::shared_ptr<tenants::PostgresPool> pool);

}  // namespace trellis::kernel::storage
