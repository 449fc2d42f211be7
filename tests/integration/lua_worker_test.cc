// Lua plugins in worker processes (isolation: process on a "runtime": "lua" plugin): the
// script runs in trellis-worker with its Lua sandbox, budgets and watchdog inside the
// worker's own sandbox. A script still running when the worker's call timeout fires is
// killed with its worker (504), the worker is restarted, and trellisd and its other plugins
// keep serving; each channel thread of the worker builds its own Lua state by replaying
// init, as each trellisd thread does in process.
#include <Poco/JSON/Array.h>
#include <Poco/JSON/Object.h>
#include <Poco/JSON/Parser.h>
#include <gmock/gmock.h>
#include <gtest/gtest.h>
#include <signal.h>

#include <chrono>
#include <filesystem>
#include <set>
#include <string>
#include <thread>
#include <vector>

#include "support/test_support.h"

namespace trellis::test {
namespace {

namespace fs = std::filesystem;
using ::testing::HasSubstr;

const std::map<std::string, std::string> kAcme = {{"Authorization", "Bearer acme-key"}};

Poco::JSON::Object::Ptr json(const std::string& body) {
  return Poco::JSON::Parser().parse(body).extract<Poco::JSON::Object::Ptr>();
}

// test/stuck: /stuck/spin never returns on its own within its budget (60 s of wall time,
// an instruction budget out of reach), which the worker's 1 s call timeout cuts short.
// /stuck/state answers the greeting init read from config and an id of the Lua state
// that ran it, after a loop long enough that two concurrent calls overlap.
constexpr const char* kStuckLua = R"(
local anchor = {}  -- kept alive, so its address names this state for as long as it lives
local greeting
function init(t)
  greeting = trellis.config("greeting") or "none"
  local missing = trellis.config("absent")
  t.route("GET", "/stuck/spin", function(ctx, req)
    while true do end
  end)
  t.route("GET", "/stuck/ok", function(ctx, req)
    return 200, "ok " .. ctx.tenant
  end)
  t.route("GET", "/stuck/state", function(ctx, req)
    local n = 0
    for i = 1, 20000000 do n = n + 1 end
    return 200, greeting .. " " .. tostring(missing) .. " " .. tostring(anchor)
  end)
  trellis.log.info("stuck ready")
end
)";

class LuaWorkerTest : public ::testing::Test {
 protected:
  void SetUp() override {
    std::string config = defaultTestConfig(
        "    - id: test/stuck\n"
        "      isolation: process\n"
        "      config: {greeting: Howdy}\n"
        "      lua: {instructions: 1000000000000, wall_ms: 60000, blocking_wall_ms: 60000}\n"
        "    - id: trellis/hello-lua\n"
        "  worker:\n"
        "    call_timeout_ms: 1000\n");
    const std::string fixtures = "@FIXTURES@]";
    config.replace(config.find(fixtures), fixtures.size(), "@FIXTURES@, @DIR@/lua-plugins]");
    server_ = std::make_unique<TrellisdProcess>(config);
    const fs::path dir = server_->dir() / "lua-plugins" / "stuck";
    fs::create_directories(dir);
    writeFile(dir / "trellis-plugin.json",
              R"({"schema": 1, "id": "test/stuck", "version": "1.0.0", "runtime": "lua", )"
              R"("entry": {"lua": "main.lua"}})"
              "\n");
    writeFile(dir / "main.lua", kStuckLua);
    ASSERT_TRUE(server_->start()) << server_->log();
  }

  HttpReply get(const std::string& target) {
    return request(server_->port(), "GET", target, kAcme);
  }

  Poco::JSON::Object::Ptr pluginEntry(const std::string& id) {
    auto reply = request(server_->adminPort(), "GET", "/v1/plugins",
                         {{"Authorization", "Bearer " + server_->adminToken()}});
    auto list = json(reply.body)->getArray("plugins");
    for (size_t i = 0; i < list->size(); ++i) {
      auto p = list->getObject(static_cast<unsigned>(i));
      if (p->getValue<std::string>("id") == id) return p;
    }
    return nullptr;
  }

  // test/stuck's shared worker as the admin API reports it.
  Poco::JSON::Object::Ptr worker() {
    auto p = pluginEntry("test/stuck");
    if (!p || !p->has("workers")) return nullptr;
    return p->getArray("workers")->getObject(0);
  }

  std::unique_ptr<TrellisdProcess> server_;
};

TEST_F(LuaWorkerTest, ALuaPluginRunsInASandboxedWorker) {
  auto ok = get("/stuck/ok");
  ASSERT_EQ(ok.status, 200) << ok.body << server_->log();
  EXPECT_EQ(ok.body, "ok acme");
  auto p = pluginEntry("test/stuck");
  ASSERT_TRUE(p);
  EXPECT_EQ(p->getValue<std::string>("runtime"), "lua");
  EXPECT_EQ(p->getValue<std::string>("isolation"), "process");
  auto w = worker();
  ASSERT_TRUE(w);
  EXPECT_EQ(w->getValue<std::string>("state"), "running");
  const int pid = w->getValue<int>("pid");
  EXPECT_GT(pid, 0);
  EXPECT_NE(pid, server_->pid());
  // The worker is its own sandboxed process: no_new_privs and a seccomp filter.
  const std::string status = readFile("/proc/" + std::to_string(pid) + "/status");
  EXPECT_THAT(status, HasSubstr("NoNewPrivs:\t1"));
  EXPECT_THAT(status, HasSubstr("Seccomp:\t2"));
  // init ran (and logged) once, in the worker; the other plugin is in trellisd.
  EXPECT_THAT(server_->log(), HasSubstr("plugin=test/stuck tenant=- stuck ready"));
  EXPECT_EQ(pluginEntry("trellis/hello-lua")->optValue<std::string>("isolation", ""), "");
}

// The case for a worker: a script that would hold its thread past the call timeout (here
// its wall budget is longer than the timeout, the way a slow script or a stuck C call
// would be) is killed with the worker instead of holding a thread of trellisd.
TEST_F(LuaWorkerTest, AScriptPastTheCallTimeoutIsKilledWithItsWorker) {
  ASSERT_EQ(get("/stuck/ok").status, 200) << server_->log();
  const int pid = worker()->getValue<int>("pid");
  ASSERT_GT(pid, 0);
  HttpReply spin;
  std::thread spinning([&] { spin = get("/stuck/spin"); });
  // trellisd serves its other plugins meanwhile.
  EXPECT_EQ(get("/hello-lua/ann").status, 200);
  spinning.join();
  EXPECT_EQ(spin.status, 504) << spin.body;
  EXPECT_EQ(spin.header("content-type"), "application/problem+json");
  EXPECT_THAT(spin.body, HasSubstr("did not answer within 1000 ms"));
  EXPECT_TRUE(eventually([&] { return ::kill(pid, 0) != 0; })) << "the worker was not killed";

  // The next call gets a new worker, with the plugin's state built afresh.
  HttpReply ok;
  EXPECT_TRUE(eventually([&] {
    ok = get("/stuck/ok");
    return ok.status == 200;
  })) << ok.status
      << ok.body;
  EXPECT_EQ(ok.body, "ok acme");
  auto w = worker();
  ASSERT_TRUE(w);
  EXPECT_EQ(w->getValue<std::string>("state"), "running");
  EXPECT_NE(w->getValue<int>("pid"), pid);
  EXPECT_EQ(w->getValue<int>("crashes"), 1);
  EXPECT_THAT(w->getValue<std::string>("last_crash"), HasSubstr("gave no answer within 1000 ms"));
  EXPECT_EQ(get("/hello-lua/ann").status, 200);
}

TEST_F(LuaWorkerTest, EachWorkerThreadReplaysInitWithTheSameConfig) {
  // Pairs of concurrent calls: the second of a pair finds the first channel busy and runs
  // on another thread of the worker, which builds its own Lua state by replaying init.
  std::set<std::string> states;
  for (int round = 0; round < 20 && states.size() < 2; ++round) {
    std::vector<HttpReply> replies(2);
    std::vector<std::thread> callers;
    for (auto& r : replies) callers.emplace_back([&] { r = get("/stuck/state"); });
    for (auto& t : callers) t.join();
    for (const auto& r : replies) {
      ASSERT_EQ(r.status, 200) << r.body << server_->log();
      // The replay sees what the first init saw: the greeting, and "absent" missing.
      ASSERT_EQ(r.body.rfind("Howdy nil table: ", 0), 0u) << r.body;
      states.insert(r.body);
    }
  }
  EXPECT_EQ(states.size(), 2u) << "no two calls overlapped in 20 rounds";
  // The replays are silent: init's log line was written once.
  const std::string log = server_->log();
  EXPECT_EQ(log.find("stuck ready"), log.rfind("stuck ready"));
}

}  // namespace
}  // namespace trellis::test
