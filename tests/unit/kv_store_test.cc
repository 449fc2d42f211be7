// The KvStore contract, run against both backends (SQLite files, PostgreSQL under
// row-level security), plus what only one of them has (files, the RLS policy itself).
#include "trellis/kernel/storage/kv_store.h"

#include <gtest/gtest.h>
#include <soci/soci.h>
#include <soci/sqlite3/soci-sqlite3.h>

#include <atomic>
#include <filesystem>
#include <functional>
#include <thread>
#include <vector>

#include "support/shared_postgres.h"
#include "support/test_support.h"
#include "trellis/tenants/postgres.h"
#include "trellis/tenants/sql_statement.h"

namespace trellis::kernel::storage {
namespace {

using tenants::sql::Query;
using test::SharedPostgres;
using test::TempDir;

enum class Backend { kSqlite, kPostgres };

// What the quota counts, computed from the data itself (a second connection to the file).
uint64_t realStorageBytes(const std::filesystem::path& db_file) {
  soci::session sql(soci::sqlite3, "db=\"" + db_file.string() + "\"");
  long long bytes = -1;
  Query(sql, "SELECT COALESCE(SUM(length(key) + length(value)), 0) FROM kv").into(bytes).run();
  return static_cast<uint64_t>(bytes);
}

class KvStoreFixture : public ::testing::Test {
 protected:
  void open() {
    if (backend_ == Backend::kPostgres) {
      if (db_.name.empty()) {
        db_ = SharedPostgres::freshDatabase();
        ASSERT_TRUE(db_) << db_.error;
      }
      store_.reset();
      auto pool = tenants::PostgresPool::open(db_.app, {.size = 4});
      ASSERT_TRUE(pool) << pool.status().toString();
      auto opened = openPostgresKvStore(*pool);
      ASSERT_TRUE(opened) << opened.status().toString();
      store_ = std::move(*opened);
      return;
    }
    store_.reset();
    auto opened = openSqliteKvStore(dir_.path() / "data");
    ASSERT_TRUE(opened) << opened.status().toString();
    store_ = std::move(*opened);
  }
  void reopen() { open(); }
  bool sqlite() const { return backend_ == Backend::kSqlite; }

  std::vector<std::string> keys(const Scope& scope, std::string_view prefix,
                                std::string_view start_after = "", uint32_t limit = 0) {
    auto r = store_->list(scope, prefix, start_after, limit);
    EXPECT_TRUE(r) << r.status().toString();
    std::vector<std::string> out;
    if (r) {
      for (const auto& e : *r) out.push_back(e.key);
    }
    return out;
  }

  uint64_t usage(std::string_view tenant) {
    auto r = store_->storageBytes(tenant);
    EXPECT_TRUE(r) << r.status().toString();
    return r ? *r : UINT64_MAX;
  }
  std::filesystem::path dbFile(const std::string& tenant) const {
    return dir_.path() / "data" / (tenant + ".db");
  }
  // The bytes the tenant's entries really hold, counted from the stored rows (as the
  // superuser on PostgreSQL, which row-level security does not restrict). SQLite: from the
  // tenant's file, after closing the store, which copies its redo log into the file.
  uint64_t realBytes(const std::string& tenant) {
    if (sqlite()) {
      store_.reset();
      const uint64_t bytes =
          std::filesystem::exists(dbFile(tenant)) ? realStorageBytes(dbFile(tenant)) : 0;
      open();
      return bytes;
    }
    auto r = SharedPostgres::server().execSql(
        "SELECT COALESCE(SUM(length(key) + length(value)), 0) FROM trellis.kv "
        "WHERE tenant_id = '" +
            tenant + "'",
        db_.name);
    EXPECT_TRUE(r) << r.error;
    return r ? std::stoull(r.rows.at(0).at(0)) : UINT64_MAX;
  }
  static Scope withQuota(Scope s, uint64_t max) {
    s.max_storage_bytes = max;
    return s;
  }

  Backend backend_ = Backend::kSqlite;
  TempDir dir_;
  test::TestDatabase db_;
  std::unique_ptr<KvStore> store_;
  const Scope acme_{"acme", "trellis/hello"};
};

class KvStoreTest : public KvStoreFixture, public ::testing::WithParamInterface<Backend> {
 protected:
  void SetUp() override {
    backend_ = GetParam();
    open();
  }
};

INSTANTIATE_TEST_SUITE_P(Backends, KvStoreTest,
                         ::testing::Values(Backend::kSqlite, Backend::kPostgres),
                         [](const ::testing::TestParamInfo<Backend>& info) {
                           return info.param == Backend::kSqlite ? "Sqlite" : "Postgres";
                         });

// Behaviour only the SQLite backend has: files on disk.
class SqliteKvStoreTest : public KvStoreFixture {
 protected:
  void SetUp() override { open(); }
};

// Increments "counter" from `threads` threads, `per_thread` times each, by a read and a
// compare-and-set (a conflict is tried again); `pause(thread, done)` runs before each try.
// Then checks that no increment was lost and none failed otherwise.
void expectConcurrentIncrementsLoseNothing(KvStore& store, const Scope& scope, int threads,
                                           int per_thread,
                                           const std::function<void(int, int)>& pause = {}) {
  std::atomic<int> errors{0};
  std::vector<std::thread> running;
  for (int t = 0; t < threads; ++t) {
    running.emplace_back([&, t] {
      for (int done = 0; done < per_thread;) {
        if (pause) pause(t, done);
        auto cur = store.get(scope, "counter");
        if (!cur && cur.status().code() != StatusCode::kNotFound) {
          ++errors;
          return;
        }
        const uint64_t expected = cur ? cur->version : kAbsent;
        const int value = cur ? std::stoi(cur->value) : 0;
        auto put = store.put(scope, "counter", std::to_string(value + 1), expected);
        if (put) {
          ++done;
        } else if (put.status().code() != StatusCode::kConflict) {
          ++errors;
          return;
        }
      }
    });
  }
  for (auto& t : running) t.join();
  EXPECT_EQ(errors.load(), 0);
  auto e = store.get(scope, "counter");
  ASSERT_TRUE(e);
  EXPECT_EQ(e->value, std::to_string(threads * per_thread));
  EXPECT_EQ(e->version, static_cast<uint64_t>(threads * per_thread));
}

TEST_P(KvStoreTest, PutGetRoundTripsAndVersionsStartAtOne) {
  auto v = store_->put(acme_, "visits/ann", "1", kAnyVersion);
  ASSERT_TRUE(v) << v.status().toString();
  EXPECT_EQ(*v, 1u);
  auto e = store_->get(acme_, "visits/ann");
  ASSERT_TRUE(e);
  EXPECT_EQ(e->key, "visits/ann");
  EXPECT_EQ(e->value, "1");
  EXPECT_EQ(e->version, 1u);

  EXPECT_EQ(*store_->put(acme_, "visits/ann", "2", kAnyVersion), 2u);
  EXPECT_EQ(*store_->put(acme_, "visits/ann", "3", 2), 3u);
  e = store_->get(acme_, "visits/ann");
  EXPECT_EQ(e->value, "3");
  EXPECT_EQ(e->version, 3u);
}

TEST_P(KvStoreTest, GetOfMissingKeyIsNotFound) {
  EXPECT_EQ(store_->get(acme_, "nope").status().code(), StatusCode::kNotFound);
}

TEST_P(KvStoreTest, EmptyValueIsStoredAsEmptyNotMissing) {
  ASSERT_TRUE(store_->put(acme_, "k", "", kAnyVersion));
  auto e = store_->get(acme_, "k");
  ASSERT_TRUE(e);
  EXPECT_EQ(e->value, "");
}

TEST_P(KvStoreTest, PutIfAbsentConflictsWhenKeyExists) {
  EXPECT_EQ(*store_->put(acme_, "k", "a", kAbsent), 1u);
  auto again = store_->put(acme_, "k", "b", kAbsent);
  EXPECT_EQ(again.status().code(), StatusCode::kConflict);
  EXPECT_EQ(store_->get(acme_, "k")->value, "a");
}

TEST_P(KvStoreTest, PutWithStaleVersionConflictsAndChangesNothing) {
  ASSERT_TRUE(store_->put(acme_, "k", "a", kAnyVersion));
  ASSERT_TRUE(store_->put(acme_, "k", "b", 1));
  auto stale = store_->put(acme_, "k", "c", 1);
  EXPECT_EQ(stale.status().code(), StatusCode::kConflict);
  auto e = store_->get(acme_, "k");
  EXPECT_EQ(e->value, "b");
  EXPECT_EQ(e->version, 2u);
}

TEST_P(KvStoreTest, PutWithVersionOfMissingKeyConflicts) {
  EXPECT_EQ(store_->put(acme_, "k", "a", 1).status().code(), StatusCode::kConflict);
  EXPECT_EQ(store_->get(acme_, "k").status().code(), StatusCode::kNotFound);
}

TEST_P(KvStoreTest, RemoveHonoursVersionsAndReportsMissingKeys) {
  ASSERT_TRUE(store_->put(acme_, "k", "a", kAnyVersion));
  ASSERT_TRUE(store_->put(acme_, "k", "b", kAnyVersion));
  EXPECT_EQ(store_->remove(acme_, "k", 1).code(), StatusCode::kConflict);
  EXPECT_TRUE(store_->get(acme_, "k"));
  EXPECT_TRUE(store_->remove(acme_, "k", 2));
  EXPECT_EQ(store_->get(acme_, "k").status().code(), StatusCode::kNotFound);
  EXPECT_EQ(store_->remove(acme_, "k", kAnyVersion).code(), StatusCode::kNotFound);

  ASSERT_TRUE(store_->put(acme_, "j", "x", kAnyVersion));
  EXPECT_TRUE(store_->remove(acme_, "j", kAnyVersion));
}

TEST_P(KvStoreTest, RecreatedKeyStartsAgainAtVersionOne) {
  ASSERT_TRUE(store_->put(acme_, "k", "a", kAnyVersion));
  ASSERT_TRUE(store_->put(acme_, "k", "b", kAnyVersion));
  ASSERT_TRUE(store_->remove(acme_, "k", kAnyVersion));
  EXPECT_EQ(*store_->put(acme_, "k", "c", kAbsent), 1u);
}

TEST_P(KvStoreTest, KeyAndValueSizeLimits) {
  std::string max_key(kMaxKeyBytes, 'k');
  EXPECT_TRUE(store_->put(acme_, max_key, "v", kAnyVersion));
  EXPECT_EQ(store_->get(acme_, max_key)->value, "v");
  std::string long_key(kMaxKeyBytes + 1, 'k');
  EXPECT_EQ(store_->put(acme_, long_key, "v", kAnyVersion).status().code(), StatusCode::kInvalid);
  EXPECT_EQ(store_->get(acme_, long_key).status().code(), StatusCode::kInvalid);
  EXPECT_EQ(store_->remove(acme_, long_key, kAnyVersion).code(), StatusCode::kInvalid);
  EXPECT_EQ(store_->put(acme_, "", "v", kAnyVersion).status().code(), StatusCode::kInvalid);
  EXPECT_EQ(store_->get(acme_, "").status().code(), StatusCode::kInvalid);

  std::string max_value(kMaxValueBytes, 'v');
  EXPECT_TRUE(store_->put(acme_, "big", max_value, kAnyVersion));
  EXPECT_EQ(store_->get(acme_, "big")->value.size(), kMaxValueBytes);
  EXPECT_EQ(store_->put(acme_, "big", max_value + "v", kAnyVersion).status().code(),
            StatusCode::kInvalid);
}

TEST_P(KvStoreTest, BinaryKeysAndValuesRoundTripExactly) {
  const std::string key("a\0b\xff\xfe\x80z", 7);
  const std::string value("\0\0\xc3\x28 \xed\xa0\x80\n", 9);  // NULs and invalid UTF-8
  ASSERT_TRUE(store_->put(acme_, key, value, kAnyVersion));
  auto e = store_->get(acme_, key);
  ASSERT_TRUE(e) << e.status().toString();
  EXPECT_EQ(e->key, key);
  EXPECT_EQ(e->value, value);
  // A key that differs only after the NUL is a different key.
  EXPECT_EQ(store_->get(acme_, std::string("a\0c", 3)).status().code(), StatusCode::kNotFound);
  EXPECT_EQ(store_->get(acme_, "a").status().code(), StatusCode::kNotFound);

  auto listed = store_->list(acme_, std::string("a\0", 2), "", 0);
  ASSERT_TRUE(listed);
  ASSERT_EQ(listed->size(), 1u);
  EXPECT_EQ((*listed)[0].key, key);
  EXPECT_EQ((*listed)[0].value, value);
}

TEST_P(KvStoreTest, ListUsesByteOrderAndPrefix) {
  for (const std::string& k :
       std::vector<std::string>{"b", "a/2", "a/10", "a/1", "a", "a0", std::string("a/\xff", 3),
                                std::string("a/\0", 3)}) {
    ASSERT_TRUE(store_->put(acme_, k, "v" + k, kAnyVersion));
  }
  EXPECT_EQ(keys(acme_, "a/"), (std::vector<std::string>{std::string("a/\0", 3), "a/1", "a/10",
                                                         "a/2", std::string("a/\xff", 3)}));
  EXPECT_EQ(keys(acme_, ""),
            (std::vector<std::string>{"a", std::string("a/\0", 3), "a/1", "a/10", "a/2",
                                      std::string("a/\xff", 3), "a0", "b"}));
  auto full = store_->list(acme_, "a/1", "", 0);
  ASSERT_TRUE(full);
  ASSERT_EQ(full->size(), 2u);
  EXPECT_EQ((*full)[0].value, "va/1");
  EXPECT_EQ((*full)[0].version, 1u);
}

TEST_P(KvStoreTest, ListPrefixOfHighBytesHasNoUpperBoundProblem) {
  const std::string ff("\xff\xff", 2);
  ASSERT_TRUE(store_->put(acme_, ff, "1", kAnyVersion));
  ASSERT_TRUE(store_->put(acme_, ff + "x", "2", kAnyVersion));
  ASSERT_TRUE(store_->put(acme_, "\xfe", "3", kAnyVersion));
  EXPECT_EQ(keys(acme_, ff), (std::vector<std::string>{ff, ff + "x"}));
  EXPECT_EQ(keys(acme_, "\xff"), (std::vector<std::string>{ff, ff + "x"}));
}

TEST_P(KvStoreTest, ListTreatsPercentAndUnderscoreLiterally) {
  for (const char* k : {"a%b", "a%c", "axb", "a_1", "ab1", "a\\x"}) {
    ASSERT_TRUE(store_->put(acme_, k, "v", kAnyVersion));
  }
  EXPECT_EQ(keys(acme_, "a%"), (std::vector<std::string>{"a%b", "a%c"}));
  EXPECT_EQ(keys(acme_, "a_"), (std::vector<std::string>{"a_1"}));
  EXPECT_EQ(keys(acme_, "a\\"), (std::vector<std::string>{"a\\x"}));
  EXPECT_TRUE(keys(acme_, "%").empty());
  EXPECT_TRUE(keys(acme_, "_").empty());
}

TEST_P(KvStoreTest, ListPaginatesWithStartAfterAndLimit) {
  for (int i = 0; i < 25; ++i) {
    char k[16];
    std::snprintf(k, sizeof k, "item/%02d", i);
    ASSERT_TRUE(store_->put(acme_, k, "v", kAnyVersion));
  }
  ASSERT_TRUE(store_->put(acme_, "other", "v", kAnyVersion));

  std::vector<std::string> all;
  std::string after;
  int pages = 0;
  for (;;) {
    auto page = keys(acme_, "item/", after, 10);
    if (page.empty()) break;
    ++pages;
    EXPECT_LE(page.size(), 10u);
    all.insert(all.end(), page.begin(), page.end());
    after = page.back();
  }
  EXPECT_EQ(pages, 3);
  ASSERT_EQ(all.size(), 25u);
  EXPECT_EQ(all.front(), "item/00");
  EXPECT_EQ(all.back(), "item/24");

  // start_after before the prefix range, and a start_after that is not itself a key.
  EXPECT_EQ(keys(acme_, "item/", "a", 2), (std::vector<std::string>{"item/00", "item/01"}));
  EXPECT_EQ(keys(acme_, "item/", "item/05x", 2), (std::vector<std::string>{"item/06", "item/07"}));
  EXPECT_TRUE(keys(acme_, "item/", "z").empty());
}

TEST_P(KvStoreTest, ListLimitZeroAndOversizedMeanTheMaximum) {
  for (uint32_t i = 0; i < kMaxListLimit + 5; ++i) {
    ASSERT_TRUE(store_->put(acme_, "k" + std::to_string(100000 + i), "", kAnyVersion));
  }
  EXPECT_EQ(keys(acme_, "k", "", 0).size(), kMaxListLimit);
  EXPECT_EQ(keys(acme_, "k", "", kMaxListLimit + 100).size(), kMaxListLimit);
  EXPECT_EQ(keys(acme_, "k", "", 7).size(), 7u);
}

TEST_P(KvStoreTest, ListRefusesOversizedPrefix) {
  std::string p(kMaxKeyBytes + 1, 'p');
  EXPECT_EQ(store_->list(acme_, p, "", 0).status().code(), StatusCode::kInvalid);
}

TEST_P(KvStoreTest, TenantsAreIsolatedForTheSamePlugin) {
  const Scope globex{"globex", acme_.plugin};
  ASSERT_TRUE(store_->put(acme_, "secret", "acme-data", kAnyVersion));
  EXPECT_EQ(store_->get(globex, "secret").status().code(), StatusCode::kNotFound);
  EXPECT_TRUE(keys(globex, "").empty());
  EXPECT_EQ(store_->remove(globex, "secret", kAnyVersion).code(), StatusCode::kNotFound);
  EXPECT_EQ(store_->put(globex, "secret", "x", 1).status().code(), StatusCode::kConflict);
  EXPECT_EQ(*store_->put(globex, "secret", "globex-data", kAbsent), 1u);
  EXPECT_EQ(store_->get(acme_, "secret")->value, "acme-data");
  EXPECT_EQ(store_->get(globex, "secret")->value, "globex-data");
}

// Keys that would cross a boundary if a backend built paths or SQL from them.
std::vector<std::string> hostileKeys() {
  return {"../globex/secret",
          "..",
          "/",
          "a/../../b",
          std::string("k\0globex", 8),
          std::string("\0", 1),
          std::string("\xff\xfe\xc3\x28\xed\xa0\x80", 7),  // invalid UTF-8
          std::string(kMaxKeyBytes, 'x'),
          std::string(kMaxKeyBytes - 1, '\xff') + "/",
          "%",
          "_",
          "' OR '1'='1",
          "globex",
          "acme"};
}

TEST_P(KvStoreTest, ATenantCannotReadListOverwriteOrDeleteAnotherTenantsKeys) {
  const Scope globex{"globex", acme_.plugin};
  const auto hostile = hostileKeys();
  for (const auto& k : hostile) {
    ASSERT_TRUE(store_->put(globex, k, "globex:" + k, kAnyVersion)) << k.substr(0, 20);
  }
  const uint64_t globex_bytes = usage("globex");

  EXPECT_TRUE(keys(acme_, "").empty());
  for (const auto& k : hostile) {
    EXPECT_EQ(store_->get(acme_, k).status().code(), StatusCode::kNotFound) << k.substr(0, 20);
    EXPECT_EQ(store_->remove(acme_, k, kAnyVersion).code(), StatusCode::kNotFound);
    EXPECT_EQ(store_->remove(acme_, k, 1).code(), StatusCode::kNotFound);
    EXPECT_EQ(store_->put(acme_, k, "stolen", 1).status().code(), StatusCode::kConflict);
    EXPECT_TRUE(keys(acme_, k).empty());
    EXPECT_TRUE(keys(acme_, "", k).empty());
  }
  for (const auto& k : hostile) {
    // Writing the same key makes acme its own entry, version 1: nothing of globex's.
    auto v = store_->put(acme_, k, "acme:" + k, kAbsent);
    ASSERT_TRUE(v) << v.status().toString();
    EXPECT_EQ(*v, 1u);
  }
  auto listed = store_->list(acme_, "", "", 0);
  ASSERT_TRUE(listed);
  EXPECT_EQ(listed->size(), hostile.size());
  for (const auto& e : *listed) EXPECT_EQ(e.value, "acme:" + e.key);

  ASSERT_TRUE(store_->removeTenant("acme"));
  for (const auto& k : hostile) {
    auto e = store_->get(globex, k);
    ASSERT_TRUE(e) << k.substr(0, 20) << ": " << e.status().toString();
    EXPECT_EQ(e->value, "globex:" + k);
    EXPECT_EQ(e->version, 1u);
  }
  EXPECT_EQ(usage("globex"), globex_bytes);
  EXPECT_EQ(usage("globex"), realBytes("globex"));
  EXPECT_EQ(usage("acme"), 0u);
}

TEST_P(KvStoreTest, AQuotaCountsOnlyItsOwnTenantsBytes) {
  ASSERT_TRUE(store_->put({"globex", acme_.plugin}, "big", std::string(1000, 'g'), kAnyVersion));
  EXPECT_TRUE(store_->put(withQuota(acme_, 10), "k", "12345678", kAnyVersion));  // 9 of 10
  EXPECT_EQ(usage("acme"), 9u);
  EXPECT_EQ(usage("globex"), 1003u);
}

TEST_F(SqliteKvStoreTest, EachTenantHasItsOwnFile) {
  ASSERT_TRUE(store_->put(acme_, "secret", "acme-data", kAnyVersion));
  ASSERT_TRUE(store_->put({"globex", acme_.plugin}, "secret", "globex-data", kAnyVersion));
  EXPECT_TRUE(std::filesystem::exists(dir_.path() / "data" / "acme.db"));
  EXPECT_TRUE(std::filesystem::exists(dir_.path() / "data" / "globex.db"));
}

TEST_F(SqliteKvStoreTest, TenantFilesAreOwnerOnly) {
  ASSERT_TRUE(store_->put(acme_, "k", "v", kAnyVersion));
  using std::filesystem::perms;
  auto mode = [](const std::filesystem::path& p) {
    return std::filesystem::status(p).permissions() & perms::all;
  };
  EXPECT_EQ(mode(dir_.path() / "data"), perms::owner_all);
  EXPECT_EQ(mode(dir_.path() / "data" / "acme.db"), perms::owner_read | perms::owner_write);
  EXPECT_EQ(mode(dir_.path() / "data" / "acme.db-wal"), perms::owner_read | perms::owner_write);
}

// Once a tenant is idle (100 ms) its logged writes are applied to SQLite and the values
// kept by the read cache: every read and compare-and-set after that must see the newest
// value, never one the cache held from before.
TEST_F(SqliteKvStoreTest, ReadsAndCompareAndSetSeeTheNewestValueAcrossApplies) {
  auto idle = [] { std::this_thread::sleep_for(std::chrono::milliseconds(350)); };
  ASSERT_EQ(*store_->put(acme_, "k", "v1", kAnyVersion), 1u);
  idle();
  EXPECT_EQ(store_->get(acme_, "k")->value, "v1");  // read from SQLite, then cached
  EXPECT_EQ(store_->get(acme_, "k")->value, "v1");
  EXPECT_EQ(*store_->put(acme_, "k", "v2", 1), 2u);
  EXPECT_EQ(store_->get(acme_, "k")->value, "v2");
  idle();
  auto e = store_->get(acme_, "k");
  ASSERT_TRUE(e);
  EXPECT_EQ(e->value, "v2");
  EXPECT_EQ(e->version, 2u);
  EXPECT_EQ(store_->put(acme_, "k", "stale", 1).status().code(), StatusCode::kConflict);
  ASSERT_TRUE(store_->remove(acme_, "k", 2));
  idle();
  EXPECT_EQ(store_->get(acme_, "k").status().code(), StatusCode::kNotFound);
  EXPECT_EQ(*store_->put(acme_, "k", "again", kAbsent), 1u);
}

// A key read while SQLite did not hold it is kept as absent: its first write, an apply and
// a removal must each replace that knowledge.
TEST_F(SqliteKvStoreTest, AKeyReadAsAbsentIsSeenOnceWritten) {
  auto idle = [] { std::this_thread::sleep_for(std::chrono::milliseconds(350)); };
  EXPECT_EQ(store_->get(acme_, "k").status().code(), StatusCode::kNotFound);  // kept: absent
  EXPECT_EQ(store_->get(acme_, "k").status().code(), StatusCode::kNotFound);
  EXPECT_EQ(store_->put(acme_, "k", "v0", 7).status().code(), StatusCode::kConflict);
  EXPECT_EQ(*store_->put(acme_, "k", "v1", kAbsent), 1u);
  EXPECT_EQ(store_->get(acme_, "k")->value, "v1");
  idle();  // applied: SQLite has it, the overlay forgets it
  EXPECT_EQ(store_->get(acme_, "k")->value, "v1");
  EXPECT_EQ(store_->put(acme_, "k", "dup", kAbsent).status().code(), StatusCode::kConflict);
  ASSERT_TRUE(store_->remove(acme_, "k", 1));
  idle();
  EXPECT_EQ(store_->get(acme_, "k").status().code(), StatusCode::kNotFound);
  EXPECT_EQ(*store_->put(acme_, "k", "again", kAbsent), 1u);
  idle();
  EXPECT_EQ(store_->get(acme_, "k")->value, "again");
}

TEST_F(SqliteKvStoreTest, IncrementsThatPauseForAppliesLoseNothing) {
  // Now and then every thread pauses at once, long enough for an apply.
  expectConcurrentIncrementsLoseNothing(*store_, acme_, 4, 30, [](int thread, int done) {
    if (done % 10 == 9) std::this_thread::sleep_for(std::chrono::milliseconds(150 + thread));
  });
}

// The writer no longer checkpoints (its WAL hook only queues one), so this fails if no
// checkpoint runs elsewhere: every page would stay in the WAL and the file would not grow.
TEST_F(SqliteKvStoreTest, CheckpointsCopyTheWalIntoTheDatabaseAndTheWalStartsOver) {
  const std::string value(4000, 'v');
  auto writeRound = [&](int round) {
    std::vector<std::thread> writers;
    for (int t = 0; t < 8; ++t) {
      writers.emplace_back([&, t] {
        for (int i = 0; i < 200; ++i) {
          const std::string key = "r" + std::to_string(round) + "/" + std::to_string(t * 200 + i);
          ASSERT_TRUE(store_->put(acme_, key, value, kAbsent));
        }
      });
    }
    for (auto& w : writers) w.join();
  };
  const auto db = dbFile("acme");
  const auto wal = db.string() + "-wal";
  constexpr std::uintmax_t kRoundBytes = 1600 * 4000;  // ~6.4 MB of values per round

  writeRound(1);
  // Up to 1000 pages may stay in the WAL until it grows again, as with SQLite's own
  // checkpoints.
  ASSERT_TRUE(test::eventually([&] { return std::filesystem::file_size(db) >= kRoundBytes / 2; }))
      << "the database file stayed at " << std::filesystem::file_size(db) << " bytes";
  writeRound(2);
  // Each round appends more than kRoundBytes of pages; the WAL file holds less than both
  // rounds only if it was started over from its beginning.
  EXPECT_LT(std::filesystem::file_size(wal), 2 * kRoundBytes);

  reopen();  // closes the store while a checkpoint may be queued or running
  auto e = store_->get(acme_, "r2/1599");
  ASSERT_TRUE(e) << e.status().toString();
  EXPECT_EQ(e->value, value);
}

TEST_P(KvStoreTest, PluginsAreIsolatedWithinATenant) {
  const Scope other{"acme", "trellis/other"};
  ASSERT_TRUE(store_->put(acme_, "k", "hello", kAnyVersion));
  EXPECT_EQ(store_->get(other, "k").status().code(), StatusCode::kNotFound);
  EXPECT_TRUE(keys(other, "").empty());
  EXPECT_EQ(store_->remove(other, "k", kAnyVersion).code(), StatusCode::kNotFound);
  EXPECT_TRUE(store_->get(acme_, "k"));
}

TEST_P(KvStoreTest, DataSurvivesReopening) {
  ASSERT_TRUE(store_->put(acme_, "k", "v1", kAnyVersion));
  ASSERT_TRUE(store_->put(acme_, "k", "v2", kAnyVersion));
  reopen();
  auto e = store_->get(acme_, "k");
  ASSERT_TRUE(e) << e.status().toString();
  EXPECT_EQ(e->value, "v2");
  EXPECT_EQ(e->version, 2u);
}

TEST_P(KvStoreTest, ConcurrentCompareAndSetIncrementsLoseNothing) {
  expectConcurrentIncrementsLoseNothing(*store_, acme_, 8, 25);
}

TEST_P(KvStoreTest, BadTenantIdsAreRefusedAndCreateNoFiles) {
  for (const std::string& bad : std::vector<std::string>{
           "../x", "", "A", "-a", "a/b", "a.db", std::string(64, 'a'), std::string("a\0b", 3)}) {
    const Scope s{bad, "trellis/hello"};
    EXPECT_EQ(store_->put(s, "k", "v", kAnyVersion).status().code(), StatusCode::kInvalid) << bad;
    EXPECT_EQ(store_->get(s, "k").status().code(), StatusCode::kInvalid) << bad;
    EXPECT_EQ(store_->remove(s, "k", kAnyVersion).code(), StatusCode::kInvalid) << bad;
    EXPECT_EQ(store_->list(s, "", "", 0).status().code(), StatusCode::kInvalid) << bad;
  }
  EXPECT_TRUE(store_->put({std::string(63, 'a'), "trellis/hello"}, "k", "v", kAnyVersion));
  EXPECT_EQ(store_->storageBytes("../x").status().code(), StatusCode::kInvalid);
  EXPECT_EQ(store_->removeTenant("a/b").code(), StatusCode::kInvalid);
  if (!sqlite()) return;
  EXPECT_FALSE(std::filesystem::exists(dir_.path() / "x.db"));
  size_t files = 0;
  for (const auto& f : std::filesystem::directory_iterator(dir_.path() / "data")) {
    if (f.path().extension() == ".db") ++files;
  }
  EXPECT_EQ(files, 1u);
}

TEST(KvStoreOpenTest, UnwritableDirectoryIsUnavailable) {
  TempDir dir;
  test::writeFile(dir / "file", "not a directory");
  auto opened = openSqliteKvStore(dir / "file" / "data");
  EXPECT_EQ(opened.status().code(), StatusCode::kUnavailable);
}

TEST(KvStoreOpenTest, DatabaseThatCannotBeOpenedIsUnavailableNotACrash) {
  TempDir dir;
  auto opened = openSqliteKvStore(dir.path());
  ASSERT_TRUE(opened);
  // A directory where the database file should be: SQLite cannot open it.
  std::filesystem::create_directory(dir / "acme.db");
  auto r = (*opened)->put({"acme", "trellis/hello"}, "k", "v", kAnyVersion);
  EXPECT_EQ(r.status().code(), StatusCode::kUnavailable);
  EXPECT_NE(r.status().message().find("acme"), std::string::npos) << r.status().message();
}

TEST_P(KvStoreTest, RemoveTenantDeletesOnlyThatTenantsDataAndFiles) {
  const Scope globex{"globex", "trellis/hello"};
  ASSERT_TRUE(store_->put(acme_, "k", "a", kAnyVersion));
  ASSERT_TRUE(store_->put(globex, "k", "g", kAnyVersion));
  ASSERT_TRUE(store_->put({"acme", "trellis/other"}, "k2", "o", kAnyVersion));
  const auto acme_file = dir_.path() / "data" / "acme.db";
  if (sqlite()) {
    ASSERT_TRUE(std::filesystem::exists(acme_file));
  }

  EXPECT_TRUE(store_->removeTenant("acme"));
  if (sqlite()) {
    EXPECT_FALSE(std::filesystem::exists(acme_file));
    EXPECT_FALSE(std::filesystem::exists(dir_.path() / "data" / "acme.db-wal"));
  }
  EXPECT_EQ(realBytes("acme"), 0u);
  EXPECT_EQ(store_->get(acme_, "k").status().code(), StatusCode::kNotFound);
  EXPECT_TRUE(keys({"acme", "trellis/other"}, "").empty());
  EXPECT_EQ(store_->get(globex, "k")->value, "g");
  EXPECT_TRUE(store_->removeTenant("never-had-data"));
  EXPECT_EQ(store_->removeTenant("../etc").code(), StatusCode::kInvalid);
}

TEST_P(KvStoreTest, StorageBytesCountKeysAndValuesOfAllPluginsOfOneTenant) {
  const Scope acme_other{"acme", "trellis/other"};
  const Scope globex{"globex", "trellis/hello"};
  EXPECT_EQ(usage("acme"), 0u);
  ASSERT_TRUE(store_->put(acme_, "key", "value", kAnyVersion));        // 3 + 5
  ASSERT_TRUE(store_->put(acme_other, "k", "", kAnyVersion));          // 1 + 0
  ASSERT_TRUE(store_->put(globex, "globex-key", "xyz", kAnyVersion));  // other tenant
  const std::string binary("\0\xff", 2);
  ASSERT_TRUE(store_->put(acme_other, binary, binary + binary, kAnyVersion));  // 2 + 4
  EXPECT_EQ(usage("acme"), 8u + 1u + 6u);
  EXPECT_EQ(usage("globex"), 13u);
  EXPECT_EQ(usage("acme"), realBytes("acme"));
  EXPECT_EQ(store_->storageBytes("../etc").status().code(), StatusCode::kInvalid);
}

TEST_P(KvStoreTest, WriteOverQuotaIsRefusedAndChangesNothing) {
  const Scope q = withQuota(acme_, 20);
  ASSERT_TRUE(store_->put(q, "a", "123456789", kAnyVersion));  // 10 bytes
  ASSERT_TRUE(store_->put(q, "b", "12345", kAnyVersion));      // 6 bytes, 16 in all

  // Growing an existing entry by 5 (to 21) and a new entry of 5 are both refused.
  auto grow = store_->put(q, "b", "1234567890", 1);
  EXPECT_EQ(grow.status().code(), StatusCode::kQuotaExceeded);
  EXPECT_NE(grow.status().message().find("storage quota of 20 bytes exceeded: using 16, this "
                                         "write needs 5 more"),
            std::string::npos)
      << grow.status().message();
  EXPECT_EQ(store_->put(q, "c", "1234", kAbsent).status().code(), StatusCode::kQuotaExceeded);

  auto b = store_->get(q, "b");
  ASSERT_TRUE(b);
  EXPECT_EQ(b->value, "12345");
  EXPECT_EQ(b->version, 1u);
  EXPECT_EQ(store_->get(q, "c").status().code(), StatusCode::kNotFound);
  EXPECT_EQ(usage("acme"), 16u);
  EXPECT_EQ(realBytes("acme"), 16u);

  // The quota is the tenant's: another plugin of it shares the same 4 remaining bytes,
  // and without a quota (unlimited) the same write goes through.
  EXPECT_EQ(store_->put(withQuota({"acme", "trellis/other"}, 20), "c", "1234", kAnyVersion)
                .status()
                .code(),
            StatusCode::kQuotaExceeded);
  EXPECT_TRUE(store_->put(acme_, "c", "1234", kAbsent));
  EXPECT_EQ(usage("acme"), 21u);
}

TEST_P(KvStoreTest, ConflictIsReportedBeforeQuota) {
  const Scope q = withQuota(acme_, 4);
  ASSERT_TRUE(store_->put(q, "k", "123", kAnyVersion));
  EXPECT_EQ(store_->put(q, "k", "123456", 7).status().code(), StatusCode::kConflict);
}

TEST_P(KvStoreTest, WriteExactlyAtTheLimitSucceeds) {
  const Scope q = withQuota(acme_, 10);
  ASSERT_TRUE(store_->put(q, "k1", "1234", kAnyVersion));  // 6
  EXPECT_TRUE(store_->put(q, "k2", "12", kAnyVersion));    // 4: exactly 10
  EXPECT_EQ(usage("acme"), 10u);
  EXPECT_EQ(store_->put(q, "k3", "", kAnyVersion).status().code(), StatusCode::kQuotaExceeded);
  // A same-size overwrite at the limit needs nothing more.
  EXPECT_TRUE(store_->put(q, "k2", "ab", kAnyVersion));
  EXPECT_TRUE(store_->put(withQuota(acme_, 0), "k2", "cd", kAnyVersion));
  EXPECT_EQ(usage("acme"), 10u);
}

TEST_P(KvStoreTest, SmallerOverwriteAndRemoveFreeBytes) {
  const Scope q = withQuota(acme_, 30);
  ASSERT_TRUE(store_->put(q, "big", std::string(25, 'v'), kAnyVersion));  // 28
  EXPECT_EQ(store_->put(q, "x", "yz", kAnyVersion).status().code(), StatusCode::kQuotaExceeded);
  ASSERT_TRUE(store_->put(q, "big", "v", kAnyVersion));  // 4
  EXPECT_EQ(usage("acme"), 4u);
  ASSERT_TRUE(store_->put(q, "x", "yz", kAnyVersion));  // 3
  EXPECT_EQ(usage("acme"), 7u);
  ASSERT_TRUE(store_->remove(q, "big", kAnyVersion));
  EXPECT_EQ(usage("acme"), 3u);
  // Refused removals free nothing.
  EXPECT_EQ(store_->remove(q, "x", 9).code(), StatusCode::kConflict);
  EXPECT_EQ(store_->remove(q, "nope", kAnyVersion).code(), StatusCode::kNotFound);
  EXPECT_EQ(usage("acme"), 3u);
  ASSERT_TRUE(store_->remove(q, "x", 1));
  EXPECT_EQ(usage("acme"), 0u);
  EXPECT_EQ(realBytes("acme"), 0u);
}

TEST_P(KvStoreTest, OverALoweredQuotaATenantCanStillShrinkButNotGrow) {
  ASSERT_TRUE(store_->put(acme_, "a", std::string(49, 'v'), kAnyVersion));  // 50
  ASSERT_TRUE(store_->put(acme_, "b", std::string(49, 'v'), kAnyVersion));  // 100
  const Scope q = withQuota(acme_, 60);                                     // lowered

  EXPECT_EQ(store_->put(q, "c", "", kAnyVersion).status().code(), StatusCode::kQuotaExceeded);
  EXPECT_TRUE(store_->put(q, "a", std::string(40, 'v'), kAnyVersion));  // still over: 91
  EXPECT_EQ(usage("acme"), 91u);
  EXPECT_TRUE(store_->put(q, "a", std::string(40, 'w'), kAnyVersion));  // same size
  EXPECT_EQ(store_->put(q, "a", std::string(41, 'v'), kAnyVersion).status().code(),
            StatusCode::kQuotaExceeded);
  EXPECT_TRUE(store_->remove(q, "b", kAnyVersion));
  EXPECT_EQ(usage("acme"), 41u);
  EXPECT_TRUE(store_->put(q, "c", std::string(18, 'v'), kAnyVersion));  // 60
}

TEST_P(KvStoreTest, ConcurrentWritersNeverExceedTheQuota) {
  constexpr int kThreads = 8;
  constexpr int kPerThread = 40;
  constexpr uint64_t kQuota = 1000;
  std::atomic<int> written{0}, refused{0}, errors{0};
  std::vector<std::thread> threads;
  for (int t = 0; t < kThreads; ++t) {
    threads.emplace_back([&, t] {
      // Half the threads write through another plugin: the quota is the tenant's.
      const Scope s = withQuota({"acme", t % 2 ? "trellis/hello" : "trellis/other"}, kQuota);
      for (int i = 0; i < kPerThread; ++i) {
        char key[16];
        std::snprintf(key, sizeof key, "t%d/%03d", t, i);  // 6 bytes
        auto r = store_->put(s, key, std::string(4 + (i % 7), 'v'), kAbsent);
        if (r) {
          ++written;
        } else if (r.status().code() == StatusCode::kQuotaExceeded) {
          ++refused;
        } else {
          ++errors;
        }
      }
    });
  }
  for (auto& t : threads) t.join();
  EXPECT_EQ(errors.load(), 0);
  EXPECT_GT(written.load(), 0);
  EXPECT_GT(refused.load(), 0);  // 8 * 40 entries of 10..16 bytes would be ~4000
  const uint64_t used = usage("acme");
  EXPECT_LE(used, kQuota);
  EXPECT_GT(used, kQuota - 16);  // every refusal saw less than one entry of room
  EXPECT_EQ(used, realBytes("acme"));
}

TEST_P(KvStoreTest, UsageSurvivesReopening) {
  ASSERT_TRUE(store_->put(acme_, "k1", "value", kAnyVersion));
  ASSERT_TRUE(store_->put({"acme", "trellis/other"}, "k2", "vv", kAnyVersion));
  ASSERT_TRUE(store_->remove(acme_, "k1", kAnyVersion));
  ASSERT_TRUE(store_->put(acme_, "k3", "v", kAnyVersion));
  reopen();
  EXPECT_EQ(usage("acme"), 4u + 3u);
  EXPECT_EQ(usage("acme"), realBytes("acme"));
  EXPECT_EQ(store_->put(withQuota(acme_, 7), "k4", "", kAnyVersion).status().code(),
            StatusCode::kQuotaExceeded);
}

TEST_F(SqliteKvStoreTest, DatabaseFromBeforeTheQuotaGetsItsUsageAndItsNewTableFromItsData) {
  std::filesystem::create_directories(dir_.path() / "data");
  {
    // The schema as it was before the usage table existed.
    soci::session sql(soci::sqlite3, "db=\"" + dbFile("acme").string() + "\"");
    tenants::sql::exec(sql,
                       "CREATE TABLE kv(plugin TEXT NOT NULL, key BLOB NOT NULL, value BLOB NOT "
                       "NULL, version INTEGER NOT NULL, PRIMARY KEY(plugin, key))");
    tenants::sql::exec(sql,
                       "INSERT INTO kv VALUES('trellis/hello', CAST('old' AS BLOB), "
                       "CAST('data!' AS BLOB), 3), ('trellis/other', CAST('k' AS BLOB), "
                       "CAST('' AS BLOB), 1)");
  }
  EXPECT_EQ(usage("acme"), 9u);
  ASSERT_TRUE(store_->put(acme_, "old", "d", kAnyVersion));
  EXPECT_EQ(usage("acme"), 5u);
  // A reopen does not count the data a second time.
  store_.reset();
  auto reopened = openSqliteKvStore(dir_.path() / "data");
  ASSERT_TRUE(reopened);
  store_ = std::move(*reopened);
  EXPECT_EQ(usage("acme"), 5u);
  EXPECT_EQ(store_->get(acme_, "old")->version, 4u);
  EXPECT_EQ(store_->get({"acme", "trellis/other"}, "k")->version, 1u);
  // The old rowid table was rewritten once into the key's own B-tree.
  soci::session sql(soci::sqlite3, "db=\"" + dbFile("acme").string() + "\"");
  long long without_rowid = 0;
  tenants::sql::Query(sql, "SELECT wr FROM pragma_table_list WHERE name = 'kv'")
      .into(without_rowid)
      .run();
  EXPECT_EQ(without_rowid, 1);
}

TEST_P(KvStoreTest, StorageBytesOfATenantWithoutDataCreatesNoFile) {
  EXPECT_EQ(usage("nobody"), 0u);
  if (sqlite()) {
    EXPECT_FALSE(std::filesystem::exists(dbFile("nobody")));
    EXPECT_FALSE(std::filesystem::exists(dir_.path() / "data" / "nobody.db-wal"));
  }
  // Asking first does not get in the way of the tenant's first write.
  ASSERT_TRUE(store_->put({"nobody", "trellis/hello"}, "k", "v", kAnyVersion));
  EXPECT_EQ(usage("nobody"), 2u);
}

TEST_P(KvStoreTest, RemovedTenantUsesNothing) {
  ASSERT_TRUE(store_->put(acme_, "k", "v", kAnyVersion));
  EXPECT_EQ(usage("acme"), 2u);
  ASSERT_TRUE(store_->removeTenant("acme"));
  EXPECT_EQ(usage("acme"), 0u);
  if (sqlite()) {
    EXPECT_FALSE(std::filesystem::exists(dbFile("acme")));
  }
}

}  // namespace
}  // namespace trellis::kernel::storage
