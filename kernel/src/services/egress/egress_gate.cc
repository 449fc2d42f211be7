#include "services/egress/egress_gate.h"

#include "runtime/plugin_instance.h"
#include "trellis/kernel/exec/event_loop.h"
#include "trellis/kernel/plugin/manifest.h"
#include "trellis/kernel/storage/kv_store.h"

namespace trellis::kernel::services::egress {

trellis_ctx* enterEgress(const trellis_ctx* c, std::string_view call, trellis_status* refused) {
  trellis_ctx* ctx = enter(c, "egress", call, Tenant::kOptional, refused);
  if (!ctx || ctx->tenant) return ctx;
  // Tenant-less: only a system plugin, and not before it has started.
  if (!ctx->plugin->isSystemPlugin()) {
    ctx->error = std::string(call) +
                 " needs a tenant: call it from a request, job, service or event handler";
    *refused = TRELLIS_INVALID;
    return nullptr;
  }
  if (ctx->phase == runtime::Phase::kInit) {
    ctx->error = std::string(call) +
                 " is not available during on_init: a system plugin may call it from on_start, "
                 "admin routes, usage batches and its jobs";
    *refused = TRELLIS_INVALID;
    return nullptr;
  }
  return ctx;
}

Status refuseOnEventLoop(std::string_view call) {
  if (!exec::onEventLoopThread()) return Status::ok();
  return Status::invalid(std::string(call) +
                         " blocks, so it is refused on an event loop: declare the route in "
                         "blocking_routes, or call it from a job or an event handler");
}

Result<Policy> policyOf(const trellis_ctx* ctx) {
  Policy policy;
  auto manifest = parseRules(ctx->plugin->manifest().egress);
  if (!manifest) return manifest.status();
  policy.manifest = std::move(*manifest);
  if (!ctx->tenant) {
    policy.tenant = std::string(storage::kSystemScopeTenant);
    policy.system_plugin = ctx->plugin->id();
    if (ctx->plugin->operator_egress) {
      auto listed = parseRules(*ctx->plugin->operator_egress);
      if (!listed) return listed.status();
      policy.grant = std::move(*listed);
    }
    return policy;
  }
  // The manifest's rules, narrowed by the tenant's "egress:<rule>" grants for this plugin.
  policy.tenant = ctx->tenant->id;
  const auto& grants = ctx->tenant->grants;
  if (auto it = grants.find(ctx->plugin->id()); it != grants.end()) {
    std::vector<std::string> texts;
    for (const auto& g : it->second) {
      if (g.starts_with(plugin::kEgressGrantPrefix)) {
        texts.push_back(g.substr(plugin::kEgressGrantPrefix.size()));
      }
    }
    if (!texts.empty()) {
      auto granted = parseRules(texts);
      if (!granted) return granted.status();
      policy.grant = std::move(*granted);
    }
  }
  return policy;
}

std::optional<Limits> limitsOf(const trellis_ctx* ctx) {
  if (!ctx->tenant) return std::nullopt;
  const auto& q = ctx->tenant->quotas;
  return Limits{q.egress_requests_per_second, q.egress_bytes_per_day};
}

std::string tenantLabel(const trellis_ctx* ctx) {
  return ctx->tenant ? ctx->tenant->id : std::string(storage::kSystemScopeTenant);
}

trellis_status refuse(trellis_ctx* ctx, const Status& s, std::string_view destination) {
  if (s.code() == StatusCode::kQuotaExceeded && s.message().starts_with("egress_") && ctx->tenant) {
    const auto& q = ctx->tenant->quotas;
    const bool rate = s.message().starts_with("egress_requests_per_second");
    return refuseQuota(ctx, rate ? "egress_requests_per_second" : "egress_bytes_per_day",
                       (rate ? q.egress_requests_per_second : q.egress_bytes_per_day).value_or(0),
                       s.message());
  }
  if (s.code() == StatusCode::kPermissionDenied) {
    // A destination no rule allows: counted and audited like a missing grant.
    ctx->error = s.message();
    recordDenial(ctx, "egress", "egress:" + std::string(destination));
    return s.toC();
  }
  return fail(ctx, s);
}

}  // namespace trellis::kernel::services::egress
