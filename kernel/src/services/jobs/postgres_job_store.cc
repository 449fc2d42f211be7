#include "services/jobs/postgres_job_store.h"

#include <unistd.h>

#include <algorithm>
#include <optional>
#include <utility>

#include "services/jobs/scheduler.h"
#include "storage/internal/hex.h"
#include "trellis/tenants/admission.h"
#include "trellis/tenants/postgres.h"

namespace trellis::kernel::services {
namespace {

using storage::internal::fromHex;
using storage::internal::toHex;
using tenants::PostgresPool;
using tenants::sql::Query;

// The definition and history columns of `jobs`, in the order readJob() takes them.
constexpr const char* kJobColumns =
    "j.tenant_id, j.plugin, j.name, j.kind, j.interval_ms, j.cron, encode(j.payload, 'hex'),"
    " j.max_attempts, j.budget_ms, j.traceparent, j.tracestate, j.attempts, j.runs,"
    " j.failures, j.last_error, j.last_run_ms, CAST(j.dead AS INTEGER), s.next_run_ms,"
    " CAST(s.lease_until IS NOT NULL AND s.lease_until > clock_timestamp() AS INTEGER),"
    " s.lease_owner";

// One row of kJobColumns, bound once and fetched row by row.
struct JobRow {
  std::string tenant, plugin, name, cron, payload_hex, traceparent, tracestate, last_error, owner;
  int kind = 0, max_attempts = 0, budget = 0, attempts = 0, dead = 0, leased = 0;
  long long interval = 0, runs = 0, failures = 0, last_run = 0, next = 0;

  void bind(Query& q) {
    q.into(tenant).into(plugin).into(name).into(kind).into(interval).into(cron).into(payload_hex);
    q.into(max_attempts).into(budget).into(traceparent).into(tracestate).into(attempts);
    q.into(runs).into(failures).into(last_error).into(last_run).into(dead).into(next);
    q.into(leased).into(owner);
  }
  Job job() const {
    Job j;
    j.key = {tenant, plugin, name};
    j.kind = static_cast<JobKind>(kind);
    j.interval_ms = static_cast<uint64_t>(interval);
    j.cron = cron;
    j.payload = fromHex(payload_hex);
    j.durable = true;
    j.max_attempts = static_cast<uint32_t>(max_attempts);
    j.budget_ms = static_cast<uint32_t>(budget);
    j.traceparent = traceparent;
    j.tracestate = tracestate;
    j.attempts = static_cast<uint32_t>(attempts);
    j.runs = static_cast<uint64_t>(runs);
    j.failures = static_cast<uint64_t>(failures);
    j.last_error = last_error;
    j.last_run_ms = last_run;
    j.next_run_ms = next;
    j.state = dead ? JobState::kDead : leased ? JobState::kRunning : JobState::kScheduled;
    if (leased) j.running_on = owner;
    return j;
  }
};

class PostgresJobStore final : public SharedJobStore {
 public:
  PostgresJobStore(std::shared_ptr<PostgresPool> pool, std::string host, int64_t margin)
      : pool_(std::move(pool)), host_(std::move(host)), margin_ms_(margin) {}

  Status put(const Job& j, std::optional<uint64_t> max_new) override {
    return pool_->transaction(what("schedule", j.key), j.key.tenant, [&](soci::session& sql) {
      // Serialises the tenant's schedulers on every host, so the count below is exact.
      const std::string lock_key = "jobs:" + j.key.tenant;
      Query(sql, "SELECT pg_advisory_xact_lock(hashtext(:k))").use(lock_key).run();
      std::string id;
      const bool exists = Query(sql,
                                "SELECT job_id FROM jobs WHERE tenant_id = :t AND plugin = :p "
                                "AND name = :n FOR UPDATE")
                              .use(j.key.tenant)
                              .use(j.key.plugin)
                              .use(j.key.name)
                              .into(id)
                              .run();
      int kind = static_cast<int>(j.kind), max_attempts = static_cast<int>(j.max_attempts),
          budget = static_cast<int>(j.budget_ms);
      long long interval = static_cast<long long>(j.interval_ms), next = j.next_run_ms,
                lease = static_cast<long long>(leaseMs(j));
      const std::string payload = toHex(j.payload);
      if (!exists) {
        if (max_new) {
          long long held = 0;
          Query(sql, "SELECT count(*) FROM jobs WHERE tenant_id = :t")
              .use(j.key.tenant)
              .into(held)
              .run();
          if (static_cast<uint64_t>(held) >= *max_new) {
            return Status::quotaExceeded("tenant " + j.key.tenant + " already has " +
                                         std::to_string(held) + " durable jobs, its max_jobs " +
                                         "quota less its other jobs");
          }
        }
        id = tenants::randomHexId(16);
        Query(sql,
              "INSERT INTO jobs VALUES (:t, :p, :n, :id, :k, :i, :c, decode(:pl, 'hex'), :ma, :b,"
              " :tp, :ts, 0, 0, 0, '', 0, false)")
            .use(j.key.tenant)
            .use(j.key.plugin)
            .use(j.key.name)
            .use(id)
            .use(kind)
            .use(interval)
            .use(j.cron)
            .use(payload)
            .use(max_attempts)
            .use(budget)
            .use(j.traceparent)
            .use(j.tracestate)
            .run();
        Query(sql,
              "INSERT INTO job_schedule(job_id, tenant_id, plugin, next_run_ms, lease_ms) "
              "VALUES (:id, :t, :p, :nx, :l)")
            .use(id)
            .use(j.key.tenant)
            .use(j.key.plugin)
            .use(next)
            .use(lease)
            .run();
        return Status::ok();
      }
      Query(sql,
            "UPDATE jobs SET kind = :k, interval_ms = :i, cron = :c, payload = decode(:pl, 'hex'),"
            " max_attempts = :ma, budget_ms = :b, traceparent = :tp, tracestate = :ts,"
            " attempts = 0, dead = false WHERE job_id = :id")
          .use(kind)
          .use(interval)
          .use(j.cron)
          .use(payload)
          .use(max_attempts)
          .use(budget)
          .use(j.traceparent)
          .use(j.tracestate)
          .use(id)
          .run();
      // A lease held by a run of the job it replaces is dropped: that run's completion then
      // leaves this job alone, and the new firing is claimable at next_run_ms.
      Query(sql,
            "UPDATE job_schedule SET next_run_ms = :nx, lease_ms = :l, lease_owner = '',"
            " lease_token = '', lease_until = NULL WHERE job_id = :id")
          .use(next)
          .use(lease)
          .use(id)
          .run();
      return Status::ok();
    });
  }

  Status remove(const JobKey& key) override {
    return pool_->transaction(what("cancel", key), key.tenant, [&](soci::session& sql) {
      std::string id;
      if (!Query(sql,
                 "DELETE FROM jobs WHERE tenant_id = :t AND plugin = :p AND name = :n "
                 "RETURNING job_id")
               .use(key.tenant)
               .use(key.plugin)
               .use(key.name)
               .into(id)
               .run()) {
        return Status::notFound("no job \"" + key.name + "\"");
      }
      Query(sql, "DELETE FROM job_schedule WHERE job_id = :id").use(id).run();
      return Status::ok();
    });
  }

  Status runNow(const JobKey& key) override {
    return pool_->transaction(what("run", key), key.tenant, [&](soci::session& sql) {
      std::string id;
      int leased = 0;
      if (!Query(sql,
                 "SELECT j.job_id, CAST(s.lease_until IS NOT NULL AND "
                 "s.lease_until > clock_timestamp() AS INTEGER) FROM jobs j JOIN job_schedule s "
                 "ON s.job_id = j.job_id WHERE j.tenant_id = :t AND j.plugin = :p AND j.name = :n "
                 "FOR UPDATE")
               .use(key.tenant)
               .use(key.plugin)
               .use(key.name)
               .into(id)
               .into(leased)
               .run()) {
        return Status::notFound("no job \"" + key.name + "\"");
      }
      if (leased) return Status::conflict("job " + key.name + " is running");
      // A retry from the dead letter starts its attempts afresh.
      Query(sql, "UPDATE jobs SET attempts = 0, dead = false WHERE job_id = :id AND dead")
          .use(id)
          .run();
      long long now = unixMs();
      Query(sql, "UPDATE job_schedule SET next_run_ms = :nx WHERE job_id = :id")
          .use(now)
          .use(id)
          .run();
      return Status::ok();
    });
  }

  Result<std::vector<Job>> list() override {
    std::vector<std::string> tenants;
    Status s = pool_->transaction("listing durable jobs", "", [&](soci::session& sql) {
      tenants.clear();
      std::string t;
      Query q(sql, "SELECT DISTINCT tenant_id FROM job_schedule ORDER BY tenant_id");
      q.into(t);
      for (bool row = q.run(); row; row = q.next()) tenants.push_back(t);
      return Status::ok();
    });
    if (!s) return s;
    std::vector<Job> out;
    for (const auto& tenant : tenants) {
      s = pool_->transaction("listing durable jobs of tenant \"" + tenant + "\"", tenant,
                             [&](soci::session& sql) {
                               JobRow row;
                               Query q(sql, std::string("SELECT ") + kJobColumns +
                                                " FROM jobs j JOIN job_schedule s ON "
                                                "s.job_id = j.job_id ORDER BY j.plugin, j.name");
                               row.bind(q);
                               for (bool more = q.run(); more; more = q.next()) {
                                 out.push_back(row.job());
                               }
                               return Status::ok();
                             });
      if (!s) return s;
    }
    return out;
  }

  Result<uint64_t> count(const std::string& tenant) override {
    long long n = 0;
    Status s = pool_->transaction("counting jobs", tenant, [&](soci::session& sql) {
      Query(sql, "SELECT count(*) FROM jobs WHERE tenant_id = :t").use(tenant).into(n).run();
      return Status::ok();
    });
    if (!s) return s;
    return static_cast<uint64_t>(n);
  }

  Result<std::vector<JobClaim>> claimDue(size_t max,
                                         const std::vector<std::string>& plugins) override {
    std::vector<JobClaim> claims;
    if (max == 0 || plugins.empty()) return claims;
    std::string plugin_list;  // plugin ids never contain spaces (manifest rule)
    for (const auto& p : plugins) plugin_list += (plugin_list.empty() ? "" : " ") + p;
    const std::string token = tenants::randomHexId(16);
    long long now = unixMs(), limit = static_cast<long long>(max);
    Status s = pool_->transaction("claiming due jobs", "", [&](soci::session& sql) {
      claims.clear();
      std::string id, tenant;
      Query q(sql,
              "UPDATE job_schedule s SET lease_owner = :o, lease_token = :tk,"
              " lease_until = clock_timestamp() + s.lease_ms * interval '1 millisecond' "
              "WHERE s.job_id IN (SELECT job_id FROM job_schedule"
              " WHERE next_run_ms >= 0 AND next_run_ms <= :now"
              " AND (lease_until IS NULL OR lease_until <= clock_timestamp())"
              " AND plugin = ANY(string_to_array(:ps, ' '))"
              " ORDER BY next_run_ms LIMIT :n FOR UPDATE SKIP LOCKED) "
              "RETURNING s.job_id, s.tenant_id");
      q.use(host_).use(token).use(now).use(plugin_list).use(limit).into(id).into(tenant);
      for (bool row = q.run(); row; row = q.next()) {
        JobClaim claim{id, token, Job()};
        claim.job.key.tenant = tenant;
        claims.push_back(std::move(claim));
      }
      return Status::ok();
    });
    if (!s) return s;
    // Each claimed firing's definition, read under its tenant's row-level security.
    std::vector<JobClaim> ready;
    for (auto& c : claims) {
      const std::string tenant = c.job.key.tenant;
      bool found = false;
      s = pool_->transaction("reading a claimed job", tenant, [&](soci::session& sql) {
        JobRow row;
        Query q(sql, std::string("SELECT ") + kJobColumns +
                         " FROM jobs j JOIN job_schedule s ON s.job_id = j.job_id"
                         " WHERE j.job_id = :id");
        row.bind(q);
        q.use(c.job_id);
        found = q.run();
        if (found) c.job = row.job();
        return Status::ok();
      });
      if (s && found) {
        c.job.state = JobState::kRunning;
        ready.push_back(std::move(c));
      } else if (s) {
        release(c);  // cancelled in between
      }
    }
    return ready;
  }

  Status complete(const JobClaim& c, const Job& j, bool erase) override {
    return pool_->transaction(
        what("record a run of", j.key), j.key.tenant, [&](soci::session& sql) {
          int mine = 0;
          if (!Query(
                   sql,
                   "SELECT 1 FROM job_schedule WHERE job_id = :id AND lease_token = :tk FOR UPDATE")
                   .use(c.job_id)
                   .use(c.token)
                   .into(mine)
                   .run()) {
            return Status::ok();  // cancelled, or the lease lapsed and another host has it
          }
          if (erase) {
            Query(sql, "DELETE FROM jobs WHERE job_id = :id").use(c.job_id).run();
            Query(sql, "DELETE FROM job_schedule WHERE job_id = :id").use(c.job_id).run();
            return Status::ok();
          }
          int attempts = static_cast<int>(j.attempts), dead = j.state == JobState::kDead ? 1 : 0;
          long long runs = static_cast<long long>(j.runs),
                    failures = static_cast<long long>(j.failures), last_run = j.last_run_ms,
                    next = j.next_run_ms;
          Query(sql,
                "UPDATE jobs SET attempts = :a, runs = :r, failures = :f, last_error = :le,"
                " last_run_ms = :lr, dead = CAST(:d AS INTEGER) <> 0 WHERE job_id = :id")
              .use(attempts)
              .use(runs)
              .use(failures)
              .use(j.last_error)
              .use(last_run)
              .use(dead)
              .use(c.job_id)
              .run();
          Query(sql,
                "UPDATE job_schedule SET next_run_ms = :nx, lease_owner = '', lease_token = '',"
                " lease_until = NULL WHERE job_id = :id")
              .use(next)
              .use(c.job_id)
              .run();
          return Status::ok();
        });
  }

  void release(const JobClaim& c) override {
    (void)pool_->transaction("releasing a job lease", "", [&](soci::session& sql) {
      Query(sql,
            "UPDATE job_schedule SET lease_owner = '', lease_token = '', lease_until = NULL"
            " WHERE job_id = :id AND lease_token = :tk")
          .use(c.job_id)
          .use(c.token)
          .run();
      return Status::ok();
    });
  }

 private:
  static std::string what(const char* verb, const JobKey& key) {
    return std::string(verb) + " job \"" + key.name + "\" of tenant \"" + key.tenant + "\"";
  }
  int64_t leaseMs(const Job& j) const {
    return static_cast<int64_t>(j.budget_ms ? j.budget_ms : kDefaultJobBudgetMs) + margin_ms_;
  }

  std::shared_ptr<PostgresPool> pool_;
  const std::string host_;
  const int64_t margin_ms_;
};

}  // namespace

std::string jobHostName() {
  char name[256] = {};
  if (gethostname(name, sizeof name - 1) != 0) name[0] = '\0';
  return std::string(name[0] ? name : "host") + "/" + std::to_string(getpid());
}

std::unique_ptr<SharedJobStore> openPostgresJobStore(std::shared_ptr<tenants::PostgresPool> pool,
                                                     std::string host, int64_t lease_margin_ms) {
  return std::make_unique<PostgresJobStore>(std::move(pool), std::move(host), lease_margin_ms);
}

}  // namespace trellis::kernel::services
