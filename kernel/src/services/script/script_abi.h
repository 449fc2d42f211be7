// Host-table entry points for scripts (ABI 1.2, capability "script"): script_load, which
// opens a handle on a sandboxed Lua state (script.h), and script_call on that handle.
// handle_close releases a script (core/handle_abi.h); the host releases what a plugin
// leaves open when it stops.
#pragma once

#include "trellis/plugin.h"

namespace trellis::kernel::services {

trellis_status scriptLoad(const trellis_ctx* ctx, trellis_str source,
                          const trellis_script_options* options, trellis_handle* script);
trellis_status scriptCall(const trellis_ctx* ctx, trellis_handle script, trellis_str function,
                          trellis_str input_json, trellis_buf* output_json);

}  // namespace trellis::kernel::services
