#include "admin/admin_roles.h"

namespace trellis::kernel::admin {

std::string_view roleName(Role r) {
  switch (r) {
    case Role::kAdmin: return "admin";
    case Role::kOperator: return "operator";
    case Role::kAuditor: return "auditor";
    case Role::kBilling: return "billing";
  }
  return "admin";
}

std::optional<Role> parseRole(std::string_view text) {
  for (Role r : {Role::kAdmin, Role::kOperator, Role::kAuditor, Role::kBilling}) {
    if (roleName(r) == text) return r;
  }
  return std::nullopt;
}

bool satisfies(Role role, const Requirement& need) {
  switch (role) {
    case Role::kAdmin: return true;
    case Role::kOperator: return need.operator_ok;
    case Role::kAuditor: return need.auditor_ok;
    case Role::kBilling: return need.billing_ok;
  }
  return false;
}

Requirement kernelRouteRequirement(std::string_view method, std::string_view path) {
  constexpr Requirement kAdminOnly{false, false, false, "admin"};
  constexpr Requirement kChange{true, false, false, "operator"};
  constexpr Requirement kRead{true, true, false, "read (admin, operator or auditor)"};
  constexpr Requirement kReadWithBilling{true, true, true, "read"};
  const bool read = method == "GET" || method == "HEAD";
  // Who may act as whom, and which plugins get system powers: admin alone.
  if (path == "/v1/admin-tokens" || path.starts_with("/v1/admin-tokens/")) {
    return kAdminOnly;
  }
  if (path == "/v1/system-grants" ||
      (path.starts_with("/v1/plugins/") && path.ends_with("/system"))) {
    return read ? kRead : kAdminOnly;
  }
  if (!read) return kChange;
  // Billing reads tenants, their usage and the host's status; nothing about keys,
  // certificate credentials, plugin configuration, policies or plugins.
  if (path == "/v1/status" || path == "/metrics" || path == "/v1/tenants" ||
      (path.starts_with("/v1/tenants/") && !path.ends_with("/keys") && !path.ends_with("/certs") &&
       !path.ends_with("/config"))) {
    return kReadWithBilling;
  }
  return kRead;
}

Requirement pluginRouteRequirement(Role declared) {
  switch (declared) {
    case Role::kAdmin: return {false, false, false, "admin"};
    case Role::kOperator: return {true, false, false, "operator"};
    case Role::kAuditor: return {false, true, false, "auditor"};
    case Role::kBilling: return {false, false, true, "billing"};
  }
  return {false, false, false, "admin"};
}

}  // namespace trellis::kernel::admin
