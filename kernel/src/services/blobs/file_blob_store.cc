// BlobStore on local files. Contents live in one file per object, named by a random id
// (keys never become paths); a per-tenant SQLite index maps (plugin, key) to the id and the
// head, and keeps the tenant's blob usage. The index row is what makes an object exist, so
// the order below keeps every crash invisible:
//   write tmp/<id> -> fsync -> rename to objects/<id> -> fsync objects/ ->
//   one index transaction (quota check + charge + row) -> unlink the replaced object.
// A crash before the transaction leaves a temp file or an unreferenced object; opening the
// store deletes both. Readers open the object's file under the tenant lock, so a reader
// keeps the version it opened even if it is replaced or deleted meanwhile (POSIX unlink).
#include <dirent.h>
#include <fcntl.h>
#include <soci/soci.h>
#include <soci/sqlite3/soci-sqlite3.h>
#include <sys/stat.h>
#include <unistd.h>

#include <cerrno>
#include <cstring>
#include <map>
#include <mutex>
#include <set>
#include <system_error>

#include "services/blobs/blob_rules.h"
#include "storage/internal/kv_keys.h"
#include "trellis/tenants/identity.h"
#include "trellis/tenants/sql_statement.h"

namespace trellis::kernel::services::blobs {
namespace {

namespace fs = std::filesystem;
using tenants::sql::exec;
using tenants::sql::Query;
using tenants::sql::WriteTransaction;

std::string errnoText(int err) {
  return std::error_code(err, std::generic_category()).message();
}

class Fd {
 public:
  explicit Fd(int fd = -1) : fd_(fd) {}
  Fd(Fd&& o) noexcept : fd_(std::exchange(o.fd_, -1)) {}
  Fd& operator=(Fd&& o) noexcept {
    reset();
    fd_ = std::exchange(o.fd_, -1);
    return *this;
  }
  ~Fd() { reset(); }
  int get() const { return fd_; }
  void reset() {
    if (fd_ >= 0) ::close(fd_);
    fd_ = -1;
  }

 private:
  int fd_;
};

Status fsyncDir(const fs::path& dir) {
  Fd fd(::open(dir.c_str(), O_RDONLY | O_DIRECTORY | O_CLOEXEC));
  if (fd.get() < 0 || ::fsync(fd.get()) != 0) {
    return Status::unavailable("cannot sync directory " + dir.string() + ": " + errnoText(errno));
  }
  return Status::ok();
}

// One tenant's index and folders. `mu` serialises the session and orders index changes
// against readers opening files.
struct TenantFiles {
  std::mutex mu;
  soci::session sql;
  fs::path objects;
  fs::path tmp;
};

struct Row {
  std::string id;
  BlobInfo info;
};

std::optional<Row> findRow(soci::session& sql, const std::string& plugin, const std::string& key) {
  Row r;
  long long size = 0, created = 0;
  std::string metadata;
  soci::indicator mind = soci::i_ok;
  bool found = Query(sql,
                     "SELECT id, size, sha256, content_type, metadata, created_ms FROM blobs "
                     "WHERE plugin = :p AND key = CAST(:k AS BLOB)")
                   .use(plugin)
                   .use(key)
                   .into(r.id)
                   .into(size)
                   .into(r.info.sha256)
                   .into(r.info.content_type)
                   .into(metadata, mind)
                   .into(created)
                   .run();
  if (!found) return std::nullopt;
  r.info.key = key;
  r.info.size = static_cast<uint64_t>(size);
  r.info.metadata = internal::decodeMetadata(mind == soci::i_null ? "" : metadata);
  r.info.created_ms = created;
  return r;
}

long long usedBytes(soci::session& sql) {
  long long bytes = 0;
  Query(sql, "SELECT bytes FROM usage").into(bytes).run();
  return bytes;
}

class FileBlobWriter final : public BlobWriter {
 public:
  FileBlobWriter(std::shared_ptr<TenantFiles> tenant, Scope scope, std::string key,
                 WriteOptions options, std::string id, Fd fd)
      : tenant_(std::move(tenant)),
        scope_(std::move(scope)),
        key_(std::move(key)),
        options_(std::move(options)),
        id_(std::move(id)),
        fd_(std::move(fd)) {}
  ~FileBlobWriter() override { abort(); }

  Status write(std::string_view chunk) override {
    if (fd_.get() < 0) return Status::invalid("the upload is finished");
    if (scope_.max_storage_bytes && size_ + chunk.size() > *scope_.max_storage_bytes) {
      abort();
      return Status::quotaExceeded("storage quota of " + std::to_string(*scope_.max_storage_bytes) +
                                   " bytes exceeded by this object alone");
    }
    sha_.update(chunk);
    while (!chunk.empty()) {
      ssize_t n = ::write(fd_.get(), chunk.data(), chunk.size());
      if (n < 0 && errno == EINTR) continue;
      if (n < 0) {
        Status s = Status::unavailable("cannot write blob upload: " + errnoText(errno));
        abort();
        return s;
      }
      chunk.remove_prefix(static_cast<size_t>(n));
      size_ += static_cast<size_t>(n);
    }
    return Status::ok();
  }

  Result<BlobInfo> commit() override {
    if (fd_.get() < 0) return Status::invalid("the upload is finished");
    if (::fsync(fd_.get()) != 0) {
      Status s = Status::unavailable("cannot sync blob upload: " + errnoText(errno));
      abort();
      return s;
    }
    fd_.reset();
    const fs::path object = tenant_->objects / id_;
    if (::rename(tmpPath().c_str(), object.c_str()) != 0) {
      Status s = Status::unavailable("cannot publish blob upload: " + errnoText(errno));
      abort();
      return s;
    }
    done_ = true;
    if (Status s = fsyncDir(tenant_->objects); !s) {
      ::unlink(object.c_str());
      return s;
    }
    BlobInfo info{
        key_, size_, sha_.hexDigest(), options_.content_type, options_.metadata, internal::nowMs()};
    std::lock_guard lock(tenant_->mu);
    std::optional<Row> old;
    try {
      WriteTransaction tx(tenant_->sql);
      old = findRow(tenant_->sql, scope_.plugin, key_);
      const int64_t delta =
          static_cast<int64_t>(size_) - static_cast<int64_t>(old ? old->info.size : 0);
      const uint64_t used = static_cast<uint64_t>(std::max(usedBytes(tenant_->sql), 0LL));
      if (Status s = internal::checkQuota(scope_.max_storage_bytes, used, delta); !s) {
        ::unlink(object.c_str());
        return s;
      }
      const std::string metadata = internal::encodeMetadata(info.metadata);
      const long long size = static_cast<long long>(size_), created = info.created_ms;
      const long long d = delta;
      Query(tenant_->sql,
            "INSERT OR REPLACE INTO blobs(plugin, key, id, size, sha256, content_type, metadata,"
            " created_ms) VALUES (:p, CAST(:k AS BLOB), :i, :s, :h, :c, :m, :t)")
          .use(scope_.plugin)
          .use(key_)
          .use(id_)
          .use(size)
          .use(info.sha256)
          .use(info.content_type)
          .use(metadata)
          .use(created)
          .run();
      Query(tenant_->sql, "UPDATE usage SET bytes = bytes + :d").use(d).run();
      tx.commit();
    } catch (const std::exception& e) {
      ::unlink(object.c_str());
      return Status::unavailable("cannot commit blob for tenant \"" + scope_.tenant +
                                 "\": " + e.what());
    }
    if (old) ::unlink((tenant_->objects / old->id).c_str());  // orphan if we crash first
    return info;
  }

  void abort() override {
    if (done_) return;
    done_ = true;
    fd_.reset();
    ::unlink(tmpPath().c_str());
  }

 private:
  fs::path tmpPath() const { return tenant_->tmp / id_; }

  std::shared_ptr<TenantFiles> tenant_;
  Scope scope_;
  std::string key_;
  WriteOptions options_;
  std::string id_;
  Fd fd_;
  internal::Sha256 sha_;
  uint64_t size_ = 0;
  bool done_ = false;
};

class FileBlobReader final : public BlobReader {
 public:
  FileBlobReader(BlobInfo info, Fd fd, uint64_t offset, uint64_t end)
      : info_(std::move(info)), fd_(std::move(fd)), pos_(offset), end_(end) {}

  const BlobInfo& info() const override { return info_; }

  Result<size_t> read(char* buf, size_t capacity) override {
    const size_t want = static_cast<size_t>(std::min<uint64_t>(capacity, end_ - pos_));
    if (want == 0) return size_t{0};
    for (;;) {
      ssize_t n = ::pread(fd_.get(), buf, want, static_cast<off_t>(pos_));
      if (n < 0 && errno == EINTR) continue;
      if (n < 0) return Status::unavailable("cannot read blob: " + errnoText(errno));
      if (n == 0) return Status::internal("blob file is shorter than its recorded size");
      pos_ += static_cast<uint64_t>(n);
      return static_cast<size_t>(n);
    }
  }

 private:
  BlobInfo info_;
  Fd fd_;
  uint64_t pos_;
  uint64_t end_;
};

class FileBlobStore final : public BlobStore {
 public:
  explicit FileBlobStore(fs::path dir) : dir_(std::move(dir)) {}

  // Removes what crashed uploads left: every temp file, every object no index row names.
  Status recover() {
    std::error_code ec;
    for (const auto& entry : fs::directory_iterator(dir_, ec)) {
      const std::string tenant = entry.path().filename().string();
      if (!entry.is_directory() || !tenants::isValidTenantId(tenant)) continue;
      auto t = openTenant(tenant, /*create=*/true);
      if (!t) return t.status();
      TenantFiles& files = **t;
      std::lock_guard lock(files.mu);
      for (const auto& tmp : fs::directory_iterator(files.tmp, ec)) fs::remove(tmp.path(), ec);
      std::set<std::string> live;
      try {
        std::string id;
        Query q(files.sql, "SELECT id FROM blobs");
        q.into(id);
        for (bool row = q.run(); row; row = q.next()) live.insert(id);
      } catch (const std::exception& e) {
        return Status::unavailable("cannot read blob index of tenant \"" + tenant +
                                   "\": " + e.what());
      }
      for (const auto& obj : fs::directory_iterator(files.objects, ec)) {
        if (!live.count(obj.path().filename().string())) fs::remove(obj.path(), ec);
      }
    }
    if (ec) return Status::unavailable("cannot scan " + dir_.string() + ": " + ec.message());
    return Status::ok();
  }

  Result<std::unique_ptr<BlobWriter>> openWrite(const Scope& scope, std::string_view key,
                                                const WriteOptions& options) override {
    if (Status s = validateKey(key); !s) return s;
    if (Status s = validateWriteOptions(options); !s) return s;
    auto t = open(scope);
    if (!t) return t.status();
    std::string id = internal::newObjectId();
    Fd fd(::open(((*t)->tmp / id).c_str(), O_WRONLY | O_CREAT | O_EXCL | O_CLOEXEC, 0600));
    if (fd.get() < 0) {
      return Status::unavailable("cannot start blob upload in " + (*t)->tmp.string() + ": " +
                                 errnoText(errno));
    }
    return std::unique_ptr<BlobWriter>(std::make_unique<FileBlobWriter>(
        *t, scope, std::string(key), options, std::move(id), std::move(fd)));
  }

  Result<std::unique_ptr<BlobReader>> openRead(const Scope& scope, std::string_view key,
                                               Range range) override {
    if (Status s = validateKey(key); !s) return s;
    auto t = open(scope);
    if (!t) return t.status();
    TenantFiles& files = **t;
    std::lock_guard lock(files.mu);
    std::optional<Row> row;
    try {
      row = findRow(files.sql, scope.plugin, std::string(key));
    } catch (const std::exception& e) {
      return failure(scope, "read", e);
    }
    if (!row) return Status::notFound("no such blob");
    const uint64_t size = row->info.size;
    if (range.offset > size) {
      return Status::invalid("range: offset " + std::to_string(range.offset) +
                             " is past the end (" + std::to_string(size) + " bytes)");
    }
    const uint64_t end =
        range.length ? range.offset + std::min(*range.length, size - range.offset) : size;
    Fd fd(::open((files.objects / row->id).c_str(), O_RDONLY | O_CLOEXEC));
    if (fd.get() < 0) return Status::unavailable("cannot open blob: " + errnoText(errno));
    return std::unique_ptr<BlobReader>(
        std::make_unique<FileBlobReader>(std::move(row->info), std::move(fd), range.offset, end));
  }

  Result<BlobInfo> head(const Scope& scope, std::string_view key) override {
    if (Status s = validateKey(key); !s) return s;
    auto t = open(scope);
    if (!t) return t.status();
    std::lock_guard lock((*t)->mu);
    try {
      auto row = findRow((*t)->sql, scope.plugin, std::string(key));
      if (!row) return Status::notFound("no such blob");
      return std::move(row->info);
    } catch (const std::exception& e) {
      return failure(scope, "head", e);
    }
  }

  Status remove(const Scope& scope, std::string_view key) override {
    if (Status s = validateKey(key); !s) return s;
    auto t = open(scope);
    if (!t) return t.status();
    TenantFiles& files = **t;
    std::lock_guard lock(files.mu);
    try {
      const std::string k(key);
      WriteTransaction tx(files.sql);
      auto row = findRow(files.sql, scope.plugin, k);
      if (!row) return Status::notFound("no such blob");
      const long long d = -static_cast<long long>(row->info.size);
      Query(files.sql, "DELETE FROM blobs WHERE plugin = :p AND key = CAST(:k AS BLOB)")
          .use(scope.plugin)
          .use(k)
          .run();
      Query(files.sql, "UPDATE usage SET bytes = bytes + :d").use(d).run();
      tx.commit();
      ::unlink((files.objects / row->id).c_str());
      return Status::ok();
    } catch (const std::exception& e) {
      return failure(scope, "remove", e);
    }
  }

  Result<Page> list(const Scope& scope, std::string_view prefix, std::string_view start_after,
                    uint32_t limit) override {
    if (prefix.size() > kMaxKeyBytes || start_after.size() > kMaxKeyBytes) {
      return Status::invalid("prefix: prefix and start_after are limited to " +
                             std::to_string(kMaxKeyBytes) + " bytes");
    }
    auto t = open(scope);
    if (!t) return t.status();
    const std::string lower(prefix), after(start_after);
    const auto upper = storage::internal::prefixSuccessor(prefix);
    const int n = static_cast<int>(limit == 0 || limit > kMaxListLimit ? kMaxListLimit : limit);
    std::string query =
        "SELECT key, size, sha256, content_type, metadata, created_ms FROM blobs "
        "WHERE plugin = :p AND key >= CAST(:lo AS BLOB)";
    if (!after.empty()) query += " AND key > CAST(:after AS BLOB)";
    if (upper) query += " AND key < CAST(:hi AS BLOB)";
    query += " ORDER BY key LIMIT :n";
    std::lock_guard lock((*t)->mu);
    try {
      std::string key, metadata;
      BlobInfo info;
      long long size = 0, created = 0;
      soci::indicator mind = soci::i_ok;
      const int fetch = n + 1;  // one more tells whether another page follows
      Query q((*t)->sql, query);
      q.use(scope.plugin).use(lower);
      if (!after.empty()) q.use(after);
      if (upper) q.use(*upper);
      q.use(fetch).into(key).into(size).into(info.sha256).into(info.content_type);
      q.into(metadata, mind).into(created);
      Page page;
      for (bool row = q.run(); row; row = q.next()) {
        if (page.blobs.size() == static_cast<size_t>(n)) {
          page.next_start_after = page.blobs.back().key;
          break;
        }
        info.key = key;
        info.size = static_cast<uint64_t>(size);
        info.metadata = internal::decodeMetadata(mind == soci::i_null ? "" : metadata);
        info.created_ms = created;
        page.blobs.push_back(info);
      }
      return page;
    } catch (const std::exception& e) {
      return failure(scope, "list", e);
    }
  }

  Result<uint64_t> storageBytes(std::string_view tenant) override {
    if (!tenants::isValidTenantId(tenant)) {
      return Status::invalid("invalid tenant id \"" + std::string(tenant) + "\"");
    }
    auto t = openTenant(std::string(tenant), /*create=*/false);
    if (!t) return t.status();
    if (!*t) return uint64_t{0};
    std::lock_guard lock((*t)->mu);
    try {
      return static_cast<uint64_t>(std::max(usedBytes((*t)->sql), 0LL));
    } catch (const std::exception& e) {
      return Status::unavailable("blob usage of tenant \"" + std::string(tenant) +
                                 "\" failed: " + e.what());
    }
  }

  Status removeTenant(std::string_view tenant) override {
    if (!tenants::isValidTenantId(tenant)) {
      return Status::invalid("invalid tenant id \"" + std::string(tenant) + "\"");
    }
    std::lock_guard lock(mu_);
    tenants_.erase(std::string(tenant));  // open writers keep their folder until they end
    std::error_code ec;
    fs::remove_all(dir_ / tenant, ec);
    if (ec) {
      return Status::unavailable("cannot remove blobs of tenant \"" + std::string(tenant) +
                                 "\": " + ec.message());
    }
    return Status::ok();
  }

 private:
  Result<std::shared_ptr<TenantFiles>> open(const Scope& scope) {
    if (!tenants::isValidTenantId(scope.tenant)) {
      return Status::invalid("invalid tenant id \"" + scope.tenant + "\"");
    }
    if (scope.plugin.empty()) return Status::invalid("plugin id is empty");
    return openTenant(scope.tenant, /*create=*/true);
  }

  // The tenant's index, opened once and kept; nullptr without `create` if it has none.
  Result<std::shared_ptr<TenantFiles>> openTenant(const std::string& tenant, bool create) {
    std::lock_guard lock(mu_);
    if (auto it = tenants_.find(tenant); it != tenants_.end()) return it->second;
    const fs::path root = dir_ / tenant;
    std::error_code ec;
    if (!create && !fs::exists(root / "index.db", ec)) return std::shared_ptr<TenantFiles>();
    auto t = std::make_shared<TenantFiles>();
    t->objects = root / "objects";
    t->tmp = root / "tmp";
    fs::create_directories(t->objects, ec);
    if (!ec) fs::create_directories(t->tmp, ec);
    if (ec) {
      return Status::unavailable("cannot create blob folder " + root.string() + ": " +
                                 ec.message());
    }
    try {
      t->sql.open(soci::sqlite3, "db=\"" + (root / "index.db").string() + "\" timeout=5");
      exec(t->sql, "PRAGMA journal_mode=WAL");
      exec(t->sql, "PRAGMA synchronous=FULL");
      WriteTransaction tx(t->sql);
      exec(t->sql,
           "CREATE TABLE IF NOT EXISTS blobs(plugin TEXT NOT NULL, key BLOB NOT NULL,"
           " id TEXT NOT NULL, size INTEGER NOT NULL, sha256 TEXT NOT NULL,"
           " content_type TEXT NOT NULL, metadata TEXT, created_ms INTEGER NOT NULL,"
           " PRIMARY KEY (plugin, key)) WITHOUT ROWID");
      exec(t->sql, "CREATE TABLE IF NOT EXISTS usage(bytes INTEGER NOT NULL)");
      exec(t->sql, "INSERT INTO usage(bytes) SELECT 0 WHERE NOT EXISTS (SELECT 1 FROM usage)");
      tx.commit();
    } catch (const std::exception& e) {
      return Status::unavailable("cannot open blob index " + (root / "index.db").string() + ": " +
                                 e.what());
    }
    tenants_.emplace(tenant, t);
    return t;
  }

  static Status failure(const Scope& scope, const char* op, const std::exception& e) {
    return Status::unavailable(std::string("blob ") + op + " for tenant \"" + scope.tenant +
                               "\" failed: " + e.what());
  }

  const fs::path dir_;
  std::mutex mu_;
  std::map<std::string, std::shared_ptr<TenantFiles>> tenants_;
};

}  // namespace

Result<std::unique_ptr<BlobStore>> openFileBlobStore(const std::filesystem::path& dir) {
  std::error_code ec;
  std::filesystem::create_directories(dir, ec);
  if (ec) return Status::unavailable("cannot create " + dir.string() + ": " + ec.message());
  auto store = std::make_unique<FileBlobStore>(dir);
  if (Status s = store->recover(); !s) return s;
  return std::unique_ptr<BlobStore>(std::move(store));
}

}  // namespace trellis::kernel::services::blobs
