#include "services/jobs/scheduler.h"

#include <spdlog/spdlog.h>

#include <algorithm>

#include "runtime/call_context.h"
#include "services/jobs/cron.h"
#include "services/trace/trace_context.h"
#include "trellis/tenants/registry.h"

namespace trellis::kernel::services {
namespace {

constexpr int64_t kRetryBaseMs = 1000;
constexpr int64_t kRetryMaxMs = 5 * 60 * 1000;
constexpr int64_t kPoolFullRetryMs = 1000;

int64_t backoffMs(uint32_t attempts) {
  int64_t delay = kRetryBaseMs << std::min<uint32_t>(attempts - 1, 20);
  return std::min(delay, kRetryMaxMs);
}

}  // namespace

int64_t unixMs() {
  return std::chrono::duration_cast<std::chrono::milliseconds>(
             std::chrono::system_clock::now().time_since_epoch())
      .count();
}

JobScheduler::JobScheduler(Options options)
    : options_(std::move(options)), pool_(options_.threads, options_.max_queued) {}

JobScheduler::~JobScheduler() {
  stop();
}

Status JobScheduler::start(const tenants::TenantRegistry* tenants) {
  tenants_ = tenants;
  if (options_.store) {
    auto stored = options_.store->loadAll();
    if (!stored) return stored.status();
    std::lock_guard lock(mu_);
    for (auto& job : *stored) {
      // A run that was under way when the host stopped fires again: at least once.
      if (job.state != JobState::kDead) arm(job);
      jobs_.emplace(job.key, std::move(job));
    }
  }
  timer_ = std::thread([this] { timerLoop(); });
  return Status::ok();
}

void JobScheduler::stop() {
  {
    std::lock_guard lock(mu_);
    if (stopping_) return;
    stopping_ = true;
  }
  wake_.notify_all();
  if (timer_.joinable()) timer_.join();
}

void JobScheduler::bind(runtime::PluginInstance& plugin) {
  std::lock_guard lock(mu_);
  active_[plugin.id()] = &plugin;
  wake_.notify_all();
}

void JobScheduler::unbind(const runtime::PluginInstance& plugin) {
  std::unique_lock lock(mu_);
  if (auto it = active_.find(plugin.id()); it != active_.end() && it->second == &plugin) {
    active_.erase(it);
  }
  idle_.wait(lock, [&] { return running_[&plugin] == 0; });
  running_.erase(&plugin);
}

Status JobScheduler::schedule(Job job, std::optional<uint64_t> max_jobs) {
  if (job.durable && !options_.store) {
    return Status::unavailable("durable jobs need a job store, which this host has none of");
  }
  std::lock_guard lock(mu_);
  auto existing = jobs_.find(job.key);
  if (max_jobs && existing == jobs_.end()) {
    uint64_t held = std::count_if(jobs_.begin(), jobs_.end(), [&](const auto& entry) {
      return entry.first.tenant == job.key.tenant;
    });
    if (held >= *max_jobs) {
      return Status::quotaExceeded("tenant " + job.key.tenant + " already has " +
                                   std::to_string(held) + " jobs, its max_jobs quota");
    }
  }
  if (existing != jobs_.end()) {
    disarm(existing->second);
    job.runs = existing->second.runs;
    job.failures = existing->second.failures;
    job.last_error = existing->second.last_error;
    job.last_run_ms = existing->second.last_run_ms;
    if (existing->second.state == JobState::kRunning) job.state = JobState::kRunning;
  }
  if (job.durable) {
    if (Status s = options_.store->put(job); !s) return s;
  }
  if (job.state != JobState::kRunning) arm(job);
  jobs_[job.key] = std::move(job);
  wake_.notify_all();
  return Status::ok();
}

Status JobScheduler::cancel(const JobKey& key) {
  std::lock_guard lock(mu_);
  auto it = jobs_.find(key);
  if (it == jobs_.end()) return Status::notFound("no job \"" + key.name + "\"");
  if (it->second.durable) {
    if (Status s = options_.store->remove(key); !s) return s;
  }
  disarm(it->second);
  jobs_.erase(it);
  return Status::ok();
}

Status JobScheduler::runNow(const JobKey& key) {
  std::lock_guard lock(mu_);
  auto it = jobs_.find(key);
  if (it == jobs_.end()) return Status::notFound("no job \"" + key.name + "\"");
  Job& job = it->second;
  if (job.state == JobState::kRunning) return Status::conflict("job " + key.name + " is running");
  disarm(job);
  if (job.state == JobState::kDead) job.attempts = 0;  // a retry from the dead letter
  job.state = JobState::kScheduled;
  job.next_run_ms = unixMs();
  arm(job);
  if (job.durable) persist(job);
  wake_.notify_all();
  return Status::ok();
}

std::vector<Job> JobScheduler::list() const {
  std::lock_guard lock(mu_);
  std::vector<Job> out;
  out.reserve(jobs_.size());
  for (const auto& [key, job] : jobs_) out.push_back(job);
  return out;
}

void JobScheduler::arm(const Job& job) {
  if (job.next_run_ms >= 0) timers_.emplace(job.next_run_ms, job.key);
}

void JobScheduler::disarm(const Job& job) {
  timers_.erase({job.next_run_ms, job.key});
}

void JobScheduler::persist(const Job& job) {
  if (Status s = options_.store->put(job); !s) {
    spdlog::error("job {}/{}/{}: {}", job.key.tenant, job.key.plugin, job.key.name, s.message());
  }
}

void JobScheduler::timerLoop() {
  std::unique_lock lock(mu_);
  while (!stopping_) {
    if (timers_.empty()) {
      wake_.wait(lock);
      continue;
    }
    auto [due, key] = *timers_.begin();
    const int64_t now = unixMs();
    if (due > now) {
      wake_.wait_for(lock, std::chrono::milliseconds(std::min<int64_t>(due - now, 1000)));
      continue;
    }
    timers_.erase(timers_.begin());
    auto it = jobs_.find(key);
    if (it == jobs_.end()) continue;
    it->second.state = JobState::kRunning;
    lock.unlock();
    fire(key);
    lock.lock();
  }
}

void JobScheduler::fire(const JobKey& key) {
  if (pool_.trySubmit([this, key] { run(key); })) return;
  // The pool is full: try again shortly rather than queue without bound.
  std::lock_guard lock(mu_);
  auto it = jobs_.find(key);
  if (it == jobs_.end()) return;
  it->second.state = JobState::kScheduled;
  it->second.next_run_ms = unixMs() + kPoolFullRetryMs;
  arm(it->second);
  wake_.notify_all();
}

void JobScheduler::run(const JobKey& key) {
  Job job;
  runtime::PluginInstance* plugin = nullptr;
  {
    std::lock_guard lock(mu_);
    auto it = jobs_.find(key);
    if (it == jobs_.end()) return;
    job = it->second;
    if (auto p = active_.find(key.plugin); p != active_.end()) {
      plugin = p->second;
      ++running_[plugin];
    }
  }
  const int64_t started = unixMs();
  Status outcome = Status::ok();
  std::shared_ptr<const tenants::TenantView> tenant =
      tenants_ ? tenants_->view(key.tenant) : nullptr;
  if (!plugin || !plugin->job_fn) {
    outcome = Status::unavailable("plugin " + key.plugin + " is not active");
  } else if (!tenant || !tenant->hasPlugin(key.plugin)) {
    outcome = Status::unavailable("tenant " + key.tenant + " no longer enables " + key.plugin);
  } else if (!plugin->manifest().hasCapability("jobs") ||
             !tenant->grantsCapability(key.plugin, "jobs")) {
    outcome = Status::permissionDenied("capability \"jobs\" is not granted to " + key.plugin +
                                       " by tenant " + key.tenant);
  } else {
    auto origin = TraceContext::restore(job.traceparent, job.tracestate);
    const TraceContext trace = origin ? origin->child() : TraceContext::root();
    trellis_ctx ctx;
    ctx.plugin = plugin;
    ctx.tenant = tenant.get();
    ctx.trace = &trace;
    ctx.phase = runtime::Phase::kJob;
    trellis_status s = TRELLIS_INTERNAL;
    const auto t0 = std::chrono::steady_clock::now();
    try {
      runtime::CallScope scope(&ctx);
      s = plugin->job_fn(plugin->job_user, &ctx, trellis_str{key.name.data(), key.name.size()},
                         trellis_str{job.payload.data(), job.payload.size()});
    } catch (...) {  // a plugin broke the ABI rule; contain it anyway
      ctx.error = "exception escaped the job handler";
    }
    const auto took = std::chrono::duration_cast<std::chrono::milliseconds>(
        std::chrono::steady_clock::now() - t0);
    const uint32_t budget = job.budget_ms ? job.budget_ms : options_.default_budget_ms;
    if (s != TRELLIS_OK) {
      outcome = Status(static_cast<StatusCode>(s), ctx.error.empty() ? "failed" : ctx.error);
    } else if (took.count() > budget) {
      outcome = Status::timeout("the run took " + std::to_string(took.count()) +
                                " ms, over its budget of " + std::to_string(budget) + " ms");
    }
  }
  if (plugin) {
    std::lock_guard lock(mu_);
    --running_[plugin];
  }
  idle_.notify_all();
  finish(key, started, std::move(outcome));
}

void JobScheduler::finish(const JobKey& key, int64_t started_ms, Status outcome) {
  std::lock_guard lock(mu_);
  auto it = jobs_.find(key);
  if (it == jobs_.end()) return;  // cancelled while it ran
  Job& job = it->second;
  const int64_t now = unixMs();
  job.runs++;
  job.last_run_ms = started_ms;
  job.state = JobState::kScheduled;
  if (!outcome) {
    job.failures++;
    job.last_error = outcome.message();
    spdlog::warn("job tenant={} plugin={} name={} failed: {}", key.tenant, key.plugin, key.name,
                 outcome.message());
    if (job.durable) {
      if (++job.attempts < job.max_attempts) {
        job.next_run_ms = now + backoffMs(job.attempts);
      } else {
        job.state = JobState::kDead;  // dead letter: kept for the operator to see and retry
        job.next_run_ms = -1;
      }
      persist(job);
      arm(job);
      wake_.notify_all();
      return;
    }
  } else {
    job.last_error.clear();
  }
  job.attempts = 0;
  switch (job.kind) {
    case JobKind::kOnce: job.next_run_ms = -1; break;
    case JobKind::kEvery:
      job.next_run_ms = std::max(now, started_ms + static_cast<int64_t>(job.interval_ms));
      break;
    case JobKind::kCron: {
      auto cron = CronSchedule::parse(job.cron);
      job.next_run_ms = cron ? cron->next(now) : -1;
      break;
    }
  }
  if (job.next_run_ms < 0) {
    // A one-shot that ran (or a cron that never matches again): done.
    if (job.durable) (void)options_.store->remove(key);
    jobs_.erase(it);
    return;
  }
  if (job.durable) persist(job);
  arm(job);
  wake_.notify_all();  // the timer may be waiting with nothing armed
}

}  // namespace trellis::kernel::services
