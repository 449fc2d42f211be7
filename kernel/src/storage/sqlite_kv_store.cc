// KvStore on SQLite through SOCI. One database file per tenant keeps tenants apart at the
// file level (a bug in a query cannot read another tenant's rows) and lets an operator
// back up, move or delete one tenant's data with ordinary file tools.
//
// Keys and values are bound as strings (SOCI 4.0's sqlite3 backend passes the length, so
// NUL bytes survive) and CAST to BLOB in SQL, so every stored key is a BLOB and compares
// with memcmp: byte order for list(), and no collation or UTF-8 rules apply.
//
// Storage quota: each database keeps its tenant's total (key + value bytes) in the
// one-row table `usage`. put() and remove() adjust it in the same BEGIN IMMEDIATE
// transaction that checks the version and writes, so the quota check, the charge and the
// write are one atomic step against every other writer of the file, in or out of process.
#include <fcntl.h>
#include <soci/soci.h>
#include <soci/sqlite3/soci-sqlite3.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <map>
#include <memory>
#include <mutex>
#include <optional>
#include <stdexcept>
#include <system_error>
#include <utility>

#include "storage/internal/kv_keys.h"
#include "trellis/kernel/storage/kv_store.h"
#include "trellis/tenants/identity.h"
#include "trellis/tenants/sql_statement.h"

namespace trellis::kernel::storage {
namespace {

using internal::prefixSuccessor;
using internal::validateKey;

using tenants::sql::exec;
using tenants::sql::Query;
using tenants::sql::WriteTransaction;

constexpr int kBusyTimeoutMs = 5000;

// One open database. The mutex serialises every use of the session (SOCI sessions are
// not thread-safe) and makes read-check-write sequences atomic within this process;
// BEGIN IMMEDIATE makes them atomic against other processes on the same file too.
struct TenantDb {
  std::mutex mu;
  soci::session sql;
};

class SqliteKvStore final : public KvStore {
 public:
  explicit SqliteKvStore(std::filesystem::path dir) : dir_(std::move(dir)) {}

  Result<KvEntry> get(const Scope& scope, std::string_view key) override {
    if (auto s = validateKey(key); !s) return s;
    auto db = open(scope);
    if (!db) return db.status();
    TenantDb& t = **db;
    std::lock_guard lock(t.mu);
    try {
      std::string k(key), value;
      long long version = 0;
      soci::indicator ind = soci::i_ok;
      bool found =
          Query(t.sql, "SELECT value, version FROM kv WHERE plugin = :p AND key = CAST(:k AS BLOB)")
              .use(scope.plugin)
              .use(k)
              .into(value, ind)
              .into(version)
              .run();
      if (!found) return Status::notFound("no such key");
      if (ind == soci::i_null) value.clear();
      return KvEntry{std::move(k), std::move(value), static_cast<uint64_t>(version)};
    } catch (const std::exception& e) {
      return failure(scope, "get", e);
    }
  }

  Result<uint64_t> put(const Scope& scope, std::string_view key, std::string_view value,
                       uint64_t expected_version) override {
    if (auto s = validateKey(key); !s) return s;
    if (value.size() > kMaxValueBytes) {
      return Status::invalid("value is " + std::to_string(value.size()) + " bytes; the limit is " +
                             std::to_string(kMaxValueBytes));
    }
    auto db = open(scope);
    if (!db) return db.status();
    TenantDb& t = **db;
    std::lock_guard lock(t.mu);
    try {
      std::string k(key), v(value);
      WriteTransaction tx(t.sql);
      auto [current, old_bytes] = currentEntry(t.sql, scope.plugin, k);
      if (expected_version != kAnyVersion && expected_version != current) {
        return conflict(expected_version, current);
      }
      const long long delta = static_cast<long long>(k.size() + v.size()) - old_bytes;
      // Only growth is checked: shrinking must stay possible for a tenant that is over a
      // quota lowered after the data was written.
      if (delta > 0 && scope.max_storage_bytes) {
        const uint64_t used = static_cast<uint64_t>(std::max(usedBytes(t.sql), 0LL));
        const uint64_t max = *scope.max_storage_bytes;
        if (used > max || static_cast<uint64_t>(delta) > max - used) {
          return Status::quotaExceeded("storage quota of " + std::to_string(max) +
                                       " bytes exceeded: using " + std::to_string(used) +
                                       ", this write needs " + std::to_string(delta) + " more");
        }
      }
      long long next = static_cast<long long>(current) + 1;
      if (current == kAbsent) {
        Query(t.sql,
              "INSERT INTO kv(plugin, key, value, version) "
              "VALUES(:p, CAST(:k AS BLOB), CAST(:v AS BLOB), :n)")
            .use(scope.plugin)
            .use(k)
            .use(v)
            .use(next)
            .run();
      } else {
        Query(t.sql,
              "UPDATE kv SET value = CAST(:v AS BLOB), version = :n "
              "WHERE plugin = :p AND key = CAST(:k AS BLOB)")
            .use(v)
            .use(next)
            .use(scope.plugin)
            .use(k)
            .run();
      }
      addUsage(t.sql, delta);
      tx.commit();
      return static_cast<uint64_t>(next);
    } catch (const std::exception& e) {
      return failure(scope, "put", e);
    }
  }

  Status remove(const Scope& scope, std::string_view key, uint64_t expected_version) override {
    if (auto s = validateKey(key); !s) return s;
    auto db = open(scope);
    if (!db) return db.status();
    TenantDb& t = **db;
    std::lock_guard lock(t.mu);
    try {
      std::string k(key);
      WriteTransaction tx(t.sql);
      auto [current, old_bytes] = currentEntry(t.sql, scope.plugin, k);
      if (current == kAbsent) return Status::notFound("no such key");
      if (expected_version != kAnyVersion && expected_version != current) {
        return conflict(expected_version, current);
      }
      Query(t.sql, "DELETE FROM kv WHERE plugin = :p AND key = CAST(:k AS BLOB)")
          .use(scope.plugin)
          .use(k)
          .run();
      addUsage(t.sql, -old_bytes);
      tx.commit();
      return Status::ok();
    } catch (const std::exception& e) {
      return failure(scope, "remove", e);
    }
  }

  Result<std::vector<KvEntry>> list(const Scope& scope, std::string_view prefix,
                                    std::string_view start_after, uint32_t limit) override {
    if (prefix.size() > kMaxKeyBytes || start_after.size() > kMaxKeyBytes) {
      return Status::invalid("prefix and start_after are limited to " +
                             std::to_string(kMaxKeyBytes) + " bytes");
    }
    auto db = open(scope);
    if (!db) return db.status();
    TenantDb& t = **db;

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

    std::lock_guard lock(t.mu);
    try {
      std::string key, value;
      long long version = 0;
      soci::indicator ind = soci::i_ok;
      Query q(t.sql, query);
      q.use(scope.plugin).use(lower);
      if (!after.empty()) q.use(after);
      if (upper) q.use(*upper);
      q.use(n).into(key).into(value, ind).into(version);
      std::vector<KvEntry> out;
      for (bool row = q.run(); row; row = q.next()) {
        if (ind == soci::i_null) value.clear();
        out.push_back(KvEntry{key, value, static_cast<uint64_t>(version)});
      }
      return out;
    } catch (const std::exception& e) {
      return failure(scope, "list", e);
    }
  }

  Result<uint64_t> storageBytes(std::string_view tenant) override {
    if (!tenants::isValidTenantId(tenant)) {
      return Status::invalid("invalid tenant id \"" + std::string(tenant) + "\"");
    }
    auto db = openTenant(std::string(tenant), /*create=*/false);
    if (!db) return db.status();
    if (!*db) return uint64_t{0};  // no database: the tenant has never stored anything
    TenantDb& t = **db;
    std::lock_guard lock(t.mu);
    try {
      return static_cast<uint64_t>(std::max(usedBytes(t.sql), 0LL));
    } catch (const std::exception& e) {
      return Status::unavailable("storage usage for tenant \"" + std::string(tenant) +
                                 "\" failed: " + e.what());
    }
  }

 private:
  // The entry's version (kAbsent if there is none) and the bytes it is charged for.
  static std::pair<uint64_t, long long> currentEntry(soci::session& sql, const std::string& plugin,
                                                     const std::string& key) {
    long long version = 0, bytes = 0;
    bool found = Query(sql,
                       "SELECT version, length(key) + length(value) FROM kv "
                       "WHERE plugin = :p AND key = CAST(:k AS BLOB)")
                     .use(plugin)
                     .use(key)
                     .into(version)
                     .into(bytes)
                     .run();
    return found ? std::pair{static_cast<uint64_t>(version), bytes} : std::pair{kAbsent, 0LL};
  }

  static long long usedBytes(soci::session& sql) {
    long long bytes = 0;
    Query(sql, "SELECT bytes FROM usage").into(bytes).run();
    return bytes;
  }

  static void addUsage(soci::session& sql, long long delta) {
    if (delta != 0) Query(sql, "UPDATE usage SET bytes = bytes + :d").use(delta).run();
  }

  static Status conflict(uint64_t expected, uint64_t current) {
    auto describe = [](uint64_t v) {
      return v == kAbsent ? std::string("absent") : "version " + std::to_string(v);
    };
    return Status::conflict("expected " + describe(expected) + ", found " + describe(current));
  }

  Status removeTenant(std::string_view tenant) override {
    if (!tenants::isValidTenantId(tenant)) {
      return Status::invalid("invalid tenant id \"" + std::string(tenant) + "\"");
    }
    // The map lock is held to the end, so no other call can reopen the file between
    // closing it and unlinking it (nothing takes it while holding a tenant's lock).
    std::lock_guard lock(mu_);
    if (auto it = dbs_.find(std::string(tenant)); it != dbs_.end()) {
      std::shared_ptr<TenantDb> db = std::move(it->second);
      dbs_.erase(it);
      std::lock_guard db_lock(db->mu);  // lets the operation in progress finish first
      db->sql.close();
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

  static Status failure(const Scope& scope, const char* op, const std::exception& e) {
    return Status::unavailable("storage " + std::string(op) + " for tenant \"" + scope.tenant +
                               "\" failed: " + e.what());
  }

  Result<std::shared_ptr<TenantDb>> open(const Scope& scope) {
    // Checked here as well as at the edge: the id becomes a file name.
    if (!tenants::isValidTenantId(scope.tenant)) {
      return Status::invalid("invalid tenant id \"" + scope.tenant + "\"");
    }
    if (scope.plugin.empty()) return Status::invalid("plugin id is empty");
    return openTenant(scope.tenant, /*create=*/true);
  }

  // The tenant's database (id already validated), opened on first use. The handle is
  // cached for the store's lifetime; a failed open is not cached, so a later call retries.
  // Without `create`, a tenant that has no file yet gets nullptr and still no file.
  Result<std::shared_ptr<TenantDb>> openTenant(const std::string& tenant, bool create) {
    std::lock_guard lock(mu_);
    if (auto it = dbs_.find(tenant); it != dbs_.end()) return it->second;
    std::filesystem::path file = dir_ / (tenant + ".db");
    try {
      // Tenant data is private to the server's user: create the file 0600 before SQLite
      // does (it would use the umask), and SQLite gives -wal/-shm the same mode.
      int fd = ::open(file.c_str(), O_RDWR | O_CLOEXEC | (create ? O_CREAT : 0), 0600);
      if (fd < 0 && !create && errno == ENOENT) return std::shared_ptr<TenantDb>();
      if (fd < 0) {
        throw std::system_error(errno, std::generic_category(), create ? "create" : "open");
      }
      ::close(fd);
      auto db = std::make_shared<TenantDb>();
      db->sql.open(soci::sqlite3,
                   "db=\"" + file.string() + "\" timeout=" + std::to_string(kBusyTimeoutMs / 1000));
      std::string mode;
      Query(db->sql, "PRAGMA journal_mode=WAL").into(mode).run();
      if (mode != "wal") throw std::runtime_error("cannot enable WAL (journal_mode=" + mode + ")");
      exec(db->sql, "PRAGMA synchronous=FULL");
      exec(db->sql, "PRAGMA busy_timeout=" + std::to_string(kBusyTimeoutMs));
      // One transaction, so a database from before the quota (kv without usage) gets its
      // usage row exactly once, computed from the data, even with two processes opening it.
      WriteTransaction tx(db->sql);
      exec(db->sql,
           "CREATE TABLE IF NOT EXISTS kv("
           "plugin TEXT NOT NULL, key BLOB NOT NULL, value BLOB NOT NULL, "
           "version INTEGER NOT NULL, PRIMARY KEY(plugin, key))");
      exec(db->sql, "CREATE TABLE IF NOT EXISTS usage(bytes INTEGER NOT NULL)");
      exec(db->sql,
           "INSERT INTO usage(bytes) SELECT COALESCE(SUM(length(key) + length(value)), 0) FROM kv "
           "WHERE NOT EXISTS (SELECT 1 FROM usage)");
      tx.commit();
      dbs_.emplace(tenant, db);
      return db;
    } catch (const std::exception& e) {
      return Status::unavailable("cannot open storage for tenant \"" + tenant + "\" (" +
                                 file.string() + "): " + e.what());
    }
  }

  const std::filesystem::path dir_;
  std::mutex mu_;  // guards dbs_ (not the sessions inside)
  // Shared: an operation that opened a database keeps it alive even if removeTenant()
  // drops it meanwhile (the operation then fails on the closed session).
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
