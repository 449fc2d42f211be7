#include "trellis/kernel/lua/policy_engine.h"

#include <fmt/chrono.h>
#include <fmt/format.h>
#include <spdlog/async.h>
#include <spdlog/async_logger.h>
#include <spdlog/sinks/basic_file_sink.h>
#include <spdlog/spdlog.h>

#include <cctype>
#include <chrono>
#include <cstring>
#include <filesystem>
#include <map>
#include <random>
#include <set>
#include <unordered_map>

#include "lua/internal/policy_call.h"
#include "trellis/kernel/lua/policy_store.h"
#include "trellis/kernel/metrics/registry.h"
#include "trellis/kernel/storage/kv_store.h"
#include "trellis/kernel/util/json.h"

// The engine: compiled versions, per-thread sandboxes, apply/rollback, verdicts, metrics
// and the decision log. What runs inside Lua (the `policy` library, the proxies, the
// marshal callbacks) is in policy_library.cc.

namespace trellis::kernel::lua {
namespace bhttp = boost::beast::http;
using Clock = std::chrono::steady_clock;

struct PolicySnapshot {
  std::shared_ptr<const CompiledPolicy> global;
  std::map<std::string, std::shared_ptr<const CompiledPolicy>, std::less<>> tenants;

  // The scope's own policy ("" is the global scope), or null.
  const CompiledPolicy* find(std::string_view tenant) const {
    if (tenant.empty()) return global.get();
    auto it = tenants.find(tenant);
    return it == tenants.end() ? nullptr : it->second.get();
  }
  // Sets the scope's policy, or removes it when `p` is null.
  void set(std::string_view tenant, std::shared_ptr<const CompiledPolicy> p) {
    if (tenant.empty()) {
      global = std::move(p);
    } else if (p) {
      tenants[std::string(tenant)] = std::move(p);
    } else {
      tenants.erase(std::string(tenant));
    }
  }
};

// Appends decisions as JSON lines through its own spdlog thread pool; when the queue is
// full the oldest lines are dropped, so the event loop never waits for the disk.
class DecisionLog {
 public:
  explicit DecisionLog(const std::string& file) {
    std::filesystem::create_directories(std::filesystem::path(file).parent_path());
    pool_ = std::make_shared<spdlog::details::thread_pool>(8192, 1);
    auto sink = std::make_shared<spdlog::sinks::basic_file_sink_mt>(file);
    logger_ = std::make_shared<spdlog::async_logger>("policy-decisions", std::move(sink), pool_,
                                                     spdlog::async_overflow_policy::overrun_oldest);
    logger_->set_pattern("%v");
    logger_->flush_on(spdlog::level::info);
  }
  ~DecisionLog() {
    logger_->flush();
    // Join the writer thread before the logger and its sink are freed (the members would go
    // in the other order): it may still be in the sink's flush otherwise, as ThreadSanitizer
    // saw for the access log.
    pool_.reset();
  }
  void write(const std::string& line) { logger_->info(line); }

 private:
  std::shared_ptr<spdlog::details::thread_pool> pool_;
  std::shared_ptr<spdlog::async_logger> logger_;
};

struct PolicyEngine::Internals {
  std::mutex apply_mu;  // one apply/rollback at a time
  std::mutex metric_mu;
  std::set<std::string, std::less<>> metric_names;  // policy.metric names seen (bounded)
  metrics::Family<metrics::Counter>* custom = nullptr;
  std::atomic<int64_t> log_window{0};  // second of the current throttle window
  std::atomic<int> log_count{0};
  std::string init_error;  // reported by start(): the decision log could not be opened
};

namespace {

constexpr size_t kMaxSourceBytes = 1024 * 1024;
constexpr int kLogLinesPerSecond = 20;

std::atomic<uint64_t> g_next_uid{1};

}  // namespace

struct PolicyEngine::ThreadSandbox {
  std::unique_ptr<Sandbox> sandbox;  // null: the policy did not load on this thread
  uint32_t overruns = 0;             // budget failures in a row
  Outcome last = Outcome::kOk;
  Clock::time_point retry_at{};  // while in the future, the breaker is open
};

namespace {

constexpr uint32_t kOverrunsToOpen = 5;
constexpr auto kBreakerOpenFor = std::chrono::seconds(1);

struct ThreadCache {
  uint64_t generation = UINT64_MAX;
  std::shared_ptr<const PolicySnapshot> snapshot;
  std::unordered_map<uint64_t, PolicyEngine::ThreadSandbox> sandboxes;  // by policy uid
  // The sandbox used last (node pointers stay valid until their entry is erased).
  uint64_t last_uid = 0;
  PolicyEngine::ThreadSandbox* last = nullptr;
  // `allow` decisions counted here and added to the shared counter in batches, so serving
  // threads do not contend on one cache line per request.
  std::array<uint32_t, kHookCount> pending_allows{};
};
// By engine uid. Sandboxes are per thread: a lua_State is never shared across threads.
thread_local std::unordered_map<uint64_t, ThreadCache> t_caches;
// The last engine this thread served and its cache: one comparison instead of a lookup.
thread_local uint64_t t_last_uid = 0;
thread_local ThreadCache* t_last_cache = nullptr;
constexpr uint32_t kAllowBatch = 64;

ThreadCache& threadCache(uint64_t uid) {
  if (t_last_uid != uid) {
    t_last_cache = &t_caches[uid];  // unordered_map nodes stay put on rehash
    t_last_uid = uid;
  }
  return *t_last_cache;
}

int64_t nowMs() {
  return std::chrono::duration_cast<std::chrono::milliseconds>(
             std::chrono::system_clock::now().time_since_epoch())
      .count();
}

std::string scopeOf(std::string_view tenant) {
  return tenant.empty() ? "global" : "tenant:" + std::string(tenant);
}

bool throttle(PolicyEngine::Internals& in) {
  const int64_t second = nowMs() / 1000;
  int64_t window = in.log_window.load(std::memory_order_relaxed);
  if (window != second && in.log_window.compare_exchange_strong(window, second)) {
    in.log_count.store(0, std::memory_order_relaxed);
  }
  return in.log_count.fetch_add(1, std::memory_order_relaxed) >= kLogLinesPerSecond;
}

}  // namespace

void EngineAccess::log(const PolicyEngine::Call& c, const char* msg, size_t n) noexcept {
  try {
    if (throttle(*c.engine->internals_)) return;
    spdlog::info("policy {} v{} {} [decision {}]: {}", c.policy->scope, c.policy->version,
                 hookName(c.hook), decisionId(*c.verdict),
                 std::string_view(msg, std::min<size_t>(n, 1024)));
  } catch (...) {
  }
}

bool EngineAccess::kvGet(const PolicyEngine::Call& c, std::string_view plugin, std::string_view key,
                         std::string& out) noexcept {
  try {
    if (!c.engine->kv_ || !c.rc) return false;
    storage::Scope scope{c.rc->tenant->id, std::string(plugin)};
    auto entry = c.engine->kv_->get(scope, key);
    if (!entry) return false;
    out = std::move(entry->value);
    return true;
  } catch (...) {
    return false;
  }
}

bool EngineAccess::metric(const PolicyEngine::Call& c, std::string_view name,
                          double value) noexcept {
  try {
    auto& in = *c.engine->internals_;
    if (!in.custom) return true;
    std::lock_guard lock(in.metric_mu);
    if (!in.metric_names.count(name)) {
      if (in.metric_names.size() >= kMaxMetricNames) return false;
      in.metric_names.emplace(name);
    }
    auto child = in.custom->tryLabels({std::string(name)});
    if (child) (*child)->add(value);
    return true;
  } catch (...) {
    return false;
  }
}

namespace {

size_t resultIndex(const Verdict& v, FailMode mode) {
  if (v.failed) return mode == FailMode::kOpen ? 3 : 4;
  return static_cast<size_t>(v.action);
}

}  // namespace

std::string_view hookName(Hook h) {
  switch (h) {
    case Hook::kOnRequest: return "on_request";
    case Hook::kOnResponse: return "on_response";
    case Hook::kOnQuotaExceeded: return "on_quota_exceeded";
    case Hook::kOnPluginInstall: return "on_plugin_install";
  }
  return "unknown";
}

std::optional<Hook> hookFromName(std::string_view name) {
  for (size_t i = 0; i < kHookCount; ++i) {
    if (hookName(static_cast<Hook>(i)) == name) return static_cast<Hook>(i);
  }
  return std::nullopt;
}

void applyHeaderEdits(const std::vector<HeaderEdit>& edits, bhttp::fields& fields) {
  for (const auto& e : edits) {
    if (e.value) {
      fields.set(e.name, *e.value);
    } else {
      fields.erase(e.name);
    }
  }
}

PolicyEngine::PolicyEngine(PolicyOptions options, std::unique_ptr<PolicyStore> store,
                           storage::KvStore* kv, metrics::MetricsRegistry* metrics)
    : uid_(g_next_uid.fetch_add(1)),
      options_(std::move(options)),
      store_(std::move(store)),
      kv_(kv),
      metrics_(metrics),
      snapshot_(std::make_shared<PolicySnapshot>()),
      internals_(std::make_unique<Internals>()) {
  if (options_.decision_log != "off")
    decision_log_ = std::make_unique<DecisionLog>(options_.decision_log);
  if (!metrics_) return;
  auto& decisions = metrics_->counter("trellis_policy_decisions_total",
                                      "Policy hook evaluations by result", {"hook", "result"});
  auto& failures = metrics_->counter("trellis_policy_failures_total",
                                     "Policy hooks that failed, by cause", {"hook", "cause"});
  const char* results[] = {"allow", "deny", "modify", "failed_open", "failed_closed"};
  const char* causes[] = {"error", "instructions", "memory", "wall_time"};
  for (size_t h = 0; h < kHookCount; ++h) {
    std::string hook(hookName(static_cast<Hook>(h)));
    for (size_t r = 0; r < 5; ++r) decisions_[h][r] = &decisions.labels({hook, results[r]});
    for (size_t f = 0; f < 4; ++f) failures_[h][f] = &failures.labels({hook, causes[f]});
  }
  internals_->custom = &metrics_->counter(
      "trellis_policy_metric_total", "Counters policies increment with policy.metric", {"name"});
}

PolicyEngine::~PolicyEngine() {
  t_caches.erase(uid_);  // this thread's; other threads' entries are never used again
  if (t_last_uid == uid_) {
    t_last_uid = 0;
    t_last_cache = nullptr;
  }
}

Result<std::unique_ptr<Sandbox>> PolicyEngine::loadSandbox(std::string_view source,
                                                           std::string_view name,
                                                           std::string label) {
  auto sb = Sandbox::create(options_.budget);
  if (!sb) return sb.status();
  (*sb)->setLabel(std::move(label));
  if (Status s = (*sb)->addLibrary("policy", policy_library::kFunctions, this); !s) return s;
  if (Status s = (*sb)->protectedCall(policy_library::installProxies, nullptr); !s) return s;
  auto loaded = (*sb)->load(source, name);
  if (!loaded.ok()) return Status::invalid(loaded.error);
  return sb;
}

Result<std::shared_ptr<CompiledPolicy>> PolicyEngine::compile(std::string_view tenant,
                                                              uint64_t version,
                                                              std::string_view name,
                                                              std::string_view source,
                                                              int64_t applied_at_ms) {
  auto sb = loadSandbox(source, name,
                        "policy " + scopeOf(tenant) +
                            (version ? " v" + std::to_string(version) : " (being applied)") + " (" +
                            std::string(name) + ")");
  if (!sb) return sb.status();
  auto p = std::make_shared<CompiledPolicy>();
  p->uid = g_next_uid.fetch_add(1);
  p->tenant = std::string(tenant);
  p->scope = scopeOf(tenant);
  p->version = version;
  p->name = std::string(name);
  p->source = std::string(source);
  p->applied_at_ms = applied_at_ms;
  bool any = false;
  for (size_t h = 0; h < kHookCount; ++h) {
    p->hooks[h] = (*sb)->hasFunction(hookName(static_cast<Hook>(h)).data());
    any = any || p->hooks[h];
  }
  if (!any) {
    return Status::invalid(std::string(name) +
                           " defines none of the hooks on_request, on_response, "
                           "on_quota_exceeded, on_plugin_install (as global functions)");
  }
  return p;
}

Status PolicyEngine::start() {
  if (!internals_->init_error.empty()) return Status::unavailable(internals_->init_error);
  if (!store_) return Status::ok();
  auto stored = store_->loadActive();
  if (!stored) return stored.status();
  auto next = std::make_shared<PolicySnapshot>();
  for (const auto& s : *stored) {
    auto p = compile(s.tenant, s.version, s.name, s.source, s.applied_at_ms);
    if (!p) {
      return Status::invalid("the active " + scopeOf(s.tenant) + " policy v" +
                             std::to_string(s.version) + " (" + s.name +
                             ") does not load: " + p.status().message() +
                             " (roll it back with `trellis policy rollback`)");
    }
    next->set(s.tenant, std::move(*p));
    spdlog::info("policy {} v{} ({}) active", scopeOf(s.tenant), s.version, s.name);
  }
  publish(std::move(next));
  return Status::ok();
}

std::shared_ptr<const PolicySnapshot> PolicyEngine::current() const {
  std::lock_guard lock(mu_);
  return snapshot_;
}

void PolicyEngine::replace(std::string_view tenant, std::shared_ptr<const CompiledPolicy> p) {
  auto next = std::make_shared<PolicySnapshot>(*current());
  next->set(tenant, std::move(p));
  publish(std::move(next));
}

void PolicyEngine::publish(std::shared_ptr<const PolicySnapshot> next) {
  uint32_t hooks = 0;  // the hooks any active policy defines
  auto add = [&](const CompiledPolicy& p) {
    for (size_t h = 0; h < kHookCount; ++h) hooks |= p.hooks[h] ? 1u << h : 0;
  };
  if (next->global) add(*next->global);
  for (const auto& [id, p] : next->tenants) add(*p);
  std::lock_guard lock(mu_);
  hooks_.store(hooks, std::memory_order_release);
  snapshot_ = std::move(next);
  generation_.fetch_add(1, std::memory_order_release);
}

namespace {
PolicyInfo infoOf(const CompiledPolicy& p) {
  PolicyInfo i{p.scope, p.tenant, p.version, p.name, {}, p.applied_at_ms};
  for (size_t h = 0; h < kHookCount; ++h) {
    if (p.hooks[h]) i.hooks.emplace_back(hookName(static_cast<Hook>(h)));
  }
  return i;
}

bool validPolicyName(std::string_view name) {
  if (name.empty() || name.size() > 128) return false;
  for (char ch : name) {
    if (!std::isalnum(static_cast<unsigned char>(ch)) && ch != '.' && ch != '-' && ch != '_') {
      return false;
    }
  }
  return true;
}
}  // namespace

Result<std::shared_ptr<CompiledPolicy>> PolicyEngine::compileNew(std::string_view tenant,
                                                                 std::string_view name,
                                                                 std::string_view source) {
  if (!validPolicyName(name)) {
    return Status::invalid("policy name \"" + std::string(name) +
                           "\" must be 1-128 of [A-Za-z0-9._-] (the file's base name)");
  }
  if (source.size() > kMaxSourceBytes) {
    return Status::invalid(std::string(name) + " is larger than 1 MiB");
  }
  return compile(tenant, 0, name, source, nowMs());
}

Status PolicyEngine::check(std::string_view tenant, std::string_view name,
                           std::string_view source) {
  auto compiled = compileNew(tenant, name, source);
  return compiled ? Status::ok() : compiled.status();
}

std::optional<PolicyEngine::ActiveSource> PolicyEngine::activeSource(
    std::string_view tenant) const {
  const auto snapshot = current();
  const CompiledPolicy* p = snapshot->find(tenant);
  if (p == nullptr) return std::nullopt;
  return ActiveSource{p->name, p->source};
}

Result<PolicyInfo> PolicyEngine::apply(std::string_view tenant, std::string_view name,
                                       std::string_view source) {
  // The top level runs (under the budget) before the lock is taken: a slow one holds up
  // nobody else's apply, rollback or remove.
  auto compiled = compileNew(tenant, name, source);
  if (!compiled) return compiled.status();
  std::lock_guard apply_lock(internals_->apply_mu);
  auto& p = **compiled;
  if (store_) {
    auto saved = store_->save(tenant, name, source);
    if (!saved) return saved.status();
    p.version = saved->version;
    p.applied_at_ms = saved->applied_at_ms;
  } else {
    const CompiledPolicy* before = current()->find(tenant);
    p.version = before ? before->version + 1 : 1;
  }
  replace(tenant, *compiled);
  spdlog::info("policy {} v{} ({}) applied", p.scope, p.version, p.name);
  return infoOf(p);
}

Result<PolicyInfo> PolicyEngine::rollback(std::string_view tenant) {
  if (!store_) return Status::unimplemented("rollback needs a policy store");
  Result<StoredPolicy> previous = Status::internal("unset");
  {
    std::lock_guard apply_lock(internals_->apply_mu);
    previous = store_->rollback(tenant, false);
  }
  if (!previous) return previous.status();
  // Compiled with no lock held, as in apply(); committed only if nothing changed meanwhile.
  auto compiled = compile(tenant, previous->version, previous->name, previous->source, nowMs());
  if (!compiled) {
    return Status::invalid("v" + std::to_string(previous->version) + " (" + previous->name +
                           ") no longer loads: " + compiled.status().message());
  }
  std::lock_guard apply_lock(internals_->apply_mu);
  auto again = store_->rollback(tenant, false);
  if (!again || again->version != previous->version) {
    return Status::unavailable("the policy changed while its rollback was compiled; retry");
  }
  auto committed = store_->rollback(tenant, true);
  if (!committed) return committed.status();
  (*compiled)->applied_at_ms = committed->applied_at_ms;
  replace(tenant, *compiled);
  spdlog::info("policy {} rolled back to v{} ({})", (*compiled)->scope, (*compiled)->version,
               (*compiled)->name);
  return infoOf(**compiled);
}

Status PolicyEngine::remove(std::string_view tenant) {
  std::lock_guard apply_lock(internals_->apply_mu);
  if (!current()->find(tenant)) return Status::notFound("no policy applied for " + scopeOf(tenant));
  if (store_) {
    if (Status s = store_->deactivate(tenant); !s) return s;
  }
  replace(tenant, nullptr);
  spdlog::info("policy {} removed", scopeOf(tenant));
  return Status::ok();
}

Status PolicyEngine::forgetTenant(std::string_view tenant) {
  if (tenant.empty()) return Status::invalid("forgetTenant needs a tenant id");
  std::lock_guard apply_lock(internals_->apply_mu);
  if (current()->find(tenant)) replace(tenant, nullptr);
  return store_ ? store_->purge(tenant) : Status::ok();
}

std::vector<PolicyInfo> PolicyEngine::list() const {
  const auto snapshot = current();
  std::vector<PolicyInfo> out;
  if (snapshot->global) out.push_back(infoOf(*snapshot->global));
  for (const auto& [id, p] : snapshot->tenants) out.push_back(infoOf(*p));
  return out;
}

const CompiledPolicy* PolicyEngine::policyFor(std::string_view tenant) const {
  ThreadCache& cache = threadCache(uid_);
  if (cache.generation != generation_.load(std::memory_order_acquire)) {
    {
      std::lock_guard lock(mu_);
      cache.snapshot = snapshot_;
      cache.generation = generation_.load(std::memory_order_relaxed);
    }
    // Drop the sandboxes of versions no longer active.
    std::set<uint64_t> live;
    if (cache.snapshot->global) live.insert(cache.snapshot->global->uid);
    for (const auto& [id, p] : cache.snapshot->tenants) live.insert(p->uid);
    std::erase_if(cache.sandboxes, [&](const auto& e) { return !live.count(e.first); });
    cache.last_uid = 0;
    cache.last = nullptr;
  }
  const PolicySnapshot& snap = *cache.snapshot;
  if (!tenant.empty()) {
    auto it = snap.tenants.find(tenant);
    if (it != snap.tenants.end()) return it->second.get();
  }
  return snap.global.get();
}

PolicyEngine::ThreadSandbox& PolicyEngine::sandboxFor(const CompiledPolicy& policy) {
  ThreadCache& cache = threadCache(uid_);
  if (cache.last_uid == policy.uid) return *cache.last;
  auto& sandboxes = cache.sandboxes;
  auto it = sandboxes.find(policy.uid);
  if (it != sandboxes.end()) {
    cache.last_uid = policy.uid;
    cache.last = &it->second;
    return it->second;
  }
  ThreadSandbox entry;
  if (auto sb = loadSandbox(policy.source, policy.name,
                            "policy " + policy.scope + " v" + std::to_string(policy.version) +
                                " (" + policy.name + ")")) {
    entry.sandbox = std::move(*sb);
  } else {
    spdlog::error("policy {} v{} ({}) does not load on this thread: {}", policy.scope,
                  policy.version, policy.name, sb.status().message());
  }
  return sandboxes.emplace(policy.uid, std::move(entry)).first->second;
}

Verdict PolicyEngine::evaluate(Hook hook, const RequestContext* rc, Call& call) {
  Verdict v;
  // No active policy defines this hook (on_response, typically): one load.
  if (!(hooks_.load(std::memory_order_acquire) & (1u << static_cast<size_t>(hook)))) return v;
  std::string_view tenant = rc ? std::string_view(rc->tenant->id) : call.install->tenant;
  const CompiledPolicy* policy = policyFor(tenant);
  if (!policy || !policy->hooks[static_cast<size_t>(hook)]) return v;
  v.evaluated = true;
  v.scope = policy->scope;
  v.policy_version = policy->version;
  call.hook = hook;
  call.rc = rc;
  call.policy = policy;
  call.engine = this;
  call.verdict = &v;
  ThreadSandbox& ts = sandboxFor(*policy);
  if (!ts.sandbox) {
    v.eval.outcome = Outcome::kError;
    v.eval.error = "the policy does not load on this thread (see the log)";
  } else if (ts.overruns >= kOverrunsToOpen && Clock::now() < ts.retry_at) {
    // The breaker is open: fail as configured without spending the budget again.
    v.eval.outcome = ts.last;
    v.eval.error = "not run: the policy exceeded its " + std::string(outcomeName(ts.last)) +
                   " budget on its last " + std::to_string(ts.overruns) +
                   " calls on this thread (retried within 1 s)";
  } else {
    t_policy_call = &call;
    v.eval = ts.sandbox->call(hookName(hook).data(), policy_library::pushArgs,
                              policy_library::readVerdict, &call);
    t_policy_call = nullptr;
    const bool overrun = v.eval.outcome != Outcome::kOk && v.eval.outcome != Outcome::kError;
    ts.overruns = overrun ? ts.overruns + 1 : 0;
    if (overrun) ts.last = v.eval.outcome;
    if (ts.overruns >= kOverrunsToOpen) ts.retry_at = Clock::now() + kBreakerOpenFor;
  }
  // An allow nobody logs needs no id; anything a client, a log or the script sees has one.
  if (v.action != Verdict::Action::kAllow || !v.eval.ok()) decisionId(v);
  if (!v.eval.ok()) {
    v.failed = true;
    v.headers.clear();
    v.status = 0;
    v.reason.clear();
    v.action = Verdict::Action::kAllow;
    const FailMode mode = options_.fail[static_cast<size_t>(hook)];
    if (mode == FailMode::kClosed && hook != Hook::kOnQuotaExceeded) {
      v.action = Verdict::Action::kDeny;
      v.status = 500;
      v.reason = "the admin policy failed, so the request is refused (fail closed); decision " +
                 v.decision_id;
    }
  }
  record(hook, v, tenant);
  return v;
}

void PolicyEngine::record(Hook hook, Verdict& v, std::string_view tenant) {
  const size_t h = static_cast<size_t>(hook);
  const FailMode mode = options_.fail[h];
  if (metrics_) {
    const size_t result = resultIndex(v, mode);
    if (result == 0) {
      uint32_t& pending = threadCache(uid_).pending_allows[h];
      if (++pending >= kAllowBatch) {
        decisions_[h][0]->add(pending);
        pending = 0;
      }
    } else {
      // Anything but an allow is counted at once, and brings the allows along.
      uint32_t& pending = threadCache(uid_).pending_allows[h];
      if (pending) decisions_[h][0]->add(std::exchange(pending, 0));
      decisions_[h][result]->add(1);
    }
    if (v.failed) failures_[h][static_cast<size_t>(v.eval.outcome) - 1]->add(1);
  }
  if (v.failed && !throttle(*internals_)) {
    spdlog::warn("policy {} v{} {} failed for tenant {} ({}): {}; failing {} [decision {}]",
                 v.scope, v.policy_version, hookName(hook), tenant.empty() ? "-" : tenant,
                 outcomeName(v.eval.outcome), v.eval.error,
                 mode == FailMode::kOpen || hook == Hook::kOnQuotaExceeded ? "open" : "closed",
                 v.decision_id);
  }
  if (!decision_log_) return;
  if (!v.failed && options_.decision_log_sample < 1.0) {
    thread_local std::minstd_rand rng{std::random_device{}()};
    if (std::uniform_real_distribution<double>(0, 1)(rng) >= options_.decision_log_sample) return;
  }
  static const char* const kResults[] = {"allow", "deny", "modify", "failed_open", "failed_closed"};
  decisionId(v);
  auto now = std::chrono::system_clock::now();
  auto ms = std::chrono::duration_cast<std::chrono::milliseconds>(now.time_since_epoch()) % 1000;
  std::string line = fmt::format("{{\"ts\":\"{:%Y-%m-%dT%H:%M:%S}.{:03}Z\",\"decision_id\":\"{}\"",
                                 fmt::gmtime(std::chrono::system_clock::to_time_t(now)), ms.count(),
                                 v.decision_id);
  line += ",\"policy\":";
  util::appendJsonString(line, v.scope);
  line +=
      fmt::format(",\"version\":{},\"hook\":\"{}\",\"tenant\":", v.policy_version, hookName(hook));
  util::appendJsonString(line, tenant);
  line += fmt::format(",\"result\":\"{}\"", kResults[resultIndex(v, mode)]);
  if (v.action == Verdict::Action::kDeny) line += fmt::format(",\"status\":{}", v.status);
  line += fmt::format(",\"outcome\":\"{}\"", outcomeName(v.eval.outcome));
  if (!v.eval.error.empty()) {
    line += ",\"error\":";
    util::appendJsonString(line, v.eval.error);
  }
  line += fmt::format(",\"instructions\":{},\"peak_memory_bytes\":{},\"wall_us\":{}}}",
                      v.eval.usage.instructions, v.eval.usage.peak_memory_bytes,
                      v.eval.usage.wall_time.count());
  decision_log_->write(line);
}

Verdict PolicyEngine::onRequest(const RequestContext& rc, const http::Request& req) {
  Call call;
  call.req = &req;
  return evaluate(Hook::kOnRequest, &rc, call);
}

Verdict PolicyEngine::onResponse(const RequestContext& rc, const http::Request& req,
                                 const http::Response& res) {
  Call call;
  call.req = &req;
  call.res = &res;
  return evaluate(Hook::kOnResponse, &rc, call);
}

Verdict PolicyEngine::onQuotaExceeded(const RequestContext& rc,
                                      const tenants::Rejection& rejection) {
  Call call;
  call.rejection = &rejection;
  return evaluate(Hook::kOnQuotaExceeded, &rc, call);
}

Verdict PolicyEngine::onPluginInstall(const PluginInstall& install) {
  Call call;
  call.install = &install;
  return evaluate(Hook::kOnPluginInstall, nullptr, call);
}

}  // namespace trellis::kernel::lua
