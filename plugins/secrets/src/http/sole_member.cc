#include "http/sole_member.h"

namespace trellis::secrets::http {
namespace {

bool isJsonSpace(char c) {
  return c == ' ' || c == '\t' || c == '\n' || c == '\r';
}

// Skips JSON whitespace, then consumes `c` if it is next.
bool take(std::string_view s, size_t& i, char c) {
  while (i < s.size() && isJsonSpace(s[i])) ++i;
  if (i == s.size() || s[i] != c) return false;
  ++i;
  return true;
}

// Printable ASCII but the backslash: what a value needs to be taken without unescaping.
// Written as a reduction without branches, which the compiler vectorises: a transit body
// is mostly one long base64 string.
bool isPlainText(std::string_view s) {
  const auto* p = reinterpret_cast<const unsigned char*>(s.data());
  unsigned char outside = 0;
  for (size_t i = 0; i < s.size(); ++i) {
    const unsigned char c = p[i];
    outside |= static_cast<unsigned char>(static_cast<unsigned char>(c - 0x20) > 0x7e - 0x20) |
               static_cast<unsigned char>(c == '\\');
  }
  return outside == 0;
}

}  // namespace

std::optional<std::string_view> soleStringMember(std::string_view body, std::string_view name) {
  size_t i = 0;
  if (!take(body, i, '{') || !take(body, i, '"')) return std::nullopt;
  if (body.substr(i, name.size()) != name) return std::nullopt;
  i += name.size();
  if (i == body.size() || body[i] != '"') return std::nullopt;
  ++i;
  if (!take(body, i, ':') || !take(body, i, '"')) return std::nullopt;
  const size_t start = i;
  i = body.find('"', start);
  if (i == std::string_view::npos) return std::nullopt;  // unterminated
  const std::string_view value = body.substr(start, i - start);
  if (!isPlainText(value)) return std::nullopt;
  ++i;
  if (!take(body, i, '}')) return std::nullopt;
  while (i < body.size() && isJsonSpace(body[i])) ++i;
  if (i != body.size()) return std::nullopt;
  return value;
}

}  // namespace trellis::secrets::http
