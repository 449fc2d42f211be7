// JSON by hand for the few places on hot paths (problem details, the access log, audit
// records) or reading foreign text (YAML config), where a document tree costs more than
// the work itself. Escaping turns invalid UTF-8 into U+FFFD, so the output is always valid
// JSON whatever bytes a client sent.
//
//   std::string out = "{\"path\":";
//   appendJsonString(out, untrusted_path);   // adds the quotes
//   if (!isJsonObject(details)) ...          // RFC 8259, checked without building a tree
//   size_t pos = 9; std::string path;
//   if (readJsonString(out, pos, path)) ...  // the string literal at pos, unescaped
#pragma once

#include <cstddef>
#include <string>
#include <string_view>

namespace trellis::kernel::util {

// Objects and arrays nested deeper than this are refused by isJsonObject.
constexpr size_t kMaxJsonDepth = 128;

void appendJsonString(std::string& out, std::string_view s);

// Whether `text` is exactly one JSON object (RFC 8259; whitespace around it allowed) in
// valid UTF-8, nested at most kMaxJsonDepth levels, its integers within 64 bits and other
// numbers within a double's range.
// Allocates nothing.
bool isJsonObject(std::string_view text);

// Reads the JSON string literal starting at text[pos] (its opening quote) into `out`,
// escapes decoded to UTF-8, and moves pos past its closing quote. False, with pos and
// out unspecified, if there is no literal there or it is cut short or holds an unknown
// escape. Meant for JSON this process wrote: it does not check what isJsonObject does.
bool readJsonString(std::string_view text, size_t& pos, std::string& out);

}  // namespace trellis::kernel::util
