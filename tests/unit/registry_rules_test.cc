// The registry's naming and versioning rules (marketplace/registry/src/names.h, semver.h):
// which names count as confusable, and that its semver parser agrees with the kernel's.
#include <gmock/gmock.h>
#include <gtest/gtest.h>

#include <string>
#include <vector>

#include "names.h"
#include "semver.h"
#include "trellis/kernel/plugin/semver.h"

namespace trellis::registry {
namespace {

TEST(RegistryNamesTest, LookalikeSpellingsShareASkeleton) {
  EXPECT_EQ(skeleton("acme/he11o"), skeleton("acme/hello"));
  EXPECT_EQ(skeleton("acme/g0-tools"), skeleton("acme/gotools"));
  EXPECT_EQ(skeleton("acrne/x"), skeleton("acme/x"));
  EXPECT_EQ(skeleton("acme/vvidget"), skeleton("acme/widget"));
  EXPECT_NE(skeleton("acme/hello"), skeleton("acme/help"));
}

TEST(RegistryNamesTest, EditDistanceCountsOneSwapAsOneEdit) {
  EXPECT_EQ(editDistance("acme/hello", "acme/hello", 1), 0u);
  EXPECT_EQ(editDistance("acme/hello", "acme/hllo", 1), 1u);
  EXPECT_EQ(editDistance("acme/hello", "acme/hlelo", 1), 1u);
  EXPECT_EQ(editDistance("acme/hello", "acme/jello", 1), 1u);
  EXPECT_EQ(editDistance("acme/hello", "acme/yellow", 1), 2u);  // capped at cap + 1
  EXPECT_EQ(editDistance("a", "abcdef", 1), 2u);
}

TEST(RegistryNamesTest, NewIdsTooCloseToExistingOnesAreNamed) {
  const std::vector<std::string> existing = {"acme/hello", "globex/db"};
  EXPECT_EQ(confusableId("acme/he11o", existing), "acme/hello");    // same skeleton
  EXPECT_EQ(confusableId("acme2/hello", existing), "acme/hello");   // one edit, other ns
  EXPECT_EQ(confusableId("globex/hello", existing), std::nullopt);  // a namespace of its own
  EXPECT_EQ(confusableId("acme/hellos", existing), std::nullopt);   // own namespace
  EXPECT_EQ(confusableId("acme/hello", existing), std::nullopt);    // the id itself
  EXPECT_EQ(confusableNamespace("acrne", {"acme"}), "acme");
  EXPECT_EQ(confusableNamespace("acme2", {"acme"}), std::nullopt);
}

// The registry may not link the kernel, so it has its own parser; it must agree with the
// kernel's on what is a version and on ordering, or the registry would accept versions
// the host refuses.
TEST(RegistrySemverTest, AgreesWithTheKernelsParserAndOrder) {
  const std::vector<std::string> inputs = {"1.0.0",
                                           "0.0.1",
                                           "10.20.30",
                                           "1.0.0-alpha",
                                           "1.0.0-alpha.1",
                                           "1.0.0-0.3.7",
                                           "1.0.0-x.7.z.92",
                                           "1.0.0+build.5",
                                           "1.0.0-rc.1+b",
                                           "1.0.0-beta.11",
                                           "1.0.0-beta.2",
                                           "1.0",
                                           "1",
                                           "v1.0.0",
                                           "01.0.0",
                                           "1.0.0-01",
                                           "1.0.0-",
                                           "1.0.0+",
                                           "1.0.0-a..b",
                                           "1.0.0-a_b",
                                           "1.2.3.4",
                                           "",
                                           " 1.0.0",
                                           "99999999999999999999.0.0"};
  std::vector<std::pair<Semver, kernel::plugin::Version>> ok;
  for (const auto& text : inputs) {
    auto mine = Semver::parse(text);
    auto kernels = kernel::plugin::Version::parse(text);
    EXPECT_EQ(mine.isOk(), kernels.isOk()) << "\"" << text << "\"";
    if (mine && kernels) ok.emplace_back(*mine, *kernels);
  }
  for (const auto& [a, ka] : ok) {
    for (const auto& [b, kb] : ok) {
      int mine = compareSemver(a, b);
      int kernels = compare(ka, kb);
      EXPECT_EQ((mine > 0) - (mine < 0), (kernels > 0) - (kernels < 0))
          << ka.toString() << " vs " << kb.toString();
    }
  }
  EXPECT_THAT(Semver::parse("1.0").status().message(), ::testing::HasSubstr("1.0"));
}

}  // namespace
}  // namespace trellis::registry
