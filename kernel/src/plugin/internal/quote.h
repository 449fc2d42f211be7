// Quoting of untrusted text (manifest values, versions, dlerror output) inside error
// messages: operators read these in logs, so control characters are escaped and very long
// values are cut rather than copied whole.
#pragma once

#include <cstdio>
#include <string>
#include <string_view>

namespace trellis::kernel::plugin::internal {

inline std::string quoteText(std::string_view s, size_t max_chars = 120) {
  std::string out = "\"";
  size_t n = 0;
  for (char c : s) {
    if (n++ == max_chars) {
      out += "...";
      break;
    }
    auto u = static_cast<unsigned char>(c);
    if (c == '"' || c == '\\') {
      out += '\\';
      out += c;
    } else if (u < 0x20 || u == 0x7f) {
      char buf[8];
      std::snprintf(buf, sizeof buf, "\\u%04x", u);
      out += buf;
    } else {
      out += c;
    }
  }
  out += '"';
  return out;
}

// The same escaping without the surrounding quotes, for text like "acme/x@1.0.0".
inline std::string escapeText(std::string_view s, size_t max_chars = 120) {
  std::string q = quoteText(s, max_chars);
  return q.substr(1, q.size() - 2);
}

}  // namespace trellis::kernel::plugin::internal
