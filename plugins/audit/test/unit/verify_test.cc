// The offline verifier on evidence packs made by the real log code, each tampered with in
// one way: every kind is caught with its own exit code and says what it found.
#include "core/verify.h"

#include <gmock/gmock.h>
#include <gtest/gtest.h>

#include <algorithm>
#include <fstream>
#include <string>
#include <vector>

#include "core/ed25519.h"
#include "core/record.h"
#include "core/tar.h"
#include "core/tenant_log.h"

namespace trellis::audit {
namespace {

using ::testing::HasSubstr;

class AuditVerifyTest : public ::testing::Test {
 protected:
  void SetUp() override {
    key_ = std::make_unique<Ed25519Key>(Ed25519Key::generate().value());
    // 10 records, checkpoints at 4 and 8; records 9 and 10 chained but not yet signed.
    for (int i = 1; i <= 10; ++i) {
      append(i);
      if (i == 4 || i == 8) checkpoints_.push_back(log_.checkpoint(*key_, 5000 + i).toJson());
    }
    for (uint64_t i = 0; i < log_.size(); ++i) records_.push_back(log_.line(i));
  }
  void append(int i) {
    auto in = IncomingRecord::parse(R"({"tenant":"acme","action":"key.create","resource":"k)" +
                                    std::to_string(i) + R"("})");
    log_.commit(log_.prepare(*in, 1000 + i, "hmac", {}));
  }
  VerifyReport verify(const std::optional<std::string>& mine = std::nullopt) const {
    return verifyEvidence(records_, checkpoints_, key_->publicPem(), mine);
  }
  std::unique_ptr<Ed25519Key> key_;
  TenantLog log_{"acme"};
  std::vector<std::string> records_, checkpoints_;
};

TEST_F(AuditVerifyTest, AnUntouchedPackVerifies) {
  auto r = verify();
  EXPECT_EQ(r.code, VerifyCode::kOk) << r.message;
  std::string notes;
  for (auto& n : r.notes) notes += n + "\n";
  EXPECT_THAT(notes, HasSubstr("2 record(s) after the newest checkpoint"));
}

TEST_F(AuditVerifyTest, AModifiedRecordIsCaught) {
  const auto at = records_[2].find("\"k3\"");
  records_[2].replace(at, 4, "\"kX\"");
  auto r = verify();
  EXPECT_EQ(r.code, VerifyCode::kModified) << r.message;
  EXPECT_THAT(r.message, HasSubstr("seq 3 was modified"));
}

TEST_F(AuditVerifyTest, AModifiedRecordWithARecomputedChainIsCaughtByTheSignedRoot) {
  // The operator rewrites record 2 and recomputes every later link: the chain is whole
  // again, but the signed root and chain head are not theirs to recompute.
  TenantLog forged("acme");
  for (int i = 1; i <= 10; ++i) {
    auto in = IncomingRecord::parse(R"({"tenant":"acme","action":"key.create","resource":"k)" +
                                    std::string(i == 2 ? "forged" : std::to_string(i)) + R"("})");
    forged.commit(forged.prepare(*in, 1000 + i, "hmac", {}));
  }
  for (uint64_t i = 0; i < forged.size(); ++i) records_[i] = forged.line(i);
  auto r = verify();
  EXPECT_EQ(r.code, VerifyCode::kModified) << r.message;
  EXPECT_THAT(r.message, HasSubstr("do not hash to the signed root"));
}

TEST_F(AuditVerifyTest, ADeletedRecordIsCaught) {
  records_.erase(records_.begin() + 4);
  auto r = verify();
  EXPECT_EQ(r.code, VerifyCode::kDeleted) << r.message;
  EXPECT_THAT(r.message, HasSubstr("seq 5 is missing"));
}

TEST_F(AuditVerifyTest, AnInsertedRecordIsCaught) {
  // A copy of record 3 with another resource, placed after it.
  std::string extra = records_[2];
  extra.replace(extra.find("\"k3\""), 4, "\"k99\"");
  records_.insert(records_.begin() + 3, extra);
  auto r = verify();
  EXPECT_EQ(r.code, VerifyCode::kInserted) << r.message;
  EXPECT_THAT(r.message, HasSubstr("seq 3 appears twice"));
}

TEST_F(AuditVerifyTest, AnInsertedRecordThatFitsTheNumberingIsCaughtByTheChain) {
  // Renumbered to fit, with a valid link to its predecessor: the next link breaks.
  TenantLog fake("acme");
  for (int i = 0; i < 3; ++i) ASSERT_TRUE(fake.restore(records_[i]).isOk());
  auto in = IncomingRecord::parse(R"({"tenant":"acme","action":"key.delete"})");
  std::string extra = fake.prepare(*in, 1, "hmac", {});  // seq 4, prev = hash(record 3)
  std::vector<std::string> renumbered(records_.begin(), records_.begin() + 3);
  renumbered.push_back(extra);
  for (size_t i = 3; i < records_.size(); ++i) {
    std::string line = records_[i];
    const std::string from = "\"seq\":" + std::to_string(i + 1) + ",";
    line.replace(line.find(from), from.size(), "\"seq\":" + std::to_string(i + 2) + ",");
    renumbered.push_back(line);
  }
  records_ = renumbered;
  auto r = verify();
  EXPECT_EQ(r.code, VerifyCode::kInserted) << r.message;
  EXPECT_THAT(r.message, HasSubstr("seq 4 (line 4) is not in the chain"));
}

TEST_F(AuditVerifyTest, ReorderedRecordsAreCaught) {
  std::swap(records_[5], records_[6]);
  auto r = verify();
  EXPECT_EQ(r.code, VerifyCode::kReordered) << r.message;
  EXPECT_THAT(r.message, HasSubstr("seq 6 (line 7) comes after seq 7"));
}

TEST_F(AuditVerifyTest, ATruncatedLogIsCaught) {
  records_.resize(6);  // the checkpoint at 8 covers records 7 and 8
  auto r = verify();
  EXPECT_EQ(r.code, VerifyCode::kTruncated) << r.message;
  EXPECT_THAT(r.message, HasSubstr("holds 6 records but a signed checkpoint covers 8"));
}

TEST_F(AuditVerifyTest, ABadSignatureIsCaught) {
  auto cp = *Checkpoint::fromJson(checkpoints_[0]);
  cp.time_ms += 1;  // a field changed after signing
  checkpoints_[0] = cp.toJson();
  auto r = verify();
  EXPECT_EQ(r.code, VerifyCode::kBadSignature) << r.message;
  EXPECT_THAT(r.message, HasSubstr("checkpoint at size 4"));
}

TEST_F(AuditVerifyTest, ACheckpointSignedByAnotherKeyIsCaught) {
  auto other = Ed25519Key::generate();
  checkpoints_.push_back(log_.checkpoint(*other, 1).toJson());
  auto r = verify();
  EXPECT_EQ(r.code, VerifyCode::kBadSignature) << r.message;
  EXPECT_THAT(r.message, HasSubstr("checkpoint at size 10"));
}

TEST_F(AuditVerifyTest, ForkedCheckpointsAreCaught) {
  // The operator, holding the key, signs a second history of the first four records.
  TenantLog other("acme");
  for (int i = 1; i <= 4; ++i) {
    auto in = IncomingRecord::parse(R"({"tenant":"acme","action":"key.rotate"})");
    other.commit(other.prepare(*in, 1, "hmac", {}));
  }
  checkpoints_.push_back(other.checkpoint(*key_, 7000).toJson());
  auto r = verify();
  EXPECT_EQ(r.code, VerifyCode::kFork) << r.message;
  EXPECT_THAT(r.message, HasSubstr("two signed checkpoints at size 4"));
  // At a size no other checkpoint has, the fork shows against the records.
  for (int i = 5; i <= 6; ++i) {
    auto in = IncomingRecord::parse(R"({"tenant":"acme","action":"key.rotate"})");
    other.commit(other.prepare(*in, 1, "hmac", {}));
  }
  checkpoints_.pop_back();
  checkpoints_.push_back(other.checkpoint(*key_, 7001).toJson());
  r = verify();
  EXPECT_EQ(r.code, VerifyCode::kFork) << r.message;
  EXPECT_THAT(r.message, HasSubstr("checkpoint at size 6"));
}

TEST_F(AuditVerifyTest, AClientCheckpointIsCheckedByAConsistencyProof) {
  const std::string mine = checkpoints_[0];  // kept by the auditor at size 4
  auto r = verify(mine);
  EXPECT_EQ(r.code, VerifyCode::kOk) << r.message;
  std::string notes;
  for (auto& n : r.notes) notes += n + "\n";
  EXPECT_THAT(notes, HasSubstr("consistency proof from your checkpoint (size 4) to size 8"));

  // The operator rewrote history and re-signed everything; the old checkpoint the auditor
  // kept is the only witness, and the consistency proof fails.
  TenantLog rewritten("acme");
  for (int i = 1; i <= 10; ++i) {
    auto in = IncomingRecord::parse(R"({"tenant":"acme","action":"key.create","resource":"k)" +
                                    std::string(i == 1 ? "gone" : std::to_string(i)) + R"("})");
    rewritten.commit(rewritten.prepare(*in, 1000 + i, "hmac", {}));
    if (i == 8) checkpoints_ = {rewritten.checkpoint(*key_, 9000).toJson()};
  }
  records_.clear();
  for (uint64_t i = 0; i < rewritten.size(); ++i) records_.push_back(rewritten.line(i));
  ASSERT_EQ(verify().code, VerifyCode::kOk);  // self-consistent on its own
  r = verify(mine);
  EXPECT_EQ(r.code, VerifyCode::kInconsistent) << r.message;
  EXPECT_THAT(r.message, HasSubstr("not a prefix of the newest at size 8"));
}

TEST_F(AuditVerifyTest, AClientCheckpointPastThePacksNewestMeansThePackWasCutShort) {
  const std::string at8 = checkpoints_[1];  // the auditor kept the checkpoint at 8
  records_.resize(5);
  checkpoints_.pop_back();  // the pack only shows the one at 4
  auto r = verify(at8);
  EXPECT_EQ(r.code, VerifyCode::kTruncated) << r.message;
  EXPECT_THAT(r.message, HasSubstr("your checkpoint covers 8 records"));
}

TEST_F(AuditVerifyTest, BadInputIsAClearMessageNotACrash) {
  EXPECT_EQ(verifyEvidence(records_, checkpoints_, "not a key", std::nullopt).code,
            VerifyCode::kBadPack);
  checkpoints_.push_back("{\"size\":");
  EXPECT_EQ(verify().code, VerifyCode::kBadPack);
  checkpoints_.pop_back();
  records_[1] = "garbage";
  EXPECT_EQ(verify().code, VerifyCode::kModified);
  EXPECT_EQ(verify(std::string("{}")).code, VerifyCode::kModified);
  EXPECT_EQ(verifyPack("/nonexistent/pack", std::nullopt).code, VerifyCode::kBadPack);
}

// The files of a pack as GET …/evidence exports them (without manifest and proofs).
PackFiles packOf(const std::vector<std::string>& records, const std::vector<std::string>& cps,
                 const std::string& pem) {
  PackFiles files;
  for (const auto& r : records) files["records.jsonl"] += r + "\n";
  for (const auto& c : cps) files["checkpoints.jsonl"] += c + "\n";
  files["public-key.pem"] = pem;
  return files;
}

TEST_F(AuditVerifyTest, APackArchiveChecksItsManifestProofsAndTheAuditorsOwnKey) {
  PackFiles files = packOf(records_, checkpoints_, key_->publicPem());
  const auto proof = *log_.tree().consistencyProof(4, 8);
  std::string hex = "[";
  for (size_t i = 0; i < proof.size(); ++i) hex += (i ? ",\"" : "\"") + toHex(proof[i]) + "\"";
  files["proofs.jsonl"] = R"({"from":4,"proof":)" + hex + R"(],"to":8})" + "\n";
  files["manifest.json"] =
      R"({"files":{"records.jsonl":")" + toHex(sha256(files["records.jsonl"])) + R"("}})";
  const std::string path = ::testing::TempDir() + "/audit-pack.tar";
  std::ofstream(path, std::ios::binary) << tarArchive(
      std::vector<std::pair<std::string, std::string>>(files.begin(), files.end()), 0);
  auto r = verifyPack(path, std::nullopt);
  EXPECT_EQ(r.code, VerifyCode::kOk) << r.message;

  // Records edited in transit: the manifest's digest no longer matches.
  PackFiles edited = files;
  edited["records.jsonl"][5] ^= 1;
  r = verifyPackFiles(edited, std::nullopt);
  EXPECT_EQ(r.code, VerifyCode::kBadPack) << r.message;
  EXPECT_THAT(r.message, HasSubstr("records.jsonl does not match its SHA-256"));
  // A proof that does not lead from the signed root at 4 to the one at 8.
  PackFiles forged = files;
  forged["proofs.jsonl"][30] = forged["proofs.jsonl"][30] == 'a' ? 'b' : 'a';
  r = verifyPackFiles(forged, std::nullopt);
  EXPECT_EQ(r.code, VerifyCode::kFork) << r.message;
  // The operator swapped in a key of their own, and re-signed: the auditor's key says no.
  auto other = Ed25519Key::generate().value();
  r = verifyPackFiles(files, std::nullopt, other.publicPem());
  EXPECT_EQ(r.code, VerifyCode::kBadSignature) << r.message;
  r = verifyPackFiles(files, std::nullopt, key_->publicPem());
  EXPECT_EQ(r.code, VerifyCode::kOk) << r.message;
  PackFiles missing = files;
  missing.erase("checkpoints.jsonl");
  EXPECT_THAT(verifyPackFiles(missing, std::nullopt).message,
              HasSubstr("missing checkpoints.jsonl"));
}

}  // namespace
}  // namespace trellis::audit
