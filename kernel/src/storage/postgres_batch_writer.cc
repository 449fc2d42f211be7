#include "trellis/kernel/storage/postgres_batch_writer.h"

#include <soci/postgresql/soci-postgresql.h>

#include <algorithm>
#include <string>
#include <utility>

#include "trellis/tenants/postgres.h"
#include "trellis/tenants/sql_statement.h"

namespace trellis::kernel::storage {
namespace {

using tenants::sql::exec;
using tenants::sql::Query;

constexpr int kMaxBatchAttempts = 5;
constexpr int kMaxWriteAttempts = 5;

void failAll(std::span<GroupCommit::Write* const> batch, const Status& status) {
  for (GroupCommit::Write* w : batch) w->status = status;
}

void rollbackQuietly(soci::session& sql) noexcept {
  try {
    exec(sql, "ROLLBACK");
  } catch (const std::exception&) {
    // The session is failing; the pool drops it (it is not idle), and PostgreSQL rolls
    // the transaction back when the connection goes.
  }
}

enum class Outcome { kDone, kRerunBatch };

}  // namespace

PostgresBatchWriter::PostgresBatchWriter(std::shared_ptr<tenants::PostgresPool> pool,
                                         Options options)
    : pool_(std::move(pool)),
      commit_([this](std::span<GroupCommit::Write* const> batch) { runBatch(batch); },
              {.max_batch = options.max_batch,
               .max_leaders = options.max_leaders != 0 ? options.max_leaders
                                                       : std::max<size_t>(1, pool_->size() / 2)}) {}

namespace {

// Local to the write's savepoint (and the transaction): row-level security shows this
// tenant's rows only, and the next write sets its own.
Status asTenant(soci::session& sql, const std::string& tenant, const GroupCommit::Work& work) {
  Query(sql, "SELECT set_config('trellis.tenant', :t, true)").use(tenant).run();
  return work(sql);
}

}  // namespace

Status PostgresBatchWriter::write(const std::string& tenant, const GroupCommit::Work& work) {
  return commit_.submit([&](soci::session& sql) { return asTenant(sql, tenant, work); });
}

void PostgresBatchWriter::writeAsync(const std::string& tenant, GroupCommit::Work work,
                                     GroupCommit::Done done) {
  commit_.submitAsync(
      [tenant, work = std::move(work)](soci::session& sql) { return asTenant(sql, tenant, work); },
      std::move(done), nullptr);
}

void PostgresBatchWriter::runBatch(std::span<GroupCommit::Write* const> batch) {
  const std::string what = "storage write batch";
  bool stale_replaced = false;
  for (int attempt = 1;; ++attempt) {
    auto lease = pool_->acquire();
    if (!lease) {
      failAll(batch, Status::unavailable(what + " failed: " + lease.status().message()));
      return;
    }
    soci::session& sql = lease->session();
    try {
      exec(sql, "BEGIN");
    } catch (const std::exception& e) {
      // Nothing ran: a session the server dropped (a restart) is replaced once.
      if (!stale_replaced && !tenants::isHealthyPostgresSession(sql)) {
        stale_replaced = true;
        continue;
      }
      failAll(batch, pool_->unavailable(what, e));
      return;
    }
    Outcome outcome = Outcome::kDone;
    try {
      for (GroupCommit::Write* w : batch) {
        for (int tries = 1;; ++tries) {
          exec(sql, "SAVEPOINT w");
          try {
            w->status = (*w->work)(sql);
          } catch (const std::exception& e) {
            const auto* pg = dynamic_cast<const soci::postgresql_soci_error*>(&e);
            const std::string state = pg ? pg->sqlstate() : "";
            if ((state == "40001" || state == "40P01") && attempt < kMaxBatchAttempts) {
              // Its locks (and the other writes') must go for the other side to proceed.
              outcome = Outcome::kRerunBatch;
              break;
            }
            if (state == "23505" && tries < kMaxWriteAttempts) {
              // A first insert that raced another host's: again, it now finds the row.
              exec(sql, "ROLLBACK TO SAVEPOINT w");
              exec(sql, "RELEASE SAVEPOINT w");
              continue;
            }
            w->status = pool_->unavailable("storage write", e);
          }
          if (!w->status) exec(sql, "ROLLBACK TO SAVEPOINT w");
          exec(sql, "RELEASE SAVEPOINT w");
          break;
        }
        if (outcome == Outcome::kRerunBatch) break;
      }
      if (outcome == Outcome::kDone) {
        exec(sql, "COMMIT");  // one WAL flush for the whole batch
        return;
      }
      rollbackQuietly(sql);
    } catch (const std::exception& e) {
      rollbackQuietly(sql);
      failAll(batch, pool_->unavailable(what + " (every write in it rolled back)", e));
      return;
    }
  }
}

}  // namespace trellis::kernel::storage
