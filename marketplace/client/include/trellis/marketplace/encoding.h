// Byte encodings used by packages and the signed index: SHA-256 (lowercase hex), strict
// base64 (RFC 4648 with padding) and hex. Decoders refuse anything that is not the one
// canonical spelling, so a signature or key has exactly one textual form.
//
//   std::string digest = sha256Hex(bytes);           // 64 lowercase hex characters
//   auto raw = base64Decode("AAEC");                 // Result<std::string>
#pragma once

#include <string>
#include <string_view>

#include "trellis/status.hpp"

namespace trellis::marketplace {

// SHA-256 of `bytes`, raw (32 bytes) or as 64 lowercase hex characters.
std::string sha256(std::string_view bytes);
std::string sha256Hex(std::string_view bytes);

std::string hexEncode(std::string_view bytes);  // lowercase

std::string base64Encode(std::string_view bytes);
// Refuses characters outside the alphabet, missing or extra padding, and non-zero bits in
// the final padded group (which would give a second spelling of the same bytes).
Result<std::string> base64Decode(std::string_view text);

// True if `s` is 64 lowercase hex characters.
bool isSha256Hex(std::string_view s);

}  // namespace trellis::marketplace
