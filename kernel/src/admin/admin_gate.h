// What every admin API call passes before it reaches an endpoint, in this order:
//   1. authentication: the bearer token names an admin principal (admin_principals.h) or,
//      without an Authorization header, the client certificate the listener verified is
//      bound to one; 401 otherwise, and a revoked principal's token is refused by name. Failures
//      are audited once per (claimed principal id, source address) per minute, with the previous
//      minute's count, so a password-spraying client cannot flood the sink;
//   2. authorization: the principal's role satisfies the route's requirement
//      (admin_roles.h); 403 problem+json otherwise (audited as "denied");
//   3. the audit request record reaches the sink (audit_stream.h); in block mode a record
//      that cannot be stored refuses the call with 503 before anything changes.
// The Respond it hands back writes the response record (status, outcome) and sets
// X-Request-Id before answering. /healthz and /readyz never come here; /metrics is
// authenticated and authorized but not audited (scrapes would drown the trail).
//
//   auto respond2 = gate.admit(req, path, peer, std::move(respond));
//   if (!respond2) return;            // already answered: 401, 403 or 503
//   ...dispatch with *respond2...
#pragma once

#include <chrono>
#include <map>
#include <mutex>
#include <optional>
#include <string>
#include <string_view>
#include <utility>

#include "admin/admin_principals.h"
#include "admin/admin_roles.h"
#include "admin/audit_stream.h"
#include "admin/audit_windows.h"
#include "trellis/kernel/http/message.h"

namespace trellis::kernel::metrics {
class MetricsRegistry;
class Counter;
}  // namespace trellis::kernel::metrics

namespace trellis::kernel::admin {

class AdminGate {
 public:
  AdminGate(AdminPrincipals& principals, AuditStream& audit, metrics::MetricsRegistry& metrics);

  // For the listener's screen(): 401 unless the token authenticates (bodies are read only
  // for principals).
  std::optional<http::Response> screen(const http::Request& req, const http::Peer& peer);

  // Steps 1-3. `need` overrides the kernel table (a plugin route's declared role).
  struct Admitted {
    http::Respond respond;  // answers and writes the response record
    Principal principal;
    std::string request_id;
    std::string trace_id;
  };
  std::optional<Admitted> admit(const http::Request& req, std::string_view path,
                                const http::Peer& peer, http::Respond respond,
                                std::optional<Requirement> need = std::nullopt);

  AdminPrincipals& principals() { return principals_; }
  AuditStream& audit() { return audit_; }

 private:
  // The principal, or the 401 to send (after auditing the failure).
  std::optional<Principal> authenticate(const http::Request& req, const http::Peer& peer,
                                        http::Response* refusal);
  void auditAuthFailure(const std::string& claimed, const std::string& source,
                        const std::string& reason);

  AdminPrincipals& principals_;
  AuditStream& audit_;
  metrics::Counter* auth_failures_;
  metrics::Counter* role_denials_;
  AuditWindows failures_;
};

}  // namespace trellis::kernel::admin
