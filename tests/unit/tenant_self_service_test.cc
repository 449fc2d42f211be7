// The registry behind tenant self-service and capability grants: grants per (tenant,
// plugin), key limits checked in the insert's transaction, atomic rotation, and an upgrade
// of a system database written before these existed.
#include <gtest/gtest.h>
#include <soci/soci.h>
#include <soci/sqlite3/soci-sqlite3.h>

#include <filesystem>

#include "support/test_support.h"
#include "trellis/tenants/registry.h"

namespace trellis::tenants {
namespace {

using test::TempDir;
using Outcome = Resolution::Outcome;

class SelfServiceRegistryTest : public ::testing::Test {
 protected:
  void SetUp() override { reopen(); }
  void reopen() {
    reg_.reset();
    auto opened = TenantRegistry::openSqlite(db_path_);
    ASSERT_TRUE(opened) << opened.status().toString();
    reg_ = std::move(*opened);
  }
  TenantRecord tenantWith(std::string id, std::set<std::string> plugins) {
    TenantRecord t;
    t.id = std::move(id);
    t.plugins = std::move(plugins);
    return t;
  }

  TempDir dir_;
  std::filesystem::path db_path_ = dir_.path() / "system.db";
  std::unique_ptr<TenantRegistry> reg_;
};

TEST_F(SelfServiceRegistryTest, GrantsPersistAndReachTheTenantView) {
  TenantRecord t = tenantWith("acme", {"acme/a", "acme/b"});
  t.grants["acme/a"] = {"kv", "metrics"};
  t.grants["acme/b"] = {};  // nothing at all
  ASSERT_TRUE(reg_->create(t));
  reopen();
  auto stored = reg_->get("acme");
  ASSERT_TRUE(stored);
  EXPECT_EQ(stored->grants, t.grants);
  auto view = reg_->view("acme");
  ASSERT_TRUE(view);
  EXPECT_TRUE(view->grantsCapability("acme/a", "kv"));
  EXPECT_FALSE(view->grantsCapability("acme/a", "events.publish"));
  EXPECT_FALSE(view->grantsCapability("acme/b", "kv"));
  EXPECT_TRUE(view->grantsCapability("acme/c", "kv"));  // not listed: what it requests

  stored->grants.erase("acme/a");
  ASSERT_TRUE(reg_->update(*stored));
  EXPECT_TRUE(reg_->view("acme")->grantsCapability("acme/a", "events.publish"));
}

TEST_F(SelfServiceRegistryTest, GrantsAreValidatedWithTheFieldNamed) {
  TenantRecord t = tenantWith("acme", {"acme/a"});
  t.grants["acme/other"] = {"kv"};
  auto r = reg_->create(t);
  ASSERT_FALSE(r);
  EXPECT_EQ(r.status().message(),
            "tenant \"acme\": grants for plugin \"acme/other\", which the tenant has not enabled");
  t.grants = {{"acme/a", {"KV;drop"}}};
  r = reg_->create(t);
  ASSERT_FALSE(r);
  EXPECT_EQ(r.status().message(),
            "tenant \"acme\": capability \"KV;drop\" for plugin \"acme/a\" is invalid: expected "
            "[a-z][a-z.]{0,31}[:<argument>]");
  EXPECT_TRUE(reg_->list().empty());
}

TEST_F(SelfServiceRegistryTest, ChangedGrantsAreReportedAsDrift) {
  TenantRecord declared = tenantWith("acme", {"acme/a"});
  declared.grants["acme/a"] = {"kv"};
  ASSERT_TRUE(reg_->applyDeclared({declared}));
  auto changed = *reg_->get("acme");
  changed.grants["acme/a"] = {"kv", "metrics"};
  ASSERT_TRUE(reg_->update(changed));
  auto drift = reg_->applyDeclared({declared});
  ASSERT_TRUE(drift);
  ASSERT_EQ(drift->size(), 1u);
  EXPECT_EQ((*drift)[0].detail,
            "capability grants are acme/a=kv,metrics in the registry but acme/a=kv in "
            "trellis.yaml");
}

TEST_F(SelfServiceRegistryTest, KeyLimitCountsOnlyActiveKeysAndCreatesNothingPastIt) {
  ASSERT_TRUE(reg_->create(tenantWith("acme", {})));
  auto first = reg_->createKey("acme", std::nullopt, 2);
  ASSERT_TRUE(first);
  ASSERT_TRUE(reg_->createKey("acme", std::nullopt, 2));
  auto third = reg_->createKey("acme", std::nullopt, 2);
  ASSERT_FALSE(third);
  EXPECT_EQ(third.status().code(), StatusCode::kQuotaExceeded);
  EXPECT_NE(third.status().message().find("max_api_keys"), std::string::npos);
  EXPECT_EQ(reg_->listKeys("acme").size(), 2u);

  ASSERT_TRUE(reg_->revokeKey(first->info.id));
  EXPECT_TRUE(reg_->createKey("acme", std::nullopt, 2));  // a revoked key frees its slot
  EXPECT_TRUE(reg_->createKey("acme", std::nullopt));     // operators are not limited
}

TEST_F(SelfServiceRegistryTest, RotationSwapsKeysTogetherAndOnlyForTheOwner) {
  ASSERT_TRUE(reg_->create(tenantWith("acme", {})));
  ASSERT_TRUE(reg_->create(tenantWith("globex", {})));
  auto old = *reg_->createKey("acme", std::nullopt);
  auto theirs = *reg_->createKey("globex", std::nullopt);

  auto stolen = reg_->rotateKey("acme", theirs.info.id, std::nullopt);
  ASSERT_FALSE(stolen);
  EXPECT_EQ(stolen.status().code(), StatusCode::kNotFound);
  EXPECT_EQ(reg_->resolve(theirs.secret).outcome, Outcome::kOk);

  auto fresh = reg_->rotateKey("acme", old.info.id, 60);
  ASSERT_TRUE(fresh) << fresh.status().toString();
  EXPECT_EQ(reg_->resolve(old.secret).outcome, Outcome::kRevokedKey);
  auto now = reg_->resolve(fresh->secret);
  EXPECT_EQ(now.outcome, Outcome::kOk);
  EXPECT_EQ(now.key_id, fresh->info.id);
  ASSERT_TRUE(fresh->info.expires_at_ms);
  EXPECT_EQ(*fresh->info.expires_at_ms - fresh->info.created_at_ms, 60'000);

  // A revoked key cannot be rotated again: it is no longer the tenant's active key.
  auto again = reg_->rotateKey("acme", old.info.id, std::nullopt);
  EXPECT_EQ(again.status().code(), StatusCode::kNotFound);
  EXPECT_EQ(reg_->listKeys("acme").size(), 2u);
}

// A system.db as the first release wrote it (schema version 1) upgrades in place, keeping
// tenants, plugins and keys; new columns start unset.
TEST_F(SelfServiceRegistryTest, UpgradesASchemaVersionOneDatabase) {
  reg_.reset();
  std::filesystem::path old_db = dir_.path() / "v1.db";
  {
    soci::session sql(soci::sqlite3, "db=" + old_db.string());
    for (const char* statement : {
             "CREATE TABLE plans(name TEXT PRIMARY KEY, requests_per_second BIGINT, burst "
             "BIGINT, max_concurrent BIGINT, max_body_bytes BIGINT, max_storage_bytes BIGINT, "
             "max_host_calls BIGINT)",
             "INSERT INTO plans(name) VALUES('default')",
             "CREATE TABLE tenants(id TEXT PRIMARY KEY, plan TEXT NOT NULL REFERENCES "
             "plans(name), status TEXT NOT NULL, source TEXT NOT NULL, created_at_ms BIGINT NOT "
             "NULL, requests_per_second BIGINT, burst BIGINT, max_concurrent BIGINT, "
             "max_body_bytes BIGINT, max_storage_bytes BIGINT, max_host_calls BIGINT)",
             "CREATE TABLE tenant_labels(tenant TEXT NOT NULL REFERENCES tenants(id), name TEXT "
             "NOT NULL, value TEXT NOT NULL, PRIMARY KEY(tenant, name))",
             "CREATE TABLE tenant_plugins(tenant TEXT NOT NULL REFERENCES tenants(id), plugin "
             "TEXT NOT NULL, PRIMARY KEY(tenant, plugin))",
             "CREATE TABLE api_keys(id TEXT PRIMARY KEY, tenant TEXT NOT NULL REFERENCES "
             "tenants(id), sha256 TEXT NOT NULL UNIQUE, created_at_ms BIGINT NOT NULL, "
             "expires_at_ms BIGINT, revoked_at_ms BIGINT)",
             "CREATE INDEX api_keys_by_tenant ON api_keys(tenant)",
             "CREATE TABLE schema_version(version INTEGER NOT NULL)",
             "INSERT INTO schema_version(version) VALUES(1)",
             "INSERT INTO tenants VALUES('acme', 'default', 'active', 'api', 1, 5, NULL, NULL, "
             "NULL, NULL, NULL)",
             "INSERT INTO tenant_plugins VALUES('acme', 'acme/a')",
         }) {
      sql << statement;
    }
  }
  auto opened = TenantRegistry::openSqlite(old_db);
  ASSERT_TRUE(opened) << opened.status().toString();
  auto acme = (*opened)->get("acme");
  ASSERT_TRUE(acme);
  EXPECT_EQ(acme->plugins, std::set<std::string>{"acme/a"});
  EXPECT_TRUE(acme->grants.empty());
  EXPECT_EQ(acme->overrides.requests_per_second, 5u);
  EXPECT_FALSE(acme->overrides.max_api_keys);
  acme->grants["acme/a"] = {"kv"};
  acme->overrides.max_api_keys = 3;
  ASSERT_TRUE((*opened)->update(*acme));
  EXPECT_EQ((*opened)->get("acme")->overrides.max_api_keys, 3u);
}

}  // namespace
}  // namespace trellis::tenants
