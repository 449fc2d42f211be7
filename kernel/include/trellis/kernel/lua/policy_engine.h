// Admin policies in Lua: a global policy plus optional per-tenant policies (a tenant's own
// policy replaces the global one for its requests), each run in the sandbox (sandbox.h)
// under the configured budget. Hooks a policy may define:
//   on_request(ctx, req)         -> nil | policy.allow() | policy.deny(status, reason)
//                                   | policy.modify({header = "value" | false})
//   on_response(ctx, res)        -> nil | policy.modify({...})          (headers only)
//   on_quota_exceeded(ctx, q)    -> nil | {status=, message=, headers={...}}
//   on_plugin_install(ctx, m)    -> nil | policy.allow() | policy.deny(status, reason)
// A failing or over-budget hook is counted, logged with its decision id, and then fails
// open or closed as configured per hook. After 5 budget overruns in a row a thread stops
// running that policy version for a second (failing as configured without running it), so a
// runaway policy costs its budget a few times a second, not on every request. Sandboxes are per
// (thread, policy version), built on first use; serving threads never share one.
//
//   PolicyEngine engine(options, std::move(store), kv, &metrics);
//   engine.start();                                          // loads the active versions
//   if (engine.active()) {                                   // one atomic load
//     Verdict v = engine.onRequest(rc, req);
//     if (v.action == Verdict::Action::kDeny) return refuse(v.status, v.reason);
//     applyHeaderEdits(v.headers, req);
//   }
//   auto applied = engine.apply("acme", "acme.lua", source); // error names file:line
//
// THREADING: the on_* calls may run on any number of threads at once; apply/rollback are
// serialised internally and swap policies atomically.
#pragma once

#include <array>
#include <atomic>
#include <boost/beast/http/fields.hpp>
#include <cstdint>
#include <memory>
#include <mutex>
#include <optional>
#include <string>
#include <string_view>
#include <vector>

#include "trellis/kernel/http/message.h"
#include "trellis/kernel/lua/sandbox.h"
#include "trellis/status.hpp"
#include "trellis/tenants/admission.h"
#include "trellis/tenants/registry.h"

namespace trellis::kernel::storage {
class KvStore;
}
namespace trellis::kernel::metrics {
class MetricsRegistry;
class Counter;
}  // namespace trellis::kernel::metrics

namespace trellis::kernel::lua {

class PolicyStore;
class DecisionLog;
struct CompiledPolicy;
struct PolicySnapshot;

enum class Hook { kOnRequest, kOnResponse, kOnQuotaExceeded, kOnPluginInstall };
inline constexpr size_t kHookCount = 4;
std::string_view hookName(Hook h);  // "on_request", …
std::optional<Hook> hookFromName(std::string_view name);

enum class FailMode { kOpen, kClosed };

struct PolicyOptions {
  Budget budget;
  // Per hook, indexed by Hook. on_quota_exceeded always falls back to the default refusal.
  std::array<FailMode, kHookCount> fail{FailMode::kClosed, FailMode::kOpen, FailMode::kOpen,
                                        FailMode::kClosed};
  std::string decision_log = "off";  // "off" or a file (JSON lines, written asynchronously)
  double decision_log_sample = 1.0;  // share of decisions logged; failures always are
};

// What `ctx` shows a data-plane hook. Views must outlive the call.
struct RequestContext {
  const tenants::TenantView* tenant = nullptr;  // required
  // ctx.principal is "key:" .. key_id, or key_id itself for a token ("jwt:<subject>").
  std::string_view key_id;
  std::string_view route;  // "/hello/{name}"
  std::string_view remote_addr;
  const tenants::Admission* admission = nullptr;  // for ctx.quota usage; may be null
};

// What on_plugin_install sees as its manifest argument.
struct PluginInstall {
  std::string id;  // "acme/billing"
  std::string version;
  std::string publisher;
  std::string source;  // registry URL or path
  std::vector<std::string> capabilities;
  std::string tenant;  // for whom, if the install is per tenant
  std::string principal;
};

struct HeaderEdit {
  std::string name;
  std::optional<std::string> value;  // nullopt: remove the header
};

struct Verdict {
  enum class Action { kAllow, kDeny, kModify };
  Action action = Action::kAllow;
  unsigned status = 0;  // deny: 400..599; quota: the replacement status, 0 = keep
  std::string reason;   // deny: shown to the client; quota: the replacement detail
  std::vector<HeaderEdit> headers;
  bool evaluated = false;  // false: no policy with this hook applies
  bool failed = false;     // the hook failed; the action follows the fail mode
  // Set for every decision anyone can see: a deny, a modify, a failure, a logged decision,
  // or one whose script read ctx.decision_id. An allow nobody sees has none (it costs a
  // string per request).
  std::string decision_id;
  std::string scope;  // "global" or "tenant:acme"
  uint64_t policy_version = 0;
  CallResult eval;  // outcome, error and budget use
};

// Sets or removes headers as a verdict says.
void applyHeaderEdits(const std::vector<HeaderEdit>& edits, boost::beast::http::fields& fields);

struct PolicyInfo {
  std::string scope;  // "global" or "tenant:acme"
  std::string tenant;
  uint64_t version = 0;
  std::string name;
  std::vector<std::string> hooks;
  int64_t applied_at_ms = 0;
};

class PolicyEngine {
 public:
  // `store` null: policies live in memory only (dry runs). `kv` null: policy.kv_get
  // returns nil. `metrics` null: nothing is counted.
  PolicyEngine(PolicyOptions options, std::unique_ptr<PolicyStore> store, storage::KvStore* kv,
               metrics::MetricsRegistry* metrics);
  ~PolicyEngine();
  PolicyEngine(const PolicyEngine&) = delete;
  PolicyEngine& operator=(const PolicyEngine&) = delete;

  // Compiles the active stored versions. A stored version that no longer compiles (budget
  // lowered, say) is an error naming it: the host should not serve without its policy.
  Status start();

  // True if any policy is applied: the data plane's whole cost when none is.
  // Every applied policy defines at least one hook, so "any hook" means "any policy".
  bool active() const { return hooks_.load(std::memory_order_acquire) != 0; }

  Verdict onRequest(const RequestContext& rc, const http::Request& req);
  Verdict onResponse(const RequestContext& rc, const http::Request& req, const http::Response& res);
  Verdict onQuotaExceeded(const RequestContext& rc, const tenants::Rejection& rejection);
  // The marketplace calls this before installing; a tenant-specific install consults the
  // tenant's policy (or the global one), otherwise the global policy.
  Verdict onPluginInstall(const PluginInstall& install);

  // Compiles `source` (top level run under the budget) and, if it defines at least one
  // hook, stores it as the scope's next version and activates it. Any error leaves the
  // active version as it was; INVALID's message names file:line.
  Result<PolicyInfo> apply(std::string_view tenant, std::string_view name, std::string_view source);
  // What apply() checks, without storing or activating anything: the name, the size, and
  // that the top level runs and defines a hook. INVALID's message names file:line.
  Status check(std::string_view tenant, std::string_view name, std::string_view source);
  // The scope's active policy ("" = global) as applied, or nullopt if it has none.
  struct ActiveSource {
    std::string name;
    std::string source;
    friend bool operator==(const ActiveSource&, const ActiveSource&) = default;
  };
  std::optional<ActiveSource> activeSource(std::string_view tenant) const;
  // The version before the current one (or the last removed one) becomes active again.
  Result<PolicyInfo> rollback(std::string_view tenant);
  // No policy for the scope any more: a tenant falls back to the global policy. A rollback
  // re-activates the removed version. NOT_FOUND if none is active.
  Status remove(std::string_view tenant);
  // The tenant was deleted: its policy and every stored version go, so a new tenant with
  // the same id starts without one.
  Status forgetTenant(std::string_view tenant);
  std::vector<PolicyInfo> list() const;

  const PolicyOptions& options() const { return options_; }

  struct Call;           // one hook invocation (policy_engine.cc)
  struct Internals;      // apply serialisation, policy.metric names, log throttling
  struct ThreadSandbox;  // a thread's sandbox for one policy version, with its breaker

 private:
  Verdict evaluate(Hook hook, const RequestContext* rc, Call& call);
  const CompiledPolicy* policyFor(std::string_view tenant) const;
  ThreadSandbox& sandboxFor(const CompiledPolicy& policy);
  // A sandbox with the `policy` library, in which `source` ran its top level.
  // `label` names it in the watchdog's reports.
  Result<std::unique_ptr<Sandbox>> loadSandbox(std::string_view source, std::string_view name,
                                               std::string label);
  Result<std::shared_ptr<CompiledPolicy>> compile(std::string_view tenant, uint64_t version,
                                                  std::string_view name, std::string_view source,
                                                  int64_t applied_at_ms);
  // compile() for a new version: the name and size checked first.
  Result<std::shared_ptr<CompiledPolicy>> compileNew(std::string_view tenant, std::string_view name,
                                                     std::string_view source);
  std::shared_ptr<const PolicySnapshot> current() const;
  // Publishes the current snapshot with the scope's policy set (null: removed).
  void replace(std::string_view tenant, std::shared_ptr<const CompiledPolicy> p);
  void publish(std::shared_ptr<const PolicySnapshot> next);
  void record(Hook hook, Verdict& v, std::string_view tenant);

  const uint64_t uid_;  // tells thread-local caches of different engines apart
  PolicyOptions options_;
  std::unique_ptr<PolicyStore> store_;
  storage::KvStore* kv_;
  metrics::MetricsRegistry* metrics_;
  std::unique_ptr<DecisionLog> decision_log_;
  std::atomic<uint32_t> hooks_{0};  // bit per Hook: defined by some active policy
  std::atomic<uint64_t> generation_{0};
  mutable std::mutex mu_;  // guards snapshot_
  std::shared_ptr<const PolicySnapshot> snapshot_;
  std::unique_ptr<Internals> internals_;
  // [hook][result]: allow, deny, modify, failed_open, failed_closed
  std::array<std::array<metrics::Counter*, 5>, kHookCount> decisions_{};
  // [hook][outcome]: error, instructions, memory, wall_time
  std::array<std::array<metrics::Counter*, 4>, kHookCount> failures_{};
  friend struct PolicyLibrary;
  friend struct EngineAccess;
};

}  // namespace trellis::kernel::lua
