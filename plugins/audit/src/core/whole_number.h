// A whole number written in decimal, all of the text or nothing: "12abc", "", "-1" and
// numbers past uint64_t are refused (std::stoull would read the first and throw on the rest).
#pragma once

#include <charconv>
#include <cstdint>
#include <optional>
#include <string_view>

namespace trellis::audit {

inline std::optional<uint64_t> wholeNumberIn(std::string_view text) {
  uint64_t n = 0;
  auto [end, ec] = std::from_chars(text.data(), text.data() + text.size(), n);
  if (ec != std::errc() || end != text.data() + text.size()) return std::nullopt;
  return n;
}

}  // namespace trellis::audit
