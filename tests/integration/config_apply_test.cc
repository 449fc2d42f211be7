// Declarative configuration end to end on a real trellisd (issue #18): `trellis config diff`
// shows the plan and changes nothing, `trellis config apply` makes all of it take effect
// without a restart (a new tenant's key, a plan, a tenant's plugin overrides, a policy),
// and a file with one bad change among ten changes nothing at all.
#include <Poco/JSON/Object.h>
#include <Poco/JSON/Parser.h>
#include <gmock/gmock.h>
#include <gtest/gtest.h>

#include <string>

#include "support/test_support.h"

namespace trellis::test {
namespace {

using ::testing::HasSubstr;
using ::testing::Not;

std::map<std::string, std::string> bearer(const std::string& key) {
  return {{"Authorization", "Bearer " + key}};
}

// Denies one name, so a test can see the policy is active.
constexpr const char* kGlobexPolicy = R"(
function on_request(ctx, req)
  if req.path == "/hello/blocked" then return policy.deny(403, "blocked by globex's policy") end
end
)";

// Ten changes against defaultTestConfig(): two plans, acme's plan and greeting, globex's
// plan and policy, four new tenants. `ninth` replaces the ninth (tenant t4).
std::string tenChanges(const std::string& ninth =
                           "  - {id: t4, plugins: [trellis/hello], keys: "
                           "[{key: t4-key}]}\n") {
  return "plans:\n"
         "  - {name: free, quotas: {requests_per_second: 100}}\n"
         "  - {name: pro, quotas: {requests_per_second: 1000}}\n"
         "tenants:\n"
         "  - id: acme\n"
         "    plan: pro\n"
         "    plugins: [trellis/hello, trellis/echo-c]\n"
         "    keys: [{key: acme-key}]\n"
         "    plugin_config: {trellis/hello: {greeting: Bonjour}}\n"
         "  - id: globex\n"
         "    plan: free\n"
         "    plugins: [trellis/hello, trellis/echo-c]\n"
         "    keys: [{key: globex-key}]\n"
         "  - {id: t1, plugins: [trellis/hello], keys: [{key: t1-key}]}\n"
         "  - {id: t2, plugins: [trellis/hello], keys: [{key: t2-key}]}\n"
         "  - {id: t3, plugins: [trellis/hello], keys: [{key: t3-key}]}\n" +
         ninth +
         "policies:\n"
         "  tenants: {globex: {file: globex.lua}}\n";
}

class ConfigApplyTest : public ::testing::Test {
 protected:
  void SetUp() override {
    server_ = std::make_unique<TrellisdProcess>(defaultTestConfig());
    ASSERT_TRUE(server_->start()) << server_->log();
    writeFile(server_->dir() / "globex.lua", kGlobexPolicy);
  }

  // Writes `state` beside the config and runs `trellis config <verb>` on it.
  std::string config(const std::string& verb, const std::string& state, int* rc,
                     const std::string& flags = "") {
    const auto file = server_->dir() / "state.yaml";
    writeFile(file, state);
    return runCli(*server_, "config " + verb + " " + file.string() + flags, rc);
  }

  HttpReply hello(const std::string& name, const std::string& key) {
    return request(server_->port(), "GET", "/hello/" + name, bearer(key));
  }

  std::string admin(const std::string& path) {
    return request(server_->adminPort(), "GET", path, bearer(server_->adminToken())).body;
  }

  // What an apply must leave alone when it fails: tenants, plans, overrides, policies.
  void expectUnchanged(const std::string& tenants_before) {
    EXPECT_EQ(admin("/v1/tenants"), tenants_before);
    EXPECT_EQ(hello("ann", "t1-key").status, 401);
    EXPECT_THAT(hello("ann", "acme-key").body, HasSubstr("Hello, ann!"));
    EXPECT_EQ(hello("blocked", "globex-key").status, 200);
    EXPECT_THAT(admin("/v1/policies"), Not(HasSubstr("globex")));
  }

  std::unique_ptr<TrellisdProcess> server_;
};

TEST_F(ConfigApplyTest, DiffShowsThePlanAndApplyTakesEffectWithoutARestart) {
  const std::string before = admin("/v1/tenants");
  int rc = -1;
  std::string out = config("diff", tenChanges(), &rc, " --exit-code");
  EXPECT_EQ(rc, 5) << out;  // there are changes
  for (const char* change :
       {"would apply 14 changes", "update        tenant \"acme\"",
        "plan is \"default\" in the registry but \"pro\" in the file",
        "set config    plugin \"trellis/hello\" of tenant \"acme\"", "create        tenant \"t4\"",
        "import key    key \"cfg", "create        plan \"pro\"",
        "apply         policy of tenant \"globex\""}) {
    EXPECT_THAT(out, HasSubstr(change));
  }
  expectUnchanged(before);

  out = config("apply", tenChanges(), &rc);
  ASSERT_EQ(rc, 0) << out;
  EXPECT_THAT(out, HasSubstr("applied 14 changes"));
  EXPECT_EQ(hello("ann", "t4-key").status, 200);
  EXPECT_THAT(hello("ann", "acme-key").body, HasSubstr("Bonjour, ann!"));
  EXPECT_THAT(hello("ann", "globex-key").body, HasSubstr("Hello, ann!"));
  auto blocked = hello("blocked", "globex-key");
  EXPECT_EQ(blocked.status, 403);
  EXPECT_THAT(blocked.body, HasSubstr("blocked by globex's policy"));
  EXPECT_EQ(hello("blocked", "acme-key").status, 200);
  auto acme =
      Poco::JSON::Parser().parse(admin("/v1/tenants/acme")).extract<Poco::JSON::Object::Ptr>();
  EXPECT_EQ(acme->getValue<std::string>("plan"), "pro");

  // A restart keeps the plan the file added (trellis.yaml does not declare it), and acme
  // on it: trellis.yaml's plans are created or updated at start, never the whole set.
  ASSERT_EQ(server_->stop(), 0);
  ASSERT_TRUE(server_->start()) << server_->log();
  acme = Poco::JSON::Parser().parse(admin("/v1/tenants/acme")).extract<Poco::JSON::Object::Ptr>();
  EXPECT_EQ(acme->getValue<std::string>("plan"), "pro");
  EXPECT_THAT(server_->log(), HasSubstr("plan pro is not in trellis.yaml: kept"));

  // Applied means in step: nothing left to do. A tenant made through the API is drift.
  ASSERT_EQ(request(server_->adminPort(), "POST", "/v1/tenants", bearer(server_->adminToken()),
                    R"({"id": "stray"})")
                .status,
            201);
  out = config("diff", tenChanges(), &rc, " --exit-code");
  EXPECT_EQ(rc, 0) << out;
  EXPECT_THAT(out, HasSubstr("no changes"));
  EXPECT_THAT(out, HasSubstr("tenant stray: not in the file; left as it is"));
  EXPECT_TRUE(
      request(server_->adminPort(), "GET", "/v1/tenants/stray", bearer(server_->adminToken()))
          .status == 200);

  // Structured output for scripts.
  out = runCli(*server_, "--output json config diff " + (server_->dir() / "state.yaml").string(),
               &rc);
  EXPECT_EQ(rc, 0) << out;
  EXPECT_THAT(out, HasSubstr("\"applied\": false"));

  // Dropping the policies block's entry removes the policy; dropping an override removes it.
  std::string fewer = tenChanges();
  fewer.replace(fewer.find("policies:"), std::string::npos, "policies: {}\n");
  fewer.replace(fewer.find("    plugin_config: {trellis/hello: {greeting: Bonjour}}\n"),
                std::string("    plugin_config: {trellis/hello: {greeting: Bonjour}}\n").size(),
                "");
  out = config("apply", fewer, &rc);
  ASSERT_EQ(rc, 0) << out;
  EXPECT_THAT(out, HasSubstr("remove        policy of tenant \"globex\""));
  EXPECT_THAT(out, HasSubstr("remove config plugin \"trellis/hello\" of tenant \"acme\""));
  EXPECT_EQ(hello("blocked", "globex-key").status, 200);
  EXPECT_THAT(hello("ann", "acme-key").body, HasSubstr("Hello, ann!"));
}

TEST_F(ConfigApplyTest, TenChangesWithTheNinthBadChangeNothing) {
  // A tenant the file does not declare, with a key of its own.
  auto post = [&](const std::string& path, const std::string& body) {
    return request(server_->adminPort(), "POST", path, bearer(server_->adminToken()), body);
  };
  ASSERT_EQ(post("/v1/tenants", R"({"id": "stray"})").status, 201);
  auto key = post("/v1/tenants/stray/keys", "{}");
  ASSERT_EQ(key.status, 201) << key.body;
  const std::string stray_key = Poco::JSON::Parser()
                                    .parse(key.body)
                                    .extract<Poco::JSON::Object::Ptr>()
                                    ->getValue<std::string>("key");
  const std::string before = admin("/v1/tenants");
  writeFile(server_->dir() / "broken.lua", "function on_request(ctx, req)\n  return (\nend\n");
  const std::pair<std::string, std::string> ninths[] = {
      // Refused by the registry's dry run: another tenant's key.
      {"  - {id: t4, plugins: [trellis/hello], keys: [{key: " + stray_key + "}]}\n",
       "tenant \"t4\": key hash is already registered"},
      // By the plugin's tenant_config schema.
      {"  - {id: t4, plugins: [trellis/hello], plugin_config: {trellis/hello: {greeting: 5}}}\n",
       "/greeting: expected a string"},
      // A plugin this host does not run: that needs trellis.yaml and a restart.
      {"  - {id: t4, plugins: [acme/missing]}\n",
       "not running on this host: add it to trellis.yaml's plugins.enabled and restart"},
      // Overrides the plan's rate makes unusable.
      {"  - {id: t4, plan: free, quotas: {burst: 1}}\n",
       "burst (1) must be at least requests_per_second (100)"},
  };
  for (const auto& [ninth, why] : ninths) {
    SCOPED_TRACE(ninth);
    int rc = -1;
    std::string out = config("apply", tenChanges(ninth), &rc);
    EXPECT_EQ(rc, 1) << out;
    EXPECT_THAT(out, HasSubstr(why));
    expectUnchanged(before);
  }

  // A policy that does not compile: named with its line, nothing applied.
  std::string bad_policy = tenChanges();
  bad_policy.replace(bad_policy.find("globex.lua"), 10, "broken.lua");
  int rc = -1;
  std::string out = config("apply", bad_policy, &rc);
  EXPECT_EQ(rc, 1) << out;
  EXPECT_THAT(out, HasSubstr("policy of tenant \"globex\": broken.lua:3"));
  expectUnchanged(before);

  // A file the CLI can judge alone fails before any call: usage error, the key named.
  out = config("diff", "tenants: [{id: t1, colour: red}]\n", &rc);
  EXPECT_EQ(rc, 2) << out;
  EXPECT_THAT(out, HasSubstr("state.yaml: tenants[0].colour: unknown key"));
  out = config("apply", tenChanges("  - {id: t4, keys: [{key: globex-key}]}\n"), &rc);
  EXPECT_EQ(rc, 2) << out;
  EXPECT_THAT(out, HasSubstr("tenants[5].keys[0]: key already used by tenant \"globex\""));
  out = config("apply", "policies: {global: {file: nowhere.lua}}\n", &rc);
  EXPECT_EQ(rc, 2) << out;
  EXPECT_THAT(out, HasSubstr("policies.global.file: cannot read"));
  expectUnchanged(before);
}

}  // namespace
}  // namespace trellis::test
