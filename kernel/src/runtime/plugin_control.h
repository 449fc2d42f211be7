// The admin API's plugin lifecycle endpoints, used by `trellis plugin install/remove`:
//   POST /v1/plugins/install-check        {"id","version","publisher","source","capabilities"}
//        -> 200 {"allowed":true} or 403 naming the policy's reason (on_plugin_install)
//   POST /v1/plugins/{ns}/{name}/activate   load the highest installed version now (hot),
//        or the one named by {"version":"x.y.z"} (a downgrade), in the isolation mode named
//        by {"isolation":"process"|"in-process","dedicated_tenants":[…]} (until restart);
//        an upgrade or a switch swaps routes once the new instance has started and drains
//        the old one
//   POST /v1/plugins/{ns}/{name}/deactivate routes gone, in-flight requests drained, stopped
// All three run on this module's own worker thread, one at a time, and answer from there:
// activation runs a plugin's init (a Lua plugin's top level), deactivation drains, and the
// install check runs the Lua policy; none of it runs on the admin listener's thread, and
// the data plane never waits for it.
#pragma once

#include <chrono>
#include <functional>
#include <optional>
#include <string>
#include <vector>

#include "runtime/plugin_manager.h"
#include "trellis/kernel/exec/blocking_pool.h"
#include "trellis/kernel/http/message.h"
#include "trellis/kernel/http/router.h"

namespace trellis::kernel::runtime {

// What the install policy is asked about.
struct InstallCheck {
  std::string id;
  std::string version;
  std::string publisher;  // the publisher key id that signed the package
  std::string source;     // "registry http://…" or "mirror /srv/m"
  std::vector<std::string> capabilities;
};
// nullopt: allowed; otherwise the reason it is denied. Connect the admin's Lua
// on_plugin_install here (PolicyEngine::onPluginInstall); unset, every install is allowed.
using InstallPolicy = std::function<std::optional<std::string>(const InstallCheck&)>;

class PluginControl {
 public:
  PluginControl(PluginManager& plugins, ActiveRoutes& routes, std::chrono::milliseconds drain);
  void setInstallPolicy(InstallPolicy policy) { policy_ = std::move(policy); }

  // False for any other path; otherwise `respond` is (or will be) called.
  bool handle(const http::Request& req, std::string_view path, const http::Respond& respond);

 private:
  http::Response answer(const http::Request& req, const http::RouteMatch& m);
  http::Response installCheck(const http::Request& req);

  PluginManager& plugins_;
  ActiveRoutes& routes_;
  std::chrono::milliseconds drain_;
  InstallPolicy policy_;
  http::Router router_;
  exec::BlockingPool worker_{1, 16};  // one change at a time
};

}  // namespace trellis::kernel::runtime
