// The audit logs' HMAC keyring (hmac_keys.h): the own key until a secrets key opens, key ids
// resolved for the HMAC route, which tenants still want a key, backoff after a failure; and
// the record line naming its key in canonical order, the same on both build paths.
#include "hmac_keys.h"

#include <gtest/gtest.h>

#include <string>

#include "core/canonical_json.h"
#include "core/hash.h"
#include "core/record.h"

namespace trellis::audit {
namespace {

std::string bytes(char c) {
  return std::string(32, c);
}

TEST(AuditHmacKeyringTest, OwnKeysAreDerivedPerLogFromTheMasterAndStable) {
  HmacKeyring a, b, other;
  a.setMaster(bytes('m'));
  b.setMaster(bytes('m'));
  other.setMaster(bytes('n'));
  const auto acme = a.current("acme");
  EXPECT_EQ(acme.id, kOwnKeyId);
  EXPECT_EQ(acme.key.size(), 32u);
  EXPECT_EQ(std::string(acme.key), std::string(b.current("acme").key)) << "same master, same key";
  EXPECT_NE(std::string(acme.key), std::string(a.current("globex").key));
  EXPECT_NE(std::string(acme.key), std::string(a.current("").key));
  EXPECT_NE(std::string(acme.key), std::string(other.current("acme").key));
  EXPECT_NE(std::string(acme.key), bytes('m'));
  // A log from before derivation keeps the key it stored.
  a.setOwn("legacy", bytes('l'));
  EXPECT_EQ(std::string(a.current("legacy").key), bytes('l'));
}

TEST(AuditHmacKeyringTest, TenantsWantASecretsKeyUntilOneOpensAndThenUseIt) {
  HmacKeyring keys;
  keys.setMaster(bytes('m'));
  keys.current("");  // the system log has no tenant to act for
  keys.current("acme");
  keys.want("hooli");  // a tenant just created, no record yet
  auto due = keys.due(0);
  ASSERT_EQ(due.size(), 2u);
  EXPECT_EQ(due[0].tenant, "acme");
  EXPECT_EQ(due[0].generation, 1u);
  EXPECT_TRUE(due[0].wrapped.empty()) << "none stored: make generation 1";
  EXPECT_EQ(due[1].tenant, "hooli");

  keys.addWrapped("acme", 1, "trellis:v1:abc");
  due = keys.due(0);
  ASSERT_EQ(due.size(), 2u);
  EXPECT_EQ(due[0].wrapped, "trellis:v1:abc") << "stored but not open: decrypt it";
  EXPECT_EQ(keys.current("acme").id, kOwnKeyId);
  auto closed = keys.byId("acme", "secrets:1");
  EXPECT_EQ(closed.status().code(), StatusCode::kUnavailable);
  EXPECT_NE(closed.status().message().find("not open yet"), std::string::npos);

  keys.open("acme", 1, bytes('s'));
  EXPECT_EQ(keys.current("acme").id, "secrets:1");
  EXPECT_EQ(std::string(keys.current("acme").key), bytes('s'));
  ASSERT_EQ(keys.due(0).size(), 1u);
  EXPECT_EQ(keys.due(0)[0].tenant, "hooli");
  // Every id the log had still resolves; an unknown one names the ones there are.
  HmacKeyring fresh;
  fresh.setMaster(bytes('m'));
  EXPECT_EQ(std::string(keys.byId("acme", "own")->key), std::string(fresh.current("acme").key));
  EXPECT_EQ(std::string(keys.byId("acme", "secrets:1")->key), bytes('s'));
  auto unknown = keys.byId("acme", "secrets:2");
  EXPECT_EQ(unknown.status().code(), StatusCode::kNotFound);
  EXPECT_EQ(unknown.status().message(),
            "log acme has no HMAC key \"secrets:2\" (its keys: own, secrets:1)");
  EXPECT_EQ(keys.keysJson("acme"),
            R"({"current":"secrets:1","keys":[{"id":"own","state":"open"},)"
            R"({"id":"secrets:1","state":"open"}],"log":"acme","provisioning":{"failures":0,)"
            R"("last_error":"","retry_at":null,"wanted":false}})");
}

TEST(AuditHmacKeyringTest, AFailedAttemptWaitsLongerEachTimeUpToAnHour) {
  HmacKeyring keys;
  keys.setMaster(bytes('m'));
  keys.want("acme");
  keys.failed("acme", 1000, 10'000, "PERMISSION_DENIED");
  EXPECT_TRUE(keys.due(10'999).empty());
  EXPECT_EQ(keys.due(11'000).size(), 1u);
  keys.failed("acme", 11'000, 10'000, "again");
  EXPECT_TRUE(keys.due(30'999).empty());
  EXPECT_EQ(keys.due(31'000).size(), 1u);
  for (int i = 0; i < 40; ++i) keys.failed("acme", 0, 10'000, "still");
  EXPECT_EQ(keys.due(3'600'000).size(), 1u);
  EXPECT_NE(keys.keysJson("acme").find(R"("last_error":"still")"), std::string::npos);
}

TEST(AuditHmacKeyringTest, RecordsNameTheirKeyInCanonicalOrderOnBothPaths) {
  const std::string json =
      R"({"type":"t","action":"a","tenant":"acme","parameters":{"reason":"case-1"}})";
  auto fast = IncomingRecord::parse(json);
  auto reference = IncomingRecord::parseReference(json);
  ASSERT_TRUE(fast);
  ASSERT_TRUE(reference);
  const std::vector<std::string> sensitive = {"reason"};
  RecordContext ctx;
  ctx.seq = 1;
  ctx.event_id = "e";
  ctx.hmac_key = "k";
  ctx.hmac_key_id = "secrets:1";
  ctx.sensitive = &sensitive;
  const std::string line = buildRecord(*fast, ctx);
  EXPECT_EQ(line, buildRecordReference(*reference, ctx));
  EXPECT_EQ(*canonicalJson(line), line);
  EXPECT_NE(line.find(R"("event_id":"e","hmac_key":"secrets:1","kernel_seq":0)"), std::string::npos)
      << line;
  EXPECT_NE(line.find(sensitiveDigest("k", "case-1")), std::string::npos);
  ctx.hmac_key_id = {};
  EXPECT_EQ(buildRecord(*fast, ctx).find("hmac_key"), std::string::npos);
}

TEST(AuditHmacKeyringTest, WipeZeroesAndEmpties) {
  std::string s = bytes('x');
  wipe(s);
  EXPECT_TRUE(s.empty());
}

}  // namespace
}  // namespace trellis::audit
