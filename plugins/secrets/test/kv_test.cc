// KV v2 on a real trellisd: versions, check-and-set, soft delete, undelete, destroy,
// metadata, list, tenant isolation, the sealed answer, and the store across a restart.
#include <Poco/JSON/Array.h>
#include <Poco/JSON/Object.h>
#include <Poco/JSON/Parser.h>
#include <gtest/gtest.h>

#include <algorithm>
#include <memory>
#include <string>
#include <thread>
#include <vector>

#include "support/test_support.h"

namespace trellis::test {
namespace {

using Poco::JSON::Object;

Object::Ptr json(const std::string& body) {
  return Poco::JSON::Parser().parse(body).extract<Object::Ptr>();
}

class SecretsKvTest : public ::testing::Test {
 protected:
  void SetUp() override {
    server_ = std::make_unique<TrellisdProcess>(
        defaultTestConfig("    - id: trellis/secrets\n      system: true\n"));
    ASSERT_TRUE(server_->start()) << server_->log();
  }
  HttpReply admin(const std::string& method, const std::string& route, const std::string& body) {
    return request(server_->adminPort(), method, "/v1/x/trellis/secrets/" + route,
                   {{"Authorization", "Bearer " + server_->adminToken()}}, body);
  }
  void initAndUnseal() {
    auto res = admin("POST", "init", R"({"shares":3,"threshold":2})");
    ASSERT_EQ(res.status, 200) << res.body;
    auto list = json(res.body)->getArray("shares");
    for (size_t i = 0; i < list->size(); ++i) shares_.push_back(list->getElement<std::string>(i));
    unseal();
  }
  void unseal() {
    for (size_t i = 0; i < 2; ++i) {
      auto res = admin("POST", "unseal", "{\"key\":\"" + shares_[i] + "\"}");
      ASSERT_EQ(res.status, 200) << res.body;
    }
  }
  HttpReply kv(const std::string& method, const std::string& tail, const std::string& body = "",
               const std::string& tenant_key = "acme-key") {
    return request(server_->port(), method, "/secrets/v1/kv/" + tail,
                   {{"Authorization", "Bearer " + tenant_key}}, body);
  }
  std::unique_ptr<TrellisdProcess> server_;
  std::vector<std::string> shares_;
};

TEST_F(SecretsKvTest, EveryRouteAnswers503ProblemWhileSealed) {
  for (auto [method, tail] :
       std::vector<std::pair<std::string, std::string>>{{"GET", "data/db"},
                                                        {"POST", "data/db"},
                                                        {"DELETE", "data/db"},
                                                        {"POST", "destroy/db"},
                                                        {"GET", "metadata/db"},
                                                        {"GET", "metadata?list=true"}}) {
    auto res = kv(method, tail, "{not even json");
    EXPECT_EQ(res.status, 503) << method << " " << tail << ": " << res.body;
    EXPECT_EQ(res.header("content-type"), "application/problem+json");
    EXPECT_NE(res.body.find("sealed"), std::string::npos) << res.body;
  }
}

TEST_F(SecretsKvTest, WritesVersionsWithCheckAndSetAndReadsAnyVersion) {
  initAndUnseal();
  auto v1 = kv("POST", "data/app/db", R"({"data":{"password":"one"},"options":{"cas":0}})");
  ASSERT_EQ(v1.status, 200) << v1.body;
  EXPECT_EQ(json(v1.body)->getObject("data")->getValue<int>("version"), 1);

  auto again = kv("POST", "data/app/db", R"({"data":{"password":"x"},"options":{"cas":0}})");
  EXPECT_EQ(again.status, 409) << again.body;
  EXPECT_NE(again.body.find("check-and-set parameter did not match"), std::string::npos);

  auto v2 = kv("PUT", "data/app/db", R"({"data":{"password":"two"},"options":{"cas":1}})");
  ASSERT_EQ(v2.status, 200) << v2.body;
  EXPECT_EQ(json(v2.body)->getObject("data")->getValue<int>("version"), 2);
  auto stale = kv("POST", "data/app/db", R"({"data":{"password":"x"},"options":{"cas":1}})");
  EXPECT_EQ(stale.status, 409);

  auto current = kv("GET", "data/app/db");
  ASSERT_EQ(current.status, 200) << current.body;
  auto data = json(current.body)->getObject("data");
  EXPECT_EQ(data->getObject("data")->getValue<std::string>("password"), "two");
  EXPECT_EQ(data->getObject("metadata")->getValue<int>("version"), 2);
  auto old = kv("GET", "data/app/db?version=1");
  ASSERT_EQ(old.status, 200);
  EXPECT_EQ(json(old.body)->getObject("data")->getObject("data")->getValue<std::string>("password"),
            "one");
  EXPECT_EQ(kv("GET", "data/app/db?version=9").status, 404);

  auto meta = kv("GET", "metadata/app/db");
  ASSERT_EQ(meta.status, 200) << meta.body;
  auto m = json(meta.body)->getObject("data");
  EXPECT_EQ(m->getValue<int>("current_version"), 2);
  EXPECT_EQ(m->getValue<int>("oldest_version"), 1);
  EXPECT_EQ(m->getObject("versions")->size(), 2u);
  EXPECT_EQ(meta.body.find("two"), std::string::npos) << "metadata must not show values";
}

TEST_F(SecretsKvTest, SoftDeleteUndeleteAndDestroy) {
  initAndUnseal();
  ASSERT_EQ(kv("POST", "data/k", R"({"data":{"v":"1"}})").status, 200);
  ASSERT_EQ(kv("POST", "data/k", R"({"data":{"v":"2"}})").status, 200);
  EXPECT_EQ(kv("DELETE", "data/k").status, 204);
  auto gone = kv("GET", "data/k");
  EXPECT_EQ(gone.status, 404);
  EXPECT_NE(json(gone.body)
                ->getObject("data")
                ->getObject("metadata")
                ->getValue<std::string>("deletion_time"),
            "");
  EXPECT_EQ(kv("POST", "undelete/k", R"({"versions":[2]})").status, 204);
  EXPECT_EQ(kv("GET", "data/k").status, 200);

  EXPECT_EQ(kv("POST", "destroy/k", R"({"versions":[1]})").status, 204);
  auto destroyed = kv("GET", "data/k?version=1");
  EXPECT_EQ(destroyed.status, 404);
  EXPECT_TRUE(
      json(destroyed.body)->getObject("data")->getObject("metadata")->getValue<bool>("destroyed"));
  EXPECT_EQ(kv("POST", "undelete/k", R"({"versions":[1]})").status, 204);
  EXPECT_EQ(kv("GET", "data/k?version=1").status, 404) << "destroyed is for good";

  EXPECT_EQ(kv("DELETE", "metadata/k").status, 204);
  EXPECT_EQ(kv("GET", "metadata/k").status, 404);
  EXPECT_EQ(kv("GET", "data/k").status, 404);
}

TEST_F(SecretsKvTest, MaxVersionsKeepsTheNewestAndCasRequiredIsEnforced) {
  initAndUnseal();
  ASSERT_EQ(
      kv("POST", "metadata/m", R"({"max_versions":2,"custom_metadata":{"owner":"ops"}})").status,
      204);
  for (int i = 1; i <= 3; ++i) {
    ASSERT_EQ(kv("POST", "data/m", "{\"data\":{\"n\":" + std::to_string(i) + "}}").status, 200);
  }
  auto m = json(kv("GET", "metadata/m").body)->getObject("data");
  EXPECT_EQ(m->getValue<int>("current_version"), 3);
  EXPECT_EQ(m->getValue<int>("oldest_version"), 2);
  EXPECT_EQ(m->getValue<int>("max_versions"), 2);
  EXPECT_EQ(m->getObject("custom_metadata")->getValue<std::string>("owner"), "ops");

  ASSERT_EQ(kv("POST", "metadata/m", R"({"cas_required":true})").status, 204);
  auto no_cas = kv("POST", "data/m", R"({"data":{"n":4}})");
  EXPECT_EQ(no_cas.status, 400);
  EXPECT_NE(no_cas.body.find("requires check-and-set"), std::string::npos);
  EXPECT_EQ(kv("POST", "data/m", R"({"data":{"n":4},"options":{"cas":3}})").status, 200);
}

TEST_F(SecretsKvTest, ListsSecretsAndFoldersOneLevelDeep) {
  initAndUnseal();
  for (const char* p : {"a/b", "a/c/d", "a/c/e", "e"}) {
    ASSERT_EQ(kv("POST", std::string("data/") + p, R"({"data":{"x":"y"}})").status, 200);
  }
  auto top = kv("GET", "metadata?list=true");
  ASSERT_EQ(top.status, 200) << top.body;
  auto keys = json(top.body)->getObject("data")->getArray("keys");
  ASSERT_EQ(keys->size(), 2u) << top.body;
  EXPECT_EQ(keys->getElement<std::string>(0), "a/");
  EXPECT_EQ(keys->getElement<std::string>(1), "e");
  auto a = kv("GET", "metadata/a?list=true");
  ASSERT_EQ(a.status, 200) << a.body;
  auto ak = json(a.body)->getObject("data")->getArray("keys");
  ASSERT_EQ(ak->size(), 2u) << a.body;
  EXPECT_EQ(ak->getElement<std::string>(0), "b");
  EXPECT_EQ(ak->getElement<std::string>(1), "c/");
  EXPECT_EQ(kv("GET", "metadata/none?list=true").status, 404);
}

TEST_F(SecretsKvTest, TenantsSeeOnlyTheirOwnSecrets) {
  initAndUnseal();
  ASSERT_EQ(kv("POST", "data/shared-name", R"({"data":{"who":"acme"}})").status, 200);
  EXPECT_EQ(kv("GET", "data/shared-name", "", "globex-key").status, 404);
  ASSERT_EQ(kv("POST", "data/shared-name", R"({"data":{"who":"globex"}})", "globex-key").status,
            200);
  auto acme = kv("GET", "data/shared-name");
  EXPECT_EQ(json(acme.body)->getObject("data")->getObject("data")->getValue<std::string>("who"),
            "acme");
}

TEST_F(SecretsKvTest, BadInputIsRefusedWithAMessageNamingTheProblem) {
  initAndUnseal();
  auto expect = [&](const HttpReply& r, int status, const std::string& words) {
    EXPECT_EQ(r.status, status) << r.body;
    EXPECT_NE(r.body.find(words), std::string::npos) << r.body;
  };
  // The host refuses ".." and empty segments itself; encoded ones reach the plugin.
  expect(kv("POST", "data/a%2F%2Fb", R"({"data":{}})"), 400, "empty segment");
  expect(kv("POST", "data/a%2F..%2Fb", R"({"data":{}})"), 400, "\\\"..\\\"");
  expect(kv("POST", "data/ok", R"({"nodata":1})"), 400, "needs \\\"data\\\"");
  expect(kv("POST", "data/ok", R"({"data":{},"options":{"cas":"one"}})"), 400, "options.cas");
  expect(kv("POST", "data/ok", R"({"data":{},"options":{"cas":-1}})"), 400, "options.cas");
  expect(kv("POST", "data/ok", "[1,2]"), 400, "must be a JSON object");
  expect(kv("GET", "data/ok?version=abc"), 400, "whole number");
  expect(kv("POST", "destroy/ok", R"({"versions":["1"]})"), 400, "list of version numbers");
  expect(kv("POST", "metadata/ok", R"({"max_versions":1000})"), 400, "max_versions");
  std::string big(70 * 1024, 'x');
  expect(kv("POST", "data/big", "{\"data\":{\"blob\":\"" + big + "\"}}"), 413, "at most 65536");
  EXPECT_EQ(kv("GET", "metadata/big").status, 404) << "nothing half-written";
}

TEST_F(SecretsKvTest, ConcurrentWritersWithTheSameCasHaveExactlyOneWinner) {
  initAndUnseal();
  ASSERT_EQ(kv("POST", "data/race", R"({"data":{"n":"0"}})").status, 200);
  constexpr int kWriters = 8;
  std::vector<int> statuses(kWriters);
  std::vector<std::thread> writers;
  for (int i = 0; i < kWriters; ++i) {
    writers.emplace_back([&, i] {
      statuses[static_cast<size_t>(i)] =
          kv("POST", "data/race",
             "{\"data\":{\"n\":\"" + std::to_string(i) + "\"},\"options\":{\"cas\":1}}")
              .status;
    });
  }
  for (auto& t : writers) t.join();
  EXPECT_EQ(std::count(statuses.begin(), statuses.end(), 200), 1);
  EXPECT_EQ(std::count(statuses.begin(), statuses.end(), 409), kWriters - 1);
  auto m = json(kv("GET", "metadata/race").body)->getObject("data");
  EXPECT_EQ(m->getValue<int>("current_version"), 2);
}

TEST_F(SecretsKvTest, SecretsSurviveARestartAndNeedTheSameSharesAgain) {
  initAndUnseal();
  const std::string canary = "canary-7f3e9a1c-value";
  ASSERT_EQ(kv("POST", "data/db", "{\"data\":{\"password\":\"" + canary + "\"}}").status, 200);
  ASSERT_EQ(server_->stop(), 0);
  ASSERT_TRUE(server_->start()) << server_->log();

  EXPECT_EQ(kv("GET", "data/db").status, 503) << "a restarted host starts sealed";
  unseal();
  auto read = kv("GET", "data/db");
  ASSERT_EQ(read.status, 200) << read.body;
  EXPECT_EQ(
      json(read.body)->getObject("data")->getObject("data")->getValue<std::string>("password"),
      canary);
  EXPECT_EQ(server_->log().find(canary), std::string::npos) << "the value reached the log";
}

}  // namespace
}  // namespace trellis::test
