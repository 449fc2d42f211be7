#include "admin/plugin_admin_routes.h"

#include <spdlog/spdlog.h>

#include "runtime/call_context.h"
#include "runtime/responses.h"
#include "services/trace/trace_context.h"
#include "trellis/kernel/http/problem.h"

namespace trellis::kernel::admin {
namespace bhttp = boost::beast::http;

std::optional<PluginAdminRoutes::Found> PluginAdminRoutes::find(const http::Request& req,
                                                                std::string_view path) const {
  if (!path.starts_with(kPluginAdminPrefix)) return std::nullopt;
  auto table = routes_.load();
  auto m = table->admin_router.match(req.method_string(), path);
  if (!m) return std::nullopt;
  const runtime::AdminRouteTarget* target = &table->admin_targets[m->target];
  auto role = parseRole(target->role);
  return Found{std::move(table), target, std::move(*m),
               pluginRouteRequirement(role.value_or(Role::kAdmin))};
}

void PluginAdminRoutes::invoke(Found found, const http::Request& req, std::string_view path,
                               AdminGate::Admitted who) {
  auto shared = std::make_shared<Found>(std::move(found));
  auto respond = who.respond;
  bool queued = pool_.trySubmit([shared, &req, path, who = std::move(who)]() mutable {
    const runtime::AdminRouteTarget& target = *shared->target;
    // A revoked grant ends system powers at once, routes included.
    if (!target.plugin->isSystemPlugin()) {
      return who.respond(http::problem(
          403, "Forbidden", target.plugin->id() + " no longer has system scope", {}, &req));
    }
    const std::string_view target_text = req.target();
    const auto q = target_text.find('?');
    const services::TraceContext trace = services::TraceContext::root();
    trellis_ctx ctx;
    ctx.plugin = target.plugin;
    ctx.principal = who.principal.id;
    ctx.request_id = who.request_id;
    ctx.trace = &trace;
    ctx.phase = runtime::Phase::kRequest;
    trellis_request request;
    request.http = &req;
    request.match = &shared->match;
    request.path = path;
    request.query = q == std::string_view::npos ? std::string_view() : target_text.substr(q + 1);
    trellis_response response;
    response.http.version(req.version());
    response.http.result(bhttp::status::ok);
    trellis_status status = TRELLIS_INTERNAL;
    try {
      runtime::CallScope scope(&ctx);
      status = target.handler(target.user, &ctx, &request, &response);
    } catch (...) {
      ctx.error = "exception escaped the plugin's admin handler";
    }
    if (status == TRELLIS_OK) {
      response.http.keep_alive(req.keep_alive());
      return who.respond(std::move(response.http));
    }
    const unsigned code = runtime::httpStatusFor(status);
    spdlog::log(code < 500 ? spdlog::level::info : spdlog::level::err,
                "plugin={} admin route {} {} failed: {}{}", target.plugin->id(), target.method,
                target.pattern, statusCodeName(static_cast<StatusCode>(status)),
                ctx.error.empty() ? "" : ": " + ctx.error);
    who.respond(http::problem(
        code, bhttp::obsolete_reason(static_cast<bhttp::status>(code)),
        "the plugin " + target.plugin->id() + " could not handle the admin request", {}, &req));
  });
  if (!queued) {
    respond(
        http::problem(503, "Service Unavailable", "too many plugin admin calls; retry", {}, &req));
  }
}

}  // namespace trellis::kernel::admin
