// trellis/audit's checkpoint timer on a real trellisd (issue #15 item 3, "every N records or
// T seconds"): records followed by silence are signed, and the checkpoint mirrored, once the
// oldest of them is checkpoint_interval_s old, although nobody reads or writes the log; the
// log still verifies; and a log with nothing new is not signed again.
#include <gtest/gtest.h>

#include <chrono>
#include <filesystem>
#include <fstream>
#include <set>
#include <sstream>
#include <string>
#include <thread>

#include "audit_test_util.h"
#include "core/record.h"
#include "support/test_support.h"

namespace trellis::test {
namespace {

namespace fs = std::filesystem;

class AuditCheckpointTimerTest : public ::testing::Test {
 protected:
  void SetUp() override {
    // N out of reach: only the interval (T = 1 s) signs. The tenant's log is written by its
    // own data-plane requests (config access), so the admin calls below never add to it.
    server_ = std::make_unique<TrellisdProcess>(
        defaultTestConfig("    - id: trellis/audit\n"
                          "      system: true\n"
                          "      config: {checkpoint_every: 1000, checkpoint_interval_s: 1,"
                          " access: {acme: [\"GET /hello/*\"]}, checkpoint_mirror_dir: \"" +
                              mirror_.path().string() +
                              "\"}\n"
                              "    - id: trellis/hello\n"
                              "      config: {greeting: Hello}\n",
                          "audit:\n  sink: trellis/audit\n"));
    ASSERT_TRUE(server_->start()) << server_->log();
  }
  HttpReply audit(const std::string& tail) {
    return request(server_->adminPort(), "GET", "/v1/x/trellis/audit/" + tail,
                   {{"Authorization", "Bearer " + server_->adminToken()}});
  }
  // acme's size and signed size, from the logs route (which signs nothing itself).
  struct Sizes {
    uint64_t size = 0, signed_size = 0;
  };
  Sizes acme() {
    auto logs = json(audit("logs").body)->getArray("logs");
    for (size_t i = 0; logs && i < logs->size(); ++i) {
      auto log = logs->getObject(static_cast<unsigned>(i));
      if (log->getValue<std::string>("log") == "acme") {
        return {log->getValue<uint64_t>("size"), log->getValue<uint64_t>("checkpointed_size")};
      }
    }
    return {};
  }
  // The checkpoints of acme in the mirror, by file name (the zero-padded size).
  std::set<fs::path> mirrored() {
    std::set<fs::path> out;
    std::error_code ec;
    for (const auto& f : fs::directory_iterator(mirror_.path() / "acme", ec)) out.insert(f.path());
    return out;
  }
  TempDir mirror_;
  std::unique_ptr<TrellisdProcess> server_;
};

TEST_F(AuditCheckpointTimerTest, AnIdleTailIsSignedAndMirroredWithoutAReadOrWrite) {
  auto hello = [&](int i) {
    return request(server_->port(), "GET", "/hello/n" + std::to_string(i),
                   {{"Authorization", "Bearer acme-key"}})
        .status;
  };
  // A log's first record is signed at once; records that follow within the interval are
  // left unsigned by their appends. The usage stream delivers in batches, so a burst may
  // land a second or more later and be signed by its own append: then try again.
  Sizes tail;
  int sent = 0;
  for (int attempt = 0; attempt < 5 && tail.size == tail.signed_size; ++attempt) {
    for (int i = 0; i < 3; ++i) ASSERT_EQ(hello(sent++), 200);
    ASSERT_TRUE(eventually([&] { return acme().size >= static_cast<uint64_t>(sent); }))
        << server_->log();
    tail = acme();
  }
  ASSERT_EQ(tail.size, static_cast<uint64_t>(sent));
  ASSERT_LT(tail.signed_size, tail.size) << "every burst was signed by its own append";

  // From here on nobody reads or writes acme's log: only the mirror is watched.
  const fs::path covering = mirror_.path() / "acme" / (padded(tail.size) + ".json");
  ASSERT_TRUE(eventually([&] { return fs::exists(covering); }, std::chrono::seconds(15)))
      << server_->log();
  const std::string cp_json = readFile(covering);
  auto cp = json(cp_json);
  EXPECT_EQ(cp->getValue<uint64_t>("size"), tail.size);
  EXPECT_EQ(acme().signed_size, tail.size);

  // Nothing new: the timer's next runs (one a second) leave the log as it is.
  const auto files = mirrored();
  std::this_thread::sleep_for(std::chrono::milliseconds(3500));
  EXPECT_EQ(mirrored(), files);
  EXPECT_EQ(acme().signed_size, tail.size);
  EXPECT_EQ(acme().size, tail.size);

  // The timer signed it, not an append: the checkpoint is at least T younger than the
  // oldest record it was the first to cover.
  const auto records = lines(audit("logs/acme/records").body);
  ASSERT_EQ(records.size(), tail.size);
  auto oldest_unsigned = audit::recordTimeMs(records[tail.signed_size]);
  ASSERT_TRUE(oldest_unsigned) << records[tail.signed_size];
  EXPECT_GE(cp->getValue<int64_t>("time_ms") - *oldest_unsigned, 1000);

  // The log verifies against the mirrored checkpoints alone, and they are the stored ones.
  std::string from_mirror;
  for (const auto& f : mirrored()) from_mirror += readFile(f) + "\n";
  EXPECT_EQ(from_mirror, audit("logs/acme/checkpoints").body);
  TempDir pack;
  writeFile(pack / "records.jsonl", audit("logs/acme/records").body);
  writeFile(pack / "checkpoints.jsonl", from_mirror);
  writeFile(pack / "public-key.pem", audit("public-key").body);
  std::string out;
  EXPECT_EQ(verifyPackAt(pack.path(), &out), 0) << out;
  EXPECT_EQ(server_->log().find("no checkpoint timer"), std::string::npos);
}

// Appends and the timer on their threads at once (run it under the tsan preset too): every
// record lands, the timer signs the last tail, and the log verifies.
TEST_F(AuditCheckpointTimerTest, AppendsWhileTheTimerRunsLeaveAVerifiableLog) {
  const auto until = std::chrono::steady_clock::now() + std::chrono::milliseconds(3000);
  int sent = 0;
  while (std::chrono::steady_clock::now() < until) {
    ASSERT_EQ(request(server_->port(), "GET", "/hello/n" + std::to_string(sent++),
                      {{"Authorization", "Bearer acme-key"}})
                  .status,
              200);
    std::this_thread::sleep_for(std::chrono::milliseconds(10));
  }
  ASSERT_TRUE(eventually([&] { return acme().size == static_cast<uint64_t>(sent); }))
      << server_->log();
  ASSERT_TRUE(eventually([&] { return acme().signed_size == static_cast<uint64_t>(sent); },
                         std::chrono::seconds(15)))
      << server_->log();
  EXPECT_TRUE(fs::exists(mirror_.path() / "acme" / (padded(sent) + ".json")));
  TempDir pack;
  writeFile(pack / "records.jsonl", audit("logs/acme/records").body);
  writeFile(pack / "checkpoints.jsonl", audit("logs/acme/checkpoints").body);
  writeFile(pack / "public-key.pem", audit("public-key").body);
  std::string out;
  EXPECT_EQ(verifyPackAt(pack.path(), &out), 0) << out;
}

}  // namespace
}  // namespace trellis::test
