// Durable jobs shared by several hosts (PostgreSQL). Unlike JobStore, which a single host
// loads at start and keeps in memory, this store is the only copy: every host polls it for
// due firings and claims each with a lease, so a firing runs on exactly one host; a host
// that dies mid-run lets its lease lapse and another host runs the firing again (at least
// once).
//
//   auto claims = store.claimDue(free_threads, active_plugin_ids);
//   for (auto& c : *claims) { Status outcome = run(c.job); store.complete(c, updated); }
#pragma once

#include <optional>
#include <string>
#include <vector>

#include "services/jobs/job.h"
#include "trellis/status.hpp"

namespace trellis::kernel::services {

// A firing this host holds the lease of; `job` as stored when it was claimed.
struct JobClaim {
  std::string job_id;
  std::string token;
  Job job;
};

class SharedJobStore {
 public:
  virtual ~SharedJobStore() = default;
  // Inserts or replaces the job's definition (its history is kept). QUOTA_EXCEEDED when it
  // is new and the tenant already holds `max_new` durable jobs.
  virtual Status put(const Job& job, std::optional<uint64_t> max_new) = 0;
  // NOT_FOUND if there is no such job.
  virtual Status remove(const JobKey& key) = 0;
  // Due now, also from the dead letter (attempts reset). CONFLICT while a host runs it.
  virtual Status runNow(const JobKey& key) = 0;
  virtual Result<std::vector<Job>> list() = 0;
  virtual Result<uint64_t> count(const std::string& tenant) = 0;
  // Leases up to `max` due firings of `plugins` to this host.
  virtual Result<std::vector<JobClaim>> claimDue(size_t max,
                                                 const std::vector<std::string>& plugins) = 0;
  // Writes the outcome (`job` with its next run, or `erase` for a finished one-shot) and
  // ends the lease, unless the lease lapsed and another host took the firing: then this
  // run's outcome is dropped (the other run's counts).
  virtual Status complete(const JobClaim& claim, const Job& job, bool erase) = 0;
  // Gives a claim back unrun (no pool thread was free).
  virtual void release(const JobClaim& claim) = 0;
};

}  // namespace trellis::kernel::services
