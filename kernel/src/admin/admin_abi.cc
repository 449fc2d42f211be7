#include "admin/admin_abi.h"

#include <spdlog/spdlog.h>

#include <algorithm>
#include <string>

#include "admin/admin_roles.h"
#include "admin/audit_stream.h"
#include "services/core/host_call.h"
#include "services/trace/trace_context.h"
#include "trellis/kernel/events/event_bus.h"
#include "trellis/kernel/http/router.h"
#include "trellis/kernel/metrics/registry.h"
#include "trellis/kernel/util/json.h"
#include "trellis/tenants/registry.h"

namespace trellis::kernel::admin {
namespace {

using services::fail;
using services::view;

bool isActionName(std::string_view s) {
  return !s.empty() && s.size() <= 128 && std::all_of(s.begin(), s.end(), [](char c) {
    return (c >= 'a' && c <= 'z') || (c >= '0' && c <= '9') || c == '.' || c == '_' || c == '-';
  });
}

bool isToken(std::string_view s) {
  return !s.empty() && std::all_of(s.begin(), s.end(), [](char c) { return c >= 'A' && c <= 'Z'; });
}

// A refused call is counted, published for the audit stream and returned with `why`.
trellis_status refuse(trellis_ctx* ctx, std::string_view call, const Status& why) {
  const runtime::HostServices& svc = ctx->plugin->services();
  if (svc.metrics) {
    svc.metrics
        ->counter("trellis_plugin_admin_refusals_total",
                  "audit_emit and admin_route_add calls refused (size, prefix, scope)",
                  {"plugin", "call"})
        .labels({ctx->plugin->id(), std::string(call)})
        .add(1);
  }
  if (svc.events) {
    std::string payload = "{\"plugin\":";
    util::appendJsonString(payload, ctx->plugin->id());
    payload += ",\"call\":";
    util::appendJsonString(payload, call);
    payload += ",\"reason\":";
    util::appendJsonString(payload, why.message());
    payload += "}";
    svc.events->publish({ctx->tenant ? ctx->tenant->id : "", "kernel", "audit.plugin_call_refused",
                         std::move(payload)});
  }
  spdlog::warn("plugin={} {} refused: {}", ctx->plugin->id(), call, why.message());
  return fail(ctx, why);
}

}  // namespace

trellis_status auditEmit(const trellis_ctx* c, trellis_str action, trellis_str resource,
                         trellis_str details_json) {
  if (trellis_status s = services::admitCall(c); s != TRELLIS_OK) return s;
  trellis_ctx* ctx = services::live(c);
  const std::string_view a = view(action), r = view(resource), d = view(details_json);
  if (a.size() + r.size() + d.size() > kMaxPluginAuditBytes) {
    return refuse(
        ctx, "audit_emit",
        Status::invalid("audit record of " + std::to_string(a.size() + r.size() + d.size()) +
                        " bytes exceeds the 16 KiB limit"));
  }
  if (!isActionName(a)) {
    return refuse(ctx, "audit_emit", Status::invalid("action must be 1-128 of [a-z0-9._-]"));
  }
  if (r.size() > 1024) {
    return refuse(ctx, "audit_emit", Status::invalid("resource is longer than 1024 bytes"));
  }
  if (!d.empty() && !util::isJsonObject(d)) {
    return refuse(ctx, "audit_emit",
                  Status::invalid("details must be a JSON object (nested at most " +
                                  std::to_string(util::kMaxJsonDepth) + " levels)"));
  }
  const runtime::HostServices& svc = ctx->plugin->services();
  if (!svc.events) return fail(ctx, Status::unavailable("this host has no audit stream"));
  std::string payload = pluginRecordPayload(a, r, d.empty() ? "{}" : d);
  // Published as the plugin, on a topic plugins cannot publish on themselves. Batched: a
  // plugin may emit one per request, and these records guard no action, so the event thread
  // is woken once per batch rather than once per record.
  if (!svc.events->publish({ctx->tenant ? ctx->tenant->id : "", ctx->plugin->id(), "audit.plugin",
                            std::move(payload)},
                           events::Delivery::kBatched)) {
    return fail(ctx, Status::unavailable("the audit queue is full; retry"));
  }
  return TRELLIS_OK;
}

trellis_status adminRouteAdd(const trellis_ctx* c, trellis_str method, trellis_str pattern,
                             trellis_str role, trellis_handler_fn handler, void* user) {
  if (trellis_status s = services::admitCall(c); s != TRELLIS_OK) return s;
  trellis_ctx* ctx = services::live(c);
  if (ctx->phase != runtime::Phase::kInit) {
    return fail(ctx, Status::invalid("admin_route_add outside on_init"));
  }
  if (!handler) return fail(ctx, Status::invalid("admin_route_add needs a handler"));
  if (!ctx->plugin->isSystemPlugin()) {
    return refuse(ctx, "admin_route_add",
                  Status::permissionDenied("admin routes are for system plugins (manifest "
                                           "\"scope\": \"system\" and the operator's grant)"));
  }
  std::string m(view(method)), p(view(pattern));
  const std::string prefix = "/v1/x/" + ctx->plugin->id() + "/";
  if (!p.starts_with(prefix) || p.size() == prefix.size()) {
    return refuse(ctx, "admin_route_add",
                  Status::invalid("admin route " + p + " is outside the plugin's prefix " + prefix +
                                  " (routes must be " + prefix + "<path>)"));
  }
  if (m != "*" && !isToken(m)) return fail(ctx, Status::invalid("invalid method \"" + m + "\""));
  auto declared = parseRole(view(role));
  if (!declared) {
    return fail(ctx, Status::invalid("role must be admin, operator, auditor or billing, got \"" +
                                     std::string(view(role)) + "\""));
  }
  http::Router probe;
  if (Status s = probe.add(m, p, 0); !s) return fail(ctx, s);
  for (const auto& r : ctx->plugin->admin_routes) {
    if (r.method == m && r.pattern == p) {
      return fail(ctx, Status::conflict("admin route " + m + " " + p + " registered twice"));
    }
  }
  ctx->plugin->admin_routes.push_back(
      {std::move(m), std::move(p), std::string(roleName(*declared)), handler, user});
  return TRELLIS_OK;
}

trellis_status actForTenant(const trellis_ctx* c, trellis_str tenant, trellis_str reason,
                            trellis_tenant_fn fn, void* user) {
  if (trellis_status s = services::admitCall(c); s != TRELLIS_OK) return s;
  trellis_ctx* ctx = services::live(c);
  if (!fn) return fail(ctx, Status::invalid("act_for_tenant needs a function"));
  if (!ctx->plugin->isSystemPlugin()) {
    return refuse(ctx, "act_for_tenant",
                  Status::permissionDenied("acting for a tenant is for system plugins (manifest "
                                           "\"scope\": \"system\" and the operator's grant)"));
  }
  // A tenant ctx already acts for its tenant, and a service method answers for its caller
  // (the audit sink's write, called under the audit stream's lock, among them).
  if (ctx->tenant) {
    return fail(ctx, Status::invalid("act_for_tenant from a tenant ctx (it already acts for " +
                                     ctx->tenant->id + ")"));
  }
  if (ctx->phase == runtime::Phase::kService) {
    return fail(ctx, Status::invalid("act_for_tenant inside a service method"));
  }
  const std::string_view id = view(tenant), why = view(reason);
  if (why.empty() || why.size() > 256) {
    return fail(ctx, Status::invalid("act_for_tenant: the reason must be 1-256 bytes, not " +
                                     std::to_string(why.size())));
  }
  const runtime::HostServices& svc = ctx->plugin->services();
  if (!svc.tenants) return fail(ctx, Status::unavailable("this host has no tenant registry"));
  std::shared_ptr<const tenants::TenantView> target = svc.tenants->view(id);
  if (!target) {
    return fail(ctx, Status::notFound("act_for_tenant: no tenant \"" + std::string(id) + "\""));
  }
  if (target->status != tenants::TenantStatus::kActive) {
    return fail(ctx, Status::unavailable("act_for_tenant: tenant " + target->id + " is suspended"));
  }
  // Recorded before the plugin acts: in block mode an unrecorded act does not happen.
  if (svc.audit) {
    AuditRecord record;
    record.type = "plugin";
    record.principal = ctx->plugin->id();
    record.action = "system.act_for_tenant";
    record.resource = target->id;
    record.tenant = target->id;
    record.parameters = "{\"reason\":";
    util::appendJsonString(record.parameters, why);
    record.parameters += "}";
    record.outcome = "pending";
    if (ctx->trace) record.trace_id = std::string(ctx->trace->traceId());
    if (Status s = svc.audit->write(std::move(record), true); !s) return fail(ctx, s);
  }
  trellis_ctx inner;
  inner.plugin = ctx->plugin;
  inner.tenant = target.get();
  inner.trace = ctx->trace;
  inner.phase = ctx->phase;
  inner.max_host_calls = target->quotas.max_host_calls.value_or(UINT64_MAX);
  trellis_status status = TRELLIS_INTERNAL;
  {
    runtime::CallScope scope(&inner);
    try {
      status = fn(user, &inner);
    } catch (...) {  // a plugin broke the ABI rule; contain it anyway
      inner.error = "exception escaped the act_for_tenant function";
    }
  }
  // The plugin's own message from inside says what went wrong for the tenant.
  if (status != TRELLIS_OK && !inner.error.empty()) ctx->error = inner.error;
  return status;
}

}  // namespace trellis::kernel::admin
