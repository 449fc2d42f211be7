// SecureBuffer: bytes of key material or plaintext that are wiped (OPENSSL_cleanse) when
// the buffer dies, is reassigned or is wipe()d. Move-only, so a key never lingers in a
// forgotten copy; clone() makes the rare deliberate copy visible.
//
//   SecureBuffer key = randomKey();
//   auto sealed = aead::seal(key, plaintext, aad);
//   key.wipe();  // or let it go out of scope
#pragma once

#include <cstddef>
#include <cstdint>
#include <string>
#include <string_view>
#include <vector>

namespace trellis::secrets {

class SecureBuffer {
 public:
  SecureBuffer() = default;
  explicit SecureBuffer(size_t size) : bytes_(size, 0) {}
  explicit SecureBuffer(std::string_view bytes) : bytes_(bytes.begin(), bytes.end()) {}
  ~SecureBuffer() { wipe(); }
  SecureBuffer(SecureBuffer&& other) noexcept : bytes_(std::move(other.bytes_)) {
    other.bytes_.clear();
  }
  SecureBuffer& operator=(SecureBuffer&& other) noexcept {
    if (this != &other) {
      wipe();
      bytes_ = std::move(other.bytes_);
      other.bytes_.clear();
    }
    return *this;
  }
  SecureBuffer(const SecureBuffer&) = delete;
  SecureBuffer& operator=(const SecureBuffer&) = delete;

  SecureBuffer clone() const { return SecureBuffer(view()); }
  // Overwrites the bytes with zeros (in a way the compiler cannot drop) and empties.
  void wipe();

  uint8_t* data() { return bytes_.data(); }
  const uint8_t* data() const { return bytes_.data(); }
  size_t size() const { return bytes_.size(); }
  bool empty() const { return bytes_.empty(); }
  std::string_view view() const {
    return {reinterpret_cast<const char*>(bytes_.data()), bytes_.size()};
  }

 private:
  // Never grown after construction, so no reallocation leaves an unwiped copy behind.
  std::vector<uint8_t> bytes_;
};

// Wipes a std::string that held key material or plaintext, then empties it.
void cleanse(std::string& s);

// Constant-time comparison, for check values and tags.
bool equalConstantTime(std::string_view a, std::string_view b);

// `n` bytes from OpenSSL's CSPRNG; empty only if the generator failed.
SecureBuffer randomBytes(size_t n);

}  // namespace trellis::secrets
