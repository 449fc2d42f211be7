// Byte encodings the plugin's formats use: hex, standard base64 (strict: padding required,
// no whitespace), and associated data built so no two field lists encode alike.
#pragma once

#include <optional>
#include <string>
#include <string_view>
#include <utility>
#include <vector>

namespace trellis::secrets {

std::string toHex(std::string_view bytes);
std::optional<std::string> fromHex(std::string_view hex);  // nullopt: odd length, non-hex

std::string toBase64(std::string_view bytes);
void appendBase64(std::string& out, std::string_view bytes);
std::optional<std::string> fromBase64(std::string_view text);

// "name=<len>:value;" per field: a path holding "|" or "=" cannot forge another context.
std::string associatedData(std::initializer_list<std::pair<std::string_view, std::string_view>>);

// HMAC-SHA256(key, message), raw 32 bytes.
std::string hmacSha256(std::string_view key, std::string_view message);

}  // namespace trellis::secrets
