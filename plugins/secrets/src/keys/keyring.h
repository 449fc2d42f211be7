// A tenant's key-encryption keys (KEKs): versioned AES-256 keys, each stored wrapped under
// the root key (AES-256-GCM, bound to tenant, version and root check) in the tenant's own
// KV store at "sys/keyring", made on the tenant's first write. Opening needs the seal
// unsealed; the unwrapped keys live only as long as the Keyring object.
//
//   auto ring = Keyring::open(ctx, seal, /*create=*/true);
//   auto env = envelope::seal(*ring, value, aad);
#pragma once

#include <cstdint>
#include <string>
#include <vector>

#include "crypto/secure_buffer.h"
#include "seal/seal.h"
#include "trellis/plugin.hpp"

namespace trellis::secrets {

struct Kek {
  uint32_t version = 0;
  SecureBuffer key;
};

class Keyring {
 public:
  // UNAVAILABLE while sealed or when the keyring was made under another root key;
  // NOT_FOUND when the tenant has none yet and `create` is false.
  static Result<Keyring> open(const Context& ctx, const Seal& seal, bool create);

  const Kek& current() const { return keys_.back(); }
  // NOT_FOUND naming the version when this keyring has no such KEK.
  Result<const Kek*> find(uint32_t version) const;
  const std::string& tenant() const { return tenant_; }

 private:
  std::string tenant_;
  std::vector<Kek> keys_;  // ascending versions; never empty once opened
};

}  // namespace trellis::secrets
