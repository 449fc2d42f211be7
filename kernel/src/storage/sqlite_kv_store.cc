// KvStore on SQLite. One database file per tenant keeps tenants apart at the file level
// (a bug in a query cannot read another tenant's rows) and lets an operator back up, move
// or delete one tenant's data with ordinary file tools once trellisd has stopped.
//
// Each tenant is a LoggedKvTenant (logged_kv_tenant.h): put() and remove() are
// group-committed into the tenant's redo log (one pwrite and one fdatasync per batch, each
// write answered after the fdatasync that covers it) and reach the SQLite file shortly
// after, in large batches; get() and list() read the changes not yet copied from memory
// and the rest from SQLite reader connections, so they never wait for a writer.
//
// Keys and values are bound as text with their length (so NUL bytes survive) and CAST to
// BLOB in SQL, so every stored key is a BLOB and compares with memcmp: byte order for
// list(), and no collation or UTF-8 rules apply.
//
// Storage quota: each database keeps its tenant's total (key + value bytes) in the
// one-row table `usage`; the tenant keeps the total of what its log adds in memory, and a
// write's quota check and charge are decided by the batch leader in order with every other
// write, so the quota is exact. The log is locked to one process: a second trellisd on the
// same data directory is refused.
#include <soci/soci.h>

#include <algorithm>
#include <chrono>
#include <condition_variable>
#include <map>
#include <memory>
#include <mutex>
#include <optional>
#include <shared_mutex>
#include <stop_token>
#include <system_error>
#include <thread>
#include <utility>

#include "storage/internal/kv_keys.h"
#include "storage/internal/logged_kv_tenant.h"
#include "trellis/kernel/storage/kv_store.h"
#include "trellis/kernel/storage/sqlite_database.h"
#include "trellis/tenants/identity.h"
#include "trellis/tenants/sql_statement.h"

namespace trellis::kernel::storage {
namespace {

using internal::KvRedoLog;
using internal::LoggedKvTenant;
using internal::validateKey;
using internal::validatePut;

using tenants::sql::exec;
using tenants::sql::Query;

// One tenant's data. Operations hold `life` shared for their whole duration;
// removeTenant() takes it exclusively, so it waits for writes in flight (an acknowledged
// write is never lost to a concurrent delete) and later callers find `kv` gone.
struct TenantDb {
  std::shared_mutex life;
  // Shared: an asynchronous write keeps it open until answered.
  std::shared_ptr<LoggedKvTenant> kv;  // null once removed
};

// WITHOUT ROWID: the rows live in the primary key's own B-tree. A rowid table kept them
// twice (the table and the key's index), so every read walked two B-trees and every write
// dirtied a leaf of each.
constexpr const char* kKvTable =
    "(plugin TEXT NOT NULL, key BLOB NOT NULL, value BLOB NOT NULL, "
    "version INTEGER NOT NULL, PRIMARY KEY(plugin, key)) WITHOUT ROWID";

// A database from before WITHOUT ROWID is rewritten once, in the open's transaction.
void migrateToWithoutRowid(soci::session& sql) {
  long long rowid_tables = 0;
  Query(sql, "SELECT COUNT(*) FROM pragma_table_list WHERE name = 'kv' AND wr = 0")
      .into(rowid_tables)
      .run();
  if (rowid_tables == 0) return;
  exec(sql, std::string("CREATE TABLE kv_without_rowid") + kKvTable);
  exec(sql,
       "INSERT INTO kv_without_rowid(plugin, key, value, version) "
       "SELECT plugin, key, value, version FROM kv");
  exec(sql, "DROP TABLE kv");
  exec(sql, "ALTER TABLE kv_without_rowid RENAME TO kv");
}

void createSchema(soci::session& sql) {
  // One transaction (SqliteDatabase::open), so a database from before the quota (kv
  // without usage) gets its usage row exactly once, computed from the data, even with
  // two processes opening it.
  exec(sql, std::string("CREATE TABLE IF NOT EXISTS kv") + kKvTable);
  migrateToWithoutRowid(sql);
  exec(sql, "CREATE TABLE IF NOT EXISTS usage(bytes INTEGER NOT NULL)");
  exec(sql,
       "INSERT INTO usage(bytes) SELECT COALESCE(SUM(length(key) + length(value)), 0) FROM kv "
       "WHERE NOT EXISTS (SELECT 1 FROM usage)");
}

// An UNAVAILABLE answer names the operation and the tenant; others pass as they are.
Status namedFailure(Status s, const char* op, const std::string& tenant) {
  if (s.code() != StatusCode::kUnavailable) return s;
  return Status::unavailable("storage " + std::string(op) + " for tenant \"" + tenant +
                             "\" failed: " + s.message());
}

class SqliteKvStore final : public KvStore {
 public:
  SqliteKvStore(std::filesystem::path dir, SqliteKvOptions options)
      : dir_(std::move(dir)),
        options_(std::move(options)),
        applier_([this](std::stop_token stop) { applyWhenIdle(stop); }) {}

  ~SqliteKvStore() override {
    applier_.request_stop();
    applier_.join();
  }

  Result<KvEntry> get(const Scope& scope, std::string_view key) override {
    if (auto s = validateKey(key); !s) return s;
    return onTenant<KvEntry>(
        scope, "get", [&](LoggedKvTenant& kv) { return kv.get(scope.plugin, std::string(key)); });
  }

  Result<uint64_t> put(const Scope& scope, std::string_view key, std::string_view value,
                       uint64_t expected_version) override {
    if (auto s = validatePut(key, value); !s) return s;
    return onTenant<uint64_t>(scope, "put", [&](LoggedKvTenant& kv) {
      return kv.put(scope, std::string(key), std::string(value), expected_version);
    });
  }

  void putAsync(const Scope& scope, std::string_view key, std::string_view value,
                uint64_t expected_version, PutDone done) override {
    if (auto s = validatePut(key, value); !s) return done(s);
    auto kv = tenantKv(scope, "put");
    if (!kv) return done(kv.status());
    (*kv)->putAsync(scope, std::string(key), std::string(value), expected_version,
                    [tenant = scope.tenant, done = std::move(done)](Result<uint64_t> r) {
                      if (!r) return done(namedFailure(r.status(), "put", tenant));
                      done(std::move(r));
                    });
  }

  Status remove(const Scope& scope, std::string_view key, uint64_t expected_version) override {
    if (auto s = validateKey(key); !s) return s;
    auto r = onTenant<bool>(scope, "remove", [&](LoggedKvTenant& kv) -> Result<bool> {
      Status s = kv.remove(scope, std::string(key), expected_version);
      if (!s) return s;
      return true;
    });
    return r.status();
  }

  Result<std::vector<KvEntry>> list(const Scope& scope, std::string_view prefix,
                                    std::string_view start_after, uint32_t limit) override {
    if (prefix.size() > kMaxKeyBytes || start_after.size() > kMaxKeyBytes) {
      return Status::invalid("prefix and start_after are limited to " +
                             std::to_string(kMaxKeyBytes) + " bytes");
    }
    return onTenant<std::vector<KvEntry>>(scope, "list", [&](LoggedKvTenant& kv) {
      return kv.list(scope.plugin, prefix, start_after, limit);
    });
  }

  Result<uint64_t> storageBytes(std::string_view tenant) override {
    if (!tenants::isValidTenantId(tenant)) {
      return Status::invalid("invalid tenant id \"" + std::string(tenant) + "\"");
    }
    auto t = openTenant(std::string(tenant), /*create=*/false);
    if (!t) return t.status();
    if (!*t) return uint64_t{0};  // no database: the tenant has never stored anything
    std::shared_lock life((*t)->life);
    if (!(*t)->kv) return uint64_t{0};  // removed meanwhile
    return (*t)->kv->storageBytes();
  }

  Status removeTenant(std::string_view tenant) override {
    if (!tenants::isValidTenantId(tenant)) {
      return Status::invalid("invalid tenant id \"" + std::string(tenant) + "\"");
    }
    // The map lock is held to the end, so no other call can reopen the file between
    // closing it and unlinking it (nothing takes it while holding a tenant's lock).
    std::lock_guard lock(mu_);
    if (auto it = dbs_.find(std::string(tenant)); it != dbs_.end()) {
      std::shared_ptr<TenantDb> t = std::move(it->second);
      dbs_.erase(it);
      std::unique_lock life(t->life);  // lets the operations in progress finish first
      t->kv.reset();
    }
    // The log goes first: a crash half way leaves a database without a log (the tenant's
    // data as of its last apply, deleted again by the next removeTenant), never a log that
    // a tenant created later under the same id would replay.
    const std::filesystem::path db = dir_ / (std::string(tenant) + ".db");
    if (Status s = KvRedoLog::removeAll(db); !s) return s;
    for (const char* suffix : {"", "-wal", "-shm"}) {
      std::error_code ec;
      std::filesystem::remove(db.string() + suffix, ec);
      if (ec) {
        return Status::unavailable("cannot delete " + db.string() + suffix + ": " + ec.message());
      }
    }
    return Status::ok();
  }

  // Opens every tenant whose redo log still holds records (after a crash), which replays
  // them into its database: from then on each database file is complete whenever trellisd
  // is stopped cleanly, whether or not the tenant is used again.
  Status recoverLogs() {
    auto logged = KvRedoLog::databasesWithRecords(dir_);
    if (!logged) return logged.status();
    for (const auto& db : *logged) {
      if (db.extension() != ".db" || !isValidScopeTenant(db.stem().string())) continue;
      if (auto t = openTenant(db.stem().string(), /*create=*/false); !t) return t.status();
    }
    return Status::ok();
  }

  GroupCommit::Stats writeStats() const override {
    GroupCommit::Stats sum;
    for (const auto& t : tenantsOpen()) {
      std::shared_lock life(t->life);
      if (!t->kv) continue;
      const GroupCommit::Stats s = t->kv->writeStats();
      sum.batches += s.batches;
      sum.writes += s.writes;
      sum.pending += s.pending;
      sum.max_batch = std::max(sum.max_batch, s.max_batch);
    }
    return sum;
  }

 private:
  // Runs `body` on the scope's tenant, and names the tenant and the operation in an
  // UNAVAILABLE answer.
  template <typename T, typename Body>
  Result<T> onTenant(const Scope& scope, const char* op, Body&& body) {
    if (auto s = validateScope(scope); !s) return s;
    auto t = openTenant(scope.tenant, /*create=*/true);
    if (!t) return t.status();
    std::shared_lock life((*t)->life);
    if (!(*t)->kv) return removedMeanwhile(scope, op);
    Result<T> r = body(*(*t)->kv);
    if (!r) return namedFailure(r.status(), op, scope.tenant);
    return r;
  }

  // The scope's tenant for an asynchronous write, which holds it (not `life`: a lock
  // cannot pass between threads) until the write is answered. A tenant removed while
  // such a write is in flight loses it with the rest of its data.
  Result<std::shared_ptr<LoggedKvTenant>> tenantKv(const Scope& scope, const char* op) {
    if (auto s = validateScope(scope); !s) return s;
    auto t = openTenant(scope.tenant, /*create=*/true);
    if (!t) return t.status();
    std::shared_lock life((*t)->life);
    if (!(*t)->kv) return removedMeanwhile(scope, op);
    return (*t)->kv;
  }

  static Status validateScope(const Scope& scope) {
    // Checked here as well as at the edge: the id becomes a file name.
    if (!isValidScopeTenant(scope.tenant)) {
      return Status::invalid("invalid tenant id \"" + scope.tenant + "\"");
    }
    if (scope.plugin.empty()) return Status::invalid("plugin id is empty");
    return Status::ok();
  }

  static Status removedMeanwhile(const Scope& scope, const char* op) {
    return Status::unavailable("storage " + std::string(op) + " for tenant \"" + scope.tenant +
                               "\" failed: its storage was removed meanwhile");
  }

  // The tenant's data (id already validated), opened on first use and cached for the
  // store's lifetime; a failed open is not cached, so a later call retries. Without
  // `create`, a tenant that has no file yet gets nullptr and still no file.
  Result<std::shared_ptr<TenantDb>> openTenant(const std::string& tenant, bool create) {
    {
      // Every call looks its tenant up: shared, so lookups never queue behind each other.
      std::shared_lock lock(mu_);
      if (auto it = dbs_.find(tenant); it != dbs_.end()) return it->second;
    }
    std::lock_guard lock(mu_);
    if (auto it = dbs_.find(tenant); it != dbs_.end()) return it->second;
    std::function<void()> before_append;
    if (options_.before_log_append) {
      before_append = [hook = options_.before_log_append, tenant] { hook(tenant); };
    }
    auto kv = LoggedKvTenant::open(dir_ / (tenant + ".db"), create, createSchema,
                                   std::move(before_append));
    if (!kv && kv.status().code() == StatusCode::kNotFound) return std::shared_ptr<TenantDb>();
    if (!kv) {
      return Status::unavailable("cannot open storage for tenant \"" + tenant +
                                 "\": " + kv.status().message());
    }
    auto t = std::make_shared<TenantDb>();
    t->kv = std::move(*kv);
    dbs_.emplace(tenant, t);
    return t;
  }

  std::vector<std::shared_ptr<TenantDb>> tenantsOpen() const {
    std::vector<std::shared_ptr<TenantDb>> out;
    std::shared_lock lock(mu_);
    for (const auto& [tenant, t] : dbs_) out.push_back(t);
    return out;
  }

  // Copies a tenant's logged changes into its SQLite file once it has been quiet for a
  // moment, so an idle tenant's file is complete and its log short.
  void applyWhenIdle(std::stop_token stop) {
    std::mutex m;
    std::condition_variable_any cv;
    while (!stop.stop_requested()) {
      {
        std::unique_lock lock(m);
        cv.wait_for(lock, stop, kIdleCheck, [] { return false; });
      }
      for (const auto& t : tenantsOpen()) {
        std::shared_lock life(t->life);
        if (t->kv) t->kv->applyIfIdle(kIdleCheck);
      }
    }
  }

  static constexpr std::chrono::milliseconds kIdleCheck{100};

  const std::filesystem::path dir_;
  const SqliteKvOptions options_;
  mutable std::shared_mutex mu_;  // guards dbs_ (not the databases inside)
  // Shared: an operation that found a database keeps its entry alive even if
  // removeTenant() drops it meanwhile.
  std::map<std::string, std::shared_ptr<TenantDb>> dbs_;
  std::jthread applier_;  // last: stopped before the tenants close
};

}  // namespace

Result<std::unique_ptr<KvStore>> openSqliteKvStore(const std::filesystem::path& dir,
                                                   SqliteKvOptions options) {
  if (dir.empty()) return Status::invalid("storage directory is empty");
  if (dir.string().find('"') != std::string::npos) {
    return Status::invalid("storage directory must not contain '\"': " + dir.string());
  }
  std::error_code ec;
  if (std::filesystem::create_directories(dir, ec)) {
    std::filesystem::permissions(dir, std::filesystem::perms::owner_all, ec);
  }
  if (ec || !std::filesystem::is_directory(dir, ec)) {
    return Status::unavailable("cannot create storage directory " + dir.string() + ": " +
                               (ec ? ec.message() : std::string("not a directory")));
  }
  auto store = std::make_unique<SqliteKvStore>(dir, std::move(options));
  if (Status s = store->recoverLogs(); !s) return s;
  return std::unique_ptr<KvStore>(std::move(store));
}

}  // namespace trellis::kernel::storage
