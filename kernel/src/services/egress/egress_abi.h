// Host-table entry points for egress HTTP (ABI 1.2, capability "egress"): http_send and
// the calls that read the response behind its handle.
#pragma once

#include "trellis/plugin.h"

namespace trellis::kernel::services {

trellis_status httpSend(const trellis_ctx* ctx, const trellis_http_request* request,
                        trellis_handle* response);
trellis_status httpResponseStatus(const trellis_ctx* ctx, trellis_handle response, int32_t* status);
trellis_status httpResponseHeaders(const trellis_ctx* ctx, trellis_handle response,
                                   trellis_header_visit_fn visit, void* user);
trellis_status httpResponseRead(const trellis_ctx* ctx, trellis_handle response, char* buf,
                                size_t cap, size_t* len);

}  // namespace trellis::kernel::services
