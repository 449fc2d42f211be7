// Admin Lua policies end to end on a real trellisd: `trellis policy apply/rollback/list`,
// on_request/on_response/on_quota_exceeded on the data plane, per-tenant overrides,
// versions that survive a restart, and broken or hostile policies that fail closed (or
// open) while the host keeps serving.
#include <gmock/gmock.h>
#include <gtest/gtest.h>

#include <filesystem>
#include <string>

#include "support/test_support.h"

namespace trellis::test {
namespace {

using ::testing::AllOf;
using ::testing::HasSubstr;
using ::testing::Not;

std::map<std::string, std::string> bearer(const std::string& key,
                                          std::map<std::string, std::string> more = {}) {
  more["Authorization"] = "Bearer " + key;
  return more;
}

class PolicyTest : public ::testing::Test {
 protected:
  // `globex_tiny`: tenant globex on a plan of 1 request/s.
  void startWith(const std::string& extra = "", bool globex_tiny = false) {
    std::string config = defaultTestConfig("",
                                           "plans:\n"
                                           "  - name: tiny\n"
                                           "    quotas: {requests_per_second: 1, burst: 1}\n"
                                           "policy:\n"
                                           "  instructions: 200000\n"
                                           "  memory_bytes: 1048576\n"
                                           "  wall_time_ms: 5000\n"
                                           "  decision_log: @DIR@/decisions.log\n" +
                                               extra);
    if (globex_tiny) {
      const std::string line = "  - id: globex\n";
      config.insert(config.find(line) + line.size(), "    plan: tiny\n");
    }
    server_ = std::make_unique<TrellisdProcess>(config);
    ASSERT_TRUE(server_->start()) << server_->log();
  }
  TrellisdProcess& server() { return *server_; }

  std::string cli(const std::string& args, int* rc) { return runCli(server(), args, rc); }

  // Writes `source` to <dir>/<name> and applies it; returns the CLI's output.
  std::string apply(const std::string& name, const std::string& source,
                    const std::string& tenant = "", int expect_rc = 0) {
    auto file = server().dir() / name;
    writeFile(file, source);
    int rc = -1;
    std::string out =
        cli("policy apply " + file.string() + (tenant.empty() ? "" : " --tenant " + tenant), &rc);
    EXPECT_EQ(rc, expect_rc) << out;
    return out;
  }

  HttpReply get(const std::string& target, const std::string& key = "acme-key",
                std::map<std::string, std::string> headers = {}) {
    return request(server().port(), "GET", target, bearer(key, std::move(headers)));
  }

  HttpReply metrics() {
    return request(server().adminPort(), "GET", "/metrics",
                   {{"Authorization", "Bearer " + server().adminToken()}});
  }

  std::unique_ptr<TrellisdProcess> server_;
};

constexpr const char* kGoodPolicy = R"(
function on_request(ctx, req)
  if req.headers["x-block"] then return policy.deny(403, "blocked by policy") end
  return policy.modify({["X-Tenant-Seen"] = ctx.tenant, ["X-Remove-Me"] = false})
end
function on_response(ctx, res)
  return policy.modify({["X-Policy-Version"] = tostring(ctx.policy_version)})
end
)";

TEST_F(PolicyTest, AppliedPolicyDeniesModifiesAndTagsResponses) {
  startWith();
  EXPECT_EQ(get("/echo").status, 200);  // no policy yet
  std::string out = apply("good.lua", kGoodPolicy);
  EXPECT_THAT(out,
              HasSubstr("policy global applied: v1 (good.lua): hooks on_request, on_response"));

  auto denied = get("/echo", "acme-key", {{"X-Block", "1"}});
  EXPECT_EQ(denied.status, 403);
  EXPECT_EQ(denied.header("content-type"), "application/problem+json");
  EXPECT_THAT(denied.body, AllOf(HasSubstr("blocked by policy"), HasSubstr("decision_id")));

  auto ok = get("/echo", "acme-key", {{"X-Remove-Me", "secret"}});
  ASSERT_EQ(ok.status, 200) << ok.body;
  // The plugin saw the headers as the policy left them.
  EXPECT_THAT(ok.body, HasSubstr("[\"X-Tenant-Seen\",\"acme\"]"));
  EXPECT_THAT(ok.body, Not(HasSubstr("secret")));
  EXPECT_EQ(ok.header("x-policy-version"), "1");
  // trellis/hello's route is blocking: its hooks run around the call on the pool.
  auto blocking = get("/hello/ann");
  EXPECT_EQ(blocking.status, 200) << blocking.body;
  EXPECT_EQ(blocking.header("x-policy-version"), "1");
  EXPECT_EQ(get("/hello/ann", "acme-key", {{"X-Block", "1"}}).status, 403);

  int rc = -1;
  EXPECT_THAT(cli("policy list", &rc), HasSubstr("policy global active: v1 (good.lua)"));
  auto text = metrics().body;
  EXPECT_THAT(text,
              HasSubstr("trellis_policy_decisions_total{hook=\"on_request\",result=\"deny\"} 2"));
  EXPECT_THAT(test::readFile(server().dir() / "decisions.log"), HasSubstr("\"result\":\"deny\""));
}

// The install path asks trellisd (POST /v1/plugins/install-check) before writing anything;
// the admin's on_plugin_install decides.
TEST_F(PolicyTest, InstallPolicyDecidesWhatTheMarketplaceMayInstall) {
  startWith();
  auto check = [&](const std::string& body) {
    return request(server().adminPort(), "POST", "/v1/plugins/install-check",
                   {{"Authorization", "Bearer " + server().adminToken()}}, body);
  };
  const std::string egress =
      R"({"id":"acme/fetcher","version":"1.0.0","capabilities":["kv","egress"]})";
  const std::string quiet = R"({"id":"acme/quiet","version":"1.0.0","capabilities":["kv"]})";
  EXPECT_EQ(check(egress).status, 200);  // no policy: allowed

  apply("install.lua", R"(
function on_plugin_install(ctx, manifest)
  for _, c in ipairs(manifest.capabilities) do
    if c == "egress" then return policy.deny(403, manifest.id .. " may not reach the network") end
  end
end
)");
  auto denied = check(egress);
  EXPECT_EQ(denied.status, 403) << denied.body;
  EXPECT_THAT(denied.body, HasSubstr("acme/fetcher may not reach the network"));
  EXPECT_EQ(check(quiet).status, 200);
}

TEST_F(PolicyTest, TenantPolicyOverridesTheGlobalOne) {
  startWith();
  apply("global.lua", "function on_request() return policy.deny(403, 'global says no') end");
  apply("acme.lua", "function on_request() return policy.allow() end", "acme");
  EXPECT_EQ(get("/echo", "acme-key").status, 200);
  auto globex = get("/echo", "globex-key");
  EXPECT_EQ(globex.status, 403);
  EXPECT_THAT(globex.body, HasSubstr("global says no"));
  int rc = -1;
  std::string unknown =
      cli("policy apply " + (server().dir() / "acme.lua").string() + " --tenant nobody", &rc);
  EXPECT_EQ(rc, 1);
  EXPECT_THAT(unknown, HasSubstr("no tenant \"nobody\""));
}

TEST_F(PolicyTest, DeletingATenantDeletesItsPolicy) {
  startWith();
  int rc = -1;
  ASSERT_EQ(cli("tenant create initech --plugin trellis/echo-c", &rc).empty(), false);
  apply("initech.lua", "function on_request() return policy.deny(403, 'initech') end", "initech");
  cli("tenant delete initech --yes", &rc);
  EXPECT_EQ(rc, 0);
  EXPECT_FALSE(
      std::filesystem::exists(server().dir() / "data" / "policies" / "tenants" / "initech"));
  cli("tenant create initech --plugin trellis/echo-c", &rc);
  EXPECT_THAT(cli("policy list", &rc), Not(HasSubstr("initech")));
  EXPECT_THAT(cli("policy rollback --tenant initech", &rc), HasSubstr("no policy"));
}

TEST_F(PolicyTest, QuotaRefusalIsCustomisedByThePolicy) {
  startWith("", true);  // globex: the second request in a second is refused
  apply("quota.lua", R"(
function on_quota_exceeded(ctx, q)
  return {status = 503, message = "easy, " .. ctx.tenant .. ": " .. q.quota,
          headers = {["X-Upgrade"] = "https://example.com/plans"}}
end)");
  HttpReply refused;
  for (int i = 0; i < 5 && refused.status != 503; ++i) refused = get("/ping", "globex-key");
  ASSERT_EQ(refused.status, 503) << refused.body;
  EXPECT_THAT(refused.body,
              AllOf(HasSubstr("easy, globex: requests_per_second"),
                    HasSubstr("\"quota\":\"requests_per_second\""), HasSubstr("decision_id")));
  EXPECT_EQ(refused.header("x-upgrade"), "https://example.com/plans");
  EXPECT_FALSE(refused.header("retry-after").empty());
}

TEST_F(PolicyTest, ApplyErrorNamesFileAndLineAndKeepsTheActiveVersion) {
  startWith();
  apply("v1.lua", "function on_request() return policy.deny(403, 'version one') end");
  std::string out = apply("broken.lua", "function on_request()\n  return = 1\nend\n", "", 1);
  EXPECT_THAT(out, AllOf(HasSubstr("422"), HasSubstr("broken.lua:2:")));
  out = apply("throws.lua", "local cfg = nil\nlocal x = cfg.limit\n", "", 1);
  EXPECT_THAT(out, HasSubstr("throws.lua:2:"));
  EXPECT_THAT(get("/echo").body, HasSubstr("version one"));
}

TEST_F(PolicyTest, RollbackAndRestartKeepTheVersionHistory) {
  startWith();
  apply("one.lua", "function on_request() return policy.deny(403, 'one') end");
  apply("two.lua", "function on_request() return policy.deny(403, 'two') end");
  EXPECT_THAT(get("/echo").body, HasSubstr("two"));
  int rc = -1;
  std::string out = cli("policy rollback", &rc);
  EXPECT_EQ(rc, 0) << out;
  EXPECT_THAT(out, HasSubstr("rolled back to v1 (one.lua)"));
  EXPECT_THAT(get("/echo").body, HasSubstr("one"));
  out = cli("policy rollback", &rc);
  EXPECT_EQ(rc, 1);
  EXPECT_THAT(out, HasSubstr("no earlier version"));

  out = cli("policy remove", &rc);
  EXPECT_EQ(rc, 0) << out;
  EXPECT_THAT(out, HasSubstr("policy global removed"));
  EXPECT_EQ(get("/echo").status, 200);
  EXPECT_THAT(cli("policy rollback", &rc), HasSubstr("rolled back to v1 (one.lua)"));
  EXPECT_THAT(get("/echo").body, HasSubstr("one"));

  apply("three.lua", "function on_request() return policy.deny(403, 'three') end");
  ASSERT_EQ(server().stop(), 0);
  std::filesystem::remove(server().dir() / "ready.json");
  ASSERT_TRUE(server().start()) << server().log();
  EXPECT_THAT(get("/echo").body, HasSubstr("three"));
  EXPECT_THAT(cli("policy list", &rc), HasSubstr("v3 (three.lua)"));
}

// Hostile or broken on_request bodies: each fails closed (500 with a decision id) and a
// request after a good policy is back is served.
TEST_F(PolicyTest, HostilePoliciesFailClosedAndTheHostKeepsServing) {
  startWith();
  const std::string pwned = (server().dir() / "pwned").string();
  const std::pair<const char*, std::string> attempts[] = {
      {"endless loop", "while true do end"},
      {"endless loop in pcall", "while true do pcall(function() while true do end end) end"},
      {"memory bomb", "local s = 'x' for i = 1, 64 do s = s .. s end"},
      {"string.rep bomb", "return string.rep('x', 1e12)"},
      {"process", "os.execute('touch " + pwned + "')"},
      {"file", "io.open('" + pwned + "', 'w')"},
      {"require", "require('io')"},
      {"coroutine", "coroutine.wrap(function() while true do end end)()"},
      {"string metatable", "getmetatable('').__index = {}"},
      {"helper overwrite", "policy.allow = function() end"},
  };
  for (const auto& [what, body] : attempts) {
    SCOPED_TRACE(what);
    apply("hostile.lua", "function on_request(ctx, req)\n" + body + "\nend\n");
    auto r = get("/echo");
    EXPECT_EQ(r.status, 500) << r.body;
    EXPECT_THAT(r.body, AllOf(HasSubstr("fail closed"), HasSubstr("decision_id")));
    apply("good.lua", kGoodPolicy);
    EXPECT_EQ(get("/echo").status, 200);
  }
  EXPECT_FALSE(std::filesystem::exists(pwned));
  EXPECT_TRUE(server().running());
  auto text = metrics().body;
  EXPECT_THAT(text, HasSubstr("trellis_policy_failures_total{hook=\"on_request\",cause="
                              "\"instructions\"} 3"));
  EXPECT_THAT(text, HasSubstr("trellis_policy_failures_total{hook=\"on_request\",cause="
                              "\"memory\"} 1"));
  EXPECT_THAT(server().log(), HasSubstr("failing closed [decision"));
}

TEST(PolicyCliTest, DryRunPrintsTheDecisionAndBudgetsWithoutAServer) {
  const std::string cli = TRELLIS_CLI_PATH;
  const std::string src = TRELLIS_SOURCE_DIR;
  int rc = -1;
  std::string out =
      runCommand(cli + " policy test " + src + "/config/policies/example.lua --input " + src +
                     "/config/policies/example-request.json 2>&1",
                 &rc);
  EXPECT_EQ(rc, 0) << out;
  EXPECT_THAT(
      out, AllOf(HasSubstr("decision:     deny 403 \"admin greetings only from the "
                           "office network\""),
                 HasSubstr("instructions:"), HasSubstr("peak memory:"), HasSubstr("wall time:")));
  out = runCommand(cli + " policy test " + src + "/config/policies/example.lua --hook " +
                       "on_plugin_install --input " + src +
                       "/config/policies/example-request.json 2>&1",
                   &rc);
  EXPECT_THAT(out, HasSubstr("acme/billing asks for egress"));

  TempDir dir;
  writeFile(dir / "loop.lua", "function on_request() while true do end end");
  writeFile(dir / "in.json", "{}");
  out = runCommand(cli + " policy test " + (dir / "loop.lua").string() + " --input " +
                       (dir / "in.json").string() + " 2>&1",
                   &rc);
  EXPECT_EQ(rc, 1);
  EXPECT_THAT(out, AllOf(HasSubstr("failed:       instructions"), HasSubstr("deny 500")));
  writeFile(dir / "bad.lua", "function on_request()\n  return = 1\nend\n");
  out = runCommand(cli + " policy test " + (dir / "bad.lua").string() + " --input " +
                       (dir / "in.json").string() + " 2>&1",
                   &rc);
  EXPECT_EQ(rc, 1);
  EXPECT_THAT(out, HasSubstr("bad.lua:2:"));
  // The data plane's principals are always key:<id>; a dry run refuses anything else.
  writeFile(dir / "admin.json", R"({"principal": "admin"})");
  out = runCommand(cli + " policy test " + (dir / "loop.lua").string() + " --input " +
                       (dir / "admin.json").string() + " 2>&1",
                   &rc);
  EXPECT_NE(rc, 0);
  EXPECT_THAT(out, HasSubstr("principal \"admin\" must be key:<key id>"));
}

TEST_F(PolicyTest, FailOpenLetsRequestsThroughWhenThePolicyBreaks) {
  startWith("  fail: {on_request: open}\n");
  apply("loop.lua", "function on_request() while true do end end");
  auto r = get("/echo");
  EXPECT_EQ(r.status, 200) << r.body;
  EXPECT_THAT(metrics().body, HasSubstr("trellis_policy_decisions_total{hook=\"on_request\","
                                        "result=\"failed_open\"} 1"));
}

}  // namespace
}  // namespace trellis::test
