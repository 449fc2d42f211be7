// BlobStore on PostgreSQL, for several hosts sharing one database. Contents are rows of
// kChunkBytes in trellis.blob_chunks, keyed by a random object id; an object exists once
// its head row in blob_objects names that id. An upload registers its id in blob_uploads,
// writes each full chunk in a transaction of its own (so no transaction stays open while a
// plugin streams), and commit() is one transaction: the upload row is consumed, the quota
// charged on blob_usage (one conditional upsert whose row lock orders the tenant's
// committers on every host), the head row replaced and the old object's chunks deleted.
// Every statement runs with trellis.tenant set, under FORCE ROW LEVEL SECURITY.
#include <algorithm>
#include <optional>
#include <utility>

#include "services/blobs/blob_rules.h"
#include "storage/internal/hex.h"
#include "storage/internal/kv_keys.h"
#include "trellis/tenants/identity.h"
#include "trellis/tenants/postgres.h"

namespace trellis::kernel::services::blobs {
namespace {

using storage::internal::fromHex;
using storage::internal::toHex;
using tenants::PostgresPool;
using tenants::sql::Query;

constexpr size_t kChunkBytes = 1024 * 1024;
// An upload untouched this long belongs to a host that died; the next upload drops it.
constexpr const char* kStaleUpload = "interval '1 hour'";

Status validateScope(const Scope& scope) {
  if (!tenants::isValidTenantId(scope.tenant)) {
    return Status::invalid("invalid tenant id \"" + scope.tenant + "\"");
  }
  if (scope.plugin.empty()) return Status::invalid("plugin id is empty");
  return Status::ok();
}

// Runs `body` in one transaction scoped to `tenant`.
template <typename T, typename Body>
Result<T> inTenant(PostgresPool& pool, const std::string& tenant, const char* op, Body&& body) {
  std::optional<Result<T>> out;
  Status s = pool.transaction("blob " + std::string(op) + " for tenant \"" + tenant + "\"", tenant,
                              [&](soci::session& sql) -> Status {
                                Result<T> r = body(sql);
                                if (!r) return r.status();
                                out.emplace(std::move(r));
                                return Status::ok();
                              });
  if (!s) return s;
  return std::move(*out);
}

struct Head {
  std::string object_id;
  long long chunk_size = 0;
  BlobInfo info;
};

std::optional<Head> findHead(soci::session& sql, const Scope& scope, const std::string& key_hex,
                             bool lock) {
  Head h;
  long long size = 0, created = 0;
  std::string metadata;
  std::string q =
      "SELECT object_id, chunk_size, size, sha256, content_type, metadata, created_ms "
      "FROM blob_objects WHERE tenant_id = :t AND plugin = :p AND key = decode(:k, 'hex')";
  if (lock) q += " FOR UPDATE";
  bool found = Query(sql, q)
                   .use(scope.tenant)
                   .use(scope.plugin)
                   .use(key_hex)
                   .into(h.object_id)
                   .into(h.chunk_size)
                   .into(size)
                   .into(h.info.sha256)
                   .into(h.info.content_type)
                   .into(metadata)
                   .into(created)
                   .run();
  if (!found) return std::nullopt;
  h.info.created_ms = created;
  h.info.key = fromHex(key_hex);
  h.info.size = static_cast<uint64_t>(size);
  h.info.metadata = internal::decodeMetadata(metadata);
  return h;
}

long long usedBytes(soci::session& sql, const std::string& tenant) {
  long long bytes = 0;
  Query(sql, "SELECT bytes FROM blob_usage WHERE tenant_id = :t").use(tenant).into(bytes).run();
  return bytes;
}

// Adds `delta` to the tenant's blob usage; growth only if it stays within `max`.
Status charge(soci::session& sql, const Scope& scope, long long delta) {
  if (delta == 0) return Status::ok();
  const long long max =
      scope.max_storage_bytes
          ? static_cast<long long>(std::min<uint64_t>(*scope.max_storage_bytes, INT64_MAX))
          : -1;
  long long charged = 0;
  Query q(sql,
          "INSERT INTO blob_usage AS u (tenant_id, bytes) "
          "SELECT CAST(:t AS TEXT), CAST(:d AS BIGINT) "
          "WHERE CAST(:d1 AS BIGINT) <= 0 OR CAST(:m AS BIGINT) < 0 "
          " OR CAST(:d2 AS BIGINT) <= CAST(:m1 AS BIGINT) "
          "ON CONFLICT (tenant_id) DO UPDATE SET bytes = u.bytes + EXCLUDED.bytes "
          "WHERE EXCLUDED.bytes <= 0 OR CAST(:m2 AS BIGINT) < 0 "
          " OR u.bytes + EXCLUDED.bytes <= CAST(:m3 AS BIGINT) "
          "RETURNING u.bytes");
  q.use(scope.tenant).use(delta).use(delta).use(max).use(delta).use(max).use(max).use(max);
  q.into(charged);
  if (q.run()) return Status::ok();
  const long long used = std::max(usedBytes(sql, scope.tenant), 0LL);
  return internal::checkQuota(scope.max_storage_bytes, static_cast<uint64_t>(used), delta);
}

void dropChunks(soci::session& sql, const std::string& tenant, const std::string& object_id) {
  Query(sql, "DELETE FROM blob_chunks WHERE tenant_id = :t AND object_id = :o")
      .use(tenant)
      .use(object_id)
      .run();
}

class PostgresBlobWriter final : public BlobWriter {
 public:
  PostgresBlobWriter(std::shared_ptr<PostgresPool> pool, Scope scope, std::string key,
                     WriteOptions options, std::string id)
      : pool_(std::move(pool)),
        scope_(std::move(scope)),
        key_(std::move(key)),
        options_(std::move(options)),
        id_(std::move(id)) {
    buffer_.reserve(kChunkBytes);
  }
  ~PostgresBlobWriter() override { abort(); }

  Status write(std::string_view chunk) override {
    if (done_) return Status::invalid("the upload is finished");
    if (scope_.max_storage_bytes && size_ + chunk.size() > *scope_.max_storage_bytes) {
      abort();
      return Status::quotaExceeded("storage quota of " + std::to_string(*scope_.max_storage_bytes) +
                                   " bytes exceeded by this object alone");
    }
    sha_.update(chunk);
    size_ += chunk.size();
    while (!chunk.empty()) {
      const size_t n = std::min(chunk.size(), kChunkBytes - buffer_.size());
      buffer_.append(chunk.substr(0, n));
      chunk.remove_prefix(n);
      if (buffer_.size() == kChunkBytes) {
        if (Status s = flush(); !s) {
          abort();
          return s;
        }
      }
    }
    return Status::ok();
  }

  Result<BlobInfo> commit() override {
    if (done_) return Status::invalid("the upload is finished");
    if (!buffer_.empty()) {
      if (Status s = flush(); !s) {
        abort();
        return s;
      }
    }
    BlobInfo info{
        key_, size_, sha_.hexDigest(), options_.content_type, options_.metadata, internal::nowMs()};
    const std::string k = toHex(key_), metadata = internal::encodeMetadata(info.metadata);
    auto r = inTenant<
        bool>(*pool_, scope_.tenant, "commit", [&](soci::session& sql) -> Result<bool> {
      Query consume(sql, "DELETE FROM blob_uploads WHERE tenant_id = :t AND object_id = :o");
      consume.use(scope_.tenant).use(id_).run();
      if (consume.affectedRows() != 1) {
        return Status::unavailable("the upload expired (idle for over an hour)");
      }
      auto old = findHead(sql, scope_, k, /*lock=*/true);
      const long long delta =
          static_cast<long long>(size_) - static_cast<long long>(old ? old->info.size : 0);
      if (Status s = charge(sql, scope_, delta); !s) return s;
      const long long size = static_cast<long long>(size_), chunk = kChunkBytes,
                      created = info.created_ms;
      Query(sql,
            "INSERT INTO blob_objects(tenant_id, plugin, key, object_id, size, chunk_size, sha256,"
            " content_type, metadata, created_ms) VALUES (:t, :p, decode(:k, 'hex'), :o, :s, :c,"
            " :h, :ct, :m, :cr) ON CONFLICT (tenant_id, plugin, key) DO UPDATE SET"
            " object_id = EXCLUDED.object_id, size = EXCLUDED.size,"
            " chunk_size = EXCLUDED.chunk_size, sha256 = EXCLUDED.sha256,"
            " content_type = EXCLUDED.content_type, metadata = EXCLUDED.metadata,"
            " created_ms = EXCLUDED.created_ms")
          .use(scope_.tenant)
          .use(scope_.plugin)
          .use(k)
          .use(id_)
          .use(size)
          .use(chunk)
          .use(info.sha256)
          .use(info.content_type)
          .use(metadata)
          .use(created)
          .run();
      if (old) dropChunks(sql, scope_.tenant, old->object_id);
      return true;
    });
    if (!r) {
      abort();  // a refused commit keeps nothing of the upload
      return r.status();
    }
    done_ = true;
    return info;
  }

  void abort() override {
    if (done_) return;
    done_ = true;
    buffer_.clear();
    (void)inTenant<bool>(*pool_, scope_.tenant, "abort", [&](soci::session& sql) -> Result<bool> {
      dropChunks(sql, scope_.tenant, id_);
      Query(sql, "DELETE FROM blob_uploads WHERE tenant_id = :t AND object_id = :o")
          .use(scope_.tenant)
          .use(id_)
          .run();
      return true;
    });
  }

 private:
  Status flush() {
    const std::string data = toHex(buffer_);
    const int seq = seq_;
    auto r =
        inTenant<bool>(*pool_, scope_.tenant, "write", [&](soci::session& sql) -> Result<bool> {
          Query touch(sql,
                      "UPDATE blob_uploads SET touched_at = now() "
                      "WHERE tenant_id = :t AND object_id = :o");
          touch.use(scope_.tenant).use(id_).run();
          if (touch.affectedRows() != 1) {
            return Status::unavailable("the upload expired (idle for over an hour)");
          }
          Query(sql,
                "INSERT INTO blob_chunks(tenant_id, object_id, seq, data) "
                "VALUES (:t, :o, :n, decode(:d, 'hex'))")
              .use(scope_.tenant)
              .use(id_)
              .use(seq)
              .use(data)
              .run();
          return true;
        });
    if (!r) return r.status();
    ++seq_;
    buffer_.clear();
    return Status::ok();
  }

  std::shared_ptr<PostgresPool> pool_;
  Scope scope_;
  std::string key_;
  WriteOptions options_;
  std::string id_;
  std::string buffer_;
  internal::Sha256 sha_;
  uint64_t size_ = 0;
  int seq_ = 0;
  bool done_ = false;
};

class PostgresBlobReader final : public BlobReader {
 public:
  PostgresBlobReader(std::shared_ptr<PostgresPool> pool, Scope scope, Head head, uint64_t offset,
                     uint64_t end)
      : pool_(std::move(pool)),
        scope_(std::move(scope)),
        head_(std::move(head)),
        pos_(offset),
        end_(end) {}

  const BlobInfo& info() const override { return head_.info; }

  Result<size_t> read(char* buf, size_t capacity) override {
    if (pos_ >= end_ || capacity == 0) return size_t{0};
    const uint64_t chunk = static_cast<uint64_t>(head_.chunk_size);
    const int seq = static_cast<int>(pos_ / chunk);
    if (seq != loaded_seq_) {
      const std::string& o = head_.object_id;
      std::string hex;
      auto r =
          inTenant<bool>(*pool_, scope_.tenant, "read", [&](soci::session& sql) -> Result<bool> {
            return Query(sql,
                         "SELECT encode(data, 'hex') FROM blob_chunks "
                         "WHERE tenant_id = :t AND object_id = :o AND seq = :n")
                .use(scope_.tenant)
                .use(o)
                .use(seq)
                .into(hex)
                .run();
          });
      if (!r) return r.status();
      if (!*r) return Status::conflict("the blob was replaced or deleted while it was read");
      data_ = fromHex(hex);
      loaded_seq_ = seq;
    }
    const size_t in_chunk = static_cast<size_t>(pos_ % chunk);
    if (in_chunk >= data_.size()) return Status::internal("blob chunk is shorter than recorded");
    const size_t n =
        static_cast<size_t>(std::min<uint64_t>({capacity, end_ - pos_, data_.size() - in_chunk}));
    std::copy_n(data_.data() + in_chunk, n, buf);
    pos_ += n;
    return n;
  }

 private:
  std::shared_ptr<PostgresPool> pool_;
  Scope scope_;
  Head head_;
  uint64_t pos_;
  uint64_t end_;
  std::string data_;  // one chunk: the reader's whole buffer
  int loaded_seq_ = -1;
};

class PostgresBlobStore final : public BlobStore {
 public:
  explicit PostgresBlobStore(std::shared_ptr<PostgresPool> pool) : pool_(std::move(pool)) {}

  Result<std::unique_ptr<BlobWriter>> openWrite(const Scope& scope, std::string_view key,
                                                const WriteOptions& options) override {
    if (Status s = validateScope(scope); !s) return s;
    if (Status s = validateKey(key); !s) return s;
    if (Status s = validateWriteOptions(options); !s) return s;
    std::string id = internal::newObjectId();
    auto r =
        inTenant<bool>(*pool_, scope.tenant, "upload", [&](soci::session& sql) -> Result<bool> {
          const std::string stale = std::string("touched_at < now() - ") + kStaleUpload;
          Query(sql,
                "DELETE FROM blob_chunks c USING blob_uploads u WHERE c.tenant_id = :t AND "
                "u.tenant_id = :t1 AND c.object_id = u.object_id AND u." +
                    stale)
              .use(scope.tenant)
              .use(scope.tenant)
              .run();
          Query(sql, "DELETE FROM blob_uploads WHERE tenant_id = :t AND " + stale)
              .use(scope.tenant)
              .run();
          Query(sql, "INSERT INTO blob_uploads(tenant_id, object_id) VALUES (:t, :o)")
              .use(scope.tenant)
              .use(id)
              .run();
          return true;
        });
    if (!r) return r.status();
    return std::unique_ptr<BlobWriter>(std::make_unique<PostgresBlobWriter>(
        pool_, scope, std::string(key), options, std::move(id)));
  }

  Result<std::unique_ptr<BlobReader>> openRead(const Scope& scope, std::string_view key,
                                               Range range) override {
    auto h = findHeadOf(scope, key);
    if (!h) return h.status();
    const uint64_t size = h->info.size;
    if (range.offset > size) {
      return Status::invalid("range: offset " + std::to_string(range.offset) +
                             " is past the end (" + std::to_string(size) + " bytes)");
    }
    const uint64_t end =
        range.length ? range.offset + std::min(*range.length, size - range.offset) : size;
    return std::unique_ptr<BlobReader>(
        std::make_unique<PostgresBlobReader>(pool_, scope, std::move(*h), range.offset, end));
  }

  Result<BlobInfo> head(const Scope& scope, std::string_view key) override {
    auto h = findHeadOf(scope, key);
    if (!h) return h.status();
    return std::move(h->info);
  }

  Status remove(const Scope& scope, std::string_view key) override {
    if (Status s = validateScope(scope); !s) return s;
    if (Status s = validateKey(key); !s) return s;
    const std::string k = toHex(key);
    auto r =
        inTenant<bool>(*pool_, scope.tenant, "remove", [&](soci::session& sql) -> Result<bool> {
          auto old = findHead(sql, scope, k, /*lock=*/true);
          if (!old) return Status::notFound("no such blob");
          Query(sql,
                "DELETE FROM blob_objects WHERE tenant_id = :t AND plugin = :p AND "
                "key = decode(:k, 'hex')")
              .use(scope.tenant)
              .use(scope.plugin)
              .use(k)
              .run();
          dropChunks(sql, scope.tenant, old->object_id);
          if (Status s = charge(sql, scope, -static_cast<long long>(old->info.size)); !s) return s;
          return true;
        });
    return r ? Status::ok() : r.status();
  }

  Result<Page> list(const Scope& scope, std::string_view prefix, std::string_view start_after,
                    uint32_t limit) override {
    if (Status s = validateScope(scope); !s) return s;
    if (prefix.size() > kMaxKeyBytes || start_after.size() > kMaxKeyBytes) {
      return Status::invalid("prefix: prefix and start_after are limited to " +
                             std::to_string(kMaxKeyBytes) + " bytes");
    }
    const std::string lower = toHex(prefix), after = toHex(start_after);
    const auto successor = storage::internal::prefixSuccessor(prefix);
    const std::optional<std::string> upper =
        successor ? std::optional(toHex(*successor)) : std::nullopt;
    const int n = static_cast<int>(limit == 0 || limit > kMaxListLimit ? kMaxListLimit : limit);
    std::string query =
        "SELECT encode(key, 'hex'), size, sha256, content_type, metadata, created_ms "
        "FROM blob_objects WHERE tenant_id = :t AND plugin = :p AND key >= decode(:lo, 'hex')";
    if (!start_after.empty()) query += " AND key > decode(:after, 'hex')";
    if (upper) query += " AND key < decode(:hi, 'hex')";
    query += " ORDER BY key LIMIT CAST(:n AS BIGINT)";
    return inTenant<Page>(*pool_, scope.tenant, "list", [&](soci::session& sql) -> Result<Page> {
      std::string key, metadata;
      long long size = 0, created = 0;
      BlobInfo info;
      const int fetch = n + 1;  // one more tells whether another page follows
      Query q(sql, query);
      q.use(scope.tenant).use(scope.plugin).use(lower);
      if (!start_after.empty()) q.use(after);
      if (upper) q.use(*upper);
      q.use(fetch).into(key).into(size).into(info.sha256).into(info.content_type);
      q.into(metadata).into(created);
      Page page;
      for (bool row = q.run(); row; row = q.next()) {
        if (page.blobs.size() == static_cast<size_t>(n)) {
          page.next_start_after = page.blobs.back().key;
          break;
        }
        info.key = fromHex(key);
        info.size = static_cast<uint64_t>(size);
        info.metadata = internal::decodeMetadata(metadata);
        info.created_ms = created;
        page.blobs.push_back(info);
      }
      return page;
    });
  }

  Result<uint64_t> storageBytes(std::string_view tenant) override {
    if (!tenants::isValidTenantId(tenant)) {
      return Status::invalid("invalid tenant id \"" + std::string(tenant) + "\"");
    }
    const std::string t(tenant);
    return inTenant<uint64_t>(*pool_, t, "usage", [&](soci::session& sql) -> Result<uint64_t> {
      return static_cast<uint64_t>(std::max(usedBytes(sql, t), 0LL));
    });
  }

  Status removeTenant(std::string_view tenant) override {
    if (!tenants::isValidTenantId(tenant)) {
      return Status::invalid("invalid tenant id \"" + std::string(tenant) + "\"");
    }
    const std::string t(tenant);
    auto r = inTenant<bool>(*pool_, t, "remove tenant", [&](soci::session& sql) -> Result<bool> {
      for (const char* table : {"blob_objects", "blob_chunks", "blob_uploads", "blob_usage"}) {
        Query(sql, std::string("DELETE FROM ") + table + " WHERE tenant_id = :t").use(t).run();
      }
      return true;
    });
    return r ? Status::ok() : r.status();
  }

 private:
  Result<Head> findHeadOf(const Scope& scope, std::string_view key) {
    if (Status s = validateScope(scope); !s) return s;
    if (Status s = validateKey(key); !s) return s;
    const std::string k = toHex(key);
    return inTenant<Head>(*pool_, scope.tenant, "head", [&](soci::session& sql) -> Result<Head> {
      auto h = findHead(sql, scope, k, /*lock=*/false);
      if (!h) return Status::notFound("no such blob");
      return std::move(*h);
    });
  }

  std::shared_ptr<PostgresPool> pool_;
};

}  // namespace

Result<std::unique_ptr<BlobStore>> openPostgresBlobStore(std::shared_ptr<PostgresPool> pool) {
  if (!pool) return Status::invalid("no PostgreSQL pool");
  return std::unique_ptr<BlobStore>(std::make_unique<PostgresBlobStore>(std::move(pool)));
}

}  // namespace trellis::kernel::services::blobs
