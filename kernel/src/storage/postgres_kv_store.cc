// KvStore on PostgreSQL: every tenant's entries in one table, trellis.kv, kept apart by
// row-level security (postgres.h). Each call is one transaction on a pooled session that
// first sets the tenant for that transaction only; the queries also name the tenant, so
// the index serves them, but the policy is what guarantees isolation.
//
// Keys and values are bytea, passed as hex text (decode(:k, 'hex') / encode(.., 'hex')):
// SOCI binds strings as C strings, which would cut them at the first NUL, and hex keeps
// every byte, valid UTF-8 or not. bytea compares like memcmp, which is list()'s order.
//
// Writes are group-committed (postgres_batch_writer.h): concurrent put() and remove() calls
// share a transaction and its commit, each in its own savepoint with its own tenant set.
//
// Storage quota: trellis.kv_usage holds each tenant's key + value bytes. put() charges the
// change with one conditional upsert in the write's savepoint, inside the batch's
// transaction; the row lock it takes serialises the tenant's growing writers on every
// host until that transaction ends, so the quota is exact.
#include <algorithm>
#include <optional>
#include <utility>

#include "storage/internal/hex.h"
#include "storage/internal/kv_keys.h"
#include "trellis/kernel/storage/kv_store.h"
#include "trellis/kernel/storage/postgres_batch_writer.h"
#include "trellis/tenants/identity.h"
#include "trellis/tenants/postgres.h"

namespace trellis::kernel::storage {
namespace {

using internal::conflict;
using internal::fromHex;
using internal::prefixSuccessor;
using internal::toHex;
using internal::validateKey;
using internal::validatePut;

using tenants::PostgresPool;
using tenants::sql::Query;

Status validateScope(const Scope& scope) {
  if (!isValidScopeTenant(scope.tenant)) {
    return Status::invalid("invalid tenant id \"" + scope.tenant + "\"");
  }
  if (scope.plugin.empty()) return Status::invalid("plugin id is empty");
  return Status::ok();
}

class PostgresKvStore final : public KvStore {
 public:
  explicit PostgresKvStore(std::shared_ptr<PostgresPool> pool)
      : pool_(std::move(pool)), writer_(pool_, {}) {}

  Result<KvEntry> get(const Scope& scope, std::string_view key) override {
    if (auto s = validateScope(scope); !s) return s;
    if (auto s = validateKey(key); !s) return s;
    const std::string k = toHex(key);
    return inTenant<KvEntry>(scope.tenant, "get", [&](soci::session& sql) -> Result<KvEntry> {
      std::string value;
      long long version = 0;
      bool found = Query(sql,
                         "SELECT encode(value, 'hex'), version FROM kv WHERE tenant_id = :t "
                         "AND plugin = :p AND key = decode(:k, 'hex')")
                       .use(scope.tenant)
                       .use(scope.plugin)
                       .use(k)
                       .into(value)
                       .into(version)
                       .run();
      if (!found) return Status::notFound("no such key");
      return KvEntry{std::string(key), fromHex(value), static_cast<uint64_t>(version)};
    });
  }

  Result<uint64_t> put(const Scope& scope, std::string_view key, std::string_view value,
                       uint64_t expected_version) override {
    if (auto s = validateScope(scope); !s) return s;
    if (auto s = validatePut(key, value); !s) return s;
    const std::string k = toHex(key), v = toHex(value);
    const size_t bytes = key.size() + value.size();
    long long next = 0;
    Status s = write(scope.tenant, "put", [&](soci::session& sql) {
      return putEntry(sql, scope, k, v, bytes, expected_version, next);
    });
    if (!s) return s;
    return static_cast<uint64_t>(next);
  }

  void putAsync(const Scope& scope, std::string_view key, std::string_view value,
                uint64_t expected_version, PutDone done) override {
    if (auto s = validateScope(scope); !s) return done(s);
    if (auto s = validatePut(key, value); !s) return done(s);
    struct Put {
      Scope scope;
      std::string key_hex, value_hex;
      size_t bytes;
      uint64_t expected_version;
      PutDone done;
      long long next = 0;
    };
    auto put = std::make_shared<Put>(Put{scope, toHex(key), toHex(value), key.size() + value.size(),
                                         expected_version, std::move(done)});
    writer_.writeAsync(
        scope.tenant,
        [put](soci::session& sql) {
          return putEntry(sql, put->scope, put->key_hex, put->value_hex, put->bytes,
                          put->expected_version, put->next);
        },
        [put](Status s) {
          if (!s) return put->done(named(std::move(s), "put", put->scope.tenant));
          put->done(static_cast<uint64_t>(put->next));
        });
  }

  Status remove(const Scope& scope, std::string_view key, uint64_t expected_version) override {
    if (auto s = validateScope(scope); !s) return s;
    if (auto s = validateKey(key); !s) return s;
    const std::string k = toHex(key);
    return write(scope.tenant, "remove", [&](soci::session& sql) {
      auto [current, old_bytes] = lockEntry(sql, scope, k);
      if (current == kAbsent) return Status::notFound("no such key");
      if (expected_version != kAnyVersion && expected_version != current) {
        return conflict(expected_version, current);
      }
      Query(sql, "DELETE FROM kv WHERE tenant_id = :t AND plugin = :p AND key = decode(:k, 'hex')")
          .use(scope.tenant)
          .use(scope.plugin)
          .use(k)
          .run();
      return charge(sql, scope, -old_bytes);
    });
  }

  Result<std::vector<KvEntry>> list(const Scope& scope, std::string_view prefix,
                                    std::string_view start_after, uint32_t limit) override {
    if (auto s = validateScope(scope); !s) return s;
    if (prefix.size() > kMaxKeyBytes || start_after.size() > kMaxKeyBytes) {
      return Status::invalid("prefix and start_after are limited to " +
                             std::to_string(kMaxKeyBytes) + " bytes");
    }
    // Range conditions instead of LIKE: '%' and '_' in a prefix stay literal bytes, and
    // the primary-key index serves the scan.
    const std::string lower = toHex(prefix), after = toHex(start_after);
    const std::optional<std::string> upper =
        prefixSuccessor(prefix) ? std::optional(toHex(*prefixSuccessor(prefix))) : std::nullopt;
    const int n = static_cast<int>(limit == 0 || limit > kMaxListLimit ? kMaxListLimit : limit);
    std::string query =
        "SELECT encode(key, 'hex'), encode(value, 'hex'), version FROM kv "
        "WHERE tenant_id = :t AND plugin = :p AND key >= decode(:lo, 'hex')";
    if (!start_after.empty()) query += " AND key > decode(:after, 'hex')";
    if (upper) query += " AND key < decode(:hi, 'hex')";
    query += " ORDER BY key LIMIT CAST(:n AS BIGINT)";
    using Entries = std::vector<KvEntry>;
    return inTenant<Entries>(scope.tenant, "list", [&](soci::session& sql) -> Result<Entries> {
      std::string key, value;
      long long version = 0;
      Query q(sql, query);
      q.use(scope.tenant).use(scope.plugin).use(lower);
      if (!start_after.empty()) q.use(after);
      if (upper) q.use(*upper);
      q.use(n).into(key).into(value).into(version);
      Entries out;
      for (bool row = q.run(); row; row = q.next()) {
        out.push_back(KvEntry{fromHex(key), fromHex(value), static_cast<uint64_t>(version)});
      }
      return out;
    });
  }

  Result<uint64_t> storageBytes(std::string_view tenant) override {
    if (!tenants::isValidTenantId(tenant)) {
      return Status::invalid("invalid tenant id \"" + std::string(tenant) + "\"");
    }
    const std::string t(tenant);
    return inTenant<uint64_t>(t, "storage usage", [&](soci::session& sql) -> Result<uint64_t> {
      return static_cast<uint64_t>(std::max(usedBytes(sql, t), 0LL));
    });
  }

  Status removeTenant(std::string_view tenant) override {
    if (!tenants::isValidTenantId(tenant)) {
      return Status::invalid("invalid tenant id \"" + std::string(tenant) + "\"");
    }
    const std::string t(tenant);
    auto r = inTenant<bool>(t, "remove tenant", [&](soci::session& sql) -> Result<bool> {
      Query(sql, "DELETE FROM kv WHERE tenant_id = :t").use(t).run();
      Query(sql, "DELETE FROM kv_usage WHERE tenant_id = :t").use(t).run();
      return true;
    });
    return r ? Status::ok() : r.status();
  }

  GroupCommit::Stats writeStats() const override { return writer_.stats(); }

 private:
  // Runs `body` as one write of a group-committed batch, for `tenant`; an UNAVAILABLE
  // answer names the operation and the tenant.
  template <typename Body>
  Status write(const std::string& tenant, const char* op, Body&& body) {
    return named(writer_.write(tenant, GroupCommit::Work(std::forward<Body>(body))), op, tenant);
  }

  static Status named(Status s, const char* op, const std::string& tenant) {
    if (s.code() != StatusCode::kUnavailable) return s;
    return Status::unavailable("storage " + std::string(op) + " for tenant \"" + tenant +
                               "\": " + s.message());
  }

  // Runs `body` in one transaction scoped to `tenant` (PostgresPool::transaction: commits
  // on success, retries what PostgreSQL asks to retry, replaces dead sessions).
  template <typename T, typename Body>
  Result<T> inTenant(const std::string& tenant, const char* op, Body&& body) {
    std::optional<Result<T>> out;
    Status s = pool_->transaction("storage " + std::string(op) + " for tenant \"" + tenant + "\"",
                                  tenant, [&](soci::session& sql) -> Status {
                                    Result<T> r = body(sql);
                                    if (!r) return r.status();
                                    out.emplace(std::move(r));
                                    return Status::ok();
                                  });
    if (!s) return s;
    return std::move(*out);
  }

  // The write of a put: checks the version and charges the quota (`key_bytes`: the key's and
  // value's bytes), then writes the entry. Sets `next` to the new version.
  static Status putEntry(soci::session& sql, const Scope& scope, const std::string& k,
                         const std::string& v, size_t key_bytes, uint64_t expected_version,
                         long long& next) {
    auto [current, old_bytes] = lockEntry(sql, scope, k);
    if (expected_version != kAnyVersion && expected_version != current) {
      return conflict(expected_version, current);
    }
    const long long delta = static_cast<long long>(key_bytes) - old_bytes;
    if (Status s = charge(sql, scope, delta); !s) return s;
    next = static_cast<long long>(current) + 1;
    if (current == kAbsent) {
      // A concurrent first insert of the same key fails here with unique_violation; the
      // retry then finds and locks the row.
      Query(sql,
            "INSERT INTO kv(tenant_id, plugin, key, value, version) "
            "VALUES (:t, :p, decode(:k, 'hex'), decode(:v, 'hex'), :n)")
          .use(scope.tenant)
          .use(scope.plugin)
          .use(k)
          .use(v)
          .use(next)
          .run();
    } else {
      Query(sql,
            "UPDATE kv SET value = decode(:v, 'hex'), version = :n "
            "WHERE tenant_id = :t AND plugin = :p AND key = decode(:k, 'hex')")
          .use(v)
          .use(next)
          .use(scope.tenant)
          .use(scope.plugin)
          .use(k)
          .run();
    }
    return Status::ok();
  }

  // The entry's version (kAbsent if none) and its charged bytes, row-locked until commit.
  static std::pair<uint64_t, long long> lockEntry(soci::session& sql, const Scope& scope,
                                                  const std::string& key_hex) {
    long long version = 0, bytes = 0;
    bool found = Query(sql,
                       "SELECT version, length(key) + length(value) FROM kv "
                       "WHERE tenant_id = :t AND plugin = :p AND key = decode(:k, 'hex') "
                       "FOR UPDATE")
                     .use(scope.tenant)
                     .use(scope.plugin)
                     .use(key_hex)
                     .into(version)
                     .into(bytes)
                     .run();
    return found ? std::pair{static_cast<uint64_t>(version), bytes} : std::pair{kAbsent, 0LL};
  }

  static long long usedBytes(soci::session& sql, const std::string& tenant) {
    long long bytes = 0;
    Query(sql, "SELECT bytes FROM kv_usage WHERE tenant_id = :t").use(tenant).into(bytes).run();
    return bytes;
  }

  // Adds `delta` to the tenant's usage. Only growth is checked (a tenant over a quota
  // lowered after the fact can still shrink): the check and the charge are one statement,
  // and its row lock orders every writer of the tenant.
  static Status charge(soci::session& sql, const Scope& scope, long long delta) {
    if (delta == 0) return Status::ok();
    long long max =
        scope.max_storage_bytes
            ? static_cast<long long>(std::min<uint64_t>(*scope.max_storage_bytes, INT64_MAX))
            : -1;
    long long charged = 0;
    soci::indicator ind = soci::i_ok;
    // Parameters are typed explicitly: libpq sends them untyped, and PostgreSQL would read
    // a bare one compared with 0 as a 32-bit integer.
    Query q(sql,
            "INSERT INTO kv_usage AS u (tenant_id, bytes) "
            "SELECT CAST(:t AS TEXT), CAST(:d AS BIGINT) "
            "WHERE CAST(:d1 AS BIGINT) <= 0 OR CAST(:m AS BIGINT) < 0 "
            " OR CAST(:d2 AS BIGINT) <= CAST(:m1 AS BIGINT) "
            "ON CONFLICT (tenant_id) DO UPDATE SET bytes = u.bytes + EXCLUDED.bytes "
            "WHERE EXCLUDED.bytes <= 0 OR CAST(:m2 AS BIGINT) < 0 "
            " OR u.bytes + EXCLUDED.bytes <= CAST(:m3 AS BIGINT) "
            "RETURNING u.bytes");
    q.use(scope.tenant).use(delta).use(delta).use(max).use(delta).use(max).use(max).use(max);
    q.into(charged, ind);
    if (q.run()) return Status::ok();
    const long long used = std::max(usedBytes(sql, scope.tenant), 0LL);
    return Status::quotaExceeded("storage quota of " + std::to_string(max) +
                                 " bytes exceeded: using " + std::to_string(used) +
                                 ", this write needs " + std::to_string(delta) + " more");
  }

  std::shared_ptr<PostgresPool> pool_;
  PostgresBatchWriter writer_;
};

}  // namespace

Result<std::unique_ptr<KvStore>> openPostgresKvStore(std::shared_ptr<tenants::PostgresPool> pool) {
  if (!pool) return Status::invalid("no PostgreSQL pool");
  return std::unique_ptr<KvStore>(std::make_unique<PostgresKvStore>(std::move(pool)));
}

}  // namespace trellis::kernel::storage
