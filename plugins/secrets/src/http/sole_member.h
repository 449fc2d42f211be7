// A fast path for the bodies hot routes get most: a JSON object with exactly one member
// whose value is a string of printable ASCII without `"` or `\` (base64, a transit
// ciphertext). For such a string the text between the quotes is the value, so no JSON tree
// is built and nothing is copied. Anything else (another member, an escape, non-ASCII, a
// number) gives nullopt and the caller parses the body in full: the answer never differs
// from the full parser's, only its cost.
//
//   if (auto b64 = soleStringMember(req.body(), "plaintext")) use(*b64);  // a view into body
//   else … http::parseObject(req.body()) …
#pragma once

#include <optional>
#include <string_view>

namespace trellis::secrets::http {

// `name` is compared with the member's raw text, so it must need no escaping itself.
std::optional<std::string_view> soleStringMember(std::string_view body, std::string_view name);

}  // namespace trellis::secrets::http
