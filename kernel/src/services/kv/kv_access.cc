#include "services/kv/kv_access.h"

#include <string>

#include "services/core/host_call.h"

namespace trellis::kernel::services {

trellis_ctx* kvCall(const trellis_ctx* c, trellis_status* refused) {
  trellis_ctx* ctx = enter(c, "kv", "kv", Tenant::kOptional, refused);
  if (ctx && !ctx->tenant && !ctx->plugin->isSystemPlugin()) {
    ctx->error =
        "kv needs a tenant: call it from a request, job, service or event handler "
        "(only a system plugin has storage of its own outside tenants)";
    *refused = TRELLIS_INVALID;
    return nullptr;
  }
  if (ctx && !ctx->plugin->services().kv) {
    ctx->error = "this host has no key/value store";
    *refused = TRELLIS_UNAVAILABLE;
    return nullptr;
  }
  return ctx;
}

storage::Scope scopeOf(const trellis_ctx* ctx) {
  if (!ctx->tenant) return {std::string(storage::kSystemScopeTenant), ctx->plugin->id()};
  return {ctx->tenant->id, ctx->plugin->id(), ctx->tenant->quotas.max_storage_bytes};
}

}  // namespace trellis::kernel::services
