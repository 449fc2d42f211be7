// Retention on a real trellisd with trellis/audit as the kernel's audit sink: a log's
// retention is set through the admin routes (and refused outside its bounds), a legal
// hold blocks purging, a purge removes whole sealed segments and is itself a signed
// record, the purged log survives kill -9, and its evidence pack verifies with
// purged.json (and fails without it).
#include <Poco/JSON/Object.h>
#include <Poco/JSON/Parser.h>
#include <gmock/gmock.h>
#include <gtest/gtest.h>
#include <soci/soci.h>
#include <soci/sqlite3/soci-sqlite3.h>

#include <chrono>
#include <cstdio>
#include <sstream>
#include <string>
#include <thread>
#include <vector>

#include "audit_test_util.h"
#include "support/test_support.h"

namespace trellis::test {
namespace {

using Poco::JSON::Object;
using ::testing::HasSubstr;

class AuditRetentionTest : public ::testing::Test {
 protected:
  void SetUp() override {
    server_ = std::make_unique<TrellisdProcess>(
        defaultTestConfig("    - id: trellis/audit\n"
                          "      system: true\n"
                          "      config: {checkpoint_every: 4, checkpoint_interval_s: 3600,"
                          " min_retention: 1s}\n",
                          "audit:\n  sink: trellis/audit\n  on_sink_failure: block\n"));
    ASSERT_TRUE(server_->start()) << server_->log();
  }
  HttpReply audit(const std::string& method, const std::string& tail,
                  const std::string& body = "") {
    return request(server_->adminPort(), method, "/v1/x/trellis/audit/" + tail,
                   {{"Authorization", "Bearer " + server_->adminToken()}}, body);
  }
  uint64_t firstSeq() {
    auto recs = lines(audit("GET", "logs/_system/records").body);
    return recs.empty() ? 0 : json(recs.front())->getValue<uint64_t>("seq");
  }
  // The plugin's system storage (SQLite), which the crash test reads and edits with
  // trellisd stopped cleanly: a running (or killed) trellisd may hold its latest writes in
  // the file's redo log (<file>-redo.N), which a clean stop copies into the file.
  std::filesystem::path systemDb() const {
    return server_->dir() / "data" / "tenants" / "_system.db";
  }
  long long storedRecordsThrough(uint64_t seq) {
    soci::session sql(soci::sqlite3, "db=\"" + systemDb().string() + "\"");
    long long n = -1;
    sql << "SELECT COUNT(*) FROM kv WHERE plugin = 'trellis/audit' AND CAST(key AS TEXT) "
           "BETWEEN 'rec/_system/' AND 'rec/_system/" +
               padded(seq) + "'",
        soci::into(n);
    return n;
  }
  // Writes the pack an auditor exports and runs the verifier on it.
  std::string verifyPack(bool with_purged, int* status) {
    TempDir pack;
    // Checkpoints first: each read is itself recorded in this log and may be signed.
    writeFile(pack / "checkpoints.jsonl", audit("GET", "logs/_system/checkpoints").body);
    writeFile(pack / "records.jsonl", audit("GET", "logs/_system/records").body);
    writeFile(pack / "public-key.pem", audit("GET", "public-key").body);
    if (with_purged) writeFile(pack / "purged.json", audit("GET", "logs/_system/purged").body);
    return runCommand(std::string(TRELLIS_AUDIT_TOOL) + " verify " + pack.path().string() + " 2>&1",
                      status);
  }
  std::unique_ptr<TrellisdProcess> server_;
};

TEST_F(AuditRetentionTest, APurgeRemovesOldSealedSegmentsOnlyWithoutAHoldAndStaysVerifiable) {
  auto initial = audit("GET", "logs/_system/retention");
  ASSERT_EQ(initial.status, 200) << initial.body;
  EXPECT_EQ(json(initial.body)->getValue<std::string>("keep"), "365d");  // the default

  // Bad retentions are refused, naming the problem; nothing changes.
  auto too_short = audit("PUT", "logs/_system/retention", R"({"keep":"0s"})");
  EXPECT_EQ(too_short.status, 400);
  EXPECT_THAT(too_short.body, HasSubstr("min_retention"));
  auto garbage = audit("PUT", "logs/_system/retention", R"({"keep":"soon"})");
  EXPECT_EQ(garbage.status, 400);
  EXPECT_THAT(garbage.body, HasSubstr("not a duration"));
  EXPECT_EQ(audit("PUT", "logs/_system/retention", R"({"keep":"3000d"})").status, 400);
  EXPECT_EQ(audit("PUT", "logs/_system/retention", "[1]").status, 400);
  EXPECT_EQ(audit("PUT", "logs/_system/legal-hold", R"({"reason":""})").status, 400);

  // Nothing is old enough under the default: a purge changes nothing.
  for (int i = 0; i < 4; ++i) ASSERT_EQ(audit("GET", "logs").status, 200);
  auto none = audit("POST", "logs/_system/purge");
  ASSERT_EQ(none.status, 200) << none.body;
  EXPECT_EQ(json(none.body)->getValue<uint64_t>("records"), 0u);
  EXPECT_EQ(firstSeq(), 1u);

  ASSERT_EQ(audit("PUT", "logs/_system/retention", R"({"keep":"1s"})").status, 200);
  // Changing retention is itself a record of the log (item 5), with the new value.
  const auto set = audit("GET", "logs/_system/records?limit=100000").body;
  EXPECT_THAT(set, HasSubstr("\"action\":\"audit.retention.set\""));
  EXPECT_THAT(set, HasSubstr("\"keep\":\"1s\""));
  auto held = audit("PUT", "logs/_system/legal-hold", R"({"reason":"case 2026-114"})");
  ASSERT_EQ(held.status, 200) << held.body;
  EXPECT_THAT(held.body, HasSubstr("case 2026-114"));
  std::this_thread::sleep_for(std::chrono::milliseconds(1500));

  // Under legal hold, nothing is purged, whatever the retention says.
  auto refused = audit("POST", "logs/_system/purge");
  EXPECT_EQ(refused.status, 409) << refused.body;
  EXPECT_THAT(refused.body, HasSubstr("legal hold"));
  EXPECT_EQ(firstSeq(), 1u);

  ASSERT_EQ(audit("DELETE", "logs/_system/legal-hold").status, 200);
  auto purged = audit("POST", "logs/_system/purge");
  ASSERT_EQ(purged.status, 200) << purged.body;
  const uint64_t through = json(purged.body)->getValue<uint64_t>("purged_through");
  EXPECT_GT(through, 0u);
  bool at_checkpoint = false;  // a purge ends where a signed checkpoint sealed a segment
  for (const auto& cp : lines(audit("GET", "logs/_system/checkpoints").body)) {
    at_checkpoint |= json(cp)->getValue<uint64_t>("size") == through;
  }
  EXPECT_TRUE(at_checkpoint) << through;
  EXPECT_EQ(json(purged.body)->getValue<uint64_t>("records"), through);

  // The log now starts after the purge, and says what happened to it, in signed records.
  auto records = audit("GET", "logs/_system/records").body;
  EXPECT_EQ(firstSeq(), through + 1);
  // (The older retention change may have gone with its segment; the release is newer.)
  EXPECT_THAT(records, HasSubstr("\"action\":\"audit.legal_hold.release\""));
  EXPECT_THAT(records, HasSubstr("\"action\":\"audit.purge\""));
  EXPECT_THAT(records, HasSubstr("\"purged_through\":" + std::to_string(through)));
  auto retention = json(audit("GET", "logs/_system/retention").body);
  EXPECT_EQ(retention->getValue<uint64_t>("purged_through"), through);
  EXPECT_TRUE(retention->isNull("legal_hold"));

  int status = -1;
  std::string out = verifyPack(true, &status);
  EXPECT_EQ(status, 0) << out;
  EXPECT_THAT(out, HasSubstr("purged by retention"));
  out = verifyPack(false, &status);
  EXPECT_EQ(status, 11) << out;  // without purged.json the first records look deleted
  EXPECT_THAT(out, HasSubstr("purged.json"));

  // The evidence pack in one archive, taken at one instant: it verifies, with its proofs,
  // and holds the server's own verification for the auditor to compare.
  auto evidence = audit("GET", "logs/_system/evidence");
  ASSERT_EQ(evidence.status, 200);
  EXPECT_EQ(evidence.header("content-type"), "application/x-tar");
  TempDir dir;
  writeFile(dir / "pack.tar", evidence.body);
  writeFile(dir / "key.pem", audit("GET", "public-key").body);
  out = runCommand(std::string(TRELLIS_AUDIT_TOOL) + " verify " + (dir / "pack.tar").string() +
                       " --public-key " + (dir / "key.pem").string() + " 2>&1",
                   &status);
  EXPECT_EQ(status, 0) << out;
  EXPECT_THAT(out, HasSubstr("purged by retention"));
  EXPECT_THAT(out, HasSubstr("proofs.jsonl: every consistency proof verified"));
  out = runCommand(
      "cat " + (dir / "pack.tar").string() + " | " + TRELLIS_AUDIT_TOOL + " verify - --quiet 2>&1",
      &status);
  EXPECT_EQ(status, 0) << out;  // a live log, piped in
  out = runCommand("tar -xOf " + (dir / "pack.tar").string() + " verification.txt", &status);
  EXPECT_THAT(out, HasSubstr("ok: the evidence pack verifies"));

  // kill -9 and restart: the log still starts after the purge and verifies.
  server_->kill();
  ASSERT_TRUE(server_->start()) << server_->log();
  EXPECT_EQ(firstSeq(), through + 1);
  ASSERT_EQ(audit("POST", "logs/_system/checkpoint").status, 200);
  out = verifyPack(true, &status);
  EXPECT_EQ(status, 0) << out;
  EXPECT_EQ(json(audit("GET", "logs/_system/retention").body)->getValue<std::string>("keep"), "1s");
}

TEST_F(AuditRetentionTest, APurgeACrashInterruptedIsFinishedAtTheNextStart) {
  ASSERT_EQ(audit("PUT", "logs/_system/retention", R"({"keep":"1s"})").status, 200);
  for (int i = 0; i < 6; ++i) ASSERT_EQ(audit("GET", "logs").status, 200);
  std::this_thread::sleep_for(std::chrono::milliseconds(1500));
  TempDir saved;
  const auto before = saved / "before.db";
  ASSERT_EQ(server_->stop(), 0);
  {
    soci::session sql(soci::sqlite3, "db=\"" + systemDb().string() + "\"");
    sql << "VACUUM INTO '" + before.string() + "'";
  }
  ASSERT_TRUE(server_->start()) << server_->log();
  auto purged = audit("POST", "logs/_system/purge");
  ASSERT_EQ(purged.status, 200) << purged.body;
  const uint64_t through = json(purged.body)->getValue<uint64_t>("purged_through");
  const uint64_t recorded_as = json(purged.body)->getValue<uint64_t>("recorded_as");
  ASSERT_GT(through, 0u);
  ASSERT_EQ(server_->stop(), 0);
  EXPECT_EQ(storedRecordsThrough(through), 0) << "the purged lines are deleted";

  // Storage made as a kill -9 right after the purge's commit point leaves it: the prefix is
  // committed, but neither the purge record (nor anything after it) nor the deletes happened.
  {
    soci::session sql(soci::sqlite3, "db=\"" + systemDb().string() + "\"");
    sql << "DELETE FROM kv WHERE plugin = 'trellis/audit' AND ("
           "CAST(key AS TEXT) BETWEEN 'rec/_system/" +
               padded(recorded_as) +
               "' AND 'rec/_system/~' OR "
               "CAST(key AS TEXT) BETWEEN 'cp/_system/" +
               padded(recorded_as) + "' AND 'cp/_system/~')";
    sql << "UPDATE kv SET value = CAST(replace(CAST(value AS TEXT), '\"recorded_as\":" +
               std::to_string(recorded_as) +
               "', '\"recorded_as\":0') AS BLOB) "
               "WHERE plugin = 'trellis/audit' AND CAST(key AS TEXT) = 'purged/_system'";
    sql << "ATTACH DATABASE '" + before.string() + "' AS before";
    sql << "INSERT OR IGNORE INTO kv SELECT * FROM before.kv WHERE plugin = 'trellis/audit' AND "
           "CAST(key AS TEXT) BETWEEN 'rec/_system/' AND 'rec/_system/" +
               padded(through) + "'";
  }
  ASSERT_EQ(storedRecordsThrough(through), static_cast<long long>(through));

  ASSERT_TRUE(server_->start()) << server_->log();
  EXPECT_EQ(firstSeq(), through + 1) << "the lines left behind are not served";
  const auto records = audit("GET", "logs/_system/records").body;
  EXPECT_THAT(records, HasSubstr("\"recovered\":true"));
  EXPECT_THAT(records, HasSubstr("\"purged_through\":" + std::to_string(through)));
  int status = -1;
  std::string out = verifyPack(true, &status);
  EXPECT_EQ(status, 0) << out;

  // The next purge deletes the lines the crash left behind.
  ASSERT_EQ(audit("POST", "logs/_system/purge").status, 200);
  ASSERT_EQ(server_->stop(), 0);
  EXPECT_EQ(storedRecordsThrough(through), 0);
}

}  // namespace
}  // namespace trellis::test
