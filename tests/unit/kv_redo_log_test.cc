// The KV redo log's file format and recovery: what a crash at any byte leaves behind is
// replayed up to the last whole, acknowledged batch, and nothing after it.
#include "storage/internal/kv_redo_log.h"

#include <fcntl.h>
#include <gtest/gtest.h>
#include <sys/wait.h>
#include <unistd.h>

#include <cstdio>
#include <filesystem>
#include <fstream>
#include <string>
#include <vector>

#include "storage/internal/kv_overlay.h"
#include "support/test_support.h"

namespace trellis::kernel::storage::internal {
namespace {

using test::TempDir;

KvChange put(std::string key, std::string value, uint64_t version) {
  return {"trellis/hello", std::move(key), std::move(value), version};
}
KvChange removal(std::string key) {
  return {"trellis/hello", std::move(key), std::nullopt, 0};
}

std::string readFile(const std::filesystem::path& p) {
  std::ifstream in(p, std::ios::binary);
  return {std::istreambuf_iterator<char>(in), std::istreambuf_iterator<char>()};
}
void writeFile(const std::filesystem::path& p, const std::string& bytes) {
  std::ofstream(p, std::ios::binary | std::ios::trunc) << bytes;
}

class KvRedoLogTest : public ::testing::Test {
 protected:
  std::filesystem::path segment(uint64_t n) const {
    return db_.string() + "-redo." + std::to_string(n);
  }
  KvRedoLog::Opened open() {
    auto opened = KvRedoLog::open(db_);
    EXPECT_TRUE(opened) << opened.status().toString();
    return opened ? std::move(*opened) : KvRedoLog::Opened{};
  }

  TempDir dir_;
  const std::filesystem::path db_ = dir_.path() / "acme.db";
  const std::vector<KvChange> first_{put("a", "1", 1), put("b", std::string("\0x\xff", 3), 7)};
  const std::vector<KvChange> second_{removal("a"), put("c", "", 1)};
};

TEST_F(KvRedoLogTest, BatchesRoundTripAndGarbageIsRefusedByName) {
  EXPECT_EQ(*decodeBatch(encodeBatch(first_)), first_);
  EXPECT_EQ(*decodeBatch(encodeBatch(second_)), second_);
  EXPECT_TRUE(decodeBatch(encodeBatch(std::vector<KvChange>{})));

  std::string bad = encodeBatch(first_);
  bad[4] = 9;  // the first change's kind
  EXPECT_EQ(decodeBatch(bad).status().message(), "batch change 0: bad kind");
  EXPECT_EQ(decodeBatch(encodeBatch(first_) + "x").status().message(),
            "batch: bytes after the last change");
  EXPECT_FALSE(decodeBatch(encodeBatch(first_).substr(0, 20)));
  EXPECT_EQ(decodeBatch(encodeBatch(std::vector<KvChange>{{"p", "k", std::nullopt, 3}}))
                .status()
                .message(),
            "batch change 0: bad version");
  EXPECT_EQ(decodeBatch(encodeBatch(std::vector<KvChange>{{"p", "", "v", 1}})).status().message(),
            "batch change 0: bad key");
}

TEST_F(KvRedoLogTest, AppendedBatchesAreReplayedInOrderAfterAReopen) {
  {
    auto opened = open();
    EXPECT_TRUE(opened.unapplied.empty());
    EXPECT_EQ(opened.last_replayed_segment, 0u);
    ASSERT_TRUE(opened.log->append(first_));
    ASSERT_TRUE(opened.log->append(second_));
  }
  auto opened = open();
  ASSERT_EQ(opened.unapplied.size(), 2u);
  EXPECT_EQ(opened.unapplied[0], first_);
  EXPECT_EQ(opened.unapplied[1], second_);
  EXPECT_EQ(opened.last_replayed_segment, 1u);
  EXPECT_EQ(opened.log->currentSegment(), 2u) << "appends after a reopen go to a new segment";
}

TEST_F(KvRedoLogTest, ACrashAtAnyByteOfTheLastRecordReplaysExactlyTheBatchesBeforeIt) {
  {
    auto opened = open();
    ASSERT_TRUE(opened.log->append(first_));
    ASSERT_TRUE(opened.log->append(second_));
  }
  const std::string whole = readFile(segment(1));
  const size_t first_end = encodeRecord(1, first_).size();
  for (size_t cut = first_end; cut < whole.size(); ++cut) {
    for (const auto& f : std::filesystem::directory_iterator(dir_.path())) {
      std::filesystem::remove(f.path());
    }
    writeFile(segment(1), whole.substr(0, cut));
    auto opened = open();
    ASSERT_EQ(opened.unapplied.size(), 1u) << "cut at " << cut;
    EXPECT_EQ(opened.unapplied[0], first_);
    EXPECT_EQ(std::filesystem::file_size(segment(1)), first_end) << "the torn end is cut off";
    // The next batch follows the last whole one, and a later open reads both segments.
    ASSERT_TRUE(opened.log->append(second_));
    opened.log.reset();
    auto again = open();
    ASSERT_EQ(again.unapplied.size(), 2u) << "cut at " << cut;
    EXPECT_EQ(again.unapplied[1], second_);
  }
}

TEST_F(KvRedoLogTest, AFlippedBitInTheLastRecordEndsTheReplayBeforeIt) {
  {
    auto opened = open();
    ASSERT_TRUE(opened.log->append(first_));
    ASSERT_TRUE(opened.log->append(second_));
  }
  std::string bytes = readFile(segment(1));
  bytes[bytes.size() - 3] ^= 0x10;
  writeFile(segment(1), bytes);
  auto opened = open();
  ASSERT_EQ(opened.unapplied.size(), 1u);
  EXPECT_EQ(opened.unapplied[0], first_);
}

TEST_F(KvRedoLogTest, AStaleRecordAfterTheLastOneIsNotReplayed) {
  // What a failed append could leave if its bytes reached the disk but the cut did not:
  // a whole record whose number is not the next one.
  {
    auto opened = open();
    ASSERT_TRUE(opened.log->append(first_));
  }
  writeFile(segment(1), readFile(segment(1)) + encodeRecord(1, second_));
  auto opened = open();
  ASSERT_EQ(opened.unapplied.size(), 1u);
  EXPECT_EQ(opened.unapplied[0], first_);
}

TEST_F(KvRedoLogTest, DamageInAnOlderSegmentFailsTheOpenNamingTheFile) {
  {
    auto opened = open();
    ASSERT_TRUE(opened.log->append(first_));
    ASSERT_TRUE(opened.log->rotate());
    ASSERT_TRUE(opened.log->append(second_));
  }
  std::string bytes = readFile(segment(1));
  bytes[25] ^= 0x01;
  writeFile(segment(1), bytes);
  auto opened = KvRedoLog::open(db_);
  ASSERT_FALSE(opened);
  EXPECT_EQ(opened.status().code(), StatusCode::kUnavailable);
  EXPECT_NE(opened.status().message().find(segment(1).string() + " is damaged"), std::string::npos)
      << opened.status().message();
}

TEST_F(KvRedoLogTest, RotatedSegmentsReplayInOrderUntilDropped) {
  auto opened = open();
  ASSERT_TRUE(opened.log->append(first_));
  auto closed = opened.log->rotate();
  ASSERT_TRUE(closed);
  EXPECT_EQ(*closed, 1u);
  ASSERT_TRUE(opened.log->append(second_));
  opened.log.reset();

  auto reopened = open();
  ASSERT_EQ(reopened.unapplied.size(), 2u);
  EXPECT_EQ(reopened.unapplied[0], first_);
  EXPECT_EQ(reopened.unapplied[1], second_);
  EXPECT_EQ(reopened.last_replayed_segment, 2u);
  reopened.log->dropThrough(reopened.last_replayed_segment);
  EXPECT_FALSE(std::filesystem::exists(segment(1)));
  EXPECT_FALSE(std::filesystem::exists(segment(2)));
  EXPECT_TRUE(std::filesystem::exists(segment(3))) << "the current segment stays";
  reopened.log.reset();
  EXPECT_TRUE(open().unapplied.empty());
}

// A segment is written ahead in zero-filled chunks, so appends do not grow the file (an
// fdatasync then flushes data only). Zeros after the last record are a clean end, in the
// newest segment (a crash) and in an older one (a crash before a rotated segment's trim).
TEST_F(KvRedoLogTest, ZerosWrittenAheadReadAsACleanEnd) {
  {
    auto opened = open();
    ASSERT_TRUE(opened.log->append(first_));
    EXPECT_EQ(std::filesystem::file_size(segment(1)), 1u << 20) << "one chunk written ahead";
    ASSERT_TRUE(opened.log->append(second_));
    EXPECT_EQ(std::filesystem::file_size(segment(1)), 1u << 20);
  }
  const std::string records = readFile(segment(1));
  EXPECT_EQ(records, encodeRecord(1, first_) + encodeRecord(2, second_))
      << "a clean close trims what was written ahead";
  const ParsedSegment parsed = parseSegment(records + std::string(100, '\0'), 1);
  EXPECT_EQ(parsed.batches.size(), 2u);
  EXPECT_EQ(parsed.valid_bytes, records.size());
  EXPECT_EQ(parsed.zero_bytes, 100u);
  EXPECT_TRUE(parsed.stopped_by.empty()) << parsed.stopped_by;
  // A zero after a record's start is not a clean end.
  const std::string torn = records + encodeRecord(3, first_).substr(0, 8) + std::string(50, '\0');
  EXPECT_FALSE(parseSegment(torn, 1).stopped_by.empty());

  // What a crash leaves: the older segment and the newest each with zeros after records.
  writeFile(segment(1), records + std::string(4096, '\0'));
  writeFile(segment(2), encodeRecord(3, first_) + std::string(4096, '\0'));
  auto opened = open();
  ASSERT_EQ(opened.unapplied.size(), 3u);
  EXPECT_EQ(opened.unapplied[2], first_);
  EXPECT_EQ(opened.log->currentSegment(), 3u);
}

TEST_F(KvRedoLogTest, OnlyOneProcessMayHaveTheLogOpen) {
  auto opened = open();
  const pid_t child = ::fork();
  if (child == 0) {
    auto second = KvRedoLog::open(db_);
    const bool refused =
        !second && second.status().message().find("in use by another process") != std::string::npos;
    ::_exit(refused ? 0 : 1);
  }
  int status = 0;
  ASSERT_EQ(::waitpid(child, &status, 0), child);
  EXPECT_TRUE(WIFEXITED(status) && WEXITSTATUS(status) == 0);
}

TEST_F(KvRedoLogTest, RemoveAllLeavesNoFileBehind) {
  {
    auto opened = open();
    ASSERT_TRUE(opened.log->append(first_));
  }
  ASSERT_TRUE(KvRedoLog::removeAll(db_));
  EXPECT_TRUE(std::filesystem::is_empty(dir_.path()));
}

TEST(KvOverlayTest, TheNewestChangePerKeyWinsAndRemovalsAreKept) {
  KvOverlay o;
  o.publish(std::vector<KvChange>{put("a", "1", 1), put("b", "1", 1)});
  o.publish(std::vector<KvChange>{put("a", "2", 2), removal("b")});
  EXPECT_EQ(o.find("trellis/hello", "a")->value, "2");
  EXPECT_EQ(o.find("trellis/hello", "a")->version, 2u);
  ASSERT_TRUE(o.find("trellis/hello", "b"));
  EXPECT_FALSE(o.find("trellis/hello", "b")->value) << "a removal hides what SQLite has";
  EXPECT_FALSE(o.find("trellis/other", "a")) << "plugins are apart";
  EXPECT_EQ(o.size(), 2u);
}

// The applier's snapshot and forget take the lock a slice at a time: across slices the
// snapshot still holds every entry once, in key order, and forgetting it leaves only what
// was published after it.
TEST(KvOverlayTest, ASnapshotTakenInSlicesHoldsEveryEntryOnce) {
  KvOverlay o;
  std::vector<KvChange> batch;
  for (size_t i = 0; i < 3 * KvOverlay::kSliceKeys + 7; ++i) {
    char key[16];
    std::snprintf(key, sizeof key, "k%06zu", i);
    batch.push_back(put(key, "v", 1));
  }
  o.publish(batch);
  o.publish(std::vector<KvChange>{{"trellis/other", "k000000", "w", 1}});
  const KvOverlay::Snapshot snap = o.snapshot();
  ASSERT_EQ(snap.changes.size(), batch.size() + 1);
  EXPECT_EQ(snap.changes.front().plugin, "trellis/hello");
  for (size_t i = 0; i < batch.size(); ++i) ASSERT_EQ(snap.changes[i], batch[i]) << i;
  EXPECT_EQ(snap.changes.back().plugin, "trellis/other");
  o.publish(std::vector<KvChange>{put("k000600", "newer", 2)});
  o.forget(snap);
  EXPECT_EQ(o.size(), 1u);
  EXPECT_EQ(o.find("trellis/hello", "k000600")->value, "newer");
}

TEST(KvOverlayTest, RangesFollowPrefixBoundsAndStartAfterInByteOrder) {
  KvOverlay o;
  o.publish(std::vector<KvChange>{put("p/a", "1", 1),
                                  put("p/b", "1", 1),
                                  put("p/\xff", "1", 1),
                                  put("q", "1", 1),
                                  {"trellis/other", "p/c", "1", 1}});
  auto keys = [](const auto& entries) {
    std::vector<std::string> out;
    for (const auto& [k, e] : entries) out.push_back(k);
    return out;
  };
  EXPECT_EQ(keys(o.range("trellis/hello", "p/", std::string("p0"), "")),
            (std::vector<std::string>{"p/a", "p/b", "p/\xff"}));
  EXPECT_EQ(keys(o.range("trellis/hello", "p/", std::string("p0"), "p/a")),
            (std::vector<std::string>{"p/b", "p/\xff"}));
  EXPECT_EQ(keys(o.range("trellis/hello", "", std::nullopt, "p/b")),
            (std::vector<std::string>{"p/\xff", "q"}));
}

TEST(KvOverlayTest, ForgettingASnapshotKeepsWhatChangedSinceIt) {
  KvOverlay o;
  o.publish(std::vector<KvChange>{put("a", "1", 1), put("b", "1", 1)});
  const auto snap = o.snapshot();
  ASSERT_EQ(snap.changes.size(), 2u);
  o.publish(std::vector<KvChange>{put("a", "2", 2)});  // written while the snapshot applied
  o.forget(snap);
  EXPECT_EQ(o.size(), 1u);
  EXPECT_EQ(o.find("trellis/hello", "a")->value, "2");
  EXPECT_FALSE(o.find("trellis/hello", "b"));
}

}  // namespace
}  // namespace trellis::kernel::storage::internal
