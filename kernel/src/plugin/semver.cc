#include "trellis/kernel/plugin/semver.h"

#include <algorithm>
#include <optional>
#include <utility>

#include "plugin/internal/quote.h"

namespace trellis::kernel::plugin {
namespace {

// npm caps versions at 256 characters; longer text is never a real version.
constexpr size_t kMaxVersionLength = 256;
constexpr size_t kMaxRangeLength = 1024;

std::string quote(std::string_view s) {
  return internal::quoteText(s);
}

bool isDigit(char c) {
  return c >= '0' && c <= '9';
}

bool isIdentChar(char c) {
  return isDigit(c) || (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || c == '-';
}

bool allDigits(std::string_view s) {
  return !s.empty() && std::all_of(s.begin(), s.end(), isDigit);
}

std::vector<std::string_view> split(std::string_view s, char sep) {
  std::vector<std::string_view> parts;
  size_t start = 0;
  while (true) {
    size_t pos = s.find(sep, start);
    parts.push_back(s.substr(start, pos - start));
    if (pos == std::string_view::npos) return parts;
    start = pos + 1;
  }
}

// A numeric field: digits only, no leading zero, fits in 64 bits. Returns the reason
// it is not one, or nullopt on success.
std::optional<std::string> parseNumber(std::string_view s, std::string_view what, uint64_t* out) {
  if (s.empty()) return std::string(what) + " is empty";
  if (!allDigits(s)) return std::string(what) + " " + quote(s) + " is not a number";
  if (s.size() > 1 && s[0] == '0')
    return std::string(what) + " " + quote(s) + " has a leading zero";
  uint64_t value = 0;
  for (char c : s) {
    uint64_t digit = static_cast<uint64_t>(c - '0');
    if (value > (UINT64_MAX - digit) / 10)
      return std::string(what) + " " + quote(s) + " is too large";
    value = value * 10 + digit;
  }
  *out = value;
  return std::nullopt;
}

// Dot-separated identifiers after '-' (prerelease: numeric ones without leading zeros)
// or '+' (build: any alphanumerics).
std::optional<std::string> parseIdentifiers(std::string_view s, bool prerelease,
                                            std::vector<std::string>* out) {
  const char* what = prerelease ? "prerelease" : "build metadata";
  if (s.empty()) return std::string(what) + " is empty";
  for (std::string_view id : split(s, '.')) {
    if (id.empty()) return std::string(what) + " " + quote(s) + " has an empty identifier";
    if (!std::all_of(id.begin(), id.end(), isIdentChar)) {
      return std::string(what) + " identifier " + quote(id) + " may only contain [0-9A-Za-z-]";
    }
    if (prerelease && allDigits(id) && id.size() > 1 && id[0] == '0') {
      return std::string(what) + " identifier " + quote(id) + " has a leading zero";
    }
    out->emplace_back(id);
  }
  return std::nullopt;
}

// Splits "core[-pre][+build]" and validates the tail; `core` gets the dotted numbers.
std::optional<std::string> splitVersion(std::string_view text, std::string_view* core,
                                        std::vector<std::string>* prerelease, std::string* build) {
  size_t plus = text.find('+');
  if (plus != std::string_view::npos) {
    std::vector<std::string> ids;
    if (auto err = parseIdentifiers(text.substr(plus + 1), false, &ids)) return err;
    *build = std::string(text.substr(plus + 1));
    text = text.substr(0, plus);
  }
  size_t dash = text.find('-');
  if (dash != std::string_view::npos) {
    if (auto err = parseIdentifiers(text.substr(dash + 1), true, prerelease)) return err;
    text = text.substr(0, dash);
  }
  *core = text;
  return std::nullopt;
}

// Numeric identifiers compare as numbers and sort before alphanumeric ones (§11.4).
int compareIdentifier(const std::string& a, const std::string& b) {
  bool a_num = allDigits(a), b_num = allDigits(b);
  if (a_num && b_num) {
    // No leading zeros, so the longer number is the larger one.
    if (a.size() != b.size()) return a.size() < b.size() ? -1 : 1;
    int c = a.compare(b);
    return c < 0 ? -1 : (c > 0 ? 1 : 0);
  }
  if (a_num != b_num) return a_num ? -1 : 1;
  int c = a.compare(b);
  return c < 0 ? -1 : (c > 0 ? 1 : 0);
}

// A version in a range may be partial ("1", "1.2") or use wildcards ("1.x", "*").
struct Partial {
  std::optional<uint64_t> major, minor, patch;  // nullopt = wildcard or missing
  std::vector<std::string> prerelease;
  std::string build;

  bool any() const { return !major; }
  bool full() const { return major && minor && patch; }
  Version toVersion() const {
    Version v;
    v.major = major.value_or(0);
    v.minor = minor.value_or(0);
    v.patch = patch.value_or(0);
    v.prerelease = prerelease;
    v.build = build;
    return v;
  }
};

bool isWildcard(std::string_view s) {
  return s == "x" || s == "X" || s == "*";
}

Result<Partial> parsePartial(std::string_view text) {
  Partial p;
  std::string_view core;
  auto bad = [&](const std::string& why) {
    return Status::invalid(quote(text) + " is not a valid version: " + why);
  };
  if (text.empty()) return Status::invalid("a version is missing");
  if (auto err = splitVersion(text, &core, &p.prerelease, &p.build)) return bad(*err);
  std::vector<std::string_view> parts = split(core, '.');
  if (parts.size() > 3) return bad("more than three numbers");
  static constexpr const char* kNames[] = {"major", "minor", "patch"};
  std::optional<uint64_t>* fields[] = {&p.major, &p.minor, &p.patch};
  bool wildcard_seen = false;
  for (size_t i = 0; i < parts.size(); ++i) {
    if (isWildcard(parts[i])) {
      wildcard_seen = true;
      continue;
    }
    if (wildcard_seen) return bad(std::string(kNames[i]) + " follows a wildcard");
    uint64_t n = 0;
    if (auto err = parseNumber(parts[i], kNames[i], &n)) return bad(*err);
    *fields[i] = n;
  }
  if ((!p.prerelease.empty() || !p.build.empty()) && !p.full()) {
    return bad("a prerelease or build needs a full MAJOR.MINOR.PATCH");
  }
  return p;
}

Version makeVersion(uint64_t major, uint64_t minor, uint64_t patch, bool pre_zero = false) {
  Version v;
  v.major = major;
  v.minor = minor;
  v.patch = patch;
  if (pre_zero) v.prerelease = {"0"};  // the lowest prerelease: excludes all of x.y.z-*
  return v;
}

// The first version after the whole line M.m.* (or M.* without m): the exclusive upper bound
// of that line, with "-0" so the bound's own prereleases stay out. None when the numbers are
// at their maximum and no version comes after: the line then has no upper bound.
std::optional<Version> afterLine(uint64_t M, std::optional<uint64_t> m, bool pre_zero = true) {
  if (m && *m < UINT64_MAX) return makeVersion(M, *m + 1, 0, pre_zero);
  if (M < UINT64_MAX) return makeVersion(M + 1, 0, 0, pre_zero);
  return std::nullopt;
}

}  // namespace

Result<Version> Version::parse(std::string_view text) {
  auto bad = [&](const std::string& why) {
    return Status::invalid(quote(text) + " is not a valid semantic version: " + why);
  };
  if (text.empty()) return Status::invalid("version is empty");
  if (text.size() > kMaxVersionLength) {
    return Status::invalid("version is longer than " + std::to_string(kMaxVersionLength) +
                           " characters");
  }
  Version v;
  std::string_view core;
  if (auto err = splitVersion(text, &core, &v.prerelease, &v.build)) return bad(*err);
  std::vector<std::string_view> parts = split(core, '.');
  if (parts.size() != 3) return bad("expected MAJOR.MINOR.PATCH");
  if (auto err = parseNumber(parts[0], "major", &v.major)) return bad(*err);
  if (auto err = parseNumber(parts[1], "minor", &v.minor)) return bad(*err);
  if (auto err = parseNumber(parts[2], "patch", &v.patch)) return bad(*err);
  return v;
}

std::string Version::toString() const {
  std::string s = std::to_string(major) + "." + std::to_string(minor) + "." + std::to_string(patch);
  for (size_t i = 0; i < prerelease.size(); ++i) s += (i == 0 ? "-" : ".") + prerelease[i];
  if (!build.empty()) s += "+" + build;
  return s;
}

int compare(const Version& a, const Version& b) {
  if (a.major != b.major) return a.major < b.major ? -1 : 1;
  if (a.minor != b.minor) return a.minor < b.minor ? -1 : 1;
  if (a.patch != b.patch) return a.patch < b.patch ? -1 : 1;
  // A release outranks its prereleases (§11.3).
  if (a.prerelease.empty() != b.prerelease.empty()) return a.prerelease.empty() ? 1 : -1;
  size_t n = std::min(a.prerelease.size(), b.prerelease.size());
  for (size_t i = 0; i < n; ++i) {
    if (int c = compareIdentifier(a.prerelease[i], b.prerelease[i])) return c;
  }
  if (a.prerelease.size() != b.prerelease.size()) {
    return a.prerelease.size() < b.prerelease.size() ? -1 : 1;
  }
  return 0;
}

namespace {

// Operators in the order they must be tried (longest first).
constexpr std::string_view kOperators[] = {"<=", ">=", "~>", "<", ">", "=", "^", "~"};

std::string_view trim(std::string_view s) {
  auto space = [](char c) { return c == ' ' || c == '\t' || c == '\n' || c == '\r'; };
  while (!s.empty() && space(s.front())) s.remove_prefix(1);
  while (!s.empty() && space(s.back())) s.remove_suffix(1);
  return s;
}

std::vector<std::string_view> splitSpaces(std::string_view s) {
  std::vector<std::string_view> tokens;
  size_t i = 0;
  auto space = [](char c) { return c == ' ' || c == '\t' || c == '\n' || c == '\r'; };
  while (i < s.size()) {
    while (i < s.size() && space(s[i])) ++i;
    size_t start = i;
    while (i < s.size() && !space(s[i])) ++i;
    if (i > start) tokens.push_back(s.substr(start, i - start));
  }
  return tokens;
}

bool isOperatorOnly(std::string_view token) {
  return std::find(std::begin(kOperators), std::end(kOperators), token) != std::end(kOperators);
}

}  // namespace

// The desugaring below follows node-semver (the reference for npm ranges), including its
// "-0" upper bounds, which keep prereleases of the excluded version out of the range.
Result<VersionRange> VersionRange::parse(std::string_view text) {
  using C = Comparator;
  // An upper bound, when there is one (afterLine).
  auto below = [](std::vector<C>& set, const std::optional<Version>& bound) {
    if (bound) set.push_back({C::Op::kLt, *bound});
  };
  auto bad = [&](const std::string& why) {
    return Status::invalid(quote(text) + " is not a valid version range: " + why);
  };
  if (text.size() > kMaxRangeLength) {
    return Status::invalid("version range is longer than " + std::to_string(kMaxRangeLength) +
                           " characters");
  }
  if (trim(text).empty()) return bad("it is empty (use \"*\" for any version)");
  VersionRange range;
  range.text_ = std::string(trim(text));

  size_t pos = 0;
  std::vector<std::string_view> alternatives;
  while (true) {
    size_t bar = text.find("||", pos);
    alternatives.push_back(text.substr(pos, bar == std::string_view::npos ? bar : bar - pos));
    if (bar == std::string_view::npos) break;
    pos = bar + 2;
  }

  for (std::string_view alt_raw : alternatives) {
    std::string_view alt = trim(alt_raw);
    if (alt.empty()) return bad("an alternative around \"||\" is empty");
    std::vector<C> set;
    std::vector<std::string_view> tokens = splitSpaces(alt);

    if (std::find(tokens.begin(), tokens.end(), "-") != tokens.end()) {
      // Hyphen range "A - B": inclusive, a partial B rounds up.
      if (tokens.size() != 3 || tokens[1] != "-") {
        return bad("a hyphen range must be exactly \"A - B\", got " + quote(alt));
      }
      auto lo = parsePartial(tokens[0]);
      if (!lo) return bad(lo.status().message());
      auto hi = parsePartial(tokens[2]);
      if (!hi) return bad(hi.status().message());
      if (!lo->any()) set.push_back({C::Op::kGe, lo->toVersion()});
      if (hi->full()) {
        set.push_back({C::Op::kLe, hi->toVersion()});
      } else if (hi->major) {
        below(set, afterLine(*hi->major, hi->minor));
      }
      range.alternatives_.push_back(std::move(set));
      continue;
    }

    for (size_t i = 0; i < tokens.size(); ++i) {
      std::string token(tokens[i]);
      // npm allows a space between an operator and its version (">= 1.2.3").
      if (isOperatorOnly(token)) {
        if (i + 1 == tokens.size()) return bad("operator " + quote(token) + " has no version");
        token += tokens[++i];
      }
      std::string_view op;
      for (std::string_view candidate : kOperators) {
        if (std::string_view(token).substr(0, candidate.size()) == candidate) {
          op = candidate;
          break;
        }
      }
      std::string_view rest = std::string_view(token).substr(op.size());
      auto p_or = parsePartial(rest);
      if (!p_or) return bad(p_or.status().message());
      const Partial& p = *p_or;
      Version v = p.toVersion();
      uint64_t M = v.major, m = v.minor;

      if (op == "^") {
        if (p.any()) continue;
        set.push_back({C::Op::kGe, v});
        if (M > 0 || !p.minor) {
          below(set, afterLine(M, std::nullopt));
        } else if (m > 0 || !p.patch) {
          below(set, afterLine(0, m));
        } else {  // ^0.0.p: only p, so the bound is 0.0.(p+1) or, at the maximum, 0.1.0
          below(set, v.patch < UINT64_MAX ? makeVersion(0, 0, v.patch + 1, true) : afterLine(0, 0));
        }
      } else if (op == "~" || op == "~>") {
        if (p.any()) continue;
        set.push_back({C::Op::kGe, v});
        below(set, afterLine(M, p.minor));
      } else if (p.full()) {
        C::Op kind = op == ">"    ? C::Op::kGt
                     : op == ">=" ? C::Op::kGe
                     : op == "<"  ? C::Op::kLt
                     : op == "<=" ? C::Op::kLe
                                  : C::Op::kEq;
        set.push_back({kind, v});
      } else if (p.any()) {
        // "<*" and ">*" can match nothing; everything else with "*" matches any release.
        if (op == "<" || op == ">") set.push_back({C::Op::kLt, makeVersion(0, 0, 0, true)});
      } else if (op == ">") {
        auto after = afterLine(M, p.minor, false);
        // Nothing comes after the last line: match nothing, as "<0.0.0-0" does.
        set.push_back(after ? C{C::Op::kGe, *after} : C{C::Op::kLt, makeVersion(0, 0, 0, true)});
      } else if (op == ">=") {
        set.push_back({C::Op::kGe, v});
      } else if (op == "<") {
        set.push_back({C::Op::kLt, makeVersion(M, m, 0, true)});
      } else if (op == "<=") {
        below(set, afterLine(M, p.minor));
      } else {  // "1", "1.2", "=1.x": the whole line
        set.push_back({C::Op::kGe, v});
        below(set, afterLine(M, p.minor));
      }
    }
    range.alternatives_.push_back(std::move(set));
  }
  return range;
}

bool VersionRange::contains(const Version& v) const {
  for (const auto& set : alternatives_) {
    bool all = std::all_of(set.begin(), set.end(), [&](const Comparator& c) {
      int r = compare(v, c.version);
      switch (c.op) {
        case Comparator::Op::kEq: return r == 0;
        case Comparator::Op::kLt: return r < 0;
        case Comparator::Op::kLe: return r <= 0;
        case Comparator::Op::kGt: return r > 0;
        case Comparator::Op::kGe: return r >= 0;
      }
      return false;
    });
    if (!all) continue;
    if (v.prerelease.empty()) return true;
    // A prerelease only matches when the range opted into prereleases of that very
    // major.minor.patch, so "^1.2.0" never pulls in "1.3.0-alpha" by accident.
    for (const auto& c : set) {
      if (!c.version.prerelease.empty() && c.version.major == v.major &&
          c.version.minor == v.minor && c.version.patch == v.patch) {
        return true;
      }
    }
  }
  return false;
}

}  // namespace trellis::kernel::plugin
