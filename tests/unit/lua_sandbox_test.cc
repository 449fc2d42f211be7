// The Lua sandbox against escape attempts: each must be contained (an error or a budget
// failure, nothing done outside the sandbox), and the same state must serve a normal call
// right after.
#include <gmock/gmock.h>
#include <gtest/gtest.h>

#include <filesystem>
#include <string>
#include <thread>

#include "support/test_support.h"
#include "trellis/kernel/lua/sandbox.h"

namespace trellis::kernel::lua {
namespace {

using ::testing::HasSubstr;

int readString(lua_State* L, void* data) {
  auto* out = static_cast<std::string*>(data);
  if (lua_gettop(L) >= 1 && lua_type(L, 1) == LUA_TSTRING) {
    *out = lua_tostring(L, 1);
  } else {
    *out = std::string("<") + luaL_typename(L, 1) + ">";
  }
  return 0;
}

int hostAnswer(lua_State* L) {
  lua_pushinteger(L, *static_cast<int*>(lua_touserdata(L, lua_upvalueindex(1))));
  return 1;
}

class LuaSandboxTest : public ::testing::Test {
 protected:
  void SetUp() override {
    // Generous wall time so a slow (sanitizer) build fails on instructions or memory,
    // which is what these tests are about.
    Budget budget{.instructions = 200'000,
                  .memory_bytes = 2 * 1024 * 1024,
                  .wall_time = std::chrono::seconds(10)};
    auto created = Sandbox::create(budget);
    ASSERT_TRUE(created) << created.status().toString();
    sb_ = std::move(*created);
    static const luaL_Reg kHost[] = {{"answer", hostAnswer}, {nullptr, nullptr}};
    ASSERT_TRUE(sb_->addLibrary("host", kHost, &answer_));
  }

  // Loads `body` as function attempt() and calls it; the string it returns goes to *result.
  CallResult attempt(const std::string& body, std::string* result = nullptr) {
    std::string source = "function attempt()\n" + body +
                         "\nend\n"
                         "function healthy() return ('ok'):upper() .. host.answer() end\n";
    auto loaded = sb_->load(source, "escape.lua");
    EXPECT_TRUE(loaded.ok()) << loaded.error;
    std::string out;
    auto r = sb_->call("attempt", nullptr, readString, &out);
    if (result) *result = out;
    return r;
  }

  // The state still serves a well-behaved call, with its library intact.
  void expectStillServes() {
    std::string out;
    auto r = sb_->call("healthy", nullptr, readString, &out);
    EXPECT_TRUE(r.ok()) << r.error;
    EXPECT_EQ(out, "OK42");
  }

  void expectContained(const CallResult& r, Outcome outcome, const std::string& error_part = "") {
    EXPECT_EQ(outcomeName(r.outcome), outcomeName(outcome)) << r.error;
    if (!error_part.empty()) {
      EXPECT_THAT(r.error, HasSubstr(error_part));
    }
    expectStillServes();
  }

  int answer_ = 42;
  std::unique_ptr<Sandbox> sb_;
};

TEST_F(LuaSandboxTest, WellBehavedScriptRunsAndReportsUsage) {
  std::string out;
  auto r = attempt("local n = 0 for i = 1, 1000 do n = n + i end return tostring(n)", &out);
  ASSERT_TRUE(r.ok()) << r.error;
  EXPECT_EQ(out, "500500");
  EXPECT_GT(r.usage.instructions, 1000u);
  EXPECT_GT(r.usage.peak_memory_bytes, 0u);
  expectStillServes();
}

// A host function that blocks for its argument's milliseconds: time spent in C, where no
// hook fires and nothing allocates.
int hostSleep(lua_State* L) {
  std::this_thread::sleep_for(std::chrono::milliseconds(luaL_checkinteger(L, 1)));
  return 0;
}

// Wall time is metered on the sandbox's own clock (the TSC where the kernel uses it): what
// a call reports must agree with steady_clock, and a call that ends late fails on it.
TEST_F(LuaSandboxTest, WallTimeIsMeasuredAndEnforcedInsideCFunctions) {
  static const luaL_Reg kTime[] = {{"sleep", hostSleep}, {nullptr, nullptr}};
  ASSERT_TRUE(sb_->addLibrary("host.time", kTime, nullptr));
  const auto started = std::chrono::steady_clock::now();
  auto r = attempt("host.time.sleep(30) return 'slept'");
  const auto elapsed = std::chrono::duration_cast<std::chrono::microseconds>(
      std::chrono::steady_clock::now() - started);
  ASSERT_TRUE(r.ok()) << r.error;
  EXPECT_GE(r.usage.wall_time, std::chrono::milliseconds(29));
  EXPECT_LE(r.usage.wall_time, elapsed);

  sb_->setBudget({.instructions = 200'000,
                  .memory_bytes = 2 * 1024 * 1024,
                  .wall_time = std::chrono::milliseconds(10)});
  expectContained(attempt("host.time.sleep(30) return 'late'"), Outcome::kWallTimeLimit,
                  "wall-time budget of 10000 us exceeded");
  // A loop is stopped by the hook's clock check well before the instruction budget.
  sb_->setBudget({.instructions = uint64_t{1} << 50,
                  .memory_bytes = 2 * 1024 * 1024,
                  .wall_time = std::chrono::milliseconds(20)});
  auto loop = attempt("while true do end");
  EXPECT_EQ(outcomeName(loop.outcome), "wall_time") << loop.error;
  EXPECT_GE(loop.usage.wall_time, std::chrono::milliseconds(20));
}

TEST_F(LuaSandboxTest, FileAccessThroughIoIsAbsent) {
  test::TempDir dir;
  auto target = (dir / "pwned").string();
  auto r = attempt("local f = io.open('" + target + "', 'w') f:write('x') f:close()");
  expectContained(r, Outcome::kError, "global 'io'");
  EXPECT_FALSE(std::filesystem::exists(target));
}

TEST_F(LuaSandboxTest, ProcessesThroughOsAreAbsent) {
  test::TempDir dir;
  auto target = (dir / "pwned").string();
  auto r = attempt("os.execute('touch " + target + "')");
  expectContained(r, Outcome::kError, "global 'os'");
  EXPECT_FALSE(std::filesystem::exists(target));
}

TEST_F(LuaSandboxTest, RequireIsAbsent) {
  expectContained(attempt("local os = require('os') return os.getenv('HOME')"), Outcome::kError,
                  "global 'require'");
}

TEST_F(LuaSandboxTest, PackageLoadlibIsAbsent) {
  expectContained(attempt("return package.loadlib('libc.so.6', 'system')"), Outcome::kError,
                  "global 'package'");
}

TEST_F(LuaSandboxTest, DofileAndLoadfileAreAbsent) {
  expectContained(attempt("return dofile('/etc/passwd')"), Outcome::kError, "global 'dofile'");
  expectContained(attempt("return loadfile('/etc/passwd')"), Outcome::kError, "global 'loadfile'");
}

TEST_F(LuaSandboxTest, BinaryChunksAreRefusedByLoad) {
  std::string out;
  // A precompiled chunk starts with ESC "Lua"; load must refuse it before parsing further.
  auto r = attempt(
      "local f, err = load('\\27LuaT\\0\\25\\147\\r\\n\\26\\n') "
      "return tostring(f) .. ' ' .. tostring(err)",
      &out);
  ASSERT_TRUE(r.ok()) << r.error;
  EXPECT_THAT(out, HasSubstr("nil"));
  EXPECT_THAT(out, HasSubstr("binary chunk"));
  expectStillServes();
}

TEST_F(LuaSandboxTest, LoadInBinaryModeIsAnError) {
  expectContained(attempt("return load('return 1', 'x', 'b')"), Outcome::kError,
                  "only text chunks");
}

TEST_F(LuaSandboxTest, StringDumpIsAbsent) {
  expectContained(attempt("return string.dump(function() return 1 end)"), Outcome::kError, "dump");
}

TEST_F(LuaSandboxTest, DebugLibraryIsAbsent) {
  expectContained(attempt("return debug.getregistry()"), Outcome::kError, "global 'debug'");
}

TEST_F(LuaSandboxTest, CollectgarbageIsAbsent) {
  expectContained(attempt("collectgarbage('stop')"), Outcome::kError, "collectgarbage");
}

TEST_F(LuaSandboxTest, EndlessLoopIsPreempted) {
  expectContained(attempt("while true do end"), Outcome::kInstructionLimit, "instruction budget");
}

TEST_F(LuaSandboxTest, EndlessLoopInsidePcallIsPreempted) {
  expectContained(attempt("while true do pcall(function() while true do end end) end"),
                  Outcome::kInstructionLimit);
}

TEST_F(LuaSandboxTest, EndlessLoopInXpcallHandlerIsPreempted) {
  expectContained(attempt("for i = 1, 1e9 do xpcall(function() while true do end end, "
                          "function() while true do end end) end return 'escaped'"),
                  Outcome::kInstructionLimit);
}

TEST_F(LuaSandboxTest, CatchingThePreemptionAndCarryingOnStillFails) {
  // Each pcall swallows whatever error it sees; the call must still end as over budget.
  expectContained(
      attempt("local caught = 0 "
              "for i = 1, 1e9 do "
              "  local ok = pcall(function() local x = 0 for j = 1, 1e6 do x = x + j end end) "
              "  if not ok then caught = caught + 1 end "
              "  if caught > 3 then return 'escaped' end "
              "end"),
      Outcome::kInstructionLimit);
}

TEST_F(LuaSandboxTest, EndlessLoopInSortComparatorIsPreempted) {
  // A comparator runs under a C function (not yieldable): the hook raises instead.
  expectContained(attempt("pcall(table.sort, {3, 2, 1}, function(a, b) while true do end end) "
                          "return 'escaped'"),
                  Outcome::kInstructionLimit);
}

TEST_F(LuaSandboxTest, EndlessLoopInGsubCallbackIsPreempted) {
  expectContained(attempt("pcall(string.gsub, 'aaa', 'a', function() while true do end end) "
                          "return 'escaped'"),
                  Outcome::kInstructionLimit);
}

TEST_F(LuaSandboxTest, EndlessLoopInTostringMetamethodIsPreempted) {
  expectContained(
      attempt("local t = setmetatable({}, {__tostring = function() while true do end end}) "
              "pcall(string.format, '%s', t) return 'escaped'"),
      Outcome::kInstructionLimit);
}

TEST_F(LuaSandboxTest, MemoryBombIsStopped) {
  expectContained(attempt("local s = 'x' for i = 1, 64 do s = s .. s end return s"),
                  Outcome::kMemoryLimit, "memory budget");
}

TEST_F(LuaSandboxTest, MemoryBombCaughtByPcallStillFails) {
  expectContained(attempt("pcall(function() local t = {} for i = 1, 1e9 do t[i] = {i} end end) "
                          "return 'escaped'"),
                  Outcome::kMemoryLimit);
}

TEST_F(LuaSandboxTest, StringRepBombIsRefused) {
  expectContained(attempt("return string.rep('x', 1e12)"), Outcome::kError, "string.rep");
  expectContained(attempt("return ('ab'):rep(1e9, ',')"), Outcome::kError, "memory budget");
}

TEST_F(LuaSandboxTest, StringRepOfEmptyStringDoesNotSpin) {
  // Stock string.rep loops n times even for an empty string: 1e15 iterations in C.
  std::string out;
  auto r = attempt("return '[' .. string.rep('', 1e15) .. ']'", &out);
  ASSERT_TRUE(r.ok()) << r.error;
  EXPECT_EQ(out, "[]");
  expectStillServes();
}

TEST_F(LuaSandboxTest, TableConcatBombIsStopped) {
  expectContained(attempt("local s = ('x'):rep(100000) local t = {} "
                          "for i = 1, 1000 do t[i] = s end return table.concat(t)"),
                  Outcome::kMemoryLimit);
}

TEST_F(LuaSandboxTest, TableMoveOverAHugeRangeIsRefused) {
  expectContained(attempt("table.move({}, 1, 1e12, 1) return 'escaped'"), Outcome::kError,
                  "table.move");
}

TEST_F(LuaSandboxTest, SortingAHugeTableInCIsRefused) {
  // string.byte builds the table in one instruction; sorting it would run in C, unhooked.
  expectContained(attempt("local t = {string.byte(('x'):rep(60000), 1, -1)} "
                          "table.sort(t) return 'escaped'"),
                  Outcome::kError, "table.sort");
  std::string out;
  auto r = attempt(
      "local t = {3, 1, 2} table.sort(t) table.sort(t, function(a, b) return a > b "
      "end) return table.concat(t, ',')",
      &out);
  ASSERT_TRUE(r.ok()) << r.error;
  EXPECT_EQ(out, "3,2,1");
}

TEST_F(LuaSandboxTest, BacktrackingPatternBombIsRefused) {
  expectContained(attempt("return tostring(string.find(('a'):rep(5000), '.-.-.-.-.-b'))"),
                  Outcome::kError, "pattern too costly");
}

TEST_F(LuaSandboxTest, DeepRecursionIsStopped) {
  auto r = attempt("local function f(n) return 1 + f(n + 1) end return tostring(f(1))");
  EXPECT_FALSE(r.ok());
  expectStillServes();
}

TEST_F(LuaSandboxTest, GcMetamethodIsRefused) {
  expectContained(attempt("setmetatable({}, {__gc = function() while true do end end})"),
                  Outcome::kError, "__gc");
}

TEST_F(LuaSandboxTest, GcFieldAddedAfterSetmetatableNeverRuns) {
  // Lua marks an object for finalization only if __gc is present at setmetatable time.
  auto r = attempt(
      "for i = 1, 200 do local mt = {} setmetatable({}, mt) "
      "mt.__gc = function() pwned = true end end return 'done'");
  ASSERT_TRUE(r.ok()) << r.error;
  std::string out;
  for (int i = 0; i < 5; ++i) {  // churn so the collector runs
    r = attempt("local t = {} for i = 1, 20000 do t[i % 100] = {i} end return tostring(pwned)",
                &out);
    ASSERT_TRUE(r.ok()) << r.error;
  }
  EXPECT_EQ(out, "nil");
  expectStillServes();
}

TEST_F(LuaSandboxTest, EndlessLoopInsideACoroutineIsPreempted) {
  expectContained(attempt("local co = coroutine.wrap(function() while true do end end) co() "
                          "return 'escaped'"),
                  Outcome::kInstructionLimit);
}

TEST_F(LuaSandboxTest, ResumingAPreemptedCoroutineForeverIsPreempted) {
  expectContained(attempt("local co = coroutine.create(function() while true do end end) "
                          "while true do coroutine.resume(co) end"),
                  Outcome::kInstructionLimit);
}

TEST_F(LuaSandboxTest, PreemptedCallCannotBeResumedByALaterOne) {
  expectContained(attempt("saved = coroutine.running() local n = 0 while true do n = n + 1 end"),
                  Outcome::kInstructionLimit);
  std::string out;
  auto r =
      attempt("local ok, err = coroutine.resume(saved) return tostring(ok) .. ' ' .. err", &out);
  ASSERT_TRUE(r.ok()) << r.error;
  EXPECT_EQ(out, "false cannot resume dead coroutine");
  expectStillServes();
}

TEST_F(LuaSandboxTest, CloseHandlersOfAPreemptedCallAreMeteredToo) {
  expectContained(attempt("local guard <close> = setmetatable({}, {__close = function() "
                          "while true do end end}) while true do end"),
                  Outcome::kInstructionLimit);
}

TEST_F(LuaSandboxTest, YieldingOutOfTheHostCallIsAnError) {
  expectContained(attempt("coroutine.yield('out') return 'escaped'"), Outcome::kError, "yielded");
}

TEST_F(LuaSandboxTest, StringMetatableCannotBeFetchedOrChanged) {
  std::string out;
  auto r = attempt("return tostring(getmetatable(''))", &out);
  ASSERT_TRUE(r.ok()) << r.error;
  EXPECT_EQ(out, "locked");
  expectContained(attempt("getmetatable('').__index = {upper = function() return 'pwned' end}"),
                  Outcome::kError);
}

TEST_F(LuaSandboxTest, StringLibraryCannotBeModified) {
  expectContained(attempt("string.upper = function() return 'pwned' end"), Outcome::kError,
                  "read-only");
  expectContained(attempt("rawset(string, 'upper', function() return 'pwned' end)"),
                  Outcome::kError, "read-only");
  expectContained(attempt("table.insert = nil"), Outcome::kError, "read-only");
}

TEST_F(LuaSandboxTest, HostLibraryCannotBeOverwritten) {
  expectContained(attempt("host.answer = function() return 0 end"), Outcome::kError, "read-only");
  expectContained(attempt("rawset(host, 'answer', function() return 0 end)"), Outcome::kError,
                  "read-only");
  // Shadowing the global only changes this script's own view, never the library.
  std::string out;
  auto r = attempt(
      "local real = host host = {answer = function() return 0 end} "
      "local v = host.answer() host = nil return tostring(v) .. tostring(real.answer())",
      &out);
  ASSERT_TRUE(r.ok()) << r.error;
  EXPECT_EQ(out, "042");
  expectStillServes();
}

TEST_F(LuaSandboxTest, GlobalsMetatableIsLocked) {
  expectContained(attempt("setmetatable(_G, nil)"), Outcome::kError, "protected metatable");
  std::string out;
  auto r = attempt("return tostring(getmetatable(_G)) .. tostring(getmetatable(string))", &out);
  ASSERT_TRUE(r.ok()) << r.error;
  EXPECT_EQ(out, "lockedlocked");
  expectStillServes();
}

TEST_F(LuaSandboxTest, EnvAndGlobalsTricksReachNothingRemoved) {
  std::string out;
  auto r = attempt(
      "local found = {} "
      "for _, name in ipairs({'io', 'os', 'debug', 'package', 'require', 'dofile', "
      "'loadfile', 'collectgarbage', 'print'}) do "
      "  if _G[name] ~= nil or _ENV[name] ~= nil or rawget(_G, name) ~= nil then "
      "    found[#found + 1] = name end "
      "end "
      "local mt = getmetatable(_ENV) "
      "return #found == 0 and type(mt) == 'string' and 'clean' or table.concat(found, ',')",
      &out);
  ASSERT_TRUE(r.ok()) << r.error;
  EXPECT_EQ(out, "clean");
  expectStillServes();
}

TEST_F(LuaSandboxTest, LoadWithACustomEnvGainsNothing) {
  std::string out;
  auto r = attempt(
      "local env = setmetatable({}, {__index = function(_, k) return nil end}) "
      "local a = load('return io', 'x', 't', env)() "
      "local b = load('return os')() "
      "local c = load('return _G', 'x', 't')() "
      "return tostring(a) .. tostring(b) .. tostring(c == _G)",
      &out);
  ASSERT_TRUE(r.ok()) << r.error;
  EXPECT_EQ(out, "nilniltrue");
  expectStillServes();
}

TEST_F(LuaSandboxTest, LoadedChunkIsMeteredToo) {
  expectContained(attempt("load('while true do end')() return 'escaped'"),
                  Outcome::kInstructionLimit);
}

TEST_F(LuaSandboxTest, ErrorObjectMetamethodsAreNotRunByTheHost) {
  auto r = attempt("error(setmetatable({}, {__tostring = function() while true do end end}))");
  expectContained(r, Outcome::kError, "error object is a table value");
}

TEST_F(LuaSandboxTest, SyntaxErrorNamesTheChunkAndLine) {
  auto r = sb_->load("local x = 1\nlocal y = = 2\n", "policy.lua");
  EXPECT_EQ(r.outcome, Outcome::kError);
  EXPECT_THAT(r.error, HasSubstr("policy.lua:2:"));
}

TEST_F(LuaSandboxTest, RuntimeErrorNamesTheChunkAndLine) {
  ASSERT_TRUE(sb_->load("function f()\n  local t = nil\n  return t.x\nend\n", "rt.lua").ok());
  auto r = sb_->call("f", nullptr, nullptr, nullptr);
  EXPECT_EQ(r.outcome, Outcome::kError);
  EXPECT_THAT(r.error, HasSubstr("rt.lua:3:"));
}

TEST_F(LuaSandboxTest, RunawayTopLevelIsPreemptedAtLoad) {
  auto r = sb_->load("while true do end", "loop.lua");
  EXPECT_EQ(r.outcome, Outcome::kInstructionLimit);
  std::string out;
  EXPECT_TRUE(attempt("return 'fine'", &out).ok());
  EXPECT_EQ(out, "fine");
  expectStillServes();
}

TEST_F(LuaSandboxTest, MissingFunctionIsAnError) {
  auto r = sb_->call("nope", nullptr, nullptr, nullptr);
  EXPECT_EQ(r.outcome, Outcome::kError);
  EXPECT_THAT(r.error, HasSubstr("no function nope"));
}

TEST_F(LuaSandboxTest, JsonRoundTripsAndRefusesBadInput) {
  static const luaL_Reg kJson[] = {
      {"encode", jsonEncode}, {"decode", jsonDecode}, {nullptr, nullptr}};
  ASSERT_TRUE(sb_->addLibrary("json", kJson, nullptr));
  std::string out;
  auto r = attempt(
      "local v = json.decode('{\"a\":[1,2.5,\"x\\\\u00e9\"],\"b\":true,\"c\":null}') "
      "return json.encode({a = v.a, b = v.b, n = #v.a, c = v.c})",
      &out);
  ASSERT_TRUE(r.ok()) << r.error;
  EXPECT_THAT(out, HasSubstr("\"a\":[1,2.5,\"x\xc3\xa9\"]"));
  EXPECT_THAT(out, HasSubstr("\"b\":true"));
  EXPECT_THAT(out, HasSubstr("\"n\":3"));
  expectContained(attempt("return json.decode('{\"a\":')"), Outcome::kError, "json_decode");
  expectContained(attempt("local t = {} t.self = t return json.encode(t)"), Outcome::kError,
                  "nested too deeply");
  expectContained(attempt("return json.decode(('['):rep(10000))"), Outcome::kError, "json_decode");
}

// An empty Lua table is ambiguous; a list marked as one (json.array, or decoded from
// JSON) stays a list when empty, and an unmarked one stays an object.
TEST_F(LuaSandboxTest, JsonEncodesAnEmptyListAsAnArray) {
  static const luaL_Reg kJson[] = {
      {"encode", jsonEncode}, {"decode", jsonDecode}, {"array", jsonArray}, {nullptr, nullptr}};
  ASSERT_TRUE(sb_->addLibrary("json", kJson, nullptr));
  std::string out;
  auto r = attempt(
      "return json.encode({list = json.array(), object = {}, decoded = json.decode('[]'), "
      "nested = json.decode('{\"x\":[]}'), filled = json.array({1, 2})})",
      &out);
  ASSERT_TRUE(r.ok()) << r.error;
  EXPECT_THAT(out, HasSubstr("\"list\":[]"));
  EXPECT_THAT(out, HasSubstr("\"object\":{}"));
  EXPECT_THAT(out, HasSubstr("\"decoded\":[]"));
  EXPECT_THAT(out, HasSubstr("\"nested\":{\"x\":[]}"));
  EXPECT_THAT(out, HasSubstr("\"filled\":[1,2]"));
  // The mark cannot be read or swapped by a script.
  ASSERT_TRUE(attempt("return tostring(getmetatable(json.array()))", &out).ok());
  EXPECT_EQ(out, "trellis.json.array");
  expectContained(attempt("return json.array(setmetatable({}, {}))"), Outcome::kError,
                  "already has a metatable");
}

TEST_F(LuaSandboxTest, NestedLibrariesAreReadOnlyLikeTheirParent) {
  static const luaL_Reg kSub[] = {{"answer", hostAnswer}, {nullptr, nullptr}};
  ASSERT_TRUE(sb_->addLibrary("host.sub", kSub, &answer_));
  std::string out;
  auto r = attempt("return tostring(host.sub.answer() + host.answer())", &out);
  ASSERT_TRUE(r.ok()) << r.error;
  EXPECT_EQ(out, "84");
  expectContained(attempt("host.sub.answer = nil"), Outcome::kError, "read-only");
  expectContained(attempt("host.sub = {}"), Outcome::kError, "read-only");
  expectContained(attempt("rawset(host.sub, 'x', 1)"), Outcome::kError, "read-only");
  Status missing = sb_->addLibrary("absent.sub", kSub, nullptr);
  EXPECT_FALSE(missing);
  EXPECT_THAT(missing.message(), HasSubstr("no library to nest absent.sub in"));
}

// Keeps the script's global `handler` in the registry, as a host keeps a callback.
int refHandler(lua_State* L) {
  lua_getglobal(L, "handler");
  *static_cast<int*>(lua_touserdata(L, 1)) = luaL_ref(L, LUA_REGISTRYINDEX);
  return 0;
}

TEST_F(LuaSandboxTest, CallsAFunctionKeptInTheRegistryEvenIfTheGlobalChanges) {
  ASSERT_TRUE(sb_->load("function handler() return 'kept' end", "ref.lua").ok());
  int ref = LUA_NOREF;
  ASSERT_TRUE(sb_->protectedCall(refHandler, &ref));
  ASSERT_TRUE(sb_->load("function handler() return 'replaced' end", "ref.lua").ok());
  std::string out;
  auto r = sb_->callRef(ref, nullptr, readString, &out);
  ASSERT_TRUE(r.ok()) << r.error;
  EXPECT_EQ(out, "kept");
  auto bad = sb_->callRef(LUA_REFNIL, nullptr, readString, &out);
  EXPECT_EQ(bad.outcome, Outcome::kError);
  EXPECT_THAT(bad.error, HasSubstr("is not a function"));
}

TEST_F(LuaSandboxTest, BudgetIsRejectedWhenNonsensical) {
  EXPECT_FALSE(Sandbox::create(Budget{.instructions = 0}));
  EXPECT_FALSE(Sandbox::create(Budget{.memory_bytes = 1024}));
}

}  // namespace
}  // namespace trellis::kernel::lua
