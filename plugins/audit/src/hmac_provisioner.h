// Provisions the per-tenant HMAC keys from secrets.v1, as the plugin's own periodic job and
// never on the append path: secrets.v1 audits every call into the same tenant's log, so a
// call made while appending would recurse into the sink (or, with the sink fail-closed,
// wait on itself).
//
// A run asks secrets.v1 "status" (tenant-less, touches no data) and stops there when the
// service is absent or sealed, so a sealed store costs the tenants' logs nothing. Otherwise,
// for each tenant that wants its key (hmac_keys.h), acting for that tenant (one audited
// act_for_tenant): ensure_key {"key":"audit-hmac"} and datakey (wrapped) for a new
// generation, then decrypt of the wrapped key; the sink stores only the wrapped form and keeps
// the plain key in memory. After a restart only the decrypt is needed. A tenant whose attempt
// fails (it has not enabled trellis/secrets, a grant narrows service:secrets.v1, ...) is
// retried with backoff; GET hmac-keys shows why.
//
//   HmacProvisioner provisioner(sink, /*retry_ms=*/10'000);
//   ctx.onJob(... provisioner.run(c) ...);   // under HmacProvisioner::kJobName
#pragma once

#include <cstdint>
#include <string_view>

#include "sink.h"
#include "trellis/plugin.hpp"

namespace trellis::audit {

class HmacProvisioner {
 public:
  static constexpr std::string_view kJobName = "hmac-keys";
  static constexpr std::string_view kService = "secrets.v1";
  static constexpr std::string_view kTransitKey = "audit-hmac";

  HmacProvisioner(AuditSink& sink, int64_t retry_ms) : sink_(sink), retry_ms_(retry_ms) {}

  // One pass over the tenants whose key is due. Failures are per tenant (kept for GET
  // hmac-keys and retried later): the run itself fails only when it could not look.
  Status run(Context& ctx);

 private:
  // Whether secrets.v1 can answer for tenants now (present and unsealed).
  bool secretsReady(Context& ctx);
  void provision(Context& ctx, const KeyTask& task);

  AuditSink& sink_;
  int64_t retry_ms_;
  bool said_unavailable_ = false;  // log a change of state once, not every run
};

}  // namespace trellis::audit
