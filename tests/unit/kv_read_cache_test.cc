// The read cache below a tenant's KV overlay (storage/internal/kv_read_cache.h).
#include "storage/internal/kv_read_cache.h"

#include <gtest/gtest.h>

#include <string>
#include <vector>

namespace trellis::kernel::storage::internal {
namespace {

TEST(KvReadCacheTest, KeepsWhatWasReadAndAnswersIt) {
  KvReadCache cache(1 << 20);
  EXPECT_FALSE(cache.find("p", "k"));
  cache.fill(cache.ticket(), "p", "k", "v1", 3);
  auto hit = cache.find("p", "k");
  ASSERT_TRUE(hit);
  EXPECT_EQ(hit->value, "v1");
  EXPECT_EQ(hit->version, 3u);
  EXPECT_FALSE(cache.find("q", "k")) << "another plugin's key of the same name";
  EXPECT_FALSE(cache.find("p", std::string("k\0", 2)));
}

TEST(KvReadCacheTest, AReadThatAnApplyOvertookIsNotKept) {
  KvReadCache cache(1 << 20);
  const uint64_t ticket = cache.ticket();  // a reader begins reading SQLite: v1
  const std::vector<KvChange> v2{{"p", "k", "v2", 2}};
  cache.applied(v2);  // meanwhile v2 reaches SQLite
  cache.fill(ticket, "p", "k", "v1", 1);
  auto hit = cache.find("p", "k");
  ASSERT_TRUE(hit);
  EXPECT_EQ(hit->value, "v2");
  EXPECT_EQ(hit->version, 2u);
}

// A large apply is taken in slices (readers wait out one slice): every change lands, and
// a read that began before it is still refused.
TEST(KvReadCacheTest, ALargeApplyLandsWholeAndOvertakesEarlierReads) {
  KvReadCache cache(1 << 24);
  const uint64_t ticket = cache.ticket();
  std::vector<KvChange> changes;
  for (size_t i = 0; i < 2 * KvReadCache::kSliceKeys + 3; ++i) {
    changes.push_back({"p", "k" + std::to_string(i), "v" + std::to_string(i), 1});
  }
  cache.applied(changes);
  for (const KvChange& c : changes) ASSERT_EQ(cache.find("p", c.key)->value, c.value) << c.key;
  cache.fill(ticket, "p", "k0", "stale", 0);
  EXPECT_EQ(cache.find("p", "k0")->value, "v0");
}

TEST(KvReadCacheTest, AppliedChangesReplaceValuesAndRemovalsAreKeptAsAbsent) {
  KvReadCache cache(1 << 20);
  cache.fill(cache.ticket(), "p", "a", "old", 1);
  cache.fill(cache.ticket(), "p", "b", "gone", 1);
  const std::vector<KvChange> changes{{"p", "a", "new", 2}, {"p", "b", std::nullopt, 0}};
  cache.applied(changes);
  ASSERT_TRUE(cache.find("p", "a"));
  EXPECT_EQ(cache.find("p", "a")->value, "new");
  auto b = cache.find("p", "b");
  ASSERT_TRUE(b) << "a removal is known: SQLite no longer has the key";
  EXPECT_FALSE(b->value);
  EXPECT_FALSE(cache.stat("p", "b")->present);
}

TEST(KvReadCacheTest, KeepsKeysSQLiteDoesNotHoldUntilTheyAreWritten) {
  KvReadCache cache(1 << 20);
  cache.fill(cache.ticket(), "p", "new", std::nullopt, 0);  // a read found no row
  auto absent = cache.find("p", "new");
  ASSERT_TRUE(absent);
  EXPECT_FALSE(absent->value);
  auto st = cache.stat("p", "new");
  ASSERT_TRUE(st);
  EXPECT_FALSE(st->present);
  EXPECT_EQ(st->value_bytes, 0u);
  const std::vector<KvChange> written{{"p", "new", "v1", 1}};
  cache.applied(written);
  auto hit = cache.find("p", "new");
  ASSERT_TRUE(hit);
  EXPECT_EQ(hit->value, "v1");
  EXPECT_TRUE(cache.stat("p", "new")->present);
}

TEST(KvReadCacheTest, AnAbsenceThatAnApplyOvertookIsNotKept) {
  KvReadCache cache(1 << 20);
  const uint64_t ticket = cache.ticket();  // a reader finds no row…
  const std::vector<KvChange> v1{{"p", "k", "v1", 1}};
  cache.applied(v1);  // …while the first write reaches SQLite
  cache.fill(ticket, "p", "k", std::nullopt, 0);
  auto hit = cache.find("p", "k");
  ASSERT_TRUE(hit);
  EXPECT_EQ(hit->value, "v1");
}

TEST(KvReadCacheTest, StaysWithinItsBudgetDroppingTheLeastRecentlyUsed) {
  KvReadCache cache(4096);
  const std::string value(1000, 'x');
  cache.fill(cache.ticket(), "p", "first", value, 1);
  cache.fill(cache.ticket(), "p", "second", value, 1);
  cache.fill(cache.ticket(), "p", "third", value, 1);
  ASSERT_TRUE(cache.find("p", "first"));  // now the most recent
  cache.fill(cache.ticket(), "p", "fourth", value, 1);
  EXPECT_LE(cache.bytes(), 4096u);
  EXPECT_TRUE(cache.find("p", "first"));
  EXPECT_FALSE(cache.find("p", "second")) << "the least recently used went first";
  EXPECT_TRUE(cache.find("p", "fourth"));
}

TEST(KvReadCacheTest, LargeValuesAreNotKept) {
  KvReadCache cache(1 << 20);
  const std::string big(KvReadCache::kMaxValueBytes + 1, 'x');
  cache.fill(cache.ticket(), "p", "k", big, 1);
  EXPECT_FALSE(cache.find("p", "k"));
  cache.fill(cache.ticket(), "p", "k", "small", 1);
  const std::vector<KvChange> grown{{"p", "k", big, 2}};
  cache.applied(grown);
  EXPECT_FALSE(cache.find("p", "k")) << "the old small value must not survive a large write";
  EXPECT_EQ(cache.bytes(), 0u);
}

}  // namespace
}  // namespace trellis::kernel::storage::internal
