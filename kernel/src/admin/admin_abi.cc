#include "admin/admin_abi.h"

#include <Poco/JSON/Object.h>
#include <Poco/JSON/Parser.h>
#include <spdlog/spdlog.h>

#include <algorithm>
#include <string>

#include "admin/admin_roles.h"
#include "admin/audit_stream.h"
#include "services/core/host_call.h"
#include "trellis/kernel/events/event_bus.h"
#include "trellis/kernel/http/router.h"
#include "trellis/kernel/metrics/registry.h"
#include "trellis/kernel/util/json.h"

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
  std::string details = "{}";
  if (!d.empty()) {
    try {
      auto v = Poco::JSON::Parser().parse(std::string(d));
      if (v.type() != typeid(Poco::JSON::Object::Ptr)) throw Poco::Exception("not an object");
      details = d;
    } catch (const Poco::Exception&) {
      return refuse(ctx, "audit_emit", Status::invalid("details must be a JSON object"));
    }
  }
  const runtime::HostServices& svc = ctx->plugin->services();
  if (!svc.events) return fail(ctx, Status::unavailable("this host has no audit stream"));
  std::string payload = "{\"action\":";
  util::appendJsonString(payload, a);
  payload += ",\"resource\":";
  util::appendJsonString(payload, r);
  payload += ",\"details\":" + details + "}";
  // Published as the plugin, on a topic plugins cannot publish on themselves.
  if (!svc.events->publish({ctx->tenant ? ctx->tenant->id : "", ctx->plugin->id(), "audit.plugin",
                            std::move(payload)})) {
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

}  // namespace trellis::kernel::admin
