// The data plane's request handler: health probes, tenant resolution from the bearer
// key, signed token or verified client certificate (401 unknown/revoked/expired key or refused
// token, 403 a suspended tenant's key; for a request with a body already in screen(), before the
// body is read), routing to the plugins the tenant enabled (the others' routes are hidden),
// admission against the tenant's quotas (413/429 with RateLimit-* headers), the admin policy, and
// the call through the C ABI — inline on the event loop, or on the blocking pool for routes the
// manifest declares blocking. Every answer carries X-Request-Id. The last stage, after, also hands
// a usage record of every answer (refusals included) to the usage stream.
#pragma once

#include <array>
#include <atomic>
#include <functional>

#include "auth/token_verifier.h"
#include "runtime/access_log.h"
#include "runtime/plugin_call.h"
#include "runtime/plugin_manager.h"
#include "runtime/tarpit.h"
#include "services/trace/trace_context.h"
#include "services/usage/usage_record.h"
#include "trellis/kernel/exec/blocking_pool.h"
#include "trellis/kernel/http/message.h"
#include "trellis/kernel/lua/policy_engine.h"
#include "trellis/kernel/metrics/registry.h"
#include "trellis/kernel/util/log_limiter.h"
#include "trellis/tenants/admission.h"
#include "trellis/tenants/registry.h"

namespace trellis::kernel::services::usage {
class UsageStream;
}

namespace trellis::kernel::runtime {

// What the stages learned about a request that its usage record names.
struct RequestFacts {
  std::string_view key_id{};
  std::string_view decision_id{};  // the quota's or the policy's
  services::usage::Counters counters{};
};

class DataPlane : public http::RequestHandler {
 public:
  DataPlane(const ActiveRoutes& routes, const tenants::TenantRegistry& tenants,
            tenants::Admission& admission, exec::BlockingPool& pool, AccessLog& access_log,
            metrics::MetricsRegistry& metrics, const std::atomic<bool>& ready,
            lua::PolicyEngine* policy = nullptr, services::usage::UsageStream* usage = nullptr);

  std::optional<http::Response> screen(const http::Request& req, const http::Peer& peer) override;
  void handle(http::Request& req, const http::Peer& peer, http::Respond respond) override;

  // Told of every request refused for an unknown, expired or revoked key (the audit
  // stream aggregates them). Set before serving; runs on the event loop, so it must not block.
  using AuthFailureFn = std::function<void(std::string_view credential, const http::Peer& peer,
                                           std::string_view reason)>;
  void onAuthFailure(AuthFailureFn fn) { on_auth_failure_ = std::move(fn); }
  // Told of every request an admin policy refused (a deny, or a failure with fail closed),
  // in on_request or on_response. Same rules as onAuthFailure.
  using PolicyDenialFn =
      std::function<void(std::string_view tenant, std::string_view route,
                         const lua::Verdict& verdict, std::string_view request_id)>;
  void onPolicyDenial(PolicyDenialFn fn) { on_policy_denial_ = std::move(fn); }
  // Signed bearer tokens (JWT) from these issuers are tenant credentials too: a credential of
  // three dot-separated segments is checked here instead of against the key registry. Its
  // tenant claim names an active tenant; its principal claim becomes the principal ("jwt:"
  // prefixed) that plugins, policies, usage and audit see. Set before serving; null: none.
  void acceptTokens(const auth::TokenVerifier* verifier) { tokens_ = verifier; }

 private:
  static std::optional<http::Response> undecodablePathParam(const http::RouteMatch& match,
                                                            const http::Request& req,
                                                            const std::string& request_id);
  http::Response answerOf(PluginCall& call, trellis_status status);
  // Admin policy hooks (only called when a policy is active).
  lua::RequestContext policyContext(const tenants::TenantView& tenant, std::string_view key_id,
                                    const http::Peer& peer, const RouteTarget& route) const;
  void policyOnResponse(const lua::RequestContext& rc, const http::Request& req,
                        http::Response& res);
  // Every answer but health probes passes here (the after stage): metrics, the trace id in
  // problem bodies, the access log and the usage record.
  void finish(const http::Request& req, const http::Peer& peer, http::Response& res,
              const std::string& request_id, std::string_view tenant, const RouteTarget* target,
              std::chrono::steady_clock::time_point started, const services::TraceContext& trace,
              const RequestFacts& facts = {});
  void recordUsage(const http::Request& req, const http::Response& res,
                   const std::string& request_id, std::string_view tenant,
                   const RouteTarget* target, uint64_t micros, const services::TraceContext& trace,
                   const RequestFacts& facts);

  // The caller's tenant from the bearer credential: an API key (the registry) or, with
  // issuers configured, a signed token; without an Authorization header, from the client
  // certificate the listener verified (auth/cert_identity.h). For a refused token or
  // certificate, `token_refusal` says why.
  tenants::Resolution resolveCaller(const http::Request& req, const http::Peer& peer,
                                    std::string* token_refusal) const;
  void authFailed(const tenants::Resolution& who, const http::Request& req, const http::Peer& peer,
                  const std::string& token_refusal) const;

  AuthFailureFn on_auth_failure_;
  PolicyDenialFn on_policy_denial_;
  const ActiveRoutes& routes_;  // swapped whole by hot activation
  const tenants::TenantRegistry& tenants_;
  tenants::Admission& admission_;
  exec::BlockingPool& pool_;
  AccessLog& access_log_;
  const std::atomic<bool>& ready_;
  std::array<metrics::Counter*, 6> requests_by_class_;  // [0] other, [1..5] 1xx..5xx
  metrics::Histogram& latency_;
  metrics::Counter& pool_rejections_;
  metrics::Family<metrics::Counter>& quota_rejections_;
  const auth::TokenVerifier* tokens_ = nullptr;  // null: API keys only
  // trellis_jwt_refusals_total by auth::TokenRefusal.
  std::array<metrics::Counter*, auth::kTokenRefusalCount> token_refusals_{};
  // Refused tokens and certificates are logged, but a flood of them writes a few lines only.
  mutable util::LogLimiter refusal_log_;
  lua::PolicyEngine* policy_;            // null: no policies (tests, tools)
  services::usage::UsageStream* usage_;  // null: no usage records (tests, tools)
  Tarpit tarpit_;  // rate-limit refusals wait here, so floods cannot hog the event loop
};

}  // namespace trellis::kernel::runtime
