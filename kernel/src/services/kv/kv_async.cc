#include "services/kv/kv_async.h"

#include <optional>
#include <utility>

#include "runtime/plugin_call.h"
#include "services/core/host_call.h"
#include "services/kv/kv_access.h"
#include "storage/internal/kv_keys.h"

namespace trellis::kernel::services {

trellis_status kvPutAsync(const trellis_ctx* c, trellis_str key, trellis_str value,
                          uint64_t expected_version, trellis_kv_put_done_fn done, void* user) {
  trellis_status refused = TRELLIS_OK;
  trellis_ctx* ctx = kvCall(c, &refused);
  if (!ctx) return refused;
  if (!done) return fail(ctx, Status::invalid("kv_put_async needs a completion function"));
  runtime::PluginCall* call = ctx->suspendable;
  if (!call) {
    return fail(
        ctx, Status::invalid("kv_put_async works only in a route handler (or its completion) that "
                             "runs on an event loop; in blocking routes, jobs, events and services "
                             "use kv_put"));
  }
  if (Status s = call->canSuspend(); !s) return fail(ctx, s);
  if (Status s = storage::internal::validatePut(view(key), view(value)); !s) return fail(ctx, s);

  auto resume = call->suspend(done, user);
  const std::optional<uint64_t> quota = ctx->tenant->quotas.max_storage_bytes;
  ctx->plugin->services().kv->putAsync(scopeOf(ctx), view(key), view(value), expected_version,
                                       [resume = std::move(resume), quota](Result<uint64_t> put) {
                                         runtime::PluginCall::Outcome outcome;
                                         if (put) {
                                           outcome.version = *put;
                                         } else {
                                           outcome.status = put.status().toC();
                                           outcome.error = put.status().message();
                                           if (put.status().code() == StatusCode::kQuotaExceeded) {
                                             outcome.refused_quota = "max_storage_bytes";
                                             outcome.refused_limit = quota.value_or(0);
                                           }
                                         }
                                         resume(std::move(outcome));
                                       });
  return TRELLIS_OK;
}

}  // namespace trellis::kernel::services
