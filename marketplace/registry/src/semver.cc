#include "semver.h"

#include <algorithm>
#include <charconv>

namespace trellis::registry {
namespace {

bool isDigits(std::string_view s) {
  return !s.empty() && std::all_of(s.begin(), s.end(), [](char c) { return c >= '0' && c <= '9'; });
}

bool isIdentifier(std::string_view s) {
  return !s.empty() && std::all_of(s.begin(), s.end(), [](char c) {
    return (c >= '0' && c <= '9') || (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || c == '-';
  });
}

// A numeric part: digits, no leading zero, fits in 64 bits.
bool parseNumber(std::string_view s, uint64_t& out) {
  if (!isDigits(s) || (s.size() > 1 && s[0] == '0')) return false;
  auto [end, ec] = std::from_chars(s.data(), s.data() + s.size(), out);
  return ec == std::errc() && end == s.data() + s.size();
}

std::vector<std::string_view> split(std::string_view s, char sep) {
  std::vector<std::string_view> parts;
  size_t start = 0;
  for (size_t i = 0; i <= s.size(); ++i) {
    if (i == s.size() || s[i] == sep) {
      parts.push_back(s.substr(start, i - start));
      start = i + 1;
    }
  }
  return parts;
}

}  // namespace

Result<Semver> Semver::parse(std::string_view text) {
  auto bad = [&](const std::string& why) {
    return Status::invalid(
        "version \"" + std::string(text) +
        "\" is not a semantic version (MAJOR.MINOR.PATCH[-pre][+build]): " + why);
  };
  std::string_view rest = text;
  if (size_t plus = rest.find('+'); plus != std::string_view::npos) {
    for (auto id : split(rest.substr(plus + 1), '.')) {
      if (!isIdentifier(id)) return bad("build metadata must be dot-separated [0-9A-Za-z-]+");
    }
    rest = rest.substr(0, plus);
  }
  Semver v;
  if (size_t dash = rest.find('-'); dash != std::string_view::npos) {
    for (auto id : split(rest.substr(dash + 1), '.')) {
      if (!isIdentifier(id)) return bad("prerelease must be dot-separated [0-9A-Za-z-]+");
      if (isDigits(id) && id.size() > 1 && id[0] == '0') {
        return bad("numeric prerelease identifiers must not have leading zeros");
      }
      v.prerelease.emplace_back(id);
    }
    rest = rest.substr(0, dash);
  }
  auto core = split(rest, '.');
  if (core.size() != 3) return bad("expected three numbers separated by dots");
  if (!parseNumber(core[0], v.major) || !parseNumber(core[1], v.minor) ||
      !parseNumber(core[2], v.patch)) {
    return bad("MAJOR, MINOR and PATCH must be numbers without leading zeros");
  }
  return v;
}

int compareSemver(const Semver& a, const Semver& b) {
  for (auto [x, y] : {std::pair{a.major, b.major}, {a.minor, b.minor}, {a.patch, b.patch}}) {
    if (x != y) return x < y ? -1 : 1;
  }
  // A version with a prerelease ranks below the same version without one.
  if (a.prerelease.empty() || b.prerelease.empty()) {
    return a.prerelease.empty() == b.prerelease.empty() ? 0 : (a.prerelease.empty() ? 1 : -1);
  }
  for (size_t i = 0; i < std::min(a.prerelease.size(), b.prerelease.size()); ++i) {
    const std::string& x = a.prerelease[i];
    const std::string& y = b.prerelease[i];
    bool xn = isDigits(x), yn = isDigits(y);
    if (xn && yn) {
      if (x.size() != y.size()) return x.size() < y.size() ? -1 : 1;  // no leading zeros
      if (x != y) return x < y ? -1 : 1;
    } else if (xn != yn) {
      return xn ? -1 : 1;  // numeric identifiers rank below alphanumeric ones
    } else if (x != y) {
      return x < y ? -1 : 1;
    }
  }
  if (a.prerelease.size() == b.prerelease.size()) return 0;
  return a.prerelease.size() < b.prerelease.size() ? -1 : 1;
}

}  // namespace trellis::registry
