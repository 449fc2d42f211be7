// Semantic versions (semver.org 2.0.0) and npm-style ranges.
//
//   auto v = Version::parse("1.4.2-rc.1");
//   auto r = VersionRange::parse("^1.2.0 || >=3.0.0 <4");
//   r->contains(*v);  // false: prereleases match only ranges that name the same x.y.z
//
// Range grammar: a set of comparator lists joined by "||"; a list is comparators
// separated by spaces; a comparator is one of  =V  >V  >=V  <V  <=V  ^V  ~V  V  1.x  1.*
// *  and  "A - B"  hyphen ranges. Partial versions ("1", "1.2") are allowed in ranges.
#pragma once

#include <cstdint>
#include <string>
#include <string_view>
#include <vector>

#include "trellis/status.hpp"

namespace trellis::kernel::plugin {

struct Version {
  uint64_t major = 0, minor = 0, patch = 0;
  std::vector<std::string> prerelease;  // dot-separated identifiers
  std::string build;                    // ignored for ordering

  // Strict: "MAJOR.MINOR.PATCH[-pre][+build]", no leading 'v', no leading zeros.
  static Result<Version> parse(std::string_view text);
  std::string toString() const;

  // Precedence per semver.org §11 (build metadata ignored).
  friend int compare(const Version& a, const Version& b);
  friend bool operator==(const Version& a, const Version& b) { return compare(a, b) == 0; }
  friend bool operator<(const Version& a, const Version& b) { return compare(a, b) < 0; }
  friend bool operator<=(const Version& a, const Version& b) { return compare(a, b) <= 0; }
  friend bool operator>(const Version& a, const Version& b) { return compare(a, b) > 0; }
  friend bool operator>=(const Version& a, const Version& b) { return compare(a, b) >= 0; }
};

class VersionRange {
 public:
  // INVALID with a message quoting the offending part.
  static Result<VersionRange> parse(std::string_view text);
  bool contains(const Version& v) const;
  const std::string& text() const { return text_; }

 private:
  struct Comparator {
    enum class Op { kEq, kLt, kLe, kGt, kGe } op;
    Version version;
  };
  std::string text_;
  std::vector<std::vector<Comparator>> alternatives_;  // OR of ANDs
};

}  // namespace trellis::kernel::plugin
