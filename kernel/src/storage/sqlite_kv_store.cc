// KvStore on SQLite through SOCI. One database file per tenant keeps tenants apart at the
// file level (a bug in a query cannot read another tenant's rows) and lets an operator
// back up, move or delete one tenant's data with ordinary file tools.
//
// Each file is a SqliteDatabase: put() and remove() are group-committed (concurrent
// writes of a tenant share one transaction and one WAL fsync, each in its own savepoint,
// each answered after the fsync that covers it), and get() and list() run on reader
// connections that never wait for a writer. The statements of get, put and remove are
// compiled once per connection (sqlite_statements.h).
//
// Keys and values are bound as text with their length (so NUL bytes survive) and CAST to
// BLOB in SQL, so every stored key is a BLOB and compares with memcmp: byte order for
// list(), and no collation or UTF-8 rules apply.
//
// Storage quota: each database keeps its tenant's total (key + value bytes) in the
// one-row table `usage`. put() and remove() adjust it in the write's own savepoint inside
// the batch transaction, after the writes before it in the batch, so the quota check, the
// charge and the write are one atomic step against every other writer of the file, in or
// out of process (the batch holds SQLite's write lock: BEGIN IMMEDIATE).
#include <soci/soci.h>

#include <algorithm>
#include <map>
#include <memory>
#include <mutex>
#include <optional>
#include <shared_mutex>
#include <system_error>
#include <utility>

#include "storage/internal/kv_keys.h"
#include "trellis/kernel/storage/kv_store.h"
#include "trellis/kernel/storage/sqlite_database.h"
#include "trellis/tenants/identity.h"
#include "trellis/tenants/sql_statement.h"

namespace trellis::kernel::storage {
namespace {

using internal::prefixSuccessor;
using internal::validateKey;
using internal::validatePut;

using tenants::sql::exec;
using tenants::sql::Query;

// One tenant's database. Operations hold `life` shared for their whole duration;
// removeTenant() takes it exclusively, so it waits for writes in flight (an acknowledged
// write is never lost to a concurrent delete) and later callers find `db` gone.
struct TenantDb {
  std::shared_mutex life;
  // Shared: an asynchronous write keeps it open until answered (tenantDatabase()).
  std::shared_ptr<SqliteDatabase> db;  // null once removed
};

Status conflict(uint64_t expected, uint64_t current) {
  auto describe = [](uint64_t v) {
    return v == kAbsent ? std::string("absent") : "version " + std::to_string(v);
  };
  return Status::conflict("expected " + describe(expected) + ", found " + describe(current));
}

// The entry's version (kAbsent if there is none) and the bytes it is charged for.
std::pair<uint64_t, long long> currentEntry(SqliteStatements& stmts, const std::string& plugin,
                                            const std::string& key) {
  auto q = stmts.use(
      "SELECT version, length(key) + length(value) FROM kv "
      "WHERE plugin = :p AND key = CAST(:k AS BLOB)");
  q.bind(plugin).bind(key);
  if (!q.step()) return {kAbsent, 0LL};
  return {static_cast<uint64_t>(q.int64(0)), q.int64(1)};
}

long long usedBytes(SqliteStatements& stmts) {
  auto q = stmts.use("SELECT bytes FROM usage");
  return q.step() ? q.int64(0) : 0;
}

void addUsage(SqliteStatements& stmts, long long delta) {
  if (delta != 0) stmts.use("UPDATE usage SET bytes = bytes + :d").bind(delta).run();
}

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

// The write of a put: checks the version and the storage quota, then writes the entry
// and charges its bytes. Sets `next` to the new version.
Status putEntry(SqliteConnection& c, const Scope& scope, const std::string& k, const std::string& v,
                uint64_t expected_version, long long& next) {
  auto [current, old_bytes] = currentEntry(c.statements, scope.plugin, k);
  if (expected_version != kAnyVersion && expected_version != current) {
    return conflict(expected_version, current);
  }
  const long long delta = static_cast<long long>(k.size() + v.size()) - old_bytes;
  // Only growth is checked: shrinking must stay possible for a tenant that is over a
  // quota lowered after the data was written.
  if (delta > 0 && scope.max_storage_bytes) {
    const uint64_t used = static_cast<uint64_t>(std::max(usedBytes(c.statements), 0LL));
    const uint64_t max = *scope.max_storage_bytes;
    if (used > max || static_cast<uint64_t>(delta) > max - used) {
      return Status::quotaExceeded("storage quota of " + std::to_string(max) +
                                   " bytes exceeded: using " + std::to_string(used) +
                                   ", this write needs " + std::to_string(delta) + " more");
    }
  }
  next = static_cast<long long>(current) + 1;
  if (current == kAbsent) {
    c.statements
        .use(
            "INSERT INTO kv(plugin, key, value, version) "
            "VALUES(:p, CAST(:k AS BLOB), CAST(:v AS BLOB), :n)")
        .bind(scope.plugin)
        .bind(k)
        .bind(v)
        .bind(next)
        .run();
  } else {
    c.statements
        .use(
            "UPDATE kv SET value = CAST(:v AS BLOB), version = :n "
            "WHERE plugin = :p AND key = CAST(:k AS BLOB)")
        .bind(v)
        .bind(next)
        .bind(scope.plugin)
        .bind(k)
        .run();
  }
  addUsage(c.statements, delta);
  return Status::ok();
}

class SqliteKvStore final : public KvStore {
 public:
  explicit SqliteKvStore(std::filesystem::path dir) : dir_(std::move(dir)) {}

  Result<KvEntry> get(const Scope& scope, std::string_view key) override {
    if (auto s = validateKey(key); !s) return s;
    std::string k(key), value;
    long long version = 0;
    Status s = onTenant(scope, "get", &SqliteDatabase::read, [&](SqliteConnection& c) {
      auto q = c.statements.use(
          "SELECT value, version FROM kv WHERE plugin = :p AND key = CAST(:k AS BLOB)");
      q.bind(scope.plugin).bind(k);
      if (!q.step()) return Status::notFound("no such key");
      value = q.bytes(0);
      version = q.int64(1);
      return Status::ok();
    });
    if (!s) return s;
    return KvEntry{std::move(k), std::move(value), static_cast<uint64_t>(version)};
  }

  Result<uint64_t> put(const Scope& scope, std::string_view key, std::string_view value,
                       uint64_t expected_version) override {
    if (auto s = validatePut(key, value); !s) return s;
    const std::string k(key), v(value);
    long long next = 0;
    Status s = onTenant(scope, "put", &SqliteDatabase::write, [&](SqliteConnection& c) {
      return putEntry(c, scope, k, v, expected_version, next);
    });
    if (!s) return s;
    return static_cast<uint64_t>(next);
  }

  void putAsync(const Scope& scope, std::string_view key, std::string_view value,
                uint64_t expected_version, PutDone done) override {
    if (auto s = validatePut(key, value); !s) return done(s);
    auto db = tenantDatabase(scope, "put");
    if (!db) return done(db.status());
    struct Put {
      Scope scope;
      std::string key, value;
      uint64_t expected_version;
      PutDone done;
      long long next = 0;
    };
    auto put = std::make_shared<Put>(
        Put{scope, std::string(key), std::string(value), expected_version, std::move(done)});
    (*db)->writeAsync(
        [put](SqliteConnection& c) {
          return putEntry(c, put->scope, put->key, put->value, put->expected_version, put->next);
        },
        [put](Status s) {
          if (!s) return put->done(namedFailure(s, "put", put->scope.tenant));
          put->done(static_cast<uint64_t>(put->next));
        },
        *db);
  }

  Status remove(const Scope& scope, std::string_view key, uint64_t expected_version) override {
    if (auto s = validateKey(key); !s) return s;
    const std::string k(key);
    return onTenant(scope, "remove", &SqliteDatabase::write, [&](SqliteConnection& c) {
      auto [current, old_bytes] = currentEntry(c.statements, scope.plugin, k);
      if (current == kAbsent) return Status::notFound("no such key");
      if (expected_version != kAnyVersion && expected_version != current) {
        return conflict(expected_version, current);
      }
      c.statements.use("DELETE FROM kv WHERE plugin = :p AND key = CAST(:k AS BLOB)")
          .bind(scope.plugin)
          .bind(k)
          .run();
      addUsage(c.statements, -old_bytes);
      return Status::ok();
    });
  }

  Result<std::vector<KvEntry>> list(const Scope& scope, std::string_view prefix,
                                    std::string_view start_after, uint32_t limit) override {
    if (prefix.size() > kMaxKeyBytes || start_after.size() > kMaxKeyBytes) {
      return Status::invalid("prefix and start_after are limited to " +
                             std::to_string(kMaxKeyBytes) + " bytes");
    }
    // Range conditions instead of LIKE/GLOB: '%', '_' and '*' in a prefix stay literal
    // bytes, and the primary-key index serves the scan.
    std::string lower(prefix), after(start_after);
    std::optional<std::string> upper = prefixSuccessor(prefix);
    int n = static_cast<int>(limit == 0 || limit > kMaxListLimit ? kMaxListLimit : limit);
    std::string query =
        "SELECT key, value, version FROM kv WHERE plugin = :p AND key >= CAST(:lo AS BLOB)";
    if (!after.empty()) query += " AND key > CAST(:after AS BLOB)";
    if (upper) query += " AND key < CAST(:hi AS BLOB)";
    query += " ORDER BY key LIMIT :n";

    std::vector<KvEntry> out;
    Status s = onTenant(scope, "list", &SqliteDatabase::read, [&](SqliteConnection& c) {
      std::string key, value;
      long long version = 0;
      soci::indicator ind = soci::i_ok;
      Query q(c.sql, query);
      q.use(scope.plugin).use(lower);
      if (!after.empty()) q.use(after);
      if (upper) q.use(*upper);
      q.use(n).into(key).into(value, ind).into(version);
      for (bool row = q.run(); row; row = q.next()) {
        if (ind == soci::i_null) value.clear();
        out.push_back(KvEntry{key, value, static_cast<uint64_t>(version)});
      }
      return Status::ok();
    });
    if (!s) return s;
    return out;
  }

  Result<uint64_t> storageBytes(std::string_view tenant) override {
    if (!tenants::isValidTenantId(tenant)) {
      return Status::invalid("invalid tenant id \"" + std::string(tenant) + "\"");
    }
    auto t = openTenant(std::string(tenant), /*create=*/false);
    if (!t) return t.status();
    if (!*t) return uint64_t{0};  // no database: the tenant has never stored anything
    std::shared_lock life((*t)->life);
    if (!(*t)->db) return uint64_t{0};  // removed meanwhile
    long long bytes = 0;
    Status s = (*t)->db->read([&](SqliteConnection& c) {
      bytes = usedBytes(c.statements);
      return Status::ok();
    });
    if (!s) {
      return Status::unavailable("storage usage for tenant \"" + std::string(tenant) +
                                 "\" failed: " + s.message());
    }
    return static_cast<uint64_t>(std::max(bytes, 0LL));
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
      t->db.reset();
    }
    const std::string base = (dir_ / tenant).string() + ".db";
    for (const char* suffix : {"", "-wal", "-shm"}) {
      std::error_code ec;
      std::filesystem::remove(base + suffix, ec);
      if (ec) {
        return Status::unavailable("cannot delete " + base + suffix + ": " + ec.message());
      }
    }
    return Status::ok();
  }

  GroupCommit::Stats writeStats() const override {
    GroupCommit::Stats sum;
    std::lock_guard lock(mu_);
    for (const auto& [tenant, t] : dbs_) {
      std::shared_lock life(t->life);
      if (!t->db) continue;
      const GroupCommit::Stats s = t->db->writeStats();
      sum.batches += s.batches;
      sum.writes += s.writes;
      sum.pending += s.pending;
      sum.max_batch = std::max(sum.max_batch, s.max_batch);
    }
    return sum;
  }

 private:
  using Access = Status (SqliteDatabase::*)(const SqliteDatabase::Work&);

  // Runs `body` through `access` (read or write) on the scope's tenant database, and
  // names the tenant and the operation in an UNAVAILABLE answer.
  template <typename Body>
  Status onTenant(const Scope& scope, const char* op, Access access, Body&& body) {
    if (auto s = validateScope(scope); !s) return s;
    auto t = openTenant(scope.tenant, /*create=*/true);
    if (!t) return t.status();
    std::shared_lock life((*t)->life);
    if (!(*t)->db) return removedMeanwhile(scope, op);
    Status s = ((*t)->db.get()->*access)(SqliteDatabase::Work(std::forward<Body>(body)));
    return namedFailure(std::move(s), op, scope.tenant);
  }

  // The scope's tenant database for an asynchronous write, which holds it (not `life`:
  // a lock cannot pass between threads) until the write is answered. A tenant removed
  // while such a write is in flight loses it with the rest of its data.
  Result<std::shared_ptr<SqliteDatabase>> tenantDatabase(const Scope& scope, const char* op) {
    if (auto s = validateScope(scope); !s) return s;
    auto t = openTenant(scope.tenant, /*create=*/true);
    if (!t) return t.status();
    std::shared_lock life((*t)->life);
    if (!(*t)->db) return removedMeanwhile(scope, op);
    return (*t)->db;
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

  // The tenant's database (id already validated), opened on first use. The handle is
  // cached for the store's lifetime; a failed open is not cached, so a later call retries.
  // Without `create`, a tenant that has no file yet gets nullptr and still no file.
  Result<std::shared_ptr<TenantDb>> openTenant(const std::string& tenant, bool create) {
    {
      // Every call looks its tenant up: shared, so lookups never queue behind each other.
      std::shared_lock lock(mu_);
      if (auto it = dbs_.find(tenant); it != dbs_.end()) return it->second;
    }
    std::lock_guard lock(mu_);
    if (auto it = dbs_.find(tenant); it != dbs_.end()) return it->second;
    const std::filesystem::path file = dir_ / (tenant + ".db");
    auto db = SqliteDatabase::open(file, {.create = create}, createSchema);
    if (!db && db.status().code() == StatusCode::kNotFound) return std::shared_ptr<TenantDb>();
    if (!db) {
      return Status::unavailable("cannot open storage for tenant \"" + tenant +
                                 "\": " + db.status().message());
    }
    auto t = std::make_shared<TenantDb>();
    t->db = std::move(*db);
    dbs_.emplace(tenant, t);
    return t;
  }

  const std::filesystem::path dir_;
  mutable std::shared_mutex mu_;  // guards dbs_ (not the databases inside)
  // Shared: an operation that found a database keeps its entry alive even if
  // removeTenant() drops it meanwhile.
  std::map<std::string, std::shared_ptr<TenantDb>> dbs_;
};

}  // namespace

Result<std::unique_ptr<KvStore>> openSqliteKvStore(const std::filesystem::path& dir) {
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
  return std::unique_ptr<KvStore>(std::make_unique<SqliteKvStore>(dir));
}

}  // namespace trellis::kernel::storage
