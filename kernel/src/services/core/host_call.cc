#include "services/core/host_call.h"

#include <spdlog/spdlog.h>

#include <cstdlib>
#include <cstring>

#include "trellis/kernel/events/event_bus.h"
#include "trellis/kernel/metrics/registry.h"
#include "trellis/kernel/util/json.h"

namespace trellis::kernel::services {
using runtime::CallScope;

trellis_ctx* live(const trellis_ctx* ctx) {
  return CallScope::isLive(ctx) ? const_cast<trellis_ctx*>(ctx) : nullptr;
}

// Every status-returning host call a plugin makes while serving a request (service
// methods it calls included) counts against the tenant's max_host_calls quota; past it,
// calls fail with QUOTA_EXCEEDED. Other calls have no limit (max_host_calls stays MAX).
trellis_status admitCall(const trellis_ctx* c) {
  trellis_ctx* ctx = live(c);
  if (!ctx) return TRELLIS_INVALID;
  ctx->error.clear();  // last_error describes this call, not an earlier one
  if (++ctx->host_calls > ctx->max_host_calls) {
    return refuseQuota(ctx, "max_host_calls", ctx->max_host_calls,
                       "host call quota of " + std::to_string(ctx->max_host_calls) +
                           " calls per request exceeded");
  }
  return TRELLIS_OK;
}

// Refusals are counted, logged and published on the audit topic, so operators see what
// plugins try. The grant is the manifest's request narrowed by the tenant's grants.
bool granted(trellis_ctx* ctx, std::string_view capability) {
  bool requested = ctx->plugin->manifest().hasCapability(capability);
  if (requested && (!ctx->tenant || ctx->tenant->grantsCapability(ctx->plugin->id(), capability))) {
    return true;
  }
  ctx->error = requested ? "capability \"" + std::string(capability) +
                               "\" is not granted to this plugin by tenant " + ctx->tenant->id
                         : "capability \"" + std::string(capability) +
                               "\" was not requested in the manifest";
  recordDenial(ctx, capability, capability);
  return false;
}

void recordDenial(trellis_ctx* ctx, std::string_view capability, std::string_view target) {
  ctx->plugin->denied_calls.fetch_add(1, std::memory_order_relaxed);
  const runtime::HostServices& svc = ctx->plugin->services();
  if (svc.metrics) {
    svc.metrics
        ->counter("trellis_plugin_capability_denied_total",
                  "Host calls refused because the plugin lacks the capability",
                  {"plugin", "capability"})
        .labels({ctx->plugin->id(), std::string(capability)})
        .add(1);
  }
  if (svc.events) {
    std::string payload = "{\"plugin\":";
    util::appendJsonString(payload, ctx->plugin->id());
    payload += ",\"capability\":";
    util::appendJsonString(payload, target);
    payload += "}";
    svc.events->publish({ctx->tenant ? ctx->tenant->id : "", "kernel", "audit.capability_denied",
                         std::move(payload)});
  }
  spdlog::warn("plugin={} tenant={} denied: {}", ctx->plugin->id(),
               ctx->tenant ? ctx->tenant->id : "-", ctx->error);
}

trellis_ctx* enter(const trellis_ctx* c, std::string_view capability, std::string_view call,
                   Tenant tenant, trellis_status* refused) {
  if (*refused = admitCall(c); *refused != TRELLIS_OK) return nullptr;
  trellis_ctx* ctx = live(c);
  if (!granted(ctx, capability)) {
    *refused = TRELLIS_PERMISSION_DENIED;
    return nullptr;
  }
  if (tenant == Tenant::kRequired && !ctx->tenant) {
    ctx->error = std::string(call) +
                 " needs a tenant: call it from a request, job, service or event handler";
    *refused = TRELLIS_INVALID;
    return nullptr;
  }
  return ctx;
}

trellis_status fail(trellis_ctx* ctx, const Status& s) {
  ctx->error = s.message();
  return s.toC();
}

trellis_status refuseQuota(trellis_ctx* ctx, const char* quota, uint64_t limit,
                           std::string message) {
  ctx->refused_quota = quota;
  ctx->refused_limit = limit;
  ctx->error = std::move(message);
  return TRELLIS_QUOTA_EXCEEDED;
}

void fillBuf(trellis_buf* out, std::string_view bytes) {
  out->len = bytes.size();
  out->ptr = static_cast<char*>(std::malloc(bytes.empty() ? 1 : bytes.size()));
  if (!bytes.empty()) std::memcpy(out->ptr, bytes.data(), bytes.size());
}

HandleOwner ownerOf(const trellis_ctx* ctx) {
  return {ctx->plugin, ctx->tenant ? std::string_view(ctx->tenant->id) : std::string_view()};
}

}  // namespace trellis::kernel::services
