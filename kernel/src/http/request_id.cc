#include "trellis/kernel/http/request_id.h"

#include <openssl/rand.h>

#include <array>
#include <cstdint>
#include <stdexcept>

namespace trellis::kernel::http {

std::string newRequestId() {
  constexpr size_t kIdBytes = 16;
  // One RAND_bytes call serves 32 ids.
  thread_local std::array<unsigned char, kIdBytes * 32> pool;
  thread_local size_t used = pool.size();
  if (used == pool.size()) {
    // Fails only without an entropy source, where no unpredictable id can be made.
    if (RAND_bytes(pool.data(), static_cast<int>(pool.size())) != 1) {
      throw std::runtime_error("no randomness for a request id (OpenSSL RAND_bytes failed)");
    }
    used = 0;
  }
  static constexpr char kHex[] = "0123456789abcdef";
  std::string id(kIdBytes * 2, '0');
  for (size_t i = 0; i < kIdBytes; ++i) {
    unsigned char b = pool[used + i];
    id[2 * i] = kHex[b >> 4];
    id[2 * i + 1] = kHex[b & 15];
  }
  used += kIdBytes;
  return id;
}

}  // namespace trellis::kernel::http
