// SharedJobStore on PostgreSQL (the tables of the "jobs" schema component): a job's
// definition and history in `jobs` under FORCE ROW LEVEL SECURITY, its due time and lease
// in `job_schedule`. Hosts claim due firings with UPDATE ... WHERE job_id IN (SELECT ...
// FOR UPDATE SKIP LOCKED) RETURNING, so two hosts polling at once never take the same one.
//
//   auto store = openPostgresJobStore(pool, "db1.example/4242");
#pragma once

#include <memory>
#include <string>

#include "services/jobs/shared_job_store.h"

namespace trellis::tenants {
class PostgresPool;
}

namespace trellis::kernel::services {

// "<hostname>/<pid>": how leases name this process (unique among live hosts).
std::string jobHostName();

// `host` names this host in leases (shown as running_on); `lease_margin_ms` is added to a
// job's run budget for the lease, so a run within its budget never loses its lease.
std::unique_ptr<SharedJobStore> openPostgresJobStore(std::shared_ptr<tenants::PostgresPool> pool,
                                                     std::string host,
                                                     int64_t lease_margin_ms = 5000);

}  // namespace trellis::kernel::services
