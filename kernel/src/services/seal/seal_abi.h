// Host-table entry points of the seal service (ABI 1.2, capability "seal"): key_wrap and
// key_unwrap, bound to the calling plugin, the ctx's tenant ("" for the system) and the
// plugin's label (seal_key.h). UNAVAILABLE when the operator configured no seal key.
#pragma once

#include "trellis/plugin.h"

namespace trellis::kernel::services {

trellis_status keyWrap(const trellis_ctx* ctx, trellis_str label, trellis_str plaintext,
                       trellis_buf* out);
trellis_status keyUnwrap(const trellis_ctx* ctx, trellis_str label, trellis_str sealed,
                         trellis_buf* out);

}  // namespace trellis::kernel::services
