// Signed-token tenants on a real trellisd: an issuer configured with a jwks_file (keys made
// by the test), tokens signed by the test. A valid token reaches the tenant its claim names
// with its subject as the principal (fixture/svc-b's whoami reports it, through svc-a); a
// token for a missing or suspended tenant, an expired one, one for another audience and an
// alg-none one get the same 401 as a bad key, and the log (never the client) says why.
#include <gmock/gmock.h>
#include <gtest/gtest.h>

#include <chrono>
#include <string>

#include "support/test_jwt.h"
#include "support/test_support.h"

namespace trellis::test {
namespace {

using ::testing::HasSubstr;
using ::testing::MatchesRegex;
using ::testing::Not;

int64_t now() {
  return std::chrono::duration_cast<std::chrono::seconds>(
             std::chrono::system_clock::now().time_since_epoch())
      .count();
}

std::string claims(const std::string& tenant, const std::string& sub = "alice",
                   int64_t exp_in = 600, const std::string& aud = "trellis") {
  return R"({"iss":"https://idp.test/","aud":")" + aud + R"(","sub":")" + sub + R"(","tenant":")" +
         tenant + R"(","iat":)" + std::to_string(now()) + R"(,"exp":)" +
         std::to_string(now() + exp_in) + "}";
}

std::map<std::string, std::string> bearer(const std::string& credential) {
  return {{"Authorization", "Bearer " + credential}};
}

class JwtTenantsTest : public ::testing::Test {
 protected:
  static void SetUpTestSuite() {
    ed_ = new TestKey(TestKey::make("EdDSA", "ed-1"));
    ec_ = new TestKey(TestKey::make("ES256", "ec-1"));
  }
  static void TearDownTestSuite() {
    delete ed_;
    delete ec_;
  }

  void SetUp() override {
    const std::string plugins = "    - id: fixture/svc-a\n    - id: fixture/svc-b\n";
    const std::string extra =
        "  - id: initech\n"
        "    plugins: [fixture/svc-a, fixture/svc-b]\n"
        "auth:\n"
        "  jwt:\n"
        "    issuers:\n"
        "      - issuer: https://idp.test/\n"
        "        audience: trellis\n"
        "        jwks_file: @DIR@/jwks.json\n"
        "        jwks_min_refetch_seconds: 1\n";
    server_ = std::make_unique<TrellisdProcess>(defaultTestConfig(plugins, extra));
    writeFile(server_->dir() / "jwks.json", "{\"keys\":[" + ed_->jwk() + "," + ec_->jwk() + "]}");
    ASSERT_TRUE(server_->start()) << server_->log();
  }

  HttpReply call(const std::string& method, const std::map<std::string, std::string>& headers) {
    return request(server_->port(), "POST", "/svc-a/call/svc-b/" + method, headers, "");
  }

  void expectRefused(const std::string& token, const std::string& logged) {
    auto reply = call("whoami", bearer(token));
    EXPECT_EQ(reply.status, 401) << reply.body;
    EXPECT_EQ(reply.header("content-type"), "application/problem+json");
    EXPECT_EQ(reply.header("www-authenticate"),
              "Bearer realm=\"trellis\", error=\"invalid_token\"");
    // The client is not told which check failed.
    EXPECT_THAT(reply.body, Not(HasSubstr(logged)));
    EXPECT_THAT(reply.body, Not(HasSubstr("alice")));
    EXPECT_THAT(server_->log(), HasSubstr(logged));
  }

  static TestKey* ed_;
  static TestKey* ec_;
  std::unique_ptr<TrellisdProcess> server_;
};
TestKey* JwtTenantsTest::ed_ = nullptr;
TestKey* JwtTenantsTest::ec_ = nullptr;

TEST_F(JwtTenantsTest, AValidTokenReachesItsTenantAsItsSubject) {
  auto who = call("whoami", bearer(ed_->token(claims("acme"))));
  ASSERT_EQ(who.status, 200) << who.body << server_->log();
  // caller plugin, tenant, traceparent, principal
  EXPECT_THAT(who.body, MatchesRegex("fixture/svc-a acme 00-[0-9a-f]{32}-[0-9a-f]{16}-0[01] "
                                     "jwt:alice"));
  auto bo = call("whoami", bearer(ec_->token(claims("globex", "bo@globex.test"))));
  ASSERT_EQ(bo.status, 200) << bo.body;
  EXPECT_THAT(bo.body, HasSubstr(" globex "));
  EXPECT_THAT(bo.body, HasSubstr("jwt:bo@globex.test"));
  // API keys keep working beside tokens.
  auto key = call("whoami", {{"Authorization", "Bearer acme-key"}});
  ASSERT_EQ(key.status, 200);
  EXPECT_THAT(key.body, MatchesRegex(".* cfg[0-9a-f]+"));
}

TEST_F(JwtTenantsTest, ATokenSeesOnlyItsTenantsData) {
  const std::string acme = ed_->token(claims("acme"));
  EXPECT_EQ(call("count", bearer(acme)).body, "1");
  EXPECT_EQ(call("count", bearer(acme)).body, "2");
  // The same tenant's data whichever credential.
  EXPECT_EQ(call("count", {{"Authorization", "Bearer acme-key"}}).body, "3");
  // globex starts from nothing, by token or by key.
  EXPECT_EQ(call("count", bearer(ec_->token(claims("globex")))).body, "1");
  EXPECT_EQ(call("count", {{"Authorization", "Bearer globex-key"}}).body, "2");
  EXPECT_EQ(call("count", bearer(acme)).body, "4");
}

TEST_F(JwtTenantsTest, TokensForMissingOrSuspendedTenantsAreRefused) {
  expectRefused(ed_->token(claims("umbrella")), "names tenant \"umbrella\", which does not exist");
  // initech is active: a token for it works, until it is suspended.
  const std::string initech = ed_->token(claims("initech"));
  ASSERT_EQ(call("whoami", bearer(initech)).status, 200);
  auto suspend = request(server_->adminPort(), "POST", "/v1/tenants/initech/suspend",
                         {{"Authorization", "Bearer " + server_->adminToken()}});
  ASSERT_LT(suspend.status, 300) << suspend.body;
  expectRefused(initech, "names tenant initech, which is suspended");
}

TEST_F(JwtTenantsTest, BadTokensGetTheSameAnswerAsABadKey) {
  expectRefused(ed_->token(claims("acme", "alice", -3600)), "token expired");
  expectRefused(ed_->token(claims("acme", "alice", 600, "billing")), "aud does not hold");
  TestKey stranger = TestKey::make("EdDSA", "ed-9");
  expectRefused(stranger.token(claims("acme")), "unknown kid \"ed-9\"");
  TestKey impostor = TestKey::make("EdDSA", "ed-1");
  expectRefused(impostor.token(claims("acme")), "signature does not verify");
  const std::string none = base64UrlEncode(R"({"alg":"none"})") + "." +
                           base64UrlEncode(claims("acme")) + "." + base64UrlEncode("sig");
  expectRefused(none, "alg none");
  // Nothing of the tokens reaches the log.
  const std::string sent = ed_->token(claims("acme", "alice", -3600));
  EXPECT_THAT(server_->log(), Not(HasSubstr(sent.substr(sent.rfind('.') + 1, 20))));
  EXPECT_THAT(server_->log(), Not(HasSubstr(sent.substr(0, 30))));
}

// Each refusal is counted by reason in trellis_jwt_refusals_total; a flood of forged tokens
// costs a bounded number of log lines, and the next line written says how many were left out.
TEST_F(JwtTenantsTest, RefusedTokensAreCountedByReasonAndTheirLogLinesBounded) {
  TestKey impostor = TestKey::make("EdDSA", "ed-1");
  for (int i = 0; i < 60; ++i) {
    ASSERT_EQ(
        call("whoami", bearer(impostor.token(claims("acme", "forger" + std::to_string(i))))).status,
        401);
  }
  ASSERT_EQ(call("whoami", bearer(ed_->token(claims("acme", "alice", -3600)))).status, 401);
  ASSERT_EQ(call("whoami", bearer(ed_->token(claims("umbrella")))).status, 401);
  const std::string stranger = R"({"iss":"https://evil.test/","exp":1})";
  ASSERT_EQ(call("whoami", bearer(ed_->token(stranger))).status, 401);
  ASSERT_EQ(call("whoami", bearer("a.b.c")).status, 401);
  ASSERT_EQ(call("whoami", bearer(ed_->token(claims("acme")))).status, 200);

  const std::string metrics = request(server_->adminPort(), "GET", "/metrics",
                                      {{"Authorization", "Bearer " + server_->adminToken()}})
                                  .body;
  for (const char* line : {"trellis_jwt_refusals_total{reason=\"signature\"} 60",
                           "trellis_jwt_refusals_total{reason=\"claims\"} 1",
                           "trellis_jwt_refusals_total{reason=\"tenant\"} 1",
                           "trellis_jwt_refusals_total{reason=\"issuer\"} 1",
                           "trellis_jwt_refusals_total{reason=\"malformed\"} 1",
                           "trellis_jwt_refusals_total{reason=\"unknown_kid\"} 0"}) {
    EXPECT_THAT(metrics, HasSubstr(line));
  }
  // 64 refusals, at most 20 lines in a 10-second window.
  const std::string log = server_->log();
  size_t lines = 0;
  for (size_t at = log.find("bearer token from"); at != std::string::npos;
       at = log.find("bearer token from", at + 1)) {
    ++lines;
  }
  EXPECT_GE(lines, 1u);
  EXPECT_LE(lines, 40u) << "two windows at most in this test";
}

TEST_F(JwtTenantsTest, ARotatedKeyFileIsPickedUpOnItsFirstToken) {
  TestKey next = TestKey::make("RS256", "rsa-2");
  const std::string token = next.token(claims("acme", "carol"));
  EXPECT_EQ(call("whoami", bearer(token)).status, 401);
  // The operator publishes the new key; the next unknown-kid token re-reads the file (at most
  // once a second).
  writeFile(server_->dir() / "jwks.json", "{\"keys\":[" + ed_->jwk() + "," + next.jwk() + "]}");
  HttpReply reply;
  for (int i = 0; i < 60; ++i) {
    reply = call("whoami", bearer(token));
    if (reply.status == 200) break;
    std::this_thread::sleep_for(std::chrono::milliseconds(100));
  }
  ASSERT_EQ(reply.status, 200) << server_->log();
  EXPECT_THAT(reply.body, HasSubstr("jwt:carol"));
  // The key dropped from the file is gone too.
  EXPECT_EQ(call("whoami", bearer(ec_->token(claims("acme")))).status, 401);
}

}  // namespace
}  // namespace trellis::test
