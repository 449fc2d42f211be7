// End to end: a real trellisd process, real plugins, real sockets. Everything asserted
// here is what an operator, a tenant or a plugin author would see.
#include <Poco/JSON/Array.h>
#include <Poco/JSON/Object.h>
#include <Poco/JSON/Parser.h>
#include <gmock/gmock.h>
#include <gtest/gtest.h>
#include <signal.h>
#include <sys/stat.h>
#include <sys/wait.h>

#include <cstdio>
#include <future>
#include <sstream>
#include <string>
#include <thread>
#include <vector>

#include "support/test_support.h"

namespace trellis::test {
namespace {

using ::testing::AllOf;
using ::testing::HasSubstr;
using ::testing::Not;

const std::map<std::string, std::string> kAcme = {{"Authorization", "Bearer acme-key"}};
const std::map<std::string, std::string> kGlobex = {{"Authorization", "Bearer globex-key"}};

Poco::JSON::Object::Ptr json(const std::string& body) {
  return Poco::JSON::Parser().parse(body).extract<Poco::JSON::Object::Ptr>();
}

HttpReply admin(const TrellisdProcess& t, const std::string& path) {
  return request(t.adminPort(), "GET", path, {{"Authorization", "Bearer " + t.adminToken()}});
}

// The admin API's entry for plugin `id` (nullptr if absent).
Poco::JSON::Object::Ptr pluginEntry(const TrellisdProcess& t, const std::string& id) {
  auto list = json(admin(t, "/v1/plugins").body)->getArray("plugins");
  for (size_t i = 0; i < list->size(); ++i) {
    auto p = list->getObject(static_cast<unsigned>(i));
    if (p->getValue<std::string>("id") == id) return p;
  }
  return nullptr;
}

class TrellisdTest : public ::testing::Test {
 protected:
  void startWith(const std::string& plugins_yaml = "", const std::string& extra = "") {
    server_ = std::make_unique<TrellisdProcess>(defaultTestConfig(plugins_yaml, extra));
    ASSERT_TRUE(server_->start()) << server_->log();
  }
  TrellisdProcess& server() { return *server_; }
  std::unique_ptr<TrellisdProcess> server_;
};

TEST_F(TrellisdTest, HelloGreetsAndCountsVisitsPerTenant) {
  startWith();
  auto first = request(server().port(), "GET", "/hello/ann", kAcme);
  ASSERT_EQ(first.status, 200) << first.body;
  EXPECT_EQ(first.header("content-type"), "application/json");
  EXPECT_EQ(first.body, R"({"message":"Hello, ann!","visits":1})");
  EXPECT_EQ(request(server().port(), "GET", "/hello/ann", kAcme).body,
            R"({"message":"Hello, ann!","visits":2})");
  // Another tenant has its own, separate store.
  EXPECT_EQ(request(server().port(), "GET", "/hello/ann", kGlobex).body,
            R"({"message":"Hello, ann!","visits":1})");
  // Path parameters are percent-decoded for the plugin.
  EXPECT_EQ(request(server().port(), "GET", "/hello/J%20Doe", kAcme).body,
            R"({"message":"Hello, J Doe!","visits":1})");
  EXPECT_FALSE(first.header("x-request-id").empty());
}

TEST_F(TrellisdTest, VisitsSurviveARestart) {
  startWith();
  ASSERT_EQ(request(server().port(), "GET", "/hello/bo", kAcme).status, 200);
  // Same data directory, new process.
  std::string config = readFile(server().configFile());
  EXPECT_EQ(server().stop(), 0);
  TrellisdProcess again(config);
  ASSERT_TRUE(again.start()) << again.log();
  EXPECT_EQ(request(again.port(), "GET", "/hello/bo", kAcme).body,
            R"({"message":"Hello, bo!","visits":2})");
}

TEST_F(TrellisdTest, EchoCReturnsTheRequestAsJson) {
  startWith();
  auto reply = request(server().port(), "POST", "/echo/a/b?x=1&y=two",
                       {{"Authorization", "Bearer acme-key"}, {"X-Trace", "t\"1"}}, "hi\n");
  ASSERT_EQ(reply.status, 200) << reply.body;
  auto o = json(reply.body);
  EXPECT_EQ(o->getValue<std::string>("tenant"), "acme");
  EXPECT_EQ(o->getValue<std::string>("method"), "POST");
  EXPECT_EQ(o->getValue<std::string>("path"), "/echo/a/b");
  EXPECT_EQ(o->getValue<std::string>("query"), "x=1&y=two");
  EXPECT_EQ(o->getValue<std::string>("body"), "hi\n");
  EXPECT_THAT(reply.body, HasSubstr(R"(["X-Trace","t\"1"])"));
  EXPECT_THAT(reply.body,
              AllOf(HasSubstr(R"(["Authorization","[redacted]"])"), Not(HasSubstr("acme-key"))));
}

TEST_F(TrellisdTest, EventsReachSubscribersWithThePublishersTenant) {
  startWith("    - id: trellis/hello\n    - id: fixture/listener\n");
  for (int i = 0; i < 3; ++i) request(server().port(), "GET", "/hello/ann", kAcme);
  request(server().port(), "GET", "/hello/bo", kGlobex);
  // Delivery is asynchronous: wait for the listener to have counted acme's three.
  std::string seen;
  for (int i = 0; i < 100 && seen != R"({"hello.greeted":3})"; ++i) {
    std::this_thread::sleep_for(std::chrono::milliseconds(50));
    seen = request(server().port(), "GET", "/listener/seen", kAcme).body;
  }
  EXPECT_EQ(seen, R"({"hello.greeted":3})");
  EXPECT_EQ(request(server().port(), "GET", "/listener/seen", kGlobex).body,
            R"({"hello.greeted":1})");
  EXPECT_EQ(request(server().port(), "DELETE", "/listener/seen", kAcme).status, 204);
  EXPECT_EQ(request(server().port(), "GET", "/listener/seen", kAcme).body, "{}");
  EXPECT_EQ(request(server().port(), "GET", "/listener/seen", kGlobex).body,
            R"({"hello.greeted":1})");
}

TEST_F(TrellisdTest, RequestsWithoutAValidTenantKeyAreRefused) {
  startWith();
  for (const auto& headers : std::vector<std::map<std::string, std::string>>{
           {}, {{"Authorization", "Bearer nope"}}, {{"Authorization", "Basic YWNtZS1rZXk="}}}) {
    auto reply = request(server().port(), "GET", "/hello/ann", headers);
    EXPECT_EQ(reply.status, 401);
    EXPECT_EQ(reply.header("content-type"), "application/problem+json");
    EXPECT_EQ(reply.header("www-authenticate"), "Bearer realm=\"trellis\"");
    EXPECT_EQ(json(reply.body)->getValue<int>("status"), 401);
  }
}

TEST_F(TrellisdTest, UnknownRoutesAreProblemJson) {
  startWith();
  auto missing = request(server().port(), "GET", "/nope", kAcme);
  EXPECT_EQ(missing.status, 404);
  EXPECT_EQ(missing.header("content-type"), "application/problem+json");
  EXPECT_EQ(json(missing.body)->getValue<std::string>("title"), "Not Found");
  auto wrong_method = request(server().port(), "DELETE", "/hello/ann", kAcme);
  EXPECT_EQ(wrong_method.status, 405);
}

TEST_F(TrellisdTest, HealthProbesNeedNoKey) {
  startWith();
  EXPECT_EQ(request(server().port(), "GET", "/healthz").status, 200);
  EXPECT_EQ(request(server().port(), "GET", "/readyz").status, 200);
  EXPECT_EQ(request(server().adminPort(), "GET", "/healthz").status, 200);
  EXPECT_EQ(request(server().adminPort(), "GET", "/readyz").status, 200);
}

TEST_F(TrellisdTest, AdminApiNeedsItsTokenAndReportsPlugins) {
  startWith();
  EXPECT_EQ(request(server().adminPort(), "GET", "/v1/status").status, 401);
  EXPECT_EQ(
      request(server().adminPort(), "GET", "/v1/status", {{"Authorization", "Bearer acme-key"}})
          .status,
      401);
  // The admin API is not on the data plane.
  EXPECT_EQ(request(server().port(), "GET", "/v1/status", kAcme).status, 404);

  auto status = json(admin(server(), "/v1/status").body);
  EXPECT_TRUE(status->getValue<bool>("ready"));
  EXPECT_EQ(status->getObject("plugins")->getValue<int>("active"), 2);

  auto hello = pluginEntry(server(), "trellis/hello");
  ASSERT_TRUE(hello);
  EXPECT_EQ(hello->getValue<std::string>("state"), "active");
  EXPECT_EQ(hello->getValue<std::string>("version"), "1.0.0");
  EXPECT_EQ(hello->getArray("routes")->getElement<std::string>(0), "GET /hello/{name} (blocking)");
}

TEST_F(TrellisdTest, AdminTokenIsGeneratedOncePrivateAndPrintedOnce) {
  startWith();
  auto token_file = server().dir() / "admin.token";
  struct stat st {};
  ASSERT_EQ(::stat(token_file.c_str(), &st), 0);
  EXPECT_EQ(st.st_mode & 0777, 0600);
  EXPECT_EQ(server().adminToken().size(), 64u);
  EXPECT_THAT(server().log(), HasSubstr(server().adminToken()));
  std::string config = readFile(server().configFile());
  server().stop();
  TrellisdProcess again(config);
  ASSERT_TRUE(again.start());
  EXPECT_THAT(again.log(), Not(HasSubstr("generated an admin token")));
}

TEST_F(TrellisdTest, MetricsExportKernelAndPluginCounters) {
  startWith();
  ASSERT_EQ(request(server().port(), "GET", "/hello/cy", kAcme).status, 200);
  ASSERT_EQ(request(server().port(), "GET", "/nope", kAcme).status, 404);
  auto metrics = admin(server(), "/metrics");
  ASSERT_EQ(metrics.status, 200);
  EXPECT_THAT(metrics.header("content-type"), HasSubstr("text/plain; version=0.0.4"));
  EXPECT_THAT(
      metrics.body,
      AllOf(HasSubstr("trellis_plugin_hello_greetings_total{plugin=\"trellis/hello\"} 1"),
            HasSubstr("trellis_http_requests_total{plane=\"data\",code=\"2xx\"} 1"),
            HasSubstr("trellis_http_requests_total{plane=\"data\",code=\"4xx\"} 1"),
            HasSubstr("# TYPE trellis_http_request_duration_seconds histogram"),
            HasSubstr("trellis_tenant_requests_total{tenant=\"acme\",outcome=\"admitted\"} 1")));
}

TEST_F(TrellisdTest, CliShowsStatusAndPlugins) {
  startWith();
  std::string flags = " --admin http://127.0.0.1:" + std::to_string(server().adminPort()) +
                      " --token-file " + (server().dir() / "admin.token").string();
  int rc = -1;
  std::string status = runCommand(std::string(TRELLIS_CLI_PATH) + flags + " status", &rc);
  EXPECT_EQ(rc, 0);
  EXPECT_THAT(status, AllOf(HasSubstr("ready:       yes"), HasSubstr("2 active, 0 failed")));
  std::string list = runCommand(std::string(TRELLIS_CLI_PATH) + flags + " plugin list", &rc);
  EXPECT_EQ(rc, 0);
  EXPECT_THAT(list, AllOf(HasSubstr("trellis/hello"), HasSubstr("trellis/echo-c"),
                          HasSubstr("GET /hello/{name} (blocking)")));
  std::string refused =
      runCommand(std::string(TRELLIS_CLI_PATH) + " --admin http://127.0.0.1:" +
                     std::to_string(server().adminPort()) + " --token wrong status 2>&1",
                 &rc);
  EXPECT_EQ(rc, 1);
  EXPECT_THAT(refused, HasSubstr("refused the token"));
}

TEST_F(TrellisdTest, BrokenPluginsAreRefusedWithReasonsAndTheRestServes) {
  startWith(
      "    - id: trellis/hello\n"
      "    - id: fixture/abi-major\n"
      "    - id: fixture/abi-minor-too-new\n"
      "    - id: fixture/no-entry\n"
      "    - id: fixture/init-fails\n"
      "    - id: fixture/mismatch\n"
      "    - id: fixture/not-a-library\n"
      "    - id: fixture/truncated\n"
      "    - id: fixture/dep-on-missing\n"
      "    - id: fixture/cycle-a\n"
      "    - id: fixture/cycle-b\n"
      "    - id: fixture/not-installed\n");
  auto error = [&](const std::string& id) {
    auto p = pluginEntry(server(), id);
    if (!p) return std::string("<absent>");
    EXPECT_EQ(p->getValue<std::string>("state"), "failed") << id;
    return p->has("error") ? p->getValue<std::string>("error") : std::string("<no error>");
  };
  EXPECT_THAT(error("fixture/abi-major"), HasSubstr("ABI"));
  EXPECT_THAT(error("fixture/abi-minor-too-new"), HasSubstr("ABI"));
  EXPECT_THAT(error("fixture/no-entry"), HasSubstr("trellis_plugin_entry"));
  EXPECT_THAT(error("fixture/init-fails"), HasSubstr("database URL missing"));
  EXPECT_THAT(error("fixture/mismatch"), HasSubstr("1.0.1"));
  EXPECT_THAT(error("fixture/not-a-library"), HasSubstr("not a shared library"));
  EXPECT_THAT(error("fixture/truncated"), HasSubstr("libfixture"));
  EXPECT_THAT(error("fixture/dep-on-missing"), HasSubstr("fixture/absent"));
  EXPECT_THAT(error("fixture/cycle-a"), HasSubstr("cycle"));
  EXPECT_THAT(error("fixture/not-installed"), HasSubstr("not installed"));

  auto broken = json(admin(server(), "/v1/plugins").body)->getArray("broken_packages");
  bool bad_manifest_reported = false;
  for (size_t i = 0; i < broken->size(); ++i) {
    auto b = broken->getObject(static_cast<unsigned>(i));
    if (b->getValue<std::string>("path").find("bad-manifest") != std::string::npos) {
      bad_manifest_reported = true;
    }
  }
  EXPECT_TRUE(bad_manifest_reported);
  EXPECT_EQ(request(server().port(), "GET", "/hello/ann", kAcme).status, 200);
}

TEST_F(TrellisdTest, MisbehavingPluginIsContained) {
  startWith("    - id: trellis/hello\n    - id: fixture/misbehaves\n");
  auto thrown = request(server().port(), "GET", "/misbehaves/throw", kAcme);
  EXPECT_EQ(thrown.status, 500);
  EXPECT_EQ(thrown.header("content-type"), "application/problem+json");
  EXPECT_THAT(thrown.body, Not(HasSubstr("boom")));
  EXPECT_THAT(server().log(), HasSubstr("uncaught exception: boom"));

  // The plugin's own message is logged, never sent to the client.
  auto failed = request(server().port(), "GET", "/misbehaves/fail", kAcme);
  EXPECT_EQ(failed.status, 503);
  EXPECT_THAT(failed.body, Not(HasSubstr("10.0.0.7")));

  EXPECT_EQ(request(server().port(), "GET", "/misbehaves/kv", kAcme).body, "PERMISSION_DENIED");
  EXPECT_EQ(request(server().port(), "GET", "/misbehaves/stale-ctx", kAcme).body,
            "INVALID INVALID");
  EXPECT_EQ(request(server().port(), "GET", "/misbehaves/header", kAcme).body, "INVALID INVALID");
  auto entry = pluginEntry(server(), "fixture/misbehaves");
  ASSERT_TRUE(entry);
  EXPECT_EQ(entry->getValue<int>("denied_calls"), 1);
  // The host and the plugin keep serving.
  EXPECT_EQ(request(server().port(), "GET", "/hello/ann", kAcme).status, 200);
  EXPECT_EQ(request(server().port(), "GET", "/misbehaves/throw", kAcme).status, 500);
}

// A plugin answers a client error its own way: the status it chose (413 has no status
// enum), a detail the client reads and the request id; and neither that nor a plain
// NOT_FOUND is an error in the host log.
TEST_F(TrellisdTest, PluginClientErrorsCarryTheirDetailAndAreNotLoggedAsErrors) {
  startWith("    - id: trellis/hello\n    - id: fixture/misbehaves\n");
  auto too_large = request(server().port(), "GET", "/misbehaves/too-large", kAcme);
  EXPECT_EQ(too_large.status, 413) << too_large.body;
  EXPECT_EQ(too_large.header("content-type"), "application/problem+json");
  auto problem = Poco::JSON::Parser().parse(too_large.body).extract<Poco::JSON::Object::Ptr>();
  EXPECT_EQ(problem->getValue<std::string>("title"), "Payload Too Large");
  EXPECT_EQ(problem->getValue<int>("status"), 413);
  EXPECT_EQ(problem->getValue<std::string>("detail"),
            "uploads above 1 KiB are refused by this plugin");
  EXPECT_EQ(problem->getValue<std::string>("request_id"), too_large.header("x-request-id"));
  EXPECT_FALSE(too_large.header("x-request-id").empty());

  auto missing = request(server().port(), "GET", "/misbehaves/not-found", kAcme);
  EXPECT_EQ(missing.status, 404);
  EXPECT_THAT(missing.body, Not(HasSubstr("10.0.0.7")));  // set_error stays in the log

  auto bad_name = request(server().port(), "GET", "/hello/" + std::string(65, 'x'), kAcme);
  EXPECT_EQ(bad_name.status, 400);
  EXPECT_THAT(bad_name.body,
              HasSubstr(R"("detail":"name must be 1-64 printable ASCII characters")"));

  EXPECT_EQ(request(server().port(), "GET", "/misbehaves/fail", kAcme).status, 503);
  EXPECT_THAT(server().log(), HasSubstr("NOT_FOUND: no item 42 in 10.0.0.7"));
  // Of the plugins' answers, only the 503 is an error.
  std::vector<std::string> errors;
  std::istringstream lines(server().log());
  for (std::string line; std::getline(lines, line);) {
    if (line.find(" error ") != std::string::npos && line.find("plugin=") != std::string::npos) {
      errors.push_back(line);
    }
  }
  ASSERT_EQ(errors.size(), 1u) << server().log();
  EXPECT_THAT(errors[0], HasSubstr("GET /misbehaves/fail failed: UNAVAILABLE"));
}

TEST_F(TrellisdTest, SigtermDrainsInFlightRequests) {
  startWith("    - id: fixture/misbehaves\n");
  auto slow = std::async(std::launch::async, [&] {
    return request(server().port(), "GET", "/misbehaves/slow", kAcme);
  });
  // Let the request reach the plugin, then ask the host to stop.
  std::this_thread::sleep_for(std::chrono::milliseconds(300));
  EXPECT_EQ(server().stop(), 0);
  auto reply = slow.get();
  EXPECT_EQ(reply.status, 200);
  EXPECT_EQ(reply.body, "slow done");
}

TEST_F(TrellisdTest, MalformedAndOversizedRequestsGetClearErrors) {
  startWith();
  EXPECT_EQ(rawExchange(server().port(), "NOT HTTP AT ALL\r\n\r\n").status, 400);
  std::string huge_header =
      "GET /hello/a HTTP/1.1\r\nHost: x\r\nX-Big: " + std::string(64 * 1024, 'a') + "\r\n\r\n";
  EXPECT_EQ(rawExchange(server().port(), huge_header).status, 431);
  std::string huge_body =
      "POST /echo HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer acme-key\r\n"
      "Content-Length: 5000000\r\n\r\n";
  EXPECT_EQ(rawExchange(server().port(), huge_body).status, 413);
  EXPECT_EQ(request(server().port(), "GET", "/hello/ann", kAcme).status, 200);
}

TEST(TrellisdConfigTest, BadConfigurationIsRefusedNamingTheField) {
  TempDir dir;
  writeFile(dir / "trellis.yaml", "server:\n  listen: 127.0.0.1:0\n  max_body_bytes: big\n");
  int rc = -1;
  std::string out = runCommand(
      std::string(TRELLISD_PATH) + " --config " + (dir / "trellis.yaml").string() + " 2>&1", &rc);
  EXPECT_EQ(rc, 2);
  EXPECT_THAT(out, HasSubstr("server.max_body_bytes"));
}

}  // namespace
}  // namespace trellis::test
