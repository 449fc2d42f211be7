// Group commit: concurrent writers to one database share one transaction and one durable
// commit (one WAL fsync), and each caller is answered only after the commit that covers
// its write — durability per write is unchanged, the fsync is paid once per batch.
//
// Leader/follower, no thread of its own: a writer that finds no batch running runs its
// own write at once (no added latency when idle); writers that arrive while a batch is
// committing queue up, and when that batch ends the first of them leads the next batch
// with everything queued meanwhile. The window adapts to the commit time by itself.
//
// What a batch does is the backend's: the `RunBatch` given to the constructor runs every
// write in order in one transaction, isolates each (a write that fails is undone and fails
// alone) and commits once; it sets every write's status, and a failed commit
// fails them all. SqliteDatabase (sqlite_database.h) and PostgresBatchWriter
// (postgres_batch_writer.h) are the two runners; KV, and later appends of the usage and
// audit streams, submit through them.
//
// A caller that must not block (an event loop) submits asynchronously instead: its write
// joins the same queue and batches, and when it is the one to lead, a thread of the
// process's commit pool (CommitPool, below) runs the batch in its place. `done` runs once, on
// the thread that ran the batch, after the commit covering the write.
//
//   GroupCommit gc(runner, {.max_batch = 256});
//   Status s = gc.submit([&](soci::session& sql) {   // blocks until durable or failed
//     Query(sql, "INSERT INTO log(line) VALUES(:l)").use(line).run();
//     return Status::ok();                           // anything else: undone, returned
//   });
//   gc.submitAsync(work, [](Status s) { ... }, owner);  // returns at once
#pragma once

#include <soci/soci.h>

#include <cstddef>
#include <cstdint>
#include <deque>
#include <functional>
#include <memory>
#include <mutex>
#include <span>
#include <vector>

#include "trellis/status.hpp"

namespace trellis::kernel::storage {

class GroupCommit {
 public:
  // One write. It runs on the leader's thread inside the batch's transaction (never
  // concurrently with another write of the same batch) and returns OK to keep its
  // changes; any other status undoes them and is its caller's answer. It may throw
  // (a database error): the runner decides whether that fails it alone or the batch.
  using Work = std::function<Status(soci::session&)>;

  struct Write {
    const Work* work;
    Status status = Status::ok();
  };

  // Runs `batch` (in submission order) in one transaction and sets each write's status.
  // Called by one leader at a time when max_leaders is 1. Must not throw.
  using RunBatch = std::function<void(std::span<Write* const> batch)>;

  struct Options {
    size_t max_batch = 256;  // writes per transaction; more wait for the next batch
    // Batches that may run at once: 1 for SQLite (one writer per file); more where the
    // database runs transactions concurrently and shares their flushes (PostgreSQL).
    size_t max_leaders = 1;
  };

  struct Stats {
    uint64_t batches = 0;    // transactions run (committed or failed)
    uint64_t writes = 0;     // writes in them
    uint64_t max_batch = 0;  // the largest batch so far
    uint64_t pending = 0;    // writes submitted and not answered yet (queued or running)
  };

  GroupCommit(RunBatch run, Options options);
  GroupCommit(const GroupCommit&) = delete;
  GroupCommit& operator=(const GroupCommit&) = delete;

  // Runs `work` in a batch and returns its status once that batch's commit is durable
  // (OK) or has failed (every write of the batch gets the failure). Thread-safe.
  Status submit(const Work& work);
  // The same without blocking: `done` gets the status (exactly once, on the thread that
  // ran the batch: the commit pool's or a blocked submitter's). `owner` is kept alive
  // until then, so the object holding this GroupCommit outlives every write in flight.
  using Done = std::function<void(Status)>;
  void submitAsync(Work work, Done done, std::shared_ptr<const void> owner);

  Stats stats() const;

 private:
  struct Waiter;
  void promote();  // chooses queued writers to lead while slots are free; mu_ held
  // A writer chosen to lead: takes the queue's front into a batch, or nothing if another
  // leader took `me` along already. mu_ held.
  std::vector<std::shared_ptr<Waiter>> takeBatch(const std::shared_ptr<Waiter>& me);
  // Runs the batch, then answers every writer in it (`me`, the leader, excepted if sync).
  void runBatch(std::vector<std::shared_ptr<Waiter>>& batch, const Waiter* me);
  void leadAsync(const std::shared_ptr<Waiter>& me);

  const RunBatch run_;
  const Options options_;
  mutable std::mutex mu_;
  std::deque<std::shared_ptr<Waiter>> queue_;  // guarded by mu_
  size_t leaders_ = 0;                         // batches running or about to; guarded by mu_
  Stats stats_;                                // guarded by mu_
};

// The threads that lead batches for asynchronous submitters: a few, shared by every
// GroupCommit of the process (each batch is one fsync; different databases commit side by
// side). Created on first use.
class CommitPool {
 public:
  static CommitPool& instance();
  void post(std::function<void()> task);

 private:
  CommitPool();
  struct State;
  std::shared_ptr<State> state_;
};

}  // namespace trellis::kernel::storage
