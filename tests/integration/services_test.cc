// Inter-plugin services and trace context on a real trellisd: fixture/svc-a and
// fixture/svc-b (tests/fixtures/svc-a/svc.c) provide services and call each other's; each
// test asserts what a tenant, a plugin author or an operator would see.
#include <Poco/JSON/Object.h>
#include <Poco/JSON/Parser.h>
#include <gmock/gmock.h>
#include <gtest/gtest.h>

#include <filesystem>
#include <future>
#include <regex>
#include <string>
#include <thread>

#include "support/test_support.h"

namespace trellis::test {
namespace {

namespace fs = std::filesystem;
using ::testing::HasSubstr;
using ::testing::MatchesRegex;
using ::testing::Not;
using ::testing::StartsWith;

const std::map<std::string, std::string> kAcme = {{"Authorization", "Bearer acme-key"}};
const std::map<std::string, std::string> kGlobex = {{"Authorization", "Bearer globex-key"}};
constexpr const char* kTraceparent = "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01";

Poco::JSON::Object::Ptr json(const std::string& body) {
  return Poco::JSON::Parser().parse(body).extract<Poco::JSON::Object::Ptr>();
}

// trellisd with svc-a and svc-b copied into its own plugin folder (so a test can drop a
// new version beside them), and `extra` config appended.
class ServicesTest : public ::testing::Test {
 protected:
  void startWith(const std::string& tenants_extra = "", const std::string& plugins = "") {
    std::string config = defaultTestConfig(plugins.empty() ? "    - id: fixture/svc-a\n"
                                                             "    - id: fixture/svc-b\n"
                                                           : plugins);
    config.replace(config.find("@PLUGINS@, @FIXTURES@"), 21, "@DIR@/plugins");
    if (!tenants_extra.empty()) {
      const std::string globex = "  - id: globex\n";
      config.insert(config.find(globex) + globex.size(), tenants_extra);
    }
    server_ = std::make_unique<TrellisdProcess>(config);
    for (const char* name : {"svc-a", "svc-b", "needs-svc", "svc-lua"}) install(name);
    ASSERT_TRUE(server_->start()) << server_->log();
  }
  void install(const std::string& fixture) {
    fs::create_directories(server_->dir() / "plugins");
    fs::copy(fs::path(TRELLIS_FIXTURE_DIR) / fixture, server_->dir() / "plugins" / fixture,
             fs::copy_options::recursive | fs::copy_options::overwrite_existing);
  }
  // svc-a's route that calls `service`.`method` with `body`.
  HttpReply call(const std::string& service, const std::string& method,
                 const std::string& body = "", std::map<std::string, std::string> headers = kAcme) {
    return request(server_->port(), "POST", "/svc-a/call/" + service + "/" + method, headers, body);
  }
  HttpReply admin(const std::string& method, const std::string& path,
                  const std::string& body = "") {
    return request(server_->adminPort(), method, path,
                   {{"Authorization", "Bearer " + server_->adminToken()}}, body);
  }
  std::unique_ptr<TrellisdProcess> server_;
};

TEST_F(ServicesTest, CallCarriesTenantTraceAndCallerIdentity) {
  startWith();
  auto echo = call("svc-b", "echo", "ping");
  ASSERT_EQ(echo.status, 200) << echo.body << server_->log();
  EXPECT_EQ(echo.body, "ping");

  auto headers = kAcme;
  headers["traceparent"] = kTraceparent;
  auto who = call("svc-b", "whoami", "", headers);
  ASSERT_EQ(who.status, 200) << who.body;
  // caller, tenant, traceparent (same trace, a span of its own), principal
  EXPECT_THAT(who.body, MatchesRegex("fixture/svc-a acme "
                                     "00-4bf92f3577b34da6a3ce929d0e0e4736-[0-9a-f]{16}-01 "
                                     "cfg[0-9a-f]+"));
  EXPECT_THAT(who.body, Not(HasSubstr("00f067aa0ba902b7")));

  // The provider's data is kept per caller tenant.
  EXPECT_EQ(call("svc-b", "count").body, "1");
  EXPECT_EQ(call("svc-b", "count").body, "2");
  EXPECT_EQ(call("svc-b", "count", "", kGlobex).body, "1");
}

TEST_F(ServicesTest, ProviderFailuresComeBackAsStatusNeverAsACrash) {
  startWith();
  auto failed = call("svc-b", "fail");
  EXPECT_EQ(failed.status, 502);
  EXPECT_EQ(failed.body, "UNAVAILABLE: service svc-b.fail: the backing store is down");

  auto missing = call("svc-b", "nope");
  EXPECT_EQ(missing.body, "NOT_FOUND: service \"svc-b\" has no method \"nope\"");

  EXPECT_EQ(call("svc-b", "nest", "6").body, "0");  // a -> b -> a … six deep
  auto deep = call("svc-b", "nest", "20");
  EXPECT_EQ(deep.status, 502);
  EXPECT_THAT(deep.body, StartsWith("INVALID: service svc-b.nest: service svc-a.nest: "));
  EXPECT_THAT(deep.body, HasSubstr("service calls nest deeper than 8"));

  // A reply over 1 MiB is refused; the method sees the status.
  EXPECT_EQ(call("svc-b", "huge").body, "INVALID");
  auto bad_name = call("Not_A_Service", "echo");
  EXPECT_EQ(bad_name.body, "INVALID: \"Not_A_Service\" is not a valid service name");
  EXPECT_EQ(call("svc-a", "echo").body, "INVALID: a plugin cannot call its own service");

  // The host still serves.
  EXPECT_EQ(call("svc-b", "echo", "still here").body, "still here");
}

TEST_F(ServicesTest, CapabilityAndGrantGateEveryCall) {
  // globex lets svc-a use kv only: no service:svc-b for it.
  startWith("    grants: {fixture/svc-a: [kv]}\n");
  auto undeclared = call("svc-c", "echo");
  EXPECT_EQ(undeclared.status, 502);
  EXPECT_EQ(undeclared.body,
            "PERMISSION_DENIED: capability \"service:svc-c\" was not requested in the manifest");

  auto ungranted = call("svc-b", "echo", "x", kGlobex);
  EXPECT_EQ(ungranted.body,
            "PERMISSION_DENIED: capability \"service:svc-b\" is not granted to this plugin by "
            "tenant globex");
  EXPECT_EQ(call("svc-b", "echo", "x").body, "x");  // acme grants everything requested

  auto metrics = admin("GET", "/metrics");
  EXPECT_THAT(metrics.body, HasSubstr("trellis_plugin_capability_denied_total{plugin=\"fixture/"
                                      "svc-a\",capability=\"service:svc-b\"} 1"));
}

TEST_F(ServicesTest, ProviderHostCallsCountAgainstTheRequestQuota) {
  startWith("    quotas: {max_host_calls: 30}\n");
  EXPECT_EQ(call("svc-b", "spend", "10", kGlobex).body, "10");
  auto over = call("svc-b", "spend", "100", kGlobex);
  EXPECT_EQ(over.status, 429) << over.body;
  EXPECT_EQ(json(over.body)->getValue<std::string>("quota"), "max_host_calls");
  EXPECT_EQ(call("svc-b", "spend", "100").body, "100");  // acme has no such quota
}

TEST_F(ServicesTest, UnloadedProviderAnswersUnavailable) {
  startWith();
  ASSERT_EQ(admin("POST", "/v1/plugins/fixture/svc-b/deactivate").status, 200);
  auto gone = call("svc-b", "echo", "x");
  EXPECT_EQ(gone.status, 502);
  EXPECT_EQ(gone.body, "UNAVAILABLE: no active plugin provides service \"svc-b\"");
  ASSERT_EQ(admin("POST", "/v1/plugins/fixture/svc-b/activate").status, 200);
  EXPECT_EQ(call("svc-b", "echo", "back").body, "back");
}

TEST_F(ServicesTest, HotUpgradeDrainsCallsInFlight) {
  startWith();
  ASSERT_EQ(request(server_->port(), "POST", "/svc-b/call/svc-a/version", kAcme).body, "1.0.0");
  // A call into svc-a 1.0.0 that takes a while…
  auto slow = std::async(std::launch::async, [&] {
    return request(server_->port(), "POST", "/svc-b/call/svc-a/sleep", kAcme, "4500");
  });
  std::this_thread::sleep_for(std::chrono::milliseconds(300));
  // …while 2.0.0 replaces it: new calls reach 2.0.0 at once, the running one finishes on
  // 1.0.0, which is stopped only after it.
  install("svc-a-v2");
  auto upgrade = std::async(std::launch::async,
                            [&] { return admin("POST", "/v1/plugins/fixture/svc-a/activate"); });
  // Activation takes a moment (longer when svc-a runs in a worker under ASan): new calls
  // reach 2.0.0 well before the slow one ends.
  std::string version;
  for (int i = 0; i < 60 && version != "2.0.0"; ++i) {
    std::this_thread::sleep_for(std::chrono::milliseconds(50));
    version = request(server_->port(), "POST", "/svc-b/call/svc-a/version", kAcme).body;
  }
  EXPECT_EQ(version, "2.0.0");
  EXPECT_EQ(slow.wait_for(std::chrono::milliseconds(0)), std::future_status::timeout);
  auto finished = slow.get();
  EXPECT_EQ(finished.status, 200) << finished.body;
  EXPECT_EQ(finished.body, "slept");
  auto upgraded = upgrade.get();
  ASSERT_EQ(upgraded.status, 200) << upgraded.body << server_->log();
  EXPECT_EQ(json(upgraded.body)->getValue<std::string>("previous"), "1.0.0");
  EXPECT_TRUE(server_->running());
}

TEST_F(ServicesTest, ResolverRefusesAnUnsatisfiedRequirementNamingServiceAndRange) {
  startWith("", "    - id: fixture/svc-a\n    - id: fixture/needs-svc\n");
  auto list = json(admin("GET", "/v1/plugins").body)->getArray("plugins");
  std::string error;
  for (size_t i = 0; i < list->size(); ++i) {
    auto p = list->getObject(static_cast<unsigned>(i));
    if (p->getValue<std::string>("id") == "fixture/needs-svc") {
      error = p->getValue<std::string>("error");
    }
  }
  EXPECT_EQ(error, "requires service svc-z ^1 which no enabled plugin provides");
}

TEST_F(ServicesTest, TraceContextIsValidatedPropagatedAndReported) {
  startWith();
  auto headers = kAcme;
  headers["traceparent"] = kTraceparent;
  headers["tracestate"] = "congo=t61rcWkgMzE";
  auto kept = request(server_->port(), "GET", "/svc-a/trace", headers);
  ASSERT_EQ(kept.status, 200);
  EXPECT_THAT(kept.body, MatchesRegex("00-4bf92f3577b34da6a3ce929d0e0e4736-[0-9a-f]{16}-01 "
                                      "congo=t61rcWkgMzE"));

  headers["traceparent"] = "00-4bf92f3577b34da6a3ce929d0e0e4736-0000000000000000-01";
  auto replaced = request(server_->port(), "GET", "/svc-a/trace", headers);
  EXPECT_THAT(replaced.body, MatchesRegex("00-[0-9a-f]{32}-[0-9a-f]{16}-00 "));
  EXPECT_THAT(replaced.body, Not(HasSubstr("4bf92f3577b34da6a3ce929d0e0e4736")));

  // Errors name the trace, and the access log has it.
  headers["traceparent"] = kTraceparent;
  auto missing = request(server_->port(), "GET", "/no/such/route", headers);
  EXPECT_EQ(missing.status, 404);
  EXPECT_EQ(json(missing.body)->getValue<std::string>("trace_id"),
            "4bf92f3577b34da6a3ce929d0e0e4736");
  auto unauthorized = request(server_->port(), "GET", "/svc-a/trace");
  EXPECT_EQ(unauthorized.status, 401);
  EXPECT_THAT(json(unauthorized.body)->getValue<std::string>("trace_id"),
              MatchesRegex("[0-9a-f]{32}"));
  std::this_thread::sleep_for(std::chrono::milliseconds(300));  // the log is asynchronous
  EXPECT_THAT(readFile(server_->dir() / "access.log"),
              HasSubstr("\"trace_id\":\"4bf92f3577b34da6a3ce929d0e0e4736\""));
}

TEST_F(ServicesTest, ForeignOrReleasedHandlesAreInvalid) {
  startWith();
  auto bogus = request(server_->port(), "POST", "/svc-a/handle-close/12345", kAcme);
  EXPECT_EQ(bogus.status, 200);
  EXPECT_THAT(bogus.body, StartsWith("INVALID: handle 12345 is not open for this plugin"));
}

TEST_F(ServicesTest, LuaPluginsProvideAndCallServicesAndRunJobs) {
  startWith("", "    - id: fixture/svc-a\n    - id: fixture/svc-b\n    - id: fixture/svc-lua\n");
  EXPECT_EQ(call("svc-lua", "echo", "ping").body, "lua:ping");
  EXPECT_THAT(call("svc-lua", "whoami", "", kGlobex).body,
              MatchesRegex("globex 00-[0-9a-f]{32}-[0-9a-f]{16}-0[01]"));
  auto failed = call("svc-lua", "fail");
  EXPECT_EQ(failed.status, 502);
  EXPECT_EQ(failed.body, "INTERNAL: service svc-lua.fail: lua says no");

  auto from_lua = request(server_->port(), "POST", "/svc-lua/call/svc-b/echo", kAcme, "hi");
  EXPECT_EQ(from_lua.status, 200) << from_lua.body;
  EXPECT_EQ(from_lua.body, "hi");
  auto ungranted = request(server_->port(), "POST", "/svc-lua/call/svc-z/echo", kAcme, "hi");
  EXPECT_EQ(ungranted.body, "capability \"service:svc-z\" was not requested in the manifest");

  ASSERT_EQ(request(server_->port(), "POST", "/svc-lua/job/j1", kAcme).body, "OK");
  std::string runs;
  for (int i = 0; i < 100; ++i) {
    runs = request(server_->port(), "GET", "/svc-lua/job/j1", kAcme).body;
    if (runs.starts_with("1 ")) break;
    std::this_thread::sleep_for(std::chrono::milliseconds(100));
  }
  EXPECT_THAT(runs, MatchesRegex("1 00-[0-9a-f]{32}-[0-9a-f]{16}-0[01]")) << server_->log();
}

// sdk/examples/sequence-c as shipped: a provider and a consumer that also schedules jobs.
TEST(ServiceExampleTest, TicketsAreNumberedPerTenantAndFollowedUpByAJob) {
  TrellisdProcess server(defaultTestConfig("    - id: acme/tickets\n    - id: acme/sequence\n"));
  ASSERT_TRUE(server.start()) << server.log();
  auto first = request(server.port(), "POST", "/tickets", kAcme);
  EXPECT_EQ(first.status, 201) << first.body << server.log();
  EXPECT_EQ(first.body, "ticket-1");
  EXPECT_EQ(request(server.port(), "POST", "/tickets", kAcme).body, "ticket-2");
  EXPECT_EQ(request(server.port(), "POST", "/tickets", kGlobex).body, "ticket-1");
  for (int i = 0; i < 100 && server.log().find("follow-up for ticket-2") == std::string::npos;
       ++i) {
    std::this_thread::sleep_for(std::chrono::milliseconds(100));
  }
  EXPECT_THAT(server.log(), HasSubstr("follow-up for ticket-2 (trace 00-"));
}

}  // namespace
}  // namespace trellis::test
