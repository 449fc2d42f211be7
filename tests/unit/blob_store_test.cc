// The BlobStore contract, run against both backends (files under a data dir, PostgreSQL
// under row-level security), plus crash recovery (files) and the RLS policy (PostgreSQL).
#include "trellis/kernel/services/blob_store.h"

#include <gtest/gtest.h>
#include <signal.h>
#include <sys/wait.h>
#include <unistd.h>

#include <filesystem>
#include <fstream>
#include <random>

#include "support/shared_postgres.h"
#include "support/test_support.h"
#include "trellis/tenants/identity.h"
#include "trellis/tenants/postgres.h"

namespace trellis::kernel::services::blobs {
namespace {

namespace fs = std::filesystem;
using test::SharedPostgres;
using test::TempDir;

enum class Backend { kFiles, kPostgres };

std::string randomBytes(size_t n, unsigned seed) {
  std::mt19937 gen(seed);
  std::string s(n, '\0');
  for (auto& c : s) c = static_cast<char>(gen());
  return s;
}

class BlobStoreTest : public ::testing::TestWithParam<Backend> {
 protected:
  void SetUp() override { open(); }

  void open() {
    store_.reset();
    if (GetParam() == Backend::kPostgres) {
      if (db_.name.empty()) {
        db_ = SharedPostgres::freshDatabase();
        ASSERT_TRUE(db_) << db_.error;
      }
      auto pool = tenants::PostgresPool::open(db_.app, {.size = 4});
      ASSERT_TRUE(pool) << pool.status().toString();
      auto opened = openPostgresBlobStore(*pool);
      ASSERT_TRUE(opened) << opened.status().toString();
      store_ = std::move(*opened);
      return;
    }
    auto opened = openFileBlobStore(dir_.path() / "blobs");
    ASSERT_TRUE(opened) << opened.status().toString();
    store_ = std::move(*opened);
  }

  Result<BlobInfo> put(const Scope& scope, std::string_view key, std::string_view content,
                       size_t chunk = 64 * 1024, WriteOptions options = {}) {
    auto w = store_->openWrite(scope, key, options);
    if (!w) return w.status();
    for (size_t at = 0; at < content.size(); at += chunk) {
      if (Status s = (*w)->write(content.substr(at, chunk)); !s) return s;
    }
    return (*w)->commit();
  }

  std::string get(const Scope& scope, std::string_view key, Range range = {},
                  size_t buf_size = 100000) {
    auto r = store_->openRead(scope, key, range);
    EXPECT_TRUE(r) << r.status().toString();
    if (!r) return "<error>";
    std::string out, buf(buf_size, '\0');
    for (;;) {
      auto n = (*r)->read(buf.data(), buf.size());
      EXPECT_TRUE(n) << n.status().toString();
      if (!n || *n == 0) break;
      out.append(buf.data(), *n);
    }
    return out;
  }

  std::vector<std::string> keys(const Scope& scope, std::string_view prefix,
                                std::string_view after = "", uint32_t limit = 0,
                                std::string* next = nullptr) {
    auto page = store_->list(scope, prefix, after, limit);
    EXPECT_TRUE(page) << page.status().toString();
    std::vector<std::string> out;
    if (!page) return out;
    for (const auto& b : page->blobs) out.push_back(b.key);
    if (next) *next = page->next_start_after;
    return out;
  }

  uint64_t usage(const std::string& tenant) {
    auto r = store_->storageBytes(tenant);
    EXPECT_TRUE(r) << r.status().toString();
    return r ? *r : UINT64_MAX;
  }

  // Content rows / files left anywhere for the tenant, counted behind the store's back.
  uint64_t storedPieces(const std::string& tenant) {
    if (GetParam() == Backend::kFiles) {
      uint64_t n = 0;
      for (const char* sub : {"objects", "tmp"}) {
        std::error_code ec;
        for (auto it = fs::directory_iterator(dir_.path() / "blobs" / tenant / sub, ec);
             !ec && it != fs::directory_iterator(); ++it) {
          ++n;
        }
      }
      return n;
    }
    auto r = SharedPostgres::server().execSql(
        "SELECT (SELECT count(*) FROM trellis.blob_chunks WHERE tenant_id = '" + tenant +
            "') + (SELECT count(*) FROM trellis.blob_uploads WHERE tenant_id = '" + tenant + "')",
        db_.name);
    EXPECT_TRUE(r) << r.error;
    return r ? std::stoull(r.rows.at(0).at(0)) : UINT64_MAX;
  }

  static Scope withQuota(Scope s, uint64_t max) {
    s.max_storage_bytes = max;
    return s;
  }

  TempDir dir_;
  test::TestDatabase db_;
  std::unique_ptr<BlobStore> store_;
  const Scope acme_{"acme", "trellis/backup"};
};

INSTANTIATE_TEST_SUITE_P(Backends, BlobStoreTest,
                         ::testing::Values(Backend::kFiles, Backend::kPostgres),
                         [](const ::testing::TestParamInfo<Backend>& info) {
                           return info.param == Backend::kFiles ? "Files" : "Postgres";
                         });

TEST_P(BlobStoreTest, StreamedObjectRoundTripsWithItsHead) {
  // 2.5 MiB in odd-sized chunks: crosses the PostgreSQL backend's 1 MiB rows.
  const std::string content = randomBytes(2 * 1024 * 1024 + 512 * 1024 + 7, 1);
  const int64_t before = std::chrono::duration_cast<std::chrono::milliseconds>(
                             std::chrono::system_clock::now().time_since_epoch())
                             .count();
  auto info = put(
      acme_, "backups/one.tar", content, 300001,
      {.content_type = "application/x-tar", .metadata = {{"origin", "db-1"}, {"tier", "cold"}}});
  ASSERT_TRUE(info) << info.status().toString();
  EXPECT_EQ(info->size, content.size());
  EXPECT_EQ(info->sha256, tenants::sha256Hex(content));

  auto head = store_->head(acme_, "backups/one.tar");
  ASSERT_TRUE(head) << head.status().toString();
  EXPECT_EQ(head->key, "backups/one.tar");
  EXPECT_EQ(head->size, content.size());
  EXPECT_EQ(head->sha256, tenants::sha256Hex(content));
  EXPECT_EQ(head->content_type, "application/x-tar");
  EXPECT_EQ(head->metadata, (Metadata{{"origin", "db-1"}, {"tier", "cold"}}));
  EXPECT_GE(head->created_ms, before);
  EXPECT_EQ(get(acme_, "backups/one.tar"), content);
  EXPECT_EQ(usage("acme"), content.size());
}

TEST_P(BlobStoreTest, RangesReadExactlyTheirBytes) {
  const std::string content = randomBytes(3 * 1024 * 1024, 2);
  ASSERT_TRUE(put(acme_, "r", content));
  const uint64_t mib = 1024 * 1024;
  EXPECT_EQ(get(acme_, "r", {.offset = mib - 10, .length = 20}), content.substr(mib - 10, 20));
  EXPECT_EQ(get(acme_, "r", {.offset = 5, .length = 1}, 1), content.substr(5, 1));
  EXPECT_EQ(get(acme_, "r", {.offset = 2 * mib + 3}), content.substr(2 * mib + 3));
  EXPECT_EQ(get(acme_, "r", {.offset = content.size() - 4, .length = 100}),
            content.substr(content.size() - 4));
  EXPECT_EQ(get(acme_, "r", {.offset = content.size()}), "");
  auto past = store_->openRead(acme_, "r", {.offset = content.size() + 1});
  ASSERT_FALSE(past);
  EXPECT_EQ(past.status().code(), StatusCode::kInvalid);
  EXPECT_NE(past.status().message().find("range"), std::string::npos);
}

TEST_P(BlobStoreTest, EmptyObjectIsAnObject) {
  auto info = put(acme_, "empty", "");
  ASSERT_TRUE(info) << info.status().toString();
  EXPECT_EQ(info->sha256, tenants::sha256Hex(""));
  EXPECT_EQ(get(acme_, "empty"), "");
  EXPECT_EQ(keys(acme_, ""), std::vector<std::string>{"empty"});
}

TEST_P(BlobStoreTest, NothingIsVisibleBeforeCommitAndAbortLeavesNothing) {
  auto w = store_->openWrite(acme_, "pending", {});
  ASSERT_TRUE(w);
  ASSERT_TRUE((*w)->write(randomBytes(1536 * 1024, 3)));
  EXPECT_EQ(store_->head(acme_, "pending").status().code(), StatusCode::kNotFound);
  EXPECT_TRUE(keys(acme_, "").empty());
  (*w)->abort();
  EXPECT_EQ((*w)->write("more").code(), StatusCode::kInvalid);
  EXPECT_EQ(storedPieces("acme"), 0u);
  {
    auto dropped = store_->openWrite(acme_, "dropped", {});
    ASSERT_TRUE(dropped);
    ASSERT_TRUE((*dropped)->write(randomBytes(1536 * 1024, 4)));
  }  // a writer dropped without commit aborts
  EXPECT_EQ(storedPieces("acme"), 0u);
  EXPECT_EQ(store_->head(acme_, "dropped").status().code(), StatusCode::kNotFound);
  EXPECT_EQ(usage("acme"), 0u);
}

TEST_P(BlobStoreTest, ReplacingChargesTheDifferenceAndReadersSeeOneVersion) {
  ASSERT_TRUE(put(acme_, "k", std::string(1000, 'a')));
  auto reader = store_->openRead(acme_, "k", {});
  ASSERT_TRUE(reader);
  ASSERT_TRUE(put(acme_, "k", std::string(300, 'b')));
  EXPECT_EQ(usage("acme"), 300u);
  EXPECT_EQ(get(acme_, "k"), std::string(300, 'b'));
  // The old reader: the file backend keeps the version it opened; PostgreSQL says CONFLICT.
  char buf[2000];
  auto n = (*reader)->read(buf, sizeof buf);
  if (GetParam() == Backend::kFiles) {
    ASSERT_TRUE(n);
    EXPECT_EQ(std::string(buf, *n), std::string(1000, 'a'));
  } else {
    ASSERT_FALSE(n);
    EXPECT_EQ(n.status().code(), StatusCode::kConflict);
  }
  EXPECT_EQ(storedPieces("acme"), 1u);  // the old content is gone
}

TEST_P(BlobStoreTest, QuotaIsChargedExactlyAtCommit) {
  const Scope small = withQuota(acme_, 1000);
  ASSERT_TRUE(put(small, "a", std::string(600, 'a')));
  // 400 more fit exactly; one byte more does not, and the refusal keeps nothing.
  auto over = put(small, "b", std::string(401, 'b'));
  ASSERT_FALSE(over);
  EXPECT_EQ(over.status().code(), StatusCode::kQuotaExceeded);
  EXPECT_NE(over.status().message().find("storage quota of 1000 bytes"), std::string::npos);
  EXPECT_EQ(store_->head(small, "b").status().code(), StatusCode::kNotFound);
  EXPECT_EQ(storedPieces("acme"), 1u);
  ASSERT_TRUE(put(small, "b", std::string(400, 'b')));
  EXPECT_EQ(usage("acme"), 1000u);
  // Replacing with something smaller always works; a failed replacement keeps the old one.
  ASSERT_TRUE(put(small, "a", std::string(100, 'c')));
  EXPECT_FALSE(put(small, "a", std::string(700, 'd')));
  EXPECT_EQ(get(small, "a"), std::string(100, 'c'));
  // An upload alone larger than the quota is refused while it streams.
  auto w = store_->openWrite(small, "huge", {});
  ASSERT_TRUE(w);
  EXPECT_EQ((*w)->write(std::string(1001, 'x')).code(), StatusCode::kQuotaExceeded);
  ASSERT_TRUE(store_->remove(small, "b"));
  EXPECT_EQ(usage("acme"), 100u);
}

TEST_P(BlobStoreTest, ListsByPrefixInPages) {
  for (const char* k : {"logs/2026/01", "logs/2026/02", "logs/2026/03", "logs/2027/01", "other",
                        "logs%", "logs/2026/02/x"}) {
    ASSERT_TRUE(put(acme_, k, k));
  }
  std::string next;
  EXPECT_EQ(keys(acme_, "logs/2026/", "", 2, &next),
            (std::vector<std::string>{"logs/2026/01", "logs/2026/02"}));
  EXPECT_EQ(next, "logs/2026/02");
  EXPECT_EQ(keys(acme_, "logs/2026/", next, 2, &next),
            (std::vector<std::string>{"logs/2026/02/x", "logs/2026/03"}));
  EXPECT_EQ(next, "");
  EXPECT_EQ(keys(acme_, "logs%"), std::vector<std::string>{"logs%"});
  auto page = store_->list(acme_, "logs/2027/", "", 0);
  ASSERT_TRUE(page);
  ASSERT_EQ(page->blobs.size(), 1u);
  EXPECT_EQ(page->blobs[0].size, 12u);
  EXPECT_EQ(page->blobs[0].sha256, tenants::sha256Hex("logs/2027/01"));
}

TEST_P(BlobStoreTest, TenantsAndPluginsSeeOnlyTheirOwnObjects) {
  ASSERT_TRUE(put(acme_, "shared-name", "acme's"));
  const Scope globex{"globex", "trellis/backup"}, other_plugin{"acme", "trellis/other"};
  EXPECT_EQ(store_->head(globex, "shared-name").status().code(), StatusCode::kNotFound);
  EXPECT_EQ(store_->head(other_plugin, "shared-name").status().code(), StatusCode::kNotFound);
  EXPECT_EQ(store_->remove(globex, "shared-name").code(), StatusCode::kNotFound);
  EXPECT_TRUE(keys(globex, "").empty());
  EXPECT_TRUE(keys(other_plugin, "").empty());
  ASSERT_TRUE(put(globex, "shared-name", "globex's"));
  EXPECT_EQ(get(acme_, "shared-name"), "acme's");
  EXPECT_EQ(get(globex, "shared-name"), "globex's");
  EXPECT_EQ(usage("globex"), 8u);
  ASSERT_TRUE(store_->removeTenant("globex"));
  EXPECT_EQ(usage("globex"), 0u);
  EXPECT_EQ(get(acme_, "shared-name"), "acme's");
}

TEST_P(BlobStoreTest, BadKeysAndOptionsAreRefusedNamingTheField) {
  const std::string nul("a\0b", 3);
  for (const std::string& key : {std::string(""), std::string(".."), std::string("a/../b"),
                                 std::string("./a"), nul, std::string(1025, 'k')}) {
    auto w = store_->openWrite(acme_, key, {});
    ASSERT_FALSE(w) << key;
    EXPECT_EQ(w.status().code(), StatusCode::kInvalid);
    EXPECT_EQ(w.status().message().rfind("key: ", 0), 0u) << w.status().message();
    EXPECT_EQ(store_->head(acme_, key).status().code(), StatusCode::kInvalid);
  }
  EXPECT_TRUE(put(acme_, std::string(1024, 'k'), "max-length key"));
  EXPECT_TRUE(put(acme_, "a..b/...", "dots inside a segment are fine"));
  auto ct = store_->openWrite(acme_, "x", {.content_type = "text/plain\r\nX-Evil: 1"});
  ASSERT_FALSE(ct);
  EXPECT_EQ(ct.status().message().rfind("content_type: ", 0), 0u);
  auto md = store_->openWrite(acme_, "x", {.metadata = {{"Bad Key", "v"}}});
  ASSERT_FALSE(md);
  EXPECT_EQ(md.status().message().rfind("metadata: ", 0), 0u);
  auto mv = store_->openWrite(acme_, "x", {.metadata = {{"k", "line\nbreak"}}});
  ASSERT_FALSE(mv);
  EXPECT_EQ(mv.status().message().rfind("metadata: ", 0), 0u);
  EXPECT_EQ(storedPieces("acme"), 2u);
}

TEST_P(BlobStoreTest, SurvivesReopening) {
  const std::string content = randomBytes(1234567, 5);
  ASSERT_TRUE(put(acme_, "durable", content));
  open();
  EXPECT_EQ(get(acme_, "durable"), content);
  EXPECT_EQ(usage("acme"), content.size());
}

// A process killed mid-upload (and one killed between publishing the file and entering it in
// the index) leaves no visible object, and the next start removes its files.
TEST(FileBlobStoreTest, CrashMidWriteLeavesNoObjectAndNextStartCleansUp) {
  TempDir dir;
  const Scope scope{"acme", "trellis/backup"};
  {
    auto store = openFileBlobStore(dir / "blobs");
    ASSERT_TRUE(store);
    ASSERT_TRUE(((*store)->head(scope, "seed")).status().code() == StatusCode::kNotFound);
  }
  pid_t child = fork();
  ASSERT_GE(child, 0);
  if (child == 0) {
    auto store = openFileBlobStore(dir / "blobs");
    if (!store) _exit(2);
    auto w = (*store)->openWrite(scope, "half", {});
    if (!w || !(*w)->write(std::string(100000, 'h'))) _exit(3);
    raise(SIGKILL);
  }
  int status = 0;
  ASSERT_EQ(waitpid(child, &status, 0), child);
  ASSERT_TRUE(WIFSIGNALED(status)) << "child exited with " << WEXITSTATUS(status);
  const fs::path tmp = dir / "blobs/acme/tmp", objects = dir / "blobs/acme/objects";
  ASSERT_EQ(std::distance(fs::directory_iterator(tmp), fs::directory_iterator()), 1);
  test::writeFile(objects / "0123456789abcdef0123456789abcdef", "published, never indexed");

  auto store = openFileBlobStore(dir / "blobs");
  ASSERT_TRUE(store) << store.status().toString();
  EXPECT_EQ((*store)->head(scope, "half").status().code(), StatusCode::kNotFound);
  EXPECT_TRUE(fs::is_empty(tmp));
  EXPECT_TRUE(fs::is_empty(objects));
  EXPECT_EQ(*(*store)->storageBytes("acme"), 0u);
}

long rssKiB() {
  std::ifstream status("/proc/self/status");
  std::string line;
  while (std::getline(status, line)) {
    if (line.rfind("VmRSS:", 0) == 0) return std::stol(line.substr(6));
  }
  return -1;
}

// Objects stream: 512 MiB in and out through 1 MiB buffers moves the RSS by far less.
TEST(FileBlobStoreTest, LargeObjectStreamsWithoutBeingHeldInMemory) {
  TempDir dir;
  const Scope scope{"acme", "trellis/backup"};
  auto store = openFileBlobStore(dir / "blobs");
  ASSERT_TRUE(store);
  const uint64_t total = 512ull * 1024 * 1024;
  std::string chunk = randomBytes(1024 * 1024, 6);
  const long before = rssKiB();
  auto w = (*store)->openWrite(scope, "big", {});
  ASSERT_TRUE(w);
  for (uint64_t at = 0; at < total; at += chunk.size()) ASSERT_TRUE((*w)->write(chunk));
  auto info = (*w)->commit();
  ASSERT_TRUE(info) << info.status().toString();
  EXPECT_EQ(info->size, total);
  auto r = (*store)->openRead(scope, "big", {});
  ASSERT_TRUE(r);
  uint64_t read = 0;
  std::string buf(1024 * 1024, '\0');
  for (;;) {
    auto n = (*r)->read(buf.data(), buf.size());
    ASSERT_TRUE(n);
    if (*n == 0) break;
    read += *n;
  }
  EXPECT_EQ(read, total);
  EXPECT_LT(rssKiB() - before, 64 * 1024) << "RSS grew from " << before << " KiB";
}

// The PostgreSQL backend's isolation does not rest on its queries: a session that has not
// set the tenant sees no blob rows at all.
TEST(PostgresBlobStoreTest, RowLevelSecurityHidesRowsWithoutATenant) {
  auto db = SharedPostgres::freshDatabase();
  ASSERT_TRUE(db) << db.error;
  auto pool = tenants::PostgresPool::open(db.app, {.size = 2});
  ASSERT_TRUE(pool);
  auto store = openPostgresBlobStore(*pool);
  ASSERT_TRUE(store);
  auto w = (*store)->openWrite({"acme", "p"}, "k", {});
  ASSERT_TRUE(w);
  ASSERT_TRUE((*w)->write("secret"));
  ASSERT_TRUE((*w)->commit());
  auto lease = (*pool)->acquire();
  ASSERT_TRUE(lease);
  long long n = -1;
  tenants::sql::Query(lease->session(),
                      "SELECT (SELECT count(*) FROM blob_objects) + (SELECT count(*) FROM "
                      "blob_chunks) + (SELECT count(*) FROM blob_usage)")
      .into(n)
      .run();
  EXPECT_EQ(n, 0);
  auto all = SharedPostgres::server().execSql("SELECT count(*) FROM trellis.blob_chunks", db.name);
  ASSERT_TRUE(all) << all.error;
  EXPECT_EQ(all.rows.at(0).at(0), "1");
}

}  // namespace
}  // namespace trellis::kernel::services::blobs
