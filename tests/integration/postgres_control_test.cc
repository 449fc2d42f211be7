// The operator's control plane on several hosts sharing PostgreSQL: a named admin token and
// a system grant made on one host count on every host, revocations too, and a host's
// per-host files from before are imported once.
#include <Poco/JSON/Array.h>
#include <Poco/JSON/Object.h>
#include <Poco/JSON/Parser.h>
#include <gtest/gtest.h>

#include <chrono>
#include <filesystem>
#include <fstream>
#include <functional>
#include <thread>

#include "support/shared_postgres.h"
#include "support/test_support.h"
#include "trellis/tenants/identity.h"

namespace trellis::test {
namespace {

using namespace std::chrono_literals;
namespace fs = std::filesystem;

Poco::JSON::Object::Ptr json(const std::string& body) {
  return Poco::JSON::Parser().parse(body).extract<Poco::JSON::Object::Ptr>();
}

std::string sharedConfig(const TestDatabase& db) {
  std::string config = defaultTestConfig();
  const std::string anchor = "  data_dir: @DATA@\n";
  config.insert(config.find(anchor) + anchor.size(),
                "  url: \"" + db.appUrl() + "\"\n  pool_size: 2\n");
  return config;
}

HttpReply admin(const TrellisdProcess& host, const std::string& method, const std::string& path,
                const std::string& token, const std::string& body = "") {
  return request(host.adminPort(), method, path, {{"Authorization", "Bearer " + token}}, body);
}

bool grantListed(const TrellisdProcess& host, const std::string& plugin) {
  HttpReply r = admin(host, "GET", "/v1/system-grants", host.adminToken());
  auto grants = json(r.body)->getArray("grants");
  for (size_t i = 0; grants && i < grants->size(); ++i) {
    if (grants->getObject(static_cast<unsigned>(i))->getValue<std::string>("plugin") == plugin)
      return true;
  }
  return false;
}

TEST(PostgresControlTest, AdminTokensAndSystemGrantsCountOnEveryHost) {
  TestDatabase db = SharedPostgres::freshDatabase();
  ASSERT_TRUE(db) << db.error;
  TrellisdProcess a(sharedConfig(db)), b(sharedConfig(db));
  ASSERT_TRUE(a.start()) << a.log();
  ASSERT_TRUE(b.start()) << b.log();

  // A token made on host a opens host b's admin API within its poll.
  HttpReply made = admin(a, "POST", "/v1/admin-tokens", a.adminToken(),
                         R"({"name": "alice", "role": "operator"})");
  ASSERT_EQ(made.status, 201) << made.body;
  const std::string token = json(made.body)->getValue<std::string>("token");
  const std::string id = json(made.body)->getValue<std::string>("id");
  EXPECT_TRUE(eventually([&] { return admin(b, "GET", "/v1/tenants", token).status == 200; }));
  // Its name is taken on every host at once: creation reads the shared document.
  EXPECT_EQ(
      admin(b, "POST", "/v1/admin-tokens", b.adminToken(), R"({"name": "alice", "role": "admin"})")
          .status,
      409);

  // Revoked on host b: host a refuses it too, within its poll, naming the revocation.
  ASSERT_EQ(admin(b, "DELETE", "/v1/admin-tokens/" + id, b.adminToken()).status, 200);
  EXPECT_TRUE(eventually([&] { return admin(a, "GET", "/v1/tenants", token).status == 401; }));
  EXPECT_NE(admin(a, "GET", "/v1/tenants", token).body.find("alice (" + id + ") was revoked"),
            std::string::npos);

  // A system grant made on host a is listed on host b; revoked on b, it leaves a.
  ASSERT_EQ(admin(a, "PUT", "/v1/plugins/acme/usage-meter/system", a.adminToken()).status, 200);
  EXPECT_TRUE(eventually([&] { return grantListed(b, "acme/usage-meter"); }));
  ASSERT_EQ(admin(b, "DELETE", "/v1/plugins/acme/usage-meter/system", b.adminToken()).status, 200);
  EXPECT_TRUE(eventually([&] { return !grantListed(a, "acme/usage-meter"); }));
}

TEST(PostgresControlTest, AHostsFilesFromBeforeAreImportedOnce) {
  TestDatabase db = SharedPostgres::freshDatabase();
  ASSERT_TRUE(db) << db.error;
  TrellisdProcess a(sharedConfig(db)), b(sharedConfig(db));
  // What an earlier trellisd left in a's data_dir when each host kept its own files.
  const std::string token = "tadm_0123456789abcdef_" + std::string(64, '7');
  const fs::path data = a.dir() / "data";
  fs::create_directories(data);
  std::ofstream(data / "admin-principals.json")
      << R"({"principals": [{"id": "0123456789abcdef", "name": "bob", "role": "auditor", )"
      << R"("sha256": ")" << tenants::sha256Hex(token) << R"(", "created_at_ms": 1}]})";
  std::ofstream(data / "system-grants.json") << R"({"system": ["acme/usage-meter"]})";
  ASSERT_TRUE(a.start()) << a.log();
  ASSERT_TRUE(b.start()) << b.log();

  EXPECT_EQ(admin(b, "GET", "/v1/tenants", token).status, 200) << b.log();
  EXPECT_TRUE(grantListed(b, "acme/usage-meter"));
  EXPECT_FALSE(fs::exists(data / "admin-principals.json"));
  EXPECT_TRUE(fs::exists(data / "admin-principals.json.imported"));
  EXPECT_TRUE(fs::exists(data / "system-grants.json.imported"));
  EXPECT_NE(a.log().find("admin principals: imported 1 into PostgreSQL"), std::string::npos);
}

}  // namespace
}  // namespace trellis::test
