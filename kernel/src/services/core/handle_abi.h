// Host-table entry points for handles (ABI 1.2): handle_close.
#pragma once

#include "trellis/plugin.h"

namespace trellis::kernel::services {

trellis_status handleClose(const trellis_ctx* ctx, trellis_handle handle);

}  // namespace trellis::kernel::services
