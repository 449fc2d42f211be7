// Records, the chain and checkpoints: canonical JSON, UUIDv7, HMAC of sensitive fields,
// Ed25519 signatures, and the append rate of the whole in-memory path (printed).
#include "core/record.h"

#include <gtest/gtest.h>

#include <chrono>
#include <cstdio>
#include <regex>

#include "core/canonical_json.h"
#include "core/ed25519.h"
#include "core/tenant_log.h"

namespace trellis::audit {
namespace {

const char* kKernelRecord =
    R"({"seq":7,"time_ms":1,"type":"admin.request","actor":{"principal":"p1","name":"alice",)"
    R"("role":"admin"},"action":"POST /v1/tenants","resource":"/v1/tenants","tenant":"acme",)"
    R"("parameters":{"id":"acme","owner":{"email":"a@example.com"}},"outcome":"pending",)"
    R"("status":0,"request_id":"r1","trace_id":"t1"})";

TEST(AuditCanonicalJsonTest, SortsKeysDropsWhitespaceAndIsIdempotent) {
  auto c = canonicalJson(R"({ "b" : 1, "a" : [true, null, "x\"y\n"], "c": {"z":1.5,"y":-2}})");
  ASSERT_TRUE(c) << c.status().message();
  EXPECT_EQ(*c, R"({"a":[true,null,"x\"y\u000a"],"b":1,"c":{"y":-2,"z":1.5}})");
  EXPECT_EQ(*canonicalJson(*c), *c);
  EXPECT_FALSE(canonicalJson("{nope"));
}

TEST(AuditRecordTest, UuidV7CarriesTheTimeAndVersion) {
  const std::string id = uuidV7(0x0123456789ab);
  EXPECT_TRUE(std::regex_match(id, std::regex("01234567-89ab-7[0-9a-f]{3}-[89ab][0-9a-f]{3}-"
                                              "[0-9a-f]{12}")))
      << id;
  EXPECT_NE(uuidV7(1), uuidV7(1));
  EXPECT_EQ(rfc3339Utc(1764825514123), "2025-12-04T05:18:34.123Z");
}

TEST(AuditRecordTest, BuildsTheSchemaAndHidesSensitiveFields) {
  auto in = IncomingRecord::parse(kKernelRecord);
  ASSERT_TRUE(in);
  EXPECT_EQ(in->tenant, "acme");
  const std::vector<std::string> sensitive = {"email"};
  RecordContext ctx;
  ctx.seq = 3;
  ctx.time_ms = 1764825514123;
  ctx.event_id = "01234567-89ab-7000-8000-000000000000";
  ctx.hmac_key = "k";
  ctx.sensitive = &sensitive;
  const std::string line = buildRecord(*in, ctx);
  EXPECT_EQ(*canonicalJson(line), line);
  EXPECT_EQ(line.find("a@example.com"), std::string::npos);
  EXPECT_NE(line.find(sensitiveDigest("k", "a@example.com")), std::string::npos);
  EXPECT_EQ(line, R"({"action":"POST /v1/tenants","actor":{"name":"alice","principal":"p1","role":)"
                  R"("admin"},"event_id":"01234567-89ab-7000-8000-000000000000","kernel_seq":7,)"
                  R"("outcome":"pending","parameters":{"id":"acme","owner":{"email":")" +
                      sensitiveDigest("k", "a@example.com") + R"("}},"prev":")" +
                      std::string(64, '0') +
                      R"(","request_id":"r1","resource":"/v1/tenants","seq":3,"status":0,)"
                      R"("tenant":"acme","time":"2025-12-04T05:18:34.123Z","trace_id":"t1",)"
                      R"("type":"admin.request"})");
  // Another tenant's key gives another digest: values cannot be joined across tenants.
  EXPECT_NE(sensitiveDigest("k", "a@example.com"), sensitiveDigest("k2", "a@example.com"));
}

TEST(AuditRecordTest, RefusesWhatIsNotARecord) {
  EXPECT_FALSE(IncomingRecord::parse("[1]"));
  EXPECT_FALSE(IncomingRecord::parse("{"));
  EXPECT_FALSE(IncomingRecord::parse(std::string(kMaxRecordBytes + 1, ' ')));
}

// The checkpoint timer asks how old a log's oldest unsigned record is: the time of that
// record's line, never one its parameters carry.
TEST(AuditRecordTest, TheOldestUnsignedRecordsTimeIsReadFromItsLine) {
  auto key = Ed25519Key::generate();
  ASSERT_TRUE(key);
  TenantLog log("acme");
  EXPECT_FALSE(log.unsignedSinceMs());
  auto in = *IncomingRecord::parse(
      R"({"type":"plugin","action":"x","tenant":"acme","parameters":{"time":"1999-01-01T00:00:00.000Z"}})");
  log.commit(log.prepare(in, 1764825514123, "k", {}));
  EXPECT_EQ(recordTimeMs(log.line(0)), 1764825514123);
  EXPECT_EQ(log.unsignedSinceMs(), 1764825514123);
  log.checkpoint(*key, 1764825514200);
  EXPECT_FALSE(log.unsignedSinceMs()) << "everything is signed";
  log.commit(log.prepare(in, 1764825515000, "k", {}));
  log.commit(log.prepare(in, 1764825516000, "k", {}));
  EXPECT_EQ(log.unsignedSinceMs(), 1764825515000) << "the first record past the checkpoint";
  EXPECT_FALSE(recordTimeMs(R"({"time":"yesterday"})"));
  EXPECT_FALSE(recordTimeMs(R"({"time":"2025-12-04T05:18:34.123Zulu"})"));
  EXPECT_FALSE(recordTimeMs(R"({"seq":1})"));
}

TEST(AuditRecordTest, CheckpointsSignAndVerifyAndRoundTrip) {
  auto key = Ed25519Key::generate();
  ASSERT_TRUE(key);
  TenantLog log("acme");
  auto in = *IncomingRecord::parse(kKernelRecord);
  for (int i = 0; i < 5; ++i) log.commit(log.prepare(in, 1000 + i, "k", {}));
  Checkpoint cp = log.checkpoint(*key, 2000);
  EXPECT_EQ(cp.origin, "trellis-audit/acme");
  EXPECT_EQ(cp.size, 5u);
  EXPECT_TRUE(verifyCheckpoint(cp, key->publicKey()));
  auto back = Checkpoint::fromJson(cp.toJson());
  ASSERT_TRUE(back) << back.status().message();
  EXPECT_TRUE(verifyCheckpoint(*back, key->publicKey()));
  EXPECT_EQ(back->toJson(), cp.toJson());
  // Any signed field changed: the signature no longer holds.
  Checkpoint forged = cp;
  forged.size = 4;
  EXPECT_FALSE(verifyCheckpoint(forged, key->publicKey()));
  forged = cp;
  forged.root[0] ^= 1;
  EXPECT_FALSE(verifyCheckpoint(forged, key->publicKey()));
  auto other = Ed25519Key::generate();
  EXPECT_FALSE(verifyCheckpoint(cp, other->publicKey()));
  // The key survives its seed and its PEM.
  auto again = Ed25519Key::fromSeed(key->privateSeed());
  ASSERT_TRUE(again);
  EXPECT_EQ(again->publicKey(), key->publicKey());
  EXPECT_EQ(*ed25519PublicKeyFromText(key->publicPem()), key->publicKey());
}

TEST(AuditRecordTest, RestoreRebuildsTheSameLogAndRefusesABrokenChain) {
  TenantLog log("");
  auto in = *IncomingRecord::parse(kKernelRecord);
  for (int i = 0; i < 4; ++i) log.commit(log.prepare(in, 1000 + i, "k", {}));
  TenantLog copy("");
  for (uint64_t i = 0; i < log.size(); ++i) ASSERT_TRUE(copy.restore(log.line(i)).isOk());
  EXPECT_EQ(*copy.tree().root(4), *log.tree().root(4));
  EXPECT_EQ(copy.chainHead(), log.chainHead());
  TenantLog skipped("");
  EXPECT_TRUE(skipped.restore(log.line(0)).isOk());
  EXPECT_FALSE(skipped.restore(log.line(2)).isOk());
}

TEST(AuditRecordTest, AppendRate) {
  // Printed, not asserted: record building + chain + tree, without storage.
  TenantLog log("acme");
  auto in = *IncomingRecord::parse(kKernelRecord);
  const std::vector<std::string> sensitive = {"email"};
  constexpr int kN = 50'000;
  const auto start = std::chrono::steady_clock::now();
  for (int i = 0; i < kN; ++i) log.commit(log.prepare(in, 1000 + i, "k", sensitive));
  const double s = std::chrono::duration<double>(std::chrono::steady_clock::now() - start).count();
  std::printf("record build + chain + tree (in memory, one core): %.0f records/s\n", kN / s);
  EXPECT_EQ(log.size(), static_cast<uint64_t>(kN));
}

}  // namespace
}  // namespace trellis::audit
