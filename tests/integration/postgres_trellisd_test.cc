// trellisd on PostgreSQL end to end: storage.url / storage.owner_url, plugin data in the
// shared tables, several hosts serving the same tenants, PostgreSQL going away and coming
// back, and the refusals at start.
#include <Poco/JSON/Object.h>
#include <Poco/JSON/Parser.h>
#include <gmock/gmock.h>
#include <gtest/gtest.h>

#include <chrono>
#include <functional>
#include <string>
#include <thread>

#include "support/postgres_server.h"
#include "support/shared_postgres.h"
#include "support/test_support.h"

namespace trellis::test {
namespace {

using ::testing::HasSubstr;
using ::testing::Not;
using namespace std::chrono_literals;

std::map<std::string, std::string> bearer(const std::string& key) {
  return {{"Authorization", "Bearer " + key}};
}

// defaultTestConfig() with `lines` (indented for the storage map) added to storage.
std::string withStorage(const std::string& lines) {
  std::string config = defaultTestConfig();
  const std::string anchor = "  data_dir: @DATA@\n";
  config.insert(config.find(anchor) + anchor.size(), lines);
  return config;
}

std::string pgConfig(const TestDatabase& db, bool with_owner) {
  return withStorage("  url: \"" + db.appUrl() + "\"\n" +
                     (with_owner ? "  owner_url: \"" + db.ownerUrl() + "\"\n" : "") +
                     "  pool_size: 2\n");
}

// Runs trellisd to completion (it is expected to refuse to start); output in *out.
int runToExit(const std::string& config, std::string* out) {
  TempDir dir;
  writeFile(dir / "trellis.yaml", config);
  // @DATA@ etc. are only expanded by TrellisdProcess: give the paths directly.
  std::string text = readFile(dir / "trellis.yaml");
  for (const auto& [from, to] :
       std::vector<std::pair<std::string, std::string>>{{"@DATA@", (dir / "data").string()},
                                                        {"@DIR@", dir.path().string()},
                                                        {"@PLUGINS@", TRELLIS_PLUGIN_DIR},
                                                        {"@FIXTURES@", TRELLIS_FIXTURE_DIR}}) {
    for (size_t at = text.find(from); at != std::string::npos; at = text.find(from)) {
      text.replace(at, from.size(), to);
    }
  }
  writeFile(dir / "trellis.yaml", text);
  int status = -1;
  *out = runCommand(std::string(TRELLISD_PATH) + " --config " + (dir / "trellis.yaml").string() +
                        " 2>&1 </dev/null",
                    &status);
  return status;
}

int visits(const HttpReply& r) {
  auto obj = Poco::JSON::Parser().parse(r.body).extract<Poco::JSON::Object::Ptr>();
  return obj->getValue<int>("visits");
}

bool eventuallyStatus(const std::function<int()>& probe, int want) {
  return eventually([&] { return probe() == want; });
}

bool eventuallyLogs(const TrellisdProcess& host, const std::string& text) {
  return eventually([&] { return host.log().find(text) != std::string::npos; });
}

TEST(PostgresTrellisdTest, PluginDataLivesInPostgresAndIsSharedByHosts) {
  TestDatabase db = SharedPostgres::freshDatabase(/*migrated=*/false);
  ASSERT_TRUE(db) << db.error;
  // The first host creates the schema with the owner role; the second only checks it.
  TrellisdProcess a(pgConfig(db, /*with_owner=*/true));
  ASSERT_TRUE(a.start()) << a.log();
  HttpReply first = request(a.port(), "GET", "/hello/ann", bearer("acme-key"));
  ASSERT_EQ(first.status, 200) << first.body;
  EXPECT_EQ(visits(first), 1);

  SqlResult rows = SharedPostgres::server().execSql(
      "SELECT tenant_id || '|' || plugin || '|' || convert_from(key, 'UTF8') || '=' || "
      "convert_from(value, 'UTF8') || '@' || version FROM trellis.kv",
      db.name);
  ASSERT_TRUE(rows) << rows.error;
  ASSERT_EQ(rows.rows.size(), 1u);
  EXPECT_EQ(rows.rows[0][0], "acme|trellis/hello|visits/ann=1@1");

  TrellisdProcess b(pgConfig(db, /*with_owner=*/false));
  ASSERT_TRUE(b.start()) << b.log();
  HttpReply second = request(b.port(), "GET", "/hello/ann", bearer("acme-key"));
  ASSERT_EQ(second.status, 200) << second.body;
  EXPECT_EQ(visits(second), 2);
  // Another tenant on the other host counts on its own.
  EXPECT_EQ(visits(request(b.port(), "GET", "/hello/ann", bearer("globex-key"))), 1);
  EXPECT_EQ(visits(request(a.port(), "GET", "/hello/ann", bearer("acme-key"))), 3);

  for (auto* host : {&a, &b}) {
    EXPECT_THAT(host->log(), HasSubstr("storage: PostgreSQL postgresql://trellis_app:***@"));
    EXPECT_THAT(host->log(), Not(HasSubstr(SharedPostgres::kAppPassword)));
    EXPECT_THAT(host->log(), Not(HasSubstr(SharedPostgres::kOwnerPassword)));
  }
}

TEST(PostgresTrellisdTest, KeysCreatedAndRevokedOnOneHostTakeEffectOnTheOther) {
  TestDatabase db = SharedPostgres::freshDatabase();
  ASSERT_TRUE(db) << db.error;
  TrellisdProcess a(pgConfig(db, false));
  TrellisdProcess b(pgConfig(db, false));
  ASSERT_TRUE(a.start()) << a.log();
  ASSERT_TRUE(b.start()) << b.log();

  HttpReply created =
      request(a.adminPort(), "POST", "/v1/tenants/acme/keys", bearer(a.adminToken()), "{}");
  ASSERT_EQ(created.status, 201) << created.body;
  auto obj = Poco::JSON::Parser().parse(created.body).extract<Poco::JSON::Object::Ptr>();
  const std::string key = obj->getValue<std::string>("key");
  const std::string id = obj->getValue<std::string>("id");
  auto onB = [&] { return request(b.port(), "GET", "/hello/kim", bearer(key)).status; };
  EXPECT_TRUE(eventuallyStatus(onB, 200));

  HttpReply revoked = request(a.adminPort(), "DELETE", "/v1/keys/" + id, bearer(a.adminToken()));
  ASSERT_EQ(revoked.status, 204) << revoked.body;
  EXPECT_EQ(request(a.port(), "GET", "/hello/kim", bearer(key)).status, 401);
  EXPECT_TRUE(eventuallyStatus(onB, 401));
}

TEST(PostgresTrellisdTest, WritesAnswer503WhilePostgresIsDownAndWorkOnceItIsBack) {
  PostgresServer pg;
  ASSERT_TRUE(pg.start()) << pg.error();
  ASSERT_TRUE(pg.execSql("CREATE ROLE trellis_owner LOGIN; CREATE ROLE trellis_app LOGIN"));
  ASSERT_TRUE(pg.createDatabase("trellis", "trellis_owner"));
  const std::string base = "@127.0.0.1:" + std::to_string(pg.port()) + "/trellis";
  TrellisdProcess host(withStorage("  url: postgresql://trellis_app:Down-Pass" + base +
                                   "\n  owner_url: postgresql://trellis_owner:x" + base + "\n"));
  ASSERT_TRUE(host.start()) << host.log();
  ASSERT_EQ(request(host.port(), "GET", "/hello/ann", bearer("acme-key")).status, 200);

  ASSERT_TRUE(pg.stop());
  HttpReply down = request(host.port(), "GET", "/hello/ann", bearer("acme-key"));
  EXPECT_EQ(down.status, 503) << down.body;
  EXPECT_EQ(down.header("content-type"), "application/problem+json");
  EXPECT_THAT(down.body, Not(HasSubstr("Down-Pass")));
  // The host itself is fine: it keeps answering what does not need storage.
  EXPECT_EQ(request(host.port(), "GET", "/healthz").status, 200);

  // The host says, once, that it serves the tenants it last loaded.
  EXPECT_TRUE(eventuallyLogs(host, "serving the last loaded tenants and keys"));

  ASSERT_TRUE(pg.start()) << pg.error();
  HttpReply back = request(host.port(), "GET", "/hello/ann", bearer("acme-key"));
  ASSERT_EQ(back.status, 200) << back.body;
  EXPECT_EQ(visits(back), 2);  // the write refused during the outage left nothing behind
  EXPECT_TRUE(eventuallyLogs(host, "refreshing from PostgreSQL again"));
  EXPECT_THAT(host.log(), Not(HasSubstr("Down-Pass")));
}

TEST(PostgresTrellisdTest, UnreachablePostgresAtStartIsAOneLineErrorAndANonZeroExit) {
  PostgresServer probe;  // a loopback port that was free a moment ago
  ASSERT_TRUE(probe.start()) << probe.error();
  const uint16_t port = probe.port();
  ASSERT_TRUE(probe.stop());
  std::string out;
  int rc = runToExit(withStorage("  url: postgresql://trellis_app:Never-Logged@127.0.0.1:" +
                                 std::to_string(port) + "/trellis\n"),
                     &out);
  EXPECT_EQ(rc, 1) << out;
  EXPECT_THAT(out, HasSubstr("cannot start: "));
  EXPECT_THAT(out, HasSubstr("cannot connect to PostgreSQL at 127.0.0.1:" + std::to_string(port)));
  EXPECT_THAT(out, Not(HasSubstr("Never-Logged")));
  // One line says it all: what failed, where, and why.
  const size_t at = out.find("cannot start: ");
  const std::string line = out.substr(at, out.find('\n', at) - at);
  EXPECT_THAT(line, HasSubstr("127.0.0.1:" + std::to_string(port)));
  EXPECT_THAT(line, HasSubstr("Connection refused"));
}

TEST(PostgresTrellisdTest, WithoutOwnerUrlAMissingSchemaStopsStartWithWhatToDo) {
  TestDatabase db = SharedPostgres::freshDatabase(/*migrated=*/false);
  ASSERT_TRUE(db) << db.error;
  std::string out;
  EXPECT_EQ(runToExit(pgConfig(db, /*with_owner=*/false), &out), 1) << out;
  EXPECT_THAT(out, HasSubstr("has no Trellis schema: start trellisd once with storage.owner_url"));
  EXPECT_THAT(out, Not(HasSubstr(SharedPostgres::kAppPassword)));
}

TEST(PostgresTrellisdTest, AnAppRoleGrantedTheOwnerRoleIsRefusedAtStartNamingThePath) {
  TestDatabase db = SharedPostgres::freshDatabase();
  ASSERT_TRUE(db) << db.error;
  // A role of this test only (roles are cluster-wide) with the app role's access, then the
  // grant an operator might add "to make migrations work".
  const std::string app = db.name + "_app";
  ASSERT_TRUE(SharedPostgres::server().execSql("CREATE ROLE " + app +
                                               " LOGIN; GRANT trellis_app TO " + app +
                                               "; GRANT trellis_owner TO " + app));
  std::string url = db.appUrl();
  url.replace(url.find("trellis_app:"), std::string("trellis_app").size(), app);
  std::string out;
  EXPECT_EQ(runToExit(withStorage("  url: \"" + url + "\"\n"), &out), 1) << out;
  EXPECT_THAT(out, HasSubstr("cannot start: "));
  EXPECT_THAT(
      out, HasSubstr("storage.url: role \"" + app + "\" is a member of \"trellis_owner\" (" + app +
                     " -> trellis_owner, inheriting its privileges)"));
  EXPECT_THAT(out, Not(HasSubstr(SharedPostgres::kAppPassword)));

  // Without the grant the same role serves.
  ASSERT_TRUE(SharedPostgres::server().execSql("REVOKE trellis_owner FROM " + app));
  TrellisdProcess host(withStorage("  url: \"" + url + "\"\n"));
  ASSERT_TRUE(host.start()) << host.log();
}

TEST(PostgresTrellisdTest, AMalformedUrlIsAConfigErrorNamingTheKey) {
  std::string out;
  EXPECT_EQ(
      runToExit(withStorage("  url: \"postgresql://app:Secret-Word@db.internal:http/x\"\n"), &out),
      2)
      << out;
  EXPECT_THAT(out, HasSubstr("storage.url: expected postgresql://user:password@host:port/database"
                             ": the port \"http\" is not a number from 1 to 65535"));
  EXPECT_THAT(out, Not(HasSubstr("Secret-Word")));
}

}  // namespace
}  // namespace trellis::test
