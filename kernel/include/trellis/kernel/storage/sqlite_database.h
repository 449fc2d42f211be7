// One SQLite database file shared by many threads, built for durable writes at speed:
// writes are group-committed (group_commit.h) on one writer connection in WAL mode with
// synchronous=FULL — one transaction and one WAL fsync per batch, each write undone alone
// if it fails — and reads run on a small pool of reader connections, so they never wait for
// a writer. The KV store keeps one per tenant; other durable appends (usage, audit) can
// keep their own.
//
//   auto db = SqliteDatabase::open("/var/lib/trellis/data/t.db", {.create = true},
//                                  [](soci::session& sql) { exec(sql, "CREATE TABLE ..."); });
//   Status s = (*db)->write([&](SqliteConnection& c) { ...; return Status::ok(); });
//   Status r = (*db)->read([&](SqliteConnection& c) { ...; return Status::ok(); });
//
// Work gets the connection both ways: `c.sql` (SOCI) for anything, and `c.statements`
// (sqlite_statements.h) for statements run often enough that compiling them each time
// would show.
//
// Acknowledged means durable: write() returns OK only after the COMMIT covering the write
// has fsync'd the WAL, and a read started after that sees it (read-your-writes). A read
// never sees a write before its commit is durable: SQLite publishes a WAL commit to
// readers only after the fsync.
//
// Failures: a write that returns a non-OK status or throws an ordinary SQL error is undone
// and fails alone; the rest of the batch commits. A batch runs without savepoints first;
// if a write fails after changing rows, or throws, the batch is rolled back and run again
// with a savepoint per write, so a Work must be safe to run twice: it writes only through
// its connection and sets its outputs afresh each time. When the database
// itself fails (disk full, I/O error, a failed COMMIT) the whole batch is rolled back and
// every write in it gets UNAVAILABLE naming the cause; nothing acknowledged before is lost.
#pragma once

#include <soci/soci.h>

#include <cstddef>
#include <filesystem>
#include <functional>
#include <memory>
#include <mutex>
#include <vector>

#include "trellis/kernel/storage/group_commit.h"
#include "trellis/kernel/storage/sqlite_statements.h"
#include "trellis/status.hpp"

namespace trellis::kernel::storage {

namespace internal {
class WalCheckpointer;
}

// The connection a write or read runs on, valid for that call only.
struct SqliteConnection {
  soci::session& sql;
  SqliteStatements& statements;  // compiled once per connection
};

class SqliteDatabase {
 public:
  // A write or a read. Writes run on the batch leader's thread inside the batch's
  // transaction (GroupCommit::Work); reads on a reader connection in autocommit.
  using Work = std::function<Status(SqliteConnection&)>;

  struct Options {
    bool create = true;           // false: NOT_FOUND (and no file) if it does not exist
    size_t max_batch = 256;       // writes per transaction
    size_t max_idle_readers = 8;  // reader connections kept open between reads
    // Bytes per page of a file this open creates (SQLite cannot change it later in WAL
    // mode); 0 keeps SQLite's 4 KiB. Larger pages mean fewer WAL frames for append-only data.
    size_t page_size = 0;
  };
  using Schema = std::function<void(soci::session&)>;

  // Opens `file` (creating it 0600 with options.create) and runs `schema` in one write
  // transaction (it may throw; that fails the open). UNAVAILABLE names the file and why.
  static Result<std::unique_ptr<SqliteDatabase>> open(const std::filesystem::path& file,
                                                      Options options, const Schema& schema);
  ~SqliteDatabase();
  SqliteDatabase(const SqliteDatabase&) = delete;
  SqliteDatabase& operator=(const SqliteDatabase&) = delete;

  // Runs `work` in the next batch; returns its status once the batch is durable or failed.
  // Thread-safe. Exceptions from `work` become UNAVAILABLE with their message.
  Status write(const Work& work);
  // The same without blocking (GroupCommit::submitAsync): `done` gets the status once the
  // batch is durable or failed, on the thread that ran it. `owner` (the shared_ptr holding
  // this database) keeps it open until then.
  void writeAsync(Work work, GroupCommit::Done done, std::shared_ptr<const void> owner);

  // Runs `fn` on a reader connection (autocommit: each statement sees the latest durable
  // commit). Thread-safe; never waits for write(). Exceptions become UNAVAILABLE.
  Status read(const Work& work);

  GroupCommit::Stats writeStats() const { return commit_.stats(); }
  const std::filesystem::path& file() const { return file_; }

 private:
  SqliteDatabase(std::filesystem::path file, Options options);
  void runBatch(std::span<GroupCommit::Write* const> batch);
  enum class BatchRun { kDone, kNeedsSavepoints };
  BatchRun runWrites(std::span<GroupCommit::Write* const> batch, bool savepoints);
  struct Reader {
    std::unique_ptr<soci::session> sql;
    std::unique_ptr<SqliteStatements> statements;  // declared after sql: finalized first
  };
  Reader openReader() const;

  const std::filesystem::path file_;
  const Options options_;
  soci::session writer_;                                 // used by the batch leader only
  std::unique_ptr<SqliteStatements> writer_statements_;  // the leader's; before writer_ closes
  GroupCommit commit_;
  std::shared_ptr<internal::WalCheckpointer> checkpointer_;  // closed before writer_
  std::mutex readers_mu_;
  std::vector<Reader> idle_readers_;  // guarded by readers_mu_
};

}  // namespace trellis::kernel::storage
