// The usage journal (services/usage/usage_journal.h) and record format: sequence numbers
// that survive reopening and pruning, reads after a cursor within and across segments, the
// retention primitives by whole segments, the conversion of a journal of record rows, and
// the JSON line and UUIDv7 of a record.
#include "services/usage/usage_journal.h"

#include <gtest/gtest.h>
#include <soci/soci.h>
#include <soci/sqlite3/soci-sqlite3.h>

#include <algorithm>
#include <filesystem>
#include <fstream>
#include <random>
#include <regex>

#include "services/usage/usage_record.h"
#include "support/test_support.h"

namespace trellis::kernel::services::usage {
namespace {

using test::TempDir;

// A usage line of exactly `bytes` bytes (at least 40) carrying `at_ms`, as the kernel writes.
std::string line(int64_t at_ms, size_t bytes = 60) {
  std::string l = "{\"event_id\":\"e\",\"time_ms\":" + std::to_string(at_ms) + ",\"pad\":\"";
  l.append(bytes - l.size() - 2, 'x').append("\"}");
  return l;
}

Segment segment(int n, int64_t at_ms, size_t bytes = 60) {
  Segment s;
  for (int i = 0; i < n; ++i) s.text.append(line(at_ms + i, bytes)).push_back('\n');
  s.count = static_cast<uint32_t>(n);
  s.first_ms = at_ms;
  s.last_ms = at_ms + n - 1;
  return s;
}

TEST(UsageJournalTest, ReadsAfterACursorWithinAndAcrossSegments) {
  TempDir dir;
  auto j = UsageJournal::open(dir / "usage.db");
  ASSERT_TRUE(j) << j.status().message();
  EXPECT_EQ((*j)->head(), 0u);
  auto last = (*j)->append({segment(3, 100), segment(2, 200)});  // seq 1-3, 4-5
  ASSERT_TRUE(last);
  EXPECT_EQ(*last, 5u);
  auto after1 = (*j)->read(1, 10);
  ASSERT_TRUE(after1);
  EXPECT_EQ(after1->count, 4u);
  EXPECT_EQ(after1->last, 5u);
  EXPECT_EQ(after1->text,
            line(101) + "\n" + line(102) + "\n" + line(200) + "\n" + line(201) + "\n");
  auto across = (*j)->read(2, 2);  // the last of the first segment, the first of the second
  ASSERT_TRUE(across);
  EXPECT_EQ(across->count, 2u);
  EXPECT_EQ(across->last, 4u);
  EXPECT_EQ(across->text, line(102) + "\n" + line(200) + "\n");
  auto none = (*j)->read(5, 10);
  ASSERT_TRUE(none);
  EXPECT_EQ(none->count, 0u);
  EXPECT_TRUE(none->text.empty());
}

TEST(UsageJournalTest, SequenceAndSecretSurviveReopenAndPruning) {
  TempDir dir;
  std::string secret;
  {
    auto j = UsageJournal::open(dir / "usage.db");
    ASSERT_TRUE(j);
    secret = (*j)->secret();
    ASSERT_TRUE((*j)->append({segment(5, 100)}));
    ASSERT_TRUE((*j)->setAcked({{"acme/finops", 5}}));
    auto dropped = (*j)->dropUpTo(5);
    ASSERT_TRUE(dropped);
    EXPECT_EQ(*dropped, 5u);
  }
  auto j = UsageJournal::open(dir / "usage.db");
  ASSERT_TRUE(j);
  EXPECT_EQ((*j)->secret(), secret);
  EXPECT_EQ(secret.size(), 64u);
  // Everything was pruned, yet numbering continues: a cursor never names two records.
  auto last = (*j)->append({segment(1, 200)});
  ASSERT_TRUE(last);
  EXPECT_EQ(*last, 6u);
  auto cursors = (*j)->cursors();
  ASSERT_TRUE(cursors);
  EXPECT_EQ(cursors->at("acme/finops"), 5u);
}

TEST(UsageJournalTest, AcknowledgedPositionNeverMovesBack) {
  TempDir dir;
  auto j = UsageJournal::open(dir / "usage.db");
  ASSERT_TRUE(j);
  ASSERT_TRUE((*j)->setAcked({{"s", 7}}));
  ASSERT_TRUE((*j)->setAcked({{"s", 3}}));
  EXPECT_EQ((*j)->cursors()->at("s"), 7u);
}

// The writer saves the acknowledgements of an interval together; the same never-backwards
// rule holds for each subscriber.
TEST(UsageJournalTest, AcknowledgementsSavedTogetherNeverMoveBack) {
  TempDir dir;
  {
    auto j = UsageJournal::open(dir / "usage.db");
    ASSERT_TRUE(j);
    EXPECT_EQ(*(*j)->append({segment(4, 1000)}), 4u);
    ASSERT_TRUE((*j)->setAcked({{"a", 2}, {"b", 4}}));
    ASSERT_TRUE((*j)->setAcked({{"a", 3}, {"b", 1}}));
  }
  auto j = UsageJournal::open(dir / "usage.db");
  ASSERT_TRUE(j);
  EXPECT_EQ(*(*j)->cursors(), (Cursors{{"a", 3}, {"b", 4}}));
  EXPECT_EQ((*j)->head(), 4u);
}

// The log files beside usage.db, in the order they were written.
std::vector<std::filesystem::path> logFiles(const TempDir& dir) {
  std::vector<std::filesystem::path> out;
  for (const auto& f : std::filesystem::directory_iterator(dir.path())) {
    const std::string name = f.path().filename().string();
    if (name.starts_with("usage.db-log.") && name != "usage.db-log.lock") out.push_back(f.path());
  }
  std::sort(out.begin(), out.end());
  return out;
}

std::string readFile(const std::filesystem::path& p) {
  std::ifstream in(p, std::ios::binary);
  return {std::istreambuf_iterator<char>(in), std::istreambuf_iterator<char>()};
}

// A crash (kill -9) while the writer appends: a log cut at any byte of its last segment
// opens with exactly the segments before it, and numbering goes on from them.
TEST(UsageJournalTest, ACrashInTheLastAppendKeepsEveryEarlierSegment) {
  TempDir dir;
  {
    auto j = UsageJournal::open(dir / "usage.db");
    ASSERT_TRUE(j);
    ASSERT_TRUE((*j)->append({segment(3, 100)}));
  }
  const auto first_files = logFiles(dir);
  ASSERT_EQ(first_files.size(), 1u);
  const size_t first_bytes = std::filesystem::file_size(first_files[0]);
  {
    auto j = UsageJournal::open(dir / "usage.db");
    ASSERT_TRUE(j);
    ASSERT_TRUE((*j)->append({segment(2, 200)}));
  }
  const std::filesystem::path last = logFiles(dir)[1];
  const std::string whole = readFile(last);
  ASSERT_GT(whole.size(), 0u);
  for (size_t cut = 0; cut < whole.size(); cut += 7) {
    std::ofstream(last, std::ios::binary | std::ios::trunc) << whole.substr(0, cut);
    auto j = UsageJournal::open(dir / "usage.db");
    ASSERT_TRUE(j) << j.status().message();
    EXPECT_EQ((*j)->head(), 3u) << "cut at " << cut;
    EXPECT_EQ((*j)->read(0, 10)->count, 3u);
    EXPECT_EQ((*j)->retainedBytes(), 3 * (line(0).size())) << "cut at " << cut;
    // Later files from these opens go, so the next round sees the same two.
    for (const auto& f : logFiles(dir)) {
      if (f != first_files[0] && f != last) std::filesystem::remove(f);
    }
  }
  EXPECT_EQ(std::filesystem::file_size(first_files[0]), first_bytes);
  auto j = UsageJournal::open(dir / "usage.db");
  ASSERT_TRUE(j);
  EXPECT_EQ(*(*j)->append({segment(1, 300)}), 4u);
}

// Pruning deletes a log file once every segment in it is pruned; a segment pruned from a
// file that stays is still gone after a restart.
TEST(UsageJournalTest, PruningDeletesWholeFilesAndIsRememberedAcrossRestarts) {
  TempDir dir;
  {
    auto j = UsageJournal::open(dir / "usage.db");
    ASSERT_TRUE(j);
    ASSERT_TRUE((*j)->append({segment(2, 100)}));  // 1-2
    ASSERT_TRUE((*j)->append({segment(2, 200)}));  // 3-4, the same file
    EXPECT_EQ(*(*j)->dropUpTo(2), 2u);
    EXPECT_EQ(logFiles(dir).size(), 1u) << "the file still holds 3-4";
  }
  {
    auto j = UsageJournal::open(dir / "usage.db");
    ASSERT_TRUE(j);
    auto left = (*j)->read(0, 10);
    ASSERT_TRUE(left);
    EXPECT_EQ(left->text, line(200) + "\n" + line(201) + "\n");
    EXPECT_EQ((*j)->retainedBytes(), 2 * line(0).size());
    EXPECT_EQ(*(*j)->dropUpTo(4), 2u);
    for (const auto& f : logFiles(dir)) {
      EXPECT_EQ(std::filesystem::file_size(f), 0u) << f << " still holds records";
    }
  }
  auto j = UsageJournal::open(dir / "usage.db");
  ASSERT_TRUE(j);
  EXPECT_EQ((*j)->read(0, 10)->count, 0u);
  EXPECT_EQ((*j)->retainedBytes(), 0u);
  EXPECT_EQ(*(*j)->append({segment(1, 300)}), 5u);
}

TEST(UsageJournalTest, BacklogAndRetentionLimitsByWholeSegments) {
  TempDir dir;
  auto j = UsageJournal::open(dir / "usage.db");
  ASSERT_TRUE(j);
  ASSERT_TRUE((*j)->append({segment(4, 1000, 100)}));  // seq 1-4, old
  ASSERT_TRUE((*j)->append({segment(4, 5000, 100)}));  // seq 5-8, newer
  ASSERT_TRUE((*j)->append({segment(2, 9000, 100)}));  // seq 9-10, newest
  auto b = (*j)->backlog(2);  // inside the first segment: records 3.. of it count
  ASSERT_TRUE(b);
  EXPECT_EQ(b->records, 8u);
  EXPECT_EQ(b->bytes, 800u);
  EXPECT_EQ(b->oldest_ms, 1002);  // record 3's own time, not its segment's
  auto whole = (*j)->backlog(4);
  ASSERT_TRUE(whole);
  EXPECT_EQ(whole->records, 6u);
  EXPECT_EQ(whole->oldest_ms, 5000);
  EXPECT_EQ((*j)->retainedBytes(), 1000u);

  // A segment goes only once every record in it is past the limit.
  auto aged = (*j)->dropOlderThan(5002);
  ASSERT_TRUE(aged);
  EXPECT_EQ(*aged, 4u);
  EXPECT_EQ((*j)->retainedBytes(), 600u);
  auto sized = (*j)->dropToSize(250);  // the 400 bytes of 5-8 go, the newest 200 fit
  ASSERT_TRUE(sized);
  EXPECT_EQ(*sized, 4u);
  auto left = (*j)->read(0, 10);
  ASSERT_TRUE(left);
  EXPECT_EQ(left->count, 2u);
  EXPECT_EQ(left->text.substr(0, left->text.find('\n')), line(9000, 100));
  EXPECT_EQ(left->last, 10u);
  // Acknowledged up to the middle of a segment: it stays, and reads start after the cursor.
  auto partial = (*j)->dropUpTo(9);
  ASSERT_TRUE(partial);
  EXPECT_EQ(*partial, 0u);
  auto rest = (*j)->read(9, 10);
  ASSERT_TRUE(rest);
  EXPECT_EQ(rest->text, line(9001, 100) + "\n");
}

TEST(UsageJournalTest, AgePruningTakesEverythingWhenEveryRowIsOld) {
  TempDir dir;
  auto j = UsageJournal::open(dir / "usage.db");
  ASSERT_TRUE(j);
  ASSERT_TRUE((*j)->append({segment(3, 1000, 100)}));
  auto aged = (*j)->dropOlderThan(9000);
  ASSERT_TRUE(aged);
  EXPECT_EQ(*aged, 3u);
  EXPECT_EQ((*j)->retainedBytes(), 0u);
  auto none = (*j)->dropOlderThan(9000);  // an empty journal: nothing to do, no error
  ASSERT_TRUE(none);
  EXPECT_EQ(*none, 0u);
  // Sequence numbers go on after pruning everything.
  auto next = (*j)->append({segment(1, 9500)});
  ASSERT_TRUE(next);
  EXPECT_EQ(*next, 4u);
}

// A journal written by a version that kept one row per record opens with every record,
// its sequence number and the cursors unchanged; the records moved (through the segment
// rows of the next version) to the log, and the old tables are gone.
TEST(UsageJournalTest, AJournalOfRecordRowsIsConvertedOnOpen) {
  TempDir dir;
  {
    soci::session sql(soci::sqlite3, "db=\"" + (dir / "usage.db").string() + "\"");
    sql << "CREATE TABLE usage_records(seq INTEGER PRIMARY KEY, at_ms INTEGER NOT NULL, "
           "tenant TEXT NOT NULL, bytes INTEGER NOT NULL, record TEXT NOT NULL)";
    sql << "CREATE TABLE usage_cursors(subscriber TEXT PRIMARY KEY, acked INTEGER NOT NULL, "
           "updated_ms INTEGER NOT NULL)";
    sql << "CREATE TABLE usage_meta(name TEXT PRIMARY KEY, value TEXT NOT NULL)";
    sql << "INSERT INTO usage_meta VALUES('secret', '" + std::string(64, 'a') + "')";
    sql << "INSERT INTO usage_meta VALUES('journal_id', 'j1')";
    sql << "INSERT INTO usage_cursors VALUES('acme/finops', 11, 0)";
    for (int seq = 11; seq <= 14; ++seq) {  // 1-10 were pruned
      const std::string l = line(7000 + seq);
      sql << "INSERT INTO usage_records VALUES(" + std::to_string(seq) + ", " +
                 std::to_string(7000 + seq) + ", 'acme', " + std::to_string(l.size()) + ", '" + l +
                 "')";
    }
  }
  auto j = UsageJournal::open(dir / "usage.db");
  ASSERT_TRUE(j) << j.status().message();
  EXPECT_EQ((*j)->head(), 14u);
  EXPECT_EQ((*j)->journalId(), "j1");
  EXPECT_EQ((*j)->retainedBytes(), 4 * line(0).size());
  auto after = (*j)->read(11, 10);
  ASSERT_TRUE(after);
  EXPECT_EQ(after->count, 3u);
  EXPECT_EQ(after->last, 14u);
  EXPECT_EQ(after->text, line(7012) + "\n" + line(7013) + "\n" + line(7014) + "\n");
  EXPECT_EQ((*j)->cursors()->at("acme/finops"), 11u);
  auto next = (*j)->append({segment(1, 9000)});
  ASSERT_TRUE(next);
  EXPECT_EQ(*next, 15u);
  soci::session sql(soci::sqlite3, "db=\"" + (dir / "usage.db").string() + "\"");
  int tables = -1;
  sql << "SELECT COUNT(*) FROM sqlite_master WHERE name IN ('usage_records', 'usage_segments')",
      soci::into(tables);
  EXPECT_EQ(tables, 0) << "the records moved to the log";
}

TEST(UsageRecordTest, EventIdsAreUuidV7InTimeOrder) {
  const std::regex v7("[0-9a-f]{8}-[0-9a-f]{4}-7[0-9a-f]{3}-[89ab][0-9a-f]{3}-[0-9a-f]{12}");
  auto idAt = [](int64_t ms) {
    unsigned char random[kEventIdRandomBytes];
    std::random_device rd;
    for (auto& b : random) b = static_cast<unsigned char>(rd());
    std::string id;
    appendEventId(id, ms, random);
    return id;
  };
  const std::string a = idAt(1'700'000'000'000), b = idAt(1'700'000'000'001);
  EXPECT_TRUE(std::regex_match(a, v7)) << a;
  EXPECT_TRUE(std::regex_match(b, v7)) << b;
  EXPECT_LT(a, b);
  EXPECT_EQ(a.substr(0, 8), "018bcfe5");  // 1700000000000 ms = 0x018bcfe56800
  // Version 7, variant 10xx, then the random bits in order.
  unsigned char random[kEventIdRandomBytes];
  std::fill(std::begin(random), std::end(random), 0xff);
  std::string c;
  appendEventId(c, 1'700'000'000'000, random);
  EXPECT_EQ(c, "018bcfe5-6800-7fff-bfff-ffffffffffff");
  std::fill(std::begin(random), std::end(random), 0x00);
  c.clear();
  appendEventId(c, 1'700'000'000'000, random);
  EXPECT_EQ(c, "018bcfe5-6800-7000-8000-000000000000");
}

TEST(UsageRecordTest, OneLineOfJsonWithEveryField) {
  UsageRecord r;
  r.tenant = "ac\"me\n";
  r.status = 429;
  r.counters.egress_bytes = 12;
  r.decision_id = "d";
  const std::string line = "{\"event_id\":\"id\"" + toJsonAfterEventId(r);
  EXPECT_EQ(line.find('\n'), std::string::npos);
  EXPECT_NE(line.find("\"tenant\":\"ac\\\"me\\n\""), std::string::npos) << line;
  EXPECT_NE(line.find("\"egress_bytes\":12,"), std::string::npos) << line;
  for (const char* field :
       {"event_id", "kind", "time_ms", "key_id", "plugin", "route", "method", "status", "bytes_in",
        "bytes_out", "duration_us", "host_calls", "egress_calls", "egress_bytes",
        "blob_bytes_written", "lua_instructions", "decision_id", "trace_id", "request_id"}) {
    EXPECT_NE(line.find("\"" + std::string(field) + "\":"), std::string::npos) << field;
  }
  EXPECT_EQ(line.back(), '}');
}

}  // namespace
}  // namespace trellis::kernel::services::usage
