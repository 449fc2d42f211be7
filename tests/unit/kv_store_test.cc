#include "trellis/kernel/storage/kv_store.h"

#include <gtest/gtest.h>

#include <atomic>
#include <filesystem>
#include <thread>
#include <vector>

#include "support/test_support.h"

namespace trellis::kernel::storage {
namespace {

using test::TempDir;

class KvStoreTest : public ::testing::Test {
 protected:
  void SetUp() override {
    auto opened = openSqliteKvStore(dir_.path() / "data");
    ASSERT_TRUE(opened) << opened.status().toString();
    store_ = std::move(*opened);
  }

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

  TempDir dir_;
  std::unique_ptr<KvStore> store_;
  const Scope acme_{"acme", "trellis/hello"};
};

TEST_F(KvStoreTest, PutGetRoundTripsAndVersionsStartAtOne) {
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

TEST_F(KvStoreTest, GetOfMissingKeyIsNotFound) {
  EXPECT_EQ(store_->get(acme_, "nope").status().code(), StatusCode::kNotFound);
}

TEST_F(KvStoreTest, EmptyValueIsStoredAsEmptyNotMissing) {
  ASSERT_TRUE(store_->put(acme_, "k", "", kAnyVersion));
  auto e = store_->get(acme_, "k");
  ASSERT_TRUE(e);
  EXPECT_EQ(e->value, "");
}

TEST_F(KvStoreTest, PutIfAbsentConflictsWhenKeyExists) {
  EXPECT_EQ(*store_->put(acme_, "k", "a", kAbsent), 1u);
  auto again = store_->put(acme_, "k", "b", kAbsent);
  EXPECT_EQ(again.status().code(), StatusCode::kConflict);
  EXPECT_EQ(store_->get(acme_, "k")->value, "a");
}

TEST_F(KvStoreTest, PutWithStaleVersionConflictsAndChangesNothing) {
  ASSERT_TRUE(store_->put(acme_, "k", "a", kAnyVersion));
  ASSERT_TRUE(store_->put(acme_, "k", "b", 1));
  auto stale = store_->put(acme_, "k", "c", 1);
  EXPECT_EQ(stale.status().code(), StatusCode::kConflict);
  auto e = store_->get(acme_, "k");
  EXPECT_EQ(e->value, "b");
  EXPECT_EQ(e->version, 2u);
}

TEST_F(KvStoreTest, PutWithVersionOfMissingKeyConflicts) {
  EXPECT_EQ(store_->put(acme_, "k", "a", 1).status().code(), StatusCode::kConflict);
  EXPECT_EQ(store_->get(acme_, "k").status().code(), StatusCode::kNotFound);
}

TEST_F(KvStoreTest, RemoveHonoursVersionsAndReportsMissingKeys) {
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

TEST_F(KvStoreTest, RecreatedKeyStartsAgainAtVersionOne) {
  ASSERT_TRUE(store_->put(acme_, "k", "a", kAnyVersion));
  ASSERT_TRUE(store_->put(acme_, "k", "b", kAnyVersion));
  ASSERT_TRUE(store_->remove(acme_, "k", kAnyVersion));
  EXPECT_EQ(*store_->put(acme_, "k", "c", kAbsent), 1u);
}

TEST_F(KvStoreTest, KeyAndValueSizeLimits) {
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

TEST_F(KvStoreTest, BinaryKeysAndValuesRoundTripExactly) {
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

TEST_F(KvStoreTest, ListUsesByteOrderAndPrefix) {
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

TEST_F(KvStoreTest, ListPrefixOfHighBytesHasNoUpperBoundProblem) {
  const std::string ff("\xff\xff", 2);
  ASSERT_TRUE(store_->put(acme_, ff, "1", kAnyVersion));
  ASSERT_TRUE(store_->put(acme_, ff + "x", "2", kAnyVersion));
  ASSERT_TRUE(store_->put(acme_, "\xfe", "3", kAnyVersion));
  EXPECT_EQ(keys(acme_, ff), (std::vector<std::string>{ff, ff + "x"}));
  EXPECT_EQ(keys(acme_, "\xff"), (std::vector<std::string>{ff, ff + "x"}));
}

TEST_F(KvStoreTest, ListTreatsPercentAndUnderscoreLiterally) {
  for (const char* k : {"a%b", "a%c", "axb", "a_1", "ab1", "a\\x"}) {
    ASSERT_TRUE(store_->put(acme_, k, "v", kAnyVersion));
  }
  EXPECT_EQ(keys(acme_, "a%"), (std::vector<std::string>{"a%b", "a%c"}));
  EXPECT_EQ(keys(acme_, "a_"), (std::vector<std::string>{"a_1"}));
  EXPECT_EQ(keys(acme_, "a\\"), (std::vector<std::string>{"a\\x"}));
  EXPECT_TRUE(keys(acme_, "%").empty());
  EXPECT_TRUE(keys(acme_, "_").empty());
}

TEST_F(KvStoreTest, ListPaginatesWithStartAfterAndLimit) {
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

TEST_F(KvStoreTest, ListLimitZeroAndOversizedMeanTheMaximum) {
  for (uint32_t i = 0; i < kMaxListLimit + 5; ++i) {
    ASSERT_TRUE(store_->put(acme_, "k" + std::to_string(100000 + i), "", kAnyVersion));
  }
  EXPECT_EQ(keys(acme_, "k", "", 0).size(), kMaxListLimit);
  EXPECT_EQ(keys(acme_, "k", "", kMaxListLimit + 100).size(), kMaxListLimit);
  EXPECT_EQ(keys(acme_, "k", "", 7).size(), 7u);
}

TEST_F(KvStoreTest, ListRefusesOversizedPrefix) {
  std::string p(kMaxKeyBytes + 1, 'p');
  EXPECT_EQ(store_->list(acme_, p, "", 0).status().code(), StatusCode::kInvalid);
}

TEST_F(KvStoreTest, TenantsAreIsolatedForTheSamePlugin) {
  const Scope globex{"globex", acme_.plugin};
  ASSERT_TRUE(store_->put(acme_, "secret", "acme-data", kAnyVersion));
  EXPECT_EQ(store_->get(globex, "secret").status().code(), StatusCode::kNotFound);
  EXPECT_TRUE(keys(globex, "").empty());
  EXPECT_EQ(store_->remove(globex, "secret", kAnyVersion).code(), StatusCode::kNotFound);
  EXPECT_EQ(store_->put(globex, "secret", "x", 1).status().code(), StatusCode::kConflict);
  EXPECT_EQ(*store_->put(globex, "secret", "globex-data", kAbsent), 1u);
  EXPECT_EQ(store_->get(acme_, "secret")->value, "acme-data");
  EXPECT_EQ(store_->get(globex, "secret")->value, "globex-data");
  EXPECT_TRUE(std::filesystem::exists(dir_.path() / "data" / "acme.db"));
  EXPECT_TRUE(std::filesystem::exists(dir_.path() / "data" / "globex.db"));
}

TEST_F(KvStoreTest, TenantFilesAreOwnerOnly) {
  ASSERT_TRUE(store_->put(acme_, "k", "v", kAnyVersion));
  using std::filesystem::perms;
  auto mode = [](const std::filesystem::path& p) {
    return std::filesystem::status(p).permissions() & perms::all;
  };
  EXPECT_EQ(mode(dir_.path() / "data"), perms::owner_all);
  EXPECT_EQ(mode(dir_.path() / "data" / "acme.db"), perms::owner_read | perms::owner_write);
  EXPECT_EQ(mode(dir_.path() / "data" / "acme.db-wal"), perms::owner_read | perms::owner_write);
}

TEST_F(KvStoreTest, PluginsAreIsolatedWithinATenant) {
  const Scope other{"acme", "trellis/other"};
  ASSERT_TRUE(store_->put(acme_, "k", "hello", kAnyVersion));
  EXPECT_EQ(store_->get(other, "k").status().code(), StatusCode::kNotFound);
  EXPECT_TRUE(keys(other, "").empty());
  EXPECT_EQ(store_->remove(other, "k", kAnyVersion).code(), StatusCode::kNotFound);
  EXPECT_TRUE(store_->get(acme_, "k"));
}

TEST_F(KvStoreTest, DataSurvivesReopening) {
  ASSERT_TRUE(store_->put(acme_, "k", "v1", kAnyVersion));
  ASSERT_TRUE(store_->put(acme_, "k", "v2", kAnyVersion));
  store_.reset();
  auto reopened = openSqliteKvStore(dir_.path() / "data");
  ASSERT_TRUE(reopened);
  auto e = (*reopened)->get(acme_, "k");
  ASSERT_TRUE(e) << e.status().toString();
  EXPECT_EQ(e->value, "v2");
  EXPECT_EQ(e->version, 2u);
}

TEST_F(KvStoreTest, ConcurrentCompareAndSetIncrementsLoseNothing) {
  constexpr int kThreads = 8;
  constexpr int kPerThread = 25;
  std::atomic<int> conflicts{0};
  std::atomic<int> errors{0};
  std::vector<std::thread> threads;
  for (int t = 0; t < kThreads; ++t) {
    threads.emplace_back([&] {
      for (int done = 0; done < kPerThread;) {
        auto cur = store_->get(acme_, "counter");
        uint64_t expected = kAbsent;
        int value = 0;
        if (cur) {
          expected = cur->version;
          value = std::stoi(cur->value);
        } else if (cur.status().code() != StatusCode::kNotFound) {
          ++errors;
          return;
        }
        auto put = store_->put(acme_, "counter", std::to_string(value + 1), expected);
        if (put) {
          ++done;
        } else if (put.status().code() == StatusCode::kConflict) {
          ++conflicts;
        } else {
          ++errors;
          return;
        }
      }
    });
  }
  for (auto& t : threads) t.join();
  EXPECT_EQ(errors.load(), 0);
  auto e = store_->get(acme_, "counter");
  ASSERT_TRUE(e);
  EXPECT_EQ(e->value, std::to_string(kThreads * kPerThread));
  EXPECT_EQ(e->version, static_cast<uint64_t>(kThreads * kPerThread));
}

TEST_F(KvStoreTest, BadTenantIdsAreRefusedAndCreateNoFiles) {
  for (const std::string& bad : std::vector<std::string>{
           "../x", "", "A", "-a", "a/b", "a.db", std::string(64, 'a'), std::string("a\0b", 3)}) {
    const Scope s{bad, "trellis/hello"};
    EXPECT_EQ(store_->put(s, "k", "v", kAnyVersion).status().code(), StatusCode::kInvalid) << bad;
    EXPECT_EQ(store_->get(s, "k").status().code(), StatusCode::kInvalid) << bad;
    EXPECT_EQ(store_->remove(s, "k", kAnyVersion).code(), StatusCode::kInvalid) << bad;
    EXPECT_EQ(store_->list(s, "", "", 0).status().code(), StatusCode::kInvalid) << bad;
  }
  EXPECT_TRUE(store_->put({std::string(63, 'a'), "trellis/hello"}, "k", "v", kAnyVersion));
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

TEST_F(KvStoreTest, RemoveTenantDeletesOnlyThatTenantsDataAndFiles) {
  const Scope globex{"globex", "trellis/hello"};
  ASSERT_TRUE(store_->put(acme_, "k", "a", kAnyVersion));
  ASSERT_TRUE(store_->put(globex, "k", "g", kAnyVersion));
  const auto acme_file = dir_.path() / "data" / "acme.db";
  ASSERT_TRUE(std::filesystem::exists(acme_file));

  EXPECT_TRUE(store_->removeTenant("acme"));
  EXPECT_FALSE(std::filesystem::exists(acme_file));
  EXPECT_FALSE(std::filesystem::exists(dir_.path() / "data" / "acme.db-wal"));
  EXPECT_EQ(store_->get(acme_, "k").status().code(), StatusCode::kNotFound);
  EXPECT_EQ(store_->get(globex, "k")->value, "g");
  EXPECT_TRUE(store_->removeTenant("never-had-data"));
  EXPECT_EQ(store_->removeTenant("../etc").code(), StatusCode::kInvalid);
}

}  // namespace
}  // namespace trellis::kernel::storage
