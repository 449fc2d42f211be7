// The kernel's script service (services/script): a plugin's Lua source in a sandbox of its
// own, called with JSON in and out; every failure a clear status with the script's message,
// every hostile script stopped by its budget, and the budget capped by the operator's.
#include <gmock/gmock.h>
#include <gtest/gtest.h>

#include <memory>
#include <string>

#include "services/script/script.h"

namespace trellis::kernel::services::script {
namespace {

using ::testing::HasSubstr;
using namespace std::chrono_literals;

constexpr lua::Budget kSmall{
    .instructions = 200'000, .memory_bytes = 2 * 1024 * 1024, .wall_time = 2s};

std::unique_ptr<Script> loaded(std::string_view source, const lua::Budget& budget = kSmall) {
  auto s = Script::load(source, "rule.lua", budget, "script test");
  EXPECT_TRUE(s) << s.status().toString();
  return s ? std::move(*s) : nullptr;
}

TEST(ScriptServiceTest, CallsAFunctionWithJsonInAndJsonOut) {
  auto s = loaded(R"(
    function summarize(r)
      return {r.actor.name, #r.items > 2, r.items[1]}  -- a list: its order is kept
    end)");
  ASSERT_TRUE(s);
  auto out = s->call("summarize", R"({"actor":{"name":"carol"},"items":[7,8,9]})");
  ASSERT_TRUE(out) << out.status().toString();
  EXPECT_EQ(*out, R"(["carol",true,7])");
  auto object = loaded("function f(r) return {who = r.who} end")->call("f", R"({"who":"dave"})");
  EXPECT_EQ(*object, R"({"who":"dave"})");
  // No result, or nil, is JSON null; empty input is null too.
  auto none = loaded("function f(x) if x == nil then return end return 1 end");
  ASSERT_TRUE(none);
  EXPECT_EQ(*none->call("f", ""), "null");
  EXPECT_EQ(*none->call("f", "null"), "null");
  EXPECT_EQ(*none->call("f", "3"), "1");
}

TEST(ScriptServiceTest, TopLevelStateLastsFromCallToCall) {
  auto s = loaded(
      "local counts = {} function count(k) counts[k] = (counts[k] or 0) + 1 "
      "return counts[k] end");
  ASSERT_TRUE(s);
  EXPECT_EQ(*s->call("count", R"("a")"), "1");
  EXPECT_EQ(*s->call("count", R"("a")"), "2");
  EXPECT_EQ(*s->call("count", R"("b")"), "1");
  // Another script of the same source keeps a state of its own.
  auto other = loaded(
      "local counts = {} function count(k) counts[k] = (counts[k] or 0) + 1 "
      "return counts[k] end");
  EXPECT_EQ(*other->call("count", R"("a")"), "1");
}

TEST(ScriptServiceTest, ASyntaxErrorIsInvalidWithTheScriptsMessage) {
  auto s = Script::load("function f(\n  return 1 +\nend", "rule.lua", kSmall, "t");
  ASSERT_FALSE(s);
  EXPECT_EQ(s.status().code(), StatusCode::kInvalid);
  EXPECT_THAT(s.status().message(), HasSubstr("rule.lua:"));
  auto top = Script::load("error('refused at load')", "rule.lua", kSmall, "t");
  ASSERT_FALSE(top);
  EXPECT_EQ(top.status().code(), StatusCode::kInvalid);
  EXPECT_THAT(top.status().message(), HasSubstr("rule.lua:1: refused at load"));
  EXPECT_EQ(Script::load("", "rule.lua", kSmall, "t").status().code(), StatusCode::kInvalid);
  auto binary = Script::load("\x1bLua\x54", "rule.lua", kSmall, "t");
  ASSERT_FALSE(binary);
  EXPECT_THAT(binary.status().message(), HasSubstr("binary chunks are refused"));
  EXPECT_THAT(Script::load("x = 1", std::string(200, 'n'), kSmall, "t").status().message(),
              HasSubstr("name must be 1 to 128 printable bytes"));
}

TEST(ScriptServiceTest, ARuntimeErrorIsInvalidAndTheScriptStaysUsable) {
  auto s = loaded("function f(r) if r.bad then error('no ' .. r.bad) end return r.n * 2 end");
  ASSERT_TRUE(s);
  auto bad = s->call("f", R"({"bad":"entry"})");
  ASSERT_FALSE(bad);
  EXPECT_EQ(bad.status().code(), StatusCode::kInvalid);
  EXPECT_THAT(bad.status().message(), HasSubstr("rule.lua:1: no entry"));
  auto nil_index = s->call("f", "{}");
  ASSERT_FALSE(nil_index);
  EXPECT_THAT(nil_index.status().message(), HasSubstr("rule.lua:1:"));
  EXPECT_EQ(*s->call("f", R"({"n":21})"), "42");
}

TEST(ScriptServiceTest, UnknownFunctionsBadNamesInputAndResultsAreRefusedClearly) {
  auto s = loaded("function f(x) return x end function g() return f end");
  ASSERT_TRUE(s);
  auto missing = s->call("nope", "1");
  EXPECT_EQ(missing.status().code(), StatusCode::kNotFound);
  EXPECT_THAT(missing.status().message(), HasSubstr("rule.lua defines no function nope"));
  EXPECT_EQ(s->call("1f", "1").status().code(), StatusCode::kInvalid);
  EXPECT_EQ(s->call("a.b", "1").status().code(), StatusCode::kInvalid);
  auto not_json = s->call("f", "{oops");
  ASSERT_FALSE(not_json);
  EXPECT_EQ(not_json.status().code(), StatusCode::kInvalid);
  EXPECT_THAT(not_json.status().message(), HasSubstr("the input is not JSON"));
  auto fn_result = s->call("g", "null");
  ASSERT_FALSE(fn_result);
  EXPECT_EQ(fn_result.status().code(), StatusCode::kInvalid);
  EXPECT_THAT(fn_result.status().message(), HasSubstr("json_encode"));
  EXPECT_EQ(s->call("f", std::string(kMaxJsonBytes + 1, ' ')).status().code(),
            StatusCode::kInvalid);
}

TEST(ScriptServiceTest, TheSandboxOffersNoIoOsOrRequireButOffersJson) {
  auto s = loaded(R"(
    function probe()
      return {io == nil, os == nil, require == nil, debug == nil, dofile == nil,
              json.encode(json.decode('[1,2]'))}
    end)");
  ASSERT_TRUE(s);
  EXPECT_EQ(*s->call("probe", "null"), R"([true,true,true,true,true,"[1,2]"])");
}

TEST(ScriptServiceTest, AnEndlessLoopIsStoppedByTheInstructionBudget) {
  auto s = loaded("function spin() while true do end end function ok() return 1 end");
  ASSERT_TRUE(s);
  auto r = s->call("spin", "null");
  ASSERT_FALSE(r);
  EXPECT_EQ(r.status().code(), StatusCode::kQuotaExceeded);
  EXPECT_THAT(r.status().message(), HasSubstr("rule.lua: instruction budget of 200000 exceeded"));
  // pcall cannot swallow it, and the script stays usable.
  auto caught = loaded("function spin() pcall(function() while true do end end) return 1 end");
  EXPECT_EQ(caught->call("spin", "null").status().code(), StatusCode::kQuotaExceeded);
  EXPECT_EQ(*s->call("ok", "null"), "1");
}

TEST(ScriptServiceTest, AMemoryBombIsStoppedByTheMemoryBudget) {
  auto s = loaded(
      "function bomb() local t = {} for i = 1, 1e9 do t[i] = string.rep('x', 1024) .. i end end",
      {.instructions = 1'000'000'000, .memory_bytes = 1024 * 1024, .wall_time = 5s});
  ASSERT_TRUE(s);
  auto r = s->call("bomb", "null");
  ASSERT_FALSE(r);
  EXPECT_EQ(r.status().code(), StatusCode::kQuotaExceeded);
  EXPECT_THAT(r.status().message(), HasSubstr("memory"));
}

TEST(ScriptServiceTest, ALoopPastItsWallTimeIsATimeout) {
  auto s = loaded("function spin() while true do end end",
                  {.instructions = UINT64_MAX / 2, .memory_bytes = 1024 * 1024, .wall_time = 20ms});
  ASSERT_TRUE(s);
  auto r = s->call("spin", "null");
  ASSERT_FALSE(r);
  EXPECT_EQ(r.status().code(), StatusCode::kTimeout);
  EXPECT_THAT(r.status().message(), HasSubstr("rule.lua: "));
}

TEST(ScriptServiceTest, TheBudgetIsWhatThePluginAskedCappedByTheOperator) {
  const lua::Budget ceiling{
      .instructions = 5'000'000, .memory_bytes = 16 * 1024 * 1024, .wall_time = 100ms};
  lua::Budget defaults = scriptBudget({}, ceiling);
  EXPECT_EQ(defaults.instructions, 1'000'000u);
  EXPECT_EQ(defaults.memory_bytes, 8u * 1024 * 1024);
  EXPECT_EQ(defaults.wall_time, 50ms);
  lua::Budget lower =
      scriptBudget({.instructions = 1000, .memory_bytes = 1, .wall_ms = 5}, ceiling);
  EXPECT_EQ(lower.instructions, 1000u);
  EXPECT_EQ(lower.memory_bytes, 64u * 1024);  // the sandbox's least
  EXPECT_EQ(lower.wall_time, 5ms);
  lua::Budget higher = scriptBudget(
      {.instructions = 1'000'000'000, .memory_bytes = 1ull << 40, .wall_ms = 60'000}, ceiling);
  EXPECT_EQ(higher.instructions, ceiling.instructions);
  EXPECT_EQ(higher.memory_bytes, ceiling.memory_bytes);
  EXPECT_EQ(higher.wall_time, ceiling.wall_time);
}

}  // namespace
}  // namespace trellis::kernel::services::script
