// One SQLite database file shared by many threads, built for durable writes at speed:
// writes are group-committed (group_commit.h) on one writer connection in WAL mode with
// synchronous=FULL — one transaction and one WAL fsync per batch, each write in its own
// savepoint — and reads run on a small pool of reader connections, so they never wait for
// a writer. The KV store keeps one per tenant; other durable appends (usage, audit) can
// keep their own.
//
//   auto db = SqliteDatabase::open("/var/lib/trellis/data/t.db", {.create = true},
//                                  [](soci::session& sql) { exec(sql, "CREATE TABLE ..."); });
//   Status s = (*db)->write([&](soci::session& sql) { ...; return Status::ok(); });
//   Status r = (*db)->read([&](soci::session& sql) { ...; return Status::ok(); });
//
// Acknowledged means durable: write() returns OK only after the COMMIT covering the write
// has fsync'd the WAL, and a read started after that sees it (read-your-writes). A read
// never sees a write before its commit is durable: SQLite publishes a WAL commit to
// readers only after the fsync.
//
// Failures: a write that returns a non-OK status or throws an ordinary SQL error is rolled
// back to its savepoint and fails alone; the rest of the batch commits. When the database
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
#include "trellis/status.hpp"

namespace trellis::kernel::storage {

class SqliteDatabase {
 public:
  struct Options {
    bool create = true;           // false: NOT_FOUND (and no file) if it does not exist
    size_t max_batch = 256;       // writes per transaction
    size_t max_idle_readers = 8;  // reader connections kept open between reads
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
  Status write(const GroupCommit::Work& work);

  // Runs `fn` on a reader connection (autocommit: each statement sees the latest durable
  // commit). Thread-safe; never waits for write(). Exceptions become UNAVAILABLE.
  Status read(const std::function<Status(soci::session&)>& fn);

  GroupCommit::Stats writeStats() const { return commit_.stats(); }
  const std::filesystem::path& file() const { return file_; }

 private:
  SqliteDatabase(std::filesystem::path file, Options options);
  void runBatch(std::span<GroupCommit::Write* const> batch);
  std::unique_ptr<soci::session> openReader() const;

  const std::filesystem::path file_;
  const Options options_;
  soci::session writer_;  // used by the batch leader only
  GroupCommit commit_;
  std::mutex readers_mu_;
  std::vector<std::unique_ptr<soci::session>> idle_readers_;  // guarded by readers_mu_
};

}  // namespace trellis::kernel::storage
