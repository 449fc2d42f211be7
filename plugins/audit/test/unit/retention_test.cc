// Retention: durations, the policy's stored form, where a purge may end (a signed
// checkpoint older than the cutoff), a log purged and rebuilt from what it keeps, and the
// offline verifier on a pack whose first records were purged — untouched, and tampered.
#include "core/retention.h"

#include <gmock/gmock.h>
#include <gtest/gtest.h>

#include <string>
#include <vector>

#include "core/ed25519.h"
#include "core/tenant_log.h"
#include "core/verify.h"

namespace trellis::audit {
namespace {

using ::testing::HasSubstr;

TEST(AuditRetentionTest, DurationsParseAndPrintInWholeUnits) {
  EXPECT_EQ(parseDuration("365d").value(), 365 * kDaySeconds);
  EXPECT_EQ(parseDuration("12h").value(), 12 * 3600);
  EXPECT_EQ(parseDuration("15m").value(), 900);
  EXPECT_EQ(parseDuration("30s").value(), 30);
  EXPECT_EQ(formatDuration(365 * kDaySeconds), "365d");
  EXPECT_EQ(formatDuration(7200), "2h");
  EXPECT_EQ(formatDuration(90), "90s");
  for (const char* bad : {"", "d", "12", "12x", "-1d", "1.5d", "99999999999999999999d", "d1"}) {
    auto r = parseDuration(bad);
    ASSERT_FALSE(r) << bad;
    EXPECT_THAT(r.status().message(), HasSubstr("not a duration")) << bad;
  }
  EXPECT_THAT(parseDuration("3000d").status().message(), HasSubstr("longer than 7 years"));
}

TEST(AuditRetentionTest, APolicyRoundTripsAndBadOnesAreNamed) {
  RetentionPolicy p;
  p.keep_s = 400 * kDaySeconds;
  p.hold = true;
  p.hold_reason = "case \"2026-114\"";
  p.hold_since_ms = 1234;
  auto back = RetentionPolicy::fromJson(p.toJson());
  ASSERT_TRUE(back) << back.status().message();
  EXPECT_EQ(back->keep_s, p.keep_s);
  EXPECT_TRUE(back->hold);
  EXPECT_EQ(back->hold_reason, p.hold_reason);
  EXPECT_EQ(back->hold_since_ms, 1234);
  EXPECT_FALSE(RetentionPolicy::fromJson("[]"));
  EXPECT_THAT(RetentionPolicy::fromJson(R"({"keep_s":0})").status().message(),
              HasSubstr("out of range"));
}

class AuditPurgeTest : public ::testing::Test {
 protected:
  void SetUp() override {
    key_ = std::make_unique<Ed25519Key>(Ed25519Key::generate().value());
    // 20 records; checkpoints at 5, 10, 15 (signed at times 105, 110, 115) and 20.
    for (int i = 1; i <= 20; ++i) {
      auto in = IncomingRecord::parse(R"({"tenant":"acme","action":"key.create","resource":"k)" +
                                      std::to_string(i) + R"("})");
      log_.commit(log_.prepare(*in, 100 + i, "hmac", {}));
      if (i % 5 == 0) log_.checkpoint(*key_, 100 + i);
    }
  }
  // What the sink keeps after purging through `through`, and the pack it then serves.
  PurgedPrefix prefixThrough(uint64_t through) const {
    PurgedPrefix p;
    p.through = through;
    for (uint64_t i = 0; i < through; ++i) p.leaves.push_back(log_.tree().leaf(i));
    for (const auto& cp : log_.checkpoints()) {
      if (cp.size == through) p.chain = cp.chain;
    }
    return p;
  }
  std::vector<std::string> recordsAfter(uint64_t through) const {
    std::vector<std::string> out;
    for (uint64_t i = through; i < log_.size(); ++i) out.push_back(log_.line(i));
    return out;
  }
  std::vector<std::string> checkpoints() const {
    std::vector<std::string> out;
    for (const auto& cp : log_.checkpoints()) out.push_back(cp.toJson());
    return out;
  }
  std::unique_ptr<Ed25519Key> key_;
  TenantLog log_{"acme"};
};

TEST_F(AuditPurgeTest, APurgeEndsAtTheNewestCheckpointOlderThanTheCutoff) {
  EXPECT_EQ(purgeBoundary(log_.checkpoints(), 0, 100), 0u);    // nothing that old
  EXPECT_EQ(purgeBoundary(log_.checkpoints(), 0, 111), 10u);   // checkpoints 5 and 10
  EXPECT_EQ(purgeBoundary(log_.checkpoints(), 10, 111), 10u);  // already purged
  EXPECT_EQ(purgeBoundary(log_.checkpoints(), 0, 1000), 20u);
}

TEST_F(AuditPurgeTest, APurgedLogKeepsItsRootsAndProofsAndRebuildsFromWhatItKeeps) {
  const Hash root20 = *log_.tree().root(20);
  const PurgedPrefix kept = prefixThrough(10);
  const auto later = recordsAfter(10);
  log_.purge(10);
  EXPECT_EQ(log_.purged(), 10u);
  EXPECT_EQ(log_.size(), 20u);
  EXPECT_EQ(log_.line(10), later.front());
  EXPECT_TRUE(log_.tree().inclusionProof(3, 20));  // a purged record's leaf is still proven

  // A restart: the kept prefix, then the stored records after it.
  auto stored = PurgedPrefix::fromJson(kept.toJson(), true);
  ASSERT_TRUE(stored) << stored.status().message();
  TenantLog again("acme");
  ASSERT_TRUE(again.restorePurged(*stored));
  for (const auto& line : later) ASSERT_TRUE(again.restore(line));
  EXPECT_EQ(*again.tree().root(20), root20);
  EXPECT_EQ(again.chainHead(), log_.chainHead());

  PurgedPrefix short_one = *stored;
  short_one.leaves.pop_back();
  EXPECT_FALSE(TenantLog("acme").restorePurged(short_one));
  EXPECT_FALSE(PurgedPrefix::fromJson(R"({"chain":"00","through":1,"leaves":[]})", true));
}

TEST_F(AuditPurgeTest, ARolledBackBlockLeavesTheLogAsBeforeEvenAfterAPurge) {
  // writeBatch() commits lines in memory before their block is stored; a block that is
  // not stored is rolled back. Also right after a purge, where the chain comes from it.
  log_.purge(10);
  for (uint64_t to : {20u, 15u, 10u}) {
    const Hash chain = log_.chainHead();
    const Hash root = *log_.tree().root(log_.size());
    const uint64_t size = log_.size();
    auto in = IncomingRecord::parse(R"({"tenant":"acme","action":"x"})");
    for (int i = 0; i < 3; ++i) log_.commit(log_.prepare(*in, 500, "hmac", {}));
    log_.rollback(size);
    EXPECT_EQ(log_.size(), size);
    EXPECT_EQ(log_.chainHead(), chain);
    EXPECT_EQ(*log_.tree().root(size), root);
    if (to < size) log_.rollback(to);
  }
  EXPECT_EQ(log_.size(), 10u);
  EXPECT_EQ(log_.chainHead(), log_.checkpoints()[1].chain);  // the head after record 10
}

TEST_F(AuditPurgeTest, APackAfterAPurgeVerifiesWithItsPurgedJson) {
  auto r = verifyEvidence(recordsAfter(10), checkpoints(), key_->publicPem(), std::nullopt,
                          prefixThrough(10).toJson());
  EXPECT_EQ(r.code, VerifyCode::kOk) << r.message;
  std::string notes;
  for (const auto& n : r.notes) notes += n + "\n";
  EXPECT_THAT(notes, HasSubstr("records 1..10 purged by retention"));

  // An auditor's checkpoint from before the purge still proves the log was only extended.
  auto mine = verifyEvidence(recordsAfter(10), checkpoints(), key_->publicPem(),
                             log_.checkpoints()[0].toJson(), prefixThrough(10).toJson());
  EXPECT_EQ(mine.code, VerifyCode::kOk) << mine.message;
}

TEST_F(AuditPurgeTest, APurgedPackWithoutItsPurgedJsonOrWithForgedHashesFails) {
  auto missing = verifyEvidence(recordsAfter(10), checkpoints(), key_->publicPem(), std::nullopt);
  EXPECT_EQ(missing.code, VerifyCode::kDeleted) << missing.message;
  EXPECT_THAT(missing.message, HasSubstr("purged.json"));

  PurgedPrefix forged = prefixThrough(10);
  forged.leaves[3][0] ^= 1;  // a purged record that was "different"
  auto leaf = verifyEvidence(recordsAfter(10), checkpoints(), key_->publicPem(), std::nullopt,
                             forged.toJson());
  EXPECT_EQ(leaf.code, VerifyCode::kModified) << leaf.message;

  forged = prefixThrough(10);
  forged.chain[0] ^= 1;
  auto chain = verifyEvidence(recordsAfter(10), checkpoints(), key_->publicPem(), std::nullopt,
                              forged.toJson());
  EXPECT_EQ(chain.code, VerifyCode::kModified) << chain.message;

  // Records purged from the middle are deleted records, whatever purged.json says.
  auto later = recordsAfter(10);
  later.erase(later.begin() + 2);
  auto hole = verifyEvidence(later, checkpoints(), key_->publicPem(), std::nullopt,
                             prefixThrough(10).toJson());
  EXPECT_EQ(hole.code, VerifyCode::kDeleted) << hole.message;

  auto garbage = verifyEvidence(recordsAfter(10), checkpoints(), key_->publicPem(), std::nullopt,
                                "{\"through\": 10}");
  EXPECT_EQ(garbage.code, VerifyCode::kBadPack) << garbage.message;
  EXPECT_THAT(garbage.message, HasSubstr("purged.json"));
}

}  // namespace
}  // namespace trellis::audit
