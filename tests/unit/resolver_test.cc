#include "trellis/kernel/plugin/resolver.h"

#include <gmock/gmock.h>
#include <gtest/gtest.h>

#include <map>
#include <string>
#include <utility>
#include <vector>

namespace trellis::kernel::plugin {
namespace {

using ::testing::ElementsAre;
using ::testing::IsEmpty;

// Candidates built from (id, version, {dep id: range}) triples.
struct Spec {
  std::string id;
  std::string version;
  std::vector<std::pair<std::string, std::string>> deps;
};

std::map<std::string, Manifest> candidates(const std::vector<Spec>& specs) {
  std::map<std::string, Manifest> out;
  for (const auto& spec : specs) {
    Manifest m;
    m.id = spec.id;
    m.version = *Version::parse(spec.version);
    for (const auto& [dep, range] : spec.deps)
      m.dependencies.push_back({dep, *VersionRange::parse(range)});
    out.emplace(spec.id, std::move(m));
  }
  return out;
}

TEST(ResolverTest, EmptyInputGivesEmptyPlan) {
  StartPlan plan = resolveStartOrder({});
  EXPECT_THAT(plan.order, IsEmpty());
  EXPECT_THAT(plan.refused, IsEmpty());
}

TEST(ResolverTest, DependenciesStartFirst) {
  StartPlan plan = resolveStartOrder(candidates({
      {"acme/app", "1.0.0", {{"acme/db", "^1.0.0"}, {"acme/cache", "^2.0.0"}}},
      {"acme/db", "1.4.0", {{"acme/storage", "*"}}},
      {"acme/cache", "2.1.0", {}},
      {"acme/storage", "0.3.0", {}},
  }));
  EXPECT_THAT(plan.refused, IsEmpty());
  EXPECT_THAT(plan.order, ElementsAre("acme/cache", "acme/storage", "acme/db", "acme/app"));
}

TEST(ResolverTest, OrderIsDeterministicAmongReadyPlugins) {
  StartPlan plan = resolveStartOrder(candidates({
      {"z/last", "1.0.0", {}},
      {"a/first", "1.0.0", {}},
      {"m/middle", "1.0.0", {{"z/last", "1"}}},
      {"b/second", "1.0.0", {}},
  }));
  EXPECT_THAT(plan.order, ElementsAre("a/first", "b/second", "z/last", "m/middle"));
}

TEST(ResolverTest, DiamondStartsSharedDependencyOnce) {
  StartPlan plan = resolveStartOrder(candidates({
      {"d/top", "1.0.0", {{"d/left", "1"}, {"d/right", "1"}}},
      {"d/left", "1.0.0", {{"d/base", "1"}}},
      {"d/right", "1.0.0", {{"d/base", "1"}}},
      {"d/base", "1.0.0", {}},
  }));
  EXPECT_THAT(plan.refused, IsEmpty());
  EXPECT_THAT(plan.order, ElementsAre("d/base", "d/left", "d/right", "d/top"));
}

TEST(ResolverTest, CycleNamesThePath) {
  StartPlan plan = resolveStartOrder(candidates({
      {"a/x", "1.0.0", {{"a/y", "^1.0.0"}}},
      {"a/y", "1.0.0", {{"a/x", "^1.0.0"}}},
      {"a/free", "1.0.0", {}},
  }));
  EXPECT_THAT(plan.order, ElementsAre("a/free"));
  ASSERT_EQ(plan.refused.size(), 2u);
  EXPECT_EQ(plan.refused.at("a/x"), "dependency cycle: a/x -> a/y -> a/x");
  EXPECT_EQ(plan.refused.at("a/y"), "dependency cycle: a/y -> a/x -> a/y");
}

TEST(ResolverTest, LongCycleAndItsDependents) {
  StartPlan plan = resolveStartOrder(candidates({
      {"c/one", "1.0.0", {{"c/two", "1"}}},
      {"c/two", "1.0.0", {{"c/three", "1"}}},
      {"c/three", "1.0.0", {{"c/one", "1"}}},
      {"c/user", "1.0.0", {{"c/two", "1"}}},
  }));
  EXPECT_THAT(plan.order, IsEmpty());
  EXPECT_EQ(plan.refused.at("c/one"), "dependency cycle: c/one -> c/two -> c/three -> c/one");
  EXPECT_EQ(plan.refused.at("c/three"), "dependency cycle: c/three -> c/one -> c/two -> c/three");
  EXPECT_EQ(plan.refused.at("c/user"),
            "dependency c/two failed: dependency cycle: c/two -> c/three -> c/one -> c/two");
}

TEST(ResolverTest, SelfDependencyIsACycle) {
  StartPlan plan = resolveStartOrder(candidates({{"s/self", "1.0.0", {{"s/self", "*"}}}}));
  EXPECT_EQ(plan.refused.at("s/self"), "dependency cycle: s/self -> s/self");
}

TEST(ResolverTest, UnsatisfiedRangeNamesInstalledVersion) {
  StartPlan plan = resolveStartOrder(candidates({
      {"acme/app", "1.0.0", {{"acme/db", "^2.0.0"}}},
      {"acme/db", "1.4.0", {}},
  }));
  EXPECT_THAT(plan.order, ElementsAre("acme/db"));
  EXPECT_EQ(plan.refused.at("acme/app"), "requires acme/db ^2.0.0 but 1.4.0 is installed");
}

TEST(ResolverTest, PrereleaseDoesNotSatisfyPlainRange) {
  StartPlan plan = resolveStartOrder(candidates({
      {"acme/app", "1.0.0", {{"acme/db", "^2.0.0"}}},
      {"acme/db", "2.1.0-rc.1", {}},
  }));
  EXPECT_EQ(plan.refused.at("acme/app"), "requires acme/db ^2.0.0 but 2.1.0-rc.1 is installed");
}

TEST(ResolverTest, MissingDependency) {
  StartPlan plan = resolveStartOrder(candidates({
      {"acme/app", "1.0.0", {{"acme/db", "^1.0.0"}}},
  }));
  EXPECT_THAT(plan.order, IsEmpty());
  EXPECT_EQ(plan.refused.at("acme/app"), "requires acme/db ^1.0.0 which is not enabled");
}

TEST(ResolverTest, RefusalIsTransitive) {
  StartPlan plan = resolveStartOrder(candidates({
      {"t/top", "1.0.0", {{"t/mid", "^1.0.0"}}},
      {"t/mid", "1.0.0", {{"t/low", "^1.0.0"}}},
      {"t/low", "1.0.0", {{"t/gone", "^1.0.0"}}},
  }));
  EXPECT_THAT(plan.order, IsEmpty());
  EXPECT_EQ(plan.refused.at("t/low"), "requires t/gone ^1.0.0 which is not enabled");
  EXPECT_EQ(plan.refused.at("t/mid"),
            "dependency t/low failed: requires t/gone ^1.0.0 which is not enabled");
  EXPECT_EQ(plan.refused.at("t/top"),
            "dependency t/mid failed: dependency t/low failed: requires t/gone ^1.0.0 which is "
            "not enabled");
}

TEST(ResolverTest, IndependentPluginsAreUnaffected) {
  StartPlan plan = resolveStartOrder(candidates({
      {"bad/app", "1.0.0", {{"bad/gone", "1"}}},
      {"bad/user", "1.0.0", {{"bad/app", "1"}}},
      {"ok/base", "1.0.0", {}},
      {"ok/app", "2.0.0", {{"ok/base", ">=1.0.0 <2"}}},
      {"ok/alone", "0.1.0", {}},
  }));
  EXPECT_THAT(plan.order, ElementsAre("ok/alone", "ok/base", "ok/app"));
  EXPECT_EQ(plan.refused.size(), 2u);
  EXPECT_TRUE(plan.refused.count("bad/app"));
  EXPECT_TRUE(plan.refused.count("bad/user"));
}

TEST(ResolverTest, FirstFailingDependencyIsNamed) {
  StartPlan plan = resolveStartOrder(candidates({
      {"f/app", "1.0.0", {{"f/a", "1"}, {"f/b", "1"}}},
      {"f/a", "1.0.0", {{"f/none", "1"}}},
      {"f/b", "1.0.0", {{"f/none", "1"}}},
  }));
  EXPECT_EQ(plan.refused.at("f/app"),
            "dependency f/a failed: requires f/none 1 which is not enabled");
}

// Inter-plugin services: (id, provides {name: version}, requires {name: range}).
Manifest withServices(std::string id, std::vector<std::pair<std::string, std::string>> provides,
                      std::vector<std::pair<std::string, std::string>> needs,
                      bool optional = false) {
  Manifest m;
  m.id = std::move(id);
  m.version = *Version::parse("1.0.0");
  for (const auto& [name, version] : provides)
    m.provides.push_back({name, *Version::parse(version)});
  for (const auto& [name, range] : needs) {
    m.required_services.push_back({name, *VersionRange::parse(range), optional});
  }
  return m;
}

TEST(ResolverTest, ServiceProvidersStartBeforeConsumers) {
  std::map<std::string, Manifest> c;
  c.emplace("a/backup", withServices("a/backup", {}, {{"secrets", "^1"}, {"blobstore", "^2.1"}}));
  c.emplace("z/vault", withServices("z/vault", {{"secrets", "1.4.0"}}, {}));
  c.emplace("b/s3", withServices("b/s3", {{"blobstore", "2.3.0"}}, {{"secrets", "^1.2"}}));
  StartPlan plan = resolveStartOrder(c);
  EXPECT_THAT(plan.refused, IsEmpty());
  EXPECT_THAT(plan.order, ElementsAre("z/vault", "b/s3", "a/backup"));
}

TEST(ResolverTest, MissingOrOutOfRangeServiceIsNamed) {
  std::map<std::string, Manifest> c;
  c.emplace("a/app", withServices("a/app", {}, {{"secrets", "^2"}}));
  c.emplace("a/other", withServices("a/other", {}, {{"kms", "~1.2"}}));
  c.emplace("a/above", withServices("a/above", {{"reports", "1.0.0"}}, {}));
  c.emplace("a/top", withServices("a/top", {}, {{"reports", "^1"}}));
  c.at("a/above").required_services.push_back({"kms", *VersionRange::parse("~1.2"), false});
  c.emplace("z/vault", withServices("z/vault", {{"secrets", "1.4.0"}}, {}));
  StartPlan plan = resolveStartOrder(c);
  EXPECT_EQ(plan.refused.at("a/app"), "requires service secrets ^2 but z/vault provides 1.4.0");
  EXPECT_EQ(plan.refused.at("a/other"),
            "requires service kms ~1.2 which no enabled plugin provides");
  EXPECT_EQ(plan.refused.at("a/top"),
            "service provider a/above failed: requires service kms ~1.2 which no enabled "
            "plugin provides");
  EXPECT_THAT(plan.order, ElementsAre("z/vault"));
}

TEST(ResolverTest, OptionalServiceOnlyOrders) {
  std::map<std::string, Manifest> c;
  c.emplace("a/app", withServices("a/app", {}, {{"metrics", "^1"}, {"absent", "^1"}}, true));
  c.emplace("z/prom", withServices("z/prom", {{"metrics", "1.0.0"}}, {}));
  StartPlan plan = resolveStartOrder(c);
  EXPECT_THAT(plan.refused, IsEmpty());
  EXPECT_THAT(plan.order, ElementsAre("z/prom", "a/app"));
}

TEST(ResolverTest, SecondProviderOfAServiceIsRefused) {
  std::map<std::string, Manifest> c;
  c.emplace("a/vault", withServices("a/vault", {{"secrets", "1.0.0"}}, {}));
  c.emplace("b/vault", withServices("b/vault", {{"secrets", "2.0.0"}}, {}));
  StartPlan plan = resolveStartOrder(c);
  EXPECT_EQ(plan.refused.at("b/vault"), "provides service secrets, which a/vault already provides");
  EXPECT_THAT(plan.order, ElementsAre("a/vault"));
}

}  // namespace
}  // namespace trellis::kernel::plugin
