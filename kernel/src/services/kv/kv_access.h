// The gate every KV host call passes (kv_get, kv_put, kv_put_async, kv_delete, kv_list),
// and the storage scope a call reaches. The host, not the plugin, names the scope.
#pragma once

#include "runtime/call_context.h"
#include "trellis/kernel/storage/kv_store.h"
#include "trellis/plugin.h"

namespace trellis::kernel::services {

// The ctx, past the host-call gate with capability "kv", or nullptr with *refused set.
// KV needs a tenant: every piece of plugin data belongs to one. A tenant's ctx reaches
// that tenant's storage; a system plugin's ctx without a tenant (admin routes, on_init,
// on_start) reaches the plugin's own system storage.
trellis_ctx* kvCall(const trellis_ctx* c, trellis_status* refused);

storage::Scope scopeOf(const trellis_ctx* ctx);

}  // namespace trellis::kernel::services
