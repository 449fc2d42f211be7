// Host-table entry point for trace context (ABI 1.2): ctx_trace.
#pragma once

#include "trellis/plugin.h"

namespace trellis::kernel::services {

trellis_status ctxTrace(const trellis_ctx* ctx, trellis_str* traceparent, trellis_str* tracestate);

}  // namespace trellis::kernel::services
