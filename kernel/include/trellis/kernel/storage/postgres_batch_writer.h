// Group commit on PostgreSQL (group_commit.h): concurrent writes become batches, each one
// transaction on one pooled session with a savepoint per write and a single COMMIT, so a
// batch pays one commit round trip and one WAL flush. Several batches run at once (up to
// half the pool, leaving sessions for reads), and PostgreSQL shares WAL flushes between
// concurrent commits as well.
//
//   PostgresBatchWriter writer(pool);
//   Status s = writer.write("acme", [&](soci::session& sql) {   // trellis.tenant = acme
//     Query(sql, "UPDATE kv SET ... WHERE tenant_id = :t").use(tenant).run();
//     return Status::ok();
//   });
//
// Acknowledged means committed: write() returns OK only after the batch's COMMIT returned,
// i.e. (with the default synchronous_commit=on) after its WAL is flushed to disk on the
// primary. Each write runs with row-level security set to its own tenant (SET LOCAL in
// its savepoint), so a batch may mix tenants without one seeing another's rows.
//
// Failures: a write that returns a non-OK status is rolled back to its savepoint and fails
// alone. A unique violation (two hosts inserting one key first) retries that write; a
// deadlock or serialization failure re-runs the whole batch (its locks must go for the
// other side to proceed), up to 5 times. A failed COMMIT or a lost session fails every
// write of the batch with UNAVAILABLE; a lost connection during COMMIT leaves its outcome
// unknown, as for any PostgreSQL client.
#pragma once

#include <memory>
#include <span>
#include <string>

#include "trellis/kernel/storage/group_commit.h"
#include "trellis/status.hpp"

namespace trellis::tenants {
class PostgresPool;
}

namespace trellis::kernel::storage {

class PostgresBatchWriter {
 public:
  struct Options {
    size_t max_batch = 64;   // PostgreSQL keeps up to 64 subtransactions cached per backend
    size_t max_leaders = 0;  // 0: half the pool's sessions (at least 1)
  };

  PostgresBatchWriter(std::shared_ptr<tenants::PostgresPool> pool, Options options);

  // Runs `work` for `tenant` (a validated id) in the next batch; returns its status once
  // the batch has committed or failed. Thread-safe.
  Status write(const std::string& tenant, const GroupCommit::Work& work);
  // The same without blocking (GroupCommit::submitAsync): `done` gets the status on the
  // thread that ran the batch. The writer must outlive the writes in flight.
  void writeAsync(const std::string& tenant, GroupCommit::Work work, GroupCommit::Done done);

  GroupCommit::Stats stats() const { return commit_.stats(); }

 private:
  void runBatch(std::span<GroupCommit::Write* const> batch);

  std::shared_ptr<tenants::PostgresPool> pool_;
  GroupCommit commit_;
};

}  // namespace trellis::kernel::storage
