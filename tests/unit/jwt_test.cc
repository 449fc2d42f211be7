// Signed-token verification (kernel/src/auth): keys generated and tokens signed here with
// OpenSSL, for each accepted alg and for the ways a token or a key set can be wrong.
#include "auth/jwt.h"

#include <gmock/gmock.h>
#include <gtest/gtest.h>
#include <openssl/core_names.h>
#include <openssl/ecdsa.h>
#include <openssl/evp.h>
#include <openssl/pem.h>

#include <atomic>
#include <chrono>
#include <memory>
#include <string>
#include <thread>

#include "auth/jwks.h"
#include "auth/token_verifier.h"
#include "support/loopback_server.h"
#include "support/test_jwt.h"
#include "support/test_support.h"

namespace trellis::kernel::auth {
namespace {

using ::testing::HasSubstr;
using ::testing::Not;

constexpr int64_t kNow = 1'800'000'000;

using test::bnBytes;
using test::PkeyPtr;
using test::TestKey;

std::string defaultClaims(int64_t now = kNow) {
  return R"({"iss":"https://idp.test/","aud":"trellis","sub":"alice","tenant":"acme","iat":)" +
         std::to_string(now - 10) + R"(,"exp":)" + std::to_string(now + 600) + "}";
}

std::string header(const std::string& alg, const std::string& kid) {
  return "{\"alg\":\"" + alg + "\",\"typ\":\"JWT\"" +
         (kid.empty() ? "" : ",\"kid\":\"" + kid + "\"") + "}";
}

std::string tokenWith(const TestKey& key, const std::string& header_json,
                      const std::string& claims) {
  std::string input = base64UrlEncode(header_json) + "." + base64UrlEncode(claims);
  return input + "." + base64UrlEncode(key.sign(input));
}

std::string token(const TestKey& key, const std::string& claims = defaultClaims()) {
  return tokenWith(key, header(key.alg, key.kid), claims);
}

class JwtTest : public ::testing::Test {
 protected:
  static void SetUpTestSuite() {
    rsa_ = new TestKey(TestKey::make("RS256", "rsa-1"));
    ec_ = new TestKey(TestKey::make("ES256", "ec-1"));
    ed_ = new TestKey(TestKey::make("EdDSA", "ed-1"));
  }
  static void TearDownTestSuite() {
    delete rsa_;
    delete ec_;
    delete ed_;
  }
  static std::string jwksText() {
    return "{\"keys\":[" + rsa_->jwk() + "," + ec_->jwk() + "," + ed_->jwk() + "]}";
  }
  static JwkSet jwks() {
    auto set = parseJwks(jwksText());
    EXPECT_TRUE(set) << set.status().message();
    return std::move(*set);
  }
  // The refusal reason, or "" if the token verified.
  static std::string refusal(const std::string& tok, const JwkSet& keys, int64_t now = kNow,
                             ClaimRules rules = rulesFor()) {
    auto decoded = decodeJwt(tok);
    if (!decoded) return decoded.status().message();
    auto v = verifyJwt(*decoded, keys, rules, now);
    if (v) return "";
    EXPECT_THAT(v.status().message(), Not(HasSubstr(tok.substr(tok.rfind('.') + 1, 16))));
    return v.status().message();
  }
  static ClaimRules rulesFor() { return {.issuer = "https://idp.test/", .audience = "trellis"}; }

  static TestKey* rsa_;
  static TestKey* ec_;
  static TestKey* ed_;
};
TestKey* JwtTest::rsa_ = nullptr;
TestKey* JwtTest::ec_ = nullptr;
TestKey* JwtTest::ed_ = nullptr;

TEST_F(JwtTest, ValidTokensOfEachAlgorithmVerify) {
  const JwkSet keys = jwks();
  for (const TestKey* k : {rsa_, ec_, ed_}) {
    const std::string tok = token(*k);
    auto decoded = decodeJwt(tok);
    ASSERT_TRUE(decoded) << decoded.status().message();
    auto v = verifyJwt(*decoded, keys, rulesFor(), kNow);
    ASSERT_TRUE(v) << k->alg << ": " << v.status().message();
    EXPECT_EQ(v->tenant, "acme");
    EXPECT_EQ(v->principal, "alice");
    EXPECT_EQ(v->issuer, "https://idp.test/");
    EXPECT_EQ(v->expires_at, kNow + 600);
  }
}

TEST_F(JwtTest, ClaimNamesAreConfigurable) {
  ClaimRules rules = rulesFor();
  rules.tenant_claim = "org";
  rules.principal_claim = "email";
  auto tok = token(*ed_, R"({"iss":"https://idp.test/","aud":"trellis","sub":"x","org":"globex",)"
                         R"("email":"bo@globex.test","exp":)" +
                             std::to_string(kNow + 60) + "}");
  auto v = verifyJwt(*decodeJwt(tok), jwks(), rules, kNow);
  ASSERT_TRUE(v) << v.status().message();
  EXPECT_EQ(v->tenant, "globex");
  EXPECT_EQ(v->principal, "bo@globex.test");
  EXPECT_THAT(refusal(token(*ed_), jwks(), kNow, rules), HasSubstr("\"org\" (the tenant)"));
}

TEST_F(JwtTest, ExpiryIsCheckedWithBoundedSkew) {
  const JwkSet keys = jwks();
  const std::string tok = token(*rsa_);                // exp = kNow + 600
  EXPECT_EQ(refusal(tok, keys, kNow + 600 + 59), "");  // inside the 60 s skew
  EXPECT_THAT(refusal(tok, keys, kNow + 600 + 60), HasSubstr("expired"));
  EXPECT_THAT(refusal(tok, keys, kNow + 10'000), HasSubstr("expired"));
  ClaimRules strict = rulesFor();
  strict.clock_skew = std::chrono::seconds(0);
  EXPECT_THAT(refusal(tok, keys, kNow + 600, strict), HasSubstr("expired"));
  EXPECT_EQ(refusal(tok, keys, kNow + 599, strict), "");
}

TEST_F(JwtTest, NotYetValidTokensAreRefusedOutsideTheSkew) {
  const JwkSet keys = jwks();
  const std::string claims = R"({"iss":"https://idp.test/","aud":"trellis","sub":"alice",)"
                             R"("tenant":"acme","nbf":)" +
                             std::to_string(kNow + 100) + R"(,"exp":)" +
                             std::to_string(kNow + 1000) + "}";
  const std::string tok = token(*ec_, claims);
  EXPECT_THAT(refusal(tok, keys, kNow), HasSubstr("not valid before"));
  EXPECT_EQ(refusal(tok, keys, kNow + 40), "");  // 60 s from nbf: inside the skew
  // Issued in the future is just as suspicious.
  const std::string future = R"({"iss":"https://idp.test/","aud":"trellis","sub":"alice",)"
                             R"("tenant":"acme","iat":)" +
                             std::to_string(kNow + 3600) + R"(,"exp":)" +
                             std::to_string(kNow + 7200) + "}";
  EXPECT_THAT(refusal(token(*ec_, future), keys), HasSubstr("issued in the future"));
}

TEST_F(JwtTest, TokensWithoutExpiryOrWithBadTimesAreRefused) {
  const JwkSet keys = jwks();
  EXPECT_THAT(refusal(token(*ed_, R"({"iss":"https://idp.test/","aud":"trellis","sub":"a",)"
                                  R"("tenant":"acme"})"),
                      keys),
              HasSubstr("no exp"));
  EXPECT_THAT(refusal(token(*ed_, R"({"iss":"https://idp.test/","aud":"trellis","sub":"a",)"
                                  R"("tenant":"acme","exp":"tomorrow"})"),
                      keys),
              HasSubstr("exp is not a number"));
}

TEST_F(JwtTest, AudienceMustHoldTheConfiguredOne) {
  const JwkSet keys = jwks();
  auto with_aud = [](const std::string& aud) {
    return R"({"iss":"https://idp.test/","aud":)" + aud +
           R"(,"sub":"alice","tenant":"acme","exp":)" + std::to_string(kNow + 60) + "}";
  };
  EXPECT_THAT(refusal(token(*rsa_, with_aud("\"billing\"")), keys), HasSubstr("aud"));
  EXPECT_THAT(refusal(token(*rsa_, with_aud("[\"billing\",\"crm\"]")), keys), HasSubstr("aud"));
  EXPECT_THAT(refusal(token(*rsa_, with_aud("null")), keys), HasSubstr("aud"));
  EXPECT_EQ(refusal(token(*rsa_, with_aud("[\"billing\",\"trellis\"]")), keys), "");
}

TEST_F(JwtTest, IssuerMustMatchExactly) {
  auto claims = defaultClaims();
  claims.replace(claims.find("https://idp.test/"), 17, "https://idp.test");
  EXPECT_THAT(refusal(token(*ed_, claims), jwks()), HasSubstr("iss \"https://idp.test\""));
}

TEST_F(JwtTest, UnknownKidIsRefused) {
  TestKey stranger = TestKey::make("RS256", "rotated-away");
  auto decoded = decodeJwt(token(stranger));
  ASSERT_TRUE(decoded);
  JwtRefusal why;
  auto v = verifyJwt(*decoded, jwks(), rulesFor(), kNow, &why);
  ASSERT_FALSE(v);
  EXPECT_EQ(why.failure, JwtFailure::kUnknownKid);
  EXPECT_THAT(v.status().message(), HasSubstr("unknown kid \"rotated-away\""));
}

TEST_F(JwtTest, KeyByKidThatSignedNothingDoesNotVerify) {
  // Signed by a stranger but naming a kid the set holds.
  TestKey stranger = TestKey::make("RS256", "rsa-1");
  EXPECT_THAT(refusal(token(stranger), jwks()), HasSubstr("signature does not verify"));
}

TEST_F(JwtTest, WithoutKidExactlyOneKeyMustFit) {
  auto no_kid = [](const TestKey& k) { return tokenWith(k, header(k.alg, ""), defaultClaims()); };
  // One key of each type: the alg picks it.
  EXPECT_EQ(refusal(no_kid(*ec_), jwks()), "");
  // Two Ed25519 keys: ambiguous.
  TestKey other = TestKey::make("EdDSA", "ed-2");
  auto two = parseJwks("{\"keys\":[" + ed_->jwk() + "," + other.jwk() + "]}");
  ASSERT_TRUE(two);
  EXPECT_THAT(refusal(no_kid(*ed_), *two), HasSubstr("no kid and 2"));
  EXPECT_THAT(refusal(no_kid(*rsa_), *two), HasSubstr("no kid and 0"));
}

TEST_F(JwtTest, AlgNoneIsRefused) {
  for (const char* alg : {"none", "None", ""}) {
    const std::string tok = base64UrlEncode(header(alg, "rsa-1")) + "." +
                            base64UrlEncode(defaultClaims()) + "." + base64UrlEncode("x");
    const std::string why = refusal(tok, jwks());
    EXPECT_NE(why, "") << alg;
    EXPECT_THAT(why, ::testing::AnyOf(HasSubstr("alg none"), HasSubstr("not accepted")));
  }
  // And with no signature at all.
  const std::string bare =
      base64UrlEncode(header("none", "")) + "." + base64UrlEncode(defaultClaims()) + ".";
  EXPECT_NE(refusal(bare, jwks()), "");
}

TEST_F(JwtTest, Hs256WithThePublicKeyAsSecretIsRefused) {
  // The classic confusion: HMAC keyed with the bytes of the issuer's public key (PEM and raw).
  for (const std::string& secret :
       {rsa_->publicPem(), bnBytes(rsa_->key.get(), OSSL_PKEY_PARAM_RSA_N)}) {
    for (const char* alg : {"HS256", "HS384", "HS512"}) {
      const std::string input =
          base64UrlEncode(header(alg, "rsa-1")) + "." + base64UrlEncode(defaultClaims());
      unsigned char mac[64];
      size_t len = 0;
      ASSERT_NE(EVP_Q_mac(nullptr, "HMAC", nullptr, "SHA256", nullptr, secret.data(), secret.size(),
                          reinterpret_cast<const unsigned char*>(input.data()), input.size(), mac,
                          sizeof mac, &len),
                nullptr);
      const std::string tok =
          input + "." + base64UrlEncode(std::string(reinterpret_cast<char*>(mac), len));
      EXPECT_THAT(refusal(tok, jwks()), HasSubstr("issuers sign with public keys only")) << alg;
    }
  }
}

TEST_F(JwtTest, AlgMustMatchTheKeyType) {
  // An ES256 token naming the RSA key's kid, and an RS256 one naming the Ed25519 key.
  EXPECT_THAT(refusal(tokenWith(*ec_, header("ES256", "rsa-1"), defaultClaims()), jwks()),
              HasSubstr("does not match key \"rsa-1\" (RSA)"));
  EXPECT_THAT(refusal(tokenWith(*rsa_, header("RS256", "ed-1"), defaultClaims()), jwks()),
              HasSubstr("does not match key \"ed-1\" (OKP Ed25519)"));
  // A key whose JWK pins an alg accepts only that one.
  EXPECT_THAT(refusal(tokenWith(*rsa_, header("PS256", "rsa-1"), defaultClaims()), jwks()),
              HasSubstr("not accepted"));
}

TEST_F(JwtTest, TamperedTokensAreRefused) {
  const JwkSet keys = jwks();
  for (const TestKey* k : {rsa_, ec_, ed_}) {
    const std::string tok = token(*k);
    const size_t dot1 = tok.find('.');
    const size_t dot2 = tok.find('.', dot1 + 1);
    auto claims = defaultClaims();
    claims.replace(claims.find("acme"), 4, "glob");
    std::string forged =
        tok.substr(0, dot1 + 1) + base64UrlEncode(claims) + tok.substr(dot2);  // old signature
    EXPECT_THAT(refusal(forged, keys), HasSubstr("signature does not verify")) << k->alg;
    std::string flipped = tok;
    flipped[dot2 + 5] = flipped[dot2 + 5] == 'A' ? 'B' : 'A';
    EXPECT_NE(refusal(flipped, keys), "") << k->alg;
  }
  // A truncated ES256 signature is not 64 bytes.
  std::string tok = token(*ec_);
  EXPECT_NE(refusal(tok.substr(0, tok.size() - 8), keys), "");
}

TEST_F(JwtTest, MalformedTokensAreRefusedByStructure) {
  const std::string good = token(*ed_);
  const size_t dot1 = good.find('.');
  const std::string h = base64UrlEncode(header("EdDSA", "ed-1"));
  const std::string p = base64UrlEncode(defaultClaims());
  struct Case {
    std::string token;
    std::string reason;
  };
  const std::vector<Case> cases = {
      {"abc.def", "three dot-separated segments"},
      {good + ".xyz", "three dot-separated segments"},
      {good.substr(0, dot1) + "=." + good.substr(dot1 + 1), "base64url"},
      {h + "." + p + ".ab+c", "base64url"},
      {h + "." + p + ".ab/c", "base64url"},
      {h + "." + p + ".a", "base64url"},     // a length no base64 string has
      {h + ".!!!!." + "abcd", "base64url"},  // bad characters
      {h + "." + p + ".", "no signature"},
      {base64UrlEncode("{\"alg\":") + "." + p + ".abcd", "header is not valid JSON"},
      {base64UrlEncode("[1,2]") + "." + p + ".abcd", "header is not a JSON object"},
      {h + "." + base64UrlEncode("\"acme\"") + ".abcd", "payload is not"},
      {h + "." + base64UrlEncode("[\"acme\"]") + ".abcd", "payload is not a JSON object"},
      {h + "." + base64UrlEncode("not json") + ".abcd", "payload is not valid JSON"},
      {base64UrlEncode(R"({"alg":"EdDSA","alg":"none"})") + "." + p + ".abcd", "duplicate"},
      {h + "." + base64UrlEncode(R"({"tenant":"acme","tenant":"globex"})") + ".abcd", "duplicate"},
      {base64UrlEncode(R"({"alg":"EdDSA","crit":["b64"]})") + "." + p + ".abcd", "crit"},
      {base64UrlEncode(R"({"alg":5})") + "." + p + ".abcd", "\"alg\""},
      {base64UrlEncode(R"({"alg":"EdDSA","kid":7})") + "." + p + ".abcd", "\"kid\""},
      {h + "." + base64UrlEncode(std::string(9000, 'a')) + ".abcd", "more than 8192"},
  };
  for (const auto& c : cases) {
    auto d = decodeJwt(c.token);
    ASSERT_FALSE(d) << c.token;
    EXPECT_THAT(d.status().message(), HasSubstr(c.reason)) << c.token;
    EXPECT_THAT(d.status().message(), Not(HasSubstr(p.substr(0, 12))));
  }
  // Non-zero bits after the last byte: a second spelling of the same bytes.
  EXPECT_FALSE(base64UrlDecode("QR"));
  EXPECT_EQ(base64UrlDecode("QQ").value_or("?"), "A");
}

TEST_F(JwtTest, LooksLikeJwtOnlyForThreeBase64UrlSegments) {
  EXPECT_TRUE(looksLikeJwt(token(*rsa_)));
  EXPECT_TRUE(looksLikeJwt("a.b."));
  EXPECT_FALSE(looksLikeJwt("trk_0123abcd_secretsecret"));
  EXPECT_FALSE(looksLikeJwt("acme-key"));
  EXPECT_FALSE(looksLikeJwt("a.b"));
  EXPECT_FALSE(looksLikeJwt(".b.c"));
  EXPECT_FALSE(looksLikeJwt("a..c"));
  EXPECT_FALSE(looksLikeJwt("a.b.c.d"));
  EXPECT_FALSE(looksLikeJwt("a=.b.c"));
}

// ---- JWKS ----

TEST_F(JwtTest, JwksParsesEachKeyType) {
  auto set = parseJwks(jwksText());
  ASSERT_TRUE(set) << set.status().message();
  ASSERT_EQ(set->keys.size(), 3u);
  EXPECT_EQ(set->find("rsa-1")->type, KeyType::kRsa);
  EXPECT_EQ(set->find("ec-1")->type, KeyType::kEcP256);
  EXPECT_EQ(set->find("ed-1")->type, KeyType::kEd25519);
  EXPECT_EQ(set->find("nope"), nullptr);
  // An encryption key beside them is skipped, not refused.
  auto mixed = parseJwks("{\"keys\":[" + ed_->jwk() +
                         R"(,{"kty":"RSA","use":"enc","kid":"e","n":"AQAB","e":"AQAB"}]})");
  ASSERT_TRUE(mixed) << mixed.status().message();
  EXPECT_EQ(mixed->keys.size(), 1u);
}

TEST_F(JwtTest, JwksGarbageIsRefusedWithAClearReason) {
  // A point not on P-256: the real x with y + 1.
  std::string bad_point = ec_->jwk();
  {
    std::string y = bnBytes(ec_->key.get(), OSSL_PKEY_PARAM_EC_PUB_Y, 32);
    y[31] = static_cast<char>(y[31] + 1);
    const size_t at = bad_point.find("\"y\":\"") + 5;
    bad_point.replace(at, bad_point.find('"', at) - at, base64UrlEncode(y));
  }
  TestKey small{"RS256", "small",
                PkeyPtr(EVP_PKEY_Q_keygen(nullptr, nullptr, "RSA", size_t{1024}))};
  std::string with_private = ed_->jwk();
  with_private.insert(with_private.size() - 1, ",\"d\":\"AAAA\"");
  std::string wrong_alg = ed_->jwk();
  wrong_alg.insert(wrong_alg.size() - 1, ",\"alg\":\"RS256\"");
  const std::vector<std::pair<std::string, std::string>> cases = {
      {"", "not valid JSON"},
      {"[]", "not a JSON object"},
      {"{}", "no \"keys\" array"},
      {R"({"keys":{}})", "no \"keys\" array"},
      {R"({"keys":[]})", "no signing keys"},
      {R"({"keys":[1]})", "keys[0] is not an object"},
      {R"({"keys":[{"kid":"a"}]})", "has no \"kty\""},
      {R"({"keys":[{"kty":"oct","kid":"h","k":"c2VjcmV0"}]})", "private key material"},
      {R"({"keys":[{"kty":"oct","kid":"h"}]})", "only RSA, EC (P-256) and OKP"},
      {R"({"keys":[{"kty":"EC","crv":"P-384","x":"AA","y":"AA"}]})", "only P-256"},
      {R"({"keys":[{"kty":"OKP","crv":"X25519","x":"AA"}]})", "only Ed25519"},
      {R"({"keys":[{"kty":"OKP","crv":"Ed25519","x":"AAA="}]})", "not unpadded base64url"},
      {R"({"keys":[{"kty":"OKP","crv":"Ed25519","x":"AAAA"}]})", "must be 32 bytes"},
      {R"({"keys":[{"kty":"RSA","n":5,"e":"AQAB"}]})", "\"n\" is not a string"},
      {"{\"keys\":[" + small.jwk() + "]}", "1024-bit RSA key"},
      {"{\"keys\":[" + bad_point + "]}", "not a point on P-256"},
      {"{\"keys\":[" + with_private + "]}", "private key material"},
      {"{\"keys\":[" + wrong_alg + "]}", "declares alg \"RS256\""},
      {"{\"keys\":[" + ed_->jwk() + "," + ed_->jwk() + "]}", "repeats a kid"},
      {R"({"keys":[],"keys":[]})", "duplicate member"},
      {"{\"keys\":[" + std::string(300 * 1024, ' ') + "]}", "more than"},
  };
  for (const auto& [text, reason] : cases) {
    auto set = parseJwks(text);
    ASSERT_FALSE(set) << text.substr(0, 200);
    EXPECT_THAT(set.status().message(), HasSubstr(reason)) << text.substr(0, 200);
    EXPECT_THAT(set.status().message(), ::testing::StartsWith("jwks: "));
  }
}

// ---- TokenVerifier: issuers, key sets, refresh ----

config::JwtIssuerConfig issuerConfig() {
  config::JwtIssuerConfig c;
  c.issuer = "https://idp.test/";
  c.audience = "trellis";
  c.jwks_uri = "https://idp.test/jwks.json";
  c.jwks_min_refetch = std::chrono::seconds(1);
  return c;
}

TokenVerifier::Options quiet(TokenVerifier::Fetch fetch = {}) {
  TokenVerifier::Options o;
  o.fetch = std::move(fetch);
  o.background = false;
  return o;
}

TokenVerifier::Options withFetch(TokenVerifier::Fetch fetch) {
  TokenVerifier::Options o;
  o.fetch = std::move(fetch);
  return o;
}

int64_t realNow() {
  return std::chrono::duration_cast<std::chrono::seconds>(
             std::chrono::system_clock::now().time_since_epoch())
      .count();
}

TEST_F(JwtTest, VerifierReadsAJwksFileAndRefusesBadOnes) {
  test::TempDir dir;
  auto c = issuerConfig();
  c.jwks_uri.clear();
  c.jwks_file = dir.path() / "jwks.json";
  test::writeFile(c.jwks_file, jwksText());
  auto v = TokenVerifier::create({c}, quiet());
  ASSERT_TRUE(v) << v.status().message();
  auto who = (*v)->verify(token(*ec_, defaultClaims(realNow())));
  ASSERT_TRUE(who) << who.status().message();
  EXPECT_EQ(who->tenant, "acme");
  EXPECT_EQ(who->principal, "alice");
  // Another issuer's token.
  auto other = defaultClaims(realNow());
  other.replace(other.find("idp.test"), 8, "evil.test");
  EXPECT_THAT((*v)->verify(token(*ec_, other)).status().message(),
              HasSubstr("not a configured issuer"));

  test::writeFile(c.jwks_file, "{\"keys\":");
  auto broken = TokenVerifier::create({c}, quiet());
  ASSERT_FALSE(broken);
  EXPECT_THAT(broken.status().message(), HasSubstr("https://idp.test/"));
  EXPECT_THAT(broken.status().message(), HasSubstr("not valid JSON"));
  c.jwks_file = dir.path() / "missing.json";
  EXPECT_FALSE(TokenVerifier::create({c}, quiet()));
}

TEST_F(JwtTest, AFailedRefreshKeepsTheLastGoodSet) {
  std::atomic<int> calls{0};
  std::string served = jwksText();
  std::mutex mu;
  auto fetch = [&](const config::JwtIssuerConfig&) -> Result<std::string> {
    ++calls;
    std::lock_guard lock(mu);
    if (served == "timeout") return Status::timeout("egress: no response header within 5000 ms");
    return served;
  };
  auto v = TokenVerifier::create({issuerConfig()}, quiet(fetch));
  ASSERT_TRUE(v);
  // Nothing fetched yet: refused, and no fetch happens inline.
  EXPECT_THAT((*v)->verify(token(*rsa_, defaultClaims(realNow()))).status().message(),
              HasSubstr("no key set loaded yet"));
  EXPECT_EQ(calls.load(), 0);
  ASSERT_TRUE((*v)->refresh());
  EXPECT_TRUE((*v)->verify(token(*rsa_, defaultClaims(realNow()))));
  for (const char* garbage : {"<html>oops</html>", "{\"keys\":[]}", "timeout"}) {
    {
      std::lock_guard lock(mu);
      served = garbage;
    }
    EXPECT_FALSE((*v)->refresh()) << garbage;
    EXPECT_TRUE((*v)->verify(token(*rsa_, defaultClaims(realNow())))) << garbage;
  }
}

TEST_F(JwtTest, UnknownKidTriggersARateLimitedRefetch) {
  TestKey rotated = TestKey::make("EdDSA", "ed-2");
  std::atomic<int> calls{0};
  std::atomic<bool> rotated_published{false};
  auto fetch = [&](const config::JwtIssuerConfig&) -> Result<std::string> {
    ++calls;
    if (!rotated_published) return jwksText();
    return "{\"keys\":[" + ed_->jwk() + "," + rotated.jwk() + "]}";
  };
  auto v = TokenVerifier::create({issuerConfig()}, withFetch(fetch));
  ASSERT_TRUE(v);
  auto eventually = [&](auto pred) {
    for (int i = 0; i < 100 && !pred(); ++i) {
      std::this_thread::sleep_for(std::chrono::milliseconds(50));
    }
    return pred();
  };
  // The background thread fetches at start.
  ASSERT_TRUE(eventually([&] { return (*v)->loads() == 1; }));
  EXPECT_EQ(calls.load(), 1);

  // The issuer rotates: the first token with the new kid is refused and asks for a refetch;
  // a flood of made-up kids meanwhile costs at most that one fetch per interval.
  rotated_published = true;
  const std::string fresh = token(rotated, defaultClaims(realNow()));
  const auto flood_started = std::chrono::steady_clock::now();
  EXPECT_THAT((*v)->verify(fresh).status().message(), HasSubstr("unknown kid \"ed-2\""));
  for (int i = 0; i < 200; ++i) {
    TestKey fake{"EdDSA", "random-" + std::to_string(i), nullptr};
    const std::string tok = base64UrlEncode(header("EdDSA", fake.kid)) + "." +
                            base64UrlEncode(defaultClaims(realNow())) + "." +
                            base64UrlEncode(std::string(64, 'x'));
    EXPECT_FALSE((*v)->verify(tok));
  }
  ASSERT_TRUE(eventually([&] { return bool((*v)->verify(fresh)); }));
  const auto elapsed = std::chrono::steady_clock::now() - flood_started;
  // One fetch at start; after that at most one per started second (min refetch interval 1 s).
  const auto seconds = std::chrono::duration_cast<std::chrono::seconds>(elapsed).count();
  EXPECT_LE(calls.load(), 2 + seconds);
  EXPECT_GE(calls.load(), 2);
}

// The key set over real HTTPS, through the kernel's egress client: a loopback server with a
// certificate from the test CA.
class JwksOverHttpsTest : public JwtTest {
 protected:
  void serve(int status, const std::string& body, std::chrono::milliseconds delay = {}) {
    std::lock_guard lock(mu_);
    status_ = status;
    body_ = body;
    delay_ = delay;
  }
  test::LoopbackServer::Handler handler() {
    return [this](const auto& read, const auto& write, const std::atomic<bool>& stop) {
      for (auto req = read(); !req.empty() && !stop; req = read()) {
        int status;
        std::string body;
        std::chrono::milliseconds delay;
        {
          std::lock_guard lock(mu_);
          status = status_;
          body = body_;
          delay = delay_;
        }
        for (auto waited = std::chrono::milliseconds(0); waited < delay && !stop;
             waited += std::chrono::milliseconds(50)) {
          std::this_thread::sleep_for(std::chrono::milliseconds(50));
        }
        if (!write(test::reply(status, body, "Content-Type: application/json\r\n"))) return;
      }
    };
  }
  config::JwtIssuerConfig httpsIssuer(uint16_t port) {
    auto c = issuerConfig();
    c.jwks_uri = "https://localhost:" + std::to_string(port) + "/jwks.json";
    c.ca_file = pki_.path("ca.pem");
    return c;
  }

  test::TestPki pki_;
  std::mutex mu_;
  int status_ = 200;
  std::string body_;
  std::chrono::milliseconds delay_{0};
};

TEST_F(JwksOverHttpsTest, KeysAreFetchedOverVerifiedTlsAndKeptWhenTheEndpointFails) {
  ASSERT_TRUE(pki_.ok());
  serve(200, jwksText());
  test::LoopbackServer server(handler(), &pki_, "localhost");
  auto v = TokenVerifier::create({httpsIssuer(server.port())}, quiet());
  ASSERT_TRUE(v) << v.status().message();
  ASSERT_TRUE((*v)->refresh()) << (*v)->refresh().message();
  const std::string tok = token(*ec_, defaultClaims(realNow()));
  ASSERT_TRUE((*v)->verify(tok));

  serve(200, "<html>maintenance</html>");
  EXPECT_THAT((*v)->refresh().message(), HasSubstr("jwks: document is not valid JSON"));
  EXPECT_TRUE((*v)->verify(tok));
  serve(503, "");
  EXPECT_THAT((*v)->refresh().message(), HasSubstr("answered HTTP 503"));
  EXPECT_TRUE((*v)->verify(tok));
  // A slow endpoint costs the refresher a bounded wait (5 s to the response header).
  serve(200, jwksText(), std::chrono::seconds(8));
  const auto started = std::chrono::steady_clock::now();
  Status slow = (*v)->refresh();
  EXPECT_FALSE(slow);
  EXPECT_LT(std::chrono::steady_clock::now() - started, std::chrono::seconds(8));
  EXPECT_TRUE((*v)->verify(tok));
}

TEST_F(JwksOverHttpsTest, AnUntrustedCertificateIsRefused) {
  ASSERT_TRUE(pki_.ok());
  serve(200, jwksText());
  test::LoopbackServer server(handler(), &pki_, "rogue");
  auto v = TokenVerifier::create({httpsIssuer(server.port())}, quiet());
  ASSERT_TRUE(v);
  Status s = (*v)->refresh();
  EXPECT_THAT(s.message(), HasSubstr("certificate verify failed"));
  EXPECT_EQ((*v)->loads(), 0u);
  EXPECT_THAT((*v)->verify(token(*ec_, defaultClaims(realNow()))).status().message(),
              HasSubstr("no key set loaded yet"));
}

}  // namespace
}  // namespace trellis::kernel::auth
