// Admin policies on the engine: hook semantics, per-tenant override, apply/rollback with
// versions that survive a restart, errors that name file:line, fail open/closed, and
// escape attempts through the policy API (each followed by a request that still passes).
#include "trellis/kernel/lua/policy_engine.h"

#include <gmock/gmock.h>
#include <gtest/gtest.h>

#include <fstream>
#include <string>

#include "support/test_support.h"
#include "trellis/kernel/lua/policy_store.h"
#include "trellis/kernel/metrics/registry.h"
#include "trellis/kernel/storage/kv_store.h"

namespace trellis::kernel::lua {
namespace {

using ::testing::HasSubstr;
using ::testing::Not;
using Action = Verdict::Action;

class PolicyEngineTest : public ::testing::Test {
 protected:
  void SetUp() override {
    acme_.id = "acme";
    acme_.plan = "pro";
    acme_.labels = {{"team", "payments"}};
    acme_.quotas.requests_per_second = 10;
    globex_.id = "globex";
    globex_.plan = "free";
    auto kv = storage::openSqliteKvStore(dir_ / "kv");
    ASSERT_TRUE(kv);
    kv_ = std::move(*kv);
    ASSERT_TRUE(kv_->put({"acme", "trellis/hello"}, "tier", "gold", storage::kAnyVersion));
    ASSERT_TRUE(
        kv_->put({"globex", "trellis/hello"}, "secret", "globex-only", storage::kAnyVersion));
    options_.budget = Budget{.instructions = 100'000,
                             .memory_bytes = 1024 * 1024,
                             .wall_time = std::chrono::seconds(10)};
    makeEngine();
  }

  void makeEngine() {
    engine_.reset();
    auto store = PolicyStore::open(dir_ / "policies");
    ASSERT_TRUE(store);
    engine_ = std::make_unique<PolicyEngine>(options_, std::move(*store), kv_.get(), &metrics_);
    ASSERT_TRUE(engine_->start());
  }

  http::Request request(const std::string& target = "/hello/ann",
                        std::map<std::string, std::string> headers = {}) {
    http::Request req{boost::beast::http::verb::get, target, 11};
    for (const auto& [k, v] : headers) req.set(k, v);
    return req;
  }

  RequestContext ctx(const tenants::TenantView& t, std::string_view addr = "10.1.2.3") {
    return RequestContext{&t, "1a2b3c4d", "/hello/{name}", addr, nullptr};
  }

  Verdict onRequest(const tenants::TenantView& t, const http::Request& req) {
    return engine_->onRequest(ctx(t), req);
  }

  void applyGlobal(const std::string& source) {
    auto applied = engine_->apply("", "global.lua", source);
    ASSERT_TRUE(applied) << applied.status().toString();
  }

  // After an escape attempt: a plain policy still decides for the next request.
  void expectStillServes() {
    applyGlobal(
        "function on_request(ctx, req) return policy.deny(418, 'teapot ' .. ctx.tenant) end");
    auto req = request();
    auto v = onRequest(acme_, req);
    EXPECT_FALSE(v.failed) << v.eval.error;
    EXPECT_EQ(v.status, 418u);
    EXPECT_EQ(v.reason, "teapot acme");
  }

  test::TempDir dir_;
  tenants::TenantView acme_, globex_;
  std::unique_ptr<storage::KvStore> kv_;
  metrics::MetricsRegistry metrics_;
  PolicyOptions options_;
  std::unique_ptr<PolicyEngine> engine_;
};

TEST_F(PolicyEngineTest, NoPolicyMeansInactiveAndNotEvaluated) {
  EXPECT_FALSE(engine_->active());
  auto req = request();
  auto v = onRequest(acme_, req);
  EXPECT_FALSE(v.evaluated);
  EXPECT_EQ(v.action, Action::kAllow);
}

TEST_F(PolicyEngineTest, AllowDenyAndModifyFollowThePolicy) {
  applyGlobal(R"(
    function on_request(ctx, req)
      if req.headers["x-block"] then return policy.deny(403, "blocked for " .. ctx.tenant) end
      if req.path == "/hello/rewrite" then
        return policy.modify({["X-Tenant-Plan"] = ctx.plan, ["X-Drop"] = false})
      end
      return policy.allow()
    end)");
  EXPECT_TRUE(engine_->active());
  auto plain = request();
  auto v = onRequest(acme_, plain);
  EXPECT_TRUE(v.evaluated);
  EXPECT_EQ(v.action, Action::kAllow);
  EXPECT_EQ(v.policy_version, 1u);

  auto blocked = request("/hello/ann", {{"X-Block", "1"}});
  v = onRequest(acme_, blocked);
  EXPECT_EQ(v.action, Action::kDeny);
  EXPECT_EQ(v.status, 403u);
  EXPECT_EQ(v.decision_id.size(), 16u);
  EXPECT_EQ(v.reason, "blocked for acme");

  auto rewrite = request("/hello/rewrite", {{"X-Drop", "secret"}});
  v = onRequest(acme_, rewrite);
  ASSERT_EQ(v.action, Action::kModify);
  applyHeaderEdits(v.headers, rewrite.base());
  EXPECT_EQ(rewrite["X-Tenant-Plan"], "pro");
  EXPECT_EQ(rewrite.count("X-Drop"), 0u);
}

TEST_F(PolicyEngineTest, CtxShowsTenantPrincipalRouteLabelsAndQuota) {
  applyGlobal(R"(
    function on_request(ctx, req)
      return policy.deny(400, table.concat({ctx.tenant, ctx.plan, ctx.principal, ctx.route,
        ctx.labels.team, tostring(ctx.quota.requests_per_second), ctx.hook,
        tostring(ctx.policy_version), ctx.scope, tostring(type(ctx.time) == "number"),
        ctx.decision_id, req.method, req.remote_addr}, "|"))
    end)");
  auto req = request();
  auto v = onRequest(acme_, req);
  ASSERT_EQ(v.decision_id.size(), 16u);  // the id the script read is the verdict's
  EXPECT_EQ(v.reason, "acme|pro|key:1a2b3c4d|/hello/{name}|payments|10|on_request|1|global|true|" +
                          v.decision_id + "|GET|10.1.2.3");
}

TEST_F(PolicyEngineTest, ATokenCallersPrincipalIsItsPrefixedSubject) {
  applyGlobal(R"(
    function on_request(ctx, req) return policy.deny(400, ctx.principal) end)");
  auto req = request();
  RequestContext rc = ctx(acme_);
  rc.key_id = "jwt:alice@acme.test";  // what the data plane sets for a signed token
  EXPECT_EQ(engine_->onRequest(rc, req).reason, "jwt:alice@acme.test");
}

TEST_F(PolicyEngineTest, CidrMatchAndJsonHelpersWork) {
  applyGlobal(R"(
    function on_request(ctx, req)
      local inside = policy.cidr_match(req.remote_addr, {"192.168.0.0/16", "10.0.0.0/8"})
      local v6 = policy.cidr_match("2001:db8::1", "2001:db8::/32")
      local outside = policy.cidr_match("11.0.0.1", "10.0.0.0/8")
      local doc = policy.json_decode('{"n": 2}')
      return policy.deny(400, policy.json_encode({inside = inside, v6 = v6, outside = outside,
                                                  n = doc.n}))
    end)");
  auto req = request();
  auto v = onRequest(acme_, req);
  EXPECT_THAT(v.reason, HasSubstr("\"inside\":true"));
  EXPECT_THAT(v.reason, HasSubstr("\"v6\":true"));
  EXPECT_THAT(v.reason, HasSubstr("\"outside\":false"));
  EXPECT_THAT(v.reason, HasSubstr("\"n\":2"));
}

// Addresses are read as inet_pton reads them: what it refuses never matches, even 0.0.0.0/0.
TEST_F(PolicyEngineTest, CidrMatchReadsAddressesStrictly) {
  applyGlobal(R"(
    local cases = {"0.0.0.0", "255.255.255.255", "10.1.2.3", "::ffff:10.1.2.3", "01.2.3.4",
                   "1.2.3", "1.2.3.4.", "256.1.1.1", "1..2.3", "1.2.3.4 ", "", "1.2.3.1000",
                   ".1.2.3", "1.2.3.-4", "a.b.c.d"}
    function on_request(ctx, req)
      local out = {}
      for _, ip in ipairs(cases) do
        out[#out + 1] = (policy.cidr_match(ip, {"0.0.0.0/0", "::/0"}) and "y" or "n") ..
                        (policy.cidr_match(ip, "10.0.0.0/8") and "y" or "n")
      end
      return policy.deny(400, table.concat(out, " "))
    end)");
  auto req = request();
  EXPECT_EQ(onRequest(acme_, req).reason, "yn yn yy yy nn nn nn nn nn nn nn nn nn nn nn");
  for (const char* bad : {"010.0.0.0/8", "10.0.0/8", "10.0.0.0/", "10.0.0.0/33", "10.0.0.0/a"}) {
    applyGlobal(std::string("function on_request() policy.cidr_match('10.0.0.1', '") + bad +
                "') end");
    auto v = onRequest(acme_, req);
    EXPECT_THAT(v.eval.error, HasSubstr("invalid CIDR")) << bad;
  }
}

// Parsed CIDRs are cached per thread by text: many distinct ones, made on the fly and
// matched twice over, must each still answer for their own network.
TEST_F(PolicyEngineTest, CidrMatchStaysRightAcrossManyDistinctCidrs) {
  applyGlobal(R"(
    function on_request(ctx, req)
      local wrong = 0
      for pass = 1, 2 do
        for i = 0, 255 do
          local cidr = "10." .. i .. ".0.0/16"
          if not policy.cidr_match("10." .. i .. ".7.7", cidr) then wrong = wrong + 1 end
          if policy.cidr_match("10." .. (i + 1) % 256 .. ".7.7", cidr) then wrong = wrong + 1 end
          if not policy.cidr_match("10." .. i .. ".7.7", {"192.0.2.0/24", cidr}) then
            wrong = wrong + 1
          end
        end
      end
      return policy.deny(400, "wrong " .. wrong)
    end)");
  auto req = request();
  EXPECT_EQ(onRequest(acme_, req).reason, "wrong 0");
}

TEST_F(PolicyEngineTest, InvalidCidrIsAnErrorThatFailsClosed) {
  applyGlobal("function on_request(ctx, req) policy.cidr_match('1.2.3.4', '10.0.0.0/99') end");
  auto req = request();
  auto v = onRequest(acme_, req);
  EXPECT_TRUE(v.failed);
  EXPECT_THAT(v.eval.error, HasSubstr("invalid CIDR"));
  EXPECT_EQ(v.action, Action::kDeny);
  EXPECT_EQ(v.status, 500u);
}

TEST_F(PolicyEngineTest, KvGetReadsOnlyTheCallingTenantsData) {
  applyGlobal(R"(
    function on_request(ctx, req)
      return policy.deny(400, tostring(policy.kv_get("trellis/hello", "tier")) .. "," ..
                              tostring(policy.kv_get("trellis/hello", "secret")))
    end)");
  auto req = request();
  EXPECT_EQ(onRequest(acme_, req).reason, "gold,nil");  // globex's key is not visible
  EXPECT_EQ(onRequest(globex_, req).reason, "nil,globex-only");
}

TEST_F(PolicyEngineTest, TenantPolicyOverridesTheGlobalOne) {
  applyGlobal("function on_request() return policy.deny(403, 'global') end");
  auto t = engine_->apply("acme", "acme.lua",
                          "function on_request() return policy.deny(403, 'acme') end");
  ASSERT_TRUE(t) << t.status().toString();
  EXPECT_EQ(t->scope, "tenant:acme");
  auto req = request();
  EXPECT_EQ(onRequest(acme_, req).reason, "acme");
  EXPECT_EQ(onRequest(globex_, req).reason, "global");
}

// A hook only a tenant's policy defines still runs for that tenant, and stops running once
// that policy is removed.
TEST_F(PolicyEngineTest, HookDefinedOnlyByATenantPolicyRunsForThatTenant) {
  applyGlobal("function on_request() end");
  ASSERT_TRUE(engine_->apply("acme", "acme.lua", R"(
    function on_response(ctx, res) return policy.modify({["X-Acme"] = "1"}) end)"));
  auto req = request();
  http::Response res{boost::beast::http::status::ok, 11};
  EXPECT_EQ(engine_->onResponse(ctx(acme_), req, res).action, Action::kModify);
  EXPECT_FALSE(engine_->onResponse(ctx(globex_), req, res).evaluated);
  ASSERT_TRUE(engine_->remove("acme"));
  EXPECT_FALSE(engine_->onResponse(ctx(acme_), req, res).evaluated);
}

TEST_F(PolicyEngineTest, RemovedTenantPolicyFallsBackToGlobalAndRollbackRestoresIt) {
  applyGlobal("function on_request() return policy.deny(403, 'global') end");
  ASSERT_TRUE(engine_->apply("acme", "acme.lua",
                             "function on_request() return policy.deny(403, 'acme') end"));
  ASSERT_TRUE(engine_->remove("acme"));
  auto req = request();
  EXPECT_EQ(onRequest(acme_, req).reason, "global");
  EXPECT_FALSE(engine_->remove("acme"));  // nothing left to remove
  makeEngine();                           // removal survives a restart
  EXPECT_EQ(onRequest(acme_, req).reason, "global");
  auto back = engine_->rollback("acme");
  ASSERT_TRUE(back) << back.status().toString();
  EXPECT_EQ(back->version, 1u);
  EXPECT_EQ(onRequest(acme_, req).reason, "acme");
  ASSERT_TRUE(engine_->remove(""));
  EXPECT_EQ(onRequest(globex_, req).evaluated, false);
  EXPECT_TRUE(engine_->active());  // acme's policy is still there
}

TEST_F(PolicyEngineTest, OnResponseModifiesHeadersOnly) {
  applyGlobal(R"(
    function on_response(ctx, res)
      return policy.modify({["X-Status-Seen"] = tostring(res.status),
                            ["Server"] = false})
    end)");
  auto req = request();
  http::Response res{boost::beast::http::status::created, 11};
  res.set("Server", "trellis");
  auto v = engine_->onResponse(ctx(acme_), req, res);
  ASSERT_EQ(v.action, Action::kModify) << v.eval.error;
  applyHeaderEdits(v.headers, res.base());
  EXPECT_EQ(res["X-Status-Seen"], "201");
  EXPECT_EQ(res.count("Server"), 0u);

  applyGlobal("function on_response(ctx, res) return policy.deny(403, 'no') end");
  v = engine_->onResponse(ctx(acme_), req, res);
  EXPECT_TRUE(v.failed);  // fails open by default: the response goes out unchanged
  EXPECT_EQ(v.action, Action::kAllow);
  EXPECT_THAT(v.eval.error, HasSubstr("on_response must return"));
}

TEST_F(PolicyEngineTest, OnQuotaExceededCustomisesTheRefusal) {
  applyGlobal(R"(
    function on_quota_exceeded(ctx, q)
      return {status = 503, message = ctx.tenant .. " over " .. q.quota .. " " .. q.limit,
              headers = {["X-Upgrade"] = "https://example.com/plans"}}
    end)");
  tenants::Rejection r;
  r.quota = "requests_per_second";
  r.limit = 20;
  r.reset_seconds = 1;
  r.decision_id = "d1";
  auto v = engine_->onQuotaExceeded(ctx(acme_), r);
  EXPECT_FALSE(v.failed) << v.eval.error;
  EXPECT_EQ(v.status, 503u);
  EXPECT_EQ(v.reason, "acme over requests_per_second 20");
  ASSERT_EQ(v.headers.size(), 1u);
  EXPECT_EQ(v.headers[0].name, "X-Upgrade");
}

TEST_F(PolicyEngineTest, OnPluginInstallAllowsOrDenies) {
  applyGlobal(R"(
    function on_plugin_install(ctx, m)
      for _, cap in ipairs(m.capabilities) do
        if cap == "egress" then return policy.deny(403, m.id .. " wants egress") end
      end
      return policy.allow()
    end)");
  PluginInstall quiet{"acme/quiet", "1.0.0", "acme", "https://registry", {"kv"}, "", "admin"};
  EXPECT_EQ(engine_->onPluginInstall(quiet).action, Action::kAllow);
  PluginInstall chatty{"acme/chatty",    "1.0.0", "acme", "https://registry",
                       {"kv", "egress"}, "",      "admin"};
  auto v = engine_->onPluginInstall(chatty);
  EXPECT_EQ(v.action, Action::kDeny);
  EXPECT_EQ(v.reason, "acme/chatty wants egress");
}

TEST_F(PolicyEngineTest, ApplyErrorsNameFileAndLineAndKeepTheOldVersion) {
  applyGlobal("function on_request() return policy.deny(403, 'v1') end");
  auto syntax = engine_->apply("", "broken.lua", "function on_request()\n  return = 1\nend\n");
  ASSERT_FALSE(syntax);
  EXPECT_THAT(syntax.status().message(), HasSubstr("broken.lua:2:"));
  auto runtime = engine_->apply("", "boom.lua", "local x = nil\nlocal y = x.field\n");
  ASSERT_FALSE(runtime);
  EXPECT_THAT(runtime.status().message(), HasSubstr("boom.lua:2:"));
  auto nohooks = engine_->apply("", "empty.lua", "local x = 1\n");
  ASSERT_FALSE(nohooks);
  EXPECT_THAT(nohooks.status().message(), HasSubstr("defines none of the hooks"));
  auto req = request();
  auto v = onRequest(acme_, req);
  EXPECT_EQ(v.reason, "v1");
  EXPECT_EQ(v.policy_version, 1u);
}

TEST_F(PolicyEngineTest, VersionsIncrementRollBackAndSurviveRestart) {
  applyGlobal("function on_request() return policy.deny(403, 'one') end");
  applyGlobal("function on_request() return policy.deny(403, 'two') end");
  auto req = request();
  EXPECT_EQ(onRequest(acme_, req).policy_version, 2u);
  auto back = engine_->rollback("");
  ASSERT_TRUE(back) << back.status().toString();
  EXPECT_EQ(back->version, 1u);
  EXPECT_EQ(onRequest(acme_, req).reason, "one");
  auto none = engine_->rollback("");
  EXPECT_FALSE(none);
  EXPECT_THAT(none.status().message(), HasSubstr("no earlier version"));

  applyGlobal("function on_request() return policy.deny(403, 'three') end");
  makeEngine();  // a restart: the active version comes back from the data dir
  auto v = onRequest(acme_, req);
  EXPECT_EQ(v.reason, "three");
  EXPECT_EQ(v.policy_version, 3u);
  ASSERT_EQ(engine_->list().size(), 1u);
  EXPECT_EQ(engine_->list()[0].hooks, std::vector<std::string>{"on_request"});
}

TEST_F(PolicyEngineTest, FailClosedRefusesAndFailOpenAllows) {
  applyGlobal("function on_request() while true do end end");
  auto req = request();
  auto closed = onRequest(acme_, req);
  EXPECT_TRUE(closed.failed);
  EXPECT_EQ(closed.eval.outcome, Outcome::kInstructionLimit);
  EXPECT_EQ(closed.action, Action::kDeny);
  EXPECT_EQ(closed.status, 500u);
  EXPECT_THAT(closed.reason, HasSubstr(closed.decision_id));

  options_.fail[static_cast<size_t>(Hook::kOnRequest)] = FailMode::kOpen;
  makeEngine();
  auto open = onRequest(acme_, req);
  EXPECT_TRUE(open.failed);
  EXPECT_EQ(open.action, Action::kAllow);
  std::string text = metrics_.render();
  EXPECT_THAT(text, HasSubstr("trellis_policy_decisions_total{hook=\"on_request\",result="
                              "\"failed_closed\"} 1"));
  EXPECT_THAT(text, HasSubstr("trellis_policy_decisions_total{hook=\"on_request\",result="
                              "\"failed_open\"} 1"));
  EXPECT_THAT(text, HasSubstr("trellis_policy_failures_total{hook=\"on_request\",cause="
                              "\"instructions\"} 2"));
}

TEST_F(PolicyEngineTest, RunawayPolicyStopsBeingRunAfterRepeatedOverruns) {
  applyGlobal("function on_request() while true do end end");
  auto req = request();
  for (int i = 0; i < 5; ++i) {
    auto v = onRequest(acme_, req);
    EXPECT_EQ(v.eval.outcome, Outcome::kInstructionLimit);
    EXPECT_GT(v.eval.usage.instructions, 0u);
  }
  auto skipped = onRequest(acme_, req);
  EXPECT_TRUE(skipped.failed);
  EXPECT_EQ(skipped.status, 500u);  // still fails closed
  EXPECT_EQ(skipped.eval.outcome, Outcome::kInstructionLimit);
  EXPECT_EQ(skipped.eval.usage.instructions, 0u);  // but costs nothing
  EXPECT_THAT(skipped.eval.error, HasSubstr("not run"));
  // A fixed version runs at once.
  applyGlobal("function on_request() return policy.deny(418, 'fixed') end");
  EXPECT_EQ(onRequest(acme_, req).reason, "fixed");
}

TEST_F(PolicyEngineTest, DecisionLogRecordsEachDecisionAsJson) {
  options_.decision_log = (dir_ / "decisions.log").string();
  makeEngine();
  applyGlobal("function on_request(ctx, req) policy.metric('seen') return policy.allow() end");
  auto req = request();
  auto v = onRequest(acme_, req);
  engine_.reset();  // flushes
  std::string log = test::readFile(dir_ / "decisions.log");
  EXPECT_THAT(log, HasSubstr("\"decision_id\":\"" + v.decision_id + "\""));
  EXPECT_THAT(log, HasSubstr("\"hook\":\"on_request\""));
  EXPECT_THAT(log, HasSubstr("\"result\":\"allow\""));
  EXPECT_THAT(log, HasSubstr("\"instructions\":"));
  EXPECT_THAT(log, HasSubstr("\"peak_memory_bytes\":"));
  EXPECT_THAT(metrics_.render(), HasSubstr("trellis_policy_metric_total{name=\"seen\"} 1"));
}

TEST_F(PolicyEngineTest, SampledDecisionLogStillRecordsEveryFailure) {
  options_.decision_log = (dir_ / "sampled.log").string();
  options_.decision_log_sample = 0;
  makeEngine();
  applyGlobal("function on_request(ctx, req) if req.headers['x-fail'] then error('boom') end end");
  auto ok = request();
  auto failing = request("/hello/ann", {{"X-Fail", "1"}});
  for (int i = 0; i < 10; ++i) onRequest(acme_, ok);
  auto v = onRequest(acme_, failing);
  engine_.reset();
  std::string log = test::readFile(dir_ / "sampled.log");
  EXPECT_THAT(log, Not(HasSubstr("\"result\":\"allow\"")));
  EXPECT_THAT(log, HasSubstr("\"decision_id\":\"" + v.decision_id + "\""));
  EXPECT_THAT(log, HasSubstr("global.lua:1: boom"));
}

TEST_F(PolicyEngineTest, DecisionLogIsOffByDefault) {
  applyGlobal("function on_request() end");
  auto req = request();
  onRequest(acme_, req);
  engine_.reset();
  for (const auto& entry : std::filesystem::recursive_directory_iterator(dir_.path())) {
    EXPECT_THAT(entry.path().filename().string(), Not(HasSubstr("decision")));
  }
}

// ---- escape attempts through the policy API

TEST_F(PolicyEngineTest, CtxAndReqAreReadOnly) {
  applyGlobal("function on_request(ctx, req) ctx.tenant = 'globex' end");
  auto req = request();
  auto v = onRequest(acme_, req);
  EXPECT_TRUE(v.failed);
  EXPECT_THAT(v.eval.error, HasSubstr("read-only"));
  applyGlobal("function on_request(ctx, req) req.headers['x-a'] = '1' end");
  EXPECT_THAT(onRequest(acme_, req).eval.error, HasSubstr("read-only"));
  applyGlobal("function on_request(ctx, req) return tostring(getmetatable(ctx)) end");
  expectStillServes();
}

TEST_F(PolicyEngineTest, CtxKeptPastItsCallCannotBeUsed) {
  applyGlobal(R"(
    function on_request(ctx, req)
      if saved then return policy.deny(400, tostring(saved.tenant)) end
      saved = ctx
    end
    function on_response(ctx, res) end)");
  auto req = request();
  onRequest(acme_, req);
  // The kept ctx shows the *current* call's tenant, never a stale one.
  EXPECT_EQ(onRequest(globex_, req).reason, "globex");
  expectStillServes();
}

TEST_F(PolicyEngineTest, PolicyHelpersCannotBeOverwritten) {
  applyGlobal("function on_request() policy.deny = function() return nil end end");
  auto req = request();
  auto v = onRequest(acme_, req);
  EXPECT_TRUE(v.failed);
  EXPECT_THAT(v.eval.error, HasSubstr("read-only"));
  expectStillServes();
}

TEST_F(PolicyEngineTest, DecisionTableMetamethodsDoNotRunInTheHost) {
  applyGlobal(R"(
    function on_request()
      return setmetatable({}, {__index = function() while true do end end})
    end)");
  auto req = request();
  auto v = onRequest(acme_, req);
  EXPECT_TRUE(v.failed);
  EXPECT_EQ(v.eval.outcome, Outcome::kError);
  expectStillServes();
}

TEST_F(PolicyEngineTest, AHandMadeDenyIsHeldToPolicyDenysLimits) {
  const std::pair<const char*, const char*> tables[] = {
      {"{action = 'deny', status = 403, reason = ('x'):rep(1025)}", "at most 1024 bytes"},
      {"{action = 'deny', status = 403}", "reason must be a string"},
      {"{action = 'deny', status = 403, reason = 42}", "reason must be a string"},
      {"{action = 'deny', status = 200, reason = 'no'}", "integer from 400 to 599"},
      {"{action = 'deny', status = 403.5, reason = 'no'}", "integer from 400 to 599"},
      {"{action = 'deny', status = '403', reason = 'no'}", "integer from 400 to 599"},
      {"{action = 'deny', status = 403, reason = 'no', headers = {['Set-Cookie'] = 'x'}}",
       "sets no headers"},
  };
  auto req = request();
  for (const auto& [table, error] : tables) {
    SCOPED_TRACE(table);
    applyGlobal(std::string("function on_request() return ") + table + " end");
    auto v = onRequest(acme_, req);
    EXPECT_TRUE(v.failed);
    EXPECT_THAT(v.eval.error, HasSubstr(error));
    EXPECT_EQ(v.status, 500u);  // failed closed, not the table's
  }
  applyGlobal("function on_request() return {action = 'deny', status = 451, reason = 'law'} end");
  auto v = onRequest(acme_, req);
  EXPECT_FALSE(v.failed) << v.eval.error;
  EXPECT_EQ(v.status, 451u);
  EXPECT_EQ(v.reason, "law");
}

TEST_F(PolicyEngineTest, HeaderInjectionIsRefused) {
  applyGlobal("function on_request() return policy.modify({['X-A'] = 'v\\r\\nSet-Cookie: x'}) end");
  auto req = request();
  auto v = onRequest(acme_, req);
  EXPECT_TRUE(v.failed);
  EXPECT_THAT(v.eval.error, HasSubstr("invalid value"));
  applyGlobal("function on_request() return policy.modify({['Content-Length'] = '0'}) end");
  EXPECT_THAT(onRequest(acme_, req).eval.error, HasSubstr("cannot be changed"));
  expectStillServes();
}

TEST_F(PolicyEngineTest, MemoryBombInAHookFailsClosedAndTheNextRequestPasses) {
  applyGlobal("function on_request() local t = {} for i = 1, 1e9 do t[i] = ('x'):rep(64) end end");
  auto req = request();
  auto v = onRequest(acme_, req);
  EXPECT_EQ(v.eval.outcome, Outcome::kMemoryLimit);
  EXPECT_EQ(v.status, 500u);
  expectStillServes();
}

TEST_F(PolicyEngineTest, StateKeptBetweenCallsIsPerPolicy) {
  // Globals persist between calls of one policy (a sandbox per thread and version) but
  // never leak into another tenant's policy.
  applyGlobal(
      "count = 0 function on_request() count = count + 1 "
      "return policy.deny(400, tostring(count)) end");
  ASSERT_TRUE(engine_->apply("acme", "acme.lua",
                             "function on_request() return policy.deny(400, tostring(count)) end"));
  auto req = request();
  EXPECT_EQ(onRequest(globex_, req).reason, "1");
  EXPECT_EQ(onRequest(globex_, req).reason, "2");
  EXPECT_EQ(onRequest(acme_, req).reason, "nil");
}

}  // namespace
}  // namespace trellis::kernel::lua
