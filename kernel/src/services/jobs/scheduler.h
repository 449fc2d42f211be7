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
#include "trellis/kernel/exec/blocking_pool.h"
#include "trellis/status.hpp"

namespace trellis::tenants {
class TenantRegistry;
}
namespace trellis::kernel::runtime {
class PluginInstance;
}

namespace trellis::kernel::services {

class JobScheduler {
 public:
  struct Options {
    std::unique_ptr<JobStore> store;  // null: durable jobs refused (UNAVAILABLE)
    size_t threads = 2;
    size_t max_queued = 1024;
    uint32_t default_budget_ms = 30000;
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

 private:
  void timerLoop();
  void fire(const JobKey& key);
  void run(const JobKey& key);
  // Applies a run's outcome: next time, retry with backoff, or dead letter.
  void finish(const JobKey& key, int64_t started_ms, Status outcome);
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
  bool stopping_ = false;
  std::thread timer_;
};

// Unix milliseconds now.
int64_t unixMs();

}  // namespace trellis::kernel::services
