// Dynamic PostgreSQL credentials on a real trellisd and a real PostgreSQL 15 that asks for
// passwords (SCRAM-SHA-256 by default; an md5 and a cleartext admin too). The plugin reaches
// the database through its egress stream, which the tenant's grant allows for this loopback
// address. Each credential is tried the way an application would use it: a libpq login and
// a query.
#include <Poco/JSON/Array.h>
#include <Poco/JSON/Object.h>
#include <Poco/JSON/Parser.h>
#include <gtest/gtest.h>
#include <libpq-fe.h>

#include <memory>
#include <string>
#include <vector>

#include "support/postgres_server.h"
#include "support/test_support.h"

namespace trellis::test {
namespace {

using Poco::JSON::Object;

constexpr const char* kAdminPassword = "Adm1n-Canary-7731";
constexpr const char* kMd5Password = "Md5-Canary-4412";
constexpr const char* kClearPassword = "Clear-Canary-9053";

Object::Ptr json(const std::string& body) {
  return Poco::JSON::Parser().parse(body).extract<Object::Ptr>();
}

struct Creds {
  std::string lease_id;
  std::string username;
  std::string password;
  long lease_duration = 0;
  bool renewable = false;
};

class SecretsDatabaseTest : public ::testing::Test {
 protected:
  void SetUp() override {
    pg_.setHostAuthRules(
        "host all postgres 127.0.0.1/32 trust\n"
        "host all clearadmin 127.0.0.1/32 password\n"
        "host all all 127.0.0.1/32 md5\n");  // md5: SCRAM for SCRAM secrets, md5 for md5 ones
    ASSERT_TRUE(pg_.start()) << pg_.error();
    ASSERT_TRUE(pg_.createDatabase("appdb"));
    SqlResult setup = pg_.execSql(
        std::string("CREATE ROLE vaultadmin LOGIN CREATEROLE PASSWORD '") + kAdminPassword +
        "';"
        "SET LOCAL password_encryption = 'md5';"
        "CREATE ROLE md5admin LOGIN CREATEROLE PASSWORD '" +
        kMd5Password +
        "';"
        "CREATE ROLE clearadmin LOGIN CREATEROLE PASSWORD '" +
        kClearPassword + "';");
    ASSERT_TRUE(setup) << setup.error;
    SqlResult table = pg_.execSql(
        "CREATE TABLE items (id int); INSERT INTO items VALUES (1), (2);"
        "GRANT SELECT ON items TO vaultadmin, md5admin, clearadmin WITH GRANT OPTION;",
        "appdb");
    ASSERT_TRUE(table) << table.error;

    std::string config = defaultTestConfig(
        "    - id: trellis/secrets\n      system: true\n    - id: fixture/sys-audit\n"
        "      system: true\n",
        "audit:\n  sink: fixture/sys-audit\n");
    // acme's grant names the loopback database; globex has the manifest alone, which
    // reaches no loopback or private address.
    const std::string acme = "  - id: acme\n";
    config.insert(config.find(acme) + acme.size(),
                  "    grants: {trellis/secrets: [kv, jobs, metrics, egress, "
                  "\"egress:tcp://127.0.0.1:" +
                      std::to_string(pg_.port()) + "\"]}\n");
    server_ = std::make_unique<TrellisdProcess>(config);
    ASSERT_TRUE(server_->start()) << server_->log();
  }

  HttpReply admin(const std::string& method, const std::string& route, const std::string& body) {
    return request(server_->adminPort(), method, "/v1/x/trellis/secrets/" + route,
                   {{"Authorization", "Bearer " + server_->adminToken()}}, body);
  }
  void initAndUnseal() {
    auto res = admin("POST", "init", R"({"shares":2,"threshold":2})");
    ASSERT_EQ(res.status, 200) << res.body;
    shares_.clear();
    auto list = json(res.body)->getArray("shares");
    for (size_t i = 0; i < list->size(); ++i) shares_.push_back(list->getElement<std::string>(i));
    unseal();
  }
  void unseal() {
    for (const auto& share : shares_) {
      auto u = admin("POST", "unseal", "{\"key\":\"" + share + "\"}");
      ASSERT_EQ(u.status, 200) << u.body;
    }
  }
  HttpReply call(const std::string& method, const std::string& tail, const std::string& body = "",
                 const std::string& key = "acme-key") {
    replies_.push_back(request(server_->port(), method, "/secrets/v1/" + tail,
                               {{"Authorization", "Bearer " + key}}, body));
    return replies_.back();
  }
  std::string url() const { return "tcp://127.0.0.1:" + std::to_string(pg_.port()) + "/appdb"; }
  void configure(const std::string& name = "main", const std::string& user = "vaultadmin",
                 const std::string& password = kAdminPassword) {
    auto r = call("POST", "database/config/" + name,
                  "{\"connection_url\":\"" + url() + "\",\"username\":\"" + user +
                      "\",\"password\":\"" + password + "\",\"allowed_roles\":[\"*\"]}");
    ASSERT_EQ(r.status, 200) << r.body;
  }
  void addRole(const std::string& name, const std::string& ttls, const std::string& db = "main") {
    auto r = call("POST", "database/roles/" + name,
                  "{\"db_name\":\"" + db +
                      "\",\"creation_statements\":[\"CREATE ROLE \\\"{{name}}\\\" WITH LOGIN "
                      "PASSWORD '{{password}}' VALID UNTIL '{{expiration}}';\","
                      "\"GRANT SELECT ON items TO \\\"{{name}}\\\";\"]" +
                      ttls + "}");
    ASSERT_EQ(r.status, 204) << r.body;
  }
  Creds creds(const std::string& role) {
    auto r = call("GET", "database/creds/" + role);
    EXPECT_EQ(r.status, 200) << r.body;
    Creds c;
    if (r.status != 200) return c;
    auto o = json(r.body);
    c.lease_id = o->getValue<std::string>("lease_id");
    c.lease_duration = o->getValue<long>("lease_duration");
    c.renewable = o->getValue<bool>("renewable");
    c.username = o->getObject("data")->getValue<std::string>("username");
    c.password = o->getObject("data")->getValue<std::string>("password");
    issued_passwords_.push_back(c.password);
    return c;
  }
  // A libpq login as the credentials, then a query: "" if both worked, else the error.
  std::string useCreds(const Creds& c) {
    const std::string conninfo = "host=127.0.0.1 port=" + std::to_string(pg_.port()) +
                                 " dbname=appdb user=" + c.username + " password=" + c.password +
                                 " connect_timeout=10";
    std::unique_ptr<PGconn, decltype(&::PQfinish)> conn(::PQconnectdb(conninfo.c_str()),
                                                        &::PQfinish);
    if (::PQstatus(conn.get()) != CONNECTION_OK) return ::PQerrorMessage(conn.get());
    std::unique_ptr<PGresult, decltype(&::PQclear)> res(
        ::PQexec(conn.get(), "SELECT count(*) FROM items"), &::PQclear);
    if (::PQresultStatus(res.get()) != PGRES_TUPLES_OK) return ::PQresultErrorMessage(res.get());
    return std::string(::PQgetvalue(res.get(), 0, 0)) == "2" ? "" : "wrong count";
  }
  bool roleExists(const std::string& name) {
    SqlResult r = pg_.execSql("SELECT 1 FROM pg_roles WHERE rolname = '" + name + "'");
    EXPECT_TRUE(r) << r.error;
    return !r.rows.empty();
  }
  long validUntilEpoch(const std::string& name) {
    SqlResult r = pg_.execSql(
        "SELECT extract(epoch FROM rolvaliduntil)::bigint FROM pg_roles WHERE rolname = '" + name +
        "'");
    EXPECT_TRUE(r && r.rows.size() == 1) << r.error;
    return r.rows.size() == 1 ? std::stol(r.rows[0][0]) : 0;
  }
  HttpReply renew(const std::string& lease_id, const std::string& increment = "") {
    return call("POST", "sys/leases/renew",
                "{\"lease_id\":\"" + lease_id + "\"" +
                    (increment.empty() ? "" : ",\"increment\":" + increment) + "}");
  }
  HttpReply revoke(const std::string& lease_id) {
    return call("POST", "sys/leases/revoke", "{\"lease_id\":\"" + lease_id + "\"}");
  }
  // Every reply, log, audit record and metric: no password of the test's in any of them.
  void expectNoPasswordAnywhere() {
    std::vector<std::string> secrets = {kAdminPassword, kMd5Password, kClearPassword};
    for (const HttpReply& r : replies_) {
      for (const auto& s : secrets) EXPECT_EQ(r.body.find(s), std::string::npos) << r.body;
      if (r.status != 200) {
        for (const auto& s : issued_passwords_) EXPECT_EQ(r.body.find(s), std::string::npos);
      }
    }
    secrets.insert(secrets.end(), issued_passwords_.begin(), issued_passwords_.end());
    auto audit = request(server_->adminPort(), "GET", "/v1/x/fixture/sys-audit/records",
                         {{"Authorization", "Bearer " + server_->adminToken()}});
    ASSERT_EQ(audit.status, 200) << audit.body;
    auto metrics = request(server_->adminPort(), "GET", "/metrics",
                           {{"Authorization", "Bearer " + server_->adminToken()}});
    for (const auto& s : secrets) {
      EXPECT_EQ(audit.body.find(s), std::string::npos) << "an audit record holds a password";
      EXPECT_EQ(metrics.body.find(s), std::string::npos) << "a metric holds a password";
    }
    audit_ = audit.body;
    ASSERT_EQ(server_->stop(), 0);
    const std::string log = server_->log();
    for (const auto& s : secrets) EXPECT_EQ(log.find(s), std::string::npos) << "the log: " << s;
    for (const auto& entry : std::filesystem::recursive_directory_iterator(server_->dir())) {
      if (!entry.is_regular_file()) continue;
      const std::string name = entry.path().filename().string();
      if (name.ends_with(".log") || name.find("audit") != std::string::npos) {
        const std::string text = readFile(entry.path());
        for (const auto& s : secrets) EXPECT_EQ(text.find(s), std::string::npos) << entry.path();
      }
    }
  }

  PostgresServer pg_;
  std::unique_ptr<TrellisdProcess> server_;
  std::vector<std::string> shares_;
  std::vector<HttpReply> replies_;
  std::vector<std::string> issued_passwords_;
  std::string audit_;
};

TEST_F(SecretsDatabaseTest, SealedRoutesAnswer503) {
  auto r = call("GET", "database/creds/app");
  EXPECT_EQ(r.status, 503) << r.body;
  EXPECT_NE(r.body.find("sealed"), std::string::npos);
  EXPECT_EQ(call("POST", "sys/leases/renew", R"({"lease_id":"x"})").status, 503);
  EXPECT_EQ(call("POST", "database/config/main", "{}").status, 503);
}

TEST_F(SecretsDatabaseTest, CredentialsLogInAndRevokedOnesStopWorking) {
  initAndUnseal();
  configure();
  // The connection reads back without its password.
  auto read = call("GET", "database/config/main");
  ASSERT_EQ(read.status, 200) << read.body;
  EXPECT_EQ(read.body.find(kAdminPassword), std::string::npos);
  EXPECT_EQ(read.body.find("password"), std::string::npos) << read.body;
  EXPECT_NE(read.body.find("vaultadmin"), std::string::npos);

  addRole("app", R"(,"default_ttl":"1h","max_ttl":"24h")");
  Creds c = creds("app");
  ASSERT_FALSE(c.username.empty());
  EXPECT_EQ(c.lease_id.rfind("database/creds/app/", 0), 0u) << c.lease_id;
  EXPECT_EQ(c.lease_duration, 3600);
  EXPECT_TRUE(c.renewable);
  EXPECT_LE(c.username.size(), 63u);
  EXPECT_EQ(c.username.rfind("v-acme-app-", 0), 0u) << c.username;
  EXPECT_EQ(useCreds(c), "") << "the issued credentials log in and read the granted table";
  EXPECT_TRUE(roleExists(c.username));
  const long until = validUntilEpoch(c.username);
  EXPECT_GT(until, 0);

  // Each read makes another role.
  Creds other = creds("app");
  EXPECT_NE(other.username, c.username);
  EXPECT_EQ(useCreds(other), "");

  auto looked = call("POST", "sys/leases/lookup", "{\"lease_id\":\"" + c.lease_id + "\"}");
  ASSERT_EQ(looked.status, 200) << looked.body;
  EXPECT_EQ(looked.body.find(c.password), std::string::npos);

  auto gone = revoke(c.lease_id);
  ASSERT_EQ(gone.status, 204) << gone.body;
  EXPECT_FALSE(roleExists(c.username));
  EXPECT_NE(useCreds(c), "") << "revoked credentials no longer log in";
  EXPECT_EQ(revoke(c.lease_id).status, 404);
  EXPECT_EQ(call("POST", "sys/leases/lookup", "{\"lease_id\":\"" + c.lease_id + "\"}").status, 404);
  EXPECT_EQ(useCreds(other), "") << "the other lease is untouched";

  auto busy = call("DELETE", "database/config/main");
  EXPECT_EQ(busy.status, 409) << "a connection with leases stays: " << busy.body;
  EXPECT_NE(busy.body.find("1 leases"), std::string::npos) << busy.body;
  ASSERT_EQ(revoke(other.lease_id).status, 204);
  EXPECT_EQ(call("DELETE", "database/config/main").status, 204);
  EXPECT_EQ(call("GET", "database/config/main").status, 404);

  expectNoPasswordAnywhere();
  EXPECT_NE(audit_.find("secret.database.creds"), std::string::npos);
  EXPECT_NE(audit_.find("secret.lease.revoke"), std::string::npos);
  EXPECT_NE(audit_.find("secret.database.config.write"), std::string::npos);
}

TEST_F(SecretsDatabaseTest, RenewMovesValidUntilAndStopsAtMaxTtl) {
  initAndUnseal();
  configure();
  addRole("short", R"(,"default_ttl":60,"max_ttl":600)");
  Creds c = creds("short");
  ASSERT_EQ(c.lease_duration, 60);
  const long first = validUntilEpoch(c.username);

  auto r = renew(c.lease_id, "300");
  ASSERT_EQ(r.status, 200) << r.body;
  EXPECT_GT(json(r.body)->getValue<long>("lease_duration"), 60);
  EXPECT_LE(json(r.body)->getValue<long>("lease_duration"), 300);
  const long second = validUntilEpoch(c.username);
  EXPECT_GT(second, first) << "renew moved VALID UNTIL";

  auto capped = renew(c.lease_id, "\"10d\"");
  ASSERT_EQ(capped.status, 200) << capped.body;
  EXPECT_LE(json(capped.body)->getValue<long>("lease_duration"), 600);
  EXPECT_FALSE(json(capped.body)->getValue<bool>("renewable")) << "at max_ttl";
  const long third = validUntilEpoch(c.username);
  EXPECT_GE(third, second);
  EXPECT_LE(third, first - 60 + 600 + 1) << "never past issue time + max_ttl";
  EXPECT_EQ(useCreds(c), "");

  EXPECT_EQ(renew("database/creds/short/nosuchlease").status, 404);
  auto bad = call("POST", "sys/leases/renew", R"({"increment":5})");
  EXPECT_EQ(bad.status, 400);
  EXPECT_NE(bad.body.find("lease_id"), std::string::npos) << bad.body;
  EXPECT_EQ(bad.header("content-type"), "application/problem+json");
  EXPECT_EQ(renew(c.lease_id, "\"soon\"").status, 400);
  expectNoPasswordAnywhere();
}

TEST_F(SecretsDatabaseTest, RevokePrefixRevokesEveryLeaseUnderIt) {
  initAndUnseal();
  configure();
  addRole("a", "");
  addRole("ab", "");
  Creds a1 = creds("a"), a2 = creds("a"), ab = creds("ab");
  auto r = call("POST", "sys/leases/revoke-prefix/database/creds/a");
  ASSERT_EQ(r.status, 200) << r.body;
  EXPECT_EQ(json(r.body)->getObject("data")->getValue<int>("revoked"), 2);
  EXPECT_FALSE(roleExists(a1.username));
  EXPECT_FALSE(roleExists(a2.username));
  EXPECT_TRUE(roleExists(ab.username))
      << "a prefix is a path: database/creds/ab is not under database/creds/a";
  EXPECT_EQ(useCreds(ab), "");
  auto malformed = call("POST", "sys/leases/revoke-prefix/database/creds/a~b");
  EXPECT_EQ(malformed.status, 400) << malformed.body;
  EXPECT_NE(malformed.body.find("A-Z a-z 0-9 . _ - /"), std::string::npos) << malformed.body;
  auto all = call("POST", "sys/leases/revoke-prefix/database");
  ASSERT_EQ(all.status, 200) << all.body;
  EXPECT_EQ(json(all.body)->getObject("data")->getValue<int>("revoked"), 1);
  EXPECT_FALSE(roleExists(ab.username));
}

TEST_F(SecretsDatabaseTest, TheSweeperDropsExpiredRolesAcrossAKill) {
  initAndUnseal();
  configure();
  addRole("brief", R"(,"default_ttl":"2s","max_ttl":"2s")");
  Creds c = creds("brief");
  ASSERT_EQ(c.lease_duration, 2);
  EXPECT_EQ(useCreds(c), "");
  ASSERT_TRUE(eventually([&] { return !roleExists(c.username); }, std::chrono::seconds(60)))
      << "the sweeper did not drop the expired role\n"
      << server_->log();
  EXPECT_TRUE(eventually([&] {
    return request(server_->port(), "POST", "/secrets/v1/sys/leases/lookup",
                   {{"Authorization", "Bearer acme-key"}}, "{\"lease_id\":\"" + c.lease_id + "\"}")
               .status == 404;
  })) << "and removed its lease";
  auto late = renew(c.lease_id);
  EXPECT_TRUE(late.status == 404 || late.status == 400) << late.body;

  // A lease whose host dies: the durable sweep job fires after the restart (sealed: it
  // waits), and once unsealed it drops the role.
  Creds d = creds("brief");
  ASSERT_FALSE(d.username.empty());
  ASSERT_TRUE(roleExists(d.username));
  server_->kill();
  ASSERT_TRUE(server_->start()) << server_->log();
  unseal();
  EXPECT_TRUE(eventually([&] { return !roleExists(d.username); }, std::chrono::seconds(90)))
      << "the sweeper did not resume after kill -9\n"
      << server_->log();
}

// The database down when a lease expires: the lease stays (the sweeper cannot drop the role
// yet), renewing it is a clear 400, and once the database is back the sweeper's retry drops
// the role.
TEST_F(SecretsDatabaseTest, AnExpiredLeaseIsRefusedAndSweptOnceTheDatabaseIsBack) {
  initAndUnseal();
  configure();
  addRole("brief", R"(,"default_ttl":"2s","max_ttl":"2s")");
  Creds c = creds("brief");
  ASSERT_FALSE(c.username.empty());
  const uint16_t port = pg_.port();
  ASSERT_TRUE(pg_.stop());
  // Until the lease expires a renewal tries the database (503: it is down); after, it is
  // refused before that.
  HttpReply late;
  ASSERT_TRUE(eventually([&] {
    late = renew(c.lease_id);
    return late.status != 503;
  })) << late.body;
  EXPECT_EQ(late.status, 400) << late.body;
  EXPECT_EQ(late.header("content-type"), "application/problem+json");
  EXPECT_NE(late.body.find("the lease expired"), std::string::npos) << late.body;
  // The sweeper fires at expiry, cannot reach the database, and keeps the lease.
  ASSERT_TRUE(eventually([&] {
    return server_->log().find("lease sweeper could not revoke") != std::string::npos;
  })) << server_->log();
  auto lookup = [&] {
    return request(server_->port(), "POST", "/secrets/v1/sys/leases/lookup",
                   {{"Authorization", "Bearer acme-key"}}, "{\"lease_id\":\"" + c.lease_id + "\"}");
  };
  EXPECT_EQ(lookup().status, 200) << "the lease stays until its role is dropped";

  ASSERT_TRUE(pg_.start()) << pg_.error();
  ASSERT_EQ(pg_.port(), port) << "the database came back on another port; the grant names the old";
  EXPECT_TRUE(eventually([&] { return lookup().status == 404; }, std::chrono::seconds(90)))
      << server_->log();
  EXPECT_FALSE(roleExists(c.username));
}

TEST_F(SecretsDatabaseTest, Md5AndCleartextAdminsWork) {
  initAndUnseal();
  SqlResult stored = pg_.execSql(
      "SELECT rolname, left(rolpassword, 6) FROM pg_authid WHERE rolname IN "
      "('md5admin', 'vaultadmin') ORDER BY rolname");
  ASSERT_TRUE(stored && stored.rows.size() == 2) << stored.error;
  ASSERT_EQ(stored.rows[0][1].substr(0, 3), "md5") << "md5admin must use the md5 exchange";
  ASSERT_EQ(stored.rows[1][1], "SCRAM-") << "vaultadmin must use SCRAM";
  configure("md5db", "md5admin", kMd5Password);
  configure("cleardb", "clearadmin", kClearPassword);
  addRole("viamd5", "", "md5db");
  addRole("viaclear", "", "cleardb");
  Creds m = creds("viamd5");
  Creds p = creds("viaclear");
  EXPECT_EQ(useCreds(m), "");
  EXPECT_EQ(useCreds(p), "");
  EXPECT_EQ(revoke(m.lease_id).status, 204);
  EXPECT_EQ(revoke(p.lease_id).status, 204);
  EXPECT_FALSE(roleExists(m.username));
  expectNoPasswordAnywhere();
}

// A KEK rotation re-wraps the connection password too: once the older KEK is retired, the
// connection still opens and issues credentials.
TEST_F(SecretsDatabaseTest, KekRotationRewrapsTheConnectionPassword) {
  initAndUnseal();
  configure();
  addRole("app", "");
  ASSERT_EQ(call("POST", "keyring/rotate").status, 200);
  auto retired = [&] {
    auto ring = request(server_->port(), "GET", "/secrets/v1/keyring",
                        {{"Authorization", "Bearer acme-key"}});
    auto data = json(ring.body)->getObject("data");
    return !data->has("rewrap") && data->getArray("versions")->size() == 1;
  };
  ASSERT_TRUE(eventually(retired, std::chrono::seconds(60))) << server_->log();
  EXPECT_NE(server_->log().find("retired after re-wrapping 1 data keys"), std::string::npos)
      << "the connection password was the one data key";
  Creds c = creds("app");
  EXPECT_EQ(useCreds(c), "");
}

TEST_F(SecretsDatabaseTest, BadInputIsAClearProblemAndNothingIsHalfWritten) {
  initAndUnseal();
  // A wrong admin password: refused with the server's SQLSTATE, nothing stored.
  auto wrong = call("POST", "database/config/main",
                    "{\"connection_url\":\"" + url() +
                        "\",\"username\":\"vaultadmin\",\"password\":\"Wrong-Canary-0001\"}");
  EXPECT_EQ(wrong.status, 400) << wrong.body;
  EXPECT_EQ(wrong.header("content-type"), "application/problem+json");
  EXPECT_NE(wrong.body.find("28P01"), std::string::npos) << wrong.body;
  EXPECT_EQ(wrong.body.find("Wrong-Canary-0001"), std::string::npos);
  EXPECT_EQ(call("GET", "database/config/main").status, 404) << "nothing was saved";

  // globex's grant does not name the loopback database.
  auto refused = call("POST", "database/config/main",
                      "{\"connection_url\":\"" + url() +
                          "\",\"username\":\"vaultadmin\",\"password\":\"" + kAdminPassword + "\"}",
                      "globex-key");
  EXPECT_EQ(refused.status, 400) << refused.body;
  EXPECT_NE(refused.body.find("cannot reach the database"), std::string::npos) << refused.body;

  EXPECT_EQ(call("POST", "database/config/main",
                 R"({"connection_url":"postgres://h/db","username":"u","password":"p"})")
                .status,
            400);
  EXPECT_EQ(call("POST", "database/config/main", R"({"connection_url":"tcp://h:1/db"})").status,
            400);
  EXPECT_EQ(call("POST", "database/config/bad%20name", "{}").status, 400);
  EXPECT_EQ(call("POST", "database/config/main", "not json").status, 400);

  configure();
  // A new password is required only for a new connection; an update keeps the stored one.
  auto update = call("POST", "database/config/main",
                     "{\"connection_url\":\"" + url() + "\",\"username\":\"vaultadmin\"}");
  EXPECT_EQ(update.status, 200) << update.body;

  EXPECT_EQ(call("POST", "database/roles/r", R"({"db_name":"main"})").status, 400);
  auto unknown = call("POST", "database/roles/r",
                      R"({"db_name":"main","creation_statements":"CREATE ROLE {{who}}"})");
  EXPECT_EQ(unknown.status, 400);
  EXPECT_NE(unknown.body.find("{{who}}"), std::string::npos) << unknown.body;
  EXPECT_EQ(call("POST", "database/roles/r",
                 R"({"db_name":"main","creation_statements":"x","default_ttl":600,"max_ttl":60})")
                .status,
            400);
  EXPECT_EQ(call("GET", "database/creds/nosuchrole").status, 404);

  // Statements the server refuses: the SQLSTATE in the answer, no role and no lease left.
  auto broken = call("POST", "database/roles/broken",
                     R"({"db_name":"main","creation_statements":["CREATE ROLE \"{{name}}\" )"
                     R"(LOGIN PASSWORD '{{password}}';","GRANT SELECT ON no_such_table TO )"
                     R"(\"{{name}}\";"]})");
  ASSERT_EQ(broken.status, 204) << broken.body;
  auto failed = call("GET", "database/creds/broken");
  EXPECT_EQ(failed.status, 400) << failed.body;
  EXPECT_NE(failed.body.find("42P01"), std::string::npos) << failed.body;
  SqlResult roles =
      pg_.execSql("SELECT count(*) FROM pg_roles WHERE rolname LIKE 'v-acme-broken-%'");
  ASSERT_TRUE(roles) << roles.error;
  EXPECT_EQ(roles.rows[0][0], "0") << "the transaction rolled back";
  auto left = call("POST", "sys/leases/revoke-prefix/database/creds/broken");
  ASSERT_EQ(left.status, 200) << left.body;
  EXPECT_EQ(json(left.body)->getObject("data")->getValue<int>("revoked"), 0) << "no lease left";

  EXPECT_EQ(revoke("database/creds/app/none").status, 404);
  EXPECT_EQ(call("POST", "sys/leases/revoke", "{}").status, 400);
  expectNoPasswordAnywhere();
}

}  // namespace
}  // namespace trellis::test
