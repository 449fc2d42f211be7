// A one-pass JSON reader that checks a document (RFC 8259: UTF-8, no trailing commas, no
// leading zeros, nesting at most kMaxJsonDepth) and writes values in the canonical form of
// canonical_json.h as it goes, with no tree in between. It yields the same bytes as
// Poco's parser followed by appendCanonical(), which the stored logs were made with; where
// Poco does something no canonical writer would guess (an integer beyond 64 bits, a
// number out of double range, a key holding U+0000) it does not guess: it stops with
// deferred() set and the caller takes Poco's path for that document.
//
//   JsonReader r(R"({"b":1,"a":"x"})");
//   std::string out;
//   if (r.value(&out, nullptr) == JsonKind::kObject && r.atEnd()) {
//     // out == R"({"a":"x","b":1})"
//   } else if (r.deferred()) {
//     // use the reference path
//   } else {
//     // r.error() names the problem and its byte offset
//   }
#pragma once

#include <cstddef>
#include <string>
#include <string_view>
#include <vector>

namespace trellis::audit {

// Poco's JSON parser refuses documents nested deeper than this; so does the reader.
inline constexpr int kMaxJsonDepth = 128;

enum class JsonKind { kInvalid, kNull, kBool, kNumber, kString, kArray, kObject };

// Members whose values are replaced, at any depth, by their HMAC digest (record.h).
struct JsonRedaction {
  std::string_view key;                   // the log's HMAC key
  const std::vector<std::string>* names;  // member names; not null
};

class JsonReader {
 public:
  explicit JsonReader(std::string_view text)
      : p_(text.data()), end_(text.data() + text.size()), begin_(text.data()) {}

  // Reads the next value at nesting level `depth` (the document itself is 1). Appends its
  // canonical form to *out unless out is null (check only), replacing sensitive members'
  // values when `redact` is set. kInvalid on an error or a deferral.
  JsonKind value(std::string* out, const JsonRedaction* redact, int depth = 1);
  // Reads a string token, decoding it into *decoded (cleared first) unless null.
  bool string(std::string* decoded);

  // The token readers for a caller that walks an object itself (record.cc).
  void skipSpace();
  bool consume(char c);  // skips whitespace, then `c` if it is next
  bool atEnd();          // only whitespace is left
  char peek() const { return p_ < end_ ? *p_ : '\0'; }
  size_t offset() const { return static_cast<size_t>(p_ - begin_); }
  bool lastStringHadNul() const { return has_nul_; }
  // Reads an integer token as int64; defers on a fraction, exponent or overflow.
  bool int64(long long* v);

  bool fail(std::string what);  // records the first error; returns false
  bool defer();                 // records a deferral; returns false
  bool deferred() const { return deferred_; }
  const std::string& error() const { return error_; }

 private:
  bool object(std::string* out, const JsonRedaction* redact, int depth);
  bool number(std::string* out);
  bool literal(std::string_view word);
  bool utf8(unsigned char lead);
  bool hex4(unsigned* cp);

  const char* p_;
  const char* end_;
  const char* begin_;
  bool deferred_ = false;
  bool has_nul_ = false;  // the last string read held \u0000
  std::string error_;
};

}  // namespace trellis::audit
