// The kernel's seal service (ABI 1.2 key_wrap / key_unwrap): a root of trust for plugins.
// The operator's server.seal_key_file holds 32 random bytes as 64 hex characters; every
// host sharing a database reads the same file. A plugin hands the kernel a secret and a
// label and gets back a sealed value it may store anywhere (its KV storage, a blob): only a
// host with the same seal key opens it, and only for the same plugin, tenant and label.
//
// Sealed value (text, so it stores as any other string):
//   tseal:v1:<key id, 16 hex>:<base64url(nonce 12 bytes || ciphertext || GCM tag 16 bytes)>
// AES-256-GCM under HKDF-SHA256(root key, info "trellis seal v1 aes-256-gcm"); the
// associated data is the header plus the length-prefixed plugin id, tenant ("" for the
// system) and label, so a value moved to another plugin, tenant or label does not open.
//
//   auto key = SealKey::loadFile("/etc/trellis/seal.key");   // INVALID naming the file
//   auto sealed = (*key)->wrap({"acme/audit", "", "key/ed25519"}, seed);
//   auto seed2 = (*key)->unwrap({"acme/audit", "", "key/ed25519"}, *sealed);
//
// THREADING: const after load; wrap and unwrap may run on any thread.
#pragma once

#include <filesystem>
#include <memory>
#include <string>
#include <string_view>

#include "trellis/status.hpp"

namespace trellis::kernel::services::seal {

inline constexpr size_t kMaxPlaintextBytes = 64 * 1024;
inline constexpr size_t kMaxLabelBytes = 256;
inline constexpr std::string_view kPrefix = "tseal:v1:";

// What a sealed value is bound to.
struct Binding {
  std::string_view plugin;
  std::string_view tenant;  // "" for the system (a tenant-less ctx)
  std::string_view label;
};

class SealKey {
 public:
  // Reads the key file. INVALID (naming the file and the problem, never its bytes) if it
  // cannot be read, is not 64 hex characters with at most one trailing newline, or is
  // readable or writable by group or others.
  static Result<std::unique_ptr<SealKey>> loadFile(const std::filesystem::path& file);
  // The same from the key's bytes (32), for tests and loadFile.
  static Result<std::unique_ptr<SealKey>> fromBytes(std::string_view root);
  ~SealKey();
  SealKey(const SealKey&) = delete;
  SealKey& operator=(const SealKey&) = delete;

  // 16 hex characters naming the root key (a hash of it; reveals nothing of it).
  const std::string& id() const { return id_; }

  // INVALID for an empty or oversized label or plaintext.
  Result<std::string> wrap(const Binding& b, std::string_view plaintext) const;
  // INVALID, with a message saying why, for anything that is not a value this key sealed
  // for exactly this binding: never a guess or garbage.
  Result<std::string> unwrap(const Binding& b, std::string_view sealed) const;

 private:
  SealKey() = default;
  std::string aead_key_;  // wiped on destruction
  std::string id_;
};

}  // namespace trellis::kernel::services::seal
