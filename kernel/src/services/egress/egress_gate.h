// What every egress host call (http_send and its response reads, stream_connect/write/read)
// does before and around the service, so HTTP and streams enforce one set of rules:
//   - capability "egress" (services/core/host_call.h), and a tenant ctx — or a system
//     plugin's tenant-less ctx once on_init is over (start, admin routes, usage batches,
//     its jobs); INVALID otherwise;
//   - the destination policy: the manifest's rules narrowed by the tenant's "egress:<rule>"
//     grants, or for a system plugin's tenant-less call by the operator's list
//     (plugins.enabled[].egress);
//   - the tenant's egress quotas (none for tenant-less calls), refused with refuseQuota.
//
//   trellis_ctx* ctx = egress::enterEgress(c, "stream_connect", &refused);
//   if (!ctx) return refused;
//   auto policy = egress::policyOf(ctx);
#pragma once

#include <optional>
#include <string>
#include <string_view>

#include "services/core/host_call.h"
#include "services/egress/egress_meter.h"
#include "trellis/kernel/services/egress_policy.h"

namespace trellis::kernel::services::egress {

// The gate: enter() with capability "egress" and the tenant rule above. `call` names the
// host call in refusals.
trellis_ctx* enterEgress(const trellis_ctx* c, std::string_view call, trellis_status* refused);

// INVALID naming `call` when this thread is an event loop (the egress calls block).
Status refuseOnEventLoop(std::string_view call);

Result<Policy> policyOf(const trellis_ctx* ctx);

// The tenant's egress quotas; unset for a tenant-less (system plugin) ctx.
std::optional<Limits> limitsOf(const trellis_ctx* ctx);

// The tenant id for metrics and logs: "_system" for a tenant-less ctx.
std::string tenantLabel(const trellis_ctx* ctx);

// Answers a failed egress call: an EgressMeter refusal through refuseQuota (naming the
// quota), a destination PERMISSION_DENIED counted and audited like a missing grant
// (recordDenial with "egress:<destination>"), anything else as it is.
trellis_status refuse(trellis_ctx* ctx, const Status& s, std::string_view destination);

}  // namespace trellis::kernel::services::egress
