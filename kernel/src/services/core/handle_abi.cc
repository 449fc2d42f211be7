#include "services/core/handle_abi.h"

#include "services/core/host_call.h"

namespace trellis::kernel::services {

trellis_status handleClose(const trellis_ctx* c, trellis_handle handle) {
  if (trellis_status s = admitCall(c); s != TRELLIS_OK) return s;
  trellis_ctx* ctx = live(c);
  HandleTable* handles = ctx->plugin->services().handles;
  if (!handles) return fail(ctx, Status::unavailable("this host holds no handles"));
  Status s = handles->close(ownerOf(ctx), handle);
  return s ? TRELLIS_OK : fail(ctx, s);
}

}  // namespace trellis::kernel::services
