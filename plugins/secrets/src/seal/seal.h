// The seal: the one root key of this host's secrets store, held only in memory and only
// while unsealed. `init` makes a root key and hands out its Shamir shares once; `unseal`
// takes shares one by one until the threshold is reached and the combined key proves to
// be the one the shares name; `seal` wipes it. Every other part asks withRoot().
//
//   Seal seal;
//   seal.knowStoreRoot(persisted_check);     // if the store was initialized before
//   auto shares = seal.init(5, 3, persist);  // sealed afterwards: only the check is kept
//   seal.unseal(share_a); seal.unseal(share_b);
//   auto st = seal.unseal(share_c);          // st->sealed == false
//   seal.withRoot([](const SecureBuffer& root, std::string_view check) { … });
#pragma once

#include <atomic>
#include <cstdint>
#include <functional>
#include <mutex>
#include <shared_mutex>
#include <string>
#include <vector>

#include "crypto/secure_buffer.h"
#include "seal/share_token.h"
#include "trellis/status.hpp"

namespace trellis::secrets {

struct SealStatus {
  bool sealed = true;
  bool initialized = false;  // the store has a root key (this host knows its check value)
  int threshold = 0;         // 0 until a share (or init) has named it
  int progress = 0;          // shares given towards the threshold
  std::string root_check;    // of the root key in use, or of the shares being given
};

class Seal {
 public:
  // Wipes the root key; listeners are not called (they may be gone already).
  ~Seal();

  // The root key the store was initialized with (its check value, as persisted): init is
  // refused from now on, and unseal takes only that key's shares.
  void knowStoreRoot(std::string check);

  // Creates a root key and stays sealed. `persist` records the key's check value first
  // (so that no second init succeeds, on this host after a restart or on another one); if
  // it fails, its status is returned and the key and shares are gone. Otherwise returns the
  // shares, wiped when the caller drops them. CONFLICT once the store has a root key.
  Result<std::vector<SecureBuffer>> init(
      int shares, int threshold, const std::function<Status(std::string_view check)>& persist);
  // Adds one share. INVALID (progress kept) for a malformed share, a share of another
  // root key or threshold, or one given already; INVALID (progress reset) when the
  // threshold is reached but the shares do not combine to the key they name.
  Result<SealStatus> unseal(std::string_view share_text);
  // Forgets the shares given so far.
  SealStatus reset();
  // Wipes the root key and any pending shares, then runs every onSeal listener.
  void seal();
  SealStatus status() const;
  // status().sealed without copying the rest: every request of a route asks.
  bool sealed() const;

  // Counts seal() calls: what was derived from the root key in one epoch is stale in the
  // next. A cache stores the epoch it derived under and drops what is not current.
  uint64_t epoch() const { return epoch_.load(std::memory_order_acquire); }
  // `forget` runs in every seal(), after the root key is wiped and the epoch moved on, so
  // that keys derived from the root key and cached elsewhere go with it. Register before
  // the store is used concurrently.
  void onSeal(std::function<void()> forget) { listeners_.push_back(std::move(forget)); }

  // Runs `use` with the root key and its check value while unsealed (readers run in
  // parallel; seal() waits for them). UNAVAILABLE while sealed.
  Status withRoot(const std::function<Status(const SecureBuffer&, std::string_view)>& use) const;

 private:
  SealStatus statusLocked() const;

  mutable std::shared_mutex mu_;
  SecureBuffer root_;
  std::string root_check_;
  std::string store_check_;  // the store's root key, once known; "" before init
  std::vector<ShareToken> pending_;
  std::atomic<uint64_t> epoch_{0};
  std::vector<std::function<void()>> listeners_;
};

// What every sealed route and service call answers.
inline constexpr std::string_view kSealedMessage =
    "the secrets store is sealed: an operator must unseal it before secrets can be used";

}  // namespace trellis::secrets
