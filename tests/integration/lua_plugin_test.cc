// Lua plugins ("runtime": "lua") end to end on a real trellisd: plugins/hello-lua served
// through the HTTP server, events between Lua and native plugins, refusals at load naming
// the file, and tests/fixtures/hostile-lua, whose every attack must end as a 5xx (or a
// refusal it can see) for that request alone while the host keeps serving.
#include <Poco/JSON/Array.h>
#include <Poco/JSON/Object.h>
#include <Poco/JSON/Parser.h>
#include <gmock/gmock.h>
#include <gtest/gtest.h>

#include <filesystem>
#include <string>
#include <thread>

#include "support/test_support.h"

namespace trellis::test {
namespace {

namespace fs = std::filesystem;
using ::testing::AllOf;
using ::testing::HasSubstr;
using ::testing::MatchesRegex;
using ::testing::Not;

const std::map<std::string, std::string> kAcme = {{"Authorization", "Bearer acme-key"}};
const std::map<std::string, std::string> kGlobex = {{"Authorization", "Bearer globex-key"}};

Poco::JSON::Object::Ptr json(const std::string& body) {
  return Poco::JSON::Parser().parse(body).extract<Poco::JSON::Object::Ptr>();
}

// The default test config, with @DIR@/lua-plugins as one more plugin directory (tests
// write plugin folders there before starting) and `threads` replacing the data plane's
// thread setting.
std::string luaConfig(const std::string& plugins, const std::string& threads = "threads: 2") {
  std::string config = defaultTestConfig(plugins);
  auto replace = [&](const std::string& from, const std::string& to) {
    config.replace(config.find(from), from.size(), to);
  };
  replace("@FIXTURES@]", "@FIXTURES@, @DIR@/lua-plugins]");
  replace("threads: 2", threads);
  return config;
}

// Writes a Lua plugin folder: id "test/<name>", entry main.lua.
void writeLuaPlugin(const fs::path& root, const std::string& name, const std::string& main_lua,
                    const std::string& manifest_extra = "") {
  fs::create_directories(root / name);
  writeFile(root / name / "trellis-plugin.json",
            "{\"schema\": 1, \"id\": \"test/" + name +
                "\", \"version\": \"1.0.0\", \"runtime\": \"lua\", "
                "\"entry\": {\"lua\": \"main.lua\"}" +
                manifest_extra + "}\n");
  if (!main_lua.empty()) writeFile(root / name / "main.lua", main_lua);
}

Poco::JSON::Object::Ptr pluginEntry(const TrellisdProcess& t, const std::string& id) {
  auto reply =
      request(t.adminPort(), "GET", "/v1/plugins", {{"Authorization", "Bearer " + t.adminToken()}});
  auto list = json(reply.body)->getArray("plugins");
  for (size_t i = 0; i < list->size(); ++i) {
    auto p = list->getObject(static_cast<unsigned>(i));
    if (p->getValue<std::string>("id") == id) return p;
  }
  return nullptr;
}

std::string metrics(const TrellisdProcess& t) {
  return request(t.adminPort(), "GET", "/metrics", {{"Authorization", "Bearer " + t.adminToken()}})
      .body;
}

class LuaPluginTest : public ::testing::Test {
 protected:
  // Creates the server (not started), so a test can lay out plugins in its directory.
  void create(const std::string& config) { server_ = std::make_unique<TrellisdProcess>(config); }
  void start() { ASSERT_TRUE(server_->start()) << server_->log(); }
  fs::path pluginRoot() const { return server_->dir() / "lua-plugins"; }
  HttpReply get(const std::string& target, const std::map<std::string, std::string>& who = kAcme) {
    return request(server_->port(), "GET", target, who);
  }
  TrellisdProcess& server() { return *server_; }
  std::unique_ptr<TrellisdProcess> server_;
};

TEST_F(LuaPluginTest, HelloLuaGreetsAndCountsVisitsPerTenantOverHttp) {
  create(luaConfig("    - id: trellis/hello-lua\n      config: {greeting: Howdy}\n"));
  start();
  auto first = get("/hello-lua/ann");
  ASSERT_EQ(first.status, 200) << first.body << server().log();
  EXPECT_EQ(first.header("content-type"), "application/json");
  EXPECT_FALSE(first.header("x-request-id").empty());
  auto body = json(first.body);
  EXPECT_EQ(body->getValue<std::string>("message"), "Howdy, ann!");
  EXPECT_EQ(body->getValue<int>("visits"), 1);
  EXPECT_EQ(body->getValue<std::string>("tenant"), "acme");
  EXPECT_EQ(json(get("/hello-lua/ann").body)->getValue<int>("visits"), 2);
  // Another tenant has its own store; path parameters arrive percent-decoded.
  EXPECT_EQ(json(get("/hello-lua/ann", kGlobex).body)->getValue<int>("visits"), 1);
  EXPECT_EQ(json(get("/hello-lua/J%20Doe").body)->getValue<std::string>("message"),
            "Howdy, J Doe!");
  auto names = json(get("/hello-lua").body)->getArray("names");
  EXPECT_EQ(names->size(), 2u);

  auto bad = get("/hello-lua/" + std::string(65, 'x'));
  EXPECT_EQ(bad.status, 400);
  EXPECT_EQ(bad.header("content-type"), "application/problem+json");
  EXPECT_EQ(get("/hello-lua/ann", {}).status, 401);

  auto entry = pluginEntry(server(), "trellis/hello-lua");
  ASSERT_TRUE(entry);
  EXPECT_EQ(entry->getValue<std::string>("state"), "active");
  EXPECT_EQ(entry->getValue<std::string>("runtime"), "lua");
  EXPECT_THAT(
      metrics(server()),
      HasSubstr("trellis_plugin_hello_lua_greetings_total{plugin=\"trellis/hello-lua\"} 4"));
  // init's log line is tagged with the plugin, and written once: the other threads' Lua
  // states replay init silently.
  const std::string log = server().log();
  EXPECT_THAT(log, HasSubstr("plugin=trellis/hello-lua tenant=- hello-lua ready"));
  EXPECT_EQ(log.find("hello-lua ready"), log.rfind("hello-lua ready"));
}

TEST_F(LuaPluginTest, HelloLuaAnswersAnEmptyListAsAnArrayAndABadNameWith400) {
  create(luaConfig("    - id: trellis/hello-lua\n"));
  start();
  // Nobody greeted yet: a list, even when empty.
  auto empty = get("/hello-lua");
  ASSERT_EQ(empty.status, 200) << empty.body;
  EXPECT_EQ(empty.body, R"({"names":[]})");
  // An encoded NUL or broken percent-encoding is refused by the host before the plugin
  // runs; other control bytes by the plugin's own check. Both are the client's mistake.
  for (const char* name : {"a%00b", "%00", "a%zzb"}) {
    auto bad = get(std::string("/hello-lua/") + name);
    EXPECT_EQ(bad.status, 400) << name << ": " << bad.body;
    EXPECT_EQ(bad.header("content-type"), "application/problem+json") << name;
    EXPECT_THAT(bad.body, HasSubstr("path parameter name is not valid percent-encoding or holds "
                                    "a NUL byte"))
        << name;
    EXPECT_THAT(bad.body, HasSubstr(bad.header("x-request-id"))) << name;
  }
  for (const char* name : {"a%0Ab", "a%7Fb"}) {
    auto bad = get(std::string("/hello-lua/") + name);
    EXPECT_EQ(bad.status, 400) << name << ": " << bad.body;
    EXPECT_THAT(bad.body, HasSubstr("name must be 1-64 printable ASCII characters")) << name;
  }
  EXPECT_EQ(get("/hello-lua").body, R"({"names":[]})");  // nothing was counted
  EXPECT_THAT(server().log(), Not(HasSubstr("plugin=trellis/hello-lua tenant=acme request=")))
      << "a client's bad name was logged as a plugin failure";
}

TEST_F(LuaPluginTest, LuaAndNativePluginsExchangeEventsInThePublishersTenant) {
  // A Lua subscriber counts the native hello's greetings in the tenant's KV.
  create(luaConfig("    - id: trellis/hello\n    - id: test/lua-listener\n"));
  writeLuaPlugin(pluginRoot(), "lua-listener", R"(
function init(t)
  t.subscribe("hello.greeted", function(ctx, topic, payload)
    local name = trellis.json.decode(payload).name
    local n = tonumber((trellis.kv.get("seen/" .. name))) or 0
    assert(trellis.kv.put("seen/" .. name, tostring(n + 1)))
  end)
  t.route("GET", "/lua-listener/{name}", function(ctx, req)
    return 200, trellis.kv.get("seen/" .. req.params.name) or "0"
  end)
end
)",
                 ", \"capabilities\": [\"kv\", \"events.subscribe\"], "
                 "\"blocking_routes\": [\"GET /lua-listener/{name}\"]");
  start();
  for (int i = 0; i < 3; ++i) ASSERT_EQ(get("/hello/ann").status, 200);
  ASSERT_EQ(get("/hello/ann", kGlobex).status, 200);
  std::string seen;
  for (int i = 0; i < 100 && seen != "3"; ++i) {
    std::this_thread::sleep_for(std::chrono::milliseconds(50));
    seen = get("/lua-listener/ann").body;
  }
  EXPECT_EQ(seen, "3") << server().log();
  EXPECT_EQ(get("/lua-listener/ann", kGlobex).body, "1");
}

TEST_F(LuaPluginTest, BrokenLuaPluginsAreRefusedNamingTheFileAndTheRestServes) {
  create(
      luaConfig("    - id: trellis/hello-lua\n    - id: test/syntax\n    - id: test/init-error\n"
                "    - id: test/init-spins\n    - id: test/escapes\n    - id: test/directory\n"
                "    - id: test/tampered\n    - id: test/missing\n    - id: test/start-refuses\n",
                "threads: 1"));
  const fs::path root = pluginRoot();
  writeLuaPlugin(root, "syntax", "function init(t)\n  local x = = 1\nend\n");
  writeLuaPlugin(root, "init-error", "function init(t)\n  t.route('GET', '/x', nil)\nend\n");
  writeLuaPlugin(root, "init-spins", "function init(t) while true do end end\n");
  writeLuaPlugin(root, "escapes", "");
  writeFile(server().dir() / "outside.lua", "function init(t) end\n");
  fs::create_symlink(server().dir() / "outside.lua", root / "escapes" / "main.lua");
  writeLuaPlugin(root, "directory", "");
  fs::create_directories(root / "directory" / "main.lua");
  writeLuaPlugin(root, "tampered", "function init(t) end -- changed after signing\n",
                 ", \"files\": {\"main.lua\": \"" + std::string(64, '0') + "\"}");
  writeLuaPlugin(root, "missing", "");
  writeLuaPlugin(root, "start-refuses",
                 "function start(ctx)\n"
                 "  return nil, 'no database URL for tenant \"' .. ctx.tenant .. '\"'\n"
                 "end\n");
  start();

  auto error = [&](const std::string& id) {
    auto p = pluginEntry(server(), id);
    if (!p) return std::string("<absent>");
    EXPECT_EQ(p->getValue<std::string>("state"), "failed") << id;
    return p->has("error") ? p->getValue<std::string>("error") : std::string("<no error>");
  };
  EXPECT_THAT(error("test/syntax"), HasSubstr("main.lua:2:"));
  EXPECT_THAT(error("test/init-error"),
              AllOf(HasSubstr("main.lua:2:"), HasSubstr("bad argument #3 to 'route'")));
  EXPECT_THAT(error("test/init-spins"), HasSubstr("instruction budget"));
  EXPECT_THAT(error("test/escapes"), HasSubstr("outside the plugin folder"));
  EXPECT_THAT(error("test/directory"), HasSubstr("not a regular file"));
  EXPECT_THAT(error("test/tampered"), HasSubstr("SHA-256 of main.lua does not match"));
  EXPECT_THAT(error("test/missing"), HasSubstr("main.lua is missing"));
  EXPECT_THAT(error("test/start-refuses"), HasSubstr("start: no database URL for tenant \"\""));
  EXPECT_EQ(get("/hello-lua/ann").status, 200);
}

TEST_F(LuaPluginTest, LuaPluginsGetTheSelfServiceCallsTheirManifestRequests) {
  create(luaConfig("    - id: test/self\n"));
  writeLuaPlugin(pluginRoot(), "self", R"(
function init(t)
  t.route("GET", "/self", function(ctx, req)
    local info, err, code = trellis.tenant_info()
    if not info then return 500, code end
    return 200, info.id .. " " .. info.plan .. " " .. trellis.principal()
  end)
  t.route("GET", "/self/keys", function(ctx, req)
    local keys, err, code = trellis.keys.list()
    return 403, code .. ": " .. err
  end)
end
)",
                 ", \"capabilities\": [\"tenant.read\"]");
  start();
  auto self = get("/self");
  EXPECT_EQ(self.status, 200) << server().log();
  EXPECT_THAT(self.body, MatchesRegex("acme default [0-9a-z:]+"));  // the key's id
  auto keys = get("/self/keys");
  EXPECT_EQ(keys.status, 403);
  EXPECT_EQ(keys.body,
            "permission_denied: capability \"tenant.keys\" was not requested in the manifest");
}

class HostileLuaTest : public LuaPluginTest {
 protected:
  void SetUp() override {
    // One event-loop thread, so the requests that share Lua state share it for certain;
    // generous wall time, so the instruction and memory budgets are what trips.
    std::string config = luaConfig(
        "    - id: trellis/hello-lua\n"
        "    - id: fixture/hostile-lua\n"
        "      lua: {instructions: 2000000, memory_bytes: 8388608, wall_ms: 10000,\n"
        "            blocking_wall_ms: 10000}\n",
        "threads: 1");
    const std::string globex = "  - id: globex\n";
    config.insert(config.find(globex) + globex.size(), "    quotas: {max_host_calls: 20}\n");
    create(config);
    start();
  }

  // The host answers, and the attacking plugin itself still serves well-behaved calls.
  void expectStillServing() {
    EXPECT_EQ(get("/hello-lua/ann").status, 200);
    auto ok = get("/hostile/ok");
    EXPECT_EQ(ok.status, 200);
    EXPECT_EQ(ok.body, "ok acme");
  }
};

TEST_F(HostileLuaTest, EndlessLoopsArePreemptedWith503AndCounted) {
  for (const char* route : {"/hostile/spin", "/hostile/spin-pcall", "/hostile/spin-blocking"}) {
    auto reply = get(route);
    EXPECT_EQ(reply.status, 503) << route << reply.body;
    EXPECT_EQ(reply.header("content-type"), "application/problem+json");
    EXPECT_THAT(reply.body, Not(HasSubstr("budget")));  // details go to the log only
    expectStillServing();
  }
  EXPECT_THAT(
      server().log(),
      AllOf(HasSubstr("plugin=fixture/hostile-lua tenant=acme"),
            HasSubstr("GET /hostile/spin failed: UNAVAILABLE: instruction budget of 2000000 "
                      "exceeded")));
  EXPECT_THAT(metrics(server()), HasSubstr("trellis_lua_plugin_failures_total{plugin=\"fixture/"
                                           "hostile-lua\",cause=\"instructions\"} 3"));
}

TEST_F(LuaPluginTest, EventLoopAndBlockingRoutesRunUnderTheirOwnWallTimeBudgets) {
  // With the instruction budget out of reach, the wall clock ends the loops: the shorter
  // budget on the event loop, the longer one on the blocking pool.
  create(
      luaConfig("    - id: fixture/hostile-lua\n"
                "      lua: {instructions: 1000000000000, wall_ms: 50, blocking_wall_ms: 300}\n"));
  start();
  EXPECT_EQ(get("/hostile/spin").status, 503);
  EXPECT_EQ(get("/hostile/spin-blocking").status, 503);
  EXPECT_EQ(get("/hostile/ok").status, 200);
  EXPECT_THAT(
      server().log(),
      AllOf(HasSubstr("GET /hostile/spin failed: UNAVAILABLE: wall-time budget of 50000 us"),
            HasSubstr("GET /hostile/spin-blocking failed: UNAVAILABLE: wall-time budget "
                      "of 300000 us")));
  EXPECT_THAT(metrics(server()), HasSubstr("trellis_lua_plugin_failures_total{plugin=\"fixture/"
                                           "hostile-lua\",cause=\"wall_time\"} 2"));
}

TEST_F(HostileLuaTest, MemoryBombIsStoppedWith503) {
  auto reply = get("/hostile/memory");
  EXPECT_EQ(reply.status, 503) << reply.body;
  expectStillServing();
  EXPECT_THAT(server().log(), HasSubstr("memory budget of 8388608 bytes exceeded"));
  EXPECT_THAT(metrics(server()), HasSubstr("trellis_lua_plugin_failures_total{plugin=\"fixture/"
                                           "hostile-lua\",cause=\"memory\"} 1"));
}

TEST_F(HostileLuaTest, IoOsAndRequireDoNotExist) {
  const fs::path marker = server().dir() / "pwned";
  EXPECT_EQ(get("/hostile/io").status, 500);
  EXPECT_THAT(server().log(), HasSubstr("attempt to index a nil value (global 'io')"));
  for (const char* route : {"/hostile/os", "/hostile/require"}) {
    auto reply = get(std::string(route) + "?file=" + marker.string());
    EXPECT_EQ(reply.status, 500) << route;
    EXPECT_THAT(reply.body, Not(HasSubstr("passwd")));
    expectStillServing();
  }
  EXPECT_FALSE(fs::exists(marker));
  EXPECT_THAT(server().log(), AllOf(HasSubstr("global 'os'"), HasSubstr("global 'require'")));
}

TEST_F(HostileLuaTest, ATenantsDataAndCallStayWithThatTenant) {
  ASSERT_EQ(request(server().port(), "PUT", "/hostile/secret", kAcme, "acme-only").status, 204);
  EXPECT_EQ(get("/hostile/secret").body, "acme-only");
  // globex runs the same code in the same Lua state, but its KV calls reach its own store.
  auto stolen = get("/hostile/secret", kGlobex);
  EXPECT_EQ(stolen.status, 500);
  EXPECT_THAT(stolen.body, Not(HasSubstr("acme-only")));

  // A ctx and req kept from acme's request are dead in globex's.
  ASSERT_EQ(request(server().port(), "POST", "/hostile/stash", kAcme, "acme-body").status, 200);
  auto replayed = get("/hostile/replay", kGlobex);
  EXPECT_EQ(replayed.status, 500);
  EXPECT_THAT(replayed.body, Not(AllOf(HasSubstr("acme"), HasSubstr("acme-body"))));
  EXPECT_THAT(server().log(), HasSubstr("ctx is only valid during the call that received it"));
  expectStillServing();
}

TEST_F(HostileLuaTest, CapabilitiesAndHostCallQuotasAreTheKernels) {
  // events.publish is not in the manifest: refused, counted and visible to the script.
  auto denied = get("/hostile/publish");
  EXPECT_EQ(denied.status, 200);
  EXPECT_EQ(denied.body,
            "nil permission_denied capability \"events.publish\" was not requested in the "
            "manifest");
  auto entry = pluginEntry(server(), "fixture/hostile-lua");
  ASSERT_TRUE(entry);
  EXPECT_EQ(entry->getValue<int>("denied_calls"), 1);

  // globex allows 20 host calls per request: the refusal becomes that quota's 429.
  auto capped = get("/hostile/many-calls", kGlobex);
  EXPECT_EQ(capped.status, 429) << capped.body;
  EXPECT_EQ(json(capped.body)->getValue<std::string>("quota"), "max_host_calls");
  EXPECT_EQ(get("/hostile/many-calls").body, "never refused");  // acme has no such cap
  expectStillServing();
}

}  // namespace
}  // namespace trellis::test
