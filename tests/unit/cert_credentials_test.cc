// Client certificates as tenant credentials: parsing the three selectors (garbage refused
// with a message naming the problem), and the registry's mapping on both system databases
// (SQLite's system.db and the shared PostgreSQL schema), including a second host on
// PostgreSQL seeing a revocation.
#include <Poco/JSON/Parser.h>
#include <gmock/gmock.h>
#include <gtest/gtest.h>

#include <chrono>
#include <sstream>
#include <thread>

#include "auth/cert_identity.h"
#include "support/shared_postgres.h"
#include "support/test_support.h"
#include "trellis/tenants/cert_selector.h"
#include "trellis/tenants/registry.h"

namespace trellis::tenants {
namespace {

using test::SharedPostgres;
using test::TempDir;
using ::testing::HasSubstr;
using Outcome = Resolution::Outcome;
using namespace std::chrono_literals;

const std::string kPin = "3fa1c0ffee00112233445566778899aabbccddeeff00112233445566778899aa";

// --- selectors ---------------------------------------------------------------------------

TEST(CertSelectorTest, PinsAreSha256HexWithOrWithoutColons) {
  auto plain = parsePinSelector(kPin);
  ASSERT_TRUE(plain) << plain.status().toString();
  EXPECT_EQ(plain->value, kPin);
  std::string colons;
  for (size_t i = 0; i < kPin.size(); i += 2) {
    colons += (i ? ":" : "") + kPin.substr(i, 2);
  }
  for (char& c : colons) c = static_cast<char>(std::toupper(static_cast<unsigned char>(c)));
  auto printed = parsePinSelector(colons);  // as openssl x509 -fingerprint prints it
  ASSERT_TRUE(printed) << printed.status().toString();
  EXPECT_EQ(printed->value, kPin);
  EXPECT_EQ(printed->lookup(), plain->lookup());
  for (const std::string& bad : {std::string(), kPin.substr(1), kPin + "0", "zz" + kPin.substr(2),
                                 std::string(":") + kPin.substr(1), colons.substr(0, 50)}) {
    auto r = parsePinSelector(bad);
    EXPECT_FALSE(r) << bad;
    if (!r) EXPECT_THAT(r.status().message(), HasSubstr("64 hex digits"));
  }
}

TEST(CertSelectorTest, SpiffeIdsFollowTheSpecification) {
  for (const char* good : {"spiffe://acme.test", "spiffe://acme.test/ns/prod/sa/billing",
                           "spiffe://a-b_c.d/x.y-z_9"}) {
    EXPECT_TRUE(parseSpiffeSelector(good)) << good;
  }
  const std::pair<std::string, std::string> bad[] = {
      {"", "expected spiffe://"},
      {"https://acme.test/x", "expected spiffe://"},
      {"SPIFFE://acme.test/x", "expected spiffe://"},
      {"spiffe://", "trust domain is empty"},
      {"spiffe:///x", "trust domain is empty"},
      {"spiffe://Acme.test/x", "trust domain may hold only"},
      {"spiffe://acme.test:8443/x", "trust domain may hold only"},
      {"spiffe://user@acme.test/x", "trust domain may hold only"},
      {"spiffe://acme.test/x/", "must not end with '/'"},
      {"spiffe://acme.test//x", "empty segment"},
      {"spiffe://acme.test/./x", "\".\" or \"..\""},
      {"spiffe://acme.test/x?y=1", "no query or fragment"},
      {"spiffe://acme.test/x#f", "no query or fragment"},
      {"spiffe://acme.test/x\n", "control characters"},
      {"spiffe://acme.test/" + std::string(3000, 'a'), "longer than 2048"},
  };
  for (const auto& [id, why] : bad) {
    auto r = parseSpiffeSelector(id);
    ASSERT_FALSE(r) << id;
    EXPECT_THAT(r.status().message(), HasSubstr(why)) << id;
  }
}

TEST(CertSelectorTest, DistinguishedNamesAreNormalisedAndGarbageRefused) {
  auto a = parseSubjectSelector("cn=billing, O=Acme", " CN = Acme CA ");
  auto b = parseSubjectSelector("CN=billing,O=Acme", "CN=Acme CA");
  ASSERT_TRUE(a) << a.status().toString();
  ASSERT_TRUE(b);
  EXPECT_EQ(a->value, "CN=billing,O=Acme");
  EXPECT_EQ(a->issuer, "CN=Acme CA");
  EXPECT_EQ(a->lookup(), b->lookup());
  // Escaped separators stay part of the value.
  auto escaped = normalizeDn("CN=Smith\\, J.,O=Acme");
  ASSERT_TRUE(escaped);
  EXPECT_EQ(*escaped, "CN=Smith\\, J.,O=Acme");
  // Another issuer is another selector.
  EXPECT_NE(parseSubjectSelector("CN=billing,O=Acme", "CN=Rogue CA")->lookup(), b->lookup());

  const std::pair<std::string, std::string> bad[] = {
      {"", "empty"},
      {"billing", "is not type=value"},
      {"CN=billing,,O=Acme", "is not type=value"},
      {"=billing", "attribute type \"\" is invalid"},
      {"C N=billing", "attribute type"},
      {"/CN=billing/O=Acme", "RFC 2253 form"},
      {"CN=billing\\", "lone '\\'"},
      {"CN=bill\ting", "control characters"},
      {"CN=" + std::string(2000, 'x'), "longer than 1024"},
  };
  for (const auto& [dn, why] : bad) {
    auto r = normalizeDn(dn);
    ASSERT_FALSE(r) << dn;
    EXPECT_THAT(r.status().message(), HasSubstr(why)) << dn;
  }
  auto no_issuer = parseSubjectSelector("CN=billing", "");
  ASSERT_FALSE(no_issuer);
  EXPECT_THAT(no_issuer.status().message(), HasSubstr("issuer: "));
}

TEST(CertSelectorTest, APresentedCertificateMatchesEachKindOnce) {
  const std::string spiffe = "spiffe://acme.test/billing";
  PresentedCertificate cert{kPin, spiffe, "CN=billing,O=Acme", "CN=Acme CA"};
  auto lookups = lookupsOf(cert);
  ASSERT_TRUE(lookups[0] && lookups[1] && lookups[2]);
  EXPECT_EQ(*lookups[0], parsePinSelector(kPin)->lookup());
  EXPECT_EQ(*lookups[1], parseSpiffeSelector(spiffe)->lookup());
  EXPECT_EQ(*lookups[2], parseSubjectSelector("CN=billing, O=Acme", "CN=Acme CA")->lookup());
  // A SPIFFE ID that equals some subject string still matches only as a SPIFFE ID.
  EXPECT_NE(*lookups[1], parseSubjectSelector("CN=x", "CN=y")->lookup());
  auto bare = lookupsOf({kPin, "", "CN=billing", "CN=Acme CA"});
  EXPECT_FALSE(bare[1]);
}

// --- the kernel's side: JSON bodies and a listener's peer identity ---------------------------

Result<CertSelector> fromJson(const std::string& json) {
  auto o = Poco::JSON::Parser().parse(json).extract<Poco::JSON::Object::Ptr>();
  return kernel::auth::selectorFromJson(o, {"expires_at_ms"});
}

TEST(CertIdentityTest, SelectorBodiesNeedExactlyOneKind) {
  EXPECT_EQ(fromJson(R"({"spiffe":"spiffe://acme.test/x"})")->kind, CertSelectorKind::kSpiffe);
  EXPECT_EQ(fromJson(R"({"pin":")" + kPin + R"(","expires_at_ms":1})")->kind,
            CertSelectorKind::kPin);
  auto subject = fromJson(R"({"subject":"CN=a","issuer":"CN=b"})");
  ASSERT_TRUE(subject);
  // Back as it came in.
  std::ostringstream out;
  kernel::auth::selectorJson(*subject)->stringify(out);
  EXPECT_EQ(out.str(), R"({"subject":"CN=a","issuer":"CN=b"})");

  const std::pair<std::string, std::string> bad[] = {
      {"{}", "exactly one of"},
      {R"({"spiffe":"spiffe://acme.test/x","pin":")" + kPin + R"("})", "exactly one of"},
      {R"({"subject":"CN=a"})", "subject and issuer go together"},
      {R"({"issuer":"CN=a"})", "subject and issuer go together"},
      {R"({"spiffe":7})", "spiffe: expected a string"},
      {R"({"spiffe":"spiffe://acme.test/x","tenant":"globex"})", "unknown field \"tenant\""},
      {R"({"pin":"nope"})", "64 hex digits"},
  };
  for (const auto& [json, why] : bad) {
    auto r = fromJson(json);
    ASSERT_FALSE(r) << json;
    EXPECT_THAT(r.status().message(), HasSubstr(why)) << json;
  }
}

TEST(CertIdentityTest, APeerIdentityResolvesToItsTenantOrSaysWhyNot) {
  TempDir dir;
  auto reg = TenantRegistry::openSqlite(dir / "system.db");
  ASSERT_TRUE(reg);
  TenantRecord t;
  t.id = "acme";
  ASSERT_TRUE((*reg)->create(t));
  kernel::tls::PeerIdentity peer;
  peer.sha256 = kPin;
  peer.subject = "CN=billing,O=Acme";
  peer.issuer = "CN=Acme CA";
  peer.spiffe_id = "spiffe://acme.test/billing";
  peer.uris = {peer.spiffe_id};

  std::string why;
  EXPECT_EQ(kernel::auth::resolveCertificateTenant(**reg, peer, &why).outcome,
            Outcome::kUnknownKey);
  EXPECT_THAT(why, HasSubstr("not mapped to a tenant"));
  auto c = (*reg)->addCertCredential("acme", *parseSpiffeSelector(peer.spiffe_id), std::nullopt);
  ASSERT_TRUE(c);
  why.clear();
  Resolution r = kernel::auth::resolveCertificateTenant(**reg, peer, &why);
  ASSERT_EQ(r.outcome, Outcome::kOk);
  EXPECT_EQ(r.tenant->id, "acme");
  EXPECT_EQ(r.key_id, "cert:" + c->id);
  EXPECT_EQ(why, "");
  ASSERT_TRUE((*reg)->revokeCertCredential("acme", c->id));
  EXPECT_EQ(kernel::auth::resolveCertificateTenant(**reg, peer, &why).outcome,
            Outcome::kRevokedKey);
  EXPECT_THAT(why, HasSubstr("revoked"));
  // The log line names the certificate, not any key.
  EXPECT_THAT(kernel::auth::describeCertificate(peer),
              HasSubstr("subject \"CN=billing,O=Acme\", issuer \"CN=Acme CA\""));
}

// --- the registry, both backends ----------------------------------------------------------

enum class Backend { kSqlite, kPostgres };

class CertCredentialsTest : public ::testing::TestWithParam<Backend> {
 protected:
  void SetUp() override {
    auto opened = open();
    ASSERT_TRUE(opened) << opened.status().toString();
    reg_ = std::move(*opened);
    for (const char* id : {"acme", "globex"}) {
      TenantRecord t;
      t.id = id;
      ASSERT_TRUE(reg_->create(t));
    }
  }

  Result<std::unique_ptr<TenantRegistry>> open() {
    if (GetParam() == Backend::kSqlite) return TenantRegistry::openSqlite(dir_ / "system.db");
    if (db_.name.empty()) {
      db_ = SharedPostgres::freshDatabase();
      if (!db_) return Status::unavailable(db_.error);
    }
    return TenantRegistry::openPostgres(db_.app, 20ms);
  }

  CertCredential add(const std::string& tenant, Result<CertSelector> selector,
                     std::optional<int64_t> expires = std::nullopt) {
    EXPECT_TRUE(selector) << selector.status().toString();
    auto c = reg_->addCertCredential(tenant, *selector, expires);
    EXPECT_TRUE(c) << c.status().toString();
    return c ? *c : CertCredential{};
  }

  static int64_t nowMs() {
    return std::chrono::duration_cast<std::chrono::milliseconds>(
               std::chrono::system_clock::now().time_since_epoch())
        .count();
  }

  const std::string spiffe_ = "spiffe://acme.test/ns/prod/sa/billing";
  PresentedCertificate billing_{kPin, spiffe_, "CN=billing,O=Acme", "CN=Acme CA"};
  TempDir dir_;
  test::TestDatabase db_;
  std::unique_ptr<TenantRegistry> reg_;
};

INSTANTIATE_TEST_SUITE_P(Backends, CertCredentialsTest,
                         ::testing::Values(Backend::kSqlite, Backend::kPostgres),
                         [](const ::testing::TestParamInfo<Backend>& info) {
                           return info.param == Backend::kSqlite ? "Sqlite" : "Postgres";
                         });

TEST_P(CertCredentialsTest, EachSelectorKindMapsACertificateToItsTenant) {
  const std::string zeros(64, '0');
  const PresentedCertificate nothing{zeros, "", "CN=x", "CN=y"};
  EXPECT_EQ(reg_->resolveCertificate(billing_).outcome, Outcome::kUnknownKey);

  auto by_subject = add("acme", parseSubjectSelector("CN=billing, O=Acme", "CN=Acme CA"));
  Resolution r = reg_->resolveCertificate(billing_);
  ASSERT_EQ(r.outcome, Outcome::kOk);
  EXPECT_EQ(r.tenant->id, "acme");
  EXPECT_EQ(r.key_id, "cert:" + by_subject.id);

  // More specific selectors win: SPIFFE over subject, pin over both.
  auto by_spiffe = add("acme", parseSpiffeSelector(spiffe_));
  EXPECT_EQ(reg_->resolveCertificate(billing_).key_id, "cert:" + by_spiffe.id);
  auto by_pin = add("acme", parsePinSelector(kPin));
  EXPECT_EQ(reg_->resolveCertificate(billing_).key_id, "cert:" + by_pin.id);
  EXPECT_EQ(reg_->resolveCertificate(nothing).outcome, Outcome::kUnknownKey);

  auto listed = reg_->listCertCredentials("acme");
  ASSERT_EQ(listed.size(), 3u);
  EXPECT_EQ(listed[0].selector.kind, CertSelectorKind::kSubject);
  EXPECT_TRUE(reg_->listCertCredentials("globex").empty());
  // What was stored survives a restart.
  reg_.reset();
  auto reopened = open();
  ASSERT_TRUE(reopened) << reopened.status().toString();
  reg_ = std::move(*reopened);
  EXPECT_EQ(reg_->resolveCertificate(billing_).key_id, "cert:" + by_pin.id);
  EXPECT_EQ(reg_->listCertCredentials("acme").size(), 3u);
}

TEST_P(CertCredentialsTest, RevokedAndExpiredCredentialsAreRefused) {
  auto spiffe = add("acme", parseSpiffeSelector(spiffe_));
  ASSERT_TRUE(reg_->revokeCertCredential("acme", spiffe.id));
  EXPECT_EQ(reg_->resolveCertificate(billing_).outcome, Outcome::kRevokedKey);
  // Twice is fine; another tenant's id answers like a missing one.
  EXPECT_TRUE(reg_->revokeCertCredential("acme", spiffe.id));
  EXPECT_EQ(reg_->revokeCertCredential("globex", spiffe.id).code(), StatusCode::kNotFound);
  EXPECT_EQ(reg_->revokeCertCredential("acme", "deadbeef").code(), StatusCode::kNotFound);

  // A revoked selector may be mapped again.
  auto again = add("acme", parseSpiffeSelector(spiffe_), nowMs() + 300);
  EXPECT_EQ(reg_->resolveCertificate(billing_).key_id, "cert:" + again.id);
  while (reg_->resolveCertificate(billing_).outcome == Outcome::kOk) {
    std::this_thread::sleep_for(20ms);
  }
  EXPECT_EQ(reg_->resolveCertificate(billing_).outcome, Outcome::kExpiredKey);

  // A revoked pin refuses its certificate even where a subject credential would map it.
  add("acme", parseSubjectSelector("CN=billing,O=Acme", "CN=Acme CA"));
  EXPECT_EQ(reg_->resolveCertificate(billing_).outcome, Outcome::kOk);
  auto pin = add("acme", parsePinSelector(kPin));
  ASSERT_TRUE(reg_->revokeCertCredential("acme", pin.id));
  EXPECT_EQ(reg_->resolveCertificate(billing_).outcome, Outcome::kRevokedKey);
}

TEST_P(CertCredentialsTest, BadInputIsRefusedWithAReason) {
  auto selector = parseSpiffeSelector(spiffe_);
  auto unknown = reg_->addCertCredential("umbrella", *selector, std::nullopt);
  EXPECT_EQ(unknown.status().code(), StatusCode::kNotFound);
  EXPECT_THAT(unknown.status().message(), HasSubstr("no tenant \"umbrella\""));
  auto past = reg_->addCertCredential("acme", *selector, nowMs() - 1000);
  EXPECT_EQ(past.status().code(), StatusCode::kInvalid);
  EXPECT_THAT(past.status().message(), HasSubstr("must be in the future"));

  auto first = add("acme", parseSpiffeSelector(spiffe_));
  auto same = reg_->addCertCredential("acme", *selector, std::nullopt);
  EXPECT_EQ(same.status().code(), StatusCode::kConflict);
  EXPECT_THAT(same.status().message(), HasSubstr(first.id));
  // Another tenant learns that the selector is taken, not by whom.
  auto theirs = reg_->addCertCredential("globex", *selector, std::nullopt);
  EXPECT_EQ(theirs.status().code(), StatusCode::kConflict);
  EXPECT_THAT(theirs.status().message(), ::testing::Not(HasSubstr("tenant \"acme\"")));
  EXPECT_THAT(theirs.status().message(), HasSubstr("another tenant"));
  EXPECT_THAT(theirs.status().message(), ::testing::Not(HasSubstr(first.id)));
}

TEST_P(CertCredentialsTest, RemovingATenantRemovesItsCredentials) {
  add("acme", parsePinSelector(kPin));
  ASSERT_TRUE(reg_->remove("acme"));
  EXPECT_EQ(reg_->resolveCertificate(billing_).outcome, Outcome::kUnknownKey);
  EXPECT_TRUE(reg_->listCertCredentials("acme").empty());
}

TEST(SharedCertCredentialsTest, ARevocationOnOneHostCountsOnTheOther) {
  auto db = SharedPostgres::freshDatabase();
  ASSERT_TRUE(db) << db.error;
  auto a = TenantRegistry::openPostgres(db.app, 20ms);
  auto b = TenantRegistry::openPostgres(db.app, 20ms);
  ASSERT_TRUE(a && b);
  TenantRecord t;
  t.id = "acme";
  ASSERT_TRUE((*a)->create(t));
  const std::string spiffe = "spiffe://acme.test/x";
  auto c = (*a)->addCertCredential("acme", *parseSpiffeSelector(spiffe), std::nullopt);
  ASSERT_TRUE(c);
  const PresentedCertificate cert{kPin, spiffe, "CN=x", "CN=y"};
  auto deadline = std::chrono::steady_clock::now() + 10s;
  while ((*b)->resolveCertificate(cert).outcome != Outcome::kOk &&
         std::chrono::steady_clock::now() < deadline) {
    std::this_thread::sleep_for(5ms);
  }
  ASSERT_EQ((*b)->resolveCertificate(cert).outcome, Outcome::kOk);
  ASSERT_TRUE((*a)->revokeCertCredential("acme", c->id));
  while ((*b)->resolveCertificate(cert).outcome == Outcome::kOk &&
         std::chrono::steady_clock::now() < deadline) {
    std::this_thread::sleep_for(5ms);
  }
  EXPECT_EQ((*b)->resolveCertificate(cert).outcome, Outcome::kRevokedKey);
}

}  // namespace
}  // namespace trellis::tenants
