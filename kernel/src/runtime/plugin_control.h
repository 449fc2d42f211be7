// The admin API's plugin lifecycle endpoints, used by `trellis plugin install/remove`:
//   POST /v1/plugins/install-check        {"id","version","publisher","source","capabilities"}
//        -> 200 {"allowed":true} or 403 naming the policy's reason (on_plugin_install)
//   POST /v1/plugins/{ns}/{name}/activate   load the highest installed version now (hot),
//        or the one named by {"version":"x.y.z"} (a downgrade);
//        an upgrade swaps routes once the new version has started and drains the old one
//   POST /v1/plugins/{ns}/{name}/deactivate routes gone, in-flight requests drained, stopped
// Activations are serialised; the data plane never waits for them.
#pragma once

#include <chrono>
#include <functional>
#include <mutex>
#include <optional>
#include <string>
#include <vector>

#include "runtime/plugin_manager.h"
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

  // An answer for our endpoints; nullopt for any other path.
  std::optional<http::Response> handle(const http::Request& req, std::string_view path);

 private:
  http::Response installCheck(const http::Request& req);

  PluginManager& plugins_;
  ActiveRoutes& routes_;
  std::chrono::milliseconds drain_;
  InstallPolicy policy_;
  http::Router router_;
  std::mutex mu_;  // one activation at a time
};

}  // namespace trellis::kernel::runtime
