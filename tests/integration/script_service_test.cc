// The script service (ABI 1.2 script_load/script_call) on a real trellisd, through
// tests/fixtures/script: a plugin's Lua runs in the kernel's sandbox with JSON in and out,
// errors and budgets come back as clear statuses with the script's message, the operator's
// `lua:` budget caps what a plugin asks for, and a handle belongs to the tenant that loaded
// it. ctest runs this suite again with the plugin in a worker process
// (it_script_service_test_in_workers), where every call crosses the process boundary.
#include <gmock/gmock.h>
#include <gtest/gtest.h>

#include <memory>
#include <string>

#include "support/test_support.h"

namespace trellis::test {
namespace {

using ::testing::HasSubstr;

class ScriptServiceTest : public ::testing::Test {
 protected:
  void start(const std::string& plugin_extra = "") {
    server_ = std::make_unique<TrellisdProcess>(
        defaultTestConfig("    - id: fixture/script\n" + plugin_extra));
    ASSERT_TRUE(server_->start()) << server_->log();
  }
  void SetUp() override { start(); }
  HttpReply post(const std::string& path, const std::string& body,
                 const std::string& key = "acme-key") {
    return request(server_->port(), "POST", path, {{"Authorization", "Bearer " + key}}, body);
  }
  // The handle of a loaded script, or "" (with the failure reported).
  std::string load(const std::string& source, const std::string& query = "name=rule.lua",
                   const std::string& key = "acme-key") {
    auto r = post("/script/load?" + query, source, key);
    EXPECT_EQ(r.status, 200) << r.body << server_->log();
    return r.status == 200 ? r.body : "";
  }
  HttpReply call(const std::string& h, const std::string& fn, const std::string& input,
                 const std::string& key = "acme-key") {
    return post("/script/call/" + h + "/" + fn, input, key);
  }
  std::unique_ptr<TrellisdProcess> server_;
};

TEST_F(ScriptServiceTest, ALoadedScriptAnswersCallsAndKeepsItsStateUntilClosed) {
  const std::string h = load(R"(
    local seen = {}
    function count(r)
      seen[r.who] = (seen[r.who] or 0) + 1
      return {r.who, seen[r.who]}
    end)");
  ASSERT_FALSE(h.empty());
  EXPECT_EQ(call(h, "count", R"({"who":"carol"})").body, R"(["carol",1])");
  auto second = call(h, "count", R"({"who":"carol"})");
  EXPECT_EQ(second.status, 200);
  EXPECT_EQ(second.body, R"(["carol",2])");
  auto closed =
      request(server_->port(), "DELETE", "/script/" + h, {{"Authorization", "Bearer acme-key"}});
  EXPECT_EQ(closed.status, 204) << closed.body;
  auto after = call(h, "count", R"({"who":"carol"})");
  EXPECT_EQ(after.status, 400) << after.body;
  EXPECT_THAT(after.body, HasSubstr("handle " + h));
}

TEST_F(ScriptServiceTest, ErrorsComeBackAsStatusesWithTheScriptsMessage) {
  auto syntax = post("/script/load?name=rule.lua", "function f(\n  return +\nend");
  EXPECT_EQ(syntax.status, 400);
  EXPECT_THAT(syntax.body, HasSubstr("rule.lua:"));
  const std::string h = load("function f(r) return r.a.b end");
  ASSERT_FALSE(h.empty());
  auto runtime = call(h, "f", "{}");
  EXPECT_EQ(runtime.status, 400);
  EXPECT_THAT(runtime.body, HasSubstr("rule.lua:1: attempt to index"));
  auto missing = call(h, "g", "{}");
  EXPECT_EQ(missing.status, 404);
  EXPECT_THAT(missing.body, HasSubstr("rule.lua defines no function g"));
  auto not_json = call(h, "f", "{nope");
  EXPECT_EQ(not_json.status, 400);
  EXPECT_THAT(not_json.body, HasSubstr("the input is not JSON"));
  EXPECT_EQ(call(h, "f", R"({"a":{"b":5}})").body, "5");  // still usable
}

TEST_F(ScriptServiceTest, HostileScriptsAreStoppedByTheirBudgetAndTheServerGoesOn) {
  const std::string spin = load("function spin() while true do end end",
                                "name=spin.lua&instructions=100000&wall_ms=1000");
  ASSERT_FALSE(spin.empty());
  auto looped = call(spin, "spin", "null");
  EXPECT_EQ(looped.status, 429);
  EXPECT_THAT(looped.body, HasSubstr("spin.lua: instruction budget of 100000 exceeded"));

  const std::string slow =
      load("function spin() while true do end end",
           "name=slow.lua&instructions=10000000&wall_ms=1");  // 10M take longer
  ASSERT_FALSE(slow.empty());
  auto timed_out = call(slow, "spin", "null");
  EXPECT_EQ(timed_out.status, 504);
  EXPECT_THAT(timed_out.body, HasSubstr("slow.lua: "));

  const std::string bomb = load(
      "function bomb() local t = {} for i = 1, 1e9 do t[i] = string.rep('x', 4096) .. i end end",
      "name=bomb.lua&memory=1048576&instructions=1000000000&wall_ms=1000");
  ASSERT_FALSE(bomb.empty());
  auto exploded = call(bomb, "bomb", "null");
  EXPECT_EQ(exploded.status, 429);
  EXPECT_THAT(exploded.body, HasSubstr("memory"));

  // The server and the scripts themselves are still there.
  const std::string h = load("function ok() return 'fine' end");
  EXPECT_EQ(call(h, "ok", "null").body, R"("fine")");
  EXPECT_EQ(call(spin, "spin", "null").status, 429);
}

TEST_F(ScriptServiceTest, AHandleBelongsToTheTenantThatLoadedIt) {
  const std::string h = load("function who() return 'acme only' end");
  ASSERT_FALSE(h.empty());
  auto stolen = call(h, "who", "null", "globex-key");
  EXPECT_EQ(stolen.status, 400) << stolen.body;
  EXPECT_THAT(stolen.body, HasSubstr("handle " + h));
  auto closed_by_other =
      request(server_->port(), "DELETE", "/script/" + h, {{"Authorization", "Bearer globex-key"}});
  EXPECT_EQ(closed_by_other.status, 400);
  EXPECT_EQ(call(h, "who", "null").body, R"("acme only")");
}

class ScriptCeilingTest : public ScriptServiceTest {
 protected:
  void SetUp() override { start("      lua: {instructions: 50000}\n"); }
};

TEST_F(ScriptCeilingTest, APluginCannotRaiseItsScriptsBudgetAboveTheOperators) {
  const std::string h = load("function spin() while true do end end",
                             "name=spin.lua&instructions=1000000000&wall_ms=1000");
  ASSERT_FALSE(h.empty());
  auto r = call(h, "spin", "null");
  EXPECT_EQ(r.status, 429);
  EXPECT_THAT(r.body, HasSubstr("instruction budget of 50000 exceeded"));
}

}  // namespace
}  // namespace trellis::test
