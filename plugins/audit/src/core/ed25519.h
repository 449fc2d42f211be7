// Ed25519 keys over OpenSSL EVP: the log's checkpoint signing key and the verifier's view
// of its public half.
//
//   Result<Ed25519Key> key = Ed25519Key::generate();
//   std::string sig = key->sign("message");            // 64 bytes
//   bool ok = ed25519Verify(key->publicKey(), "message", sig);
//   std::string pem = key->publicPem();                 // for the evidence pack
#pragma once

#include <memory>
#include <string>
#include <string_view>

#include "trellis/status.hpp"

typedef struct evp_pkey_st EVP_PKEY;

namespace trellis::audit {

struct EvpPkeyFree {
  void operator()(EVP_PKEY* k) const;
};
using EvpPkeyPtr = std::unique_ptr<EVP_PKEY, EvpPkeyFree>;

class Ed25519Key {
 public:
  static Result<Ed25519Key> generate();
  // From the 32-byte private seed (as privateSeed() returned it).
  static Result<Ed25519Key> fromSeed(std::string_view seed);

  std::string privateSeed() const;  // 32 bytes; keep it secret
  std::string publicKey() const;    // 32 raw bytes
  std::string publicPem() const;    // SubjectPublicKeyInfo PEM
  std::string sign(std::string_view message) const;

 private:
  explicit Ed25519Key(EvpPkeyPtr key) : key_(std::move(key)) {}
  EvpPkeyPtr key_;
};

// Raw 32-byte public key from a PEM SubjectPublicKeyInfo, or the raw key as 64 hex digits.
Result<std::string> ed25519PublicKeyFromText(std::string_view text);
bool ed25519Verify(std::string_view public_key, std::string_view message,
                   std::string_view signature);

}  // namespace trellis::audit
