#include "core/json_reader.h"

#include <algorithm>
#include <charconv>
#include <cmath>
#include <cstdint>

#include "core/canonical_json.h"
#include "core/hash.h"

namespace trellis::audit {
namespace {

bool isSpace(char c) {
  return c == ' ' || c == '\t' || c == '\n' || c == '\r';
}
bool isDigit(char c) {
  return c >= '0' && c <= '9';
}

void appendUtf8(std::string& out, unsigned cp) {
  if (cp < 0x80) {
    out += static_cast<char>(cp);
  } else if (cp < 0x800) {
    out += static_cast<char>(0xc0 | (cp >> 6));
    out += static_cast<char>(0x80 | (cp & 0x3f));
  } else if (cp < 0x10000) {
    out += static_cast<char>(0xe0 | (cp >> 12));
    out += static_cast<char>(0x80 | ((cp >> 6) & 0x3f));
    out += static_cast<char>(0x80 | (cp & 0x3f));
  } else {
    out += static_cast<char>(0xf0 | (cp >> 18));
    out += static_cast<char>(0x80 | ((cp >> 12) & 0x3f));
    out += static_cast<char>(0x80 | ((cp >> 6) & 0x3f));
    out += static_cast<char>(0x80 | (cp & 0x3f));
  }
}

// A double-conversion reads at most 780 significant digits; a longer number could round
// differently there than in from_chars, so such numbers take the reference path.
constexpr size_t kMaxFloatToken = 64;
// Poco reads a negative integer through a double: below -2^53 it is rounded (found by
// fuzz_record_reader: -46744073709551615 is stored as -46744073709551616). Such numbers
// take the reference path, which rounds them as it always did.
constexpr long long kMinExactNegative = -(1LL << 53);

}  // namespace

bool JsonReader::fail(std::string what) {
  if (error_.empty() && !deferred_) {
    error_ = what + " at byte " + std::to_string(p_ - begin_);
  }
  return false;
}

bool JsonReader::defer() {
  deferred_ = true;
  return false;
}

void JsonReader::skipSpace() {
  while (p_ < end_ && isSpace(*p_)) ++p_;
}

bool JsonReader::consume(char c) {
  skipSpace();
  if (p_ < end_ && *p_ == c) {
    ++p_;
    return true;
  }
  return false;
}

bool JsonReader::atEnd() {
  skipSpace();
  return p_ == end_;
}

bool JsonReader::literal(std::string_view word) {
  if (static_cast<size_t>(end_ - p_) < word.size() || std::string_view(p_, word.size()) != word) {
    return fail("expected '" + std::string(word) + "'");
  }
  p_ += word.size();
  return true;
}

bool JsonReader::hex4(unsigned* cp) {
  if (end_ - p_ < 4) return fail("a \\u escape needs four hex digits");
  unsigned v = 0;
  for (int i = 0; i < 4; ++i) {
    const char c = *p_++;
    v <<= 4;
    if (c >= '0' && c <= '9') {
      v |= static_cast<unsigned>(c - '0');
    } else if (c >= 'a' && c <= 'f') {
      v |= static_cast<unsigned>(c - 'a' + 10);
    } else if (c >= 'A' && c <= 'F') {
      v |= static_cast<unsigned>(c - 'A' + 10);
    } else {
      --p_;
      return fail("a \\u escape needs four hex digits");
    }
  }
  *cp = v;
  return true;
}

// The continuation bytes after `lead` (already consumed), per Unicode's table of
// well-formed UTF-8: no overlong forms, no surrogates, nothing past U+10FFFF.
bool JsonReader::utf8(unsigned char lead) {
  int more = 0;
  unsigned char lo = 0x80, hi = 0xbf;
  if (lead >= 0xc2 && lead <= 0xdf) {
    more = 1;
  } else if (lead >= 0xe0 && lead <= 0xef) {
    more = 2;
    if (lead == 0xe0) lo = 0xa0;
    if (lead == 0xed) hi = 0x9f;
  } else if (lead >= 0xf0 && lead <= 0xf4) {
    more = 3;
    if (lead == 0xf0) lo = 0x90;
    if (lead == 0xf4) hi = 0x8f;
  } else {
    --p_;
    return fail("invalid UTF-8");
  }
  for (int i = 0; i < more; ++i) {
    if (p_ == end_) return fail("invalid UTF-8");
    const auto c = static_cast<unsigned char>(*p_);
    if (c < lo || c > hi) return fail("invalid UTF-8");
    ++p_;
    lo = 0x80;
    hi = 0xbf;
  }
  return true;
}

bool JsonReader::string(std::string* decoded) {
  if (decoded) decoded->clear();
  has_nul_ = false;
  if (p_ == end_ || *p_ != '"') return fail("expected a string");
  ++p_;
  for (;;) {
    // The plain run up to the next quote, backslash, control or non-ASCII byte.
    const char* run = p_;
    while (p_ < end_) {
      const auto c = static_cast<unsigned char>(*p_);
      if (c == '"' || c == '\\' || c < 0x20 || c >= 0x80) break;
      ++p_;
    }
    if (decoded) decoded->append(run, p_);
    if (p_ == end_) return fail("unterminated string");
    const auto c = static_cast<unsigned char>(*p_++);
    if (c == '"') return true;
    if (c < 0x20) {
      --p_;
      return fail("unescaped control character in a string");
    }
    if (c >= 0x80) {
      const char* start = p_ - 1;
      if (!utf8(c)) return false;
      if (decoded) decoded->append(start, p_);
      continue;
    }
    // A backslash.
    if (p_ == end_) return fail("unterminated string");
    const char e = *p_++;
    char plain = 0;
    switch (e) {
      case '"': plain = '"'; break;
      case '\\': plain = '\\'; break;
      case '/': plain = '/'; break;
      case 'b': plain = '\b'; break;
      case 'f': plain = '\f'; break;
      case 'n': plain = '\n'; break;
      case 'r': plain = '\r'; break;
      case 't': plain = '\t'; break;
      case 'u': {
        unsigned cp = 0;
        if (!hex4(&cp)) return false;
        if (cp >= 0xdc00 && cp <= 0xdfff) return fail("a lone low surrogate escape");
        if (cp >= 0xd800 && cp <= 0xdbff) {
          unsigned low = 0;
          if (end_ - p_ < 2 || p_[0] != '\\' || p_[1] != 'u') {
            return fail("a high surrogate escape without its low half");
          }
          p_ += 2;
          if (!hex4(&low)) return false;
          if (low < 0xdc00 || low > 0xdfff)
            return fail("a high surrogate escape without its low half");
          cp = 0x10000 + ((cp - 0xd800) << 10) + (low - 0xdc00);
        }
        if (cp == 0) has_nul_ = true;
        if (decoded) appendUtf8(*decoded, cp);
        continue;
      }
      default: --p_; return fail("invalid escape in a string");
    }
    if (decoded) *decoded += plain;
  }
}

bool JsonReader::number(std::string* out) {
  const char* start = p_;
  bool integral = true;
  if (p_ < end_ && *p_ == '-') ++p_;
  if (p_ == end_ || !isDigit(*p_)) return fail("expected a digit");
  if (*p_ == '0') {
    ++p_;
  } else {
    while (p_ < end_ && isDigit(*p_)) ++p_;
  }
  if (p_ < end_ && *p_ == '.') {
    integral = false;
    ++p_;
    if (p_ == end_ || !isDigit(*p_)) return fail("expected a digit after the decimal point");
    while (p_ < end_ && isDigit(*p_)) ++p_;
  }
  if (p_ < end_ && (*p_ == 'e' || *p_ == 'E')) {
    integral = false;
    ++p_;
    if (p_ < end_ && (*p_ == '+' || *p_ == '-')) ++p_;
    if (p_ == end_ || !isDigit(*p_)) return fail("expected a digit in the exponent");
    while (p_ < end_ && isDigit(*p_)) ++p_;
  }
  if (!out) {
    // Checking only: the value is not needed, but whether Poco would read it is.
    if (integral) {
      long long v;
      if (std::from_chars(start, p_, v).ec == std::errc()) return v >= kMinExactNegative || defer();
      unsigned long long u;
      if (*start != '-' && std::from_chars(start, p_, u).ec == std::errc()) return true;
      return defer();
    }
    double d;
    if (p_ - start > static_cast<ptrdiff_t>(kMaxFloatToken)) return defer();
    auto r = std::from_chars(start, p_, d);
    if (r.ec != std::errc() || !std::isfinite(d)) return defer();
    return true;
  }
  char buf[32];
  if (integral) {
    long long v;
    auto r = std::from_chars(start, p_, v);
    if (r.ec == std::errc()) {
      if (v < kMinExactNegative) return defer();
      auto w = std::to_chars(buf, buf + sizeof buf, v);
      out->append(buf, w.ptr);
      return true;
    }
    unsigned long long u;
    if (*start != '-' && std::from_chars(start, p_, u).ec == std::errc()) {
      out->append(start, p_);  // no sign, no leading zero: already canonical
      return true;
    }
    return defer();
  }
  if (p_ - start > static_cast<ptrdiff_t>(kMaxFloatToken)) return defer();
  double d;
  auto r = std::from_chars(start, p_, d);
  if (r.ec != std::errc() || !std::isfinite(d)) return defer();
  auto w = std::to_chars(buf, buf + sizeof buf, d);  // shortest round-trip form
  out->append(buf, w.ptr);
  return true;
}

bool JsonReader::int64(long long* v) {
  skipSpace();
  const char* start = p_;
  std::string digits;
  if (!number(&digits)) return false;
  for (const char* q = start; q < p_; ++q) {
    if (*q == '.' || *q == 'e' || *q == 'E') return defer();
  }
  if (std::from_chars(digits.data(), digits.data() + digits.size(), *v).ec != std::errc()) {
    return defer();  // beyond int64: Poco's conversion has its own rules
  }
  return true;
}

JsonKind JsonReader::value(std::string* out, const JsonRedaction* redact, int depth) {
  skipSpace();
  if (p_ == end_) {
    fail("unexpected end of input");
    return JsonKind::kInvalid;
  }
  switch (*p_) {
    case 'n':
      if (!literal("null")) return JsonKind::kInvalid;
      if (out) *out += "null";
      return JsonKind::kNull;
    case 't':
      if (!literal("true")) return JsonKind::kInvalid;
      if (out) *out += "true";
      return JsonKind::kBool;
    case 'f':
      if (!literal("false")) return JsonKind::kInvalid;
      if (out) *out += "false";
      return JsonKind::kBool;
    case '"': {
      if (!out) return string(nullptr) ? JsonKind::kString : JsonKind::kInvalid;
      std::string s;
      if (!string(&s)) return JsonKind::kInvalid;
      appendJsonString(*out, s);
      return JsonKind::kString;
    }
    case '[': {
      if (depth > kMaxJsonDepth) {
        fail("nested deeper than " + std::to_string(kMaxJsonDepth));
        return JsonKind::kInvalid;
      }
      ++p_;
      if (out) *out += '[';
      if (consume(']')) {
        if (out) *out += ']';
        return JsonKind::kArray;
      }
      for (bool first = true;; first = false) {
        if (!first && out) *out += ',';
        if (value(out, redact, depth + 1) == JsonKind::kInvalid) return JsonKind::kInvalid;
        if (consume(',')) continue;
        if (consume(']')) break;
        fail("expected ',' or ']' in an array");
        return JsonKind::kInvalid;
      }
      if (out) *out += ']';
      return JsonKind::kArray;
    }
    case '{': return object(out, redact, depth) ? JsonKind::kObject : JsonKind::kInvalid;
    default:
      if (*p_ == '-' || isDigit(*p_)) {
        return number(out) ? JsonKind::kNumber : JsonKind::kInvalid;
      }
      fail(std::string("unexpected byte '") + *p_ + "'");
      return JsonKind::kInvalid;
  }
}

bool JsonReader::object(std::string* out, const JsonRedaction* redact, int depth) {
  if (depth > kMaxJsonDepth) return fail("nested deeper than " + std::to_string(kMaxJsonDepth));
  ++p_;  // '{'
  struct Member {
    std::string key;
    size_t begin, end;  // the canonical value in `values`
  };
  std::vector<Member> members;
  std::string values;
  std::string key;
  if (!consume('}')) {
    for (;;) {
      skipSpace();
      if (!string(out ? &key : nullptr)) return false;
      // Poco cuts a key at U+0000: not a form worth copying.
      if (has_nul_) return defer();
      if (!consume(':')) return fail("expected ':' after a member name");
      const size_t begin = values.size();
      bool hide = false;
      if (redact && out) {
        for (const auto& n : *redact->names) hide = hide || n == key;
      }
      if (hide) {
        skipSpace();
        std::string plain;
        JsonKind kind;
        if (peek() == '"') {
          kind = string(&plain) ? JsonKind::kString : JsonKind::kInvalid;
        } else {
          kind = value(&plain, nullptr, depth + 1);
        }
        if (kind == JsonKind::kInvalid) return false;
        if (kind == JsonKind::kNull) {
          values += "null";
        } else {
          appendJsonString(values, "hmac-sha256:" + toHex(hmacSha256(redact->key, plain)));
        }
      } else if (value(out ? &values : nullptr, redact, depth + 1) == JsonKind::kInvalid) {
        return false;
      }
      if (out) members.push_back({std::move(key), begin, values.size()});
      if (consume(',')) continue;
      if (consume('}')) break;
      return fail("expected ',' or '}' in an object");
    }
  }
  if (!out) return true;
  // Bytewise order; of equal names the last one counts, as in Poco's object.
  std::stable_sort(members.begin(), members.end(),
                   [](const Member& a, const Member& b) { return a.key < b.key; });
  *out += '{';
  bool first = true;
  for (size_t i = 0; i < members.size(); ++i) {
    if (i + 1 < members.size() && members[i + 1].key == members[i].key) continue;
    if (!first) *out += ',';
    first = false;
    appendJsonString(*out, members[i].key);
    *out += ':';
    out->append(values, members[i].begin, members[i].end - members[i].begin);
  }
  *out += '}';
  return true;
}

}  // namespace trellis::audit
