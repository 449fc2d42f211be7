// Per-tenant plugin configuration in the admin API (issue #18):
//   GET    /v1/tenants/{id}/plugins/{ns}/{name}/config   the overrides and the schema
//   PUT    /v1/tenants/{id}/plugins/{ns}/{name}/config   replace the overrides (a JSON object)
//   DELETE /v1/tenants/{id}/plugins/{ns}/{name}/config   remove them
// A tenant may override only the keys the plugin's manifest declares in "tenant_config";
// a refusal names the document path at fault (`/greeting: longer than 80 bytes`). The
// plugin reads the merged value through config_get under that tenant's ctx, from its next
// call on: no restart. The admin gate audits each change like any admin call.
#pragma once

#include <optional>
#include <string_view>

#include "runtime/plugin_manager.h"
#include "trellis/kernel/http/message.h"
#include "trellis/kernel/http/router.h"
#include "trellis/tenants/registry.h"

namespace trellis::kernel::runtime {

class TenantConfigAdmin {
 public:
  // Both are used from the admin thread only.
  TenantConfigAdmin(tenants::TenantRegistry& registry, const PluginManager& plugins);

  // The response, or nullopt if the path is not one of ours.
  std::optional<http::Response> handle(const http::Request& req, std::string_view path);

 private:
  http::Response show(const http::Request& req, const std::string& tenant,
                      const PluginInstance& plugin) const;

  tenants::TenantRegistry& registry_;
  const PluginManager& plugins_;
  http::Router router_;
};

}  // namespace trellis::kernel::runtime
