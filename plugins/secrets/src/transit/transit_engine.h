// Transit: encryption as a service with named, versioned AES-256-GCM keys per tenant that
// never leave the store (not exportable). Each key version is stored envelope-encrypted
// under the tenant's KEK at "transit/<name>". Ciphertexts read "trellis:v<N>:<base64>",
// N being the key version, with associated data binding tenant, key name and version.
//
//   TransitEngine transit(seal);
//   transit.create(ctx, "orders");
//   auto key = transit.open(ctx, "orders");   // Result<std::shared_ptr<const OpenKey>>
//   auto ct = (*key)->encrypt("card 4111…");  // "trellis:v1:…"
//   auto pt = (*key)->decrypt(*ct);
#pragma once

#include <cstdint>
#include <map>
#include <memory>
#include <optional>
#include <string>
#include <string_view>

#include "crypto/aead.h"
#include "crypto/secure_buffer.h"
#include "keys/keyring.h"
#include "seal/seal.h"
#include "transit/open_key_cache.h"
#include "trellis/plugin.hpp"

namespace trellis::secrets::transit {

inline constexpr size_t kMaxPlaintextBytes = 256 * 1024;

struct KeyPolicy {
  uint64_t created_ms = 0;
  uint32_t latest = 0;
  uint32_t min_decryption_version = 1;
  bool deletion_allowed = false;
  std::map<uint32_t, uint64_t> version_created_ms;
  // The plugin that made the key for the tenant through secrets.v1 ensure_key ("" = the
  // tenant's own key). The tenant may use it but not delete it or change its config: the
  // plugin's stored data (the audit plugin's wrapped HMAC keys) would no longer open.
  std::string owner;
};

// One key's unwrapped versions, shared by the requests that use it (OpenKeyCache).
class OpenKey {
 public:
  const KeyPolicy& policy() const { return policy_; }
  // Under the latest version.
  Result<std::string> encrypt(std::string_view plaintext) const;
  // INVALID for a malformed ciphertext, a version below min_decryption_version or above
  // the latest, or one that does not authenticate (another tenant, key or version).
  Result<SecureBuffer> decrypt(std::string_view ciphertext) const;
  // HMAC-SHA256 of `input` under a key derived from the latest version: "trellis:v<N>:<b64>".
  std::string hmac(std::string_view input) const;
  // What this key's audit records name (audit/audit.h): derived when the key was opened, so
  // an operation on an open key costs no HMAC for its record.
  const std::string& auditResource() const { return audit_resource_; }

 private:
  friend class TransitEngine;
  std::string audit_resource_;
  KeyPolicy policy_;
  struct Version {
    std::unique_ptr<const aead::KeyedAead> cipher;
    std::string aad;  // what binds its ciphertexts to tenant, key name and version
  };
  std::map<uint32_t, Version> versions_;
};

class TransitEngine {
 public:
  // Registers with `seal` so that sealing wipes the keys this engine keeps open.
  TransitEngine(Seal& seal, KekUses& kek_uses) : seal_(seal), kek_uses_(kek_uses) {
    seal.onSeal([this] { open_keys_.clear(); });
  }

  // CONFLICT if the key exists. Names: 1..128 bytes of [A-Za-z0-9._-]. `owner`: the plugin
  // that makes it for the tenant (KeyPolicy::owner), "" for the tenant's own.
  Result<KeyPolicy> create(const Context& ctx, std::string_view name,
                           std::string_view owner = {}) const;
  Result<KeyPolicy> policy(const Context& ctx, std::string_view name) const;
  Result<KeyPolicy> rotate(const Context& ctx, std::string_view name) const;
  // The tenant's config change; PERMISSION_DENIED, naming the plugin, for a key a plugin owns.
  Result<KeyPolicy> configure(const Context& ctx, std::string_view name,
                              std::optional<uint32_t> min_decryption_version,
                              std::optional<bool> deletion_allowed) const;
  // The tenant's deletion: INVALID unless deletion_allowed was set; PERMISSION_DENIED,
  // naming the plugin, for a key a plugin owns.
  Status remove(const Context& ctx, std::string_view name) const;
  // Reads the stored key on every call (so a change on any host is seen at once) and
  // unwraps it only when its bytes changed since the last call for this tenant and name.
  Result<std::shared_ptr<const OpenKey>> open(const Context& ctx, std::string_view name) const;
  // Re-wraps each version of the key stored at `storage_key` (under kStoragePrefix) that an
  // older KEK than `ring`'s current wrapped; returns how many it re-wrapped.
  Result<uint64_t> rewrapOlder(const Context& ctx, std::string_view storage_key,
                               Keyring& ring) const;
  static constexpr std::string_view kStoragePrefix = "transit/";

 private:
  const Seal& seal_;
  KekUses& kek_uses_;
  mutable OpenKeyCache open_keys_;
};

Status checkKeyName(std::string_view name);

}  // namespace trellis::secrets::transit
