// Host-table entry points for jobs and timers (ABI 1.2): job_handler, job_schedule,
// job_cancel.
#pragma once

#include "trellis/plugin.h"

namespace trellis::kernel::services {

inline constexpr size_t kMaxJobPayload = 64 * 1024;
inline constexpr uint64_t kMinJobIntervalMs = 1000;
inline constexpr uint32_t kMaxJobAttempts = 100;
inline constexpr uint32_t kMaxJobBudgetMs = 3600 * 1000;

trellis_status jobHandler(const trellis_ctx* ctx, trellis_job_fn fn, void* user);
trellis_status jobSchedule(const trellis_ctx* ctx, const trellis_job_spec* spec);
trellis_status jobCancel(const trellis_ctx* ctx, trellis_str name);

}  // namespace trellis::kernel::services
