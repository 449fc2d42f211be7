// Group commit: the leader/follower queue on its own, then through the KV store on both
// backends (SQLite files, a real PostgreSQL) — batches really share one transaction, CAS is
// decided in submission order, a failing write fails alone, reads never wait, and on
// SQLite a full disk (a real tmpfs) fails the whole batch while losing nothing
// acknowledged.
#include "trellis/kernel/storage/group_commit.h"

#include <fcntl.h>
#include <gtest/gtest.h>
#include <soci/soci.h>
#include <soci/sqlite3/soci-sqlite3.h>
#include <sys/mount.h>
#include <unistd.h>

#include <atomic>
#include <cerrno>
#include <chrono>
#include <condition_variable>
#include <cstring>
#include <filesystem>
#include <functional>
#include <future>
#include <mutex>
#include <thread>
#include <vector>

#include "support/shared_postgres.h"
#include "support/test_support.h"
#include "trellis/kernel/storage/kv_store.h"
#include "trellis/kernel/storage/sqlite_database.h"
#include "trellis/tenants/postgres.h"
#include "trellis/tenants/sql_statement.h"

namespace trellis::kernel::storage {
namespace {

using namespace std::chrono_literals;
using tenants::sql::exec;
using tenants::sql::Query;
using test::SharedPostgres;
using test::TempDir;

// Polls `done` for up to 10 s.
bool eventually(const std::function<bool()>& done) {
  const auto deadline = std::chrono::steady_clock::now() + 10s;
  while (!done()) {
    if (std::chrono::steady_clock::now() > deadline) return false;
    std::this_thread::sleep_for(1ms);
  }
  return true;
}

// A gate the runner waits at: the first batch stays "committing" until open() is called.
class Gate {
 public:
  void wait() {
    std::unique_lock lock(mu_);
    cv_.wait(lock, [&] { return open_; });
  }
  void open() {
    std::lock_guard lock(mu_);
    open_ = true;
    cv_.notify_all();
  }

 private:
  std::mutex mu_;
  std::condition_variable cv_;
  bool open_ = false;
};

// A runner like a database's, minus the database: runs each write, records batch sizes,
// and holds its first batch at `gate`.
struct RecordingRunner {
  Gate gate;
  std::mutex mu;
  std::vector<size_t> sizes;
  soci::session unused;  // the works below never touch it

  GroupCommit::RunBatch runner() {
    return [this](std::span<GroupCommit::Write* const> batch) {
      bool first = false;
      {
        std::lock_guard lock(mu);
        first = sizes.empty();
        sizes.push_back(batch.size());
      }
      if (first) gate.wait();
      for (GroupCommit::Write* w : batch) w->status = (*w->work)(unused);
    };
  }
};

GroupCommit::Work returning(Status s) {
  return [s](soci::session&) { return s; };
}

TEST(GroupCommitTest, AnIdleWriterCommitsAloneWithoutWaiting) {
  RecordingRunner r;
  r.gate.open();
  GroupCommit gc(r.runner(), {});
  EXPECT_TRUE(gc.submit(returning(Status::ok())));
  EXPECT_EQ(gc.submit(returning(Status::conflict("x"))).code(), StatusCode::kConflict);
  EXPECT_EQ(r.sizes, (std::vector<size_t>{1, 1}));
  EXPECT_EQ(gc.stats().batches, 2u);
  EXPECT_EQ(gc.stats().pending, 0u);
}

TEST(GroupCommitTest, WritersArrivingDuringACommitShareTheNextBatchAndGetTheirOwnStatus) {
  RecordingRunner r;
  GroupCommit gc(r.runner(), {});
  auto first = std::async(std::launch::async, [&] { return gc.submit(returning(Status::ok())); });
  ASSERT_TRUE(eventually([&] { return gc.stats().pending == 1; }));
  std::vector<std::future<Status>> rest;
  for (int i = 0; i < 5; ++i) {
    Status s = i == 2 ? Status::quotaExceeded("full") : Status::ok();
    rest.push_back(std::async(std::launch::async, [&gc, s] { return gc.submit(returning(s)); }));
  }
  ASSERT_TRUE(eventually([&] { return gc.stats().pending == 6; }));
  // Nobody is answered while the batch before theirs is still committing.
  EXPECT_EQ(rest[0].wait_for(50ms), std::future_status::timeout);
  r.gate.open();
  EXPECT_TRUE(first.get());
  for (int i = 0; i < 5; ++i) {
    EXPECT_EQ(rest[i].get().code(), i == 2 ? StatusCode::kQuotaExceeded : StatusCode::kOk) << i;
  }
  EXPECT_EQ(r.sizes, (std::vector<size_t>{1, 5}));
  EXPECT_EQ(gc.stats().max_batch, 5u);
  EXPECT_EQ(gc.stats().writes, 6u);
}

TEST(GroupCommitTest, BatchesAreCappedAtMaxBatch) {
  RecordingRunner r;
  GroupCommit gc(r.runner(), {.max_batch = 2});
  auto first = std::async(std::launch::async, [&] { return gc.submit(returning(Status::ok())); });
  ASSERT_TRUE(eventually([&] { return gc.stats().pending == 1; }));
  std::vector<std::future<Status>> rest;
  for (int i = 0; i < 5; ++i) {
    rest.push_back(
        std::async(std::launch::async, [&gc] { return gc.submit(returning(Status::ok())); }));
  }
  ASSERT_TRUE(eventually([&] { return gc.stats().pending == 6; }));
  r.gate.open();
  for (auto& f : rest) EXPECT_TRUE(f.get());
  EXPECT_TRUE(first.get());
  EXPECT_EQ(r.sizes, (std::vector<size_t>{1, 2, 2, 1}));
}

TEST(GroupCommitTest, SeveralLeadersRunBatchesAtTheSameTime) {
  std::mutex mu;
  std::condition_variable cv;
  int inside = 0, most = 0;
  soci::session unused;
  GroupCommit gc(
      [&](std::span<GroupCommit::Write* const> batch) {
        std::unique_lock lock(mu);
        most = std::max(most, ++inside);
        cv.notify_all();
        // Wait (bounded) until a second batch runs beside this one.
        cv.wait_for(lock, 5s, [&] { return most >= 2; });
        --inside;
        for (GroupCommit::Write* w : batch) w->status = (*w->work)(unused);
      },
      {.max_leaders = 2});
  std::vector<std::future<Status>> all;
  for (int i = 0; i < 8; ++i) {
    all.push_back(
        std::async(std::launch::async, [&gc] { return gc.submit(returning(Status::ok())); }));
  }
  for (auto& f : all) EXPECT_TRUE(f.get());
  EXPECT_EQ(most, 2);
  EXPECT_EQ(gc.stats().writes, 8u);
  EXPECT_EQ(gc.stats().pending, 0u);
}

// An asynchronous submitter's answer, kept for the test to wait on.
struct AsyncAnswer {
  std::promise<Status> status;
  std::atomic<int> calls{0};
  std::thread::id thread;
  GroupCommit::Done done() {
    return [this](Status s) {
      thread = std::this_thread::get_id();
      if (++calls == 1) status.set_value(std::move(s));
    };
  }
};

TEST(GroupCommitTest, AsyncWritersShareTheQueuedBatchAndAreAnsweredOnceAfterItsCommit) {
  RecordingRunner r;
  GroupCommit gc(r.runner(), {});
  auto first = std::async(std::launch::async, [&] { return gc.submit(returning(Status::ok())); });
  ASSERT_TRUE(eventually([&] { return gc.stats().pending == 1; }));
  std::vector<std::unique_ptr<AsyncAnswer>> answers;
  for (int i = 0; i < 4; ++i) {
    answers.push_back(std::make_unique<AsyncAnswer>());
    gc.submitAsync(returning(i == 1 ? Status::conflict("stale") : Status::ok()),
                   answers.back()->done(), nullptr);
  }
  auto blocked = std::async(std::launch::async, [&] { return gc.submit(returning(Status::ok())); });
  ASSERT_TRUE(eventually([&] { return gc.stats().pending == 6; }));
  auto second = answers[0]->status.get_future();
  EXPECT_EQ(second.wait_for(50ms), std::future_status::timeout);  // not before its commit
  r.gate.open();
  EXPECT_TRUE(first.get());
  EXPECT_TRUE(blocked.get());
  EXPECT_TRUE(second.get());
  for (int i = 1; i < 4; ++i) {
    EXPECT_EQ(answers[i]->status.get_future().get().code(),
              i == 1 ? StatusCode::kConflict : StatusCode::kOk);
  }
  for (auto& a : answers) EXPECT_EQ(a->calls.load(), 1);
  EXPECT_EQ(r.sizes, (std::vector<size_t>{1, 5}));  // the blocked writer led the async ones
}

TEST(GroupCommitTest, AnAsyncWriterOnAnIdleQueueIsLedByTheCommitPoolNotTheCaller) {
  RecordingRunner r;
  r.gate.open();
  GroupCommit gc(r.runner(), {});
  AsyncAnswer answer;
  auto owner = std::make_shared<int>(42);
  gc.submitAsync(returning(Status::ok()), answer.done(), owner);
  EXPECT_TRUE(answer.status.get_future().get());
  EXPECT_NE(answer.thread, std::this_thread::get_id());
  // The owner is kept only until the write is answered.
  EXPECT_TRUE(eventually([&] { return owner.use_count() == 1; }));
  EXPECT_EQ(gc.stats().pending, 0u);
}

// ------------------------------------------------------------------ through the KV store

// Where the SQLite store's batch leader waits, through SqliteKvOptions::before_log_append,
// while a test holds it: as behind a slow disk, writes arriving meanwhile queue.
class LeaderGate {
 public:
  void close() {
    std::lock_guard lock(mu_);
    open_ = false;
  }
  void open() {
    {
      std::lock_guard lock(mu_);
      open_ = true;
    }
    cv_.notify_all();
  }
  void pass() {
    std::unique_lock lock(mu_);
    cv_.wait(lock, [&] { return open_; });
  }

 private:
  std::mutex mu_;
  std::condition_variable cv_;
  bool open_ = true;
};

// Holds what the store's next batch needs, so that batch waits and writes arriving
// meanwhile queue behind it. A SQLite file: its write lock (BEGIN IMMEDIATE) from another
// connection, as another process would. The SQLite KV store: its leader's gate (its
// writes go to the redo log, which no SQLite lock blocks). PostgreSQL: tenant acme's usage
// row, which a write that grows the tenant's bytes locks to charge the quota.
class WriteBlocker {
 public:
  explicit WriteBlocker(const std::filesystem::path& sqlite_file)
      : sql_(soci::sqlite3, "db=\"" + sqlite_file.string() + "\"") {
    exec(sql_, "BEGIN IMMEDIATE");
  }
  explicit WriteBlocker(LeaderGate& gate) : gate_(&gate) { gate.close(); }
  explicit WriteBlocker(const tenants::PostgresUrl& owner) {
    tenants::connectPostgres(sql_, owner);
    exec(sql_, "BEGIN");
    exec(sql_, "SELECT set_config('trellis.tenant', 'acme', true)");
    long long bytes = -1;
    Query(sql_, "SELECT bytes FROM kv_usage WHERE tenant_id = 'acme' FOR UPDATE").into(bytes).run();
    EXPECT_GE(bytes, 0) << "acme needs a usage row to lock";
  }
  void release() {
    if (!held_) return;
    held_ = false;
    if (gate_) {
      gate_->open();
    } else {
      exec(sql_, "ROLLBACK");
    }
  }
  ~WriteBlocker() { release(); }

 private:
  soci::session sql_;
  LeaderGate* gate_ = nullptr;
  bool held_ = true;
};

uint64_t realBytes(const std::filesystem::path& db) {
  soci::session sql(soci::sqlite3, "db=\"" + db.string() + "\"");
  long long bytes = -1;
  Query(sql, "SELECT COALESCE(SUM(length(key) + length(value)), 0) FROM kv").into(bytes).run();
  return static_cast<uint64_t>(bytes);
}

enum class Backend { kSqlite, kPostgres };

class KvGroupCommitFixture : public ::testing::Test {
 protected:
  void open(const std::filesystem::path& data) {
    store_.reset();
    data_ = data;
    if (backend_ == Backend::kPostgres) {
      if (db_.name.empty()) {
        db_ = SharedPostgres::freshDatabase();
        ASSERT_TRUE(db_) << db_.error;
      }
      // Two sessions: one batch at a time, one session left for reads.
      auto pool = tenants::PostgresPool::open(db_.app, {.size = 2});
      ASSERT_TRUE(pool) << pool.status().toString();
      auto opened = openPostgresKvStore(*pool);
      ASSERT_TRUE(opened) << opened.status().toString();
      store_ = std::move(*opened);
      return;
    }
    auto opened = openSqliteKvStore(
        data_, {.before_log_append = [gate = gate_](const std::string&) { gate->pass(); }});
    ASSERT_TRUE(opened) << opened.status().toString();
    store_ = std::move(*opened);
  }
  std::filesystem::path dbFile() const { return data_ / "acme.db"; }
  std::unique_ptr<WriteBlocker> blockWrites() {
    return backend_ == Backend::kSqlite ? std::make_unique<WriteBlocker>(*gate_)
                                        : std::make_unique<WriteBlocker>(db_.owner);
  }
  // acme's bytes counted from the stored rows, not from the usage the store keeps. On
  // SQLite the store is closed first, which copies its redo log into the file, and then
  // opened again.
  uint64_t realAcmeBytes() {
    if (backend_ == Backend::kSqlite) {
      store_.reset();
      const uint64_t bytes = realBytes(dbFile());
      open(data_);
      return bytes;
    }
    auto r = SharedPostgres::server().execSql(
        "SELECT COALESCE(SUM(length(key) + length(value)), 0) FROM trellis.kv "
        "WHERE tenant_id = 'acme'",
        db_.name);
    EXPECT_TRUE(r) << r.error;
    return r ? std::stoull(r.rows.at(0).at(0)) : UINT64_MAX;
  }

  // Starts `op` on its own thread and returns once it is queued or running in a batch.
  template <typename Op>
  auto startWrite(Op op) {
    const uint64_t before = store_->writeStats().pending;
    auto f = std::async(std::launch::async, std::move(op));
    EXPECT_TRUE(eventually([&] { return store_->writeStats().pending == before + 1; }));
    return f;
  }

  Backend backend_ = Backend::kSqlite;
  TempDir dir_;
  std::filesystem::path data_;
  test::TestDatabase db_;
  std::shared_ptr<LeaderGate> gate_ = std::make_shared<LeaderGate>();
  std::unique_ptr<KvStore> store_;
  const Scope acme_{"acme", "trellis/hello"};
};

class KvGroupCommitTest : public KvGroupCommitFixture,
                          public ::testing::WithParamInterface<Backend> {
 protected:
  void SetUp() override {
    backend_ = GetParam();
    open(dir_.path() / "data");
  }
};

INSTANTIATE_TEST_SUITE_P(Backends, KvGroupCommitTest,
                         ::testing::Values(Backend::kSqlite, Backend::kPostgres),
                         [](const ::testing::TestParamInfo<Backend>& info) {
                           return info.param == Backend::kSqlite ? "Sqlite" : "Postgres";
                         });

class SqliteGroupCommitTest : public KvGroupCommitFixture {
 protected:
  void SetUp() override { open(dir_.path() / "data"); }
};

TEST_P(KvGroupCommitTest, AsyncPutsQueueLikeBlockingOnesAndAreAnsweredAfterTheCommit) {
  const Scope q{"acme", "trellis/hello", 100};
  ASSERT_TRUE(store_->put(acme_, "seed", "x", kAnyVersion));
  auto lock = blockWrites();
  auto a = startWrite([&] { return store_->put(acme_, "a", "1", kAnyVersion); });  // leads
  struct Answer {
    std::promise<Result<uint64_t>> result;
    KvStore::PutDone done() {
      return [this](Result<uint64_t> r) { result.set_value(std::move(r)); };
    }
  };
  Answer b, c, d, e, invalid;
  const uint64_t queued = store_->writeStats().pending;
  store_->putAsync(acme_, "c", "1", kAbsent, b.done());
  store_->putAsync(acme_, "c", "2", 1, c.done());  // sees b's write
  store_->putAsync(acme_, "c", "3", 1, d.done());  // stale: conflict
  store_->putAsync(q, "big", std::string(200, 'v'), kAnyVersion, e.done());
  store_->putAsync(acme_, "", "x", kAnyVersion, invalid.done());  // refused, never queued
  EXPECT_EQ(invalid.result.get_future().get().status().code(), StatusCode::kInvalid);
  ASSERT_TRUE(eventually([&] { return store_->writeStats().pending == queued + 4; }));
  auto first = b.result.get_future();
  EXPECT_EQ(first.wait_for(20ms), std::future_status::timeout);
  lock->release();

  EXPECT_EQ(*a.get(), 1u);
  EXPECT_EQ(*first.get(), 1u);
  EXPECT_EQ(*c.result.get_future().get(), 2u);
  EXPECT_EQ(d.result.get_future().get().status().code(), StatusCode::kConflict);
  EXPECT_EQ(e.result.get_future().get().status().code(), StatusCode::kQuotaExceeded);
  EXPECT_EQ(store_->get(acme_, "c")->value, "2");
  EXPECT_EQ(realAcmeBytes(), 5u + 2u + 2u);  // seed=x, a=1, c=2: nothing of "big"
}

TEST_P(KvGroupCommitTest, AQueuedBatchCommitsOnceDecidesCasInOrderAndFailsWritesAlone) {
  ASSERT_TRUE(store_->put(acme_, "seed", "x", kAnyVersion));
  const Scope q{"acme", "trellis/hello", 100};
  const auto before = store_->writeStats();
  auto lock = blockWrites();

  auto a = startWrite([&] { return store_->put(acme_, "a", "1", kAnyVersion); });  // leads
  auto b = startWrite([&] { return store_->put(acme_, "c", "1", kAbsent); });
  auto c = startWrite([&] { return store_->put(acme_, "c", "2", 1); });  // sees b's write
  auto d = startWrite([&] { return store_->put(acme_, "c", "3", 1); });  // stale: conflict
  auto e = startWrite([&] { return store_->put(q, "big", std::string(200, 'v'), kAnyVersion); });
  auto f = startWrite([&] { return store_->put(acme_, "c", "4", 2); });
  auto g = startWrite([&] { return store_->remove(acme_, "nope", kAnyVersion); });
  auto h = startWrite([&] { return store_->remove(acme_, "seed", 1); });
  // An oversized value is refused before it reaches a batch: it does not wait.
  EXPECT_EQ(
      store_->put(acme_, "v", std::string(kMaxValueBytes + 1, 'v'), kAnyVersion).status().code(),
      StatusCode::kInvalid);
  // Nothing is answered, or visible to readers, before its batch commits.
  EXPECT_EQ(b.wait_for(20ms), std::future_status::timeout);
  EXPECT_EQ(store_->get(acme_, "c").status().code(), StatusCode::kNotFound);
  lock->release();

  EXPECT_EQ(*a.get(), 1u);
  EXPECT_EQ(*b.get(), 1u);
  EXPECT_EQ(*c.get(), 2u);
  auto stale = d.get();
  EXPECT_EQ(stale.status().code(), StatusCode::kConflict);
  EXPECT_EQ(stale.status().message(), "expected version 1, found version 2");
  EXPECT_EQ(e.get().status().code(), StatusCode::kQuotaExceeded);
  EXPECT_EQ(*f.get(), 3u);
  EXPECT_EQ(g.get().code(), StatusCode::kNotFound);
  EXPECT_TRUE(h.get());

  const auto after = store_->writeStats();
  EXPECT_EQ(after.batches - before.batches, 2u);  // a alone, then everything queued behind it
  EXPECT_EQ(after.writes - before.writes, 8u);
  EXPECT_EQ(after.max_batch, 7u);
  auto entry = store_->get(acme_, "c");
  ASSERT_TRUE(entry);
  EXPECT_EQ(entry->value, "4");
  EXPECT_EQ(entry->version, 3u);
  EXPECT_EQ(store_->get(acme_, "big").status().code(), StatusCode::kNotFound);
  EXPECT_EQ(store_->get(acme_, "seed").status().code(), StatusCode::kNotFound);
  EXPECT_EQ(*store_->storageBytes("acme"), realAcmeBytes());
  EXPECT_EQ(*store_->storageBytes("acme"), 2u + 2u);  // a=1, c=4
}

TEST_P(KvGroupCommitTest, ReadsDoNotWaitForWritesAndSeeAWriteOnceAcknowledged) {
  ASSERT_TRUE(store_->put(acme_, "k", "old", kAnyVersion));
  auto lock = blockWrites();
  auto w = startWrite([&] { return store_->put(acme_, "k", "newer", 1); });  // grows: charged
  // The write is stuck behind the lock; reads go on, and see the last durable value.
  for (int i = 0; i < 3; ++i) {
    auto e = store_->get(acme_, "k");
    ASSERT_TRUE(e) << e.status().toString();
    EXPECT_EQ(e->value, "old");
    auto listed = store_->list(acme_, "", "", 0);
    ASSERT_TRUE(listed);
    EXPECT_EQ(listed->size(), 1u);
  }
  EXPECT_EQ(store_->writeStats().pending, 1u);
  lock->release();
  ASSERT_TRUE(w.get());
  // Read-your-writes: the writer's next read (on any reader connection) sees it.
  EXPECT_EQ(store_->get(acme_, "k")->value, "newer");
}

TEST_P(KvGroupCommitTest, ConcurrentIncrementsFromManyThreadsLoseNothingAndShareCommits) {
  constexpr int kThreads = 32;
  constexpr int kPerThread = 8;
  std::atomic<int> errors{0};
  std::vector<std::thread> threads;
  for (int t = 0; t < kThreads; ++t) {
    threads.emplace_back([&, t] {
      const std::string key = "n/" + std::to_string(t % 8);  // 4 writers per key
      for (int done = 0; done < kPerThread;) {
        auto cur = store_->get(acme_, key);
        const uint64_t expected = cur ? cur->version : kAbsent;
        const int value = cur ? std::stoi(cur->value) : 0;
        auto put = store_->put(acme_, key, std::to_string(value + 1), expected);
        if (put) {
          ++done;
        } else if (put.status().code() != StatusCode::kConflict) {
          ++errors;
          return;
        }
      }
    });
  }
  for (auto& t : threads) t.join();
  EXPECT_EQ(errors.load(), 0);
  for (int k = 0; k < 8; ++k) {
    auto e = store_->get(acme_, "n/" + std::to_string(k));
    ASSERT_TRUE(e);
    EXPECT_EQ(e->value, std::to_string(4 * kPerThread));
    EXPECT_EQ(e->version, static_cast<uint64_t>(4 * kPerThread));
  }
  const auto stats = store_->writeStats();
  EXPECT_GT(stats.max_batch, 1u);  // 32 writers never all find the writer idle
  EXPECT_EQ(stats.pending, 0u);
}

// A small tmpfs, mounted for the test: a real file system that really fills up.
class TmpfsMount {
 public:
  TmpfsMount(const std::filesystem::path& at, const char* size) : at_(at) {
    std::filesystem::create_directories(at);
    const std::string options = std::string("size=") + size + ",mode=0700";
    if (::mount("tmpfs", at.c_str(), "tmpfs", MS_NOSUID | MS_NODEV, options.c_str()) != 0) {
      error_ = std::strerror(errno);
    }
  }
  ~TmpfsMount() {
    if (error_.empty()) ::umount2(at_.c_str(), MNT_DETACH);
  }
  const std::string& error() const { return error_; }

 private:
  std::filesystem::path at_;
  std::string error_;
};

// Writes a file until the file system refuses more; returns its path.
std::filesystem::path fillUp(const std::filesystem::path& dir) {
  const auto file = dir / "filler";
  int fd = ::open(file.c_str(), O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0600);
  EXPECT_GE(fd, 0);
  std::vector<char> chunk(64 * 1024, 'f');
  for (size_t size = chunk.size(); size > 0; size /= 2) {
    while (::write(fd, chunk.data(), size) == static_cast<ssize_t>(size)) {
    }
  }
  EXPECT_EQ(errno, ENOSPC);
  ::close(fd);
  return file;
}

TEST_F(SqliteGroupCommitTest, ADiskThatFillsFailsTheWholeBatchAndLosesNothingAcknowledged) {
  if (::geteuid() != 0) GTEST_SKIP() << "mounting a tmpfs needs root";
  const auto mount_point = dir_.path() / "small";
  TmpfsMount tmpfs(mount_point, "2m");
  if (!tmpfs.error().empty()) GTEST_SKIP() << "cannot mount a tmpfs here: " << tmpfs.error();
  open(mount_point / "data");

  for (int i = 0; i < 20; ++i) {
    ASSERT_TRUE(store_->put(acme_, "acked/" + std::to_string(i), std::to_string(i), kAbsent));
  }
  const uint64_t acked_bytes = *store_->storageBytes("acme");
  // Closing copies the redo log into the file, so nothing waits to be copied; the read
  // opens the tenant again (its files) while there is still room.
  open(mount_point / "data");
  ASSERT_TRUE(store_->get(acme_, "acked/0"));
  const auto filler = fillUp(mount_point);

  std::vector<std::future<Result<uint64_t>>> batch;
  {
    WriteBlocker lock(*gate_);
    for (int i = 0; i < 5; ++i) {
      batch.push_back(startWrite([&, i] {
        return store_->put(acme_, "late/" + std::to_string(i), std::string(64 * 1024, 'v'),
                           kAbsent);
      }));
    }
    // One that would fit alone fails with the batch it is in.
    batch.push_back(startWrite([&] { return store_->put(acme_, "acked/0", "zero", 1); }));
  }
  for (auto& f : batch) {
    auto r = f.get();
    ASSERT_FALSE(r);
    EXPECT_EQ(r.status().code(), StatusCode::kUnavailable) << r.status().toString();
    EXPECT_NE(r.status().message().find("acme"), std::string::npos) << r.status().message();
  }

  auto verify = [&](uint64_t version_of_0) {
    for (int i = 0; i < 20; ++i) {
      auto e = store_->get(acme_, "acked/" + std::to_string(i));
      ASSERT_TRUE(e) << i << ": " << e.status().toString();
      EXPECT_EQ(e->value, std::to_string(i));
      EXPECT_EQ(e->version, i == 0 ? version_of_0 : 1u);
    }
    EXPECT_EQ(store_->get(acme_, "late/0").status().code(), StatusCode::kNotFound);
    EXPECT_EQ(*store_->storageBytes("acme"), acked_bytes);
    EXPECT_EQ(realBytes(dbFile()), acked_bytes);
  };
  verify(1);

  // Space again: the same store writes again, and a fresh open finds everything.
  std::filesystem::remove(filler);
  EXPECT_EQ(*store_->put(acme_, "acked/0", "zero", 1), 2u);
  ASSERT_TRUE(store_->put(acme_, "acked/0", "0", 2));
  open(mount_point / "data");
  verify(3);
  store_.reset();
}

// The SQLite runner's own contract, below the KV store: a batch runs without savepoints
// and falls back to one per write only when a failed write had changed rows.
class SqliteBatchTest : public ::testing::Test {
 protected:
  void SetUp() override {
    auto db = SqliteDatabase::open(
        file_, {}, [](soci::session& sql) { exec(sql, "CREATE TABLE t(x TEXT PRIMARY KEY)"); });
    ASSERT_TRUE(db) << db.status().toString();
    db_ = std::move(*db);
  }
  static SqliteDatabase::Work insert(std::string x) {
    return [x](SqliteConnection& c) {
      c.statements.use("INSERT INTO t(x) VALUES(:x)").bind(x).run();
      return Status::ok();
    };
  }
  // Starts a write on its own thread; returns once it is queued or running.
  std::future<Status> start(SqliteDatabase::Work work) {
    const uint64_t before = db_->writeStats().pending;
    auto f = std::async(std::launch::async, [this, work] { return db_->write(work); });
    EXPECT_TRUE(eventually([&] { return db_->writeStats().pending == before + 1; }));
    return f;
  }
  std::vector<std::string> rows() {
    std::vector<std::string> out;
    EXPECT_TRUE(db_->read([&](SqliteConnection& c) {
      auto q = c.statements.use("SELECT x FROM t ORDER BY x");
      while (q.step()) out.push_back(q.bytes(0));
      return Status::ok();
    }));
    return out;
  }
  // Writes queued behind a held lock: the first leads a batch of its own, and the rest
  // share the next one, in order.
  std::vector<Status> batchOf(std::vector<SqliteDatabase::Work> works) {
    std::vector<std::future<Status>> futures;
    {
      WriteBlocker lock(file_);
      futures.push_back(start(insert("lead")));
      for (auto& w : works) futures.push_back(start(w));
    }
    std::vector<Status> out;
    for (auto& f : futures) out.push_back(f.get());
    EXPECT_TRUE(out.front()) << out.front().toString();
    out.erase(out.begin());
    return out;
  }

  TempDir dir_;
  const std::filesystem::path file_ = dir_.path() / "t.db";
  std::unique_ptr<SqliteDatabase> db_;
};

TEST_F(SqliteBatchTest, AWriteThatFailsAfterChangingRowsIsUndoneAloneAndTheBatchRunsAgain) {
  std::atomic<int> runs_of_a{0};
  auto statuses = batchOf({
      [&](SqliteConnection& c) {
        ++runs_of_a;
        return insert("a")(c);
      },
      [](SqliteConnection& c) {
        (void)insert("half")(c);
        return Status::conflict("changed a row, then failed");
      },
      [](SqliteConnection&) { return Status::conflict("refused before writing"); },
      insert("b"),
  });
  ASSERT_EQ(statuses.size(), 4u);
  EXPECT_TRUE(statuses[0]) << statuses[0].toString();
  EXPECT_EQ(statuses[1].message(), "changed a row, then failed");
  EXPECT_EQ(statuses[2].message(), "refused before writing");
  EXPECT_TRUE(statuses[3]) << statuses[3].toString();
  EXPECT_EQ(rows(), (std::vector<std::string>{"a", "b", "lead"}));
  EXPECT_EQ(runs_of_a.load(), 2) << "the batch ran again, with a savepoint per write";
}

TEST_F(SqliteBatchTest, WritesRefusedBeforeChangingAnythingNeedNoSecondRun) {
  std::atomic<int> runs_of_a{0};
  auto statuses = batchOf({
      [&](SqliteConnection& c) {
        ++runs_of_a;
        return insert("a")(c);
      },
      [](SqliteConnection&) { return Status::conflict("refused before writing"); },
      insert("b"),
  });
  ASSERT_EQ(statuses.size(), 3u);
  EXPECT_TRUE(statuses[0]);
  EXPECT_EQ(statuses[1].code(), StatusCode::kConflict);
  EXPECT_TRUE(statuses[2]);
  EXPECT_EQ(rows(), (std::vector<std::string>{"a", "b", "lead"}));
  EXPECT_EQ(runs_of_a.load(), 1);
}

TEST_F(SqliteBatchTest, AWriteThatThrowsFailsAloneAndTheBatchRunsAgain) {
  std::atomic<int> runs_of_a{0};
  auto statuses = batchOf({
      [&](SqliteConnection& c) {
        ++runs_of_a;
        return insert("a")(c);
      },
      insert("a"),  // a constraint error: SQLite throws
      insert("b"),
  });
  ASSERT_EQ(statuses.size(), 3u);
  EXPECT_TRUE(statuses[0]);
  EXPECT_EQ(statuses[1].code(), StatusCode::kUnavailable) << statuses[1].toString();
  EXPECT_NE(statuses[1].message().find("UNIQUE"), std::string::npos) << statuses[1].message();
  EXPECT_TRUE(statuses[2]);
  EXPECT_EQ(rows(), (std::vector<std::string>{"a", "b", "lead"}));
  EXPECT_EQ(runs_of_a.load(), 2);
}

}  // namespace
}  // namespace trellis::kernel::storage
