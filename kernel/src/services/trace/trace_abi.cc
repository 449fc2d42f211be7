#include "services/trace/trace_abi.h"

#include "services/core/host_call.h"
#include "services/trace/trace_context.h"

namespace trellis::kernel::services {

trellis_status ctxTrace(const trellis_ctx* c, trellis_str* traceparent, trellis_str* tracestate) {
  if (trellis_status s = admitCall(c); s != TRELLIS_OK) return s;
  trellis_ctx* ctx = live(c);
  if (!traceparent) return fail(ctx, Status::invalid("ctx_trace needs a traceparent output"));
  if (!ctx->trace) {
    return fail(ctx, Status::notFound("no trace outside a request, service call, job or event"));
  }
  *traceparent = str(ctx->trace->traceparent());
  if (tracestate) *tracestate = str(ctx->trace->tracestate());
  return TRELLIS_OK;
}

}  // namespace trellis::kernel::services
