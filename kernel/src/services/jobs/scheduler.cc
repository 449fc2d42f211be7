#include "services/jobs/scheduler.h"

#include <spdlog/spdlog.h>

#include <algorithm>

#include "runtime/call_context.h"
#include "services/jobs/cron.h"
#include "services/trace/trace_context.h"
#include "trellis/kernel/storage/kv_store.h"
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

std::string overrunMessage(uint32_t budget_ms) {
  return "the run overran its budget of " + std::to_string(budget_ms) +
         " ms and still holds its thread (native handlers cannot be pre-empted in process)";
}

}  // namespace

int64_t unixMs() {
  return std::chrono::duration_cast<std::chrono::milliseconds>(
             std::chrono::system_clock::now().time_since_epoch())
      .count();
}

bool advanceJob(Job& job, int64_t started_ms, int64_t now, const Status& outcome) {
  job.runs++;
  job.last_run_ms = started_ms;
  job.state = JobState::kScheduled;
  job.running_on.clear();
  if (!outcome) {
    job.failures++;
    job.last_error = outcome.message();
    if (job.durable) {
      if (++job.attempts < job.max_attempts) {
        job.next_run_ms = now + backoffMs(job.attempts);
      } else {
        job.state = JobState::kDead;  // dead letter: kept for the operator to see and retry
        job.next_run_ms = -1;
      }
      return true;
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
  return job.next_run_ms >= 0;
}

JobScheduler::JobScheduler(Options options)
    : options_(std::move(options)), pool_(options_.threads, options_.max_queued) {}

JobScheduler::~JobScheduler() {
  stop();
}

size_t JobScheduler::perPluginCap() const {
  if (options_.max_runs_per_plugin) return options_.max_runs_per_plugin;
  return std::max<size_t>(1, options_.threads > 1 ? options_.threads - 1 : 1);
}

Status JobScheduler::start(const tenants::TenantRegistry* tenants) {
  tenants_ = tenants;
  if (options_.store && !options_.shared) {
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
  if (options_.shared) poller_ = std::thread([this] { pollLoop(); });
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
  if (poller_.joinable()) poller_.join();
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
  if (job.durable && !options_.store && !options_.shared) {
    return Status::unavailable("durable jobs need a job store, which this host has none of");
  }
  if (options_.shared) {
    // Durable jobs live in the shared store, the others here; a key is in one place only.
    uint64_t local = 0;
    {
      std::lock_guard lock(mu_);
      local = std::count_if(jobs_.begin(), jobs_.end(), [&](const auto& entry) {
        return entry.first.tenant == job.key.tenant && entry.first != job.key;
      });
    }
    if (job.durable) {
      std::optional<uint64_t> room;
      if (max_jobs) room = *max_jobs > local ? *max_jobs - local : 0;
      if (Status s = options_.shared->put(job, room); !s) return s;
      std::lock_guard lock(mu_);
      if (auto it = jobs_.find(job.key); it != jobs_.end()) {
        disarm(it->second);
        jobs_.erase(it);
      }
      wake_.notify_all();
      return Status::ok();
    }
    if (max_jobs) {
      auto durable = options_.shared->count(job.key.tenant);
      if (!durable) return durable.status();
      if (local + *durable >= *max_jobs) {
        return Status::quotaExceeded("tenant " + job.key.tenant + " already has " +
                                     std::to_string(local + *durable) +
                                     " jobs, its max_jobs quota");
      }
    }
    if (Status s = options_.shared->remove(job.key); !s && s.code() != StatusCode::kNotFound) {
      return s;
    }
    max_jobs.reset();  // counted above, with the shared store's jobs
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
    job.overruns = existing->second.overruns;
    if (existing->second.state == JobState::kRunning) {
      job.state = JobState::kRunning;
      job.replaced_while_running = true;  // armed when the run ends (finish)
    }
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
  {
    std::lock_guard lock(mu_);
    auto it = jobs_.find(key);
    if (it != jobs_.end()) {
      if (it->second.durable) {
        if (Status s = options_.store->remove(key); !s) return s;
      }
      disarm(it->second);
      jobs_.erase(it);
      return Status::ok();
    }
  }
  if (options_.shared) return options_.shared->remove(key);
  return Status::notFound("no job \"" + key.name + "\"");
}

Status JobScheduler::runNow(const JobKey& key) {
  {
    std::lock_guard lock(mu_);
    auto it = jobs_.find(key);
    if (it != jobs_.end()) {
      Job& job = it->second;
      if (job.state == JobState::kRunning) {
        return Status::conflict("job " + key.name + " is running");
      }
      disarm(job);
      if (job.state == JobState::kDead) job.attempts = 0;  // a retry from the dead letter
      job.state = JobState::kScheduled;
      job.next_run_ms = unixMs();
      arm(job);
      if (job.durable) persist(job);
      wake_.notify_all();
      return Status::ok();
    }
  }
  if (options_.shared) {
    Status s = options_.shared->runNow(key);
    wake_.notify_all();
    return s;
  }
  return Status::notFound("no job \"" + key.name + "\"");
}

std::vector<Job> JobScheduler::list() const {
  std::vector<Job> out;
  {
    std::lock_guard lock(mu_);
    out.reserve(jobs_.size());
    for (const auto& [key, job] : jobs_) out.push_back(job);
  }
  if (options_.shared) {
    auto shared = options_.shared->list();
    if (!shared) {
      spdlog::error("jobs: cannot list the shared durable jobs: {}", shared.status().message());
    } else {
      for (auto& job : *shared) out.push_back(std::move(job));
      std::sort(out.begin(), out.end(), [](const Job& a, const Job& b) { return a.key < b.key; });
    }
  }
  return out;
}

uint64_t JobScheduler::overruns() const {
  std::lock_guard lock(mu_);
  return overruns_;
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

void JobScheduler::watchOverruns() {
  const auto now = std::chrono::steady_clock::now();
  for (auto& [number, r] : watched_) {
    if (r.overran || now < r.deadline) continue;
    r.overran = true;
    ++overruns_;
    spdlog::warn("job tenant={} plugin={} name={}: {}", r.key.tenant, r.key.plugin, r.key.name,
                 overrunMessage(r.budget_ms));
    if (auto it = jobs_.find(r.key); it != jobs_.end()) {
      it->second.overruns++;
      it->second.last_error = overrunMessage(r.budget_ms);
    }
  }
}

void JobScheduler::timerLoop() {
  std::unique_lock lock(mu_);
  while (!stopping_) {
    watchOverruns();
    if (timers_.empty()) {
      wake_.wait_for(lock, std::chrono::milliseconds(1000));
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

void JobScheduler::pollLoop() {
  std::unique_lock lock(mu_);
  while (!stopping_) {
    const size_t cap = perPluginCap();
    const size_t free =
        options_.threads > in_flight_total_ ? options_.threads - in_flight_total_ : 0;
    std::vector<std::string> plugins;
    size_t room = 0;  // runs the plugins may still start
    for (const auto& [id, plugin] : active_) {
      auto n = in_flight_.find(id);
      const size_t busy = n == in_flight_.end() ? 0 : n->second;
      if (busy < cap) {
        plugins.push_back(id);
        room += cap - busy;
      }
    }
    if (free > 0 && !plugins.empty()) {
      lock.unlock();
      auto claims = options_.shared->claimDue(std::min(free, room), plugins);
      lock.lock();
      if (!claims) {
        spdlog::error("jobs: cannot claim due jobs: {}", claims.status().message());
      } else {
        for (auto& claim : *claims) {
          size_t& n = in_flight_[claim.job.key.plugin];
          if (n >= cap || stopping_) {
            lock.unlock();
            options_.shared->release(claim);
            lock.lock();
            continue;
          }
          ++n;
          ++in_flight_total_;
          if (!pool_.trySubmit([this, claim] { runClaimed(claim); })) {
            --n;
            --in_flight_total_;
            lock.unlock();
            options_.shared->release(claim);
            lock.lock();
          }
        }
      }
    }
    wake_.wait_for(lock, options_.poll_interval);
  }
}

void JobScheduler::fire(const JobKey& key) {
  {
    std::lock_guard lock(mu_);
    size_t& n = in_flight_[key.plugin];
    if (n < perPluginCap()) {
      ++n;
      ++in_flight_total_;
      if (pool_.trySubmit([this, key] { run(key); })) return;
      --n;
      --in_flight_total_;
    }
  }
  // The pool is full, or the plugin has its most runs under way: try again shortly
  // rather than queue without bound.
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
  bool found = false;
  {
    std::lock_guard lock(mu_);
    auto it = jobs_.find(key);
    if (it != jobs_.end()) {
      job = it->second;
      found = true;
    }
  }
  const int64_t started = unixMs();
  Status outcome = found ? execute(job) : Status::ok();
  {
    std::lock_guard lock(mu_);
    --in_flight_[key.plugin];
    --in_flight_total_;
  }
  if (found) finish(key, started, std::move(outcome));
}

void JobScheduler::runClaimed(const JobClaim& claim) {
  const int64_t started = unixMs();
  Status outcome = execute(claim.job);
  Job job = claim.job;
  const bool keep = advanceJob(job, started, unixMs(), outcome);
  if (!outcome) {
    spdlog::warn("job tenant={} plugin={} name={} failed: {}", job.key.tenant, job.key.plugin,
                 job.key.name, outcome.message());
  }
  if (Status s = options_.shared->complete(claim, job, !keep); !s) {
    // The lease lapses and another host (or this one) runs the firing again.
    spdlog::error("job tenant={} plugin={} name={}: cannot record the run: {}", job.key.tenant,
                  job.key.plugin, job.key.name, s.message());
  }
  {
    std::lock_guard lock(mu_);
    --in_flight_[claim.job.key.plugin];
    --in_flight_total_;
  }
  wake_.notify_all();  // a thread is free: claim again
}

Status JobScheduler::execute(const Job& job) {
  const JobKey& key = job.key;
  runtime::PluginInstance* plugin = nullptr;
  const uint32_t budget = job.budget_ms ? job.budget_ms : options_.default_budget_ms;
  uint64_t number = 0;
  {
    std::lock_guard lock(mu_);
    if (auto p = active_.find(key.plugin); p != active_.end()) {
      plugin = p->second;
      ++running_[plugin];
    }
    number = ++next_run_number_;
    watched_[number] = {key, key.plugin,
                        std::chrono::steady_clock::now() + std::chrono::milliseconds(budget),
                        budget};
  }
  Status outcome = Status::ok();
  // A system plugin's own jobs run with no tenant, while the operator's grant stands.
  const bool system_job = key.tenant == storage::kSystemScopeTenant;
  std::shared_ptr<const tenants::TenantView> tenant =
      tenants_ && !system_job ? tenants_->view(key.tenant) : nullptr;
  if (!plugin || !plugin->job_fn) {
    outcome = Status::unavailable("plugin " + key.plugin + " is not active");
  } else if (system_job && !plugin->isSystemPlugin()) {
    outcome = Status::permissionDenied(key.plugin + " no longer holds the system scope");
  } else if (!system_job && (!tenant || !tenant->hasPlugin(key.plugin))) {
    outcome = Status::unavailable("tenant " + key.tenant + " no longer enables " + key.plugin);
  } else if (!plugin->manifest().hasCapability("jobs") ||
             (!system_job && !tenant->grantsCapability(key.plugin, "jobs"))) {
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
    if (s != TRELLIS_OK) {
      outcome = Status(static_cast<StatusCode>(s), ctx.error.empty() ? "failed" : ctx.error);
    } else if (took.count() > budget) {
      outcome = Status::timeout("the run took " + std::to_string(took.count()) +
                                " ms, over its budget of " + std::to_string(budget) + " ms");
    }
  }
  {
    std::lock_guard lock(mu_);
    watched_.erase(number);
    if (plugin) --running_[plugin];
  }
  idle_.notify_all();
  return outcome;
}

void JobScheduler::finish(const JobKey& key, int64_t started_ms, Status outcome) {
  std::lock_guard lock(mu_);
  auto it = jobs_.find(key);
  if (it == jobs_.end()) return;  // cancelled while it ran
  Job& job = it->second;
  if (!outcome) {
    spdlog::warn("job tenant={} plugin={} name={} failed: {}", key.tenant, key.plugin, key.name,
                 outcome.message());
  }
  if (job.replaced_while_running) {
    // The run belonged to the job it replaced: count it, then start the new one afresh.
    Job ran = job;
    advanceJob(ran, started_ms, unixMs(), outcome);
    job.runs = ran.runs;
    job.failures = ran.failures;
    job.last_error = ran.last_error;
    job.last_run_ms = ran.last_run_ms;
    job.state = JobState::kScheduled;
    job.replaced_while_running = false;
    if (job.durable) persist(job);
    arm(job);
    wake_.notify_all();
    return;
  }
  if (!advanceJob(job, started_ms, unixMs(), outcome)) {
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
