// trellis/hello on a real trellisd: the greeting and the per-tenant count, and the count
// under contention — every greeting answered 200 is exactly one durable increment, though
// the counter's compare-and-set writes suspend the request (kv_put_async) instead of
// holding a thread while they commit.
#include <Poco/JSON/Object.h>
#include <Poco/JSON/Parser.h>
#include <gmock/gmock.h>
#include <gtest/gtest.h>

#include <atomic>
#include <string>
#include <thread>
#include <vector>

#include "support/test_support.h"

namespace trellis::test {
namespace {

using ::testing::HasSubstr;

const std::map<std::string, std::string> kAcme = {{"Authorization", "Bearer acme-key"}};
const std::map<std::string, std::string> kGlobex = {{"Authorization", "Bearer globex-key"}};

class HelloTest : public ::testing::Test {
 protected:
  void SetUp() override {
    server_ = std::make_unique<TrellisdProcess>(defaultTestConfig("    - id: trellis/hello\n"));
    ASSERT_TRUE(server_->start()) << server_->log();
  }
  HttpReply get(const std::string& path, const std::map<std::string, std::string>& h = kAcme) {
    return request(server_->port(), "GET", path, h);
  }
  std::unique_ptr<TrellisdProcess> server_;
};

TEST_F(HelloTest, GreetsAndCountsEachNamePerTenant) {
  EXPECT_EQ(get("/hello/ann").body, R"({"message":"Hello, ann!","visits":1})");
  EXPECT_EQ(get("/hello/ann").body, R"({"message":"Hello, ann!","visits":2})");
  EXPECT_EQ(get("/hello/ann", kGlobex).body, R"({"message":"Hello, ann!","visits":1})");
  auto bad = get("/hello/%01");
  EXPECT_EQ(bad.status, 400);
  EXPECT_THAT(bad.body, HasSubstr("1-64 printable ASCII"));
}

// Per-tenant configuration (manifest "tenant_config"): acme's greeting changes through the
// admin API and the CLI and reaches the next request without a restart; globex keeps the
// global one; overrides the schema refuses change nothing and name the path at fault.
TEST_F(HelloTest, ATenantOverridesTheGreetingWithoutARestart) {
  const std::string path = "/v1/tenants/acme/plugins/trellis/hello/config";
  auto admin = [&](const std::string& method, const std::string& body = "") {
    return request(server_->adminPort(), method, path,
                   {{"Authorization", "Bearer " + server_->adminToken()}}, body);
  };
  auto message = [&](const std::map<std::string, std::string>& who) {
    auto reply = get("/hello/ann", who);
    EXPECT_EQ(reply.status, 200) << reply.body;
    return reply.body.substr(0, reply.body.find(",\"visits\""));
  };
  EXPECT_EQ(message(kAcme), R"({"message":"Hello, ann!")");

  auto set = admin("PUT", R"({"greeting": "Bonjour"})");
  ASSERT_EQ(set.status, 200) << set.body;
  auto shown = Poco::JSON::Parser().parse(set.body).extract<Poco::JSON::Object::Ptr>();
  EXPECT_EQ(shown->getObject("overrides")->getValue<std::string>("greeting"), "Bonjour");
  // The schema, for the operator.
  EXPECT_EQ(shown->getObject("schema")
                ->getObject("properties")
                ->getObject("greeting")
                ->getValue<int>("maxLength"),
            40);
  EXPECT_EQ(message(kAcme), R"({"message":"Bonjour, ann!")");
  EXPECT_EQ(message(kGlobex), R"({"message":"Hello, ann!")");

  int status = -1;
  std::string out =
      runCli(*server_, R"(tenant config set acme trellis/hello '{"greeting":"Hej"}')", &status);
  ASSERT_EQ(status, 0) << out;
  EXPECT_THAT(out, HasSubstr("Hej"));
  EXPECT_EQ(message(kAcme), R"({"message":"Hej, ann!")");

  // Refused, naming the cause; the last good overrides stay.
  const std::pair<std::string, std::string> refused[] = {
      {R"({"greeting": 5})", "/greeting: expected a string"},
      {R"({"greeting": ""})", "/greeting"},
      {R"({"greeting": "Hi\nthere"})", "/greeting"},
      {R"({"colour": "red"})", "/colour: unknown key"},
      {R"({"greeting": "A", "greeting": "B"})", "duplicate member"},
      {R"(["greeting"])", "not a JSON object"},
      {R"({"greeting": )", "not valid JSON"},
  };
  for (const auto& [body, why] : refused) {
    auto reply = admin("PUT", body);
    EXPECT_EQ(reply.status, 400) << body << " -> " << reply.body;
    EXPECT_THAT(reply.body, HasSubstr(why)) << body;
  }
  out = runCli(*server_, R"(tenant config set acme trellis/hello '{"greeting":7}')", &status);
  EXPECT_EQ(status, 1) << out;
  EXPECT_THAT(out, HasSubstr("/greeting: expected a string"));
  EXPECT_EQ(message(kAcme), R"({"message":"Hej, ann!")");

  // Only for tenants that exist and enable the plugin, only for plugins that offer it.
  EXPECT_EQ(request(server_->adminPort(), "PUT", "/v1/tenants/nobody/plugins/trellis/hello/config",
                    {{"Authorization", "Bearer " + server_->adminToken()}}, "{}")
                .status,
            404);

  out = runCli(*server_, "tenant config unset acme trellis/hello", &status);
  ASSERT_EQ(status, 0) << out;
  EXPECT_EQ(message(kAcme), R"({"message":"Hello, ann!")");
  shown = Poco::JSON::Parser().parse(admin("GET").body).extract<Poco::JSON::Object::Ptr>();
  EXPECT_EQ(shown->getObject("overrides")->size(), 0u);
}

TEST_F(HelloTest, ConcurrentGreetingsOfOneNameLoseNoCount) {
  constexpr int kThreads = 8, kEach = 25;
  std::atomic<int> ok{0};
  std::vector<std::thread> clients;
  for (int t = 0; t < kThreads; ++t) {
    clients.emplace_back([&] {
      for (int i = 0; i < kEach; ++i) {
        if (get("/hello/hot").status == 200) ++ok;
      }
    });
  }
  for (auto& c : clients) c.join();
  // A request that gave up after 16 conflicts is a 409 and counted nothing.
  auto last = get("/hello/hot");
  ASSERT_EQ(last.status, 200) << last.body;
  EXPECT_THAT(last.body, HasSubstr("\"visits\":" + std::to_string(ok.load() + 1) + "}"));
  EXPECT_GT(ok.load(), kThreads * kEach / 2);
}

}  // namespace
}  // namespace trellis::test
