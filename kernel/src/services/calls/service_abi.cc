#include "services/calls/service_abi.h"

#include <algorithm>
#include <string>

#include "services/calls/service_registry.h"
#include "services/core/host_call.h"
#include "services/trace/trace_context.h"
#include "trellis/kernel/plugin/manifest.h"

namespace trellis::kernel::services {
namespace {

thread_local int tls_service_depth = 0;

bool isMethodName(std::string_view s) {
  return !s.empty() && s.size() <= 64 && std::all_of(s.begin(), s.end(), [](char c) {
    return (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9') || c == '.' ||
           c == '_' || c == '-';
  });
}

// One level of service-call nesting on this thread, for as long as the call runs.
struct DepthScope {
  DepthScope() { ++tls_service_depth; }
  ~DepthScope() { --tls_service_depth; }
};

}  // namespace

trellis_status serviceProvide(const trellis_ctx* c, trellis_str service, trellis_str method,
                              trellis_service_fn fn, void* user) {
  if (trellis_status s = admitCall(c); s != TRELLIS_OK) return s;
  trellis_ctx* ctx = live(c);
  if (ctx->phase != runtime::Phase::kInit) {
    return fail(ctx, Status::invalid("service_provide outside on_init"));
  }
  std::string_view name = view(service), m = view(method);
  const auto& provides = ctx->plugin->manifest().provides;
  if (std::none_of(provides.begin(), provides.end(),
                   [&](const auto& p) { return p.name == name; })) {
    return fail(ctx, Status::invalid("service \"" + std::string(name) +
                                     "\" is not in the manifest's \"provides\""));
  }
  if (!isMethodName(m)) {
    return fail(ctx, Status::invalid("method name must be 1-64 of A-Z a-z 0-9 . _ -"));
  }
  if (!fn) return fail(ctx, Status::invalid("service_provide needs a handler"));
  auto& methods = ctx->plugin->service_methods[std::string(name)];
  if (!methods.emplace(std::string(m), runtime::ServiceMethod{fn, user}).second) {
    return fail(ctx, Status::conflict("method " + std::string(m) + " of service " +
                                      std::string(name) + " registered twice"));
  }
  return TRELLIS_OK;
}

trellis_status serviceCall(const trellis_ctx* c, trellis_str service, trellis_str method,
                           trellis_str request, trellis_buf* response) {
  if (trellis_status s = admitCall(c); s != TRELLIS_OK) return s;
  trellis_ctx* ctx = live(c);
  std::string_view name = view(service), m = view(method);
  if (!plugin::isValidServiceName(name)) {
    return fail(ctx, Status::invalid("\"" + std::string(name) + "\" is not a valid service name"));
  }
  // "service:" + name, built without touching the heap: this path is measured in ns.
  char capability[80];
  std::copy(plugin::kServiceCapabilityPrefix.begin(), plugin::kServiceCapabilityPrefix.end(),
            capability);
  std::copy(name.begin(), name.end(), capability + plugin::kServiceCapabilityPrefix.size());
  if (!granted(ctx, {capability, plugin::kServiceCapabilityPrefix.size() + name.size()})) {
    return TRELLIS_PERMISSION_DENIED;
  }
  if (!response) return fail(ctx, Status::invalid("service_call needs a response buffer"));
  if (request.len > kMaxServicePayload) {
    return fail(ctx, Status::invalid("service request of " + std::to_string(request.len) +
                                     " bytes exceeds the 1 MiB limit"));
  }
  if (tls_service_depth >= kMaxServiceDepth) {
    return fail(
        ctx, Status::invalid("service calls nest deeper than " + std::to_string(kMaxServiceDepth)));
  }
  ServiceRegistry* registry = ctx->plugin->services().service_registry;
  auto lease = registry ? registry->acquire(name) : std::nullopt;
  if (!lease) {
    return fail(ctx, Status::unavailable("no active plugin provides service \"" +
                                         std::string(name) + "\""));
  }
  runtime::PluginInstance* provider = lease->plugin();
  if (provider == ctx->plugin) {
    return fail(ctx, Status::invalid("a plugin cannot call its own service"));
  }
  // The provider acts on the tenant's data, so the tenant must have enabled it.
  if (ctx->tenant && !ctx->tenant->hasPlugin(provider->id())) {
    return fail(ctx, Status::permissionDenied("tenant " + ctx->tenant->id + " has not enabled " +
                                              provider->id() + ", which provides service \"" +
                                              std::string(name) + "\""));
  }
  const runtime::ServiceMethod* target = nullptr;
  if (auto s = provider->service_methods.find(name); s != provider->service_methods.end()) {
    if (auto it = s->second.find(m); it != s->second.end()) target = &it->second;
  }
  if (!target) {
    return fail(ctx, Status::notFound("service \"" + std::string(name) + "\" has no method \"" +
                                      std::string(m) + "\""));
  }

  // The provider acts for the caller's tenant and request: same principal, a span of the
  // same trace, and what is left of the request's host-call quota.
  const TraceContext trace = ctx->trace ? ctx->trace->child() : TraceContext::root();
  trellis_ctx call;
  call.plugin = provider;
  call.tenant = ctx->tenant;
  call.principal = ctx->principal;
  call.trace = &trace;
  call.phase = runtime::Phase::kService;
  call.caller = ctx->plugin->id();
  call.max_host_calls =
      ctx->max_host_calls == UINT64_MAX ? UINT64_MAX : ctx->max_host_calls - ctx->host_calls;
  trellis_service_reply reply;
  call.reply = &reply;
  trellis_status status = TRELLIS_INTERNAL;
  {
    DepthScope depth;
    runtime::CallScope scope(&call);
    try {
      status = target->fn(target->user, &call, request, &reply);
    } catch (...) {  // a provider broke the ABI rule; the caller must not pay for it
      call.error = "exception escaped the service method";
      status = TRELLIS_INTERNAL;
    }
  }
  if (ctx->max_host_calls != UINT64_MAX) ctx->host_calls += call.host_calls;
  if (status != TRELLIS_OK) {
    if (call.refused_quota) {  // the request's quota ran out inside the provider
      ctx->refused_quota = call.refused_quota;
      ctx->refused_limit = call.refused_limit;
    }
    ctx->error = "service " + std::string(name) + "." + std::string(m) + ": " +
                 (call.error.empty() ? "failed" : call.error);
    return status;
  }
  fillBuf(response, reply.bytes);
  return TRELLIS_OK;
}

trellis_status serviceReply(const trellis_ctx* c, trellis_service_reply* reply,
                            trellis_str response) {
  if (trellis_status s = admitCall(c); s != TRELLIS_OK) return s;
  trellis_ctx* ctx = live(c);
  if (!reply || reply != ctx->reply) {
    return fail(ctx, Status::invalid("service_reply outside the service method it answers"));
  }
  if (response.len > kMaxServicePayload) {
    return fail(ctx, Status::invalid("service response of " + std::to_string(response.len) +
                                     " bytes exceeds the 1 MiB limit"));
  }
  reply->bytes.assign(view(response));
  return TRELLIS_OK;
}

trellis_status ctxCaller(const trellis_ctx* c, trellis_str* out) {
  if (trellis_status s = admitCall(c); s != TRELLIS_OK) return s;
  trellis_ctx* ctx = live(c);
  if (!out) return TRELLIS_INVALID;
  if (ctx->caller.empty()) return fail(ctx, Status::notFound("not inside a service method"));
  *out = str(ctx->caller);
  return TRELLIS_OK;
}

}  // namespace trellis::kernel::services
