// Tenants end to end on a real trellisd: the registry through the admin API and the CLI,
// per-tenant plugin enablement, key lifecycle, suspension, quotas and drift.
#include <Poco/JSON/Array.h>
#include <Poco/JSON/Object.h>
#include <Poco/JSON/Parser.h>
#include <gmock/gmock.h>
#include <gtest/gtest.h>
#include <sys/wait.h>

#include <cstdio>
#include <filesystem>
#include <future>
#include <regex>
#include <string>
#include <thread>

#include "support/test_support.h"

namespace trellis::test {
namespace {

using ::testing::AllOf;
using ::testing::HasSubstr;
using ::testing::Not;

Poco::JSON::Object::Ptr json(const std::string& body) {
  return Poco::JSON::Parser().parse(body).extract<Poco::JSON::Object::Ptr>();
}

// Adds `plan: <plan>` to the tenant declared as "  - id: <tenant>" in a config.
void putOnPlan(std::string& config, const std::string& tenant, const std::string& plan) {
  const std::string line = "  - id: " + tenant + "\n";
  config.insert(config.find(line) + line.size(), "    plan: " + plan + "\n");
}

std::map<std::string, std::string> bearer(const std::string& key) {
  return {{"Authorization", "Bearer " + key}};
}

class TenantsTest : public ::testing::Test {
 protected:
  void startWith(const std::string& config) {
    server_ = std::make_unique<TrellisdProcess>(config);
    ASSERT_TRUE(server_->start()) << server_->log();
  }
  TrellisdProcess& server() { return *server_; }

  // Runs the CLI against this server; returns stdout+stderr, exit status in *rc.
  std::string cli(const std::string& args, int* rc) { return runCli(server(), args, rc); }

  HttpReply admin(const std::string& method, const std::string& path,
                  const std::string& body = "") {
    return request(server().adminPort(), method, path,
                   {{"Authorization", "Bearer " + server().adminToken()}}, body);
  }

  std::unique_ptr<TrellisdProcess> server_;
};

TEST_F(TenantsTest, CliManagesTenantsAndKeysEndToEnd) {
  startWith(defaultTestConfig());
  int rc = -1;
  std::string created = cli("tenant create initech --plugin trellis/hello --label team=tps", &rc);
  ASSERT_EQ(rc, 0) << created;
  EXPECT_THAT(created, AllOf(HasSubstr("tenant initech (active, plan default, from api)"),
                             HasSubstr("label team=tps")));

  std::string key_out = cli("key create initech", &rc);
  ASSERT_EQ(rc, 0) << key_out;
  std::smatch m;
  std::string key_text = key_out;
  ASSERT_TRUE(std::regex_search(key_text, m, std::regex(R"((trk_([0-9a-f]{8})_[A-Za-z0-9_-]+))")))
      << key_out;
  const std::string key = m[1], key_id = m[2];

  auto hello = request(server().port(), "GET", "/hello/ann", bearer(key));
  EXPECT_EQ(hello.status, 200) << hello.body;
  // Only the plugins the tenant enabled have routes for it.
  EXPECT_EQ(request(server().port(), "GET", "/ping", bearer(key)).status, 404);

  std::string keys = cli("key list initech", &rc);
  EXPECT_EQ(rc, 0);
  EXPECT_THAT(keys, AllOf(HasSubstr(key_id), HasSubstr("active"), Not(HasSubstr(key))));
  EXPECT_THAT(server().log(), Not(HasSubstr(key)));  // a key never reaches a log

  EXPECT_EQ(cli("tenant suspend initech", &rc).find("suspended") != std::string::npos, true);
  auto suspended = request(server().port(), "GET", "/hello/ann", bearer(key));
  EXPECT_EQ(suspended.status, 403);
  EXPECT_EQ(suspended.header("content-type"), "application/problem+json");
  cli("tenant resume initech", &rc);
  EXPECT_EQ(request(server().port(), "GET", "/hello/ann", bearer(key)).status, 200);

  std::string usage = cli("tenant usage initech", &rc);
  EXPECT_EQ(rc, 0);
  EXPECT_THAT(usage, HasSubstr("admitted:  2"));

  cli("key revoke " + key_id, &rc);
  EXPECT_EQ(rc, 0);
  EXPECT_EQ(request(server().port(), "GET", "/hello/ann", bearer(key)).status, 401);

  // Deleting needs confirmation, then removes the tenant and its data.
  std::string refused = cli("tenant delete initech", &rc);
  EXPECT_EQ(rc, 1);
  EXPECT_THAT(refused, HasSubstr("--yes"));
  EXPECT_TRUE(std::filesystem::exists(server().dir() / "data" / "tenants" / "initech.db"));
  cli("tenant delete initech --yes", &rc);
  EXPECT_EQ(rc, 0);
  EXPECT_FALSE(std::filesystem::exists(server().dir() / "data" / "tenants" / "initech.db"));
  std::string gone = cli("tenant show initech", &rc);
  EXPECT_EQ(rc, 1);
  EXPECT_THAT(gone, HasSubstr("404"));
}

TEST_F(TenantsTest, AdminApiRefusesBadInputNamingTheProblem) {
  startWith(defaultTestConfig());
  auto bad_plugin = admin("POST", "/v1/tenants", R"({"id":"x1","plugins":["not a plugin"]})");
  EXPECT_EQ(bad_plugin.status, 400);
  EXPECT_THAT(bad_plugin.body, HasSubstr("plugin"));
  auto bad_plan = admin("POST", "/v1/tenants", R"({"id":"x2","plan":"gold"})");
  EXPECT_EQ(bad_plan.status, 400);
  EXPECT_THAT(bad_plan.body, HasSubstr("gold"));
  EXPECT_EQ(admin("POST", "/v1/tenants", R"({"id":"acme"})").status, 409);
  EXPECT_EQ(admin("POST", "/v1/tenants", "{not json").status, 400);
  EXPECT_EQ(admin("POST", "/v1/tenants", R"({"id":"x3","colour":"red"})").status, 400);
  EXPECT_EQ(admin("DELETE", "/v1/tenants/acme").status, 400);  // no ?confirm=
  EXPECT_EQ(admin("GET", "/v1/tenants/nobody").status, 404);
  // Nothing above changed acme.
  EXPECT_EQ(request(server().port(), "GET", "/hello/ann", bearer("acme-key")).status, 200);
}

TEST_F(TenantsTest, RateQuotaRejectsWithRateLimitHeadersAndProblemJson) {
  std::string config = defaultTestConfig() +
                       "plans:\n"
                       "  - name: tiny\n"
                       "    quotas: {requests_per_second: 1, burst: 2, max_body_bytes: 64}\n";
  // acme moves to the tiny plan; globex stays unlimited.
  putOnPlan(config, "acme", "tiny");
  startWith(config);
  auto first = request(server().port(), "GET", "/ping", bearer("acme-key"));
  EXPECT_EQ(first.status, 200);
  EXPECT_EQ(first.header("ratelimit-limit"), "2");
  EXPECT_EQ(request(server().port(), "GET", "/ping", bearer("acme-key")).status, 200);
  auto limited = request(server().port(), "GET", "/ping", bearer("acme-key"));
  ASSERT_EQ(limited.status, 429);
  EXPECT_EQ(limited.header("content-type"), "application/problem+json");
  EXPECT_EQ(limited.header("ratelimit-remaining"), "0");
  EXPECT_FALSE(limited.header("ratelimit-reset").empty());
  EXPECT_FALSE(limited.header("retry-after").empty());
  auto problem = json(limited.body);
  EXPECT_EQ(problem->getValue<std::string>("quota"), "requests_per_second");
  EXPECT_EQ(problem->getValue<int>("limit"), 1);
  EXPECT_FALSE(problem->getValue<std::string>("decision_id").empty());
  // Another tenant is not affected.
  EXPECT_EQ(request(server().port(), "GET", "/ping", bearer("globex-key")).status, 200);

  auto too_big =
      request(server().port(), "POST", "/echo", bearer("acme-key"), std::string(100, 'x'));
  EXPECT_EQ(too_big.status, 413);
  EXPECT_EQ(json(too_big.body)->getValue<std::string>("quota"), "max_body_bytes");

  auto metrics = admin("GET", "/metrics");
  EXPECT_THAT(metrics.body,
              HasSubstr("trellis_quota_rejections_total{quota=\"requests_per_second\"}"));
}

TEST_F(TenantsTest, ConcurrencyQuotaCapsRequestsInFlight) {
  std::string config = defaultTestConfig("    - id: fixture/misbehaves\n",
                                         "plans:\n"
                                         "  - name: one-at-a-time\n"
                                         "    quotas: {max_concurrent: 1}\n");
  putOnPlan(config, "acme", "one-at-a-time");
  startWith(config);
  auto slow = std::async(std::launch::async, [&] {
    return request(server().port(), "GET", "/misbehaves/slow", bearer("acme-key"));
  });
  std::this_thread::sleep_for(std::chrono::milliseconds(300));
  auto second = request(server().port(), "GET", "/misbehaves/slow", bearer("acme-key"));
  EXPECT_EQ(second.status, 429);
  EXPECT_EQ(json(second.body)->getValue<std::string>("quota"), "max_concurrent");
  EXPECT_EQ(slow.get().status, 200);
}

TEST_F(TenantsTest, HostCallQuotaStopsAPluginThatCallsTooOften) {
  std::string config = defaultTestConfig("",
                                         "plans:\n"
                                         "  - name: frugal\n"
                                         "    quotas: {max_host_calls: 1}\n");
  putOnPlan(config, "acme", "frugal");
  startWith(config);
  // /ping makes two host calls (a header, then the body): the second is refused.
  auto refused = request(server().port(), "GET", "/ping", bearer("acme-key"));
  ASSERT_EQ(refused.status, 429) << refused.body;
  auto problem = json(refused.body);
  EXPECT_EQ(problem->getValue<std::string>("quota"), "max_host_calls");
  EXPECT_EQ(problem->getValue<int>("limit"), 1);
  EXPECT_TRUE(refused.header("retry-after").empty());  // waiting would not help
  EXPECT_EQ(request(server().port(), "GET", "/ping", bearer("globex-key")).status, 200);
}

TEST_F(TenantsTest, StorageQuotaIsExactAndAnswers507) {
  std::string config = defaultTestConfig("",
                                         "plans:\n"
                                         "  - name: small\n"
                                         "    quotas: {max_storage_bytes: 25}\n");
  putOnPlan(config, "acme", "small");
  startWith(config);
  // hello stores "visits/<name>" -> count: 11 bytes for a three-letter name.
  EXPECT_EQ(request(server().port(), "GET", "/hello/ann", bearer("acme-key")).status, 200);
  EXPECT_EQ(request(server().port(), "GET", "/hello/bob", bearer("acme-key")).status, 200);
  auto full = request(server().port(), "GET", "/hello/cyd", bearer("acme-key"));
  ASSERT_EQ(full.status, 507) << full.body;
  auto problem = json(full.body);
  EXPECT_EQ(problem->getValue<std::string>("quota"), "max_storage_bytes");
  EXPECT_EQ(problem->getValue<int>("limit"), 25);
  // Rewriting a value of the same size still fits; another tenant is unaffected.
  EXPECT_EQ(request(server().port(), "GET", "/hello/ann", bearer("acme-key")).body,
            R"({"message":"Hello, ann!","visits":2})");
  EXPECT_EQ(request(server().port(), "GET", "/hello/cyd", bearer("globex-key")).status, 200);

  auto usage = json(admin("GET", "/v1/tenants/acme/usage").body);
  EXPECT_EQ(usage->getValue<int>("storage_bytes"), 22);
}

TEST_F(TenantsTest, ChangingADeclaredTenantThroughTheApiIsReportedAsDrift) {
  startWith(defaultTestConfig());
  auto updated = admin("PUT", "/v1/tenants/acme", R"({"labels":{"tier":"gold"}})");
  ASSERT_EQ(updated.status, 200) << updated.body;
  std::string config = readFile(server().configFile());
  server().stop();
  TrellisdProcess again(config);
  ASSERT_TRUE(again.start()) << again.log();
  // The config still names the first process's token file.
  const std::string token = server().adminToken();
  auto drift =
      request(again.adminPort(), "GET", "/v1/drift", {{"Authorization", "Bearer " + token}});
  EXPECT_EQ(drift.status, 200);
  EXPECT_THAT(drift.body, AllOf(HasSubstr("acme"), HasSubstr("tier")));
  // The registry wins: the API change survived the restart.
  EXPECT_THAT(
      request(again.adminPort(), "GET", "/v1/tenants/acme", {{"Authorization", "Bearer " + token}})
          .body,
      HasSubstr("gold"));
}

TEST_F(TenantsTest, ExpiredKeysAreRefused) {
  startWith(defaultTestConfig());
  auto created = admin("POST", "/v1/tenants/acme/keys", R"({"ttl_seconds":1})");
  ASSERT_EQ(created.status, 201) << created.body;
  std::string key = json(created.body)->getValue<std::string>("key");
  EXPECT_EQ(request(server().port(), "GET", "/ping", bearer(key)).status, 200);
  std::this_thread::sleep_for(std::chrono::milliseconds(1100));
  EXPECT_EQ(request(server().port(), "GET", "/ping", bearer(key)).status, 401);
}

}  // namespace
}  // namespace trellis::test
