// Blob storage scoped to (tenant, plugin): streamed objects that are never held in memory.
// A writer streams chunks into a staging area and commit() makes the object visible
// atomically (readers see the old object or the new one, never a mix); abort(), or
// dropping the writer, leaves nothing behind. Readers stream a byte range. The tenant's
// storage quota is charged exactly at commit, by the object's size minus the size of the
// object it replaces.
//
//   auto store = openFileBlobStore(data_dir / "blobs");     // or openPostgresBlobStore(pool)
//   auto w = (*store)->openWrite(scope, "backups/2026-12-02.tar", {.content_type = "x-tar"});
//   (*w)->write(chunk1); (*w)->write(chunk2);
//   Result<BlobInfo> info = (*w)->commit();   // QUOTA_EXCEEDED leaves nothing visible
//   auto r = (*store)->openRead(scope, "backups/2026-12-02.tar", {.offset = 100, .length = 10});
//   char buf[4096]; size_t n = *(*r)->read(buf, sizeof buf);   // 0 = end of the range
//
// Backends implement BlobStore; the kernel picks files under data_dir (one host) or
// PostgreSQL (several hosts). A plugin providing `blobstore.v1` can later be adapted to
// this interface, so the host API above it does not change.
#pragma once

#include <cstdint>
#include <filesystem>
#include <memory>
#include <optional>
#include <string>
#include <string_view>
#include <utility>
#include <vector>

#include "trellis/status.hpp"

namespace trellis::tenants {
class PostgresPool;
}

namespace trellis::kernel::services::blobs {

inline constexpr size_t kMaxKeyBytes = 1024;
inline constexpr size_t kMaxContentTypeBytes = 255;
inline constexpr size_t kMaxMetadataEntries = 32;
inline constexpr size_t kMaxMetadataBytes = 8 * 1024;  // all keys and values together
inline constexpr uint32_t kMaxListLimit = 1000;

// Whose objects: the host fills this from the call's context, never from plugin input.
struct Scope {
  std::string tenant;  // validated tenant id
  std::string plugin;  // plugin id "namespace/name"
  // What the tenant may still store in blobs (its storage quota minus what its KV data
  // uses). Unset = unlimited. Only commits that grow the total are checked.
  std::optional<uint64_t> max_storage_bytes = std::nullopt;
};

using Metadata = std::vector<std::pair<std::string, std::string>>;  // sorted by key

struct BlobInfo {
  std::string key;
  uint64_t size = 0;
  std::string sha256;  // 64 lowercase hex digits of the content
  std::string content_type;
  Metadata metadata;
  int64_t created_ms = 0;  // commit time, Unix milliseconds
};

struct WriteOptions {
  std::string content_type = "application/octet-stream";  // printable ASCII, <= 255 bytes
  Metadata metadata;  // keys [a-z0-9._-]{1,64}, values printable UTF-8 without controls
};

struct Range {
  uint64_t offset = 0;
  std::optional<uint64_t> length;  // unset: to the end
};

struct Page {
  std::vector<BlobInfo> blobs;   // ascending by key bytes
  std::string next_start_after;  // empty: no more pages
};

// One upload. Not thread-safe (one handle, one caller at a time); the destructor aborts
// an upload that was neither committed nor aborted.
class BlobWriter {
 public:
  virtual ~BlobWriter() = default;
  // Appends `chunk`. QUOTA_EXCEEDED as soon as the upload alone is larger than the quota
  // allowed when it was opened (the exact check is at commit); UNAVAILABLE on I/O errors.
  // After any failure the upload is aborted and every later call is INVALID.
  virtual Status write(std::string_view chunk) = 0;
  // Makes the object visible, durably, replacing any object of the same key.
  // QUOTA_EXCEEDED (nothing visible, the old object kept) if the tenant's storage would
  // exceed scope.max_storage_bytes. The writer is finished afterwards either way.
  virtual Result<BlobInfo> commit() = 0;
  virtual void abort() = 0;
};

class BlobReader {
 public:
  virtual ~BlobReader() = default;
  // The object's head as it was when the reader was opened.
  virtual const BlobInfo& info() const = 0;
  // Copies up to `capacity` bytes of the range into `buf`; 0 at its end. CONFLICT if the
  // object was replaced or deleted while it was read (PostgreSQL backend only: the file
  // backend keeps reading the version it opened).
  virtual Result<size_t> read(char* buf, size_t capacity) = 0;
};

class BlobStore {
 public:
  virtual ~BlobStore() = default;
  // INVALID (naming the field) for a bad key, content type or metadata.
  virtual Result<std::unique_ptr<BlobWriter>> openWrite(const Scope& scope, std::string_view key,
                                                        const WriteOptions& options) = 0;
  // NOT_FOUND if absent; INVALID if the range starts past the end (an empty range at the
  // end is fine) — a length past the end is cut to the end.
  virtual Result<std::unique_ptr<BlobReader>> openRead(const Scope& scope, std::string_view key,
                                                       Range range) = 0;
  virtual Result<BlobInfo> head(const Scope& scope, std::string_view key) = 0;
  // NOT_FOUND if absent. Gives the object's bytes back to the tenant's quota.
  virtual Status remove(const Scope& scope, std::string_view key) = 0;
  // Objects whose key starts with `prefix`, strictly after `start_after`, at most
  // min(limit, kMaxListLimit) (0 = kMaxListLimit).
  virtual Result<Page> list(const Scope& scope, std::string_view prefix,
                            std::string_view start_after, uint32_t limit) = 0;
  // Committed blob bytes of `tenant` over all its plugins.
  virtual Result<uint64_t> storageBytes(std::string_view tenant) = 0;
  virtual Status removeTenant(std::string_view tenant) = 0;
};

// Files under `dir`: <tenant>/index.db (SQLite: keys, heads, usage) and
// <tenant>/objects/<id> for contents. An upload goes to <tenant>/tmp/<id>, is fsync'd,
// renamed into objects/ (directory fsync'd) and then entered in the index in one
// transaction with the quota charge: a crash at any point leaves no visible object.
// Opening the store removes temporary files and unreferenced objects a crash left behind,
// so only one process may use `dir`.
Result<std::unique_ptr<BlobStore>> openFileBlobStore(const std::filesystem::path& dir);

// PostgreSQL: trellis.blob_objects / blob_chunks / blob_uploads / blob_usage under FORCE
// ROW LEVEL SECURITY (tenants::postgres_schema), shared by every host. Contents are
// 1 MiB rows written each in its own transaction as the upload streams; commit is one
// transaction (quota charge, head row, old chunks dropped). Uploads idle for over an hour
// (a host that died mid-upload) are dropped by the next upload of the same tenant.
Result<std::unique_ptr<BlobStore>> openPostgresBlobStore(
    std::shared_ptr<tenants::PostgresPool> pool);

// Shared by the backends and the host API: each refusal names the field.
Status validateKey(std::string_view key);
Status validateWriteOptions(const WriteOptions& options);

}  // namespace trellis::kernel::services::blobs
