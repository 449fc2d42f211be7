// Bytes <-> lowercase hex: how the PostgreSQL stores pass bytea (SOCI binds strings as C
// strings, which would cut them at the first NUL; decode(:x, 'hex') keeps every byte).
#pragma once

#include <string>
#include <string_view>

namespace trellis::kernel::storage::internal {

inline std::string toHex(std::string_view bytes) {
  static constexpr char kHex[] = "0123456789abcdef";
  std::string out;
  out.reserve(bytes.size() * 2);
  for (unsigned char c : bytes) {
    out.push_back(kHex[c >> 4]);
    out.push_back(kHex[c & 0x0f]);
  }
  return out;
}

inline std::string fromHex(std::string_view hex) {
  auto nibble = [](char c) { return c <= '9' ? c - '0' : c - 'a' + 10; };
  std::string out;
  out.reserve(hex.size() / 2);
  for (size_t i = 0; i + 1 < hex.size(); i += 2) {
    out.push_back(static_cast<char>(nibble(hex[i]) << 4 | nibble(hex[i + 1])));
  }
  return out;
}

}  // namespace trellis::kernel::storage::internal
