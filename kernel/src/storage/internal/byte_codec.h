// Little-endian fields and length-prefixed bytes, for the binary records of the segment
// logs (segment_log.h) and what they carry. ByteReader refuses to run past its input.
#pragma once

#include <cstdint>
#include <string>
#include <string_view>

namespace trellis::kernel::storage::internal {

template <typename T>
void putFixed(std::string& out, T v) {
  for (size_t i = 0; i < sizeof(T); ++i) out.push_back(static_cast<char>(v >> (8 * i)));
}
inline void putU32(std::string& out, uint32_t v) {
  putFixed(out, v);
}
inline void putU64(std::string& out, uint64_t v) {
  putFixed(out, v);
}
inline void putBytes(std::string& out, std::string_view bytes) {
  putU32(out, static_cast<uint32_t>(bytes.size()));
  out.append(bytes);
}

class ByteReader {
 public:
  explicit ByteReader(std::string_view in) : in_(in) {}
  bool u8(uint8_t& v) { return fixed(v); }
  bool u32(uint32_t& v) { return fixed(v); }
  bool u64(uint64_t& v) { return fixed(v); }
  bool bytes(std::string& v, size_t max) {
    uint32_t n = 0;
    if (!u32(n) || n > max || n > in_.size()) return false;
    v.assign(in_.data(), n);
    in_.remove_prefix(n);
    return true;
  }
  std::string_view rest() const { return in_; }
  bool done() const { return in_.empty(); }

 private:
  template <typename T>
  bool fixed(T& v) {
    if (in_.size() < sizeof(T)) return false;
    v = 0;
    for (size_t i = 0; i < sizeof(T); ++i) {
      v |= static_cast<T>(static_cast<unsigned char>(in_[i])) << (8 * i);
    }
    in_.remove_prefix(sizeof(T));
    return true;
  }
  std::string_view in_;
};

}  // namespace trellis::kernel::storage::internal
