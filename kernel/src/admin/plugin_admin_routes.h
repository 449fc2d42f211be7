// Serving system plugins' admin routes (/v1/x/<namespace>/<name>/…, registered with
// admin_route_add). The admin plane finds the route first, so the gate can check the role
// the route declares; then the handler runs on this module's own small pool (plugin code
// never runs on the admin listener's thread) with no tenant and the admin principal's id
// as ctx_principal. The route table the request found stays alive until it answers, so a
// plugin being upgraded or deactivated is not unloaded under it.
//
//   auto found = routes.find(req, path);            // nullopt: 404
//   auto who = gate.admit(req, path, peer, respond, found->need);
//   routes.invoke(std::move(*found), req, path, *who);
#pragma once

#include <memory>
#include <optional>
#include <string_view>

#include "admin/admin_gate.h"
#include "admin/admin_roles.h"
#include "runtime/plugin_manager.h"
#include "trellis/kernel/exec/blocking_pool.h"
#include "trellis/kernel/http/message.h"

namespace trellis::kernel::admin {

inline constexpr std::string_view kPluginAdminPrefix = "/v1/x/";

class PluginAdminRoutes {
 public:
  explicit PluginAdminRoutes(const runtime::ActiveRoutes& routes) : routes_(routes) {}

  struct Found {
    std::shared_ptr<const runtime::RouteTable> table;
    const runtime::AdminRouteTarget* target = nullptr;
    http::RouteMatch match;
    Requirement need;
  };
  // nullopt: no active system plugin serves this method and path.
  std::optional<Found> find(const http::Request& req, std::string_view path) const;
  // Runs the handler on the pool and answers through `who.respond`.
  void invoke(Found found, const http::Request& req, std::string_view path,
              AdminGate::Admitted who);

 private:
  const runtime::ActiveRoutes& routes_;
  exec::BlockingPool pool_{2, 64};
};

}  // namespace trellis::kernel::admin
