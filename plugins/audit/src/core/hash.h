// SHA-256, HMAC-SHA256 and hex/base64 helpers over OpenSSL EVP, shared by the log, the
// checkpoints and the offline verifier.
//
//   Hash h = sha256("abc");
//   std::string text = toHex(h);            // 64 lowercase hex digits
//   std::optional<Hash> back = hashFromHex(text);
#pragma once

#include <array>
#include <cstdint>
#include <optional>
#include <string>
#include <string_view>

namespace trellis::audit {

using Hash = std::array<uint8_t, 32>;

Hash sha256(std::string_view data);
// SHA-256 of `prefix` followed by `data`, without copying them together.
Hash sha256(std::string_view prefix, std::string_view data);
Hash hmacSha256(std::string_view key, std::string_view data);

std::string toHex(std::string_view bytes);
std::string toHex(const Hash& h);
std::optional<std::string> fromHex(std::string_view hex);
std::optional<Hash> hashFromHex(std::string_view hex);
std::string toBase64(std::string_view bytes);
std::optional<std::string> fromBase64(std::string_view text);
inline std::string_view view(const Hash& h) {
  return {reinterpret_cast<const char*>(h.data()), h.size()};
}

}  // namespace trellis::audit
