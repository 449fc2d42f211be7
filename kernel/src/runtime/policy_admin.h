// The policy part of the admin API (behind the admin token):
//   GET  /v1/policies                          active policies: scope, version, name, hooks
//   PUT  /v1/policies/global                   {name, source} -> compile, store, activate
//   PUT  /v1/policies/tenants/{id}             the same for one tenant (overrides global)
//   POST /v1/policies/global/rollback          the version before becomes active again
//   POST /v1/policies/tenants/{id}/rollback
//   DELETE /v1/policies/global | /v1/policies/tenants/{id}   no policy for the scope (a
//                                              tenant falls back to the global); rollback undoes it
// A policy that does not compile or whose top level fails answers 422 with file:line in the
// detail, and the active version stays.
#pragma once

#include <optional>
#include <string_view>

#include "trellis/kernel/http/message.h"
#include "trellis/kernel/http/router.h"
#include "trellis/kernel/lua/policy_engine.h"
#include "trellis/tenants/registry.h"

namespace trellis::kernel::runtime {

class PolicyAdmin {
 public:
  PolicyAdmin(lua::PolicyEngine& engine, const tenants::TenantRegistry& registry);
  // The response, or nullopt if the path is not a policy endpoint.
  std::optional<http::Response> handle(const http::Request& req, std::string_view path);
  // After the tenant API deleted a tenant: its policy versions go too.
  void tenantDeleted(std::string_view tenant);

 private:
  enum Endpoint : size_t {
    kList,
    kApplyGlobal,
    kApplyTenant,
    kRollbackGlobal,
    kRollbackTenant,
    kRemoveGlobal,
    kRemoveTenant
  };
  http::Response dispatch(Endpoint e, const http::Request& req, const http::RouteMatch& m);

  lua::PolicyEngine& engine_;
  const tenants::TenantRegistry& registry_;
  http::Router router_;
};

}  // namespace trellis::kernel::runtime
