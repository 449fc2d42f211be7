#include "crypto/secure_buffer.h"

#include <openssl/crypto.h>
#include <openssl/rand.h>

namespace trellis::secrets {

void SecureBuffer::wipe() {
  if (!bytes_.empty()) OPENSSL_cleanse(bytes_.data(), bytes_.size());
  bytes_.clear();
}

void cleanse(std::string& s) {
  if (!s.empty()) OPENSSL_cleanse(s.data(), s.size());
  s.clear();
}

bool equalConstantTime(std::string_view a, std::string_view b) {
  return a.size() == b.size() && CRYPTO_memcmp(a.data(), b.data(), a.size()) == 0;
}

SecureBuffer randomBytes(size_t n) {
  SecureBuffer out(n);
  if (n > 0 && RAND_bytes(out.data(), static_cast<int>(n)) != 1) return SecureBuffer();
  return out;
}

}  // namespace trellis::secrets
