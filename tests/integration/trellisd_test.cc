// End to end: a real trellisd process, real plugins, real sockets. Everything asserted
// here is what an operator, a tenant or a plugin author would see.
#include <Poco/JSON/Array.h>
#include <Poco/JSON/Object.h>
#include <Poco/JSON/Parser.h>
#include <gmock/gmock.h>
#include <gtest/gtest.h>
#include <poll.h>
#include <signal.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/wait.h>

#include <cstdio>
#include <future>
#include <set>
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
    // A presented bearer credential that is not good is an invalid_token (RFC 6750 §3.1).
    const bool presented =
        headers.count("Authorization") && headers.at("Authorization") == "Bearer nope";
    EXPECT_EQ(reply.header("www-authenticate"),
              presented ? "Bearer realm=\"trellis\", error=\"invalid_token\""
                        : "Bearer realm=\"trellis\"");
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
  EXPECT_EQ(hello->getArray("routes")->getElement<std::string>(0), "GET /hello/{name}");
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
                          HasSubstr("GET /hello/{name}")));
  std::string refused =
      runCommand(std::string(TRELLIS_CLI_PATH) + " --admin http://127.0.0.1:" +
                     std::to_string(server().adminPort()) + " --token wrong status 2>&1",
                 &rc);
  EXPECT_EQ(rc, 4);  // exit code 4: a token was refused (docs/operations.md)
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

// Raw bytes from `fd` until `needle` appears, the peer closes, or `timeout` passes.
std::string readRaw(int fd, const std::string& needle, std::chrono::milliseconds timeout) {
  std::string got;
  auto deadline = std::chrono::steady_clock::now() + timeout;
  while (got.find(needle) == std::string::npos && std::chrono::steady_clock::now() < deadline) {
    pollfd p{fd, POLLIN, 0};
    if (::poll(&p, 1, 50) <= 0) continue;
    char buf[4096];
    ssize_t n = ::recv(fd, buf, sizeof buf, 0);
    if (n <= 0) break;
    got.append(buf, static_cast<size_t>(n));
  }
  return got;
}

// globex enables only echo-c, so hello's routes do not exist for it, whatever the method:
// a 405 would tell it they exist for someone.
TEST_F(TrellisdTest, RoutesOfPluginsATenantDidNotEnableAre404ForEveryMethod) {
  std::string config = defaultTestConfig();
  size_t at = config.find("  - id: globex\n    plugins: [");
  ASSERT_NE(at, std::string::npos);
  config.replace(at, config.find(']', at) - at + 1,
                 "  - id: globex\n    plugins: [trellis/echo-c]");
  server_ = std::make_unique<TrellisdProcess>(config);
  ASSERT_TRUE(server_->start()) << server_->log();
  for (const char* method : {"GET", "POST", "DELETE", "PATCH"}) {
    SCOPED_TRACE(method);
    auto reply = request(server().port(), method, "/hello/ann", kGlobex);
    EXPECT_EQ(reply.status, 404);
    EXPECT_EQ(json(reply.body)->getValue<std::string>("detail"), "no route for /hello/ann");
  }
  Connection head(server().port());
  ASSERT_TRUE(
      head.send("HEAD /hello/ann HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer globex-key\r\n\r\n"));
  EXPECT_THAT(readRaw(head.fd(), "\r\n\r\n", std::chrono::seconds(10)), HasSubstr("HTTP/1.1 404 "));
  EXPECT_EQ(request(server().port(), "DELETE", "/hello/ann", kAcme).status, 405);
  EXPECT_EQ(request(server().port(), "GET", "/hello/ann", kAcme).status, 200);
}

// docs/operations.md: every answer carries X-Request-Id, and a problem+json body the same
// request_id; ids are 128 random bits, so they reveal nothing about other traffic.
TEST_F(TrellisdTest, EveryAnswerCarriesItsRequestId) {
  startWith("    - id: trellis/hello\n    - id: trellis/echo-c\n    - id: fixture/misbehaves\n",
            "  - id: initech\n"
            "    plan: tiny\n"
            "    plugins: [trellis/echo-c]\n"
            "    keys: [{key: initech-key}]\n"
            "plans:\n"
            "  - name: tiny\n"
            "    quotas: {requests_per_second: 1, burst: 1, max_body_bytes: 64}\n");
  const uint16_t port = server().port();
  const std::map<std::string, std::string> initech = {{"Authorization", "Bearer initech-key"}};
  std::set<std::string> ids;
  auto check = [&](const HttpReply& r, int status) {
    SCOPED_TRACE(std::to_string(status) + ": " + r.body);
    EXPECT_EQ(r.status, status);
    std::string id = r.header("x-request-id");
    EXPECT_EQ(id.size(), 32u);
    EXPECT_EQ(id.find_first_not_of("0123456789abcdef"), std::string::npos);
    ids.insert(id);
    if (r.header("content-type") == "application/problem+json") {
      EXPECT_EQ(json(r.body)->optValue<std::string>("request_id", ""), id);
    }
  };
  check(request(port, "GET", "/hello/ann", kAcme), 200);
  check(request(port, "GET", "/healthz"), 200);
  check(rawExchange(port, "GET /a b HTTP/1.1\r\nHost: x\r\n\r\n"), 400);
  check(rawExchange(port,
                    "GET / HTTP/1.1\r\nHost: x\r\nX: " + std::string(64 * 1024, 'a') + "\r\n\r\n"),
        431);
  check(request(port, "GET", "/hello/ann"), 401);
  check(request(port, "GET", "/nope", kAcme), 404);
  check(request(port, "DELETE", "/hello/ann", kAcme), 405);
  check(request(port, "POST", "/echo", initech, std::string(100, 'x')), 413);
  HttpReply limited;
  for (int i = 0; i < 5 && limited.status != 429; ++i)
    limited = request(port, "GET", "/ping", initech);
  check(limited, 429);
  check(request(port, "GET", "/misbehaves/throw", kAcme), 500);
  check(request(port, "GET", "/misbehaves/fail", kAcme), 503);
  ASSERT_EQ(request(server().adminPort(), "POST", "/v1/tenants/globex/suspend",
                    {{"Authorization", "Bearer " + server().adminToken()}})
                .status,
            200);
  check(request(port, "GET", "/hello/ann", kGlobex), 403);
  EXPECT_EQ(ids.size(), 12u) << "ids are unique";
}

// The tenant is known before a body byte is read: an unauthenticated client gets 401 on its
// header alone, no `100 Continue`, and cannot make the host hold a body.
TEST_F(TrellisdTest, TheTenantIsAuthenticatedBeforeTheBodyIsRead) {
  startWith();
  for (std::string auth : {"", "Authorization: Bearer nope\r\n"}) {
    Connection c(server().port());
    ASSERT_TRUE(c.send("POST /echo/x HTTP/1.1\r\nHost: x\r\n" + auth +
                       "Expect: 100-continue\r\nContent-Length: 500000\r\n\r\n"));
    HttpReply r = c.read(std::chrono::seconds(5));  // trellisd's read timeout is 10 s
    EXPECT_EQ(r.status, 401);
    EXPECT_EQ(r.header("connection"), "close");
    EXPECT_TRUE(c.closedByPeer(std::chrono::seconds(5)));
  }
  Connection ok(server().port());
  ASSERT_TRUE(
      ok.send("POST /echo/x HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer acme-key\r\n"
              "Expect: 100-continue\r\nContent-Length: 2\r\n\r\n"));
  EXPECT_EQ(readRaw(ok.fd(), "\r\n\r\n", std::chrono::seconds(5)), "HTTP/1.1 100 Continue\r\n\r\n");
  ASSERT_TRUE(ok.send("hi"));
  HttpReply r = ok.read();
  EXPECT_EQ(r.status, 200);
  EXPECT_EQ(json(r.body)->getValue<std::string>("body"), "hi");
}

TEST_F(TrellisdTest, CredentialsComeFromOneHeaderFieldOnly) {
  startWith();
  // Two keys: refused, not resolved to either tenant.
  HttpReply two =
      rawExchange(server().port(),
                  "GET /echo/x HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer acme-key\r\n"
                  "Authorization: Bearer globex-key\r\n\r\n");
  EXPECT_EQ(two.status, 400);
  EXPECT_EQ(json(two.body)->getValue<std::string>("detail"), "more than one Authorization field");
  // Chunked trailer fields never reach the request's header.
  const std::string chunked = "POST /echo/x HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n";
  const std::string trailer =
      "2\r\nhi\r\n0\r\nAuthorization: Bearer acme-key\r\nX-Injected: yes\r\n\r\n";
  EXPECT_EQ(rawExchange(server().port(), chunked + "\r\n" + trailer).status, 401);
  HttpReply echoed =
      rawExchange(server().port(), chunked + "Authorization: Bearer globex-key\r\n\r\n" + trailer);
  ASSERT_EQ(echoed.status, 200) << echoed.body;
  EXPECT_EQ(json(echoed.body)->getValue<std::string>("tenant"), "globex");
  EXPECT_THAT(echoed.body, Not(HasSubstr("X-Injected")));
}

// The attack from the outside test: the body of a `Transfer-Encoding: identity` request ran
// as a second request, for another tenant.
TEST_F(TrellisdTest, TransferEncodingIdentityCannotSmuggleARequest) {
  startWith();
  const std::string smuggled =
      "GET /echo/smuggled HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer globex-key\r\n\r\n";
  for (std::string length :
       {std::string(), "Content-Length: " + std::to_string(smuggled.size()) + "\r\n"}) {
    Connection c(server().port());
    ASSERT_TRUE(
        c.send("POST /echo/a HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer acme-key\r\n"
               "Transfer-Encoding: identity\r\n" +
               length + "\r\n" + smuggled));
    HttpReply r = c.read();
    EXPECT_EQ(r.status, 400);
    EXPECT_TRUE(c.closedByPeer(std::chrono::seconds(5)));
  }
  EXPECT_THAT(readFile(server().dir() / "access.log"), Not(HasSubstr("smuggled")));
}

// server.max_connections bounds what unauthenticated clients can hold open.
TEST_F(TrellisdTest, MaxConnectionsCapsOpenDataPlaneConnections) {
  std::string config = defaultTestConfig();
  config.insert(config.find("server:\n") + 8, "  max_connections: 2\n");
  server_ = std::make_unique<TrellisdProcess>(config);
  ASSERT_TRUE(server_->start()) << server_->log();
  auto a = std::make_unique<Connection>(server().port());
  Connection b(server().port());
  for (Connection* c : {a.get(), &b}) {
    ASSERT_TRUE(c->send("GET /healthz HTTP/1.1\r\nHost: x\r\n\r\n"));
    ASSERT_EQ(c->read().status, 200);
  }
  Connection extra(server().port());
  EXPECT_TRUE(extra.closedByPeer(std::chrono::seconds(5)));
  a.reset();  // a free slot lets the next one in
  bool served = false;
  for (int i = 0; i < 100 && !served; ++i) {
    served = request(server().port(), "GET", "/healthz").status == 200;
    if (!served) std::this_thread::sleep_for(std::chrono::milliseconds(20));
  }
  EXPECT_TRUE(served);
}

// RFC 9110 §9.3.2: HEAD wherever GET, the same header fields, no body.
TEST_F(TrellisdTest, HeadWorksWhereverGetDoes) {
  startWith();
  auto get = request(server().port(), "GET", "/hello/ann", kAcme);
  ASSERT_EQ(get.status, 200);
  Connection c(server().port());
  ASSERT_TRUE(
      c.send("HEAD /hello/ann HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer acme-key\r\n\r\n"
             "GET /healthz HTTP/1.1\r\nHost: x\r\n\r\n"));
  std::string raw = readRaw(c.fd(), "{\"status\":\"ok\"}", std::chrono::seconds(10));
  size_t end = raw.find("\r\n\r\n");
  ASSERT_NE(end, std::string::npos) << raw;
  EXPECT_THAT(raw.substr(0, end),
              AllOf(HasSubstr("HTTP/1.1 200 OK"),
                    HasSubstr("Content-Length: " + get.header("content-length")),
                    HasSubstr("Content-Type: application/json")));
  // The next answer starts right after the HEAD answer's header: no body came between.
  EXPECT_EQ(raw.compare(end + 4, 8, "HTTP/1.1"), 0) << raw;
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
