// Tenant self-service (plugins/tenancy on ABI 1.1) and per-(plugin, tenant) capability
// grants, end to end on a real trellisd: what a tenant sees with its own key, and what the
// kernel refuses whatever the plugin asks.
#include <Poco/JSON/Array.h>
#include <Poco/JSON/Object.h>
#include <Poco/JSON/Parser.h>
#include <gmock/gmock.h>
#include <gtest/gtest.h>

#include <string>

#include "support/test_support.h"

namespace trellis::test {
namespace {

using ::testing::AllOf;
using ::testing::HasSubstr;
using ::testing::Not;

Poco::JSON::Object::Ptr json(const std::string& body) {
  return Poco::JSON::Parser().parse(body).extract<Poco::JSON::Object::Ptr>();
}

std::map<std::string, std::string> bearer(const std::string& key) {
  return {{"Authorization", "Bearer " + key}};
}

// Inserts `lines` (indented for a tenant entry) under the tenant "  - id: <tenant>".
void addToTenant(std::string& config, const std::string& tenant, const std::string& lines) {
  const std::string line = "  - id: " + tenant + "\n";
  config.insert(config.find(line) + line.size(), lines);
}

constexpr const char* kPlugins =
    "    - id: trellis/hello\n"
    "    - id: trellis/tenancy\n";

// acme is on a plan allowing 3 active keys living at most an hour; globex has no limits.
std::string selfServiceConfig() {
  std::string config = defaultTestConfig(kPlugins,
                                         "plans:\n"
                                         "  - name: team\n"
                                         "    quotas: {max_api_keys: 3, max_key_ttl_seconds: "
                                         "3600, requests_per_second: 1000}\n");
  addToTenant(config, "acme", "    plan: team\n");
  return config;
}

class TenancyTest : public ::testing::Test {
 protected:
  void startWith(const std::string& config) {
    server_ = std::make_unique<TrellisdProcess>(config);
    ASSERT_TRUE(server_->start()) << server_->log();
  }
  HttpReply call(const std::string& method, const std::string& target, const std::string& key) {
    return request(server_->port(), method, target, bearer(key));
  }
  std::string cli(const std::string& args, int* rc) { return runCli(*server_, args, rc); }
  HttpReply admin(const std::string& method, const std::string& path) {
    return request(server_->adminPort(), method, path,
                   {{"Authorization", "Bearer " + server_->adminToken()}});
  }
  std::unique_ptr<TrellisdProcess> server_;
};

TEST_F(TenancyTest, TenantSeesItsOwnPlanQuotasAndUsageOnly) {
  startWith(selfServiceConfig());
  ASSERT_EQ(call("GET", "/hello/ann", "acme-key").status, 200);

  auto self = call("GET", "/tenancy/v1/self", "acme-key");
  ASSERT_EQ(self.status, 200) << self.body;
  auto o = json(self.body);
  EXPECT_EQ(o->getValue<std::string>("id"), "acme");
  EXPECT_EQ(o->getValue<std::string>("plan"), "team");
  EXPECT_EQ(o->getObject("quotas")->getValue<int>("max_api_keys"), 3);
  EXPECT_EQ(o->getObject("quotas")->getValue<int>("max_key_ttl_seconds"), 3600);
  // The hello request and this one were admitted; hello stored a visit counter.
  EXPECT_GE(o->getObject("usage")->getValue<int>("admitted"), 2);
  EXPECT_GT(o->getObject("usage")->getValue<int>("storage_bytes"), 0);

  auto other = json(call("GET", "/tenancy/v1/self", "globex-key").body);
  EXPECT_EQ(other->getValue<std::string>("id"), "globex");
  EXPECT_EQ(other->getObject("usage")->getValue<int>("storage_bytes"), 0);
  EXPECT_EQ(other->getObject("quotas")->size(), 0u);  // unlimited: nothing to show
}

TEST_F(TenancyTest, KeysAreCreatedWithinThePlanAndShownOnce) {
  startWith(selfServiceConfig());
  // acme holds its configured key; the plan allows two more.
  std::vector<std::string> secrets;
  for (int i = 0; i < 2; ++i) {
    auto created = call("POST", "/tenancy/v1/keys", "acme-key");
    ASSERT_EQ(created.status, 201) << created.body;
    EXPECT_EQ(created.header("cache-control"), "no-store");
    auto k = json(created.body);
    // No ttl asked: the plan's longest lifetime.
    EXPECT_EQ(k->getValue<int64_t>("expires_at_ms") - k->getValue<int64_t>("created_at_ms"),
              3600 * 1000);
    secrets.push_back(k->getValue<std::string>("key"));
    EXPECT_EQ(call("GET", "/hello/bob", secrets.back()).status, 200);
  }
  auto full = call("POST", "/tenancy/v1/keys", "acme-key");
  EXPECT_EQ(full.status, 403);
  EXPECT_THAT(full.body, HasSubstr("max_api_keys"));

  auto too_long = call("POST", "/tenancy/v1/keys?ttl_seconds=7200", "acme-key");
  EXPECT_EQ(too_long.status, 400);
  EXPECT_THAT(too_long.body, HasSubstr("max_key_ttl_seconds 3600"));
  EXPECT_EQ(call("POST", "/tenancy/v1/keys?ttl_seconds=soon", "acme-key").status, 400);

  auto listed = call("GET", "/tenancy/v1/keys", "acme-key");
  ASSERT_EQ(listed.status, 200);
  EXPECT_EQ(json(listed.body)->getArray("keys")->size(), 3u);
  for (const auto& secret : secrets) {
    EXPECT_THAT(listed.body, Not(HasSubstr(secret)));
    EXPECT_THAT(server_->log(), Not(HasSubstr(secret)));  // secrets never reach a log
  }
}

TEST_F(TenancyTest, RotationSwapsTheCallingKeyAtomically) {
  startWith(selfServiceConfig());
  auto first = json(call("POST", "/tenancy/v1/keys", "acme-key").body);
  const std::string old_key = first->getValue<std::string>("key");
  ASSERT_EQ(call("POST", "/tenancy/v1/keys", "acme-key").status, 201);  // now at the limit

  // Rotating needs no free slot: the calling key goes as the new one comes.
  auto rotated = call("POST", "/tenancy/v1/keys/rotate?ttl_seconds=60", old_key);
  ASSERT_EQ(rotated.status, 201) << rotated.body;
  auto fresh = json(rotated.body);
  const std::string new_key = fresh->getValue<std::string>("key");
  EXPECT_EQ(fresh->getValue<int64_t>("expires_at_ms") - fresh->getValue<int64_t>("created_at_ms"),
            60 * 1000);
  EXPECT_EQ(call("GET", "/hello/ann", old_key).status, 401);
  EXPECT_EQ(call("GET", "/hello/ann", new_key).status, 200);
  EXPECT_EQ(call("POST", "/tenancy/v1/keys", new_key).status, 403);  // still 3 active
}

TEST_F(TenancyTest, TenantCannotTouchAnotherTenantsKeysOrLockItselfOut) {
  startWith(selfServiceConfig());
  auto globex_key = json(call("POST", "/tenancy/v1/keys", "globex-key").body);
  const std::string globex_id = globex_key->getValue<std::string>("id");

  // Another tenant's key id answers like one that does not exist, and stays valid.
  auto stolen = call("DELETE", "/tenancy/v1/keys/" + globex_id, "acme-key");
  EXPECT_EQ(stolen.status, 404);
  EXPECT_EQ(call("GET", "/hello/ann", globex_key->getValue<std::string>("key")).status, 200);
  EXPECT_THAT(call("GET", "/tenancy/v1/keys", "acme-key").body, Not(HasSubstr(globex_id)));

  // acme's only key cannot be revoked by acme itself.
  auto keys = json(call("GET", "/tenancy/v1/keys", "acme-key").body)->getArray("keys");
  ASSERT_EQ(keys->size(), 1u);
  std::string own_id = keys->getObject(0)->getValue<std::string>("id");
  auto last = call("DELETE", "/tenancy/v1/keys/" + own_id, "acme-key");
  EXPECT_EQ(last.status, 409);
  EXPECT_THAT(last.body, HasSubstr("last active key"));

  // With a second key it can.
  auto second = json(call("POST", "/tenancy/v1/keys", "acme-key").body);
  EXPECT_EQ(call("DELETE", "/tenancy/v1/keys/" + own_id, "acme-key").status, 204);
  EXPECT_EQ(call("GET", "/hello/ann", "acme-key").status, 401);
  EXPECT_EQ(call("GET", "/hello/ann", second->getValue<std::string>("key")).status, 200);
}

TEST_F(TenancyTest, GrantsNarrowWhatAPluginMayDoForOneTenant) {
  std::string config = selfServiceConfig();
  // acme lets hello record metrics but not store data, and tenancy only read.
  addToTenant(config, "acme",
              "    grants: {trellis/hello: [metrics, events.publish], "
              "trellis/tenancy: [tenant.read]}\n");
  startWith(config);

  auto denied = call("GET", "/hello/ann", "acme-key");
  EXPECT_EQ(denied.status, 403) << denied.body;
  EXPECT_EQ(call("GET", "/hello/ann", "globex-key").status, 200);  // globex grants all

  EXPECT_EQ(call("GET", "/tenancy/v1/self", "acme-key").status, 200);
  EXPECT_EQ(call("POST", "/tenancy/v1/keys", "acme-key").status, 403);
  EXPECT_EQ(call("POST", "/tenancy/v1/keys", "globex-key").status, 201);

  auto metrics = admin("GET", "/metrics");
  EXPECT_THAT(metrics.body,
              AllOf(HasSubstr("trellis_plugin_capability_denied_total{plugin=\"trellis/hello\","
                              "capability=\"kv\"} 1"),
                    HasSubstr("trellis_plugin_capability_denied_total{plugin=\"trellis/"
                              "tenancy\",capability=\"tenant.keys\"} 1")));
  EXPECT_THAT(server_->log(), HasSubstr("not granted to this plugin by tenant acme"));

  // Grants show in the admin API and change through the CLI, effective at once.
  auto shown = json(admin("GET", "/v1/tenants/acme").body);
  EXPECT_EQ(shown->getObject("grants")->getArray("trellis/hello")->size(), 2u);
  int rc = -1;
  std::string updated = cli("tenant update acme --grant trellis/hello=kv,metrics", &rc);
  ASSERT_EQ(rc, 0) << updated;
  EXPECT_THAT(updated, HasSubstr("grants trellis/hello=kv,metrics"));
  EXPECT_EQ(call("GET", "/hello/ann", "acme-key").status, 200);
  // --grant replaces all the tenant's grants: tenancy is unrestricted again...
  EXPECT_EQ(call("GET", "/tenancy/v1/self", "acme-key").status, 200);
  // ...until it is given nothing.
  cli("tenant update acme --grant trellis/tenancy=", &rc);
  EXPECT_EQ(rc, 0);
  EXPECT_EQ(call("GET", "/tenancy/v1/self", "acme-key").status, 403);

  std::string bad = cli("tenant update acme --grant trellis/hello=root", &rc);
  EXPECT_EQ(rc, 1);
  EXPECT_THAT(bad, HasSubstr("unknown capability \"root\""));
  cli("tenant update acme --all-capabilities", &rc);
  EXPECT_EQ(rc, 0);
  EXPECT_EQ(call("GET", "/tenancy/v1/self", "acme-key").status, 200);
}

TEST_F(TenancyTest, GrantsForAPluginTheTenantDidNotEnableAreRefusedAtLoad) {
  std::string config = defaultTestConfig(kPlugins);
  addToTenant(config, "acme", "    grants: {acme/other: [kv]}\n");
  TrellisdProcess bad(config);
  EXPECT_FALSE(bad.start());
  EXPECT_THAT(bad.log(), HasSubstr("tenants[0].grants.acme/other: plugin \"acme/other\" is not "
                                   "in this tenant's plugins"));

  std::string unknown = defaultTestConfig(kPlugins);
  addToTenant(unknown, "acme", "    grants: {trellis/hello: [root]}\n");
  TrellisdProcess bad2(unknown);
  EXPECT_FALSE(bad2.start());
  EXPECT_THAT(bad2.log(), HasSubstr("unknown capability \"root\""));
}

TEST_F(TenancyTest, PluginNotEnabledByTheTenantHasNoRoutes) {
  std::string config = defaultTestConfig(kPlugins);
  // globex enables only hello.
  size_t at = config.find("  - id: globex\n    plugins: [");
  ASSERT_NE(at, std::string::npos);
  size_t end = config.find(']', at);
  config.replace(at, end - at + 1, "  - id: globex\n    plugins: [trellis/hello]");
  startWith(config);
  EXPECT_EQ(call("GET", "/tenancy/v1/self", "globex-key").status, 404);
  EXPECT_EQ(call("GET", "/tenancy/v1/self", "acme-key").status, 200);
}

}  // namespace
}  // namespace trellis::test
