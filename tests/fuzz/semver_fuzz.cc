// Versions and version ranges (kernel/src/plugin/semver.cc), as manifests, the resolver and
// `trellis plugin install acme/x@^1.2` read them. The input is up to three lines A, B, C.
// Properties:
//   - a version prints back to the very text it was parsed from (the parser is strict), and
//     parses again to an equal version;
//   - ordering is antisymmetric and transitive over A, B, C;
//   - "^V", "~V", "=V", "V", ">=V" and "<=V" contain V; "<V" and ">V" do not;
//   - "A || B" contains C exactly when A or B does.
#include <cstddef>
#include <cstdint>
#include <optional>
#include <string>
#include <string_view>
#include <vector>

#include "fuzz_check.h"
#include "trellis/kernel/plugin/semver.h"

using trellis::kernel::plugin::Version;
using trellis::kernel::plugin::VersionRange;

namespace {

std::optional<Version> version(std::string_view text) {
  auto v = Version::parse(text);
  if (!v) return std::nullopt;
  std::string printed = v->toString();
  FUZZ_CHECK(printed == text,
             "version printed as " + printed + ", parsed from " + std::string(text));
  auto again = Version::parse(printed);
  FUZZ_CHECK(again && compare(*again, *v) == 0 && again->build == v->build,
             "printed version does not parse back equal: " + printed);
  return *v;
}

int sign(int c) {
  return (c > 0) - (c < 0);
}

void checkOrder(const Version& a, const Version& b, const Version& c) {
  FUZZ_CHECK(sign(compare(a, b)) == -sign(compare(b, a)),
             "compare is not antisymmetric: " + a.toString() + " vs " + b.toString());
  if (compare(a, b) <= 0 && compare(b, c) <= 0) {
    FUZZ_CHECK(compare(a, c) <= 0, "compare is not transitive: " + a.toString() +
                                       " <= " + b.toString() + " <= " + c.toString());
  }
}

void checkOwnVersion(const Version& v) {
  const std::string text = v.toString();
  for (std::string_view op : {"^", "~", "=", "", ">=", "<="}) {
    auto r = VersionRange::parse(std::string(op) + text);
    FUZZ_CHECK(r, "range " + std::string(op) + text + " refused: " + r.status().message());
    FUZZ_CHECK(r->contains(v), "range " + std::string(op) + text + " does not contain " + text);
  }
  for (std::string_view op : {"<", ">"}) {
    auto r = VersionRange::parse(std::string(op) + text);
    FUZZ_CHECK(r && !r->contains(v), "range " + std::string(op) + text + " contains " + text);
  }
}

}  // namespace

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  std::string_view input(reinterpret_cast<const char*>(data), size);
  std::vector<std::string_view> lines;
  while (lines.size() < 2) {
    size_t nl = input.find('\n');
    if (nl == std::string_view::npos) break;
    lines.push_back(input.substr(0, nl));
    input.remove_prefix(nl + 1);
  }
  lines.push_back(input);
  while (lines.size() < 3) lines.push_back({});

  std::optional<Version> v[3];
  for (int i = 0; i < 3; ++i) v[i] = version(lines[i]);
  if (v[0] && v[1] && v[2]) checkOrder(*v[0], *v[1], *v[2]);
  if (v[0]) checkOwnVersion(*v[0]);

  auto a = VersionRange::parse(lines[0]);
  if (a) {
    auto again = VersionRange::parse(a->text());
    FUZZ_CHECK(again && again->text() == a->text(), "range text does not parse back");
    if (v[2]) FUZZ_CHECK(again->contains(*v[2]) == a->contains(*v[2]), "reparsed range differs");
  }
  auto b = VersionRange::parse(lines[1]);
  if (a && b && v[2]) {
    std::string either = std::string(lines[0]) + " || " + std::string(lines[1]);
    auto both = VersionRange::parse(either);
    // Refused only when longer than a range may be.
    FUZZ_CHECK(both || either.size() > 1024,
               "\"" + either + "\" refused: " + both.status().message());
    if (both) {
      FUZZ_CHECK(both->contains(*v[2]) == (a->contains(*v[2]) || b->contains(*v[2])),
                 "\"" + either + "\" disagrees with its alternatives on " + v[2]->toString());
    }
  }
  return 0;
}
