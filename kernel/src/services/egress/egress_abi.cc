#include "services/egress/egress_abi.h"

#include <algorithm>
#include <cstddef>
#include <cstring>
#include <mutex>

#include "runtime/plugin_instance.h"
#include "services/core/host_call.h"
#include "services/egress/egress_gate.h"
#include "services/egress/egress_service.h"
#include "services/trace/trace_context.h"

namespace trellis::kernel::services {
namespace {

using egress::EgressService;

struct ResponseHandle final : HandleObject {
  explicit ResponseHandle(egress::Response r) : response(std::move(r)) {}
  std::mutex mu;
  egress::Response response;
  size_t read = 0;
};

Result<std::shared_ptr<ResponseHandle>> responseOf(trellis_ctx* ctx, trellis_handle h) {
  HandleTable* handles = ctx->plugin->services().handles;
  if (!handles) return Status::unavailable("this host holds no handles");
  return handles->get<ResponseHandle>(ownerOf(ctx), HandleKind::kHttpResponse, h);
}

}  // namespace

trellis_status httpSend(const trellis_ctx* c, const trellis_http_request* request,
                        trellis_handle* response) {
  trellis_status refused = TRELLIS_OK;
  trellis_ctx* ctx = egress::enterEgress(c, "http_send", &refused);
  if (!ctx) return refused;
  EgressService* service = ctx->plugin->services().egress;
  if (!service || !ctx->plugin->services().handles) {
    return fail(ctx, Status::unavailable("this host makes no egress requests"));
  }
  if (Status s = egress::refuseOnEventLoop("http_send"); !s) return fail(ctx, s);
  if (!request || !response) return fail(ctx, Status::invalid("http_send needs a request"));
  if (request->struct_size < offsetof(trellis_http_request, max_response_bytes) + 8) {
    return fail(ctx, Status::invalid("request: struct_size is too small"));
  }
  egress::Request req;
  req.method = request->method.len ? std::string(view(request->method)) : "GET";
  req.url = std::string(view(request->url));
  if (request->header_count > 0 && !request->headers) {
    return fail(ctx, Status::invalid("headers: header_count is set but headers is NULL"));
  }
  if (request->header_count > 256) return fail(ctx, Status::invalid("headers: more than 256"));
  for (size_t i = 0; i < request->header_count; ++i) {
    req.headers.emplace_back(std::string(view(request->headers[2 * i])),
                             std::string(view(request->headers[2 * i + 1])));
  }
  req.body = std::string(view(request->body));
  auto ms = [](uint32_t v, std::chrono::milliseconds fallback) {
    return v ? std::chrono::milliseconds(v) : fallback;
  };
  req.timeouts.connect = ms(request->connect_timeout_ms, req.timeouts.connect);
  req.timeouts.first_byte = ms(request->first_byte_timeout_ms, req.timeouts.first_byte);
  req.timeouts.total = ms(request->total_timeout_ms, req.timeouts.total);
  if (request->max_redirects > egress::kMaxRedirects) {
    return fail(ctx,
                Status::invalid("max_redirects: at most " + std::to_string(egress::kMaxRedirects)));
  }
  req.max_redirects = static_cast<int>(request->max_redirects);
  if (request->max_response_bytes) req.max_response_bytes = request->max_response_bytes;
  if (ctx->trace) {
    const TraceContext hop = ctx->trace->child();
    req.traceparent = hop.traceparent();
    req.tracestate = hop.tracestate();
  }
  auto policy = egress::policyOf(ctx);
  if (!policy) return fail(ctx, policy.status());
  auto r = service->send(egress::tenantLabel(ctx), ctx->plugin->id(), req, *policy,
                         egress::limitsOf(ctx));
  if (!r) {
    auto url = egress::parseUrl(req.url);
    return egress::refuse(ctx, r.status(), url ? url->origin() : std::string("invalid"));
  }
  ctx->usage.egress_calls += 1;
  ctx->usage.egress_bytes += r->bytes_sent + r->body.size();
  auto h = ctx->plugin->services().handles->open(ownerOf(ctx), HandleKind::kHttpResponse,
                                                 std::make_shared<ResponseHandle>(std::move(*r)));
  if (!h) return fail(ctx, h.status());
  *response = *h;
  return TRELLIS_OK;
}

trellis_status httpResponseStatus(const trellis_ctx* c, trellis_handle response, int32_t* status) {
  trellis_status refused = TRELLIS_OK;
  trellis_ctx* ctx = egress::enterEgress(c, "http_response_status", &refused);
  if (!ctx) return refused;
  if (!status) return fail(ctx, Status::invalid("http_response_status needs an output"));
  auto r = responseOf(ctx, response);
  if (!r) return fail(ctx, r.status());
  *status = (*r)->response.status;
  return TRELLIS_OK;
}

trellis_status httpResponseHeaders(const trellis_ctx* c, trellis_handle response,
                                   trellis_header_visit_fn visit, void* user) {
  trellis_status refused = TRELLIS_OK;
  trellis_ctx* ctx = egress::enterEgress(c, "http_response_headers", &refused);
  if (!ctx) return refused;
  if (!visit) return fail(ctx, Status::invalid("http_response_headers needs a visitor"));
  auto r = responseOf(ctx, response);
  if (!r) return fail(ctx, r.status());
  for (const auto& [name, value] : (*r)->response.headers) {
    if (visit(user, str(name), str(value)) != 0) break;
  }
  return TRELLIS_OK;
}

trellis_status httpResponseRead(const trellis_ctx* c, trellis_handle response, char* buf,
                                size_t cap, size_t* len) {
  trellis_status refused = TRELLIS_OK;
  trellis_ctx* ctx = egress::enterEgress(c, "http_response_read", &refused);
  if (!ctx) return refused;
  if (!len || (!buf && cap > 0)) {
    return fail(ctx, Status::invalid("http_response_read needs buf and len"));
  }
  auto r = responseOf(ctx, response);
  if (!r) return fail(ctx, r.status());
  ResponseHandle& h = **r;
  std::lock_guard lock(h.mu);
  const size_t n = std::min(cap, h.response.body.size() - h.read);
  if (n) std::memcpy(buf, h.response.body.data() + h.read, n);
  h.read += n;
  *len = n;
  return TRELLIS_OK;
}

}  // namespace trellis::kernel::services
