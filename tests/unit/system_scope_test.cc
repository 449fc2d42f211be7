// System scope: what a manifest asks for, the operator's grant in trellis.yaml, and the
// grants the admin API persists.
#include <gmock/gmock.h>
#include <gtest/gtest.h>

#include <fstream>

#include "runtime/system_grants.h"
#include "support/test_support.h"
#include "trellis/kernel/config/config.h"
#include "trellis/kernel/plugin/manifest.h"

namespace trellis::kernel {
namespace {

using ::testing::HasSubstr;
namespace fs = std::filesystem;

std::string manifestWithScope(const std::string& scope_json) {
  return R"({"schema": 1, "id": "acme/audit", "version": "1.0.0",
             "abi": {"major": 1, "minor": 2},
             "entry": {"linux-x86_64": "libaudit.so"})" +
         (scope_json.empty() ? "" : ", \"scope\": " + scope_json) + "}";
}

TEST(SystemScopeTest, ManifestScopeDefaultsToTenant) {
  auto m = plugin::Manifest::parse(manifestWithScope(""));
  ASSERT_TRUE(m) << m.status().message();
  EXPECT_EQ(m->scope, plugin::PluginScope::Tenant);
}

TEST(SystemScopeTest, ManifestMayAskForSystemScope) {
  auto m = plugin::Manifest::parse(manifestWithScope("\"system\""));
  ASSERT_TRUE(m) << m.status().message();
  EXPECT_EQ(m->scope, plugin::PluginScope::System);
  EXPECT_EQ(plugin::pluginScopeName(m->scope), "system");
}

TEST(SystemScopeTest, ManifestRefusesUnknownOrMistypedScope) {
  auto unknown = plugin::Manifest::parse(manifestWithScope("\"root\""));
  ASSERT_FALSE(unknown);
  EXPECT_THAT(unknown.status().message(), HasSubstr("scope: unknown scope \"root\""));
  EXPECT_THAT(unknown.status().message(), HasSubstr("known: tenant, system"));
  auto mistyped = plugin::Manifest::parse(manifestWithScope("true"));
  ASSERT_FALSE(mistyped);
  EXPECT_THAT(mistyped.status().message(), HasSubstr("scope: expected a string"));
}

config::Config parseConfig(const std::string& yaml) {
  return config::Config::parse(yaml, "/etc/trellis");
}

std::string configError(const std::string& yaml) {
  try {
    parseConfig(yaml);
  } catch (const config::ConfigError& e) {
    return e.what();
  }
  return "";
}

TEST(SystemScopeTest, ConfigGrantIsAPlainBoolean) {
  auto cfg = parseConfig(
      "plugins:\n  enabled:\n    - id: acme/audit\n      system: true\n    - id: acme/hello\n");
  ASSERT_EQ(cfg.plugins.size(), 2u);
  EXPECT_TRUE(cfg.plugins[0].system);
  EXPECT_FALSE(cfg.plugins[1].system);
  // A quoted "true" or YAML 1.1's yes is a typo, not the operator's consent.
  for (std::string value : {"\"true\"", "yes", "1", "[true]"}) {
    EXPECT_THAT(
        configError("plugins:\n  enabled:\n    - id: acme/audit\n      system: " + value + "\n"),
        HasSubstr("plugins.enabled[0].system: expected true or false"))
        << value;
  }
}

TEST(SystemScopeTest, GrantsComeFromConfigAndPersistAdminApiGrants) {
  test::TempDir dir;
  const fs::path file = dir.path() / "system-grants.json";
  config::PluginEntry from_config;
  from_config.id = "acme/audit";
  from_config.system = true;
  {
    auto grants = runtime::SystemGrants::open(admin::SharedDocument::file(file), {from_config});
    ASSERT_TRUE(grants) << grants.status().message();
    EXPECT_TRUE((*grants)->isGranted("acme/audit"));
    EXPECT_FALSE((*grants)->isGranted("acme/finops"));
    auto granted = (*grants)->grant("acme/finops");
    ASSERT_TRUE(granted);
    EXPECT_TRUE(*granted);
    EXPECT_FALSE(*(*grants)->grant("acme/finops"));  // already: unchanged
    // Only trellis.yaml can take its own grant back.
    auto revoked = (*grants)->revoke("acme/audit");
    ASSERT_FALSE(revoked);
    EXPECT_THAT(revoked.status().message(), HasSubstr("trellis.yaml"));
    EXPECT_FALSE(*(*grants)->grant("acme/audit"));
  }
  {
    // A restart keeps the admin-API grant; dropping `system: true` drops the config one.
    auto grants = runtime::SystemGrants::open(admin::SharedDocument::file(file), {});
    ASSERT_TRUE(grants) << grants.status().message();
    EXPECT_TRUE((*grants)->isGranted("acme/finops"));
    EXPECT_FALSE((*grants)->isGranted("acme/audit"));
    EXPECT_TRUE(*(*grants)->revoke("acme/finops"));
  }
  auto grants = runtime::SystemGrants::open(admin::SharedDocument::file(file), {});
  ASSERT_TRUE(grants);
  EXPECT_FALSE((*grants)->isGranted("acme/finops"));
}

TEST(SystemScopeTest, DamagedGrantFileRefusesToStart) {
  test::TempDir dir;
  const fs::path file = dir.path() / "system-grants.json";
  for (std::string text : {"{\"system\": [\"../etc\"]}", "{\"system\": \"acme/x\"}", "not json",
                           "{\"system\": [], \"extra\": 1}"}) {
    std::ofstream(file) << text;
    auto grants = runtime::SystemGrants::open(admin::SharedDocument::file(file), {});
    ASSERT_FALSE(grants) << text;
    EXPECT_THAT(grants.status().message(), HasSubstr(file.string())) << text;
  }
}

}  // namespace
}  // namespace trellis::kernel
