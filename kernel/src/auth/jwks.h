// JSON Web Key sets (RFC 7517) holding the public keys a token issuer signs with: RSA (n, e),
// EC P-256 (x, y) and OKP Ed25519 (x). Anything else in the set — private members, other
// curves, symmetric ("oct") keys — is refused with a message that names the key by its
// position and kid, never by its bytes.
//
//   auto set = parseJwks(R"({"keys":[{"kty":"OKP","crv":"Ed25519","kid":"k1","x":"..."}]})");
//   if (!set) spdlog::warn("jwks: {}", set.status().message());
//   const Jwk* k = set->find("k1");
#pragma once

#include <openssl/evp.h>

#include <cstddef>
#include <memory>
#include <string>
#include <string_view>
#include <vector>

#include "trellis/status.hpp"

namespace trellis::kernel::auth {

// A JWKS document is small; the cap guards memory against a hostile endpoint.
inline constexpr size_t kMaxJwksBytes = 256 * 1024;
inline constexpr size_t kMaxJwksKeys = 64;

enum class KeyType { kRsa, kEcP256, kEd25519 };
std::string_view keyTypeName(KeyType t);  // "RSA", "EC P-256", "OKP Ed25519"

struct EvpPkeyFree {
  void operator()(EVP_PKEY* p) const { EVP_PKEY_free(p); }
};

struct Jwk {
  std::string kid;  // may be empty
  std::string alg;  // the key's "alg" if it names one; empty otherwise
  KeyType type = KeyType::kRsa;
  std::shared_ptr<EVP_PKEY> key;  // the public key, ready for EVP_DigestVerify*
};

struct JwkSet {
  std::vector<Jwk> keys;
  // Every key with this kid (a set should hold at most one; several are refused at parse).
  const Jwk* find(std::string_view kid) const;
};

// INVALID "jwks: ..." naming the first problem: not JSON, no "keys" array, a key of an
// unsupported type or curve, a missing or malformed member, an RSA modulus under 2048 bits,
// an EC point not on the curve, a private key, two keys with the same kid, an empty set.
// Keys whose "use" is not "sig" are skipped (an encryption key may share the set).
Result<JwkSet> parseJwks(std::string_view json);

}  // namespace trellis::kernel::auth
