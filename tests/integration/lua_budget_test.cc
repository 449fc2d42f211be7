// No hostile Lua may hold a host thread past its budget, even inside C (issue 11): each
// family of C-level work, through a real trellisd with one event-loop thread and the
// default budgets. A policy's trigger must be answered with the documented failure (500,
// fail closed) within 3 s, a normal request right after served within 1 s, and the
// process's CPU use must fall back to idle. The same for `trellis policy test` and for a
// Lua plugin's top level, which fails that plugin's start while the host comes up.
#include <Poco/JSON/Parser.h>
#include <gmock/gmock.h>
#include <gtest/gtest.h>
#include <unistd.h>

#include <chrono>
#include <filesystem>
#include <fstream>
#include <sstream>
#include <string>
#include <thread>

#include "support/test_support.h"

namespace trellis::test {
namespace {

namespace fs = std::filesystem;
using ::testing::AllOf;
using ::testing::HasSubstr;
using Clock = std::chrono::steady_clock;

// Each family, as Lua run by a policy hook, a dry run and a plugin's top level.
struct Family {
  const char* name;
  const char* lua;
};
const Family kFamilies[] = {
    {"insert-huge-len",
     "local t = setmetatable({}, {__len = function() return math.maxinteger - 1 end}) "
     "table.insert(t, 1, 'x')"},
    {"remove-huge-len",
     "local t = setmetatable({}, {__len = function() return math.maxinteger - 1 end}) "
     "table.remove(t, 1)"},
    {"find-plain",
     "local s = ('a'):rep(2000000) local p = ('a'):rep(1000000) .. 'b' s:find(p, 1, true)"},
    {"find-literal",
     "local s = ('a'):rep(2000000) local p = ('a'):rep(1000000) .. 'b' "
     "for i = 1, 1e9 do s:find(p) end"},
    {"sort-long-strings",
     "local s = ('\\0'):rep(100000) local t = {} for i = 1, 50000 do t[i] = s end "
     "table.sort(t)"},
    {"sort-move-repeated",
     "local t = {} for i = 1, 1000 do t[i] = -i end "
     "for i = 1, 1e9 do table.sort(t) table.move(t, 1, 1000, 2) end"},
    {"json-shared-subtables", "local t = {} for i = 1, 60 do t = {t, t} end json_encode(t)"},
    {"colliding-keys",
     "local M = (1 << 13) - 1 local t = {} for i = 1, 1 << 13 do t[i * M] = true end"},
    {"call-chain", "local mt = {} local t = setmetatable({}, mt) mt.__call = t t()"},
};

// CPU time (user + system, in clock ticks) all of the process's threads have used.
long cpuTicks(pid_t pid) {
  long total = 0;
  for (const auto& task : fs::directory_iterator("/proc/" + std::to_string(pid) + "/task")) {
    std::ifstream in(task.path() / "stat");
    std::string stat((std::istreambuf_iterator<char>(in)), std::istreambuf_iterator<char>());
    // Fields after the command name (which may hold spaces): state is field 3, utime 14.
    std::istringstream rest(stat.substr(stat.rfind(')') + 2));
    std::string field;
    long utime = 0, stime = 0;
    for (int i = 3; i <= 15 && rest >> field; ++i) {
      if (i == 14) utime = std::stol(field);
      if (i == 15) stime = std::stol(field);
    }
    total += utime + stime;
  }
  return total;
}

// True once the process used less than 10% of one CPU over half a second (within 5 s).
bool settlesToIdle(pid_t pid) {
  const long hz = sysconf(_SC_CLK_TCK);
  for (int attempt = 0; attempt < 10; ++attempt) {
    const long before = cpuTicks(pid);
    std::this_thread::sleep_for(std::chrono::milliseconds(500));
    if (cpuTicks(pid) - before <= hz / 20) return true;
  }
  return false;
}

long millisSince(Clock::time_point t) {
  return static_cast<long>(
      std::chrono::duration_cast<std::chrono::milliseconds>(Clock::now() - t).count());
}

std::string hostilePolicy() {
  std::string lua =
      "local json_encode = policy.json_encode\n"
      "local families = {}\n";
  for (const Family& f : kFamilies) {
    lua += "families['" + std::string(f.name) + "'] = function() " + f.lua + " end\n";
  }
  lua +=
      "function on_request(ctx, req)\n"
      "  local f = families[req.headers['x-trigger'] or '']\n"
      "  if f then f() end\n"
      "end\n";
  return lua;
}

TEST(LuaBudgetTest, EveryFamilyEndsWithinItsBudgetAndTheOnlyThreadServesOn) {
  std::string config = defaultTestConfig();
  config.replace(config.find("threads: 2"), 10, "threads: 1");
  TrellisdProcess server(config);
  ASSERT_TRUE(server.start()) << server.log();
  writeFile(server.dir() / "hostile.lua", hostilePolicy());
  int rc = -1;
  std::string out = runCli(server, "policy apply " + (server.dir() / "hostile.lua").string(), &rc);
  ASSERT_EQ(rc, 0) << out;
  const std::map<std::string, std::string> acme = {{"Authorization", "Bearer acme-key"}};
  for (const Family& f : kFamilies) {
    SCOPED_TRACE(f.name);
    auto headers = acme;
    headers["X-Trigger"] = f.name;
    auto started = Clock::now();
    auto trigger = request(server.port(), "GET", "/echo", headers);
    const long trigger_ms = millisSince(started);
    EXPECT_EQ(trigger.status, 500) << trigger.body;
    EXPECT_THAT(trigger.body, HasSubstr("fail closed"));
    EXPECT_LT(trigger_ms, 3000);
    started = Clock::now();
    auto normal = request(server.port(), "GET", "/echo", acme);
    const long normal_ms = millisSince(started);
    EXPECT_EQ(normal.status, 200) << normal.body;
    EXPECT_LT(normal_ms, 1000);
    EXPECT_TRUE(settlesToIdle(server.pid()));
    std::printf("[ measured ] %-24s trigger %4ld ms, next request %3ld ms\n", f.name, trigger_ms,
                normal_ms);
  }
  EXPECT_TRUE(server.running());
  EXPECT_THAT(server.log(), HasSubstr("failing closed"));
}

TEST(LuaBudgetTest, PolicyDryRunsEndWithinTheirBudget) {
  TempDir dir;
  writeFile(dir / "hostile.lua", hostilePolicy());
  for (const Family& f : kFamilies) {
    SCOPED_TRACE(f.name);
    writeFile(dir / "in.json",
              std::string(R"({"request": {"headers": {"X-Trigger": ")") + f.name + "\"}}}");
    const auto started = Clock::now();
    int rc = -1;
    std::string out = runCommand(std::string(TRELLIS_CLI_PATH) + " policy test " +
                                     (dir / "hostile.lua").string() + " --input " +
                                     (dir / "in.json").string() + " 2>&1",
                                 &rc);
    EXPECT_LT(millisSince(started), 3000);
    EXPECT_EQ(rc, 1) << out;
    EXPECT_THAT(out, AllOf(HasSubstr("failed:"), HasSubstr("deny 500")));
  }
}

TEST(LuaBudgetTest, APolicyTopLevelRunsOffTheAdminThreadAndAnOverrunIsRefused) {
  // A budget that lets a top level spin for 1.5 s: long enough to see who waits for it.
  TrellisdProcess server(defaultTestConfig("",
                                           "policy:\n"
                                           "  instructions: 1000000000\n"
                                           "  wall_time_ms: 1500\n"));
  ASSERT_TRUE(server.start()) << server.log();
  writeFile(server.dir() / "spins.lua", "while true do end\nfunction on_request() end\n");
  writeFile(server.dir() / "good.lua", "function on_request() end\n");
  int rc = -1;
  std::string out;
  const auto started = Clock::now();
  std::thread apply(
      [&] { out = runCli(server, "policy apply " + (server.dir() / "spins.lua").string(), &rc); });
  std::this_thread::sleep_for(std::chrono::milliseconds(300));
  const auto asked = Clock::now();
  auto status = request(server.adminPort(), "GET", "/v1/status",
                        {{"Authorization", "Bearer " + server.adminToken()}});
  EXPECT_EQ(status.status, 200);
  EXPECT_LT(millisSince(asked), 1000) << "the admin listener waited for the policy's top level";
  apply.join();
  EXPECT_LT(millisSince(started), 3000);
  EXPECT_NE(rc, 0);
  EXPECT_THAT(out, AllOf(HasSubstr("422"), HasSubstr("wall-time budget"))) << out;
  out = runCli(server, "policy apply " + (server.dir() / "good.lua").string(), &rc);
  EXPECT_EQ(rc, 0) << out;
}

TEST(LuaBudgetTest, APluginWhoseTopLevelOverrunsFailsAndTheHostComesUpWithoutIt) {
  std::string plugins = "    - id: trellis/hello\n";
  for (const Family& f : kFamilies) plugins += "    - id: test/" + std::string(f.name) + "\n";
  std::string config = defaultTestConfig(plugins);
  config.replace(config.find("threads: 2"), 10, "threads: 1");
  config.replace(config.find("@FIXTURES@]"), 11, "@FIXTURES@, @DIR@/lua-plugins]");
  TrellisdProcess server(config);
  for (const Family& f : kFamilies) {
    const fs::path dir = server.dir() / "lua-plugins" / f.name;
    fs::create_directories(dir);
    writeFile(dir / "trellis-plugin.json", "{\"schema\": 1, \"id\": \"test/" + std::string(f.name) +
                                               "\", \"version\": \"1.0.0\", \"runtime\": \"lua\", "
                                               "\"entry\": {\"lua\": \"main.lua\"}}\n");
    writeFile(dir / "main.lua",
              std::string("local json_encode = trellis.json.encode\n") + f.lua + "\n");
  }
  const auto started = Clock::now();
  ASSERT_TRUE(server.start()) << server.log();
  std::printf("[ measured ] start-up with %zu overrunning plugins: %ld ms\n", std::size(kFamilies),
              millisSince(started));
  auto list = request(server.adminPort(), "GET", "/v1/plugins",
                      {{"Authorization", "Bearer " + server.adminToken()}});
  auto entries =
      Poco::JSON::Parser().parse(list.body).extract<Poco::JSON::Object::Ptr>()->getArray("plugins");
  std::map<std::string, std::string> state, error;
  for (size_t i = 0; i < entries->size(); ++i) {
    auto p = entries->getObject(static_cast<unsigned>(i));
    const auto id = p->getValue<std::string>("id");
    state[id] = p->getValue<std::string>("state");
    error[id] = p->optValue<std::string>("error", "");
  }
  for (const Family& f : kFamilies) {
    SCOPED_TRACE(f.name);
    const std::string id = "test/" + std::string(f.name);
    EXPECT_EQ(state[id], "failed");
    std::printf("[ measured ] plugin %-22s %s\n", f.name, error[id].c_str());
  }
  EXPECT_EQ(state["trellis/hello"], "active");
  const auto served = Clock::now();
  auto hello = request(server.port(), "GET", "/hello/ann", {{"Authorization", "Bearer acme-key"}});
  EXPECT_EQ(hello.status, 200) << hello.body;
  EXPECT_LT(millisSince(served), 1000);
  EXPECT_TRUE(settlesToIdle(server.pid()));
}

}  // namespace
}  // namespace trellis::test
