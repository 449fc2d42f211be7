// KV v2 for tenants, on the tenant's own KV store: versioned secrets with max_versions,
// check-and-set, soft delete and undelete, destroy, metadata and list, after Vault's KV
// version 2 engine. Values are JSON objects, envelope-encrypted per version with
// associated data binding tenant, path and version.
//
//   KvEngine kv(seal);
//   auto written = kv.write(ctx, "db/creds", R"({"password":"…"})", /*cas=*/0);
//   auto read = kv.read(ctx, "db/creds", 0);   // 0: the current version
#pragma once

#include <cstdint>
#include <functional>
#include <optional>
#include <string>
#include <string_view>
#include <vector>

#include "crypto/secure_buffer.h"
#include "keys/keyring.h"
#include "kv/secret_record.h"
#include "seal/seal.h"
#include "trellis/plugin.hpp"

namespace trellis::secrets::kv {

inline constexpr uint32_t kDefaultMaxVersions = 10;
inline constexpr uint32_t kMaxMaxVersions = 100;
inline constexpr size_t kMaxDataBytes = 64 * 1024;
inline constexpr size_t kMaxPathBytes = 512;

struct ReadResult {
  SecretRecord record;  // envelopes included; callers show only metadata
  uint64_t version = 0;
  SecureBuffer data_json;  // empty when the version is deleted or destroyed
};

// INVALID naming the problem unless `path` is 1..512 bytes of "/"-separated segments,
// none empty, "." or "..", with no control characters.
Status checkPath(std::string_view path);

class KvEngine {
 public:
  KvEngine(const Seal& seal, KekUses& kek_uses) : seal_(seal), kek_uses_(kek_uses) {}

  // Writes a new version. `cas`: nullopt = unconditional (unless the secret requires
  // cas), 0 = only if the secret does not exist, N = only if N is the current version.
  Result<SecretRecord> write(const Context& ctx, std::string_view path, std::string_view data_json,
                             std::optional<uint64_t> cas) const;
  // version 0 = the current one. NOT_FOUND for no such secret or version.
  Result<ReadResult> read(const Context& ctx, std::string_view path, uint64_t version) const;
  // Soft-deletes (empty list: the current version), undeletes, or destroys versions.
  Status remove(const Context& ctx, std::string_view path, std::vector<uint64_t> versions) const;
  Status undelete(const Context& ctx, std::string_view path,
                  const std::vector<uint64_t>& versions) const;
  Status destroy(const Context& ctx, std::string_view path,
                 const std::vector<uint64_t>& versions) const;

  Result<SecretRecord> metadata(const Context& ctx, std::string_view path) const;
  struct MetadataUpdate {
    std::optional<uint32_t> max_versions;
    std::optional<bool> cas_required;
    std::optional<std::map<std::string, std::string>> custom_metadata;
  };
  Status updateMetadata(const Context& ctx, std::string_view path,
                        const MetadataUpdate& update) const;
  // Every version and the metadata, for good.
  Status removeAll(const Context& ctx, std::string_view path) const;
  // The names directly under `folder` ("" = the top): secrets, and folders with a
  // trailing "/". NOT_FOUND when there are none.
  Result<std::vector<std::string>> list(const Context& ctx, std::string_view folder) const;
  // Re-wraps each version of the secret stored at `storage_key` (a key under kStoragePrefix)
  // that an older KEK than `ring`'s current wrapped; returns how many it re-wrapped.
  Result<uint64_t> rewrapOlder(const Context& ctx, std::string_view storage_key,
                               Keyring& ring) const;
  static constexpr std::string_view kStoragePrefix = "kv/";

 private:
  using Change = std::function<Status(SecretRecord&, bool exists)>;
  // Reads the record, applies `change` and writes it back with compare-and-set, retrying
  // when a concurrent change won. Returns the record as written.
  Result<SecretRecord> update(const Context& ctx, std::string_view path,
                              const Change& change) const;

  const Seal& seal_;
  KekUses& kek_uses_;
};

}  // namespace trellis::secrets::kv
