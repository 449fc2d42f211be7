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
  for (; i < body.size() && body[i] != '"'; ++i) {
    const auto c = static_cast<unsigned char>(body[i]);
    if (c < 0x20 || c > 0x7e || c == '\\') return std::nullopt;
  }
  if (i == body.size()) return std::nullopt;  // unterminated
  const std::string_view value = body.substr(start, i - start);
  ++i;
  if (!take(body, i, '}')) return std::nullopt;
  while (i < body.size() && isJsonSpace(body[i])) ++i;
  if (i != body.size()) return std::nullopt;
  return value;
}

}  // namespace trellis::secrets::http
