#include "services/jobs/job_abi.h"

#include <algorithm>
#include <cstddef>

#include "services/core/host_call.h"
#include "services/jobs/cron.h"
#include "services/jobs/scheduler.h"
#include "services/trace/trace_context.h"
#include "trellis/kernel/storage/kv_store.h"

namespace trellis::kernel::services {
namespace {

bool isJobName(std::string_view s) {
  return !s.empty() && s.size() <= 128 && std::all_of(s.begin(), s.end(), [](char c) {
    return (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9') || c == '.' ||
           c == '_' || c == ':' || c == '-';
  });
}

Status invalidField(std::string_view field, std::string_view why) {
  return Status::invalid("job spec " + std::string(field) + ": " + std::string(why));
}

// The job `spec` describes, with its first run; INVALID names the field at fault.
Result<Job> jobOf(const trellis_job_spec* spec, int64_t now) {
  if (!spec) return Status::invalid("job_schedule needs a spec");
  if (spec->struct_size < offsetof(trellis_job_spec, budget_ms) + sizeof(spec->budget_ms)) {
    return invalidField("struct_size", "is smaller than the ABI 1.2 trellis_job_spec");
  }
  Job job;
  job.key.name.assign(view(spec->name));
  if (!isJobName(job.key.name)) {
    return invalidField("name", "must be 1-128 of A-Z a-z 0-9 . _ : -");
  }
  if (spec->payload.len > kMaxJobPayload) return invalidField("payload", "exceeds 64 KiB");
  job.payload.assign(view(spec->payload));
  if (spec->flags & ~TRELLIS_JOB_DURABLE) return invalidField("flags", "has unknown bits");
  job.durable = spec->flags & TRELLIS_JOB_DURABLE;
  if (spec->max_attempts > kMaxJobAttempts) return invalidField("max_attempts", "exceeds 100");
  job.max_attempts = spec->max_attempts ? spec->max_attempts : 5;
  if (spec->budget_ms > kMaxJobBudgetMs) return invalidField("budget_ms", "exceeds one hour");
  job.budget_ms = spec->budget_ms;
  switch (spec->kind) {
    case TRELLIS_JOB_ONCE:
      job.kind = JobKind::kOnce;
      job.next_run_ms = now + static_cast<int64_t>(spec->delay_ms);
      break;
    case TRELLIS_JOB_EVERY:
      if (spec->interval_ms < kMinJobIntervalMs) {
        return invalidField("interval_ms", "must be at least 1000");
      }
      job.kind = JobKind::kEvery;
      job.interval_ms = spec->interval_ms;
      job.next_run_ms =
          now + static_cast<int64_t>(spec->delay_ms ? spec->delay_ms : spec->interval_ms);
      break;
    case TRELLIS_JOB_CRON: {
      auto cron = CronSchedule::parse(view(spec->cron));
      if (!cron) return invalidField("cron", cron.status().message());
      job.kind = JobKind::kCron;
      job.cron = cron->text();
      job.next_run_ms = cron->next(now);
      if (job.next_run_ms < 0) return invalidField("cron", "matches no time in the next 5 years");
      break;
    }
    default: return invalidField("kind", "must be TRELLIS_JOB_ONCE, _EVERY or _CRON");
  }
  return job;
}

// The tenant a job of this ctx belongs to: the ctx's, or a system plugin's own scope when
// it has none. nullptr (with *refused set) for a tenant plugin without a tenant.
trellis_ctx* jobCall(const trellis_ctx* c, std::string_view call, trellis_status* refused) {
  trellis_ctx* ctx = enter(c, "jobs", call, Tenant::kOptional, refused);
  if (ctx && !ctx->tenant && !ctx->plugin->isSystemPlugin()) {
    ctx->error = std::string(call) +
                 " needs a tenant: call it from a request, job, service or event handler "
                 "(only a system plugin has jobs of its own outside tenants)";
    *refused = TRELLIS_INVALID;
    return nullptr;
  }
  return ctx;
}

std::string jobTenantOf(const trellis_ctx* ctx) {
  return ctx->tenant ? ctx->tenant->id : std::string(storage::kSystemScopeTenant);
}

}  // namespace

trellis_status jobHandler(const trellis_ctx* c, trellis_job_fn fn, void* user) {
  if (trellis_status s = admitCall(c); s != TRELLIS_OK) return s;
  trellis_ctx* ctx = live(c);
  if (ctx->phase != runtime::Phase::kInit) {
    return fail(ctx, Status::invalid("job_handler outside on_init"));
  }
  if (!granted(ctx, "jobs")) return TRELLIS_PERMISSION_DENIED;
  if (!fn) return fail(ctx, Status::invalid("job_handler needs a handler"));
  ctx->plugin->job_fn = fn;
  ctx->plugin->job_user = user;
  return TRELLIS_OK;
}

trellis_status jobSchedule(const trellis_ctx* c, const trellis_job_spec* spec) {
  trellis_status refused = TRELLIS_OK;
  trellis_ctx* ctx = jobCall(c, "job_schedule", &refused);
  if (!ctx) return refused;
  JobScheduler* jobs = ctx->plugin->services().jobs;
  if (!jobs) return fail(ctx, Status::unavailable("this host runs no jobs"));
  if (!ctx->plugin->job_fn) {
    return fail(ctx, Status::invalid("set a job handler with job_handler in on_init first"));
  }
  auto job = jobOf(spec, unixMs());
  if (!job) return fail(ctx, job.status());
  job->key.tenant = jobTenantOf(ctx);
  job->key.plugin = ctx->plugin->id();
  if (ctx->trace) {
    job->traceparent = ctx->trace->traceparent();
    job->tracestate = ctx->trace->tracestate();
  }
  // A system plugin's own jobs count against no tenant's quota.
  const std::optional<uint64_t> max_jobs =
      ctx->tenant ? ctx->tenant->quotas.max_jobs : std::nullopt;
  Status s = jobs->schedule(std::move(*job), max_jobs);
  if (s.code() == StatusCode::kQuotaExceeded) {
    return refuseQuota(ctx, "max_jobs", max_jobs.value_or(0), s.message());
  }
  return s ? TRELLIS_OK : fail(ctx, s);
}

trellis_status jobCancel(const trellis_ctx* c, trellis_str name) {
  trellis_status refused = TRELLIS_OK;
  trellis_ctx* ctx = jobCall(c, "job_cancel", &refused);
  if (!ctx) return refused;
  JobScheduler* jobs = ctx->plugin->services().jobs;
  if (!jobs) return fail(ctx, Status::unavailable("this host runs no jobs"));
  Status s = jobs->cancel({jobTenantOf(ctx), ctx->plugin->id(), std::string(view(name))});
  return s ? TRELLIS_OK : fail(ctx, s);
}

}  // namespace trellis::kernel::services
