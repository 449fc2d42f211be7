#include "services/jobs/job_store.h"

#include <soci/soci.h>
#include <soci/sqlite3/soci-sqlite3.h>

namespace trellis::kernel::services {

std::string_view jobKindName(JobKind k) {
  switch (k) {
    case JobKind::kOnce: return "once";
    case JobKind::kEvery: return "every";
    case JobKind::kCron: return "cron";
  }
  return "unknown";
}

std::string_view jobStateName(JobState s) {
  switch (s) {
    case JobState::kScheduled: return "scheduled";
    case JobState::kRunning: return "running";
    case JobState::kDead: return "dead";
  }
  return "unknown";
}

SqliteJobStore::SqliteJobStore(std::unique_ptr<soci::session> sql) : sql_(std::move(sql)) {}
SqliteJobStore::~SqliteJobStore() = default;

Result<std::unique_ptr<SqliteJobStore>> SqliteJobStore::open(const std::filesystem::path& file) {
  try {
    auto sql = std::make_unique<soci::session>(soci::sqlite3, "db=" + file.string());
    *sql << "PRAGMA journal_mode=WAL";
    *sql << "PRAGMA synchronous=FULL";
    *sql << "CREATE TABLE IF NOT EXISTS jobs("
            " tenant TEXT NOT NULL, plugin TEXT NOT NULL, name TEXT NOT NULL,"
            " kind INTEGER NOT NULL, interval_ms BIGINT NOT NULL, cron TEXT NOT NULL,"
            " payload BLOB NOT NULL, max_attempts INTEGER NOT NULL, budget_ms INTEGER NOT NULL,"
            " traceparent TEXT NOT NULL, tracestate TEXT NOT NULL,"
            " next_run_ms BIGINT NOT NULL, attempts INTEGER NOT NULL, runs BIGINT NOT NULL,"
            " failures BIGINT NOT NULL, last_error TEXT NOT NULL, last_run_ms BIGINT NOT NULL,"
            " dead INTEGER NOT NULL, PRIMARY KEY(tenant, plugin, name))";
    return std::unique_ptr<SqliteJobStore>(new SqliteJobStore(std::move(sql)));
  } catch (const std::exception& e) {
    return Status::unavailable("cannot open the job store " + file.string() + ": " + e.what());
  }
}

Status SqliteJobStore::put(const Job& j) {
  std::lock_guard lock(mu_);
  try {
    int kind = static_cast<int>(j.kind), dead = j.state == JobState::kDead ? 1 : 0;
    long long interval = static_cast<long long>(j.interval_ms), next = j.next_run_ms,
              runs = static_cast<long long>(j.runs), failures = static_cast<long long>(j.failures),
              last_run = j.last_run_ms;
    int max_attempts = static_cast<int>(j.max_attempts), budget = static_cast<int>(j.budget_ms),
        attempts = static_cast<int>(j.attempts);
    *sql_ << "INSERT OR REPLACE INTO jobs VALUES(:t, :p, :n, :k, :i, :c, :pl, :ma, :b, :tp, :ts,"
             " :nx, :a, :r, :f, :le, :lr, :d)",
        soci::use(j.key.tenant), soci::use(j.key.plugin), soci::use(j.key.name), soci::use(kind),
        soci::use(interval), soci::use(j.cron), soci::use(j.payload), soci::use(max_attempts),
        soci::use(budget), soci::use(j.traceparent), soci::use(j.tracestate), soci::use(next),
        soci::use(attempts), soci::use(runs), soci::use(failures), soci::use(j.last_error),
        soci::use(last_run), soci::use(dead);
    return Status::ok();
  } catch (const std::exception& e) {
    return Status::unavailable(std::string("cannot persist job: ") + e.what());
  }
}

Status SqliteJobStore::remove(const JobKey& key) {
  std::lock_guard lock(mu_);
  try {
    *sql_ << "DELETE FROM jobs WHERE tenant = :t AND plugin = :p AND name = :n",
        soci::use(key.tenant), soci::use(key.plugin), soci::use(key.name);
    return Status::ok();
  } catch (const std::exception& e) {
    return Status::unavailable(std::string("cannot remove job: ") + e.what());
  }
}

Result<std::vector<Job>> SqliteJobStore::loadAll() {
  std::lock_guard lock(mu_);
  std::vector<Job> out;
  try {
    soci::rowset<soci::row> rows = sql_->prepare << "SELECT * FROM jobs";
    for (const auto& r : rows) {
      Job j;
      j.key = {r.get<std::string>(0), r.get<std::string>(1), r.get<std::string>(2)};
      j.kind = static_cast<JobKind>(r.get<int>(3));
      j.interval_ms = static_cast<uint64_t>(r.get<long long>(4));
      j.cron = r.get<std::string>(5);
      j.payload = r.get<std::string>(6);
      j.durable = true;
      j.max_attempts = static_cast<uint32_t>(r.get<int>(7));
      j.budget_ms = static_cast<uint32_t>(r.get<int>(8));
      j.traceparent = r.get<std::string>(9);
      j.tracestate = r.get<std::string>(10);
      j.next_run_ms = r.get<long long>(11);
      j.attempts = static_cast<uint32_t>(r.get<int>(12));
      j.runs = static_cast<uint64_t>(r.get<long long>(13));
      j.failures = static_cast<uint64_t>(r.get<long long>(14));
      j.last_error = r.get<std::string>(15);
      j.last_run_ms = r.get<long long>(16);
      j.state = r.get<int>(17) ? JobState::kDead : JobState::kScheduled;
      out.push_back(std::move(j));
    }
    return out;
  } catch (const std::exception& e) {
    return Status::unavailable(std::string("cannot load jobs: ") + e.what());
  }
}

}  // namespace trellis::kernel::services
