// A tenant's key-encryption keys (KEKs): versioned AES-256 keys, each stored wrapped under
// the root key (AES-256-GCM, bound to tenant, version and root check) in the tenant's own
// KV store at "sys/keyring", made on the tenant's first write. Opening needs the seal
// unsealed; the unwrapped keys live only as long as the Keyring object.
//
// Each KEK's uses (data keys wrapped under it) are counted in the stored keyring before
// they happen, so the count never falls behind, across hosts and crashes. A KEK that has
// reached its limit is replaced by a new version before it wraps another key: AES-GCM with
// random nonces must stay well below 2^32 encryptions under one key.
//
//   auto ring = Keyring::open(ctx, seal, /*create=*/true);
//   auto env = envelope::seal(*ring, value, aad);   // after uses.take(ctx, seal, *ring)
#pragma once

#include <Poco/JSON/Object.h>

#include <cstdint>
#include <functional>
#include <map>
#include <mutex>
#include <string>
#include <vector>

#include "crypto/secure_buffer.h"
#include "seal/seal.h"
#include "trellis/plugin.hpp"

namespace trellis::secrets {

struct Kek {
  uint32_t version = 0;
  SecureBuffer key;
  uint64_t created_ms = 0;
  uint64_t uses = 0;  // reserved in the stored keyring: at least the wraps made under it
};

class Keyring {
 public:
  // UNAVAILABLE while sealed or when the keyring was made under another root key;
  // NOT_FOUND when the tenant has none yet and `create` is false.
  static Result<Keyring> open(const Context& ctx, const Seal& seal, bool create);

  const Kek& current() const { return keys_.back(); }
  const std::vector<Kek>& keys() const { return keys_; }
  // NOT_FOUND naming the version when this keyring has no such KEK.
  Result<const Kek*> find(uint32_t version) const;
  const std::string& tenant() const { return tenant_; }

  // Adds a KEK version, which wraps every data key from then on; the older versions still
  // open what they wrapped. This object is reopened with it.
  Status rotate(const Context& ctx, const Seal& seal);
  // Drops the versions below `version` (never the current one): call it only once nothing
  // they wrapped is stored any more.
  Status retireBelow(const Context& ctx, const Seal& seal, uint32_t version);
  // Reserves `n` uses of the current KEK (one compare-and-set of the stored keyring),
  // rotating first when fewer than `n` are left under `max_uses`. Returns the version the
  // uses belong to; this object is reopened when the stored keyring changed.
  Result<uint32_t> reserveUses(const Context& ctx, const Seal& seal, uint64_t n, uint64_t max_uses);

 private:
  using Edit =
      std::function<Status(Poco::JSON::Object::Ptr&, const SecureBuffer&, std::string_view)>;
  Status update(const Context& ctx, const Seal& seal, const Edit& edit);
  Status load(const Context& ctx, const Seal& seal, const std::string& stored);

  std::string tenant_;
  std::vector<Kek> keys_;  // ascending versions; never empty once opened
};

// Hands out KEK uses to encryptions, reserving them in blocks so that a busy tenant writes
// its keyring once per block, not once per secret. A block not used up when the process
// ends is lost, and counted as used: the count errs on the safe side.
class KekUses {
 public:
  static constexpr uint64_t kDefaultMaxUses = 1ULL << 30;
  static constexpr uint64_t kBlock = 256;
  explicit KekUses(uint64_t max_uses = kDefaultMaxUses) : max_uses_(max_uses) {}

  void setMaxUses(uint64_t max_uses) { max_uses_ = max_uses; }
  uint64_t maxUses() const { return max_uses_; }
  // Takes one use for the next envelope::seal under `ring`, whose current KEK is then the
  // one to use (it may have been rotated).
  Status take(const Context& ctx, const Seal& seal, Keyring& ring);

 private:
  struct Block {
    uint32_t version = 0;
    uint64_t left = 0;
  };
  uint64_t max_uses_;
  std::mutex mu_;                                     // guards blocks_ only
  std::map<std::string, Block, std::less<>> blocks_;  // by tenant
};

}  // namespace trellis::secrets
