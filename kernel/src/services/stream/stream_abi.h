// Host-table entry points for egress streams (ABI 1.2, capability "egress"): stream_connect
// and the calls on the handle it opens. handle_close releases a stream (core/handle_abi.h).
#pragma once

#include "trellis/plugin.h"

namespace trellis::kernel::services {

trellis_status streamConnect(const trellis_ctx* ctx, const trellis_stream_options* options,
                             trellis_handle* stream);
trellis_status streamWrite(const trellis_ctx* ctx, trellis_handle stream, trellis_str bytes);
trellis_status streamRead(const trellis_ctx* ctx, trellis_handle stream, char* buf, size_t cap,
                          size_t* len);

}  // namespace trellis::kernel::services
