// The usage journal (services/usage/usage_journal.h) and record format: sequence numbers
// that survive reopening and pruning, reads after a cursor, the retention primitives, and
// the JSON line and UUIDv7 of a record.
#include "services/usage/usage_journal.h"

#include <gtest/gtest.h>

#include <regex>

#include "services/usage/usage_record.h"
#include "support/test_support.h"

namespace trellis::kernel::services::usage {
namespace {

using test::TempDir;

std::vector<UsageJournal::Row> rows(int n, int64_t at_ms, size_t bytes = 10) {
  std::vector<UsageJournal::Row> out;
  for (int i = 0; i < n; ++i) out.push_back({at_ms, "acme", std::string(bytes, 'x')});
  return out;
}

TEST(UsageJournalTest, AppendsInOrderAndReadsAfterACursor) {
  TempDir dir;
  auto j = UsageJournal::open(dir / "usage.db");
  ASSERT_TRUE(j) << j.status().message();
  EXPECT_EQ((*j)->head(), 0u);
  auto last =
      (*j)->append({{1, "acme", "{\"a\":1}"}, {2, "globex", "{\"b\":2}"}, {3, "acme", "{}"}});
  ASSERT_TRUE(last);
  EXPECT_EQ(*last, 3u);
  auto after1 = (*j)->read(1, 10);
  ASSERT_TRUE(after1);
  ASSERT_EQ(after1->size(), 2u);
  EXPECT_EQ((*after1)[0].seq, 2u);
  EXPECT_EQ((*after1)[0].json, "{\"b\":2}");
  EXPECT_EQ((*after1)[1].seq, 3u);
  auto limited = (*j)->read(0, 1);
  ASSERT_TRUE(limited);
  EXPECT_EQ(limited->size(), 1u);
}

TEST(UsageJournalTest, SequenceAndSecretSurviveReopenAndPruning) {
  TempDir dir;
  std::string secret;
  {
    auto j = UsageJournal::open(dir / "usage.db");
    ASSERT_TRUE(j);
    secret = (*j)->secret();
    ASSERT_TRUE((*j)->append(rows(5, 100)));
    ASSERT_TRUE((*j)->setAcked("acme/finops", 5));
    auto dropped = (*j)->dropUpTo(5);
    ASSERT_TRUE(dropped);
    EXPECT_EQ(*dropped, 5u);
  }
  auto j = UsageJournal::open(dir / "usage.db");
  ASSERT_TRUE(j);
  EXPECT_EQ((*j)->secret(), secret);
  EXPECT_EQ(secret.size(), 64u);
  // Everything was pruned, yet numbering continues: a cursor never names two records.
  auto last = (*j)->append(rows(1, 200));
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
  ASSERT_TRUE((*j)->setAcked("s", 7));
  ASSERT_TRUE((*j)->setAcked("s", 3));
  EXPECT_EQ((*j)->cursors()->at("s"), 7u);
}

TEST(UsageJournalTest, BacklogAndRetentionLimits) {
  TempDir dir;
  auto j = UsageJournal::open(dir / "usage.db");
  ASSERT_TRUE(j);
  ASSERT_TRUE((*j)->append(rows(4, 1000, 100)));  // seq 1-4, old
  ASSERT_TRUE((*j)->append(rows(4, 5000, 100)));  // seq 5-8, newer
  auto b = (*j)->backlog(2);
  ASSERT_TRUE(b);
  EXPECT_EQ(b->records, 6u);
  EXPECT_EQ(b->bytes, 600u);
  EXPECT_EQ(b->oldest_ms, 1000);
  EXPECT_EQ((*j)->retainedBytes(), 800u);

  auto aged = (*j)->dropOlderThan(2000);
  ASSERT_TRUE(aged);
  EXPECT_EQ(*aged, 4u);
  EXPECT_EQ((*j)->retainedBytes(), 400u);
  auto sized = (*j)->dropToSize(250);  // the oldest two go, the newest two fit
  ASSERT_TRUE(sized);
  EXPECT_EQ(*sized, 2u);
  auto left = (*j)->read(0, 10);
  ASSERT_TRUE(left);
  ASSERT_EQ(left->size(), 2u);
  EXPECT_EQ((*left)[0].seq, 7u);
}

TEST(UsageJournalTest, AgePruningTakesEverythingWhenEveryRowIsOld) {
  TempDir dir;
  auto j = UsageJournal::open(dir / "usage.db");
  ASSERT_TRUE(j);
  ASSERT_TRUE((*j)->append(rows(3, 1000, 100)));
  auto aged = (*j)->dropOlderThan(9000);
  ASSERT_TRUE(aged);
  EXPECT_EQ(*aged, 3u);
  EXPECT_EQ((*j)->retainedBytes(), 0u);
  auto none = (*j)->dropOlderThan(9000);  // an empty journal: nothing to do, no error
  ASSERT_TRUE(none);
  EXPECT_EQ(*none, 0u);
  // Sequence numbers go on after pruning everything.
  auto next = (*j)->append(rows(1, 9500));
  ASSERT_TRUE(next);
  EXPECT_EQ(*next, 4u);
}

TEST(UsageRecordTest, EventIdsAreUuidV7InTimeOrder) {
  const std::regex v7("[0-9a-f]{8}-[0-9a-f]{4}-7[0-9a-f]{3}-[89ab][0-9a-f]{3}-[0-9a-f]{12}");
  const std::string a = newEventId(1'700'000'000'000), b = newEventId(1'700'000'000'001);
  EXPECT_TRUE(std::regex_match(a, v7)) << a;
  EXPECT_TRUE(std::regex_match(b, v7)) << b;
  EXPECT_LT(a, b);
  EXPECT_EQ(a.substr(0, 8), "018bcfe5");  // 1700000000000 ms = 0x018bcfe56800
}

TEST(UsageRecordTest, OneLineOfJsonWithEveryField) {
  UsageRecord r;
  r.event_id = "id";
  r.tenant = "ac\"me\n";
  r.status = 429;
  r.counters.egress_bytes = 12;
  r.decision_id = "d";
  const std::string line = toJson(r);
  EXPECT_EQ(line.find('\n'), std::string::npos);
  EXPECT_NE(line.find("\"tenant\":\"ac\\\"me\\n\""), std::string::npos) << line;
  for (const char* field :
       {"event_id", "kind", "time_ms", "key_id", "plugin", "route", "method", "status", "bytes_in",
        "bytes_out", "duration_us", "host_calls", "egress_calls", "egress_bytes",
        "blob_bytes_written", "lua_instructions", "decision_id", "trace_id", "request_id"}) {
    EXPECT_NE(line.find("\"" + std::string(field) + "\":"), std::string::npos) << field;
  }
}

}  // namespace
}  // namespace trellis::kernel::services::usage
