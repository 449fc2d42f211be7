// trellisd on PostgreSQL over verified TLS: a test PostgreSQL with ssl = on and a server
// certificate from support/test_certs.h, and storage URLs with sslmode=verify-full and
// sslrootcert. With the right root CA trellisd serves (and its sessions are encrypted); with
// another it refuses to start, saying why in one line and never showing a password.
#include <gmock/gmock.h>
#include <gtest/gtest.h>

#include <string>

#include "support/postgres_server.h"
#include "support/test_certs.h"
#include "support/test_support.h"

namespace trellis::test {
namespace {

using ::testing::HasSubstr;
using ::testing::Not;

constexpr const char* kAppPassword = "tls-app-pass-Q4";
constexpr const char* kOwnerPassword = "tls-owner-pass-K8";

class PostgresTlsTest : public ::testing::Test {
 protected:
  void SetUp() override {
    ca_ = makeCert(certs_.path(), "ca", {.cn = "PostgreSQL Test CA", .ca = true}, nullptr);
    rogue_ca_ = makeCert(certs_.path(), "rogue-ca", {.cn = "Rogue CA", .ca = true}, nullptr);
    Identity leaf = makeCert(certs_.path(), "pg",
                             {.cn = "localhost", .sans = "DNS:localhost,IP:127.0.0.1"}, &ca_);
    pg_.enableSsl(leaf.cert_file, leaf.key_file);
    ASSERT_TRUE(pg_.start()) << pg_.error();
    SqlResult roles =
        pg_.execSql(std::string("CREATE ROLE trellis_owner LOGIN PASSWORD '") + kOwnerPassword +
                    "'; CREATE ROLE trellis_app LOGIN NOSUPERUSER NOBYPASSRLS "
                    "PASSWORD '" +
                    kAppPassword + "'");
    ASSERT_TRUE(roles) << roles.error;
    ASSERT_TRUE(pg_.createDatabase("trellis", "trellis_owner"));
  }

  // defaultTestConfig() on this PostgreSQL, verifying its certificate against `root`.
  std::string config(const Identity& root) const {
    auto url = [&](const std::string& user, const std::string& password) {
      return "\"postgresql://" + user + ":" + password +
             "@127.0.0.1:" + std::to_string(pg_.port()) +
             "/trellis?sslmode=verify-full&sslrootcert=" + root.cert_file.string() + "\"";
    };
    std::string text = defaultTestConfig();
    const std::string anchor = "  data_dir: @DATA@\n";
    text.insert(text.find(anchor) + anchor.size(),
                "  url: " + url("trellis_app", kAppPassword) + "\n  owner_url: " +
                    url("trellis_owner", kOwnerPassword) + "\n  pool_size: 2\n");
    return text;
  }

  TempDir certs_;
  Identity ca_, rogue_ca_;
  PostgresServer pg_;
};

TEST_F(PostgresTlsTest, ServesOverVerifyFullWithTheServersRootCa) {
  TrellisdProcess server(config(ca_));
  ASSERT_TRUE(server.start()) << server.log();
  HttpReply r = request(server.port(), "GET", "/hello/ann", {{"Authorization", "Bearer acme-key"}});
  EXPECT_EQ(r.status, 200) << r.body;
  EXPECT_THAT(server.log(), HasSubstr("sslmode=verify-full"));
  EXPECT_THAT(server.log(), Not(HasSubstr(kAppPassword)));

  // Every session trellisd holds is encrypted.
  SqlResult sessions = pg_.execSql(
      "SELECT count(*) FILTER (WHERE s.ssl), count(*) FROM pg_stat_ssl s "
      "JOIN pg_stat_activity a USING (pid) WHERE a.usename = 'trellis_app'");
  ASSERT_TRUE(sessions) << sessions.error;
  ASSERT_EQ(sessions.rows.size(), 1u);
  EXPECT_NE(sessions.rows[0][1], "0");
  EXPECT_EQ(sessions.rows[0][0], sessions.rows[0][1]);
}

TEST_F(PostgresTlsTest, RefusesToStartWhenTheRootCaIsAnother) {
  TrellisdProcess server(config(rogue_ca_));
  EXPECT_FALSE(server.start());
  EXPECT_FALSE(server.running());
  const std::string log = server.log();
  EXPECT_THAT(log, HasSubstr("cannot start: "));
  // The first connection is the owner's (schema migration): the line names the server,
  // the sslmode and what libpq refused.
  EXPECT_THAT(
      log, HasSubstr("@127.0.0.1:" + std::to_string(pg_.port()) + "/trellis?sslmode=verify-full"));
  EXPECT_THAT(log, HasSubstr("SSL error: certificate verify failed"));
  EXPECT_THAT(log, Not(HasSubstr(kAppPassword)));
  EXPECT_THAT(log, Not(HasSubstr(kOwnerPassword)));
}

}  // namespace
}  // namespace trellis::test
