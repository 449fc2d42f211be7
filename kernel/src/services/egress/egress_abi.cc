#include "services/egress/egress_abi.h"

#include <algorithm>
#include <cstddef>
#include <cstring>
#include <mutex>

#include "runtime/plugin_instance.h"
#include "services/core/host_call.h"
#include "services/egress/egress_service.h"
#include "services/trace/trace_context.h"
#include "trellis/kernel/exec/event_loop.h"
#include "trellis/kernel/plugin/manifest.h"

namespace trellis::kernel::services {
namespace {

using egress::EgressService;

struct ResponseHandle final : HandleObject {
  explicit ResponseHandle(egress::Response r) : response(std::move(r)) {}
  std::mutex mu;
  egress::Response response;
  size_t read = 0;
};

// The manifest's rules, narrowed by the tenant's "egress:<rule>" grants for this plugin.
Result<egress::Policy> policyOf(trellis_ctx* ctx) {
  egress::Policy policy;
  policy.tenant = ctx->tenant->id;
  auto manifest = egress::parseRules(ctx->plugin->manifest().egress);
  if (!manifest) return manifest.status();
  policy.manifest = std::move(*manifest);
  const auto& grants = ctx->tenant->grants;
  if (auto it = grants.find(ctx->plugin->id()); it != grants.end()) {
    std::vector<std::string> texts;
    for (const auto& g : it->second) {
      if (g.starts_with(plugin::kEgressGrantPrefix)) {
        texts.push_back(g.substr(plugin::kEgressGrantPrefix.size()));
      }
    }
    if (!texts.empty()) {
      auto granted = egress::parseRules(texts);
      if (!granted) return granted.status();
      policy.grant = std::move(*granted);
    }
  }
  return policy;
}

Result<std::shared_ptr<ResponseHandle>> responseOf(trellis_ctx* ctx, trellis_handle h) {
  HandleTable* handles = ctx->plugin->services().handles;
  if (!handles) return Status::unavailable("this host holds no handles");
  return handles->get<ResponseHandle>(ownerOf(ctx), HandleKind::kHttpResponse, h);
}

}  // namespace

trellis_status httpSend(const trellis_ctx* c, const trellis_http_request* request,
                        trellis_handle* response) {
  trellis_status refused = TRELLIS_OK;
  trellis_ctx* ctx = enter(c, "egress", "http_send", Tenant::kRequired, &refused);
  if (!ctx) return refused;
  EgressService* service = ctx->plugin->services().egress;
  if (!service || !ctx->plugin->services().handles) {
    return fail(ctx, Status::unavailable("this host makes no egress requests"));
  }
  if (exec::onEventLoopThread()) {
    return fail(ctx, Status::invalid(
                         "http_send blocks, so it is refused on an event loop: declare the route "
                         "in blocking_routes, or call it from a job or an event handler"));
  }
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
  auto policy = policyOf(ctx);
  if (!policy) return fail(ctx, policy.status());
  const auto& q = ctx->tenant->quotas;
  auto r = service->send(ctx->tenant->id, ctx->plugin->id(), req, *policy,
                         {q.egress_requests_per_second, q.egress_bytes_per_day});
  if (!r) {
    const Status& s = r.status();
    if (s.code() == StatusCode::kQuotaExceeded && s.message().starts_with("egress_")) {
      const bool rate = s.message().starts_with("egress_requests_per_second");
      return refuseQuota(ctx, rate ? "egress_requests_per_second" : "egress_bytes_per_day",
                         (rate ? q.egress_requests_per_second : q.egress_bytes_per_day).value_or(0),
                         s.message());
    }
    if (s.code() == StatusCode::kPermissionDenied) {
      // A destination no rule allows: counted and audited like a missing grant.
      auto url = egress::parseUrl(req.url);
      ctx->error = s.message();
      recordDenial(ctx, "egress", "egress:" + (url ? url->origin() : std::string("invalid")));
      return s.toC();
    }
    return fail(ctx, s);
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
  trellis_ctx* ctx = enter(c, "egress", "http_response_status", Tenant::kRequired, &refused);
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
  trellis_ctx* ctx = enter(c, "egress", "http_response_headers", Tenant::kRequired, &refused);
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
  trellis_ctx* ctx = enter(c, "egress", "http_response_read", Tenant::kRequired, &refused);
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
