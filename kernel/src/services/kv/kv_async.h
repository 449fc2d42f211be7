// Host-table entry point of kv_put_async: a KV write that suspends the route call
// (runtime/plugin_call.h) instead of blocking its event loop while the write commits.
#pragma once

#include "trellis/plugin.h"

namespace trellis::kernel::services {

trellis_status kvPutAsync(const trellis_ctx* ctx, trellis_str key, trellis_str value,
                          uint64_t expected_version, trellis_kv_put_done_fn done, void* user);

}  // namespace trellis::kernel::services
