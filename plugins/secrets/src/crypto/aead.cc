#include "crypto/aead.h"

#include <openssl/evp.h>
#include <openssl/rand.h>
#include <pthread.h>

#include <algorithm>
#include <atomic>
#include <climits>
#include <cstring>
#include <memory>
#include <mutex>

namespace trellis::secrets::aead {
namespace {

struct CtxFree {
  void operator()(EVP_CIPHER_CTX* c) const { EVP_CIPHER_CTX_free(c); }
};
using CipherCtx = std::unique_ptr<EVP_CIPHER_CTX, CtxFree>;

const unsigned char* bytes(std::string_view s) {
  return reinterpret_cast<const unsigned char*>(s.data());
}

Status checkInputs(const SecureBuffer& key, size_t nonce_len, size_t text_len, size_t aad_len) {
  if (key.size() != kKeyBytes) return Status::invalid("an AES-256 key is 32 bytes");
  if (nonce_len != kNonceBytes) return Status::invalid("a GCM nonce is 12 bytes");
  if (text_len > INT_MAX || aad_len > INT_MAX) return Status::invalid("input too large");
  return Status::ok();
}

// Fetched once: OpenSSL 3 looks EVP_aes_256_gcm() up in the provider again on every
// EVP_*Init_ex (a name lookup under a lock), which costs more than sealing 1 KiB. Freed
// when the plugin is unloaded (or at exit, before OpenSSL's own clean-up, which was
// registered earlier), so a stopped plugin leaks nothing.
const EVP_CIPHER* aes256Gcm() {
  struct Free {
    void operator()(EVP_CIPHER* c) const { EVP_CIPHER_free(c); }
  };
  static const std::unique_ptr<EVP_CIPHER, Free> fetched(
      EVP_CIPHER_fetch(nullptr, "AES-256-GCM", nullptr));
  return fetched ? fetched.get() : EVP_aes_256_gcm();
}

// Nonces come from a per-thread pool of DRBG output, refilled 4 KiB at a time: each
// RAND_bytes call takes the DRBG's lock and cost ~1 us, as much as sealing 1 KiB. A GCM
// nonce must be unique, not secret: each one is a fresh slice of RAND_bytes output, never
// handed out twice. A forked child would inherit its parent's pools, so the fork handler
// moves a generation that makes every pool refill first.
std::atomic<uint64_t> fork_generation{0};

bool freshNonce(unsigned char* out) {
  static std::once_flag registered;
  std::call_once(registered,
                 [] { pthread_atfork(nullptr, nullptr, [] { fork_generation.fetch_add(1); }); });
  struct Pool {
    unsigned char bytes[kNonceBytes * 340];
    size_t used = sizeof bytes;
    uint64_t generation = 0;
  };
  thread_local Pool pool;
  const uint64_t generation = fork_generation.load();
  if (pool.used + kNonceBytes > sizeof pool.bytes || pool.generation != generation) {
    if (RAND_bytes(pool.bytes, sizeof pool.bytes) != 1) return false;
    pool.used = 0;
    pool.generation = generation;
  }
  std::memcpy(out, pool.bytes + pool.used, kNonceBytes);
  pool.used += kNonceBytes;
  return true;
}

const Status& notAuthentic() {
  static const Status s = Status::invalid(
      "the ciphertext does not authenticate: it was altered, or was made for another key, "
      "tenant, path or version");
  return s;
}

// AES-256-GCM of `plaintext` into `dst` (ciphertext, then the tag). `key` null: the
// context was set up with its key before, and only the nonce is set now.
bool encryptInto(EVP_CIPHER_CTX* ctx, const unsigned char* key, std::string_view nonce,
                 std::string_view plaintext, std::string_view aad, unsigned char* dst) {
  int len = 0;
  int tail = 0;
  return EVP_EncryptInit_ex(ctx, key ? aes256Gcm() : nullptr, nullptr, key, bytes(nonce)) == 1 &&
         (aad.empty() ||
          EVP_EncryptUpdate(ctx, nullptr, &len, bytes(aad), static_cast<int>(aad.size())) == 1) &&
         (plaintext.empty() || EVP_EncryptUpdate(ctx, dst, &len, bytes(plaintext),
                                                 static_cast<int>(plaintext.size())) == 1) &&
         EVP_EncryptFinal_ex(ctx, dst + plaintext.size(), &tail) == 1 &&
         EVP_CIPHER_CTX_ctrl(ctx, EVP_CTRL_GCM_GET_TAG, static_cast<int>(kTagBytes),
                             dst + plaintext.size()) == 1;
}

// The inverse; INVALID (notAuthentic) when the tag does not check, and then the partial
// plaintext is wiped with the returned buffer's death.
Result<SecureBuffer> decryptWith(EVP_CIPHER_CTX* ctx, const unsigned char* key,
                                 std::string_view nonce, std::string_view ciphertext_and_tag,
                                 std::string_view aad) {
  const size_t text_len = ciphertext_and_tag.size() - kTagBytes;
  SecureBuffer out(text_len);
  // The tag is copied because OpenSSL's ctrl takes a non-const pointer.
  unsigned char tag[kTagBytes];
  std::copy_n(bytes(ciphertext_and_tag) + text_len, kTagBytes, tag);
  int len = 0;
  int tail = 0;
  if (EVP_DecryptInit_ex(ctx, key ? aes256Gcm() : nullptr, nullptr, key, bytes(nonce)) != 1 ||
      (!aad.empty() &&
       EVP_DecryptUpdate(ctx, nullptr, &len, bytes(aad), static_cast<int>(aad.size())) != 1) ||
      (text_len > 0 && EVP_DecryptUpdate(ctx, out.data(), &len, bytes(ciphertext_and_tag),
                                         static_cast<int>(text_len)) != 1) ||
      EVP_CIPHER_CTX_ctrl(ctx, EVP_CTRL_GCM_SET_TAG, static_cast<int>(kTagBytes), tag) != 1) {
    return Status::internal("AES-256-GCM decryption failed");
  }
  if (EVP_DecryptFinal_ex(ctx, out.data() + text_len, &tail) != 1) return notAuthentic();
  return out;
}

// nonce || ciphertext || tag, under a fresh nonce.
Result<std::string> sealWith(EVP_CIPHER_CTX* ctx, const unsigned char* key,
                             std::string_view plaintext, std::string_view aad) {
  std::string box(kNonceBytes + plaintext.size() + kTagBytes, '\0');
  auto* dst = reinterpret_cast<unsigned char*>(box.data());
  if (!freshNonce(dst)) return Status::internal("the random generator failed");
  if (!encryptInto(ctx, key, box.substr(0, kNonceBytes), plaintext, aad, dst + kNonceBytes)) {
    return Status::internal("AES-256-GCM encryption failed");
  }
  return box;
}

}  // namespace

Result<std::string> encryptWithNonce(const SecureBuffer& key, std::string_view nonce,
                                     std::string_view plaintext, std::string_view aad) {
  if (Status s = checkInputs(key, nonce.size(), plaintext.size(), aad.size()); !s) return s;
  CipherCtx ctx(EVP_CIPHER_CTX_new());
  if (!ctx) return Status::internal("EVP_CIPHER_CTX_new failed");
  std::string out(plaintext.size() + kTagBytes, '\0');
  if (!encryptInto(ctx.get(), key.data(), nonce, plaintext, aad,
                   reinterpret_cast<unsigned char*>(out.data()))) {
    return Status::internal("AES-256-GCM encryption failed");
  }
  return out;
}

Result<SecureBuffer> decryptWithNonce(const SecureBuffer& key, std::string_view nonce,
                                      std::string_view ciphertext_and_tag, std::string_view aad) {
  if (ciphertext_and_tag.size() < kTagBytes) return notAuthentic();
  const size_t text_len = ciphertext_and_tag.size() - kTagBytes;
  if (Status s = checkInputs(key, nonce.size(), text_len, aad.size()); !s) return s;
  CipherCtx ctx(EVP_CIPHER_CTX_new());
  if (!ctx) return Status::internal("EVP_CIPHER_CTX_new failed");
  return decryptWith(ctx.get(), key.data(), nonce, ciphertext_and_tag, aad);
}

Result<std::string> seal(const SecureBuffer& key, std::string_view plaintext,
                         std::string_view aad) {
  if (Status s = checkInputs(key, kNonceBytes, plaintext.size(), aad.size()); !s) {
    return s;
  }
  CipherCtx ctx(EVP_CIPHER_CTX_new());
  if (!ctx) return Status::internal("EVP_CIPHER_CTX_new failed");
  return sealWith(ctx.get(), key.data(), plaintext, aad);
}

Result<SecureBuffer> open(const SecureBuffer& key, std::string_view box, std::string_view aad) {
  if (box.size() < kOverhead) return notAuthentic();
  return decryptWithNonce(key, box.substr(0, kNonceBytes), box.substr(kNonceBytes), aad);
}

// --- KeyedAead ----------------------------------------------------------------------------

// Idle contexts of one direction, set up with the key. A context whose operation failed is
// freed rather than kept: its state is unknown.
class KeyedAead::Pool {
 public:
  Pool(const SecureBuffer& key, bool encrypt) : key_(key), encrypt_(encrypt) {}
  ~Pool() {
    for (EVP_CIPHER_CTX* c : idle_) EVP_CIPHER_CTX_free(c);  // wipes the key schedule
  }

  CipherCtx take() {
    {
      std::lock_guard lock(mu_);
      if (!idle_.empty()) {
        CipherCtx c(idle_.back());
        idle_.pop_back();
        return c;
      }
    }
    CipherCtx c(EVP_CIPHER_CTX_new());
    const int ok =
        c ? EVP_CipherInit_ex(c.get(), aes256Gcm(), nullptr, key_.data(), nullptr, encrypt_ ? 1 : 0)
          : 0;
    return ok == 1 ? std::move(c) : nullptr;
  }

  void giveBack(CipherCtx c) {
    std::lock_guard lock(mu_);
    if (idle_.size() < kMaxIdle) idle_.push_back(c.release());
  }

 private:
  static constexpr size_t kMaxIdle = 16;  // about the threads that use one key at once
  const SecureBuffer& key_;
  const bool encrypt_;
  std::mutex mu_;
  std::vector<EVP_CIPHER_CTX*> idle_;
};

KeyedAead::KeyedAead(SecureBuffer key)
    : key_(std::move(key)),
      sealers_(std::make_unique<Pool>(key_, true)),
      openers_(std::make_unique<Pool>(key_, false)) {}

KeyedAead::~KeyedAead() = default;

Result<std::string> KeyedAead::seal(std::string_view plaintext, std::string_view aad) const {
  if (Status s = checkInputs(key_, kNonceBytes, plaintext.size(), aad.size()); !s) {
    return s;
  }
  CipherCtx ctx = sealers_->take();
  if (!ctx) return Status::internal("AES-256-GCM set-up failed");
  auto box = sealWith(ctx.get(), nullptr, plaintext, aad);
  if (box) sealers_->giveBack(std::move(ctx));
  return box;
}

Result<SecureBuffer> KeyedAead::open(std::string_view box, std::string_view aad) const {
  if (box.size() < kOverhead) return notAuthentic();
  const std::string_view nonce = box.substr(0, kNonceBytes), rest = box.substr(kNonceBytes);
  if (Status s = checkInputs(key_, kNonceBytes, rest.size() - kTagBytes, aad.size()); !s) return s;
  CipherCtx ctx = openers_->take();
  if (!ctx) return Status::internal("AES-256-GCM set-up failed");
  auto plain = decryptWith(ctx.get(), nullptr, nonce, rest, aad);
  if (plain) openers_->giveBack(std::move(ctx));
  return plain;
}

}  // namespace trellis::secrets::aead
