// Review rules of trellis/audit on a real trellisd: an admin's Lua rule over a log's
// records, run by the kernel's script service. "More than 5 key creations by one principal
// in a minute" raises exactly one alert (an event fixture/alert-sub receives, and a metric);
// a dry run over stored records returns the matches and raises nothing; a hostile rule is
// stopped by its budget, reported, and appends go on; a tenant's rule sees only its log;
// every rule change is itself a record.
#include <Poco/JSON/Array.h>
#include <Poco/JSON/Object.h>
#include <gmock/gmock.h>
#include <gtest/gtest.h>

#include <chrono>
#include <string>
#include <thread>
#include <vector>

#include "audit_test_util.h"
#include "support/test_support.h"

namespace trellis::test {
namespace {

using ::testing::HasSubstr;

// The issue's example, as an admin would write it: a sliding minute per principal, one
// alert per burst.
constexpr const char* kKeyBurstRule = R"(-- More than 5 key creations by one principal in a minute.
local recent = {}   -- principal -> times (ms) of their key creations within the last minute
local alerted = {}  -- principal -> time of the creation that raised their last alert
function on_record(input)
  local r = input.record
  if r.type ~= "admin.response" or r.status ~= 201 then return nil end
  if not string.match(r.action, "^POST /v1/tenants/[^/]+/keys$") then return nil end
  local who, now = r.actor.name, input.time_ms
  local kept = {}
  for _, t in ipairs(recent[who] or {}) do
    if now - t < 60000 then kept[#kept + 1] = t end
  end
  kept[#kept + 1] = now
  recent[who] = kept
  if #kept > 5 and (alerted[who] == nil or now - alerted[who] >= 60000) then
    alerted[who] = now
    return {principal = who, count = #kept,
            message = "more than 5 key creations by " .. who .. " in a minute"}
  end
  return nil
end
)";

std::string ruleBody(const std::string& source) {
  Poco::JSON::Object o;
  o.set("source", source);
  std::ostringstream out;
  o.stringify(out);
  return out.str();
}

class AuditRulesTest : public ::testing::Test {
 protected:
  void SetUp() override {
    server_ = std::make_unique<TrellisdProcess>(
        defaultTestConfig("    - id: trellis/audit\n"
                          "      system: true\n"
                          "      config: {checkpoint_every: 1000, checkpoint_interval_s: 3600}\n"
                          "    - id: fixture/alert-sub\n",
                          "audit:\n  sink: trellis/audit\n  on_sink_failure: block\n"));
    ASSERT_TRUE(server_->start()) << server_->log();
  }
  HttpReply admin(const std::string& method, const std::string& path,
                  const std::string& body = "") {
    return request(server_->adminPort(), method, path,
                   {{"Authorization", "Bearer " + server_->adminToken()}}, body);
  }
  HttpReply rules(const std::string& method, const std::string& tail,
                  const std::string& body = "") {
    return admin(method, "/v1/x/trellis/audit/logs/" + tail, body);
  }
  std::vector<std::string> seen(const std::string& topic) {
    auto r =
        request(server_->port(), "GET", "/alert-sub/seen", {{"Authorization", "Bearer acme-key"}});
    EXPECT_EQ(r.status, 200) << r.body;
    std::vector<std::string> out;
    for (const auto& line : lines(r.body)) {
      if (line.rfind(topic + " ", 0) == 0) out.push_back(line.substr(topic.size() + 1));
    }
    return out;
  }
  // Events are delivered asynchronously: waits (up to 10 s) until `n` of `topic` arrived.
  std::vector<std::string> waitSeen(const std::string& topic, size_t n) {
    auto deadline = std::chrono::steady_clock::now() + std::chrono::seconds(10);
    auto got = seen(topic);
    while (got.size() < n && std::chrono::steady_clock::now() < deadline) {
      std::this_thread::sleep_for(std::chrono::milliseconds(50));
      got = seen(topic);
    }
    return got;
  }
  std::string metrics() { return admin("GET", "/metrics").body; }
  std::unique_ptr<TrellisdProcess> server_;
};

TEST_F(AuditRulesTest, MoreThanFiveKeyCreationsInAMinuteRaiseExactlyOneAlert) {
  auto put = rules("PUT", "_system/rules/key-burst", ruleBody(kKeyBurstRule));
  ASSERT_EQ(put.status, 200) << put.body << server_->log();
  EXPECT_EQ(json(put.body)->getValue<std::string>("state"), "active");

  for (int i = 0; i < 7; ++i) {
    auto created = admin("POST", "/v1/tenants/acme/keys", "{}");
    ASSERT_EQ(created.status, 201) << created.body;
  }
  auto alerts = waitSeen("review.alert", 1);
  ASSERT_EQ(alerts.size(), 1u) << server_->log();
  auto alert = json(alerts[0]);
  EXPECT_EQ(alert->getValue<std::string>("rule"), "key-burst");
  EXPECT_EQ(alert->getValue<std::string>("log"), "_system");
  EXPECT_GT(alert->getValue<int64_t>("seq"), 0);
  EXPECT_EQ(alert->getObject("alert")->getValue<int>("count"), 6);
  EXPECT_EQ(alert->getObject("alert")->getValue<std::string>("message"),
            "more than 5 key creations by bootstrap in a minute");
  EXPECT_THAT(metrics(),
              HasSubstr("trellis_plugin_audit_review_alerts_total{plugin=\"trellis/audit\"} 1"));

  // The rule's own record: who changed which rule, with the source's digest.
  auto records = rules("GET", "_system/records");
  ASSERT_EQ(records.status, 200);
  EXPECT_THAT(records.body, HasSubstr("\"action\":\"audit.rule.set\""));
  auto listed = json(rules("GET", "_system/rules").body)->getArray("rules");
  ASSERT_EQ(listed->size(), 1u);
  EXPECT_EQ(listed->getObject(0)->getValue<int>("alerts"), 1);

  // Nothing more for a later unrelated admin action.
  EXPECT_EQ(admin("GET", "/v1/tenants").status, 200);
  std::this_thread::sleep_for(std::chrono::milliseconds(200));
  EXPECT_EQ(seen("review.alert").size(), 1u);
}

TEST_F(AuditRulesTest, ADryRunReturnsTheMatchesOfStoredRecordsAndRaisesNothing) {
  for (int i = 0; i < 7; ++i) ASSERT_EQ(admin("POST", "/v1/tenants/acme/keys", "{}").status, 201);
  Poco::JSON::Object body;
  body.set("source", std::string(kKeyBurstRule));
  std::ostringstream text;
  body.stringify(text);
  auto dry = rules("POST", "_system/rules/dry-run", text.str());
  ASSERT_EQ(dry.status, 200) << dry.body;
  auto out = json(dry.body);
  auto matches = out->getArray("alerts");
  ASSERT_EQ(matches->size(), 1u) << dry.body;
  EXPECT_EQ(matches->getObject(0)->getObject("alert")->getValue<int>("count"), 6);
  EXPECT_GE(out->getValue<int>("records"), 14);  // a request and a response record each

  // A time range before the creations matches nothing.
  auto none = rules("POST", "_system/rules/dry-run",
                    R"({"source":"function on_record(i) return 1 end","to_ms":1000})");
  ASSERT_EQ(none.status, 200) << none.body;
  EXPECT_EQ(json(none.body)->getArray("alerts")->size(), 0u);

  // Nothing was raised: no event, no metric.
  std::this_thread::sleep_for(std::chrono::milliseconds(200));
  EXPECT_TRUE(seen("review.alert").empty());
  EXPECT_THAT(metrics(),
              ::testing::Not(HasSubstr(
                  "trellis_plugin_audit_review_alerts_total{plugin=\"trellis/audit\"} 1")));

  // A dry run of a rule that fails names the record and the script's message.
  auto failing = rules("POST", "_system/rules/dry-run",
                       R"({"source":"function on_record(i) return i.nope.x end"})");
  EXPECT_EQ(failing.status, 400);
  EXPECT_THAT(failing.body, HasSubstr("the rule failed on record 1"));
  EXPECT_THAT(failing.body, HasSubstr("_system/dry-run.lua:1:"));
}

TEST_F(AuditRulesTest, AHostileRuleIsStoppedByItsBudgetReportedAndAppendsGoOn) {
  // Refused outright: a syntax error, a memory bomb at load, no on_record.
  auto syntax = rules("PUT", "_system/rules/broken", ruleBody("function on_record(i"));
  EXPECT_EQ(syntax.status, 400);
  EXPECT_THAT(syntax.body, HasSubstr("_system/broken.lua:"));
  auto bomb =
      rules("PUT", "_system/rules/bomb",
            ruleBody("local t = {} for i = 1, 1e9 do t[i] = string.rep('x', 4096) .. i end"));
  EXPECT_EQ(bomb.status, 400);
  EXPECT_THAT(bomb.body, HasSubstr("budget of"));  // memory (or wall time, under load)
  auto nothing = rules("PUT", "_system/rules/empty", ruleBody("x = 1"));
  EXPECT_EQ(nothing.status, 400);
  EXPECT_THAT(nothing.body, HasSubstr("on_record"));

  // Accepted (its top level is fine), then stopped on the first record it sees.
  auto loop =
      rules("PUT", "_system/rules/loop", ruleBody("function on_record(i) while true do end end"));
  ASSERT_EQ(loop.status, 200) << loop.body;
  for (int i = 0; i < 3; ++i) EXPECT_EQ(admin("GET", "/v1/tenants").status, 200);
  auto failed = waitSeen("review.rule_failed", 1);
  ASSERT_EQ(failed.size(), 1u) << server_->log();
  EXPECT_THAT(failed[0], HasSubstr("instruction budget of 200000 exceeded"));
  EXPECT_THAT(failed[0], HasSubstr("\"suspended\":true"));
  auto listed = json(rules("GET", "_system/rules").body)->getArray("rules");
  ASSERT_EQ(listed->size(), 1u);
  EXPECT_EQ(listed->getObject(0)->getValue<std::string>("state"), "suspended");
  EXPECT_THAT(listed->getObject(0)->getValue<std::string>("error"),
              HasSubstr("_system/loop.lua: instruction budget of 200000 exceeded"));
  EXPECT_EQ(listed->getObject(0)->getValue<int>("evaluated"), 1);
  EXPECT_THAT(metrics(), HasSubstr("trellis_plugin_audit_review_rule_failures_total{plugin="
                                   "\"trellis/audit\"} 1"));

  // Appends went on: every action is in the log, and later ones too.
  const size_t before = lines(rules("GET", "_system/records").body).size();
  EXPECT_EQ(admin("GET", "/v1/tenants").status, 200);
  EXPECT_GT(lines(rules("GET", "_system/records").body).size(), before);

  // Replacing the rule starts it again; deleting it is recorded too.
  EXPECT_EQ(rules("DELETE", "_system/rules/loop").status, 204);
  EXPECT_EQ(rules("DELETE", "_system/rules/loop").status, 404);
  EXPECT_THAT(rules("GET", "_system/records").body, HasSubstr("\"action\":\"audit.rule.delete\""));
}

TEST_F(AuditRulesTest, ATenantsRuleSeesOnlyItsOwnLog) {
  // Every record the rule is given becomes an alert naming its tenant.
  auto put = rules("PUT", "acme/rules/everything",
                   ruleBody("function on_record(i) return {tenant = i.record.tenant, "
                            "log = i.log, action = i.record.action} end"));
  ASSERT_EQ(put.status, 200) << put.body;
  // Reading its own log on the data plane is recorded in each tenant's log.
  for (const std::string key : {"globex-key", "acme-key", "globex-key"}) {
    auto read =
        request(server_->port(), "GET", "/audit/v1/records", {{"Authorization", "Bearer " + key}});
    ASSERT_EQ(read.status, 200) << read.body;
  }
  // Wait until both tenants' reads are in their logs, then for the alerts.
  auto deadline = std::chrono::steady_clock::now() + std::chrono::seconds(10);
  while (std::chrono::steady_clock::now() < deadline &&
         (lines(rules("GET", "globex/records").body).size() < 2 ||
          lines(rules("GET", "acme/records").body).empty())) {
    std::this_thread::sleep_for(std::chrono::milliseconds(50));
  }
  ASSERT_EQ(lines(rules("GET", "globex/records").body).size(), 2u);
  const size_t acme_records = lines(rules("GET", "acme/records").body).size();
  ASSERT_EQ(acme_records, 2u);  // the rule change (before the rule existed) and the read
  waitSeen("review.alert", 1);
  std::this_thread::sleep_for(std::chrono::milliseconds(200));
  auto alerts = seen("review.alert");
  ASSERT_EQ(alerts.size(), 1u);  // acme's read; none of globex's two
  EXPECT_THAT(alerts[0], HasSubstr("audit.read"));
  for (const auto& a : alerts) {
    auto alert = json(a);
    EXPECT_EQ(alert->getValue<std::string>("log"), "acme");
    EXPECT_EQ(alert->getObject("alert")->getValue<std::string>("tenant"), "acme") << a;
  }
  // A dry run of acme's log sees acme's records only.
  auto dry = rules("POST", "acme/rules/dry-run", R"({"rule":"everything"})");
  ASSERT_EQ(dry.status, 200) << dry.body;
  EXPECT_EQ(dry.body.find("globex"), std::string::npos) << dry.body;
  EXPECT_EQ(json(dry.body)->getValue<size_t>("records"), acme_records);
}

}  // namespace
}  // namespace trellis::test
