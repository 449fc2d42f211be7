// The Lua sandbox against escape attempts: each must be contained (an error or a budget
// failure, nothing done outside the sandbox), and the same state must serve a normal call
// right after.
#include <gmock/gmock.h>
#include <gtest/gtest.h>

#include <chrono>
#include <cstdio>
#include <filesystem>
#include <mutex>
#include <string>
#include <thread>

#include "support/test_support.h"
#include "trellis/kernel/lua/sandbox.h"
#include "trellis/kernel/lua/watchdog.h"

namespace trellis::kernel::lua {
namespace {

using ::testing::AllOf;
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

TEST_F(LuaSandboxTest, TableMoveOverAHugeRangeIsStoppedByTheBudget) {
  expectContained(attempt("table.move({}, 1, 1e12, 1) return 'escaped'"),
                  Outcome::kInstructionLimit);
}

TEST_F(LuaSandboxTest, SortingAHugeTableInCIsStoppedByTheBudget) {
  // string.byte builds the table in one instruction; sorting it runs in C, unhooked, but
  // every comparison is charged.
  expectContained(attempt("local t = {string.byte(('x'):rep(60000), 1, -1)} "
                          "table.sort(t) return 'escaped'"),
                  Outcome::kInstructionLimit);
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
                  Outcome::kError, "more than the call has left");
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

// Found by tests/fuzz/lua_json_fuzz.cc: decode took 101 nested arrays, which encode refuses.
TEST_F(LuaSandboxTest, JsonDecodesExactlyAsDeepAsItEncodes) {
  static const luaL_Reg kJson[] = {
      {"encode", jsonEncode}, {"decode", jsonDecode}, {nullptr, nullptr}};
  ASSERT_TRUE(sb_->addLibrary("json", kJson, nullptr));
  std::string out;
  auto r =
      attempt("return json.encode(json.decode(('['):rep(100) .. '1' .. (']'):rep(100)))", &out);
  ASSERT_TRUE(r.ok()) << r.error;
  EXPECT_EQ(out, std::string(100, '[') + "1" + std::string(100, ']'));
  expectContained(attempt("return json.decode(('['):rep(101) .. (']'):rep(101))"), Outcome::kError,
                  "json_decode: nested too deeply at byte 101");
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

// ------------------------------------------------------------------ work in C
// Each attempt below does its work inside a C function of the standard library, where no
// VM instruction runs and little or nothing is allocated: the hook and the allocator alone
// would never see it. Each must end on a budget and leave the state serving.

TEST_F(LuaSandboxTest, TableInsertAndRemoveUnderAHugeLengthAreStopped) {
  const std::string huge =
      "local t = setmetatable({}, {__len = function() return math.maxinteger - 1 end}) ";
  expectContained(attempt(huge + "table.insert(t, 1, 'x') return 'escaped'"),
                  Outcome::kInstructionLimit);
  expectContained(attempt(huge + "table.remove(t, 1) return 'escaped'"),
                  Outcome::kInstructionLimit);
  // Reads and writes through C functions that neither store nor allocate anything.
  expectContained(attempt("local t = setmetatable({}, {__len = function() return 1e15 end, "
                          "__index = rawlen, __newindex = rawequal}) "
                          "table.insert(t, 1, 'x') return 'escaped'"),
                  Outcome::kInstructionLimit);
  std::string out;
  auto r = attempt(
      "local t = {1, 2, 3} table.insert(t, 1, 0) table.insert(t, 9) "
      "return table.remove(t, 2) .. ':' .. table.concat(t, ',')",
      &out);
  ASSERT_TRUE(r.ok()) << r.error;
  EXPECT_EQ(out, "1:0,2,3,9");
}

TEST_F(LuaSandboxTest, LiteralSearchesAreChargedBySubjectTimesPattern) {
  const std::string setup = "local s = ('a'):rep(500000) local p = ('a'):rep(200000) .. 'b' ";
  expectContained(attempt(setup + "for i = 1, 1e9 do s:find(p, 1, true) end return 'escaped'"),
                  Outcome::kInstructionLimit);
  expectContained(attempt(setup + "for i = 1, 1e9 do s:find(p) end return 'escaped'"),
                  Outcome::kInstructionLimit);
  expectContained(attempt(setup + "return tostring(s:match(p))"), Outcome::kError,
                  "more than the call has left");
  expectContained(attempt(setup + "return tostring(s:gsub(p, ''))"), Outcome::kError,
                  "more than the call has left");
  std::string out;
  auto r = attempt(
      "return table.concat({('hello world'):find('o w', 1, true)}, ',') .. ';' .. "
      "tostring(('x'):find('y', 1, true)) .. ';' .. table.concat({('abc'):find('c', -1)}, ',') "
      ".. ';' .. tostring(('abc'):find('', 10)) .. ';' .. ('a.b'):gsub('%.', '-')",
      &out);
  ASSERT_TRUE(r.ok()) << r.error;
  EXPECT_EQ(out, "5,7;nil;3,3;nil;a-b");
}

TEST_F(LuaSandboxTest, SortingIsChargedPerComparisonAndByStringLength) {
  // Lua compares strings with strcoll per NUL-separated chunk: here one call per byte.
  expectContained(attempt("local s = ('\\0'):rep(50000) local t = {} "
                          "for i = 1, 20000 do t[i] = s end table.sort(t) return 'escaped'"),
                  Outcome::kInstructionLimit);
  // A "table" of 2^31-2 elements read and written through C functions: no instruction,
  // no allocation, only comparisons.
  const std::string big =
      "local t = setmetatable({}, {__len = function() return (1 << 31) - 2 end, "
      "__index = rawlen, __newindex = rawequal}) ";
  expectContained(attempt(big + "table.sort(t) return 'escaped'"), Outcome::kInstructionLimit);
  auto r = attempt(big + "table.sort(t, math.max) return 'escaped'");
  EXPECT_FALSE(r.ok());
  expectStillServes();
  // table.sort and table.move repeated in one call add up.
  expectContained(attempt("local t = {} for i = 1, 1000 do t[i] = 1000 - i end "
                          "for i = 1, 1e9 do table.sort(t) table.move(t, 1, 1000, 2) end"),
                  Outcome::kInstructionLimit);
}

TEST_F(LuaSandboxTest, JsonEncodeIsChargedPerVisitAndItsOutputCountsAsMemory) {
  static const luaL_Reg kJson[] = {
      {"encode", jsonEncode}, {"decode", jsonDecode}, {nullptr, nullptr}};
  ASSERT_TRUE(sb_->addLibrary("json", kJson, nullptr));
  // 2^60 paths through 60 tables.
  expectContained(attempt("local t = {} for i = 1, 60 do t = {t, t} end return json.encode(t)"),
                  Outcome::kInstructionLimit);
  expectContained(attempt("local s = ('x'):rep(300000) local t = {} "
                          "for i = 1, 8 do t[i] = s end return json.encode(t)"),
                  Outcome::kError, "exceeds the memory budget");
  std::string out;
  auto r = attempt("local shared = {1} return json.encode({a = shared, b = {shared}})", &out);
  ASSERT_TRUE(r.ok()) << r.error;
  EXPECT_THAT(out, AllOf(HasSubstr("\"a\":[1]"), HasSubstr("\"b\":[[1]]")));
}

TEST_F(LuaSandboxTest, KeysChosenToCollideCannotMakeATableRehashForLong) {
  // Integer keys that are multiples of 2^k-1 all fall in one chain of a 2^k-node hash
  // part, so each key re-inserted on a resize walks the chain of those before it.
  expectContained(attempt("local M = (1 << 13) - 1 local t = {} "
                          "for i = 1, 1 << 13 do t[i * M] = true end return 'escaped'"),
                  Outcome::kMemoryLimit, "at most 4096 keys");
  // The worst the limit allows: 2049 colliding keys re-inserted in one resize.
  const auto started = std::chrono::steady_clock::now();
  std::string out;
  auto r = attempt(
      "local M = (1 << 12) - 1 local t = {} "
      "for i = 1, (1 << 11) + 1 do t[i * M] = true end return 'fits'",
      &out);
  const auto took = std::chrono::steady_clock::now() - started;
  ASSERT_TRUE(r.ok()) << r.error;
  EXPECT_EQ(out, "fits");
  std::printf(
      "[ measured ] worst colliding keys the limit allows: %lld us\n",
      static_cast<long long>(std::chrono::duration_cast<std::chrono::microseconds>(took).count()));
  // Ordinary tables: 4096 string keys fit, an array part is not limited.
  r = attempt(
      "local t = {} for i = 1, 4096 do t['k' .. i] = i end "
      "local a = {} for i = 1, 20000 do a[i] = i end return tostring(#a)",
      &out);
  ASSERT_TRUE(r.ok()) << r.error;
  EXPECT_EQ(out, "20000");
}

TEST_F(LuaSandboxTest, MetatablesAreCapturedSoNoCallChainCanBeBuilt) {
  // mt.__call = t after setmetatable: Lua would follow t -> t -> ... in one instruction,
  // shifting the stack once per link (quadratic C work: minutes at 8 MiB).
  std::string out;
  auto r = attempt(
      "local mt = {} local t = setmetatable({}, mt) mt.__call = t "
      "local ok, err = pcall(t) return tostring(ok) .. ' ' .. tostring(err)",
      &out);
  ASSERT_TRUE(r.ok()) << r.error;
  EXPECT_THAT(out, HasSubstr("false"));
  expectContained(attempt("local mt = {} local t = {} mt.__call = t setmetatable(t, mt) t()"),
                  Outcome::kError, "__call must be a function");
  // What scripts rely on still holds.
  r = attempt(
      "local Class = {} Class.__index = Class "
      "function Class.new(x) return setmetatable({x = x}, Class) end "
      "function Class:get() return self.x end local a = Class.new('v') "
      "assert(getmetatable(a) == Class and a:get() == 'v') "
      "local mt = {} local b = setmetatable({}, mt) mt.__index = {y = 1} "
      "assert(b.y == nil) setmetatable(b, mt) assert(b.y == 1) "
      "local P = setmetatable({}, {__metatable = 'locked', __call = function() return 'called' "
      "end}) assert(getmetatable(P) == 'locked') assert(not pcall(setmetatable, P, {})) "
      "setmetatable(a, nil) assert(getmetatable(a) == nil) "
      "return a.get == nil and Class.new('w'):get() .. P()",
      &out);
  ASSERT_TRUE(r.ok()) << r.error;
  EXPECT_EQ(out, "wcalled");
}

TEST_F(LuaSandboxTest, OtherWorkInCIsBoundedToo) {
  // Short wall budget: whichever budget ends these first, none may hold the thread long.
  sb_->setBudget({.instructions = 200'000,
                  .memory_bytes = 2 * 1024 * 1024,
                  .wall_time = std::chrono::milliseconds(300)});
  const std::string chain =
      "local t = setmetatable({}, {__index = type}) "
      "for i = 1, 1999 do t = setmetatable({}, {__index = t}) end ";
  const std::pair<const char*, std::string> attempts[] = {
      {"string.rep in a loop", "for i = 1, 1e9 do string.rep('x', 1e6) end"},
      {"string.format of a long string",
       "local s = ('x'):rep(1e6) for i = 1, 1e9 do string.format('%q', s) end"},
      {"string.pack padding", "for i = 1, 1e9 do string.pack('c1000000', '') end"},
      {"utf8.len of a long string", "local s = ('x'):rep(1e6) for i = 1, 1e9 do utf8.len(s) end"},
      {"utf8.codepoint range",
       "local s = ('x'):rep(1e5) for i = 1, 1e9 do utf8.codepoint(s, 1, -1) end"},
      {"string.byte range", "local s = ('x'):rep(1e5) for i = 1, 1e9 do s:byte(1, -1) end"},
      {"table.unpack of a huge range", "return select('#', table.unpack({}, 1, 1e8))"},
      {"select over many values",
       "local t = {} for i = 1, 1e5 do t[i] = i end "
       "for i = 1, 1e9 do select('#', table.unpack(t)) end"},
      {"table.concat through an __index chain", chain + "return table.concat(t, '', 1, 1e7)"},
      {"table.unpack through an __index chain", chain + "return table.unpack(t, 1, 1e5)"},
      {"gsub with a table behind an __index chain",
       chain + "local s = ('x'):rep(1e5) return s:gsub('.', t)"},
      {"gsub with a function replacement",
       "local s = ('x'):rep(1e5) return s:gsub('.', function() while true do end end)"},
      {"sort with an endless __lt",
       "local mt = {__lt = function() while true do end end} local t = {} "
       "for i = 1, 10 do t[i] = setmetatable({}, mt) end table.sort(t)"},
      {"coroutine.wrap as __index",
       "local t = setmetatable({}, {__index = coroutine.wrap(function() "
       "while true do coroutine.yield('x') end end)}) for i = 1, 1e9 do local _ = t[i] end"},
      {"load of a long chunk in a loop",
       "local src = ('x = 1 '):rep(100000) for i = 1, 1e9 do load(src) end"},
      {"tostring of huge numbers",
       "for i = 1, 1e9 do tostring(2^1023) tostring(-math.huge) tostring(math.mininteger) end"},
      {"string.char of many values",
       "local t = {} for i = 1, 1e5 do t[i] = 65 end "
       "for i = 1, 1e9 do string.char(table.unpack(t)) end"},
  };
  for (const auto& [what, body] : attempts) {
    SCOPED_TRACE(what);
    const auto started = std::chrono::steady_clock::now();
    auto r = attempt("do " + body + " end return 'escaped'");
    std::printf("[ measured ] %-42s %-12s %lld ms\n", what, outcomeName(r.outcome).data(),
                static_cast<long long>(std::chrono::duration_cast<std::chrono::milliseconds>(
                                           std::chrono::steady_clock::now() - started)
                                           .count()));
    EXPECT_NE(r.outcome, Outcome::kOk) << what;
    EXPECT_NE(r.outcome, Outcome::kError) << what << ": " << r.error;
    expectStillServes();
  }
}

TEST(LuaWatchdogTest, ReportsACallHeldPastItsDeadlineUntilItsThreadIsFree) {
  auto created = Sandbox::create({.instructions = 100'000'000,
                                  .memory_bytes = 1024 * 1024,
                                  .wall_time = std::chrono::milliseconds(20)});
  ASSERT_TRUE(created);
  Sandbox& sb = **created;
  // A host function that holds the thread without charging anything stands for a C path
  // the budgets missed.
  static const luaL_Reg kHost[] = {{"sleep", hostSleep}, {nullptr, nullptr}};
  ASSERT_TRUE(sb.addLibrary("host", kHost, nullptr));
  sb.setLabel("policy test v7 (stuck.lua)");
  ASSERT_TRUE(sb.load("function stuck() host.sleep(700) while true do end end", "stuck.lua").ok());
  std::mutex mu;
  std::vector<Watchdog::Report> reports;
  Watchdog::instance().setReporter([&](const Watchdog::Report& r) {
    std::lock_guard lock(mu);
    reports.push_back(r);
  });
  const uint64_t noticed_before = Watchdog::instance().noticed();
  CallResult r;
  std::thread caller([&] { r = sb.call("stuck", nullptr, nullptr, nullptr); });
  bool seen_stuck = false;
  for (int i = 0; i < 100 && !seen_stuck; ++i) {
    seen_stuck = Watchdog::instance().stuck() > 0;
    std::this_thread::sleep_for(std::chrono::milliseconds(10));
  }
  caller.join();
  EXPECT_TRUE(seen_stuck);
  EXPECT_EQ(outcomeName(r.outcome), "wall_time") << r.error;
  for (int i = 0; i < 100 && Watchdog::instance().stuck() > 0; ++i) {
    std::this_thread::sleep_for(std::chrono::milliseconds(10));
  }
  EXPECT_EQ(Watchdog::instance().stuck(), 0u);
  EXPECT_EQ(Watchdog::instance().noticed(), noticed_before + 1);
  Watchdog::instance().setReporter(nullptr);
  std::lock_guard lock(mu);
  ASSERT_EQ(reports.size(), 2u);
  EXPECT_EQ(reports[0].label, "policy test v7 (stuck.lua)");
  EXPECT_FALSE(reports[0].released);
  EXPECT_GE(reports[0].late, Watchdog::kGrace);
  EXPECT_TRUE(reports[1].released);
}

}  // namespace
}  // namespace trellis::kernel::lua
