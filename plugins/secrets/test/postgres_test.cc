// The secrets store on two hosts sharing PostgreSQL: one init for both, each host unsealed
// with the same shares, and check-and-set decided once across hosts.
#include <Poco/JSON/Array.h>
#include <Poco/JSON/Object.h>
#include <Poco/JSON/Parser.h>
#include <gtest/gtest.h>

#include <algorithm>
#include <string>
#include <thread>
#include <vector>

#include "support/shared_postgres.h"
#include "support/test_support.h"

namespace trellis::test {
namespace {

using Poco::JSON::Object;

Object::Ptr json(const std::string& body) {
  return Poco::JSON::Parser().parse(body).extract<Object::Ptr>();
}

HttpReply admin(const TrellisdProcess& host, const std::string& method, const std::string& route,
                const std::string& body = "") {
  return request(host.adminPort(), method, "/v1/x/trellis/secrets/" + route,
                 {{"Authorization", "Bearer " + host.adminToken()}}, body);
}

HttpReply kv(const TrellisdProcess& host, const std::string& method, const std::string& tail,
             const std::string& body = "") {
  return request(host.port(), method, "/secrets/v1/kv/" + tail,
                 {{"Authorization", "Bearer acme-key"}}, body);
}

TEST(SecretsPostgresTest, OneInitServesEveryHostAndCasHasOneWinnerAcrossHosts) {
  TestDatabase db = SharedPostgres::freshDatabase();
  ASSERT_TRUE(db) << db.error;
  std::string config = defaultTestConfig("    - id: trellis/secrets\n      system: true\n");
  const std::string anchor = "  data_dir: @DATA@\n";
  config.insert(config.find(anchor) + anchor.size(),
                "  url: \"" + db.appUrl() + "\"\n  pool_size: 4\n");
  TrellisdProcess a(config), b(config);
  ASSERT_TRUE(a.start()) << a.log();
  ASSERT_TRUE(b.start()) << b.log();

  auto made = admin(a, "POST", "init", R"({"shares":3,"threshold":2})");
  ASSERT_EQ(made.status, 200) << made.body;
  std::vector<std::string> shares;
  auto list = json(made.body)->getArray("shares");
  for (size_t i = 0; i < list->size(); ++i) shares.push_back(list->getElement<std::string>(i));
  // Host b shares the store: it knows the root key and makes no second one.
  auto again = admin(b, "POST", "init", R"({"shares":3,"threshold":2})");
  EXPECT_EQ(again.status, 409) << again.body;
  EXPECT_TRUE(json(admin(b, "GET", "status").body)->getValue<bool>("initialized"));
  for (const TrellisdProcess* host : {&a, &b}) {
    for (size_t i = 0; i < 2; ++i) {
      auto res = admin(*host, "POST", "unseal", "{\"key\":\"" + shares[i] + "\"}");
      ASSERT_EQ(res.status, 200) << res.body;
    }
  }

  // A secret written on one host reads on the other.
  ASSERT_EQ(kv(a, "POST", "data/race", R"({"data":{"n":"0"}})").status, 200);
  auto read = kv(b, "GET", "data/race");
  ASSERT_EQ(read.status, 200) << read.body;
  EXPECT_EQ(json(read.body)->getObject("data")->getObject("data")->getValue<std::string>("n"), "0");

  // Writers on both hosts with the same cas: exactly one wins.
  constexpr int kWriters = 8;
  std::vector<int> statuses(kWriters);
  std::vector<std::thread> writers;
  for (int i = 0; i < kWriters; ++i) {
    writers.emplace_back([&, i] {
      statuses[static_cast<size_t>(i)] =
          kv(i % 2 ? b : a, "POST", "data/race",
             "{\"data\":{\"n\":\"" + std::to_string(i) + "\"},\"options\":{\"cas\":1}}")
              .status;
    });
  }
  for (auto& t : writers) t.join();
  EXPECT_EQ(std::count(statuses.begin(), statuses.end(), 200), 1);
  EXPECT_EQ(std::count(statuses.begin(), statuses.end(), 409), kWriters - 1);
  auto meta = json(kv(b, "GET", "metadata/race").body)->getObject("data");
  EXPECT_EQ(meta->getValue<int>("current_version"), 2);
}

}  // namespace
}  // namespace trellis::test
