// Egress quotas on several hosts sharing PostgreSQL: egress_bytes_per_day is counted in the
// database, so bytes one host spent are spent for the other too.
#include <Poco/JSON/Object.h>
#include <Poco/JSON/Parser.h>
#include <gtest/gtest.h>

#include <chrono>
#include <thread>

#include "support/loopback_server.h"
#include "support/shared_postgres.h"
#include "support/test_support.h"

namespace trellis::test {
namespace {

Poco::JSON::Object::Ptr json(const std::string& body) {
  return Poco::JSON::Parser().parse(body).extract<Poco::JSON::Object::Ptr>();
}

TEST(PostgresEgressTest, BytesPerDayAreSharedByTheHosts) {
  TestDatabase db = SharedPostgres::freshDatabase();
  ASSERT_TRUE(db) << db.error;
  LoopbackServer upstream([](const auto& read, const auto& write, const auto&) {
    for (std::string req = read(); !req.empty(); req = read()) {
      if (!write(reply(200, req))) return;
    }
  });
  const std::string origin = "http://127.0.0.1:" + std::to_string(upstream.port());
  std::string config = defaultTestConfig("    - id: acme/fetch-store\n");
  const std::string acme = "  - id: acme\n";
  config.insert(config.find(acme) + acme.size(),
                "    quotas: {egress_bytes_per_day: 900}\n"
                "    grants: {acme/fetch-store: [egress, \"egress:" +
                    origin + "\"]}\n");
  const std::string anchor = "  data_dir: @DATA@\n";
  config.insert(config.find(anchor) + anchor.size(),
                "  url: \"" + db.appUrl() + "\"\n  pool_size: 2\n");
  TrellisdProcess a(config), b(config);
  ASSERT_TRUE(a.start()) << a.log();
  ASSERT_TRUE(b.start()) << b.log();
  const std::map<std::string, std::string> key = {{"Authorization", "Bearer acme-key"}};

  // Host a spends the day's bytes...
  std::string quota;
  int sent = 0;
  for (int i = 0; i < 20 && quota.empty(); ++i) {
    HttpReply r = request(a.port(), "POST", "/fs/fetch", key, origin + "/spend");
    if (r.status == 200) ++sent;
    if (r.status == 429) quota = json(r.body)->getValue<std::string>("quota");
  }
  ASSERT_EQ(quota, "egress_bytes_per_day") << a.log();
  EXPECT_GE(sent, 1);
  const int connections = upstream.connections();
  // ...and host b, which sent nothing yet, refuses at once.
  HttpReply other = request(b.port(), "POST", "/fs/fetch", key, origin + "/other");
  EXPECT_EQ(other.status, 429) << other.body;
  EXPECT_EQ(json(other.body)->getValue<std::string>("quota"), "egress_bytes_per_day");
  EXPECT_EQ(upstream.connections(), connections);
  // Both hosts show the tenant's bytes of the day.
  for (TrellisdProcess* host : {&a, &b}) {
    HttpReply usage = request(host->adminPort(), "GET", "/v1/tenants/acme/usage",
                              {{"Authorization", "Bearer " + host->adminToken()}});
    EXPECT_GE(json(usage.body)->getObject("egress")->getValue<uint64_t>("bytes_today"), 900u);
  }
}

}  // namespace
}  // namespace trellis::test
