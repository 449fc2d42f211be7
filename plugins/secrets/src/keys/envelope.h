// Envelope encryption: every value gets a fresh data key, the value is sealed under it and
// the data key under the tenant's current KEK, both with the caller's associated data
// (tenant, path, version …) plus the KEK version, so neither moves to another context.
//
//   auto env = envelope::seal(ring, "s3cr3t", associatedData({{"tenant","acme"}, …}));
//   auto plain = envelope::open(ring, *env, same_aad);
#pragma once

#include <cstdint>
#include <string>
#include <string_view>

#include "crypto/secure_buffer.h"
#include "keys/keyring.h"
#include "trellis/status.hpp"

namespace trellis::secrets::envelope {

struct Envelope {
  uint32_t kek_version = 0;
  std::string wrapped_key;  // the data key sealed under the KEK
  std::string box;          // the value sealed under the data key
};

Result<Envelope> seal(const Keyring& ring, std::string_view plaintext, std::string_view aad);
Result<SecureBuffer> open(const Keyring& ring, const Envelope& env, std::string_view aad);
// The same plaintext sealed again under the ring's current KEK and a fresh data key (both
// parts' associated data name the KEK version, so re-wrapping the data key alone would not
// do). Take a KEK use first, as for seal.
Result<Envelope> rewrap(const Keyring& ring, const Envelope& env, std::string_view aad);

}  // namespace trellis::secrets::envelope
