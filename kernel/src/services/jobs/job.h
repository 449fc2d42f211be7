// A scheduled job as the kernel keeps it: who owns it (tenant, plugin), when it runs, and
// what happened so far. Durable jobs are persisted in this shape (job_store.h).
#pragma once

#include <cstdint>
#include <string>

namespace trellis::kernel::services {

enum class JobKind { kOnce = 0, kEvery = 1, kCron = 2 };
enum class JobState { kScheduled, kRunning, kDead };

std::string_view jobKindName(JobKind k);
std::string_view jobStateName(JobState s);

struct JobKey {
  std::string tenant;
  std::string plugin;
  std::string name;
  friend auto operator<=>(const JobKey&, const JobKey&) = default;
};

struct Job {
  JobKey key;
  JobKind kind = JobKind::kOnce;
  uint64_t interval_ms = 0;  // kEvery
  std::string cron;          // kCron
  std::string payload;
  bool durable = false;
  uint32_t max_attempts = 5;  // durable: runs of one firing before it is dead-lettered
  uint32_t budget_ms = 0;
  std::string traceparent;  // of the call that scheduled it; runs are spans of that trace
  std::string tracestate;

  int64_t next_run_ms = -1;  // -1: no further run
  uint32_t attempts = 0;     // failed runs of the current firing
  uint64_t runs = 0;
  uint64_t failures = 0;
  std::string last_error;
  int64_t last_run_ms = 0;
  JobState state = JobState::kScheduled;
  // Scheduled again while it ran (e.g. by its own run): the run's end must not retire it.
  bool replaced_while_running = false;
  std::string running_on;  // shared store: the host holding the firing's lease
  uint64_t overruns = 0;   // runs past their budget seen by this host (not persisted)
};

}  // namespace trellis::kernel::services
