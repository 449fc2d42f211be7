// What every host call does before it reaches a kernel service, shared by the host table
// (runtime/host_api.cc) and the services behind it (services/<name>/). A service's entry
// point passes one gate, in this order:
//   1. the ctx is live on this thread (else INVALID: a kept or forged ctx does nothing);
//   2. the call counts against the tenant's max_host_calls quota for this request;
//   3. the capability is requested in the manifest AND granted by the tenant for this
//      plugin (else PERMISSION_DENIED: counted, logged and published as an audit event);
//   4. a tenant, for services that act for one (else INVALID naming the service).
// Then the service checks its own quota with refuseQuota(), which lets the data plane
// answer with that quota's status (429, 507) when the plugin passes the refusal on.
//
//   trellis_status refused;
//   trellis_ctx* ctx = services::enter(c, "jobs", "job_schedule", Tenant::kRequired, &refused);
//   if (!ctx) return refused;
//   if (count >= limit) return services::refuseQuota(ctx, "max_jobs", limit, "…");
#pragma once

#include <cstdint>
#include <string>
#include <string_view>

#include "runtime/call_context.h"
#include "services/core/handle_table.h"
#include "trellis/plugin.h"
#include "trellis/status.hpp"

namespace trellis::kernel::services {

inline std::string_view view(trellis_str s) {
  return s.ptr == nullptr ? std::string_view() : std::string_view(s.ptr, s.len);
}
inline trellis_str str(std::string_view s) {
  return trellis_str{s.data(), s.size()};
}

// The ctx as a mutable object, or nullptr if the plugin passed something not live here.
trellis_ctx* live(const trellis_ctx* ctx);

// Steps 1 and 2 of the gate; also clears last_error so it describes this call.
trellis_status admitCall(const trellis_ctx* c);

// Step 3: false (and the refusal recorded) unless the plugin may use `capability` for the
// ctx's tenant.
bool granted(trellis_ctx* ctx, std::string_view capability);

// Counts, logs and audits a refusal the way granted() does, for checks made later in a
// call (an egress destination no grant allows): `capability` labels the metric,
// `target` (e.g. "egress:https://api.example.com:443") goes into the audit event.
// ctx->error must already say what was refused.
void recordDenial(trellis_ctx* ctx, std::string_view capability, std::string_view target);

enum class Tenant { kRequired, kOptional };

// The whole gate. Returns the ctx, or nullptr with *refused set. `call` names the host
// call in the message a tenant-less ctx gets.
trellis_ctx* enter(const trellis_ctx* c, std::string_view capability, std::string_view call,
                   Tenant tenant, trellis_status* refused);

// Records `s` as the ctx's last_error and returns its C status.
trellis_status fail(trellis_ctx* ctx, const Status& s);

// A tenant quota refused the call: QUOTA_EXCEEDED, with the quota named for the data plane.
// `quota` must have static storage (a kQuotaFields name).
trellis_status refuseQuota(trellis_ctx* ctx, const char* quota, uint64_t limit,
                           std::string message);

// Copies bytes into memory the plugin owns and releases with buf_free.
void fillBuf(trellis_buf* out, std::string_view bytes);

// The owner a handle opened under this ctx gets (see HandleTable).
HandleOwner ownerOf(const trellis_ctx* ctx);

}  // namespace trellis::kernel::services
