// trellis/audit's checkpoint mirror on a real trellisd: every signed checkpoint lands in the
// operator's directory as stored; while the mirror cannot be written admin actions still
// succeed and are recorded, and the missing checkpoints appear once it can; a differing file
// already there is kept. A pack whose checkpoints come from the mirror passes trellis-audit.
#include <gtest/gtest.h>

#include <filesystem>
#include <fstream>
#include <set>
#include <sstream>
#include <string>

#include "audit_test_util.h"
#include "support/test_support.h"

namespace trellis::test {
namespace {

namespace fs = std::filesystem;

class AuditMirrorTest : public ::testing::Test {
 protected:
  void start() {
    server_ = std::make_unique<TrellisdProcess>(
        defaultTestConfig("    - id: trellis/audit\n"
                          "      system: true\n"
                          "      config: {checkpoint_every: 1, checkpoint_interval_s: 3600,"
                          " checkpoint_mirror_dir: \"" +
                              mirror_.path().string() + "\"}\n",
                          "audit:\n  sink: trellis/audit\n  on_sink_failure: block\n"));
    ASSERT_TRUE(server_->start()) << server_->log();
  }
  HttpReply admin(const std::string& method, const std::string& path, const std::string& body) {
    return request(server_->adminPort(), method, path,
                   {{"Authorization", "Bearer " + server_->adminToken()}}, body);
  }
  HttpReply createToken(const std::string& name) {
    return admin("POST", "/v1/admin-tokens", R"({"name":")" + name + R"(","role":"auditor"})");
  }
  // The stored checkpoints of the system log, one JSON per line.
  std::vector<std::string> storedCheckpoints() {
    auto reply = admin("GET", "/v1/x/trellis/audit/logs/_system/checkpoints", "");
    EXPECT_EQ(reply.status, 200) << reply.body;
    std::vector<std::string> out;
    std::istringstream in(reply.body);
    for (std::string line; std::getline(in, line);) {
      if (!line.empty()) out.push_back(line);
    }
    return out;
  }
  static uint64_t sizeOf(const std::string& cp) {
    const auto at = cp.find("\"size\":");
    return std::stoull(cp.substr(at + 7));
  }
  fs::path fileOf(const std::string& cp) {
    return mirror_.path() / "_system" / (padded(sizeOf(cp)) + ".json");
  }
  TempDir mirror_;
  std::unique_ptr<TrellisdProcess> server_;
};

TEST_F(AuditMirrorTest, EveryCheckpointIsMirroredAsStored) {
  start();
  ASSERT_EQ(createToken("carol").status, 201);
  ASSERT_EQ(createToken("dave").status, 201);
  const auto cps = storedCheckpoints();
  ASSERT_GE(cps.size(), 2u);
  for (const auto& cp : cps) EXPECT_EQ(readFile(fileOf(cp)), cp) << fileOf(cp);

  // An evidence pack whose checkpoints come from the mirror alone verifies (read before the
  // records, so every mirrored checkpoint is covered by them).
  std::set<fs::path> files;
  for (const auto& f : fs::directory_iterator(mirror_.path() / "_system")) files.insert(f.path());
  std::string mirrored;
  for (const auto& f : files) mirrored += readFile(f) + "\n";
  TempDir pack;
  writeFile(pack / "checkpoints.jsonl", mirrored);
  writeFile(pack / "records.jsonl",
            admin("GET", "/v1/x/trellis/audit/logs/_system/records", "").body);
  writeFile(pack / "public-key.pem", admin("GET", "/v1/x/trellis/audit/public-key", "").body);
  int status = -1;
  const std::string out = runCommand(
      std::string(TRELLIS_AUDIT_TOOL) + " verify " + pack.path().string() + " 2>&1", &status);
  EXPECT_EQ(status, 0) << out;
  EXPECT_NE(out.find("ok: the evidence pack verifies"), std::string::npos) << out;
}

TEST_F(AuditMirrorTest, AnUnwritableMirrorLosesNoRecordAndCatchesUpLater) {
  // A file where the log's directory belongs: writes fail even for root.
  std::ofstream(mirror_.path() / "_system") << "in the way";
  start();
  ASSERT_EQ(createToken("carol").status, 201);
  ASSERT_EQ(createToken("dave").status, 201);
  const auto before = storedCheckpoints();
  ASSERT_GE(before.size(), 2u);
  EXPECT_FALSE(fs::is_directory(mirror_.path() / "_system"));
  // One warning for the outage, not one per record.
  const std::string log = server_->log();
  size_t warnings = 0;
  for (size_t at = 0; (at = log.find("checkpoint mirror", at)) != std::string::npos; ++at) {
    ++warnings;
  }
  EXPECT_EQ(warnings, 1u) << log;

  fs::remove(mirror_.path() / "_system");
  ASSERT_EQ(createToken("erin").status, 201);
  for (const auto& cp : storedCheckpoints()) EXPECT_EQ(readFile(fileOf(cp)), cp) << fileOf(cp);
}

TEST_F(AuditMirrorTest, ADifferingExistingFileIsNotOverwritten) {
  fs::create_directory(mirror_.path() / "_system");
  const fs::path forged = mirror_.path() / "_system" / (padded(1) + ".json");
  std::ofstream(forged) << "{\"forged\":true}";
  start();
  ASSERT_EQ(createToken("carol").status, 201);
  const auto cps = storedCheckpoints();
  ASSERT_FALSE(cps.empty());
  EXPECT_EQ(sizeOf(cps.front()), 1u);
  EXPECT_EQ(readFile(forged), "{\"forged\":true}");
  for (size_t i = 1; i < cps.size(); ++i) EXPECT_EQ(readFile(fileOf(cps[i])), cps[i]);
}

}  // namespace
}  // namespace trellis::test
