// The kernel's jobs and timers: one timer thread for every job of every plugin and tenant
// (the lesson of Kong's timer exhaustion: plugins never get timers of their own), runs on
// a small bounded pool of its own (never an event loop, never the data plane's pool).
//
// A job belongs to (tenant, plugin, name). It fires once after a delay, every N ms, or on
// a 5-field UTC cron schedule. Durable jobs are persisted and survive restarts with
// at-least-once firing: a failed run is retried with exponential backoff (1 s, 2 s, 4 s …
// up to 5 min) until max_attempts, then the job is dead-lettered for an operator to see
// and retry. Non-durable jobs live in memory and are not retried.
//
// Durable jobs live in one of two places. A single host keeps them in memory and persists
// each change to a JobStore (SQLite beside its data). Hosts sharing PostgreSQL keep none in
// memory: a SharedJobStore holds them, and each host polls it and claims due firings with a
// lease, so a firing runs on exactly one host and a host that dies mid-run lets another
// retry it once the lease lapses.
//
// Native handlers cannot be pre-empted in process, so a run that overruns its budget keeps
// its pool thread until it returns. Two limits keep that from starving everyone else: a
// plugin has at most `max_runs_per_plugin` runs under way (its further firings wait), and
// the timer thread marks an overrunning run at once (last_error, overruns) rather than when
// it ends. The real fix is running native plugins in worker processes.
//
//   JobScheduler jobs({.store = std::move(store), .threads = 2});
//   jobs.start(tenants);
//   jobs.bind(plugin);                      // its job handler may run from now on
//   jobs.schedule(job, tenant.quotas.max_jobs);
#pragma once

#include <chrono>
#include <condition_variable>
#include <map>
#include <memory>
#include <mutex>
#include <optional>
#include <set>
#include <string>
#include <thread>
#include <vector>

#include "services/jobs/job.h"
#include "services/jobs/job_store.h"
#include "services/jobs/shared_job_store.h"
#include "trellis/kernel/exec/blocking_pool.h"
#include "trellis/status.hpp"

namespace trellis::tenants {
class TenantRegistry;
}
namespace trellis::kernel::runtime {
class PluginInstance;
}

namespace trellis::kernel::services {

inline constexpr uint32_t kDefaultJobBudgetMs = 30000;

class JobScheduler {
 public:
  struct Options {
    std::unique_ptr<JobStore> store;         // one host: durable jobs in memory, persisted here
    std::unique_ptr<SharedJobStore> shared;  // several hosts (wins over `store`)
    size_t threads = 2;
    size_t max_queued = 1024;
    uint32_t default_budget_ms = kDefaultJobBudgetMs;
    // Runs of one plugin under way at once; 0: threads - 1 (at least 1), so one plugin
    // whose handlers hang never holds every thread.
    size_t max_runs_per_plugin = 0;
    std::chrono::milliseconds poll_interval{250};  // shared store: how often to claim
  };
  explicit JobScheduler(Options options);
  ~JobScheduler();  // stop()
  JobScheduler(const JobScheduler&) = delete;
  JobScheduler& operator=(const JobScheduler&) = delete;

  // Loads the durable jobs and starts the timer thread.
  Status start(const tenants::TenantRegistry* tenants);
  // Stops firing and waits for running jobs.
  void stop();

  // `plugin` (active, with a job handler) runs its jobs from now on; a previous version's
  // runs finish first when it is unbound.
  void bind(runtime::PluginInstance& plugin);
  void unbind(const runtime::PluginInstance& plugin);

  // Adds or replaces the job `job.key`; QUOTA_EXCEEDED if the tenant would hold more than
  // `max_jobs`. The first run is at job.next_run_ms.
  Status schedule(Job job, std::optional<uint64_t> max_jobs);
  // NOT_FOUND if there is no such job.
  Status cancel(const JobKey& key);
  // Fires now (also a dead-lettered job, which is revived with its attempts reset).
  Status runNow(const JobKey& key);
  // Every job, ordered by tenant, plugin, name.
  std::vector<Job> list() const;
  // Runs that overran their budget since start.
  uint64_t overruns() const;

 private:
  struct Running {  // a run under way, watched for overrunning its budget
    JobKey key;
    std::string plugin;
    std::chrono::steady_clock::time_point deadline;
    uint32_t budget_ms = 0;
    bool overran = false;
  };

  void timerLoop();
  void pollLoop();       // shared store: claims due firings
  void watchOverruns();  // with mu_ held
  void fire(const JobKey& key);
  void run(const JobKey& key);
  void runClaimed(const JobClaim& claim);
  // Runs `job` on this thread; the outcome (a run over budget is a TIMEOUT).
  Status execute(const Job& job);
  // Applies a run's outcome: next time, retry with backoff, or dead letter.
  void finish(const JobKey& key, int64_t started_ms, Status outcome);
  size_t perPluginCap() const;
  void arm(const Job& job);     // with mu_ held
  void disarm(const Job& job);  // with mu_ held
  void persist(const Job& job);

  Options options_;
  const tenants::TenantRegistry* tenants_ = nullptr;
  exec::BlockingPool pool_;
  mutable std::mutex mu_;
  std::condition_variable wake_;
  std::condition_variable idle_;  // a run ended (unbind waits for its plugin's)
  std::map<JobKey, Job> jobs_;
  std::set<std::pair<int64_t, JobKey>> timers_;  // (due ms, job): the timer queue
  std::map<std::string, runtime::PluginInstance*, std::less<>> active_;  // by plugin id
  std::map<const runtime::PluginInstance*, int> running_;  // runs under way per instance
  std::map<std::string, size_t, std::less<>> in_flight_;   // submitted runs per plugin id
  size_t in_flight_total_ = 0;
  std::map<uint64_t, Running> watched_;  // by run number
  uint64_t next_run_number_ = 0;
  uint64_t overruns_ = 0;
  bool stopping_ = false;
  std::thread timer_;
  std::thread poller_;
};

// Unix milliseconds now.
int64_t unixMs();

// `job` after a run that started at `started_ms` ended with `outcome` at `now_ms`: its
// counters, retry with backoff or dead letter (durable), or its next time. False when
// nothing remains to run (a one-shot that ran, a cron that never matches again).
bool advanceJob(Job& job, int64_t started_ms, int64_t now_ms, const Status& outcome);

}  // namespace trellis::kernel::services
