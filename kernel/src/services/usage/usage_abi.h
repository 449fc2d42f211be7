// Host-table entry points for the usage stream: usage_subscribe and usage_ack (system
// plugins), usage_emit (any plugin with capability "usage.emit", for the ctx's tenant).
#pragma once

#include <cstddef>

#include "trellis/plugin.h"

namespace trellis::kernel::services {

inline constexpr size_t kMaxUsageEmitBytes = 4096;

trellis_status usageSubscribe(const trellis_ctx* ctx, trellis_usage_fn fn, void* user);
trellis_status usageAck(const trellis_ctx* ctx, trellis_str cursor);
trellis_status usageEmit(const trellis_ctx* ctx, trellis_str record_json);

}  // namespace trellis::kernel::services
