#include "trellis/kernel/util/json.h"

#include <charconv>
#include <cstdint>
#include <system_error>

namespace trellis::kernel::util {
namespace {

// Length of the valid UTF-8 sequence starting at s[i], or 0 if it is not valid (overlong
// forms, surrogates and code points above U+10FFFF included), so the output is always JSON.
size_t utf8SequenceLength(std::string_view s, size_t i) {
  auto byte = [&](size_t k) { return static_cast<uint8_t>(s[k]); };
  uint8_t b0 = byte(i);
  size_t len;
  uint32_t cp;
  if (b0 >= 0xC2 && b0 <= 0xDF) {
    len = 2;
    cp = b0 & 0x1F;
  } else if (b0 >= 0xE0 && b0 <= 0xEF) {
    len = 3;
    cp = b0 & 0x0F;
  } else if (b0 >= 0xF0 && b0 <= 0xF4) {
    len = 4;
    cp = b0 & 0x07;
  } else {
    return 0;
  }
  if (i + len > s.size()) return 0;
  for (size_t k = 1; k < len; ++k) {
    if ((byte(i + k) & 0xC0) != 0x80) return 0;
    cp = (cp << 6) | (byte(i + k) & 0x3F);
  }
  if ((len == 3 && cp < 0x800) || (len == 4 && cp < 0x10000) || cp > 0x10FFFF ||
      (cp >= 0xD800 && cp <= 0xDFFF)) {
    return 0;
  }
  return len;
}

int hexDigit(char c) {
  if (c >= '0' && c <= '9') return c - '0';
  if (c >= 'a' && c <= 'f') return c - 'a' + 10;
  if (c >= 'A' && c <= 'F') return c - 'A' + 10;
  return -1;
}

// The four hex digits of a \u escape at text[pos], or -1.
int hex4(std::string_view text, size_t pos) {
  if (pos + 4 > text.size()) return -1;
  int v = 0;
  for (size_t k = 0; k < 4; ++k) {
    const int d = hexDigit(text[pos + k]);
    if (d < 0) return -1;
    v = v * 16 + d;
  }
  return v;
}

void appendUtf8(std::string& out, uint32_t cp) {
  if (cp < 0x80) {
    out += static_cast<char>(cp);
  } else if (cp < 0x800) {
    out += static_cast<char>(0xC0 | (cp >> 6));
    out += static_cast<char>(0x80 | (cp & 0x3F));
  } else if (cp < 0x10000) {
    out += static_cast<char>(0xE0 | (cp >> 12));
    out += static_cast<char>(0x80 | ((cp >> 6) & 0x3F));
    out += static_cast<char>(0x80 | (cp & 0x3F));
  } else {
    out += static_cast<char>(0xF0 | (cp >> 18));
    out += static_cast<char>(0x80 | ((cp >> 12) & 0x3F));
    out += static_cast<char>(0x80 | ((cp >> 6) & 0x3F));
    out += static_cast<char>(0x80 | (cp & 0x3F));
  }
}

// One pass over a JSON text with an explicit stack of open containers (no recursion, so
// depth costs no C++ stack), checking the grammar of RFC 8259 and that strings are UTF-8.
class Validator {
 public:
  explicit Validator(std::string_view text) : s_(text) {}

  bool object() {
    space();
    if (i_ == s_.size() || s_[i_] != '{') return false;
    enum class Next { kValue, kKey, kAfterValue } next = Next::kValue;
    for (;;) {
      space();
      if (next == Next::kKey) {
        if (!string()) return false;
        space();
        if (!eat(':')) return false;
        next = Next::kValue;
        continue;
      }
      if (next == Next::kValue) {
        if (i_ == s_.size()) return false;
        const char c = s_[i_];
        if (c == '{' || c == '[') {
          if (depth_ == kMaxJsonDepth) return false;
          open_[depth_++] = c;
          ++i_;
          space();
          if (eat(c == '{' ? '}' : ']')) {
            --depth_;
            next = Next::kAfterValue;
          } else {
            next = c == '{' ? Next::kKey : Next::kValue;
          }
          continue;
        }
        if (!scalar()) return false;
        next = Next::kAfterValue;
        continue;
      }
      if (depth_ == 0) return i_ == s_.size();
      const char open = open_[depth_ - 1];
      if (eat(',')) {
        next = open == '{' ? Next::kKey : Next::kValue;
      } else if (eat(open == '{' ? '}' : ']')) {
        --depth_;
      } else {
        return false;
      }
    }
  }

 private:
  bool eat(char c) {
    if (i_ < s_.size() && s_[i_] == c) {
      ++i_;
      return true;
    }
    return false;
  }
  void space() {
    while (i_ < s_.size() &&
           (s_[i_] == ' ' || s_[i_] == '\t' || s_[i_] == '\n' || s_[i_] == '\r')) {
      ++i_;
    }
  }
  bool digits() {
    const size_t start = i_;
    while (i_ < s_.size() && s_[i_] >= '0' && s_[i_] <= '9') ++i_;
    return i_ > start;
  }
  bool literal(std::string_view word) {
    if (s_.substr(i_, word.size()) != word) return false;
    i_ += word.size();
    return true;
  }
  bool scalar() {
    switch (s_[i_]) {
      case '"': return string();
      case 't': return literal("true");
      case 'f': return literal("false");
      case 'n': return literal("null");
      default: return number();
    }
  }
  // A number also has to fit what parsers read it as (Poco, the audit sink's): an integer
  // an int64 or uint64, any other a finite double. They refuse 1e999, so passing it along
  // would lose the record downstream.
  bool number() {
    const size_t start = i_;
    eat('-');
    if (!eat('0') && !digits()) return false;
    bool integer = true;
    if (eat('.')) {
      if (!digits()) return false;
      integer = false;
    }
    if (i_ < s_.size() && (s_[i_] == 'e' || s_[i_] == 'E')) {
      ++i_;
      if (!eat('+')) eat('-');
      if (!digits()) return false;
      integer = false;
    }
    const char* first = s_.data() + start;
    const char* last = s_.data() + i_;
    if (integer && *first == '-') return fits<int64_t>(first, last);
    if (integer) return fits<uint64_t>(first, last);
    return fits<double>(first, last);
  }
  template <typename T>
  static bool fits(const char* first, const char* last) {
    T value{};
    const auto [end, error] = std::from_chars(first, last, value);
    return error == std::errc() && end == last;
  }
  bool string() {
    if (!eat('"')) return false;
    while (i_ < s_.size()) {
      const auto c = static_cast<unsigned char>(s_[i_]);
      if (c == '"') {
        ++i_;
        return true;
      }
      if (c < 0x20) return false;
      if (c == '\\') {
        if (++i_ == s_.size()) return false;
        const char e = s_[i_++];
        if (e == 'u') {
          // A surrogate escape must be a high one followed by an escaped low one: a lone
          // half is no character, and parsers (Poco's) refuse it.
          const int cp = hex4(s_, i_);
          if (cp < 0 || (cp >= 0xDC00 && cp <= 0xDFFF)) return false;
          i_ += 4;
          if (cp >= 0xD800 && cp <= 0xDBFF) {
            const int low = s_.substr(i_, 2) == "\\u" ? hex4(s_, i_ + 2) : -1;
            if (low < 0xDC00 || low > 0xDFFF) return false;
            i_ += 6;
          }
        } else if (std::string_view("\"\\/bfnrt").find(e) == std::string_view::npos) {
          return false;
        }
      } else if (c >= 0x80) {
        const size_t len = utf8SequenceLength(s_, i_);
        if (len == 0) return false;
        i_ += len;
      } else {
        ++i_;
      }
    }
    return false;
  }

  std::string_view s_;
  size_t i_ = 0;
  size_t depth_ = 0;
  char open_[kMaxJsonDepth];
};

}  // namespace

bool isJsonObject(std::string_view text) {
  return Validator(text).object();
}

bool readJsonString(std::string_view text, size_t& pos, std::string& out) {
  out.clear();
  if (pos >= text.size() || text[pos] != '"') return false;
  size_t i = pos + 1;
  while (i < text.size()) {
    const size_t plain = text.find_first_of("\"\\", i);
    if (plain == std::string_view::npos) return false;
    out.append(text.substr(i, plain - i));
    i = plain;
    if (text[i] == '"') {
      pos = i + 1;
      return true;
    }
    if (++i == text.size()) return false;
    const char e = text[i++];
    switch (e) {
      case '"': out += '"'; break;
      case '\\': out += '\\'; break;
      case '/': out += '/'; break;
      case 'b': out += '\b'; break;
      case 'f': out += '\f'; break;
      case 'n': out += '\n'; break;
      case 'r': out += '\r'; break;
      case 't': out += '\t'; break;
      case 'u': {
        int cp = hex4(text, i);
        if (cp < 0) return false;
        i += 4;
        // A high surrogate followed by an escaped low one is one code point; a lone
        // surrogate cannot be UTF-8 and becomes U+FFFD, as appendJsonString writes it.
        if (cp >= 0xD800 && cp <= 0xDBFF && text.substr(i, 2) == "\\u") {
          const int low = hex4(text, i + 2);
          if (low >= 0xDC00 && low <= 0xDFFF) {
            cp = 0x10000 + ((cp - 0xD800) << 10) + (low - 0xDC00);
            i += 6;
          }
        }
        appendUtf8(out, cp >= 0xD800 && cp <= 0xDFFF ? 0xFFFD : static_cast<uint32_t>(cp));
        break;
      }
      default: return false;
    }
  }
  return false;
}

void appendJsonString(std::string& out, std::string_view s) {
  static constexpr char kHex[] = "0123456789abcdef";
  out.reserve(out.size() + s.size() + 2);
  out += '"';
  for (size_t i = 0; i < s.size();) {
    // Runs of printable ASCII that need no escape go in whole: ids, routes, tenant names.
    size_t plain = i;
    while (plain < s.size() && s[plain] >= 0x20 && s[plain] < 0x7F && s[plain] != '"' &&
           s[plain] != '\\') {
      ++plain;
    }
    out.append(s.data() + i, plain - i);
    if ((i = plain) == s.size()) break;
    auto c = static_cast<unsigned char>(s[i]);
    if (c >= 0x80) {
      // Details often quote client input (paths, headers): never let it break the JSON.
      if (size_t len = utf8SequenceLength(s, i)) {
        out.append(s.substr(i, len));
        i += len;
      } else {
        out += "\\ufffd";
        ++i;
      }
      continue;
    }
    switch (c) {
      case '"': out += "\\\""; break;
      case '\\': out += "\\\\"; break;
      case '\b': out += "\\b"; break;
      case '\f': out += "\\f"; break;
      case '\n': out += "\\n"; break;
      case '\r': out += "\\r"; break;
      case '\t': out += "\\t"; break;
      default:
        if (c < 0x20 || c == 0x7F) {
          out += "\\u00";
          out += kHex[c >> 4];
          out += kHex[c & 0xF];
        } else {
          out += static_cast<char>(c);
        }
    }
    ++i;
  }
  out += '"';
}

}  // namespace trellis::kernel::util
