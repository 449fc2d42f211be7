// The admin API, on its own port (loopback by default) behind a bearer token:
//   GET /healthz, /readyz       no token (for probes)
//   GET /v1/status              version, ABI, uptime, planes, plugin counts
//   GET /v1/plugins             every enabled plugin with state, version, routes, error
//   POST /v1/plugins/…          install-check, activate, deactivate (plugin_control.h)
//   GET /metrics                Prometheus text: kernel and plugin metrics
//   /v1/tenants…, /v1/keys…, /v1/drift   tenant administration (tenant_admin.h)
//   /v1/tenants/{id}/plugins/{ns}/{name}/config   per-tenant plugin config (tenant_config_admin.h)
//   /v1/policies…               admin Lua policies (policy_admin.h)
//   /v1/config/plan|apply       declarative configuration (config_admin.h)
//   /v1/system-grants, /v1/plugins/{id}/system   system scope (system_admin.h)
//   /v1/admin-tokens…           named admin principals (admin/admin_tokens_api.h)
//   /v1/x/<ns>/<name>/…         system plugins' admin routes (admin/plugin_admin_routes.h)
// With a gate (admin/admin_gate.h), every call is authenticated as a named principal,
// checked against its route's role and audited before it runs.
#pragma once

#include <atomic>
#include <chrono>
#include <functional>
#include <string>

#include "runtime/plugin_control.h"
#include "runtime/plugin_manager.h"
#include "runtime/policy_admin.h"
#include "runtime/tenant_admin.h"
#include "trellis/kernel/http/message.h"
#include "trellis/kernel/metrics/registry.h"

namespace trellis::kernel::admin {
class AdminGate;
class AdminTokensApi;
class PluginAdminRoutes;
}  // namespace trellis::kernel::admin

namespace trellis::kernel::runtime {

class ConfigAdmin;
class JobsAdmin;
class SystemAdmin;
class TenantConfigAdmin;

struct AdminView {
  const PluginManager* plugins = nullptr;
  const metrics::MetricsRegistry* metrics = nullptr;
  const tenants::Admission* admission = nullptr;
  const std::atomic<bool>* ready = nullptr;
  PolicyAdmin* policies = nullptr;                  // null: no policy endpoints
  std::function<std::string()> data_plane_address;  // "127.0.0.1:8080"
  std::function<size_t()> in_flight;
  std::function<size_t()> tenants;
  std::chrono::steady_clock::time_point started_at;
  PluginControl* control = nullptr;  // activate/deactivate/install-check; null: not offered
  JobsAdmin* jobs = nullptr;         // /v1/jobs; null: not offered
  SystemAdmin* system = nullptr;     // system-scope grants; null: not offered
  TenantConfigAdmin* tenant_config = nullptr;  // per-tenant plugin config; null: not offered
  ConfigAdmin* config = nullptr;               // /v1/config/plan|apply; null: not offered
  // Named principals, roles and the audit stream (admin/admin_gate.h); null: the bearer
  // token alone, unaudited.
  admin::AdminGate* gate = nullptr;
  admin::AdminTokensApi* admin_tokens = nullptr;      // /v1/admin-tokens; null: not offered
  admin::PluginAdminRoutes* plugin_routes = nullptr;  // /v1/x/…; null: not offered (gate only)
};

class AdminPlane : public http::RequestHandler {
 public:
  AdminPlane(AdminView view, std::string token, std::unique_ptr<TenantAdmin> tenant_admin);
  std::optional<http::Response> screen(const http::Request& req, const http::Peer& peer) override;
  void handle(http::Request& req, const http::Peer& peer, http::Respond respond) override;

 private:
  static http::Response unauthorized(const http::Request& req);
  http::Response status(const http::Request& req) const;
  http::Response pluginList(const http::Request& req) const;

  AdminView view_;
  std::string token_;
  std::unique_ptr<TenantAdmin> tenant_admin_;
};

// Per-tenant request metrics in Prometheus text. Cardinality is bounded: the `max_series`
// tenants with the most admitted requests are named, the rest add up under tenant="_other".
std::string renderTenantMetrics(const tenants::Admission& admission, size_t max_series);

// Reads the admin token from `file`, or — on first start — generates 256 random bits,
// stores them there with mode 0600 (atomically) and prints them once to stdout.
Result<std::string> loadOrCreateAdminToken(const std::filesystem::path& file);

}  // namespace trellis::kernel::runtime
