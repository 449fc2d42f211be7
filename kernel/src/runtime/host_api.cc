// The host side of the C ABI: every function a plugin can call. Each one validates the
// ctx (live on this thread), the phase and the plugin's capabilities before touching a
// kernel service, and never lets an exception escape into plugin code.
#include <spdlog/spdlog.h>

#include <array>
#include <chrono>
#include <cstdlib>
#include <cstring>
#include <string>
#include <string_view>

#include "admin/admin_abi.h"
#include "runtime/call_context.h"
#include "runtime/self_service.h"
#include "services/blobs/blob_abi.h"
#include "services/calls/service_abi.h"
#include "services/core/handle_abi.h"
#include "services/core/host_call.h"
#include "services/egress/egress_abi.h"
#include "services/jobs/job_abi.h"
#include "services/kv/kv_access.h"
#include "services/kv/kv_async.h"
#include "services/script/script_abi.h"
#include "services/seal/seal_abi.h"
#include "services/stream/stream_abi.h"
#include "services/trace/trace_abi.h"
#include "services/trace/trace_context.h"
#include "services/usage/usage_abi.h"
#include "trellis/kernel/events/event_bus.h"
#include "trellis/kernel/http/problem.h"
#include "trellis/kernel/metrics/registry.h"
#include "trellis/kernel/storage/kv_store.h"

namespace trellis::kernel::runtime {
namespace {
using services::admitCall;
using services::fail;
using services::fillBuf;
using services::granted;
using services::kvCall;
using services::live;
using services::refuseQuota;
using services::scopeOf;
using services::str;
using services::view;

// A request (or event, or job) plus up to 8 nested service calls, with room to spare.
thread_local std::array<const trellis_ctx*, 16> tls_live{};
thread_local size_t tls_depth = 0;

bool hasControlBytes(std::string_view s) {
  return s.find_first_of(std::string_view("\r\n\0", 3)) != std::string_view::npos;
}

bool isToken(std::string_view s) {
  if (s.empty()) return false;
  for (unsigned char c : s) {
    if (c <= 0x20 || c >= 0x7f || std::strchr("()<>@,;:\\\"/[]?={}", c)) return false;
  }
  return true;
}

bool isHostOwnedHeader(std::string_view name) {
  auto eq = [&](std::string_view h) {
    return name.size() == h.size() &&
           std::equal(name.begin(), name.end(), h.begin(),
                      [](char a, char b) { return std::tolower(a) == std::tolower(b); });
  };
  return eq("content-length") || eq("transfer-encoding") || eq("connection");
}

bool isMetricName(std::string_view s) {
  if (s.empty() || !(std::islower(static_cast<unsigned char>(s[0])) || s[0] == '_')) {
    return false;
  }
  for (unsigned char c : s) {
    if (!(std::islower(c) || std::isdigit(c) || c == '_')) return false;
  }
  return true;
}

// ---- host table functions ----------------------------------------------------------

void bufFree(trellis_buf* buf) {
  if (!buf) return;
  std::free(buf->ptr);
  buf->ptr = nullptr;
  buf->len = 0;
}

void log(const trellis_ctx* c, int32_t level, trellis_str msg) {
  trellis_ctx* ctx = live(c);
  if (!ctx) return;
  auto lvl = level <= TRELLIS_LOG_TRACE   ? spdlog::level::trace
             : level == TRELLIS_LOG_DEBUG ? spdlog::level::debug
             : level == TRELLIS_LOG_INFO  ? spdlog::level::info
             : level == TRELLIS_LOG_WARN  ? spdlog::level::warn
                                          : spdlog::level::err;
  spdlog::log(lvl, "plugin={} tenant={} {}", ctx->plugin->id(), ctx->tenant ? ctx->tenant->id : "-",
              view(msg));
}

void setError(const trellis_ctx* c, trellis_str msg) {
  if (trellis_ctx* ctx = live(c)) ctx->error.assign(view(msg));
}

trellis_status ctxTenant(const trellis_ctx* c, trellis_str* out) {
  if (trellis_status s = admitCall(c); s != TRELLIS_OK) return s;
  trellis_ctx* ctx = live(c);
  if (!ctx || !out) return TRELLIS_INVALID;
  *out = ctx->tenant ? str(ctx->tenant->id) : str("");
  return TRELLIS_OK;
}

trellis_status ctxPlugin(const trellis_ctx* c, trellis_str* out) {
  if (trellis_status s = admitCall(c); s != TRELLIS_OK) return s;
  trellis_ctx* ctx = live(c);
  if (!ctx || !out) return TRELLIS_INVALID;
  *out = str(ctx->plugin->id());
  return TRELLIS_OK;
}

trellis_status configGet(const trellis_ctx* c, trellis_str path, trellis_str* out) {
  if (trellis_status s = admitCall(c); s != TRELLIS_OK) return s;
  trellis_ctx* ctx = live(c);
  if (!ctx || !out) return TRELLIS_INVALID;
  if (ctx->tenant && ctx->tenant->plugin_config.contains(ctx->plugin->id())) {
    auto value = ctx->plugin->config(view(path), *ctx->tenant);
    if (!value) return fail(ctx, value.status());
    *out = str(ctx->lend(std::move(*value)));
    return TRELLIS_OK;
  }
  auto value = ctx->plugin->config(view(path));
  if (!value) return fail(ctx, value.status());
  *out = str(*value);
  return TRELLIS_OK;
}

trellis_status routeAdd(const trellis_ctx* c, trellis_str method, trellis_str pattern,
                        trellis_handler_fn handler, void* user) {
  if (trellis_status s = admitCall(c); s != TRELLIS_OK) return s;
  trellis_ctx* ctx = live(c);
  if (!ctx) return TRELLIS_INVALID;
  if (ctx->phase != Phase::kInit) return fail(ctx, Status::invalid("route_add outside on_init"));
  if (!handler) return fail(ctx, Status::invalid("route_add needs a handler"));
  std::string m(view(method)), p(view(pattern));
  if (m != "*" && !isToken(m)) return fail(ctx, Status::invalid("invalid method \"" + m + "\""));
  http::Router probe;  // validates the pattern with the router's own rules
  if (Status s = probe.add(m, p, 0); !s) return fail(ctx, s);
  for (const auto& r : ctx->plugin->routes) {
    if (r.method == m && r.pattern == p) {
      return fail(ctx, Status::conflict("route " + m + " " + p + " registered twice"));
    }
  }
  bool blocking = ctx->plugin->manifest().isBlocking(m, p);
  ctx->plugin->routes.push_back({std::move(m), std::move(p), handler, user, blocking});
  return TRELLIS_OK;
}

const trellis_request* liveReq(const trellis_ctx* c, const trellis_request* req) {
  return (req && live(c) && live(c)->phase == Phase::kRequest) ? req : nullptr;
}

trellis_status reqMethod(const trellis_ctx* c, const trellis_request* req, trellis_str* out) {
  if (trellis_status s = admitCall(c); s != TRELLIS_OK) return s;
  if (!liveReq(c, req) || !out) return TRELLIS_INVALID;
  *out = str(req->http->method_string());
  return TRELLIS_OK;
}

trellis_status reqPath(const trellis_ctx* c, const trellis_request* req, trellis_str* out) {
  if (trellis_status s = admitCall(c); s != TRELLIS_OK) return s;
  if (!liveReq(c, req) || !out) return TRELLIS_INVALID;
  *out = str(req->path);
  return TRELLIS_OK;
}

trellis_status reqQuery(const trellis_ctx* c, const trellis_request* req, trellis_str* out) {
  if (trellis_status s = admitCall(c); s != TRELLIS_OK) return s;
  if (!liveReq(c, req) || !out) return TRELLIS_INVALID;
  *out = str(req->query);
  return TRELLIS_OK;
}

trellis_status reqQueryParam(const trellis_ctx* c, const trellis_request* req, trellis_str name,
                             trellis_str* out) {
  if (trellis_status s = admitCall(c); s != TRELLIS_OK) return s;
  if (!liveReq(c, req) || !out) return TRELLIS_INVALID;
  auto value = http::queryParam(req->query, view(name));
  if (!value) return TRELLIS_NOT_FOUND;
  *out = str(req->scratch.emplace_back(std::move(*value)));
  return TRELLIS_OK;
}

trellis_status reqPathParam(const trellis_ctx* c, const trellis_request* req, trellis_str name,
                            trellis_str* out) {
  if (trellis_status s = admitCall(c); s != TRELLIS_OK) return s;
  if (!liveReq(c, req) || !out) return TRELLIS_INVALID;
  auto raw = req->match->param(view(name));
  if (!raw) return TRELLIS_NOT_FOUND;
  auto decoded = http::percentDecode(*raw);
  if (!decoded) return fail(live(c), Status::invalid("malformed percent-encoding"));
  *out = str(req->scratch.emplace_back(std::move(*decoded)));
  return TRELLIS_OK;
}

trellis_status reqHeader(const trellis_ctx* c, const trellis_request* req, trellis_str name,
                         trellis_str* out) {
  if (trellis_status s = admitCall(c); s != TRELLIS_OK) return s;
  if (!liveReq(c, req) || !out) return TRELLIS_INVALID;
  auto it = req->http->find(view(name));
  if (it == req->http->end()) return TRELLIS_NOT_FOUND;
  *out = str(it->value());
  return TRELLIS_OK;
}

trellis_status reqHeaders(const trellis_ctx* c, const trellis_request* req,
                          trellis_header_visit_fn visit, void* user) {
  if (trellis_status s = admitCall(c); s != TRELLIS_OK) return s;
  if (!liveReq(c, req) || !visit) return TRELLIS_INVALID;
  for (const auto& field : *req->http) {
    if (visit(user, str(field.name_string()), str(field.value())) != 0) break;
  }
  return TRELLIS_OK;
}

trellis_status reqBody(const trellis_ctx* c, const trellis_request* req, trellis_str* out) {
  if (trellis_status s = admitCall(c); s != TRELLIS_OK) return s;
  if (!liveReq(c, req) || !out) return TRELLIS_INVALID;
  *out = str(req->http->body());
  return TRELLIS_OK;
}

trellis_response* liveRes(const trellis_ctx* c, trellis_response* res) {
  return (res && live(c) && live(c)->phase == Phase::kRequest) ? res : nullptr;
}

trellis_status resSetStatus(const trellis_ctx* c, trellis_response* res, int32_t status) {
  if (trellis_status s = admitCall(c); s != TRELLIS_OK) return s;
  if (!liveRes(c, res)) return TRELLIS_INVALID;
  if (status < 100 || status > 599) return fail(live(c), Status::invalid("status out of range"));
  res->http.result(static_cast<unsigned>(status));
  return TRELLIS_OK;
}

trellis_status resAddHeader(const trellis_ctx* c, trellis_response* res, trellis_str name,
                            trellis_str value) {
  if (trellis_status s = admitCall(c); s != TRELLIS_OK) return s;
  if (!liveRes(c, res)) return TRELLIS_INVALID;
  std::string_view n = view(name), v = view(value);
  if (!isToken(n) || hasControlBytes(v)) {
    return fail(live(c), Status::invalid("header name or value contains forbidden bytes"));
  }
  if (isHostOwnedHeader(n)) {
    return fail(live(c), Status::invalid("header " + std::string(n) + " is set by the host"));
  }
  res->http.insert(n, v);
  return TRELLIS_OK;
}

trellis_status resSetBody(const trellis_ctx* c, trellis_response* res, trellis_str body) {
  if (trellis_status s = admitCall(c); s != TRELLIS_OK) return s;
  if (!liveRes(c, res)) return TRELLIS_INVALID;
  res->http.body().assign(view(body));
  return TRELLIS_OK;
}

trellis_status resAppendBody(const trellis_ctx* c, trellis_response* res, trellis_str chunk) {
  if (trellis_status s = admitCall(c); s != TRELLIS_OK) return s;
  if (!liveRes(c, res)) return TRELLIS_INVALID;
  res->http.body().append(view(chunk));
  return TRELLIS_OK;
}

trellis_status kvGet(const trellis_ctx* c, trellis_str key, trellis_buf* value, uint64_t* version) {
  trellis_status refused = TRELLIS_OK;
  trellis_ctx* ctx = kvCall(c, &refused);
  if (!ctx) return refused;
  if (!value) return fail(ctx, Status::invalid("kv_get needs an output buffer"));
  auto entry = ctx->plugin->services().kv->get(scopeOf(ctx), view(key));
  if (!entry) return fail(ctx, entry.status());
  fillBuf(value, entry->value);
  if (version) *version = entry->version;
  return TRELLIS_OK;
}

trellis_status kvPut(const trellis_ctx* c, trellis_str key, trellis_str value,
                     uint64_t expected_version, uint64_t* new_version) {
  trellis_status refused = TRELLIS_OK;
  trellis_ctx* ctx = kvCall(c, &refused);
  if (!ctx) return refused;
  auto v = ctx->plugin->services().kv->put(scopeOf(ctx), view(key), view(value), expected_version);
  if (!v && v.status().code() == StatusCode::kQuotaExceeded && ctx->tenant) {
    return refuseQuota(ctx, "max_storage_bytes", ctx->tenant->quotas.max_storage_bytes.value_or(0),
                       v.status().message());
  }
  if (!v) return fail(ctx, v.status());
  if (new_version) *new_version = *v;
  return TRELLIS_OK;
}

trellis_status kvDelete(const trellis_ctx* c, trellis_str key, uint64_t expected_version) {
  trellis_status refused = TRELLIS_OK;
  trellis_ctx* ctx = kvCall(c, &refused);
  if (!ctx) return refused;
  Status s = ctx->plugin->services().kv->remove(scopeOf(ctx), view(key), expected_version);
  return s ? TRELLIS_OK : fail(ctx, s);
}

trellis_status kvList(const trellis_ctx* c, trellis_str prefix, trellis_str start_after,
                      uint32_t limit, trellis_kv_visit_fn visit, void* user) {
  trellis_status refused = TRELLIS_OK;
  trellis_ctx* ctx = kvCall(c, &refused);
  if (!ctx) return refused;
  if (!visit) return fail(ctx, Status::invalid("kv_list needs a visitor"));
  auto entries =
      ctx->plugin->services().kv->list(scopeOf(ctx), view(prefix), view(start_after), limit);
  if (!entries) return fail(ctx, entries.status());
  for (const auto& e : *entries) {
    if (visit(user, str(e.key), str(e.value), e.version) != 0) break;
  }
  return TRELLIS_OK;
}

trellis_status eventPublish(const trellis_ctx* c, trellis_str topic, trellis_str payload) {
  if (trellis_status s = admitCall(c); s != TRELLIS_OK) return s;
  trellis_ctx* ctx = live(c);
  if (!ctx) return TRELLIS_INVALID;
  if (!granted(ctx, "events.publish")) return TRELLIS_PERMISSION_DENIED;
  std::string_view t = view(topic);
  if (t.empty() || t.size() > 256 || t.starts_with("audit.")) {
    return fail(ctx, Status::invalid("topic must be 1-256 bytes and not in audit.*"));
  }
  bool queued = ctx->plugin->services().events->publish(
      {ctx->tenant ? ctx->tenant->id : "", ctx->plugin->id(), std::string(t),
       std::string(view(payload)), ctx->trace ? ctx->trace->traceparent() : "",
       ctx->trace ? ctx->trace->tracestate() : ""});
  return queued ? TRELLIS_OK : fail(ctx, Status::unavailable("event queue is full"));
}

trellis_status eventSubscribe(const trellis_ctx* c, trellis_str topic, trellis_event_fn fn,
                              void* user) {
  if (trellis_status s = admitCall(c); s != TRELLIS_OK) return s;
  trellis_ctx* ctx = live(c);
  if (!ctx) return TRELLIS_INVALID;
  if (ctx->phase != Phase::kInit) {
    return fail(ctx, Status::invalid("event_subscribe outside on_init"));
  }
  if (!granted(ctx, "events.subscribe")) return TRELLIS_PERMISSION_DENIED;
  if (!fn || view(topic).empty()) return fail(ctx, Status::invalid("empty topic or callback"));
  PluginInstance* plugin = ctx->plugin;
  const tenants::TenantRegistry* tenants = plugin->services().tenants;
  uint64_t id = plugin->services().events->subscribe(
      std::string(view(topic)), [plugin, tenants, fn, user](const events::Event& e) {
        if (plugin->state != PluginState::kActive) return;
        trellis_ctx call;
        call.plugin = plugin;
        call.phase = Phase::kEvent;
        // A tenant's events reach only the plugins that tenant enabled.
        std::shared_ptr<const tenants::TenantView> tenant;
        if (!e.tenant.empty()) {
          tenant = tenants ? tenants->view(e.tenant) : nullptr;
          if (!tenant || !tenant->hasPlugin(plugin->id()) ||
              !tenant->grantsCapability(plugin->id(), "events.subscribe")) {
            return;
          }
          call.tenant = tenant.get();
        }
        // The delivery is a span of the publisher's trace (a new trace for kernel events).
        auto origin = services::TraceContext::restore(e.traceparent, e.tracestate);
        const services::TraceContext trace =
            origin ? origin->child() : services::TraceContext::root();
        call.trace = &trace;
        CallScope scope(&call);
        fn(user, &call, str(e.topic), str(e.payload));
      });
  plugin->subscriptions.push_back(id);
  return TRELLIS_OK;
}

uint64_t clockUnixMs(const trellis_ctx*) {
  return static_cast<uint64_t>(std::chrono::duration_cast<std::chrono::milliseconds>(
                                   std::chrono::system_clock::now().time_since_epoch())
                                   .count());
}

uint64_t clockMonotonicNs(const trellis_ctx*) {
  return static_cast<uint64_t>(std::chrono::duration_cast<std::chrono::nanoseconds>(
                                   std::chrono::steady_clock::now().time_since_epoch())
                                   .count());
}

trellis_status metricDefine(const trellis_ctx* c, int32_t kind, trellis_str name, trellis_str help,
                            trellis_metric_id* out) {
  if (trellis_status s = admitCall(c); s != TRELLIS_OK) return s;
  trellis_ctx* ctx = live(c);
  if (!ctx || !out) return TRELLIS_INVALID;
  if (ctx->phase != Phase::kInit)
    return fail(ctx, Status::invalid("metric_define outside on_init"));
  if (!granted(ctx, "metrics")) return TRELLIS_PERMISSION_DENIED;
  if (!isMetricName(view(name))) {
    return fail(ctx, Status::invalid("metric name must match [a-z_][a-z0-9_]*"));
  }
  std::string full = "trellis_plugin_" + std::string(view(name));
  std::string text(view(help));
  const std::vector<std::string> plugin_label = {ctx->plugin->id()};
  auto& reg = *ctx->plugin->services().metrics;
  MetricSlot slot;
  if (kind == TRELLIS_METRIC_COUNTER) {
    auto f = reg.tryCounter(full, text, {"plugin"});
    if (!f) return fail(ctx, f.status());
    slot = &(*f)->labels(plugin_label);
  } else if (kind == TRELLIS_METRIC_GAUGE) {
    auto f = reg.tryGauge(full, text, {"plugin"});
    if (!f) return fail(ctx, f.status());
    slot = &(*f)->labels(plugin_label);
  } else if (kind == TRELLIS_METRIC_HISTOGRAM) {
    auto f = reg.tryHistogram(full, text, {"plugin"});
    if (!f) return fail(ctx, f.status());
    slot = &(*f)->labels(plugin_label);
  } else {
    return fail(ctx, Status::invalid("unknown metric kind " + std::to_string(kind)));
  }
  ctx->plugin->metrics.push_back(slot);
  *out = static_cast<trellis_metric_id>(ctx->plugin->metrics.size());  // ids start at 1
  return TRELLIS_OK;
}

trellis_status metricRecord(const trellis_ctx* c, trellis_metric_id id, double value) {
  if (trellis_status s = admitCall(c); s != TRELLIS_OK) return s;
  trellis_ctx* ctx = live(c);
  if (!ctx) return TRELLIS_INVALID;
  auto& slots = ctx->plugin->metrics;
  if (id == 0 || id > slots.size()) return fail(ctx, Status::notFound("unknown metric id"));
  std::visit(
      [value](auto* m) {
        using M = std::remove_pointer_t<decltype(m)>;
        if constexpr (std::is_same_v<M, metrics::Counter>) m->add(value);
        if constexpr (std::is_same_v<M, metrics::Gauge>) m->set(value);
        if constexpr (std::is_same_v<M, metrics::Histogram>) m->observe(value);
      },
      slots[id - 1]);
  return TRELLIS_OK;
}

trellis_status ctxPrincipal(const trellis_ctx* c, trellis_str* out) {
  if (trellis_status s = admitCall(c); s != TRELLIS_OK) return s;
  trellis_ctx* ctx = live(c);
  if (!out) return TRELLIS_INVALID;
  *out = str(ctx->principal);
  return TRELLIS_OK;
}

// Self-service calls act on the ctx's own tenant, so they need one and the capability.
trellis_ctx* selfServiceCall(const trellis_ctx* c, std::string_view capability,
                             trellis_status* refused) {
  trellis_ctx* ctx =
      services::enter(c, capability, "tenant calls", services::Tenant::kRequired, refused);
  if (ctx && !ctx->plugin->services().self_service) {
    ctx->error = "tenant self-service is not available on this host";
    *refused = TRELLIS_UNAVAILABLE;
    return nullptr;
  }
  return ctx;
}

trellis_status tenantInfo(const trellis_ctx* c, trellis_buf* out) {
  trellis_status refused = TRELLIS_OK;
  trellis_ctx* ctx = selfServiceCall(c, "tenant.read", &refused);
  if (!ctx) return refused;
  if (!out) return fail(ctx, Status::invalid("out_json is NULL"));
  auto json = ctx->plugin->services().self_service->info(*ctx->tenant);
  if (!json) return fail(ctx, json.status());
  fillBuf(out, *json);
  return TRELLIS_OK;
}

trellis_status tenantKeysList(const trellis_ctx* c, trellis_buf* out) {
  trellis_status refused = TRELLIS_OK;
  trellis_ctx* ctx = selfServiceCall(c, "tenant.keys", &refused);
  if (!ctx) return refused;
  if (!out) return fail(ctx, Status::invalid("out_json is NULL"));
  fillBuf(out, ctx->plugin->services().self_service->keys(*ctx->tenant));
  return TRELLIS_OK;
}

trellis_status tenantKeyCreate(const trellis_ctx* c, uint64_t ttl_seconds, trellis_buf* out) {
  trellis_status refused = TRELLIS_OK;
  trellis_ctx* ctx = selfServiceCall(c, "tenant.keys", &refused);
  if (!ctx) return refused;
  if (!out) return fail(ctx, Status::invalid("out_json is NULL"));
  auto json = ctx->plugin->services().self_service->createKey(*ctx->tenant, ttl_seconds);
  if (!json) return fail(ctx, json.status());
  fillBuf(out, *json);
  return TRELLIS_OK;
}

trellis_status tenantKeyRotate(const trellis_ctx* c, uint64_t ttl_seconds, trellis_buf* out) {
  trellis_status refused = TRELLIS_OK;
  trellis_ctx* ctx = selfServiceCall(c, "tenant.keys", &refused);
  if (!ctx) return refused;
  if (!out) return fail(ctx, Status::invalid("out_json is NULL"));
  auto json =
      ctx->plugin->services().self_service->rotateKey(*ctx->tenant, ctx->principal, ttl_seconds);
  if (!json) return fail(ctx, json.status());
  fillBuf(out, *json);
  return TRELLIS_OK;
}

trellis_status tenantKeyRevoke(const trellis_ctx* c, trellis_str key_id) {
  trellis_status refused = TRELLIS_OK;
  trellis_ctx* ctx = selfServiceCall(c, "tenant.keys", &refused);
  if (!ctx) return refused;
  Status s = ctx->plugin->services().self_service->revokeKey(*ctx->tenant, view(key_id));
  return s ? TRELLIS_OK : fail(ctx, s);
}

trellis_status lastError(const trellis_ctx* c, trellis_str* out) {
  trellis_ctx* ctx = live(c);
  if (!ctx || !out) return TRELLIS_INVALID;
  *out = str(ctx->error);
  return TRELLIS_OK;
}

trellis_status resProblem(const trellis_ctx* c, trellis_response* res, int32_t status,
                          trellis_str detail) {
  constexpr size_t kMaxDetailBytes = 4096;
  if (trellis_status s = admitCall(c); s != TRELLIS_OK) return s;
  if (!liveRes(c, res)) return TRELLIS_INVALID;
  if (status < 400 || status > 599) {
    return fail(live(c), Status::invalid("a problem's status must be 400 to 599, not " +
                                         std::to_string(status)));
  }
  const std::string_view d = view(detail);
  if (d.size() > kMaxDetailBytes) {  // invalid UTF-8 is replaced when the body is written
    return fail(live(c), Status::invalid("a problem's detail must be at most 4096 bytes"));
  }
  namespace bhttp = boost::beast::http;
  const auto code = static_cast<unsigned>(status);
  const unsigned version = res->http.version();
  const bool keep_alive = res->http.keep_alive();
  res->http = http::problem(code, bhttp::obsolete_reason(static_cast<bhttp::status>(code)), d,
                            {{"request_id", std::string(live(c)->request_id)}});
  res->http.version(version);
  res->http.keep_alive(keep_alive);
  return TRELLIS_OK;
}

constexpr trellis_host_api kHostApi = {
    sizeof(trellis_host_api),
    TRELLIS_ABI_MAJOR,
    TRELLIS_ABI_MINOR,
    bufFree,
    log,
    setError,
    ctxTenant,
    ctxPlugin,
    configGet,
    routeAdd,
    reqMethod,
    reqPath,
    reqQuery,
    reqQueryParam,
    reqPathParam,
    reqHeader,
    reqHeaders,
    reqBody,
    resSetStatus,
    resAddHeader,
    resSetBody,
    resAppendBody,
    kvGet,
    kvPut,
    kvDelete,
    kvList,
    eventPublish,
    eventSubscribe,
    clockUnixMs,
    clockMonotonicNs,
    metricDefine,
    metricRecord,
    ctxPrincipal,
    tenantInfo,
    tenantKeysList,
    tenantKeyCreate,
    tenantKeyRotate,
    tenantKeyRevoke,
    lastError,
    // ABI 1.2: each slot forwards to its service under kernel/src/services/<name>/.
    services::handleClose,
    services::ctxTrace,
    services::serviceProvide,
    services::serviceCall,
    services::serviceReply,
    services::ctxCaller,
    services::jobHandler,
    services::jobSchedule,
    services::jobCancel,
    services::httpSend,
    services::httpResponseStatus,
    services::httpResponseHeaders,
    services::httpResponseRead,
    services::blobOpenWrite,
    services::blobWrite,
    services::blobCommit,
    services::blobOpenRead,
    services::blobRead,
    services::blobHead,
    services::blobDelete,
    services::blobList,
    resProblem,
    admin::auditEmit,
    admin::adminRouteAdd,
    services::usageSubscribe,
    services::usageAck,
    services::usageEmit,
    admin::actForTenant,
    services::kvPutAsync,
    services::streamConnect,
    services::streamWrite,
    services::streamRead,
    services::scriptLoad,
    services::scriptCall,
    services::keyWrap,
    services::keyUnwrap,
};
static_assert(offsetof(trellis_host_api, key_unwrap) + sizeof(void*) == sizeof(trellis_host_api),
              "every slot of the host table is listed above, in order");

}  // namespace

CallScope::CallScope(const trellis_ctx* ctx) {
  // Deeper nesting than this would be a kernel bug: only service calls nest, and those
  // stop at kMaxServiceDepth.
  if (tls_depth >= tls_live.size()) std::abort();
  tls_live[tls_depth++] = ctx;
}

CallScope::~CallScope() {
  --tls_depth;
}

bool CallScope::isLive(const trellis_ctx* ctx) {
  if (ctx == nullptr) return false;
  for (size_t i = 0; i < tls_depth; ++i) {
    if (tls_live[i] == ctx) return true;
  }
  return false;
}

const trellis_host_api* hostApi() {
  return &kHostApi;
}

std::string_view pluginStateName(PluginState s) {
  switch (s) {
    case PluginState::kDiscovered: return "discovered";
    case PluginState::kLoaded: return "loaded";
    case PluginState::kInitialized: return "initialized";
    case PluginState::kActive: return "active";
    case PluginState::kFailed: return "failed";
    case PluginState::kStopped: return "stopped";
  }
  return "unknown";
}

}  // namespace trellis::kernel::runtime
