// trellis/audit's per-tenant HMAC keys on a real trellisd, with and without trellis/secrets
// (issue #15 item 2): a tenant's sensitive fields are HMAC'd with a key from secrets.v1 once
// that service is there and unsealed, with the plugin's own key before; every record names its
// key, and the admin HMAC route answers for each key id, so records from both sides of the
// switch stay searchable. The append path never calls secrets.v1: with secrets sealed and the
// sink fail-closed, admin actions are still recorded.
//
// Sensitive field here: "reason" (a legal hold's reason, a case number in real use), which the
// plugin's own legal-hold records carry in the tenant's log.
#include <Poco/JSON/Array.h>
#include <Poco/JSON/Object.h>
#include <Poco/JSON/Parser.h>
#include <gmock/gmock.h>
#include <gtest/gtest.h>
#include <soci/soci.h>
#include <soci/sqlite3/soci-sqlite3.h>

#include <memory>
#include <string>
#include <tuple>
#include <vector>

#include "audit_test_util.h"
#include "core/hash.h"
#include "core/record.h"
#include "support/test_support.h"

namespace trellis::test {
namespace {

using Poco::JSON::Object;
using ::testing::HasSubstr;

constexpr const char* kAudit =
    "    - id: trellis/audit\n"
    "      system: true\n"
    "      config: {checkpoint_every: 1000, checkpoint_interval_s: 3600,"
    " sensitive_fields: [reason], hmac_key_interval_s: 1}\n";
constexpr const char* kSecrets = "    - id: trellis/secrets\n      system: true\n";
constexpr const char* kFailClosed = "audit:\n  sink: trellis/audit\n  on_sink_failure: block\n";

class AuditHmacKeyTest : public ::testing::Test {
 protected:
  void startWith(const std::string& plugins) {
    server_ = std::make_unique<TrellisdProcess>(defaultTestConfig(plugins, kFailClosed));
    ASSERT_TRUE(server_->start()) << server_->log();
  }
  HttpReply admin(const std::string& method, const std::string& path,
                  const std::string& body = "") {
    return request(server_->adminPort(), method, path,
                   {{"Authorization", "Bearer " + server_->adminToken()}}, body);
  }
  HttpReply audit(const std::string& method, const std::string& tail,
                  const std::string& body = "") {
    return admin(method, "/v1/x/trellis/audit/" + tail, body);
  }
  // Initialises trellis/secrets with 2 of 2 shares (kept for a later unseal) and unseals it.
  void initAndUnsealSecrets() {
    auto init = admin("POST", "/v1/x/trellis/secrets/init", R"({"shares":2,"threshold":2})");
    ASSERT_EQ(init.status, 200) << init.body;
    auto list = json(init.body)->getArray("shares");
    shares_.clear();
    for (size_t i = 0; i < list->size(); ++i)
      shares_.push_back(list->getElement<std::string>(static_cast<unsigned>(i)));
    unsealSecrets();
  }
  void unsealSecrets() {
    for (const auto& share : shares_) {
      auto u = admin("POST", "/v1/x/trellis/secrets/unseal", "{\"key\":\"" + share + "\"}");
      ASSERT_EQ(u.status, 200) << u.body;
    }
  }
  Object::Ptr keys(const std::string& log) {
    auto r = audit("GET", "logs/" + log + "/hmac-keys");
    EXPECT_EQ(r.status, 200) << r.body;
    return json(r.body);
  }
  bool keyIsCurrent(const std::string& log, const std::string& id) {
    return eventually([&] { return keys(log)->getValue<std::string>("current") == id; });
  }
  // The digest of `value` under the log's key `key` ("" = current): {digest, key id}.
  HttpReply hmac(const std::string& log, const std::string& value, const std::string& key = "") {
    return audit("POST", "hmac",
                 "{\"tenant\":\"" + log + "\",\"value\":\"" + value + "\"" +
                     (key.empty() ? "" : ",\"key\":\"" + key + "\"") + "}");
  }
  std::string digest(const std::string& log, const std::string& value,
                     const std::string& key = "") {
    auto r = hmac(log, value, key);
    EXPECT_EQ(r.status, 200) << r.body;
    return r.status == 200 ? json(r.body)->getValue<std::string>("digest") : "";
  }
  // The log's newest record with `action`.
  Object::Ptr newest(const std::string& log, const std::string& action) {
    Object::Ptr found;
    for (const auto& l : lines(audit("GET", "logs/" + log + "/records").body)) {
      auto r = json(l);
      if (r->getValue<std::string>("action") == action) found = r;
    }
    return found;
  }
  std::string reasonOf(const Object::Ptr& record) {
    return record->getObject("parameters")->getValue<std::string>("reason");
  }

  std::unique_ptr<TrellisdProcess> server_;
  std::vector<std::string> shares_;
};

TEST_F(AuditHmacKeyTest, ANewTenantsSensitiveFieldsUseTheKeyFromSecretsWhichSurvivesARestart) {
  startWith(std::string(kAudit) + kSecrets);
  initAndUnsealSecrets();
  ASSERT_EQ(admin("POST", "/v1/tenants",
                  R"({"id":"hooli","plugins":["trellis/audit","trellis/secrets"]})")
                .status,
            201);
  // Provisioned on creation, before the tenant's own first record.
  ASSERT_TRUE(keyIsCurrent("hooli", "secrets:1")) << audit("GET", "logs/hooli/hmac-keys").body;

  ASSERT_EQ(audit("PUT", "logs/hooli/legal-hold", R"({"reason":"case-7"})").status, 200);
  auto held = newest("hooli", "audit.legal_hold.set");
  ASSERT_TRUE(held);
  EXPECT_EQ(held->getValue<std::string>("hmac_key"), "secrets:1");
  auto answer = hmac("hooli", "case-7");
  ASSERT_EQ(answer.status, 200) << answer.body;
  EXPECT_EQ(json(answer.body)->getValue<std::string>("key"), "secrets:1");
  const std::string secrets_digest = json(answer.body)->getValue<std::string>("digest");
  EXPECT_EQ(reasonOf(held), secrets_digest);
  EXPECT_EQ(digest("hooli", "case-7", "secrets:1"), secrets_digest);
  EXPECT_NE(digest("hooli", "case-7", "own"), secrets_digest);
  // The switch is itself a record of the log.
  auto use = newest("hooli", "audit.hmac_key.use");
  ASSERT_TRUE(use);
  EXPECT_EQ(use->getObject("parameters")->getValue<std::string>("key"), "secrets:1");

  auto unknown = hmac("hooli", "case-7", "secrets:9");
  EXPECT_EQ(unknown.status, 404);
  EXPECT_THAT(unknown.body, HasSubstr(R"(log hooli has no HMAC key \"secrets:9\")"));

  // Stopped cleanly so the system database holds every write: the stored key is the wrapped
  // one, a transit ciphertext, not the key in any spelling.
  ASSERT_EQ(server_->stop(), 0) << server_->log();
  std::string stored;
  {
    soci::session sql(
        soci::sqlite3,
        "db=\"" + (server_->dir() / "data" / "tenants" / "_system.db").string() + "\"");
    sql << "SELECT CAST(value AS TEXT) FROM kv WHERE plugin = 'trellis/audit' AND "
           "CAST(key AS TEXT) LIKE 'hmacw/hooli/%'",
        soci::into(stored);
  }
  EXPECT_EQ(stored.rfind("trellis:v1:", 0), 0u) << stored;
  for (const std::string& candidate :
       {stored, audit::fromHex(stored).value_or("-"), audit::fromBase64(stored).value_or("-"),
        audit::fromBase64(stored.substr(std::min<size_t>(stored.size(), 11))).value_or("-")}) {
    EXPECT_NE(audit::sensitiveDigest(candidate, "case-7"), secrets_digest);
  }

  // After a restart secrets is sealed: the key is known but not open, records use the own
  // key, and an unseal opens it again (decrypt only) with the same digests as before.
  ASSERT_TRUE(server_->start()) << server_->log();
  auto sealed = keys("hooli");
  EXPECT_EQ(sealed->getValue<std::string>("current"), "own");
  EXPECT_THAT(audit("GET", "logs/hooli/hmac-keys").body,
              HasSubstr(R"({"id":"secrets:1","state":"wrapped"})"));
  auto closed = hmac("hooli", "case-7", "secrets:1");
  EXPECT_EQ(closed.status, 503);
  EXPECT_THAT(closed.body, HasSubstr("not open yet"));
  unsealSecrets();
  ASSERT_TRUE(keyIsCurrent("hooli", "secrets:1")) << server_->log();
  EXPECT_EQ(digest("hooli", "case-7", "secrets:1"), secrets_digest);
  EXPECT_EQ(digest("hooli", "case-7"), secrets_digest);
}

// The transit key "audit-hmac" is the audit plugin's, made for the tenant: the tenant sees it
// but can neither delete it nor raise its min_decryption_version, which would leave the stored
// wrapped HMAC keys unopenable; the plugin keeps using it.
TEST_F(AuditHmacKeyTest, TheTenantCannotDeleteOrWeakenTheTransitKeyMadeForItsLog) {
  startWith(std::string(kAudit) + kSecrets);
  initAndUnsealSecrets();
  ASSERT_EQ(admin("POST", "/v1/tenants",
                  R"({"id":"hooli","plugins":["trellis/audit","trellis/secrets"]})")
                .status,
            201);
  ASSERT_TRUE(keyIsCurrent("hooli", "secrets:1")) << audit("GET", "logs/hooli/hmac-keys").body;
  auto made = admin("POST", "/v1/tenants/hooli/keys", "{}");
  ASSERT_EQ(made.status, 201) << made.body;
  const std::string hooli_key = json(made.body)->getValue<std::string>("key");
  auto transit = [&](const std::string& method, const std::string& tail,
                     const std::string& body = "") {
    return request(server_->port(), method, "/secrets/v1/transit/" + tail,
                   {{"Authorization", "Bearer " + hooli_key}}, body);
  };

  auto read = transit("GET", "keys/audit-hmac");
  ASSERT_EQ(read.status, 200) << read.body;
  EXPECT_EQ(json(read.body)->getObject("data")->getValue<std::string>("owner_plugin"),
            "trellis/audit");
  EXPECT_THAT(server_->log(), ::testing::Not(HasSubstr("is the tenant's own")));
  // Rotating weakens nothing (older versions still decrypt), so it stays the tenant's right.
  ASSERT_EQ(transit("POST", "keys/audit-hmac/rotate").status, 200);
  for (const auto& [method, tail, body] :
       {std::tuple{"POST", "keys/audit-hmac/config", R"({"deletion_allowed":true})"},
        std::tuple{"POST", "keys/audit-hmac/config", R"({"min_decryption_version":2})"},
        std::tuple{"DELETE", "keys/audit-hmac", ""}}) {
    auto r = transit(method, tail, body);
    EXPECT_EQ(r.status, 403) << method << " " << tail << " " << body << ": " << r.body;
    EXPECT_THAT(r.body, HasSubstr("is owned by the plugin trellis/audit"));
  }
  auto after = json(transit("GET", "keys/audit-hmac").body)->getObject("data");
  EXPECT_EQ(after->getValue<int>("min_decryption_version"), 1);
  EXPECT_FALSE(after->getValue<bool>("deletion_allowed"));

  // The plugin still opens its wrapped key (made under version 1) after a restart.
  const std::string before = digest("hooli", "case-3", "secrets:1");
  ASSERT_EQ(server_->stop(), 0) << server_->log();
  ASSERT_TRUE(server_->start()) << server_->log();
  unsealSecrets();
  ASSERT_TRUE(keyIsCurrent("hooli", "secrets:1")) << server_->log();
  EXPECT_EQ(digest("hooli", "case-3", "secrets:1"), before);
}

// A key named audit-hmac the tenant made itself stays the tenant's: the plugin uses it, and
// says in trellisd's log that the tenant can delete it.
TEST_F(AuditHmacKeyTest, ATransitKeyTheTenantMadeItselfIsUsedWithAWarning) {
  startWith(std::string(kAudit) + kSecrets);
  initAndUnsealSecrets();
  // acme (from trellis.yaml) is noticed at its first record: this creation, which secrets audits.
  auto made = request(server_->port(), "POST", "/secrets/v1/transit/keys/audit-hmac",
                      {{"Authorization", "Bearer acme-key"}});
  ASSERT_EQ(made.status, 200) << made.body;
  ASSERT_TRUE(keyIsCurrent("acme", "secrets:1")) << audit("GET", "logs/acme/hmac-keys").body;
  EXPECT_THAT(server_->log(),
              HasSubstr("the transit key audit-hmac of tenant acme is the tenant's own"));
  EXPECT_EQ(request(server_->port(), "POST", "/secrets/v1/transit/keys/audit-hmac/config",
                    {{"Authorization", "Bearer acme-key"}}, R"({"deletion_allowed":true})")
                .status,
            200)
      << "the tenant's own key: its config is the tenant's";
}

TEST_F(AuditHmacKeyTest, ATenantCreatedWhileSecretsIsSealedSwitchesAfterTheUnseal) {
  startWith(std::string(kAudit) + kSecrets);
  ASSERT_EQ(admin("POST", "/v1/tenants",
                  R"({"id":"initech","plugins":["trellis/audit","trellis/secrets"]})")
                .status,
            201);
  // Sealed secrets, fail-closed sink: the action and its record happen all the same.
  ASSERT_EQ(audit("PUT", "logs/initech/legal-hold", R"({"reason":"case-1"})").status, 200);
  auto before = newest("initech", "audit.legal_hold.set");
  ASSERT_TRUE(before);
  EXPECT_EQ(before->getValue<std::string>("hmac_key"), "own");
  auto own = hmac("initech", "case-1");
  ASSERT_EQ(own.status, 200) << own.body;
  EXPECT_EQ(json(own.body)->getValue<std::string>("key"), "own");
  const std::string own_digest = json(own.body)->getValue<std::string>("digest");
  EXPECT_EQ(reasonOf(before), own_digest);
  auto waiting = keys("initech");
  EXPECT_EQ(waiting->getValue<std::string>("current"), "own");
  EXPECT_TRUE(waiting->getObject("provisioning")->getValue<bool>("wanted"));

  initAndUnsealSecrets();
  ASSERT_TRUE(keyIsCurrent("initech", "secrets:1")) << server_->log();
  ASSERT_EQ(audit("DELETE", "logs/initech/legal-hold").status, 200);  // records the reason
  auto after = newest("initech", "audit.legal_hold.release");
  ASSERT_TRUE(after);
  EXPECT_EQ(after->getValue<std::string>("hmac_key"), "secrets:1");
  const std::string secrets_digest = digest("initech", "case-1");
  EXPECT_EQ(reasonOf(after), secrets_digest);
  EXPECT_NE(secrets_digest, own_digest);
  // Both sides of the switch stay searchable, each under its own key id.
  EXPECT_EQ(digest("initech", "case-1", "own"), reasonOf(before));
  EXPECT_EQ(digest("initech", "case-1", "secrets:1"), reasonOf(after));

  // The key id is part of the chained line: the pack verifies, and relabelling a record's key
  // is caught as a modification.
  ASSERT_EQ(audit("POST", "logs/initech/checkpoint").status, 200);
  TempDir pack;
  const std::string records = audit("GET", "logs/initech/records").body;
  writeFile(pack / "records.jsonl", records);
  writeFile(pack / "checkpoints.jsonl", audit("GET", "logs/initech/checkpoints").body);
  writeFile(pack / "public-key.pem", audit("GET", "public-key").body);
  const std::string verify = std::string(TRELLIS_AUDIT_TOOL) + " verify " + pack.path().string();
  int status = -1;
  std::string out = runCommand(verify + " 2>&1", &status);
  EXPECT_EQ(status, 0) << out;
  std::string relabelled = records;
  const size_t at = relabelled.find(R"("hmac_key":"secrets:1")");
  ASSERT_NE(at, std::string::npos);
  relabelled.replace(at, 22, R"("hmac_key":"own")");
  writeFile(pack / "records.jsonl", relabelled);
  out = runCommand(verify + " 2>&1", &status);
  EXPECT_EQ(status, 10) << out;
  EXPECT_THAT(out, HasSubstr("was modified"));
}

TEST_F(AuditHmacKeyTest, WithoutSecretsTheOwnKeyServesAndNothingIsAttempted) {
  startWith(kAudit);
  ASSERT_EQ(audit("PUT", "logs/acme/legal-hold", R"({"reason":"case-3"})").status, 200);
  auto held = newest("acme", "audit.legal_hold.set");
  ASSERT_TRUE(held);
  EXPECT_EQ(held->getValue<std::string>("hmac_key"), "own");
  EXPECT_EQ(reasonOf(held), digest("acme", "case-3"));
  EXPECT_EQ(reasonOf(held), digest("acme", "case-3", "own"));
  // Another log's own key is another key.
  EXPECT_NE(digest("globex", "case-3", "own"), reasonOf(held));
  auto k = keys("acme");
  EXPECT_EQ(k->getValue<std::string>("current"), "own");
  EXPECT_EQ(k->getArray("keys")->size(), 1u);
  EXPECT_EQ(k->getObject("provisioning")->getValue<int>("failures"), 0);  // never acted
  EXPECT_EQ(lines(audit("GET", "logs/acme/records").body).size(), 1u)
      << "no act_for_tenant record: the provisioner saw no secrets.v1 and stopped there";
}

TEST_F(AuditHmacKeyTest, ATenantWithoutSecretsEnabledKeepsTheOwnKeyAndSaysWhy) {
  startWith(std::string(kAudit) + kSecrets);
  initAndUnsealSecrets();
  ASSERT_EQ(admin("POST", "/v1/tenants", R"({"id":"umbrella","plugins":["trellis/audit"]})").status,
            201);
  ASSERT_TRUE(eventually(
      [&] { return keys("umbrella")->getObject("provisioning")->getValue<int>("failures") > 0; }));
  auto k = keys("umbrella");
  EXPECT_EQ(k->getValue<std::string>("current"), "own");
  EXPECT_THAT(k->getObject("provisioning")->getValue<std::string>("last_error"),
              HasSubstr("has not enabled trellis/secrets"));
  ASSERT_EQ(audit("PUT", "logs/umbrella/legal-hold", R"({"reason":"case-5"})").status, 200);
  auto held = newest("umbrella", "audit.legal_hold.set");
  ASSERT_TRUE(held);
  EXPECT_EQ(held->getValue<std::string>("hmac_key"), "own");
  EXPECT_EQ(reasonOf(held), digest("umbrella", "case-5", "own"));
}

}  // namespace
}  // namespace trellis::test
