// Host-table entry points for inter-plugin services (ABI 1.2): service_provide,
// service_call, service_reply, ctx_caller.
#pragma once

#include "trellis/plugin.h"

namespace trellis::kernel::services {

// Service calls nest at most this deep on one thread (A calls B calls C …).
inline constexpr int kMaxServiceDepth = 8;
// Request and response bytes of one service call.
inline constexpr size_t kMaxServicePayload = 1024 * 1024;

trellis_status serviceProvide(const trellis_ctx* ctx, trellis_str service, trellis_str method,
                              trellis_service_fn fn, void* user);
trellis_status serviceCall(const trellis_ctx* ctx, trellis_str service, trellis_str method,
                           trellis_str request, trellis_buf* response);
trellis_status serviceReply(const trellis_ctx* ctx, trellis_service_reply* reply,
                            trellis_str response);
trellis_status ctxCaller(const trellis_ctx* ctx, trellis_str* out);

}  // namespace trellis::kernel::services
