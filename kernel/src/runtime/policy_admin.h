// The policy part of the admin API (behind the admin token):
//   GET  /v1/policies                          active policies: scope, version, name, hooks
//   PUT  /v1/policies/global                   {name, source} -> compile, store, activate
//   PUT  /v1/policies/tenants/{id}             the same for one tenant (overrides global)
//   POST /v1/policies/global/rollback          the version before becomes active again
//   POST /v1/policies/tenants/{id}/rollback
//   DELETE /v1/policies/global | /v1/policies/tenants/{id}   no policy for the scope (a
//                                              tenant falls back to the global); rollback undoes it
// A policy that does not compile or whose top level fails (or overruns its budget) answers
// 422 with file:line in the detail, and the active version stays. Applies and rollbacks run
// the policy's top level on this module's own compiler thread, one at a time, and answer
// from there: no Lua runs on the admin listener's thread.
#pragma once

#include <optional>
#include <string_view>

#include "trellis/kernel/exec/blocking_pool.h"
#include "trellis/kernel/http/message.h"
#include "trellis/kernel/http/router.h"
#include "trellis/kernel/lua/policy_engine.h"
#include "trellis/tenants/registry.h"

namespace trellis::kernel::runtime {

class PolicyAdmin {
 public:
  PolicyAdmin(lua::PolicyEngine& engine, const tenants::TenantRegistry& registry);
  // False if the path is not a policy endpoint; otherwise `respond` is (or will be) called.
  bool handle(const http::Request& req, std::string_view path, const http::Respond& respond);
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
  http::Response dispatch(Endpoint e, const http::Request& req, const std::string& tenant);

  lua::PolicyEngine& engine_;
  const tenants::TenantRegistry& registry_;
  http::Router router_;
  exec::BlockingPool compiler_{1, 16};  // applies and rollbacks: they run Lua
};

}  // namespace trellis::kernel::runtime
