// AES-256-GCM (OpenSSL EVP) with associated data: the one cipher the secrets plugin uses.
// A sealed box is nonce (12 bytes) || ciphertext || tag (16 bytes); the associated data is
// not stored, the caller rebuilds it, so a box moved to another context fails to open.
//
//   auto box = aead::seal(key, "s3cr3t", "tenant=acme|path=db|v=3");
//   auto plain = aead::open(key, *box, "tenant=acme|path=db|v=3");  // OK
//   aead::open(key, *box, "tenant=globex|path=db|v=3");             // INVALID
#pragma once

#include <memory>
#include <string>
#include <string_view>

#include "crypto/secure_buffer.h"
#include "trellis/status.hpp"

namespace trellis::secrets::aead {

inline constexpr size_t kKeyBytes = 32;
inline constexpr size_t kNonceBytes = 12;
inline constexpr size_t kTagBytes = 16;
inline constexpr size_t kOverhead = kNonceBytes + kTagBytes;

// Encrypts under a fresh random nonce; returns nonce || ciphertext || tag.
Result<std::string> seal(const SecureBuffer& key, std::string_view plaintext, std::string_view aad);
// Opens a box made by seal(). INVALID when the box is malformed, altered, or was sealed
// under another key or associated data; the message never holds key material.
Result<SecureBuffer> open(const SecureBuffer& key, std::string_view box, std::string_view aad);

// The primitive with the caller's nonce, for known-answer tests: ciphertext || tag.
// Reusing a nonce under one key breaks GCM; everything else calls seal().
Result<std::string> encryptWithNonce(const SecureBuffer& key, std::string_view nonce,
                                     std::string_view plaintext, std::string_view aad);
Result<SecureBuffer> decryptWithNonce(const SecureBuffer& key, std::string_view nonce,
                                      std::string_view ciphertext_and_tag, std::string_view aad);

// seal() and open() under one key used for many messages (a transit key version). OpenSSL
// sets a key up per context (the AES key schedule and GCM's hash key), which costs about as
// much as sealing 1 KiB, so contexts set up once are kept for reuse and each message only
// sets its nonce. The kept contexts hold the key schedule: they are freed, and so wiped,
// with this object. Thread-safe.
class KeyedAead {
 public:
  explicit KeyedAead(SecureBuffer key);
  ~KeyedAead();
  KeyedAead(const KeyedAead&) = delete;
  KeyedAead& operator=(const KeyedAead&) = delete;

  Result<std::string> seal(std::string_view plaintext, std::string_view aad) const;
  Result<SecureBuffer> open(std::string_view box, std::string_view aad) const;
  const SecureBuffer& key() const { return key_; }

 private:
  class Pool;
  SecureBuffer key_;
  std::unique_ptr<Pool> sealers_;
  std::unique_ptr<Pool> openers_;
};

}  // namespace trellis::secrets::aead
