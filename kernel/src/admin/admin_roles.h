// Admin roles, and the role each kernel admin route needs. A route's requirement is
// declared here, in one table (kernel routes) or at registration (plugin admin routes,
// /v1/x/…); the admin plane checks it after authentication and before anything runs.
// A principal whose role does not satisfy it gets 403 problem+json.
//
//   admin     everything, including admin tokens and system grants
//   operator  everything else that changes the host: tenants, keys, plugins, policies, jobs
//   auditor   read-only (every GET) plus routes that declare "auditor" (audit plugins')
//   billing   tenants, usage and status (GET) plus routes that declare "billing"
//
//   Requirement need = kernelRouteRequirement("POST", "/v1/tenants");
//   if (!satisfies(principal.role, need)) -> 403
#pragma once

#include <optional>
#include <string>
#include <string_view>

namespace trellis::kernel::admin {

enum class Role { kAdmin, kOperator, kAuditor, kBilling };

std::string_view roleName(Role r);
std::optional<Role> parseRole(std::string_view text);  // "admin" | "operator" | …

// Which roles may call a route. Admin may always.
struct Requirement {
  bool operator_ok = false;
  bool auditor_ok = false;
  bool billing_ok = false;
  std::string_view label;  // for the 403 message: "operator", "read", "admin"
};

bool satisfies(Role role, const Requirement& need);

// What a kernel admin route needs: admin tokens and system grants need admin; other
// changes need operator; reads are open to auditors, and tenant/usage/status reads to
// billing as well.
Requirement kernelRouteRequirement(std::string_view method, std::string_view path);

// The requirement of a plugin admin route that declares `declared`: that role and admin.
// (An auditor's route is not an operator's: audit trails are read apart from those who
// change the host.)
Requirement pluginRouteRequirement(Role declared);

}  // namespace trellis::kernel::admin
