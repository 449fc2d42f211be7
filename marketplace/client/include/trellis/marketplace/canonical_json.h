// Canonical JSON: the one byte sequence that is signed for a JSON value, so that a
// signature made by the publisher (or the registry) verifies on any machine whatever the
// whitespace or key order of the file it travelled in.
//
// Rules (a subset of RFC 8785 that needs no floating point):
//   - objects: members sorted by key, comparing the keys' UTF-8 bytes as unsigned bytes;
//     duplicate keys are refused when parsing (parseJsonStrict);
//   - no whitespace anywhere outside strings; ',' and ':' only;
//   - strings: valid UTF-8 only (refused otherwise), written as is except '"' -> \",
//     '\' -> \\, and control characters U+0000..U+001F as \b \f \n \r \t or \u00xx
//     (lowercase hex); everything else, '/' and non-ASCII included, is written unescaped;
//   - numbers: integers only (-2^63 .. 2^64-1), in decimal, without '+', leading zeros or
//     exponent; a floating-point number is refused, because its decimal spelling is not
//     portable; times in signed metadata are therefore integer Unix seconds;
//   - true, false, null as themselves.
//
//   auto value = parseJsonStrict(text);                 // refuses duplicate keys
//   auto bytes = canonicalJson(*value);                  // what gets signed
//   canonicalizeJsonText(R"({"b":1, "a":[true]})")      // -> {"a":[true],"b":1}
#pragma once

#include <Poco/Dynamic/Var.h>

#include <cstddef>
#include <string>
#include <string_view>

#include "trellis/status.hpp"

namespace trellis::marketplace {

// Signed metadata is small; the cap guards memory against a hostile registry or archive.
inline constexpr size_t kMaxJsonBytes = size_t{16} << 20;

// Parses JSON, refusing duplicate object keys (Poco keeps the last one silently, which
// would let two readers see two different documents), nesting deeper than 64 and input
// larger than `max_bytes`.
Result<Poco::Dynamic::Var> parseJsonStrict(std::string_view text, size_t max_bytes = kMaxJsonBytes);

// The canonical bytes of `value` (see the rules above). INVALID names the first offending
// path, e.g. `files."a.so": floating-point numbers are not allowed`.
Result<std::string> canonicalJson(const Poco::Dynamic::Var& value);

// parseJsonStrict + canonicalJson.
Result<std::string> canonicalizeJsonText(std::string_view text);

}  // namespace trellis::marketplace
