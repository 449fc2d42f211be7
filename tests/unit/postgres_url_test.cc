// storage.url parsing: what libpq receives, what logs and errors show, and what is refused.
#include <gmock/gmock.h>
#include <gtest/gtest.h>
#include <libpq-fe.h>

#include <map>
#include <memory>
#include <string>

#include "trellis/tenants/postgres.h"

namespace trellis::tenants {
namespace {

using ::testing::HasSubstr;
using ::testing::Not;

// The keywords libpq itself reads from `conninfo`.
std::map<std::string, std::string> libpqView(const std::string& conninfo) {
  char* err = nullptr;
  std::unique_ptr<PQconninfoOption, decltype(&PQconninfoFree)> opts(
      PQconninfoParse(conninfo.c_str(), &err), &PQconninfoFree);
  if (err != nullptr) {
    std::string message = err;
    PQfreemem(err);
    return {{"error", message}};
  }
  std::map<std::string, std::string> out;
  for (auto* o = opts.get(); o != nullptr && o->keyword != nullptr; ++o) {
    if (o->val != nullptr) out[o->keyword] = o->val;
  }
  return out;
}

TEST(PostgresUrlTest, LibpqGetsExactlyTheDecodedValuesHoweverOddTheirCharacters) {
  // Password: quote, backslash, space, '@', ':', '/' and a non-ASCII byte, percent-encoded.
  auto url = parsePostgresUrl(
      "postgresql://app%20user:p%27w%5C%20d%40%3A%2F%C3%A9@db.example.com:6543/my%20db"
      "?sslmode=verify-full&sslrootcert=/etc/ca%20file.pem&application_name=host-1");
  ASSERT_TRUE(url) << url.status().toString();
  EXPECT_EQ(url->user, "app user");
  EXPECT_EQ(url->password, "p'w\\ d@:/\xc3\xa9");
  EXPECT_EQ(url->database, "my db");
  auto seen = libpqView(url->conninfo());
  ASSERT_EQ(seen.count("error"), 0u) << seen["error"];
  EXPECT_EQ(seen["user"], "app user");
  EXPECT_EQ(seen["password"], "p'w\\ d@:/\xc3\xa9");
  EXPECT_EQ(seen["host"], "db.example.com");
  EXPECT_EQ(seen["port"], "6543");
  EXPECT_EQ(seen["dbname"], "my db");
  EXPECT_EQ(seen["sslmode"], "verify-full");
  EXPECT_EQ(seen["sslrootcert"], "/etc/ca file.pem");
  EXPECT_EQ(seen["application_name"], "host-1");
  EXPECT_EQ(seen["connect_timeout"], "5");
  EXPECT_EQ(seen["options"], "-c search_path=trellis -c idle_in_transaction_session_timeout=60000");
  EXPECT_EQ(seen["tcp_user_timeout"], "15000");
  EXPECT_EQ(seen["keepalives"], "1");
  EXPECT_EQ(seen["ssl_min_protocol_version"], "TLSv1.2");  // the kernel's TLS floor
}

TEST(PostgresUrlTest, TheTlsFloorIsTls12AndCanOnlyBeRaised) {
  auto raised =
      parsePostgresUrl("postgresql://u@h/d?sslmode=verify-full&ssl_min_protocol_version=TLSv1.3");
  ASSERT_TRUE(raised) << raised.status().toString();
  EXPECT_EQ(libpqView(raised->conninfo())["ssl_min_protocol_version"], "TLSv1.3");
  for (const char* old : {"TLSv1", "TLSv1.1", "SSLv3", ""}) {
    auto r = parsePostgresUrl(std::string("postgresql://u@h/d?ssl_min_protocol_version=") + old);
    ASSERT_FALSE(r) << old;
    EXPECT_EQ(r.status().code(), StatusCode::kInvalid);
    EXPECT_THAT(r.status().message(),
                HasSubstr("ssl_min_protocol_version must be TLSv1.2 or TLSv1.3"));
  }
}

TEST(PostgresUrlTest, RedactedFormAndEndpointNeverHoldThePassword) {
  auto url = parsePostgresUrl("postgres://app:Sekr1t@[fd00::5]:5433/trellis?connect_timeout=2");
  ASSERT_TRUE(url) << url.status().toString();
  EXPECT_EQ(url->endpoint(), "[fd00::5]:5433");
  EXPECT_EQ(url->redacted(), "postgresql://app:***@[fd00::5]:5433/trellis?connect_timeout=2");
  EXPECT_EQ(libpqView(url->conninfo())["connect_timeout"], "2");
  auto no_password = parsePostgresUrl("postgresql://app@localhost/trellis");
  ASSERT_TRUE(no_password);
  EXPECT_EQ(no_password->port, 5432);
  EXPECT_EQ(no_password->redacted(), "postgresql://app@localhost:5432/trellis");
  EXPECT_EQ(libpqView(no_password->conninfo()).count("password"), 0u);  // .pgpass applies
}

TEST(PostgresUrlTest, ScrubbedRemovesTheSecretAndFoldsLines) {
  EXPECT_EQ(scrubbed("password \"abc\" rejected\n\tretry abc", "abc"),
            "password \"***\" rejected retry ***");
  EXPECT_EQ(scrubbed("line one\nline two\n", ""), "line one line two");
}

TEST(PostgresUrlTest, RefusalsNameTheProblemWithoutEchoingThePassword) {
  for (const std::string& bad :
       {std::string("postgresql://u:pw-XYZ@h/d?password=pw-XYZ"),
        std::string("postgresql://u:pw-XYZ@h/d?options=-c%20row_security%3Doff"),
        std::string("postgresql://u:pw-XYZ@h:-1/d"), std::string("postgresql://u:pw-XYZ@h/d#x"),
        std::string("postgresql://u:pw-XYZ%00@h/d"), std::string("http://u:pw-XYZ@h/d"),
        std::string("postgresql://u:pw-XYZ@h/a/b")}) {
    auto r = parsePostgresUrl(bad);
    ASSERT_FALSE(r) << bad;
    EXPECT_EQ(r.status().code(), StatusCode::kInvalid);
    EXPECT_THAT(r.status().message(), Not(HasSubstr("pw-XYZ"))) << bad;
  }
}

}  // namespace
}  // namespace trellis::tenants
