#include "worker/worker_side/worker_host.h"

#include <time.h>
#include <unistd.h>

#include <algorithm>
#include <atomic>
#include <cctype>
#include <cstdlib>
#include <cstring>
#include <deque>
#include <map>
#include <mutex>
#include <optional>
#include <utility>

#include "services/calls/service_abi.h"
#include "worker/protocol.h"

namespace trellis::kernel::worker {
namespace {

using Clock = std::chrono::steady_clock;

// Exit codes the host reads as "the worker gave up on its channel".
constexpr int kExitChannelLost = 70;
constexpr int kExitProtocol = 71;

enum class Kind : uint8_t { kRoute, kEvent, kService, kJob };

// What the plugin registered; the host knows each by its index only.
struct Callback {
  Kind kind;
  void* fn;
  void* user;
};

const trellis_plugin* g_plugin = nullptr;
void* g_state = nullptr;
std::mutex g_mu;  // guards g_callbacks, g_config and g_config_missing
std::deque<Callback> g_callbacks;
std::map<std::string, std::string, std::less<>> g_config;          // node-stable answers
std::map<std::string, std::string, std::less<>> g_config_missing;  // path -> host's message

struct Param {
  std::string_view name;
  std::string_view value;
  bool ok;  // false: malformed percent-encoding (the host's verdict)
};

// The request as it arrived with the INVOKE: every getter answers from here.
struct Snapshot {
  std::string_view method, path, query, body;
  std::vector<std::pair<std::string_view, std::string_view>> headers;
  std::vector<Param> params;
};

// One channel as its serving thread holds it. INVOKEs the host pipelined behind the one
// being run wait in `invokes` when they arrive while a CALL waits for its REPLY.
struct Lane {
  explicit Lane(int fd) : chan(fd) {}
  FrameChannel chan;
  std::deque<Frame> invokes;
  uint64_t next_id = 0;
};

// A RESULT may wait this long for the INVOKEs already buffered behind it, so that a batch
// goes back in one write; a slow batch is not held back longer.
constexpr auto kMaxResultDelay = std::chrono::microseconds(20);

struct WorkerCtx {
  Lane* lane = nullptr;  // null under withInitCtx: no channel
  InvokeOp phase = InvokeOp::kInit;
  std::string_view tenant, principal, traceparent, tracestate, caller;
  bool has_trace = false;
  bool has_caller = false;
  std::string error;
  FrameWriter effects;
  Snapshot* req = nullptr;
  uintptr_t token = 0;  // what the plugin holds as this invocation's trellis_ctx*
  uint64_t calls = 0, max_calls = UINT64_MAX;  // host calls of the request, as the host counts
  std::deque<std::string> scratch;             // answers handed out as borrowed views
  // kv_put_async: the write already made (this thread may block), its completion owed.
  struct PendingPut {
    trellis_kv_put_done_fn done;
    void* user;
    trellis_status status;
    uint64_t version;
    std::string error;
  };
  std::optional<PendingPut> pending_put;
};

// The plugin's trellis_ctx*, trellis_response* and trellis_service_reply* are tokens, never
// reused, not addresses: every invocation's WorkerCtx lives at the same stack address, so
// a pointer kept from an earlier call would otherwise pass for the current one.
std::atomic<uintptr_t> g_next_token{1};
constexpr uintptr_t kResponseToken = 16, kReplyToken = 32;  // offsets from the ctx token
constexpr uintptr_t kLateResponseToken = 48;  // a late completion's response: no calls reach it

thread_local std::vector<WorkerCtx*> tls_live;
thread_local trellis_status tls_refusal = TRELLIS_INVALID;  // why live() last said no

// The invocation `c` names, without counting a host call (log, set_error, last_error).
WorkerCtx* find(const trellis_ctx* c) {
  for (WorkerCtx* ctx : tls_live) {
    if (ctx->token == reinterpret_cast<uintptr_t>(c)) return ctx;
  }
  return nullptr;
}

// The invocation `c` names, counting one host call against the request's max_host_calls
// as the kernel's admitCall does in process: calls answered here count like forwarded ones.
// Null if `c` is not live (INVALID) or the quota is spent (QUOTA_EXCEEDED): see refusal().
WorkerCtx* live(const trellis_ctx* c) {
  WorkerCtx* ctx = find(c);
  tls_refusal = TRELLIS_INVALID;
  if (!ctx) return nullptr;
  ctx->error.clear();
  if (ctx->calls >= ctx->max_calls) {
    ctx->error =
        "host call quota of " + std::to_string(ctx->max_calls) + " calls per request exceeded";
    ctx->effects.u8(static_cast<uint8_t>(Effect::kQuotaExceeded));
    tls_refusal = TRELLIS_QUOTA_EXCEEDED;
    return nullptr;
  }
  ++ctx->calls;
  return ctx;
}

trellis_status refusal() {
  return tls_refusal;
}

std::string_view view(trellis_str s) {
  return s.ptr == nullptr ? std::string_view() : std::string_view(s.ptr, s.len);
}
trellis_str str(std::string_view s) {
  return trellis_str{s.data(), s.size()};
}

void fillBuf(trellis_buf* out, std::string_view bytes) {
  out->len = bytes.size();
  out->ptr = static_cast<char*>(std::malloc(bytes.empty() ? 1 : bytes.size()));
  if (!bytes.empty()) std::memcpy(out->ptr, bytes.data(), bytes.size());
}

trellis_status failLocal(WorkerCtx* ctx, trellis_status s, std::string msg) {
  ctx->error = std::move(msg);
  return s;
}

// A CALL and its REPLY. The effects batched so far travel first, so the host applies them
// in the order the plugin made them. Returns a reader positioned after status and message.
FrameReader call(WorkerCtx* ctx, CallOp op, const FrameWriter& args, Frame& reply,
                 trellis_status* status) {
  if (!ctx->lane) {  // withInitCtx: no channel to ask on
    *status = TRELLIS_UNAVAILABLE;
    ctx->error =
        "a worker thread replaying init cannot reach trellisd; in init, ask only for config "
        "(and do the rest in start or in handlers)";
    return FrameReader(reply.payload);
  }
  FrameWriter w;
  w.str(ctx->effects.data()).bytes(args.data());
  ctx->effects.clear();
  Lane& lane = *ctx->lane;
  uint64_t id = ++lane.next_id;
  if (!lane.chan.send(FrameType::kCall, static_cast<uint16_t>(op), id, w)) {
    _exit(kExitChannelLost);
  }
  for (;;) {  // the read flushes the CALL before it waits
    Status s = lane.chan.read(reply, Clock::time_point::max());
    if (!s) _exit(s.code() == StatusCode::kInvalid ? kExitProtocol : kExitChannelLost);
    if (reply.type != FrameType::kInvoke) break;
    lane.invokes.push_back(std::move(reply));  // pipelined behind this invocation
  }
  if (reply.type != FrameType::kReply || reply.id != id) _exit(kExitProtocol);
  FrameReader r(reply.payload);
  *status = r.i32();
  std::string_view msg = r.str();
  if (!r.ok()) _exit(kExitProtocol);
  if (*status != TRELLIS_OK) ctx->error.assign(msg);
  return r;
}

// A call whose reply carries nothing but status (and message).
trellis_status callPlain(const trellis_ctx* c, CallOp op, const FrameWriter& args) {
  WorkerCtx* ctx = live(c);
  if (!ctx) return refusal();
  Frame f;
  trellis_status s;
  call(ctx, op, args, f, &s);
  return s;
}

// A call whose reply is one byte string, copied into a plugin-owned buffer.
trellis_status callBuf(const trellis_ctx* c, CallOp op, const FrameWriter& args, trellis_buf* out) {
  WorkerCtx* ctx = live(c);
  if (!ctx) return refusal();
  if (!out) return TRELLIS_INVALID;
  Frame f;
  trellis_status s;
  FrameReader r = call(ctx, op, args, f, &s);
  if (s != TRELLIS_OK) return s;
  std::string_view bytes = r.str();
  if (!r.ok()) _exit(kExitProtocol);
  fillBuf(out, bytes);
  return s;
}

// A call whose reply is one u64 (a handle or version), stored in *out if non-null.
trellis_status callU64(const trellis_ctx* c, CallOp op, const FrameWriter& args, uint64_t* out) {
  WorkerCtx* ctx = live(c);
  if (!ctx) return refusal();
  Frame f;
  trellis_status s;
  FrameReader r = call(ctx, op, args, f, &s);
  if (s != TRELLIS_OK) return s;
  uint64_t v = r.u64();
  if (!r.ok()) _exit(kExitProtocol);
  if (out) *out = v;
  return s;
}

uint32_t remember(Kind kind, void* fn, void* user) {
  std::lock_guard lock(g_mu);
  g_callbacks.push_back({kind, fn, user});
  return static_cast<uint32_t>(g_callbacks.size() - 1);
}

bool isToken(std::string_view s) {
  if (s.empty()) return false;
  for (unsigned char c : s) {
    if (c <= 0x20 || c >= 0x7f || std::strchr("()<>@,;:\\\"/[]?={}", c)) return false;
  }
  return true;
}

bool iequals(std::string_view a, std::string_view b) {
  return a.size() == b.size() && std::equal(a.begin(), a.end(), b.begin(), [](char x, char y) {
           return std::tolower(static_cast<unsigned char>(x)) ==
                  std::tolower(static_cast<unsigned char>(y));
         });
}

// ---- the host table -----------------------------------------------------------------

void bufFree(trellis_buf* buf) {
  if (!buf) return;
  std::free(buf->ptr);
  buf->ptr = nullptr;
  buf->len = 0;
}

void log(const trellis_ctx* c, int32_t level, trellis_str msg) {
  if (WorkerCtx* ctx = find(c)) {
    ctx->effects.u8(static_cast<uint8_t>(Effect::kLog)).i32(level).str(view(msg));
  }
}

void setError(const trellis_ctx* c, trellis_str msg) {
  if (WorkerCtx* ctx = find(c)) {
    ctx->error.assign(view(msg));
    ctx->effects.u8(static_cast<uint8_t>(Effect::kSetError)).str(view(msg));
  }
}

trellis_status ctxTenant(const trellis_ctx* c, trellis_str* out) {
  WorkerCtx* ctx = live(c);
  if (!ctx) return refusal();
  if (!out) return TRELLIS_INVALID;
  *out = str(ctx->tenant);
  return TRELLIS_OK;
}

trellis_status ctxPlugin(const trellis_ctx* c, trellis_str* out) {
  if (!live(c)) return refusal();
  if (!out) return TRELLIS_INVALID;
  *out = str(g_plugin->id);
  return TRELLIS_OK;
}

trellis_status configGet(const trellis_ctx* c, trellis_str path, trellis_str* out) {
  WorkerCtx* ctx = live(c);
  if (!ctx) return refusal();
  if (!out) return TRELLIS_INVALID;
  // Under a tenant's ctx the host may lay that tenant's overrides (manifest tenant_config)
  // over the config, and they change at any time: only the plugin-wide answers, asked
  // without a tenant, never change while the plugin runs and are kept here.
  // A path that is not there is kept too (a Lua thread replaying init must see the same
  // absence as the first init did; see withInitCtx).
  const bool plugin_wide = ctx->tenant.empty();
  if (plugin_wide) {
    std::lock_guard lock(g_mu);
    if (auto it = g_config.find(view(path)); it != g_config.end()) {
      *out = str(it->second);
      return TRELLIS_OK;
    }
    if (auto it = g_config_missing.find(view(path)); it != g_config_missing.end()) {
      return failLocal(ctx, TRELLIS_NOT_FOUND, it->second);
    }
  }
  FrameWriter w;
  w.str(view(path));
  Frame f;
  trellis_status s;
  FrameReader r = call(ctx, CallOp::kConfigGet, w, f, &s);
  if (s == TRELLIS_NOT_FOUND && plugin_wide) {
    std::lock_guard lock(g_mu);
    g_config_missing.emplace(std::string(view(path)), ctx->error);
  }
  if (s != TRELLIS_OK) return s;
  std::string_view value = r.str();
  if (!r.ok()) _exit(kExitProtocol);
  if (!plugin_wide) {
    *out = str(ctx->scratch.emplace_back(value));
    return TRELLIS_OK;
  }
  std::lock_guard lock(g_mu);
  *out = str(g_config.emplace(std::string(view(path)), std::string(value)).first->second);
  return TRELLIS_OK;
}

trellis_status routeAdd(const trellis_ctx* c, trellis_str method, trellis_str pattern,
                        trellis_handler_fn handler, void* user) {
  WorkerCtx* ctx = live(c);
  if (!ctx) return refusal();
  if (!handler) return failLocal(ctx, TRELLIS_INVALID, "route_add needs a handler");
  uint32_t index = remember(Kind::kRoute, reinterpret_cast<void*>(handler), user);
  FrameWriter w;
  w.str(view(method)).str(view(pattern)).u32(index);
  return callPlain(c, CallOp::kRouteAdd, w);
}

const Snapshot* liveReq(const trellis_ctx* c, const trellis_request* req) {
  WorkerCtx* ctx = live(c);
  if (!ctx) return nullptr;
  if (!req || reinterpret_cast<const Snapshot*>(req) != ctx->req) {
    tls_refusal = TRELLIS_INVALID;
    return nullptr;
  }
  return ctx->req;
}

trellis_status reqMethod(const trellis_ctx* c, const trellis_request* req, trellis_str* out) {
  const Snapshot* r = liveReq(c, req);
  if (!r) return refusal();
  if (!out) return TRELLIS_INVALID;
  *out = str(r->method);
  return TRELLIS_OK;
}

trellis_status reqPath(const trellis_ctx* c, const trellis_request* req, trellis_str* out) {
  const Snapshot* r = liveReq(c, req);
  if (!r) return refusal();
  if (!out) return TRELLIS_INVALID;
  *out = str(r->path);
  return TRELLIS_OK;
}

trellis_status reqQuery(const trellis_ctx* c, const trellis_request* req, trellis_str* out) {
  const Snapshot* r = liveReq(c, req);
  if (!r) return refusal();
  if (!out) return TRELLIS_INVALID;
  *out = str(r->query);
  return TRELLIS_OK;
}

trellis_status reqQueryParam(const trellis_ctx* c, const trellis_request* req, trellis_str name,
                             trellis_str* out) {
  if (!liveReq(c, req)) return refusal();
  if (!out) return TRELLIS_INVALID;
  WorkerCtx* ctx = find(c);
  FrameWriter w;
  w.str(view(name));
  Frame f;
  trellis_status s;
  FrameReader r = call(ctx, CallOp::kReqQueryParam, w, f, &s);
  if (s != TRELLIS_OK) return s;
  std::string_view value = r.str();
  if (!r.ok()) _exit(kExitProtocol);
  *out = str(ctx->scratch.emplace_back(value));
  return TRELLIS_OK;
}

trellis_status reqPathParam(const trellis_ctx* c, const trellis_request* req, trellis_str name,
                            trellis_str* out) {
  const Snapshot* r = liveReq(c, req);
  if (!r) return refusal();
  if (!out) return TRELLIS_INVALID;
  for (const Param& p : r->params) {
    if (p.name != view(name)) continue;
    if (!p.ok) return failLocal(find(c), TRELLIS_INVALID, "malformed percent-encoding");
    *out = str(p.value);
    return TRELLIS_OK;
  }
  return TRELLIS_NOT_FOUND;
}

trellis_status reqHeader(const trellis_ctx* c, const trellis_request* req, trellis_str name,
                         trellis_str* out) {
  const Snapshot* r = liveReq(c, req);
  if (!r) return refusal();
  if (!out) return TRELLIS_INVALID;
  for (const auto& [n, v] : r->headers) {
    if (iequals(n, view(name))) {
      *out = str(v);
      return TRELLIS_OK;
    }
  }
  return TRELLIS_NOT_FOUND;
}

trellis_status reqHeaders(const trellis_ctx* c, const trellis_request* req,
                          trellis_header_visit_fn visit, void* user) {
  const Snapshot* r = liveReq(c, req);
  if (!r) return refusal();
  if (!visit) return TRELLIS_INVALID;
  for (const auto& [n, v] : r->headers) {
    if (visit(user, str(n), str(v)) != 0) break;
  }
  return TRELLIS_OK;
}

trellis_status reqBody(const trellis_ctx* c, const trellis_request* req, trellis_str* out) {
  const Snapshot* r = liveReq(c, req);
  if (!r) return refusal();
  if (!out) return TRELLIS_INVALID;
  *out = str(r->body);
  return TRELLIS_OK;
}

// The response setters are checked here with the host's rules (so the plugin gets its
// answer at once) and replayed by the host when the handler returns.
WorkerCtx* liveRes(const trellis_ctx* c, trellis_response* res) {
  WorkerCtx* ctx = live(c);
  if (!ctx) return nullptr;
  if (!res || ctx->phase != InvokeOp::kRoute ||
      reinterpret_cast<uintptr_t>(res) != ctx->token + kResponseToken) {
    tls_refusal = TRELLIS_INVALID;
    return nullptr;
  }
  return ctx;
}

trellis_status resSetStatus(const trellis_ctx* c, trellis_response* res, int32_t status) {
  WorkerCtx* ctx = liveRes(c, res);
  if (!ctx) return refusal();
  if (status < 100 || status > 599) return failLocal(ctx, TRELLIS_INVALID, "status out of range");
  ctx->effects.u8(static_cast<uint8_t>(Effect::kResStatus)).i32(status);
  return TRELLIS_OK;
}

trellis_status resAddHeader(const trellis_ctx* c, trellis_response* res, trellis_str name,
                            trellis_str value) {
  WorkerCtx* ctx = liveRes(c, res);
  if (!ctx) return refusal();
  std::string_view n = view(name), v = view(value);
  if (!isToken(n) || v.find_first_of(std::string_view("\r\n\0", 3)) != std::string_view::npos) {
    return failLocal(ctx, TRELLIS_INVALID, "header name or value contains forbidden bytes");
  }
  if (iequals(n, "content-length") || iequals(n, "transfer-encoding") || iequals(n, "connection")) {
    return failLocal(ctx, TRELLIS_INVALID, "header " + std::string(n) + " is set by the host");
  }
  ctx->effects.u8(static_cast<uint8_t>(Effect::kResHeader)).str(n).str(v);
  return TRELLIS_OK;
}

trellis_status resSetBody(const trellis_ctx* c, trellis_response* res, trellis_str body) {
  WorkerCtx* ctx = liveRes(c, res);
  if (!ctx) return refusal();
  ctx->effects.u8(static_cast<uint8_t>(Effect::kResBody)).str(view(body));
  return TRELLIS_OK;
}

trellis_status resAppendBody(const trellis_ctx* c, trellis_response* res, trellis_str chunk) {
  WorkerCtx* ctx = liveRes(c, res);
  if (!ctx) return refusal();
  ctx->effects.u8(static_cast<uint8_t>(Effect::kResAppend)).str(view(chunk));
  return TRELLIS_OK;
}

trellis_status kvGet(const trellis_ctx* c, trellis_str key, trellis_buf* value, uint64_t* version) {
  WorkerCtx* ctx = live(c);
  if (!ctx) return refusal();
  if (!value) return TRELLIS_INVALID;
  FrameWriter w;
  w.str(view(key));
  Frame f;
  trellis_status s;
  FrameReader r = call(ctx, CallOp::kKvGet, w, f, &s);
  if (s != TRELLIS_OK) return s;
  std::string_view bytes = r.str();
  uint64_t v = r.u64();
  if (!r.ok()) _exit(kExitProtocol);
  fillBuf(value, bytes);
  if (version) *version = v;
  return s;
}

trellis_status kvPut(const trellis_ctx* c, trellis_str key, trellis_str value,
                     uint64_t expected_version, uint64_t* new_version) {
  FrameWriter w;
  w.str(view(key)).str(view(value)).u64(expected_version);
  return callU64(c, CallOp::kKvPut, w, new_version);
}

// A worker's handler runs on the worker's own thread, so the write is made here, blocking
// it; the completion runs after the handler (or completion) that started it returns, as
// in process. Refusals before any write (bad input, capability) are returned at once.
trellis_status kvPutAsync(const trellis_ctx* c, trellis_str key, trellis_str value,
                          uint64_t expected_version, trellis_kv_put_done_fn done, void* user) {
  WorkerCtx* ctx = find(c);
  if (!ctx) return TRELLIS_INVALID;
  if (!done) return failLocal(ctx, TRELLIS_INVALID, "kv_put_async needs a completion function");
  if (ctx->phase != InvokeOp::kRoute) {
    return failLocal(ctx, TRELLIS_INVALID,
                     "kv_put_async works only in a route handler (or its completion); in jobs, "
                     "events and services use kv_put");
  }
  if (ctx->pending_put) {
    return failLocal(ctx, TRELLIS_INVALID,
                     "another asynchronous call of this request is still pending");
  }
  uint64_t version = 0;
  trellis_status s = kvPut(c, key, value, expected_version, &version);
  if (s == TRELLIS_INVALID || s == TRELLIS_PERMISSION_DENIED) return s;
  ctx->pending_put = WorkerCtx::PendingPut{done, user, s, version, ctx->error};
  ctx->error.clear();
  return TRELLIS_OK;
}

trellis_status kvDelete(const trellis_ctx* c, trellis_str key, uint64_t expected_version) {
  FrameWriter w;
  w.str(view(key)).u64(expected_version);
  return callPlain(c, CallOp::kKvDelete, w);
}

trellis_status kvList(const trellis_ctx* c, trellis_str prefix, trellis_str start_after,
                      uint32_t limit, trellis_kv_visit_fn visit, void* user) {
  WorkerCtx* ctx = live(c);
  if (!ctx) return refusal();
  if (!visit) return TRELLIS_INVALID;
  FrameWriter w;
  w.str(view(prefix)).str(view(start_after)).u32(limit);
  Frame f;
  trellis_status s;
  FrameReader r = call(ctx, CallOp::kKvList, w, f, &s);
  if (s != TRELLIS_OK) return s;
  uint32_t n = r.u32();
  for (uint32_t i = 0; i < n && r.ok(); ++i) {
    std::string_view k = r.str(), v = r.str();
    uint64_t version = r.u64();
    if (!r.ok()) break;
    if (visit(user, str(k), str(v), version) != 0) break;
  }
  if (!r.ok()) _exit(kExitProtocol);
  return s;
}

trellis_status eventPublish(const trellis_ctx* c, trellis_str topic, trellis_str payload) {
  FrameWriter w;
  w.str(view(topic)).str(view(payload));
  return callPlain(c, CallOp::kEventPublish, w);
}

trellis_status eventSubscribe(const trellis_ctx* c, trellis_str topic, trellis_event_fn fn,
                              void* user) {
  WorkerCtx* ctx = live(c);
  if (!ctx) return refusal();
  if (!fn) return failLocal(ctx, TRELLIS_INVALID, "event_subscribe needs a function");
  uint32_t index = remember(Kind::kEvent, reinterpret_cast<void*>(fn), user);
  FrameWriter w;
  w.str(view(topic)).u32(index);
  return callPlain(c, CallOp::kEventSubscribe, w);
}

uint64_t clockUnixMs(const trellis_ctx*) {
  timespec ts{};
  clock_gettime(CLOCK_REALTIME, &ts);
  return static_cast<uint64_t>(ts.tv_sec) * 1000 + static_cast<uint64_t>(ts.tv_nsec) / 1000000;
}

uint64_t clockMonotonicNs(const trellis_ctx*) {
  timespec ts{};
  clock_gettime(CLOCK_MONOTONIC, &ts);
  return static_cast<uint64_t>(ts.tv_sec) * 1000000000 + static_cast<uint64_t>(ts.tv_nsec);
}

trellis_status metricDefine(const trellis_ctx* c, int32_t kind, trellis_str name, trellis_str help,
                            trellis_metric_id* out) {
  if (!out) {
    WorkerCtx* ctx = live(c);
    return ctx ? failLocal(ctx, TRELLIS_INVALID, "metric_define needs out") : refusal();
  }
  FrameWriter w;
  w.i32(kind).str(view(name)).str(view(help));
  uint64_t id = 0;
  trellis_status s = callU64(c, CallOp::kMetricDefine, w, &id);
  if (s == TRELLIS_OK) *out = static_cast<trellis_metric_id>(id);
  return s;
}

trellis_status metricRecord(const trellis_ctx* c, trellis_metric_id id, double value) {
  WorkerCtx* ctx = live(c);
  if (!ctx) return refusal();
  ctx->effects.u8(static_cast<uint8_t>(Effect::kMetricRecord)).u32(id).f64(value);
  return TRELLIS_OK;
}

trellis_status ctxPrincipal(const trellis_ctx* c, trellis_str* out) {
  WorkerCtx* ctx = live(c);
  if (!ctx) return refusal();
  if (!out) return TRELLIS_INVALID;
  *out = str(ctx->principal);
  return TRELLIS_OK;
}

trellis_status tenantInfo(const trellis_ctx* c, trellis_buf* out) {
  return callBuf(c, CallOp::kTenantInfo, FrameWriter(), out);
}
trellis_status tenantKeysList(const trellis_ctx* c, trellis_buf* out) {
  return callBuf(c, CallOp::kTenantKeysList, FrameWriter(), out);
}
trellis_status tenantKeyCreate(const trellis_ctx* c, uint64_t ttl, trellis_buf* out) {
  FrameWriter w;
  w.u64(ttl);
  return callBuf(c, CallOp::kTenantKeyCreate, w, out);
}
trellis_status tenantKeyRotate(const trellis_ctx* c, uint64_t ttl, trellis_buf* out) {
  FrameWriter w;
  w.u64(ttl);
  return callBuf(c, CallOp::kTenantKeyRotate, w, out);
}
trellis_status tenantKeyRevoke(const trellis_ctx* c, trellis_str key_id) {
  FrameWriter w;
  w.str(view(key_id));
  return callPlain(c, CallOp::kTenantKeyRevoke, w);
}

trellis_status lastError(const trellis_ctx* c, trellis_str* out) {
  WorkerCtx* ctx = find(c);
  if (!ctx || !out) return TRELLIS_INVALID;
  *out = str(ctx->scratch.emplace_back(ctx->error));
  return TRELLIS_OK;
}

trellis_status handleClose(const trellis_ctx* c, trellis_handle h) {
  FrameWriter w;
  w.u64(h);
  return callPlain(c, CallOp::kHandleClose, w);
}

trellis_status ctxTrace(const trellis_ctx* c, trellis_str* traceparent, trellis_str* tracestate) {
  WorkerCtx* ctx = live(c);
  if (!ctx) return refusal();
  if (!traceparent) {
    return failLocal(ctx, TRELLIS_INVALID, "ctx_trace needs a traceparent output");
  }
  if (!ctx->has_trace) {
    return failLocal(ctx, TRELLIS_NOT_FOUND,
                     "no trace outside a request, service call, job or event");
  }
  *traceparent = str(ctx->traceparent);
  if (tracestate) *tracestate = str(ctx->tracestate);
  return TRELLIS_OK;
}

trellis_status serviceProvide(const trellis_ctx* c, trellis_str service, trellis_str method,
                              trellis_service_fn fn, void* user) {
  WorkerCtx* ctx = live(c);
  if (!ctx) return refusal();
  if (!fn) return failLocal(ctx, TRELLIS_INVALID, "service_provide needs a function");
  uint32_t index = remember(Kind::kService, reinterpret_cast<void*>(fn), user);
  FrameWriter w;
  w.str(view(service)).str(view(method)).u32(index);
  return callPlain(c, CallOp::kServiceProvide, w);
}

trellis_status serviceCall(const trellis_ctx* c, trellis_str service, trellis_str method,
                           trellis_str request, trellis_buf* response) {
  FrameWriter w;
  w.str(view(service)).str(view(method)).str(view(request));
  return callBuf(c, CallOp::kServiceCall, w, response);
}

trellis_status serviceReply(const trellis_ctx* c, trellis_service_reply* reply,
                            trellis_str response) {
  WorkerCtx* ctx = live(c);
  if (!ctx) return refusal();
  if (ctx->phase != InvokeOp::kService ||
      reinterpret_cast<uintptr_t>(reply) != ctx->token + kReplyToken) {
    return failLocal(ctx, TRELLIS_INVALID, "service_reply outside the service method");
  }
  if (response.len > services::kMaxServicePayload) {
    return failLocal(
        ctx, TRELLIS_INVALID,
        "service response of " + std::to_string(response.len) + " bytes exceeds the 1 MiB limit");
  }
  ctx->effects.u8(static_cast<uint8_t>(Effect::kServiceReply)).str(view(response));
  return TRELLIS_OK;
}

trellis_status ctxCaller(const trellis_ctx* c, trellis_str* out) {
  WorkerCtx* ctx = live(c);
  if (!ctx) return refusal();
  if (!out) return TRELLIS_INVALID;
  if (!ctx->has_caller) return failLocal(ctx, TRELLIS_NOT_FOUND, "not inside a service method");
  *out = str(ctx->caller);
  return TRELLIS_OK;
}

trellis_status jobHandler(const trellis_ctx* c, trellis_job_fn fn, void* user) {
  WorkerCtx* ctx = live(c);
  if (!ctx) return refusal();
  if (!fn) return failLocal(ctx, TRELLIS_INVALID, "job_handler needs a function");
  uint32_t index = remember(Kind::kJob, reinterpret_cast<void*>(fn), user);
  FrameWriter w;
  w.u32(index);
  return callPlain(c, CallOp::kJobHandler, w);
}

// Copies a struct the plugin sized itself: fields its (older) header lacked stay zero.
template <typename T>
T sized(const T* in) {
  T out{};
  std::memcpy(&out, in, std::min<size_t>(in->struct_size, sizeof(T)));
  out.struct_size = sizeof(T);
  return out;
}

trellis_status jobSchedule(const trellis_ctx* c, const trellis_job_spec* in) {
  WorkerCtx* ctx = live(c);
  if (!ctx) return refusal();
  if (!in) return failLocal(ctx, TRELLIS_INVALID, "job_schedule needs a spec");
  trellis_job_spec spec = sized(in);
  FrameWriter w;
  w.u32(in->struct_size).i32(spec.kind).str(view(spec.name)).u64(spec.delay_ms);
  w.u64(spec.interval_ms).str(view(spec.cron)).str(view(spec.payload)).u32(spec.flags);
  w.u32(spec.max_attempts).u32(spec.budget_ms);
  return callPlain(c, CallOp::kJobSchedule, w);
}

trellis_status jobCancel(const trellis_ctx* c, trellis_str name) {
  FrameWriter w;
  w.str(view(name));
  return callPlain(c, CallOp::kJobCancel, w);
}

trellis_status httpSend(const trellis_ctx* c, const trellis_http_request* in,
                        trellis_handle* response) {
  WorkerCtx* ctx = live(c);
  if (!ctx) return refusal();
  if (!in || !response) return failLocal(ctx, TRELLIS_INVALID, "http_send needs a request");
  trellis_http_request r = sized(in);
  FrameWriter w;
  w.u32(in->struct_size).str(view(r.method)).str(view(r.url));
  w.u32(static_cast<uint32_t>(r.headers ? r.header_count : 0));
  for (size_t i = 0; r.headers && i < r.header_count; ++i) {
    w.str(view(r.headers[2 * i])).str(view(r.headers[2 * i + 1]));
  }
  w.str(view(r.body)).u32(r.connect_timeout_ms).u32(r.first_byte_timeout_ms);
  w.u32(r.total_timeout_ms).u32(r.max_redirects).u64(r.max_response_bytes);
  return callU64(c, CallOp::kHttpSend, w, response);
}

trellis_status httpResponseStatus(const trellis_ctx* c, trellis_handle h, int32_t* status) {
  if (!status) return TRELLIS_INVALID;
  FrameWriter w;
  w.u64(h);
  uint64_t v = 0;
  trellis_status s = callU64(c, CallOp::kHttpResponseStatus, w, &v);
  if (s == TRELLIS_OK) *status = static_cast<int32_t>(v);
  return s;
}

trellis_status httpResponseHeaders(const trellis_ctx* c, trellis_handle h,
                                   trellis_header_visit_fn visit, void* user) {
  WorkerCtx* ctx = live(c);
  if (!ctx) return refusal();
  if (!visit) return TRELLIS_INVALID;
  FrameWriter w;
  w.u64(h);
  Frame f;
  trellis_status s;
  FrameReader r = call(ctx, CallOp::kHttpResponseHeaders, w, f, &s);
  if (s != TRELLIS_OK) return s;
  uint32_t n = r.u32();
  for (uint32_t i = 0; i < n && r.ok(); ++i) {
    std::string_view name = r.str(), value = r.str();
    if (!r.ok()) break;
    if (visit(user, str(name), str(value)) != 0) break;
  }
  if (!r.ok()) _exit(kExitProtocol);
  return s;
}

// Reads into the plugin's buffer; the host never sends more than asked.
trellis_status readInto(const trellis_ctx* c, CallOp op, trellis_handle h, char* buf, size_t cap,
                        size_t* len) {
  WorkerCtx* ctx = live(c);
  if (!ctx) return refusal();
  if (!len || (!buf && cap > 0)) return TRELLIS_INVALID;
  FrameWriter w;
  w.u64(h).u64(std::min<size_t>(cap, kMaxFramePayload / 2));
  Frame f;
  trellis_status s;
  FrameReader r = call(ctx, op, w, f, &s);
  if (s != TRELLIS_OK) return s;
  std::string_view bytes = r.str();
  if (!r.ok() || bytes.size() > cap) _exit(kExitProtocol);
  if (!bytes.empty()) std::memcpy(buf, bytes.data(), bytes.size());
  *len = bytes.size();
  return s;
}

trellis_status httpResponseRead(const trellis_ctx* c, trellis_handle h, char* buf, size_t cap,
                                size_t* len) {
  return readInto(c, CallOp::kHttpResponseRead, h, buf, cap, len);
}

trellis_status blobOpenWrite(const trellis_ctx* c, trellis_str key,
                             const trellis_blob_write_options* options, trellis_handle* writer) {
  if (!writer) return TRELLIS_INVALID;
  FrameWriter w;
  w.str(view(key)).u8(options ? 1 : 0);
  if (options) {
    trellis_blob_write_options o = sized(options);
    w.str(view(o.content_type)).str(view(o.metadata_json));
  }
  return callU64(c, CallOp::kBlobOpenWrite, w, writer);
}

trellis_status blobWrite(const trellis_ctx* c, trellis_handle h, trellis_str chunk) {
  FrameWriter w;
  w.u64(h).str(view(chunk));
  return callPlain(c, CallOp::kBlobWrite, w);
}

trellis_status blobCommit(const trellis_ctx* c, trellis_handle h, trellis_buf* head_json) {
  WorkerCtx* ctx = live(c);
  if (!ctx) return refusal();
  FrameWriter w;
  w.u64(h).u8(head_json ? 1 : 0);
  Frame f;
  trellis_status s;
  FrameReader r = call(ctx, CallOp::kBlobCommit, w, f, &s);
  if (s != TRELLIS_OK) return s;
  std::string_view head = r.str();
  if (!r.ok()) _exit(kExitProtocol);
  if (head_json) fillBuf(head_json, head);
  return s;
}

trellis_status blobOpenRead(const trellis_ctx* c, trellis_str key, uint64_t offset, uint64_t length,
                            trellis_handle* reader) {
  if (!reader) return TRELLIS_INVALID;
  FrameWriter w;
  w.str(view(key)).u64(offset).u64(length);
  return callU64(c, CallOp::kBlobOpenRead, w, reader);
}

trellis_status blobRead(const trellis_ctx* c, trellis_handle h, char* buf, size_t cap,
                        size_t* len) {
  return readInto(c, CallOp::kBlobRead, h, buf, cap, len);
}

trellis_status blobHead(const trellis_ctx* c, trellis_str key, trellis_buf* head_json) {
  FrameWriter w;
  w.str(view(key));
  return callBuf(c, CallOp::kBlobHead, w, head_json);
}

trellis_status blobDelete(const trellis_ctx* c, trellis_str key) {
  FrameWriter w;
  w.str(view(key));
  return callPlain(c, CallOp::kBlobDelete, w);
}

trellis_status blobList(const trellis_ctx* c, trellis_str prefix, trellis_str start_after,
                        uint32_t limit, trellis_buf* out) {
  FrameWriter w;
  w.str(view(prefix)).str(view(start_after)).u32(limit);
  return callBuf(c, CallOp::kBlobList, w, out);
}

trellis_status auditEmit(const trellis_ctx* c, trellis_str action, trellis_str resource,
                         trellis_str details_json) {
  FrameWriter w;
  w.str(view(action)).str(view(resource)).str(view(details_json));
  return callPlain(c, CallOp::kAuditEmit, w);
}

// Admin routes, the usage subscription and acting for a tenant are system-plugin calls;
// system plugins run in process (the host refuses isolation: process for them), so a
// worker never offers these three.
trellis_status adminRouteAdd(const trellis_ctx* c, trellis_str, trellis_str, trellis_str,
                             trellis_handler_fn, void*) {
  WorkerCtx* ctx = live(c);
  if (!ctx) return refusal();
  return failLocal(ctx, TRELLIS_UNIMPLEMENTED, "admin routes need the plugin to run in process");
}

trellis_status usageSubscribe(const trellis_ctx* c, trellis_usage_fn, void*) {
  WorkerCtx* ctx = live(c);
  if (!ctx) return refusal();
  return failLocal(ctx, TRELLIS_UNIMPLEMENTED,
                   "the usage stream needs the plugin to run in process");
}

trellis_status actForTenant(const trellis_ctx* c, trellis_str, trellis_str, trellis_tenant_fn,
                            void*) {
  WorkerCtx* ctx = live(c);
  if (!ctx) return refusal();
  return failLocal(ctx, TRELLIS_UNIMPLEMENTED,
                   "acting for a tenant needs the plugin to run in process");
}

trellis_status usageAck(const trellis_ctx* c, trellis_str cursor) {
  FrameWriter w;
  w.str(view(cursor));
  return callPlain(c, CallOp::kUsageAck, w);
}

trellis_status usageEmit(const trellis_ctx* c, trellis_str record_json) {
  FrameWriter w;
  w.str(view(record_json));
  return callPlain(c, CallOp::kUsageEmit, w);
}

trellis_status resProblem(const trellis_ctx* c, trellis_response* res, int32_t status,
                          trellis_str detail) {
  WorkerCtx* ctx = liveRes(c, res);
  if (!ctx) return refusal();
  if (status < 400 || status > 599) {
    return failLocal(ctx, TRELLIS_INVALID,
                     "a problem's status must be 400 to 599, not " + std::to_string(status));
  }
  if (detail.len > 4096) {
    return failLocal(ctx, TRELLIS_INVALID, "a problem's detail must be at most 4096 bytes");
  }
  ctx->effects.u8(static_cast<uint8_t>(Effect::kResProblem)).i32(status).str(view(detail));
  return TRELLIS_OK;
}

// Egress streams live in the host: each call is a CALL the host serves with the real
// stream service under this invocation's ctx, so the egress gate, the tenant's quotas and
// the connect and io timeouts are the ones a plugin in process meets.
trellis_status streamConnect(const trellis_ctx* c, const trellis_stream_options* options,
                             trellis_handle* stream) {
  WorkerCtx* ctx = live(c);
  if (!ctx) return refusal();
  if (!options || !stream) return failLocal(ctx, TRELLIS_INVALID, "stream_connect needs options");
  trellis_stream_options o = sized(options);
  FrameWriter w;
  w.u32(options->struct_size).str(view(o.url)).u32(o.connect_timeout_ms).u32(o.io_timeout_ms);
  Frame f;
  trellis_status s;
  FrameReader r = call(ctx, CallOp::kStreamConnect, w, f, &s);
  if (s != TRELLIS_OK) return s;
  uint64_t h = r.u64();
  if (!r.ok()) _exit(kExitProtocol);
  *stream = h;
  return s;
}

// One host call, however many pieces of at most kMaxStreamChunk bytes it crosses in; the
// first piece refused ends it (the host has then closed the stream, as in process).
trellis_status streamWrite(const trellis_ctx* c, trellis_handle stream, trellis_str bytes) {
  WorkerCtx* ctx = live(c);
  if (!ctx) return refusal();
  if (bytes.len > 0 && !bytes.ptr) {
    return failLocal(ctx, TRELLIS_INVALID, "stream_write: bytes is NULL");
  }
  const std::string_view all = view(bytes);
  size_t at = 0;
  do {
    std::string_view piece = all.substr(at, kMaxStreamChunk);
    FrameWriter w;
    w.u64(stream).str(piece);
    Frame f;
    trellis_status s;
    call(ctx, CallOp::kStreamWrite, w, f, &s);
    if (s != TRELLIS_OK) return s;
    at += piece.size();
  } while (at < all.size());
  return TRELLIS_OK;
}

// Reads at most kMaxStreamChunk bytes per call (a short read, as a socket's may be).
trellis_status streamRead(const trellis_ctx* c, trellis_handle stream, char* buf, size_t cap,
                          size_t* len) {
  WorkerCtx* ctx = live(c);
  if (!ctx) return refusal();
  if (!len || (!buf && cap > 0)) {
    return failLocal(ctx, TRELLIS_INVALID, "stream_read needs buf and len");
  }
  *len = 0;
  FrameWriter w;
  w.u64(stream).u64(std::min<size_t>(cap, kMaxStreamChunk));
  Frame f;
  trellis_status s;
  FrameReader r = call(ctx, CallOp::kStreamRead, w, f, &s);
  if (s != TRELLIS_OK) return s;
  std::string_view got = r.str();
  if (!r.ok() || got.size() > cap || got.size() > kMaxStreamChunk) _exit(kExitProtocol);
  if (!got.empty()) std::memcpy(buf, got.data(), got.size());
  *len = got.size();
  return s;
}

// Scripts live in the host, like streams: the sandboxed state, its budget and its
// watchdog are trellisd's, and the handle is adopted by this worker process.
trellis_status scriptLoad(const trellis_ctx* c, trellis_str source,
                          const trellis_script_options* options, trellis_handle* script) {
  WorkerCtx* ctx = live(c);
  if (!ctx) return refusal();
  if (!script)
    return failLocal(ctx, TRELLIS_INVALID, "script_load needs somewhere to put the handle");
  if (source.len > 0 && !source.ptr) {
    return failLocal(ctx, TRELLIS_INVALID, "script_load: source is NULL");
  }
  FrameWriter w;
  w.str(view(source)).u8(options ? 1 : 0);
  if (options) {
    // A name the plugin's struct does not cover is absent, as the host would see it.
    if (options->struct_size < offsetof(trellis_script_options, name) + sizeof(trellis_str)) {
      return failLocal(ctx, TRELLIS_INVALID, "script options: struct_size is too small");
    }
    trellis_script_options o = sized(options);
    if (o.name.len > 0 && !o.name.ptr) {
      return failLocal(ctx, TRELLIS_INVALID, "script options: name is NULL");
    }
    w.u32(options->struct_size).str(view(o.name)).u64(o.max_instructions);
    w.u64(o.max_memory_bytes).u32(o.max_wall_ms);
  }
  return callU64(c, CallOp::kScriptLoad, w, script);
}

trellis_status scriptCall(const trellis_ctx* c, trellis_handle script, trellis_str function,
                          trellis_str input_json, trellis_buf* output_json) {
  WorkerCtx* ctx = live(c);
  if (!ctx) return refusal();
  if (!output_json) return failLocal(ctx, TRELLIS_INVALID, "script_call needs output_json");
  *output_json = trellis_buf{nullptr, 0};
  if ((function.len > 0 && !function.ptr) || (input_json.len > 0 && !input_json.ptr)) {
    return failLocal(ctx, TRELLIS_INVALID, "script_call: function or input is NULL");
  }
  FrameWriter w;
  w.u64(script).str(view(function)).str(view(input_json));
  return callBuf(c, CallOp::kScriptCall, w, output_json);
}

// Sealing: the seal key never leaves trellisd, which seals and opens for this worker's
// plugin and ctx tenant; only the label and the bytes cross.
trellis_status sealCall(const trellis_ctx* c, CallOp op, const char* slot, trellis_str label,
                        trellis_str input, trellis_buf* out) {
  WorkerCtx* ctx = live(c);
  if (!ctx) return refusal();
  if (!out) return failLocal(ctx, TRELLIS_INVALID, std::string(slot) + " needs an output buffer");
  *out = trellis_buf{nullptr, 0};
  if ((label.len > 0 && !label.ptr) || (input.len > 0 && !input.ptr)) {
    return failLocal(ctx, TRELLIS_INVALID, std::string(slot) + ": label or input is NULL");
  }
  FrameWriter w;
  w.str(view(label)).str(view(input));
  return callBuf(c, op, w, out);
}

trellis_status keyWrap(const trellis_ctx* c, trellis_str label, trellis_str plaintext,
                       trellis_buf* out) {
  return sealCall(c, CallOp::kKeyWrap, "key_wrap", label, plaintext, out);
}

trellis_status keyUnwrap(const trellis_ctx* c, trellis_str label, trellis_str sealed,
                         trellis_buf* out) {
  return sealCall(c, CallOp::kKeyUnwrap, "key_unwrap", label, sealed, out);
}

constexpr trellis_host_api kWorkerApi = {
    sizeof(trellis_host_api), TRELLIS_ABI_MAJOR, TRELLIS_ABI_MINOR, bufFree, log, setError,
    ctxTenant, ctxPlugin, configGet, routeAdd, reqMethod, reqPath, reqQuery, reqQueryParam,
    reqPathParam, reqHeader, reqHeaders, reqBody, resSetStatus, resAddHeader, resSetBody,
    resAppendBody, kvGet, kvPut, kvDelete, kvList, eventPublish, eventSubscribe, clockUnixMs,
    clockMonotonicNs, metricDefine, metricRecord, ctxPrincipal, tenantInfo, tenantKeysList,
    tenantKeyCreate, tenantKeyRotate, tenantKeyRevoke, lastError, handleClose, ctxTrace,
    serviceProvide, serviceCall, serviceReply, ctxCaller, jobHandler, jobSchedule, jobCancel,
    httpSend, httpResponseStatus, httpResponseHeaders, httpResponseRead, blobOpenWrite, blobWrite,
    blobCommit, blobOpenRead, blobRead, blobHead, blobDelete, blobList, resProblem, auditEmit,
    adminRouteAdd, usageSubscribe, usageAck, usageEmit, actForTenant, kvPutAsync,
    // Egress streams: CALLs the host serves; the sockets stay in the host.
    streamConnect,  // stream_connect
    streamWrite,    // stream_write
    streamRead,     // stream_read
    // Scripts: CALLs the host serves; the Lua states stay in the host.
    scriptLoad,  // script_load
    scriptCall,  // script_call
    // Sealing: CALLs the host serves; the seal key stays in the host.
    keyWrap,    // key_wrap
    keyUnwrap,  // key_unwrap
};
// Every slot is listed: a new slot in plugin.h must be added here too (NULL if a worker
// cannot offer it).
static_assert(offsetof(trellis_host_api, key_unwrap) + sizeof(void*) == sizeof(trellis_host_api),
              "the worker's host table must list every slot of trellis_host_api");

// Reads the ctx block every INVOKE starts with (after its callback index).
void readCtx(FrameReader& r, WorkerCtx& ctx) {
  ctx.tenant = r.str();
  ctx.principal = r.str();
  ctx.has_trace = r.u8() != 0;
  ctx.traceparent = r.str();
  ctx.tracestate = r.str();
  ctx.has_caller = r.u8() != 0;
  ctx.caller = r.str();
  ctx.calls = r.u64();
  ctx.max_calls = r.u64();
}

bool readSnapshot(FrameReader& r, Snapshot& s) {
  s.method = r.str();
  s.path = r.str();
  s.query = r.str();
  s.body = r.str();
  uint32_t headers = r.u32();
  if (!r.ok() || headers > r.remaining() / 8) return false;  // each header takes >= 8 bytes
  s.headers.reserve(headers);
  for (uint32_t i = 0; i < headers; ++i) {
    std::string_view n = r.str(), v = r.str();
    s.headers.emplace_back(n, v);
  }
  uint32_t params = r.u32();
  if (!r.ok() || params > r.remaining() / 9) return false;
  for (uint32_t i = 0; i < params; ++i) {
    std::string_view n = r.str(), v = r.str();
    bool ok = r.u8() != 0;
    s.params.push_back({n, v, ok});
  }
  return r.ok();
}

// The callback registered under `index`, if it is of `kind`.
const Callback* lookup(uint32_t index, Kind kind) {
  std::lock_guard lock(g_mu);
  if (index >= g_callbacks.size() || g_callbacks[index].kind != kind) return nullptr;
  return &g_callbacks[index];
}

}  // namespace

WorkerHost::WorkerHost(const trellis_plugin* plugin, void* state) {
  g_plugin = plugin;
  g_state = state;
}

void WorkerHost::noteLuaFailure(size_t cause) {
  if (tls_live.empty()) return;
  tls_live.back()->effects.u8(static_cast<uint8_t>(Effect::kLuaFailure));
  tls_live.back()->effects.u8(static_cast<uint8_t>(cause));
}

void WorkerHost::withInitCtx(const std::function<void(const trellis_ctx*)>& fn) {
  WorkerCtx ctx;
  ctx.phase = InvokeOp::kInit;
  ctx.token = g_next_token.fetch_add(1, std::memory_order_relaxed) * 64;
  struct Live {
    explicit Live(WorkerCtx* c) { tls_live.push_back(c); }
    ~Live() { tls_live.pop_back(); }
  } live(&ctx);
  fn(reinterpret_cast<const trellis_ctx*>(ctx.token));
}

const trellis_host_api* WorkerHost::api() {
  return &kWorkerApi;
}

// The completions of kv_put_async, each after the callback that started it, until one
// returns with nothing pending. A failure while one is pending answers with that failure;
// the completion still runs, with an empty request and a response its calls cannot reach.
namespace {

trellis_status runCompletions(WorkerCtx& ctx, const trellis_ctx* c, trellis_status status) {
  static Snapshot empty;
  bool late = false;
  while (ctx.pending_put) {
    WorkerCtx::PendingPut put = std::move(*ctx.pending_put);
    ctx.pending_put.reset();
    late = late || status != TRELLIS_OK;
    if (late) ctx.req = &empty;
    ctx.error = put.error;
    const uintptr_t res = ctx.token + (late ? kLateResponseToken : kResponseToken);
    trellis_status s = put.done(put.user, c, reinterpret_cast<const trellis_request*>(ctx.req),
                                reinterpret_cast<trellis_response*>(res), put.status, put.version);
    if (!late) status = s;
  }
  return status;
}

}  // namespace

int WorkerHost::serve(int fd, std::string_view region) {
  Lane lane(fd);
  for (;;) {
    Frame in;
    if (!lane.invokes.empty()) {
      in = std::move(lane.invokes.front());
      lane.invokes.pop_front();
    } else if (Status s = lane.chan.read(in, Clock::time_point::max()); !s) {
      return s.code() == StatusCode::kInvalid ? kExitProtocol : 0;
    }
    if (in.type == FrameType::kShutdown) return 0;
    if (in.type != FrameType::kInvoke) return kExitProtocol;

    WorkerCtx ctx;
    ctx.lane = &lane;
    ctx.phase = static_cast<InvokeOp>(in.op);
    FrameReader frame(in.payload);
    Snapshot snapshot;
    trellis_status status = TRELLIS_INTERNAL;
    uint32_t index = frame.u32();
    // A route whose snapshot (ctx block and request) is in the region: the slot the host
    // names must lie inside the mapping, and is then read with the same checks as a frame.
    // Its views stay valid until the RESULT: the host reuses the slot only after that.
    FrameReader r = frame;
    if (ctx.phase == InvokeOp::kRouteShared) {
      const uint64_t offset = frame.u64();
      const uint32_t length = frame.u32();
      if (!frame.ok() || !frame.atEnd() || offset > region.size() ||
          length > region.size() - offset) {
        return kExitProtocol;
      }
      r = FrameReader(region.substr(offset, length));
      ctx.phase = InvokeOp::kRoute;
    }
    readCtx(r, ctx);
    ctx.token = g_next_token.fetch_add(1, std::memory_order_relaxed) * 64;
    auto* c = reinterpret_cast<const trellis_ctx*>(ctx.token);
    tls_live.push_back(&ctx);
    switch (ctx.phase) {
      case InvokeOp::kInit:
        if (!r.ok()) return kExitProtocol;
        status = g_plugin->on_init(&kWorkerApi, c, &g_state);
        break;
      case InvokeOp::kStart:
        if (!r.ok()) return kExitProtocol;
        status = g_plugin->on_start ? g_plugin->on_start(g_state, c) : TRELLIS_OK;
        break;
      case InvokeOp::kStop:
        if (!r.ok()) return kExitProtocol;
        if (g_plugin->on_stop) g_plugin->on_stop(g_state, c);
        status = TRELLIS_OK;
        break;
      case InvokeOp::kDestroy:
        if (g_plugin->on_destroy) g_plugin->on_destroy(g_state);
        g_state = nullptr;
        status = TRELLIS_OK;
        break;
      case InvokeOp::kRoute: {
        const Callback* cb = lookup(index, Kind::kRoute);
        if (!cb || !readSnapshot(r, snapshot)) return kExitProtocol;
        ctx.req = &snapshot;
        status = reinterpret_cast<trellis_handler_fn>(cb->fn)(
            cb->user, c, reinterpret_cast<const trellis_request*>(&snapshot),
            reinterpret_cast<trellis_response*>(ctx.token + kResponseToken));
        status = runCompletions(ctx, c, status);
        break;
      }
      case InvokeOp::kEvent: {
        const Callback* cb = lookup(index, Kind::kEvent);
        std::string_view topic = r.str(), payload = r.str();
        if (!cb || !r.ok()) return kExitProtocol;
        reinterpret_cast<trellis_event_fn>(cb->fn)(cb->user, c, str(topic), str(payload));
        status = TRELLIS_OK;
        break;
      }
      case InvokeOp::kService: {
        const Callback* cb = lookup(index, Kind::kService);
        std::string_view request = r.str();
        if (!cb || !r.ok()) return kExitProtocol;
        status = reinterpret_cast<trellis_service_fn>(cb->fn)(
            cb->user, c, str(request),
            reinterpret_cast<trellis_service_reply*>(ctx.token + kReplyToken));
        break;
      }
      case InvokeOp::kJob: {
        const Callback* cb = lookup(index, Kind::kJob);
        std::string_view name = r.str(), payload = r.str();
        if (!cb || !r.ok()) return kExitProtocol;
        status = reinterpret_cast<trellis_job_fn>(cb->fn)(cb->user, c, str(name), str(payload));
        break;
      }
      default: return kExitProtocol;
    }
    tls_live.pop_back();
    ctx.effects.u8(static_cast<uint8_t>(Effect::kHostCalls)).u64(ctx.calls);
    FrameWriter w;
    w.str(ctx.effects.data()).i32(status);
    if (!lane.chan.send(FrameType::kResult, in.op, in.id, w)) return kExitChannelLost;
    // Sent now if nothing is buffered behind it; else with the RESULTs of the INVOKEs
    // buffered behind it, unless it has waited too long.
    bool more = !lane.invokes.empty() || lane.chan.frameBuffered();
    if (!more || Clock::now() - lane.chan.queuedSince() > kMaxResultDelay) {
      // Reads what trellisd sends while its socket is full (it may be writing a large
      // INVOKE): the two writes never wait on each other.
      if (!lane.chan.flush()) return kExitChannelLost;
    }
  }
}

}  // namespace trellis::kernel::worker
