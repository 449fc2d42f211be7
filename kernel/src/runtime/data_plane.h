// The data plane's request handler: health probes, tenant resolution from the bearer
// key (401 unknown/revoked/expired, 403 suspended), routing to the plugins the tenant
// enabled, admission against the tenant's quotas (413/429 with RateLimit-* headers), and
// the call through the C ABI — inline on the event loop, or on the blocking pool for
// routes the manifest declares blocking.
#pragma once

#include <array>
#include <atomic>

#include "runtime/access_log.h"
#include "runtime/plugin_manager.h"
#include "runtime/tarpit.h"
#include "services/trace/trace_context.h"
#include "trellis/kernel/exec/blocking_pool.h"
#include "trellis/kernel/http/message.h"
#include "trellis/kernel/lua/policy_engine.h"
#include "trellis/kernel/metrics/registry.h"
#include "trellis/tenants/admission.h"
#include "trellis/tenants/registry.h"

namespace trellis::kernel::runtime {

class DataPlane : public http::RequestHandler {
 public:
  DataPlane(const ActiveRoutes& routes, const tenants::TenantRegistry& tenants,
            tenants::Admission& admission, exec::BlockingPool& pool, AccessLog& access_log,
            metrics::MetricsRegistry& metrics, const std::atomic<bool>& ready,
            lua::PolicyEngine* policy = nullptr);

  void handle(http::Request& req, const http::Peer& peer, http::Respond respond) override;

 private:
  // `principal`: the id of the key that authenticated the request.
  http::Response invoke(const RouteTarget& target, const tenants::TenantView& tenant,
                        std::string_view principal, const http::Request& req,
                        const http::RouteMatch& match, std::string_view path,
                        std::string_view query, const std::string& request_id,
                        const services::TraceContext& trace);
  // Admin policy hooks (only called when a policy is active).
  lua::RequestContext policyContext(const tenants::TenantView& tenant, std::string_view key_id,
                                    const http::Peer& peer, const RouteTarget& route) const;
  void policyOnResponse(const lua::RequestContext& rc, const http::Request& req,
                        http::Response& res);
  // Every answer but health probes passes here: metrics, the trace id in problem bodies, and
  // the access log.
  void finish(const http::Request& req, const http::Peer& peer, http::Response& res,
              const std::string& request_id, std::string_view tenant, const RouteTarget* target,
              std::chrono::steady_clock::time_point started, const services::TraceContext& trace);

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
  lua::PolicyEngine* policy_;  // null: no policies (tests, tools)
  Tarpit tarpit_;              // rate-limit refusals wait here, so floods cannot hog the event loop
};

}  // namespace trellis::kernel::runtime
