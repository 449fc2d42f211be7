// Ed25519 publisher and registry keys (OpenSSL 3 EVP). A private key lives in a PEM file
// (PKCS#8, mode 0600); a public key travels as base64 of its raw 32 bytes; a key id is the
// first 16 hex characters of SHA-256 of the raw public key.
//
//   auto key = PrivateKey::generate();
//   if (auto s = key->writePem("keys/acme.pem"); !s) fail(s);   // refuses to overwrite
//   auto sig = key->sign(canonical_bytes);                        // 64 bytes
//   Status ok = verifySignature(key->publicKey(), canonical_bytes, *sig);
//
// Private key bytes are never put into a Status message or a log line.
#pragma once

#include <filesystem>
#include <memory>
#include <string>
#include <string_view>

#include "trellis/status.hpp"

typedef struct evp_pkey_st EVP_PKEY;

namespace trellis::marketplace {

inline constexpr size_t kEd25519PublicKeyBytes = 32;
inline constexpr size_t kEd25519SignatureBytes = 64;

struct PublicKey {
  std::string raw;  // 32 bytes

  static Result<PublicKey> fromRaw(std::string_view raw);
  // Base64 of the raw 32 bytes; the message names what is wrong (alphabet, length).
  static Result<PublicKey> fromBase64(std::string_view text);
  std::string base64() const;
  std::string keyId() const;  // first 16 hex characters of SHA-256(raw)

  friend bool operator==(const PublicKey&, const PublicKey&) = default;
};

class PrivateKey {
 public:
  static Result<PrivateKey> generate();
  // Reads a PKCS#8 PEM Ed25519 private key; refuses a file that others can read (like
  // ssh does), a key of another type, and anything that is not PEM.
  static Result<PrivateKey> loadPem(const std::filesystem::path& file);
  static Result<PrivateKey> fromPem(std::string_view pem);

  // Writes the PEM with mode 0600 atomically: the file appears complete or not at all,
  // and an existing file is never replaced (CONFLICT).
  Status writePem(const std::filesystem::path& file) const;

  const PublicKey& publicKey() const { return public_; }
  std::string keyId() const { return public_.keyId(); }
  // The 64-byte signature of `message`.
  Result<std::string> sign(std::string_view message) const;

 private:
  struct Free {
    void operator()(EVP_PKEY* p) const;
  };
  PrivateKey(std::unique_ptr<EVP_PKEY, Free> key, PublicKey pub)
      : key_(std::move(key)), public_(std::move(pub)) {}
  static Result<PrivateKey> adopt(std::unique_ptr<EVP_PKEY, Free> key);

  std::unique_ptr<EVP_PKEY, Free> key_;
  PublicKey public_;
};

// OK if `signature` is `key`'s signature of `message`. INVALID with a message that says
// which: a signature of the wrong length, or one that does not verify (the message was
// changed, or another key signed it).
Status verifySignature(const PublicKey& key, std::string_view message, std::string_view signature);

}  // namespace trellis::marketplace
