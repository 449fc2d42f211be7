// Declarative configuration in the admin API (issue #18, `trellis config diff|apply`):
//   POST /v1/config/plan    body: a state file (config::StateFile, YAML or JSON)
//                           -> what applying it would change, and the drift; changes nothing
//   POST /v1/config/apply   the same, then applies it: all or nothing
// Everything is checked before anything changes: the file's shape, the plugins each tenant
// enables (running on this host: enabling a new plugin needs trellis.yaml and a restart,
// and the error says so), each override against the plugin's tenant_config schema, each
// policy compiled, and the registry's part run once in a transaction that is rolled back.
// Apply then activates the policies and commits the registry's part in one transaction; if
// that fails, the policies are put back as they were. The file and its plugins are checked
// on the admin thread; the rest runs on this module's own thread, one request at a time
// (policies run Lua; no Lua runs on the admin listener's thread).
#pragma once

#include <string_view>

#include "runtime/plugin_manager.h"
#include "trellis/kernel/exec/blocking_pool.h"
#include "trellis/kernel/http/message.h"
#include "trellis/kernel/http/router.h"
#include "trellis/kernel/lua/policy_engine.h"
#include "trellis/tenants/registry.h"

namespace trellis::kernel::config {
struct StateFile;
struct StatePolicy;
}  // namespace trellis::kernel::config

namespace trellis::kernel::runtime {

class ConfigAdmin {
 public:
  ConfigAdmin(tenants::TenantRegistry& registry, const PluginManager& plugins,
              lua::PolicyEngine& policies);
  // False if the path is not ours; otherwise `respond` is (or will be) called.
  bool handle(const http::Request& req, std::string_view path, const http::Respond& respond);

 private:
  // How to put one policy scope back: roll back to the version before, or remove it.
  struct PolicyUndo {
    std::string tenant;  // "" = global
    bool rollback = true;
  };
  http::Response run(const http::Request& req, bool apply, const config::StateFile& state);
  // Every plugin a tenant enables runs here; every override fits its plugin's schema.
  Status checkPlugins(const config::StateFile& state) const;
  // Every policy scope exists (or is declared) and every changed policy compiles.
  Status checkPolicies(const config::StateFile& state);
  // Whether the scope's active policy is `policy` already.
  bool unchanged(const std::string& tenant, const config::StatePolicy& policy) const;
  // The policy part of the plan (empty if the file has no `policies`).
  std::vector<tenants::StateChange> policyChanges(const config::StateFile& state) const;
  // Activates the file's policies; each change it made is in `undo` (in order).
  Status applyPolicies(const config::StateFile& state, std::vector<PolicyUndo>& undo);
  void undoPolicies(const std::vector<PolicyUndo>& undo);

  tenants::TenantRegistry& registry_;
  const PluginManager& plugins_;
  lua::PolicyEngine& policies_;
  http::Router router_;
  exec::BlockingPool worker_{1, 4};  // plans and applies, one at a time
};

}  // namespace trellis::kernel::runtime
