// System plugins on a real trellisd: system scope and its grant, named admin principals
// and roles, the audit stream (block and degrade) and plugin admin routes. The sink is
// fixture/sys-audit (tests/fixtures/sys-audit/sys_audit.c), which keeps the records it
// receives, serves them on its admin route and can be told to fail.
#include <Poco/JSON/Array.h>
#include <Poco/JSON/Object.h>
#include <Poco/JSON/Parser.h>
#include <gmock/gmock.h>
#include <gtest/gtest.h>

#include <chrono>
#include <map>
#include <sstream>
#include <string>
#include <thread>
#include <vector>

#include "support/test_support.h"

namespace trellis::test {
namespace {

using Poco::JSON::Array;
using Poco::JSON::Object;
using ::testing::HasSubstr;

const std::map<std::string, std::string> kAcme = {{"Authorization", "Bearer acme-key"}};

Object::Ptr json(const std::string& body) {
  return Poco::JSON::Parser().parse(body).extract<Object::Ptr>();
}

class SystemPluginsTest : public ::testing::Test {
 protected:
  void startWith(const std::string& plugin_entry, const std::string& extra = "") {
    server_ = std::make_unique<TrellisdProcess>(defaultTestConfig(plugin_entry, extra));
    ASSERT_TRUE(server_->start()) << server_->log();
  }
  void startGranted(const std::string& extra = "") {
    startWith("    - id: fixture/sys-audit\n      system: true\n", extra);
  }
  HttpReply admin(const std::string& method, const std::string& path, const std::string& body = "",
                  const std::string& token = "") {
    return request(server_->adminPort(), method, path,
                   {{"Authorization", "Bearer " + (token.empty() ? server_->adminToken() : token)}},
                   body);
  }
  // A new admin principal's token.
  std::string principal(const std::string& name, const std::string& role) {
    auto res =
        admin("POST", "/v1/admin-tokens", "{\"name\":\"" + name + "\",\"role\":\"" + role + "\"}");
    EXPECT_EQ(res.status, 201) << res.body;
    return json(res.body)->getValue<std::string>("token");
  }
  // Every record the sink holds, read with the bootstrap token.
  std::vector<Object::Ptr> records() {
    auto res = admin("GET", "/v1/x/fixture/sys-audit/records");
    EXPECT_EQ(res.status, 200) << res.body;
    std::vector<Object::Ptr> out;
    auto list = Poco::JSON::Parser().parse(res.body).extract<Array::Ptr>();
    for (size_t i = 0; i < list->size(); ++i)
      out.push_back(list->getObject(static_cast<unsigned>(i)));
    return out;
  }
  std::vector<Object::Ptr> recordsOf(const std::string& name) {
    std::vector<Object::Ptr> out;
    for (auto& r : records()) {
      if (r->getObject("actor")->getValue<std::string>("name") == name) out.push_back(r);
    }
    return out;
  }
  void sinkMode(const std::string& mode) {
    auto res = request(server_->port(), "POST", "/sys-audit/mode/" + mode, kAcme);
    ASSERT_EQ(res.status, 200) << res.body;
  }
  std::unique_ptr<TrellisdProcess> server_;
};

TEST_F(SystemPluginsTest, SystemScopeWithoutTheOperatorsGrantIsRefused) {
  startWith("    - id: fixture/sys-audit\n");
  auto list = admin("GET", "/v1/plugins");
  ASSERT_EQ(list.status, 200);
  auto p = json(list.body)->getArray("plugins")->getObject(0);
  EXPECT_EQ(p->getValue<std::string>("state"), "failed");
  EXPECT_THAT(p->getValue<std::string>("error"),
              HasSubstr("asks for \"scope\": \"system\", which only the operator can grant"));
  EXPECT_THAT(admin("GET", "/metrics").body,
              HasSubstr("trellis_plugin_scope_refusals_total{plugin=\"fixture/sys-audit\"} 1"));
  // Its admin routes do not exist.
  EXPECT_EQ(admin("GET", "/v1/x/fixture/sys-audit/records").status, 404);
}

TEST_F(SystemPluginsTest, GrantedSystemPluginServesAdminRoutesInsideItsPrefixOnly) {
  startGranted();
  auto list = json(admin("GET", "/v1/plugins").body)->getArray("plugins")->getObject(0);
  EXPECT_EQ(list->getValue<std::string>("state"), "active") << server_->log();
  EXPECT_EQ(list->getValue<std::string>("scope"), "system");
  EXPECT_TRUE(list->getValue<bool>("system"));
  auto probe = admin("GET", "/v1/x/fixture/sys-audit/probe");
  ASSERT_EQ(probe.status, 200) << probe.body;
  EXPECT_EQ(probe.body,
            "INVALID: admin route /v1/x/fixture/other/steal is outside the plugin's prefix "
            "/v1/x/fixture/sys-audit/ (routes must be /v1/x/fixture/sys-audit/<path>)");
  EXPECT_EQ(admin("GET", "/v1/x/fixture/other/steal").status, 404);
  // Refused, counted and audited.
  EXPECT_THAT(admin("GET", "/metrics").body,
              HasSubstr("trellis_plugin_admin_refusals_total{plugin=\"fixture/sys-audit\",call="
                        "\"admin_route_add\"} 1"));
  bool audited = false;
  for (auto& r : records()) {
    audited = audited || r->getValue<std::string>("action") == "plugin_call_refused";
  }
  EXPECT_TRUE(audited);
}

TEST_F(SystemPluginsTest, EveryCliVerbWritesOneRequestAndOneResponseRecordNamingThePrincipal) {
  startWith("    - id: trellis/hello\n    - id: fixture/sys-audit\n      system: true\n");
  const std::string alice = principal("alice", "operator");
  const std::vector<std::pair<std::string, std::string>> verbs = {
      {"status", "GET /v1/status"},
      {"plugin list", "GET /v1/plugins"},
      {"tenant list", "GET /v1/tenants"},
      {"tenant create initech", "POST /v1/tenants"},
      {"key create initech", "POST /v1/tenants/initech/keys"},
      {"tenant usage initech", "GET /v1/tenants/initech/usage"},
      {"job list", "GET /v1/jobs"},
      {"plugin system-grants", "GET /v1/system-grants"},
      {"tenant config set acme trellis/hello '{\"greeting\":\"Hej\"}'",
       "PUT /v1/tenants/acme/plugins/trellis/hello/config"},
      {"tenant config show acme trellis/hello",
       "GET /v1/tenants/acme/plugins/trellis/hello/config"},
      {"tenant config unset acme trellis/hello",
       "DELETE /v1/tenants/acme/plugins/trellis/hello/config"},
  };
  for (const auto& [args, action] : verbs) {
    const size_t before = recordsOf("alice").size();
    int status = -1;
    std::string out = runCli(*server_, "--token " + alice + " " + args, &status);
    ASSERT_EQ(status, 0) << args << ": " << out;
    auto mine = recordsOf("alice");
    ASSERT_EQ(mine.size(), before + 2) << args;
    auto req = mine[before], res = mine[before + 1];
    EXPECT_EQ(req->getValue<std::string>("type"), "admin.request") << args;
    EXPECT_EQ(res->getValue<std::string>("type"), "admin.response") << args;
    EXPECT_EQ(req->getValue<std::string>("action"), action) << args;
    EXPECT_EQ(req->getValue<std::string>("request_id"), res->getValue<std::string>("request_id"));
    EXPECT_EQ(req->getValue<std::string>("outcome"), "pending");
    EXPECT_EQ(res->getValue<std::string>("outcome"), "success") << args;
    EXPECT_EQ(req->getObject("actor")->getValue<std::string>("role"), "operator");
    EXPECT_EQ(req->getValue<std::string>("trace_id").size(), 32u);
  }
  // The key's secret never reaches the trail (the response record carries no body).
  for (auto& r : recordsOf("alice")) {
    std::ostringstream text;
    r->stringify(text);
    EXPECT_THAT(text.str(), ::testing::Not(HasSubstr("\"key\":\"")));
  }
}

TEST_F(SystemPluginsTest, AdminTokenVerbsAreAuditedAndRevokedTokensRefused) {
  startGranted();
  int status = -1;
  std::string out = runCli(*server_, "admin-token create bob --role auditor", &status);
  ASSERT_EQ(status, 0) << out;
  auto at = out.find("tadm_");
  ASSERT_NE(at, std::string::npos) << out;
  const std::string bob = out.substr(at, out.find_first_of("\n ", at) - at);
  EXPECT_EQ(admin("GET", "/v1/tenants", "", bob).status, 200);  // auditors read
  out = runCli(*server_, "admin-token list", &status);
  ASSERT_EQ(status, 0) << out;
  EXPECT_THAT(out, HasSubstr("bob"));
  EXPECT_THAT(out, ::testing::Not(HasSubstr(bob)));  // only shown once
  out = runCli(*server_, "admin-token revoke bob", &status);
  ASSERT_EQ(status, 0) << out;
  EXPECT_THAT(out, HasSubstr("revoked"));

  auto refused = admin("GET", "/v1/tenants", "", bob);
  EXPECT_EQ(refused.status, 401);
  EXPECT_THAT(refused.body, HasSubstr("admin principal bob"));
  EXPECT_THAT(refused.body, HasSubstr("was revoked"));
  EXPECT_THAT(admin("GET", "/metrics").body, HasSubstr("trellis_admin_auth_failures_total 1"));

  int creates = 0, revokes = 0, failures = 0;
  for (auto& r : recordsOf("bootstrap")) {
    const auto action = r->getValue<std::string>("action");
    creates += action == "POST /v1/admin-tokens";
    revokes += action == "DELETE /v1/admin-tokens/bob";
  }
  for (auto& r : records()) {
    failures += r->getValue<std::string>("action") == "admin.auth_failure";
  }
  EXPECT_EQ(creates, 2);  // request and response
  EXPECT_EQ(revokes, 2);
  EXPECT_EQ(failures, 1);
}

TEST_F(SystemPluginsTest, EachRouteChecksTheRoleItDeclares) {
  startGranted();
  const std::string eve = principal("eve", "auditor");
  const std::string olga = principal("olga", "operator");
  const std::string bill = principal("bill", "billing");
  auto denied = admin("POST", "/v1/tenants", "{\"id\":\"nope\"}", eve);
  EXPECT_EQ(denied.status, 403);
  EXPECT_EQ(denied.header("content-type"), "application/problem+json");
  EXPECT_THAT(denied.body, HasSubstr("admin principal eve has role auditor"));
  EXPECT_EQ(admin("GET", "/v1/tenants/nope").status, 404);  // nothing happened
  // The plugin's route declares "auditor": the auditor reads it, the operator does not.
  EXPECT_EQ(admin("GET", "/v1/x/fixture/sys-audit/records", "", eve).status, 200);
  EXPECT_EQ(admin("GET", "/v1/x/fixture/sys-audit/records", "", olga).status, 403);
  EXPECT_EQ(admin("GET", "/v1/x/fixture/sys-audit/probe", "", olga).status, 200);
  // Billing reads tenants and usage, not policies; nobody but admin makes admins.
  EXPECT_EQ(admin("GET", "/v1/tenants", "", bill).status, 200);
  EXPECT_EQ(admin("GET", "/v1/policies", "", bill).status, 403);
  EXPECT_EQ(admin("POST", "/v1/admin-tokens", "{\"name\":\"x\",\"role\":\"admin\"}", olga).status,
            403);
  EXPECT_EQ(admin("PUT", "/v1/plugins/fixture/sys-audit/system", "", olga).status, 403);
  int status = -1;
  std::string out = runCli(
      *server_, "--token " + eve + " x fixture/sys-audit GET records --output json", &status);
  EXPECT_EQ(status, 0) << out;
  EXPECT_EQ(out.front(), '[');
  out = runCli(*server_, "--token " + olga + " x fixture/sys-audit GET records", &status);
  EXPECT_NE(status, 0);
  EXPECT_THAT(out, HasSubstr("403"));
}

TEST_F(SystemPluginsTest, PolicyDenialsReachTheAuditStreamOncePerTenantRouteAndMinute) {
  startGranted();
  auto applied = admin("PUT", "/v1/policies/global",
                       R"({"name": "block.lua", "source": "function on_request(ctx, req) )"
                       R"(if req.headers['x-block'] then return policy.deny(403, 'blocked') )"
                       R"(end end"})");
  ASSERT_EQ(applied.status, 200) << applied.body;
  auto blocked = kAcme;
  blocked["X-Block"] = "1";
  for (int i = 0; i < 3; ++i) {
    EXPECT_EQ(request(server_->port(), "POST", "/sys-audit/emit", blocked, "{}").status, 403);
  }
  // Events reach the sink through the bus, a moment after the answer.
  int denials = 0;
  for (int i = 0; i < 100 && denials == 0; ++i) {
    if (i) std::this_thread::sleep_for(std::chrono::milliseconds(100));
    denials = 0;
    for (auto& r : records()) denials += r->getValue<std::string>("action") == "policy_denied";
  }
  EXPECT_EQ(denials, 1);  // the other two wait for the next minute's record, counted
  const std::string raw = admin("GET", "/v1/x/fixture/sys-audit/records").body;
  EXPECT_THAT(raw, HasSubstr("/sys-audit/emit"));
  EXPECT_THAT(raw, HasSubstr("denials_in_previous_minute"));
}

TEST_F(SystemPluginsTest, ASystemPluginRunsJobsOfItsOwnOutsideEveryTenant) {
  startGranted();
  // Scheduled from an admin route (no tenant), the job runs with no tenant: it bumps the
  // plugin's own counter, no tenant's, and counts against no tenant's max_jobs.
  ASSERT_EQ(admin("POST", "/v1/x/fixture/sys-audit/jobs/bump").body, "OK");
  auto jobGone = [&] {
    return admin("GET", "/v1/jobs").body.find("\"bump\"") == std::string::npos;
  };
  ASSERT_TRUE(eventually(jobGone)) << admin("GET", "/v1/jobs").body << server_->log();
  EXPECT_EQ(admin("POST", "/v1/x/fixture/sys-audit/counter").body, "2");
  EXPECT_EQ(request(server_->port(), "GET", "/sys-audit/counter", kAcme).body, "NOT_FOUND");

  // The same call under a tenant's ctx schedules that tenant's job, which bumps its counter.
  ASSERT_EQ(request(server_->port(), "POST", "/sys-audit/jobs/bump", kAcme).body, "OK");
  ASSERT_TRUE(eventually(jobGone)) << admin("GET", "/v1/jobs").body;
  EXPECT_EQ(request(server_->port(), "GET", "/sys-audit/counter", kAcme).body, "1");
  EXPECT_EQ(admin("POST", "/v1/x/fixture/sys-audit/counter").body, "3");
}

TEST_F(SystemPluginsTest, ASystemPluginKeepsStorageOfItsOwnOutsideEveryTenant) {
  startGranted();
  EXPECT_EQ(admin("POST", "/v1/x/fixture/sys-audit/counter").body, "1");
  EXPECT_EQ(admin("POST", "/v1/x/fixture/sys-audit/counter").body, "2");
  // The same key under a tenant's ctx is that tenant's storage, not this one.
  EXPECT_EQ(request(server_->port(), "GET", "/sys-audit/counter", kAcme).body, "NOT_FOUND");
  ASSERT_EQ(server_->stop(), 0);
  ASSERT_TRUE(server_->start()) << server_->log();
  EXPECT_EQ(admin("POST", "/v1/x/fixture/sys-audit/counter").body, "3");
}

TEST_F(SystemPluginsTest, ASystemPluginActsForANamedTenantInThatTenantsStorageOnlyAndAudited) {
  startGranted("audit:\n  sink: fixture/sys-audit\n");
  const std::string acme = "/v1/x/fixture/sys-audit/tenants/acme/counter";
  EXPECT_EQ(admin("POST", acme, "monthly invoice").body, "1");
  EXPECT_EQ(admin("POST", acme, "monthly invoice").body, "2");
  // The writes landed in acme's storage of this plugin: acme sees them, globex and the
  // plugin's own tenant-less storage do not.
  EXPECT_EQ(request(server_->port(), "GET", "/sys-audit/counter", kAcme).body, "2");
  EXPECT_EQ(request(server_->port(), "GET", "/sys-audit/counter",
                    {{"Authorization", "Bearer globex-key"}})
                .body,
            "NOT_FOUND");
  EXPECT_EQ(admin("POST", "/v1/x/fixture/sys-audit/counter").body, "1");

  // Each act is audited before it runs, naming the plugin, the tenant and the reason.
  int acts = 0;
  for (auto& r : records()) {
    if (r->getValue<std::string>("action") != "system.act_for_tenant") continue;
    ++acts;
    EXPECT_EQ(r->getObject("actor")->getValue<std::string>("principal"), "fixture/sys-audit");
    EXPECT_EQ(r->getValue<std::string>("tenant"), "acme");
    EXPECT_EQ(r->getObject("parameters")->getValue<std::string>("reason"), "monthly invoice");
  }
  EXPECT_EQ(acts, 2);

  EXPECT_EQ(admin("POST", "/v1/x/fixture/sys-audit/tenants/nobody/counter", "why").body,
            "NOT_FOUND: act_for_tenant: no tenant \"nobody\"");
  EXPECT_EQ(admin("POST", acme, "").body,
            "INVALID: act_for_tenant: the reason must be 1-256 bytes, not 0");
  EXPECT_THAT(admin("POST", acme, std::string(257, 'r')).body, HasSubstr("not 257"));
  // A tenant's ctx cannot hop to another tenant.
  EXPECT_EQ(request(server_->port(), "POST", "/sys-audit/act", kAcme).body,
            "INVALID: act_for_tenant from a tenant ctx (it already acts for acme)");
  ASSERT_EQ(admin("POST", "/v1/tenants/acme/suspend").status, 200);
  EXPECT_EQ(admin("POST", acme, "after suspension").body,
            "UNAVAILABLE: act_for_tenant: tenant acme is suspended");
  ASSERT_EQ(admin("POST", "/v1/tenants/acme/resume").status, 200);
  EXPECT_EQ(request(server_->port(), "GET", "/sys-audit/counter", kAcme).body, "2");
}

TEST_F(SystemPluginsTest, RevokingTheGrantEndsActingForTenantsAtOnce) {
  startWith("    - id: fixture/sys-audit\n");  // refused at load: not granted yet
  ASSERT_EQ(admin("PUT", "/v1/plugins/fixture/sys-audit/system").status, 200);
  auto activated = admin("POST", "/v1/plugins/fixture/sys-audit/activate");
  ASSERT_EQ(activated.status, 200) << activated.body;
  EXPECT_EQ(admin("POST", "/v1/x/fixture/sys-audit/tenants/acme/counter", "invoice").body, "1");

  ASSERT_EQ(admin("DELETE", "/v1/plugins/fixture/sys-audit/system").status, 200);
  // Still loaded, no longer a system plugin: the host refuses before looking at the ctx.
  EXPECT_EQ(request(server_->port(), "POST", "/sys-audit/act", kAcme).body,
            "PERMISSION_DENIED: acting for a tenant is for system plugins (manifest \"scope\": "
            "\"system\" and the operator's grant)");
  auto route = admin("POST", "/v1/x/fixture/sys-audit/tenants/acme/counter", "invoice");
  EXPECT_EQ(route.status, 403);
  EXPECT_THAT(route.body, HasSubstr("fixture/sys-audit no longer has system scope"));
  EXPECT_EQ(request(server_->port(), "GET", "/sys-audit/counter", kAcme).body, "1");
}

TEST_F(SystemPluginsTest, FailingSinkBlocksTheActionAndChangesNothing) {
  startGranted("audit:\n  sink: fixture/sys-audit\n");
  ASSERT_EQ(admin("POST", "/v1/tenants", "{\"id\":\"initech\"}").status, 201);
  const std::string keys_before = admin("GET", "/v1/tenants/initech/keys").body;
  const std::string policies_before = admin("GET", "/v1/policies").body;
  sinkMode("fail");
  auto tenant = admin("POST", "/v1/tenants", "{\"id\":\"hooli\"}");
  EXPECT_EQ(tenant.status, 503);
  EXPECT_THAT(tenant.body, HasSubstr("nothing was changed (audit.on_sink_failure: block)"));
  EXPECT_EQ(admin("POST", "/v1/tenants/initech/keys", "{}").status, 503);
  EXPECT_EQ(admin("PUT", "/v1/policies/global",
                  "function on_request(ctx, req) return {action = \"deny\"} end")
                .status,
            503);
  EXPECT_EQ(admin("DELETE", "/v1/tenants/initech").status, 503);
  sinkMode("ok");
  EXPECT_EQ(admin("GET", "/v1/tenants/hooli").status, 404);
  EXPECT_EQ(admin("GET", "/v1/tenants/initech").status, 200);
  EXPECT_EQ(admin("GET", "/v1/tenants/initech/keys").body, keys_before);
  EXPECT_EQ(admin("GET", "/v1/policies").body, policies_before);
  EXPECT_THAT(admin("GET", "/metrics").body, HasSubstr("trellis_audit_refused_actions_total 4"));
}

TEST_F(SystemPluginsTest, DegradeModeProceedsCountsAndWarns) {
  startGranted("audit:\n  sink: fixture/sys-audit\n  on_sink_failure: degrade\n");
  sinkMode("fail");
  EXPECT_EQ(admin("POST", "/v1/tenants", "{\"id\":\"hooli\"}").status, 201);
  sinkMode("ok");
  EXPECT_EQ(admin("GET", "/v1/tenants/hooli").status, 200);
  auto metrics = admin("GET", "/metrics").body;
  EXPECT_THAT(metrics, ::testing::ContainsRegex("trellis_audit_sink_failures_total [1-9]"));
  EXPECT_THAT(metrics, HasSubstr("trellis_audit_refused_actions_total 0"));
  EXPECT_THAT(server_->log(), HasSubstr("not stored"));
}

TEST_F(SystemPluginsTest, PluginsEmitTheirOwnRecordsWithinLimits) {
  startGranted();
  auto ok = request(server_->port(), "POST", "/sys-audit/emit", kAcme, "{\"reader\":\"svc\"}");
  ASSERT_EQ(ok.status, 200);
  EXPECT_EQ(ok.body, "OK");
  auto big = request(server_->port(), "POST", "/sys-audit/emit", kAcme,
                     "{\"x\":\"" + std::string(20000, 'a') + "\"}");
  EXPECT_THAT(big.body, HasSubstr("INVALID: audit record of"));
  EXPECT_THAT(big.body, HasSubstr("exceeds the 16 KiB limit"));
  auto bad = request(server_->port(), "POST", "/sys-audit/emit", kAcme, "[1]");
  EXPECT_THAT(bad.body, HasSubstr("INVALID: details must be a JSON object"));
  // Delivered asynchronously: wait for it as a reader of the trail would.
  Object::Ptr emitted;
  for (int i = 0; i < 100 && !emitted; ++i) {
    for (auto& r : records()) {
      if (r->getValue<std::string>("action") == "fixture.secret_read") emitted = r;
    }
    if (!emitted) std::this_thread::sleep_for(std::chrono::milliseconds(50));
  }
  ASSERT_TRUE(emitted);
  EXPECT_EQ(emitted->getValue<std::string>("type"), "plugin");
  EXPECT_EQ(emitted->getObject("actor")->getValue<std::string>("principal"), "fixture/sys-audit");
  EXPECT_EQ(emitted->getValue<std::string>("tenant"), "acme");
  EXPECT_EQ(emitted->getValue<std::string>("resource"), "secret/db");
}

}  // namespace
}  // namespace trellis::test
