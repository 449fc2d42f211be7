#include <strings.h>

#include <algorithm>
#include <cctype>
#include <chrono>
#include <cstdio>
#include <cstring>
#include <string_view>

#include "lua/internal/lua_plugin_state.h"
#include "trellis/kernel/http/router.h"
#include "trellis/kernel/util/json.h"

// The Lua side of a Lua plugin: trellis.* forwards each call to the host table with the
// ctx of the call in progress (t_call), and answers failures as nil, message, code.

namespace trellis::kernel::lua {

const char* codeName(trellis_status s) {
  switch (s) {
    case TRELLIS_OK: return "ok";
    case TRELLIS_INVALID: return "invalid";
    case TRELLIS_NOT_FOUND: return "not_found";
    case TRELLIS_PERMISSION_DENIED: return "permission_denied";
    case TRELLIS_QUOTA_EXCEEDED: return "quota_exceeded";
    case TRELLIS_UNAVAILABLE: return "unavailable";
    case TRELLIS_TIMEOUT: return "timeout";
    case TRELLIS_CONFLICT: return "conflict";
    case TRELLIS_UNIMPLEMENTED: return "unimplemented";
    default: return "internal";
  }
}

// The host's message for the failed call, or the status name.
void noteError(Call* c, trellis_status s) noexcept {
  try {
    trellis_str msg{nullptr, 0};
    if (hostOf(c)->last_error(c->ctx, &msg) == TRELLIS_OK && msg.len > 0) {
      c->ts->error.assign(msg.ptr, msg.len);
    } else {
      c->ts->error = codeName(s);
    }
  } catch (...) {
    c->ts->error.clear();
  }
}

void noteMessage(ThreadState* ts, const char* msg, size_t len) noexcept {
  try {
    ts->error.assign(msg, len);
  } catch (...) {
    ts->error.clear();
  }
}

namespace {

constexpr size_t kMaxLogBytes = 4096;

// Registry keys (their addresses).
char kInitTableKey;  // the `t` passed to init
char kCtxMetaKey;    // metatable of ctx proxies
char kReqMetaKey;    // metatable of req proxies
char kCurrentCtx;    // the ctx proxy of the call in progress
char kCurrentReq;    // the req proxy of the call in progress

// Copies a host-filled buffer into the sandbox's scratch string and releases it.
trellis_status takeBuffer(Call* c, trellis_status s, trellis_buf* buf) noexcept {
  std::string& out = c->ts->sb->scratch();
  if (s == TRELLIS_OK) {
    try {
      out.assign(buf->ptr ? buf->ptr : "", buf->len);
    } catch (...) {
      s = TRELLIS_INTERNAL;
    }
  }
  if (buf->ptr) hostOf(c)->buf_free(buf);
  return s;
}

int collectEntry(void* user, trellis_str key, trellis_str value, uint64_t version) {
  auto* entries = static_cast<std::vector<ThreadState::Entry>*>(user);
  try {
    entries->push_back({std::string(key.ptr, key.len), std::string(value.ptr, value.len), version});
    return 0;
  } catch (...) {
    return 1;
  }
}

trellis_status listKv(Call* c, trellis_str prefix, trellis_str after, uint32_t limit) noexcept {
  c->ts->entries.clear();
  return hostOf(c)->kv_list(c->ctx, prefix, after, limit, collectEntry, &c->ts->entries);
}

int collectHeader(void* user, trellis_str name, trellis_str value) {
  auto* pairs = static_cast<std::vector<std::pair<std::string, std::string>>*>(user);
  try {
    std::string lower(name.ptr, name.len);
    for (char& ch : lower) ch = static_cast<char>(std::tolower(static_cast<unsigned char>(ch)));
    pairs->emplace_back(std::move(lower), std::string(value.ptr, value.len));
    return 0;
  } catch (...) {
    return 1;
  }
}

trellis_status collectHeaders(Call* c) noexcept {
  c->ts->pairs.clear();
  return hostOf(c)->req_headers(c->ctx, c->req, collectHeader, &c->ts->pairs);
}

// The route's path parameters, decoded by the host.
trellis_status collectParams(Call* c) noexcept {
  try {
    auto& pairs = c->ts->pairs;
    pairs.clear();
    for (const std::string& name : c->route->params) {
      trellis_str out{nullptr, 0};
      trellis_status s =
          hostOf(c)->req_path_param(c->ctx, c->req, trellis_str{name.data(), name.size()}, &out);
      if (s == TRELLIS_NOT_FOUND) continue;
      if (s != TRELLIS_OK) return s;
      pairs.emplace_back(name, std::string(out.ptr, out.len));
    }
    return TRELLIS_OK;
  } catch (...) {
    return TRELLIS_INTERNAL;
  }
}

// The query's parameters (first value of each name), decoded by the host.
trellis_status collectArgs(Call* c) noexcept {
  try {
    auto& pairs = c->ts->pairs;
    pairs.clear();
    trellis_str query{nullptr, 0};
    if (trellis_status s = hostOf(c)->req_query(c->ctx, c->req, &query); s != TRELLIS_OK) return s;
    std::string_view rest(query.ptr, query.len);
    while (!rest.empty()) {
      size_t amp = rest.find('&');
      std::string_view pair = rest.substr(0, amp);
      rest = amp == std::string_view::npos ? std::string_view() : rest.substr(amp + 1);
      auto name = http::percentDecode(pair.substr(0, pair.find('=')), true);
      if (!name || name->empty()) continue;
      bool seen = false;
      for (const auto& [n, v] : pairs) seen = seen || n == *name;
      if (seen) continue;
      trellis_str out{nullptr, 0};
      trellis_status s =
          hostOf(c)->req_query_param(c->ctx, c->req, trellis_str{name->data(), name->size()}, &out);
      if (s == TRELLIS_NOT_FOUND) continue;
      if (s != TRELLIS_OK) return s;
      pairs.emplace_back(std::move(*name), std::string(out.ptr, out.len));
    }
    return TRELLIS_OK;
  } catch (...) {
    return TRELLIS_INTERNAL;
  }
}

// ------------------------------------------------------------------ Lua side

Call* current(lua_State* L) {
  auto* ts = static_cast<ThreadState*>(lua_touserdata(L, lua_upvalueindex(1)));
  Call* c = t_call;
  if (!c || c->ts != ts) {
    luaL_error(L, "trellis functions can only be used while the host runs the plugin");
    return nullptr;
  }
  return c;
}

trellis_str checkStr(lua_State* L, int arg) {
  size_t n = 0;
  const char* p = luaL_checklstring(L, arg, &n);
  return {p, n};
}

trellis_str optStr(lua_State* L, int arg) {
  size_t n = 0;
  const char* p = luaL_optlstring(L, arg, "", &n);
  return {p, n};
}

void pushStr(lua_State* L, trellis_str s) {
  lua_pushlstring(L, s.ptr ? s.ptr : "", s.len);
}

// nil, message, code: how every trellis.* call reports a failure.
int pushFailure(lua_State* L, Call* c, trellis_status s) {
  if (s == TRELLIS_QUOTA_EXCEEDED) c->quota_refused = true;
  trellis_str msg{nullptr, 0};
  lua_pushnil(L);
  if (hostOf(c)->last_error(c->ctx, &msg) == TRELLIS_OK && msg.len > 0) {
    pushStr(L, msg);
  } else {
    lua_pushstring(L, codeName(s));
  }
  lua_pushstring(L, codeName(s));
  return 3;
}

// Raises the message noted in ts->error, prefixed with `what`.
int raiseNoted(lua_State* L, Call* c, trellis_status s, const char* what) {
  if (s == TRELLIS_QUOTA_EXCEEDED) c->quota_refused = true;
  return luaL_error(L, "%s: %s", what, c->ts->error.c_str());
}

// Optional expected version: nil = any, 0 = must be absent, n = the version read.
uint64_t optVersion(lua_State* L, int arg) {
  if (lua_isnoneornil(L, arg)) return TRELLIS_KV_ANY_VERSION;
  lua_Integer v = luaL_checkinteger(L, arg);
  luaL_argcheck(L, v >= 0, arg, "a version is >= 0 (0: the key must not exist)");
  return static_cast<uint64_t>(v);
}

// Decodes the JSON text in scratch onto the stack.
int pushScratchJson(lua_State* L) {
  const std::string& text = Sandbox::from(L)->scratch();
  lua_pushcfunction(L, jsonDecode);
  lua_pushlstring(L, text.data(), text.size());
  lua_call(L, 1, 1);
  return 1;
}

// -- trellis.log.*
int logAt(lua_State* L, int32_t level) {
  Call* c = current(L);
  const int n = lua_gettop(L);
  luaL_checkstack(L, 2 * n + 1, "too many arguments");
  for (int i = 1; i <= n; ++i) {
    luaL_tolstring(L, i, nullptr);
    if (i < n) lua_pushliteral(L, " ");
  }
  lua_concat(L, n == 0 ? 0 : 2 * n - 1);
  // A thread's sandbox replays init: its lines were logged once already.
  if (c->phase == Phase::kReplay) return 0;
  size_t len = 0;
  const char* msg = lua_tolstring(L, -1, &len);
  hostOf(c)->log(c->ctx, level, {msg, std::min(len, kMaxLogBytes)});
  return 0;
}
int logTrace(lua_State* L) {
  return logAt(L, TRELLIS_LOG_TRACE);
}
int logDebug(lua_State* L) {
  return logAt(L, TRELLIS_LOG_DEBUG);
}
int logInfo(lua_State* L) {
  return logAt(L, TRELLIS_LOG_INFO);
}
int logWarn(lua_State* L) {
  return logAt(L, TRELLIS_LOG_WARN);
}
int logError(lua_State* L) {
  return logAt(L, TRELLIS_LOG_ERROR);
}

// -- trellis.config / tenant / plugin / principal
int config(lua_State* L) {
  Call* c = current(L);
  trellis_str path = optStr(L, 1);
  trellis_str out{nullptr, 0};
  trellis_status s = hostOf(c)->config_get(c->ctx, path, &out);
  if (s != TRELLIS_OK) return pushFailure(L, c, s);
  pushStr(L, out);
  return 1;
}

int identity(lua_State* L, trellis_status (*get)(const trellis_ctx*, trellis_str*)) {
  Call* c = current(L);
  trellis_str out{nullptr, 0};
  trellis_status s = get(c->ctx, &out);
  if (s != TRELLIS_OK) return pushFailure(L, c, s);
  pushStr(L, out);
  return 1;
}
int tenant(lua_State* L) {
  return identity(L, hostOf(current(L))->ctx_tenant);
}
int pluginId(lua_State* L) {
  return identity(L, hostOf(current(L))->ctx_plugin);
}
int principal(lua_State* L) {
  return identity(L, hostOf(current(L))->ctx_principal);
}

// -- trellis.kv.*
int kvGet(lua_State* L) {
  Call* c = current(L);
  trellis_str key = checkStr(L, 1);
  trellis_buf buf{nullptr, 0};
  uint64_t version = 0;
  trellis_status s = takeBuffer(c, hostOf(c)->kv_get(c->ctx, key, &buf, &version), &buf);
  if (s != TRELLIS_OK) return pushFailure(L, c, s);
  const std::string& value = c->ts->sb->scratch();
  lua_pushlstring(L, value.data(), value.size());
  lua_pushinteger(L, static_cast<lua_Integer>(version));
  return 2;
}

int kvPut(lua_State* L) {
  Call* c = current(L);
  trellis_str key = checkStr(L, 1);
  trellis_str value = checkStr(L, 2);
  uint64_t expected = optVersion(L, 3);
  uint64_t version = 0;
  trellis_status s = hostOf(c)->kv_put(c->ctx, key, value, expected, &version);
  if (s != TRELLIS_OK) return pushFailure(L, c, s);
  lua_pushinteger(L, static_cast<lua_Integer>(version));
  return 1;
}

int kvDelete(lua_State* L) {
  Call* c = current(L);
  trellis_str key = checkStr(L, 1);
  uint64_t expected = optVersion(L, 2);
  trellis_status s = hostOf(c)->kv_delete(c->ctx, key, expected);
  if (s != TRELLIS_OK) return pushFailure(L, c, s);
  lua_pushboolean(L, 1);
  return 1;
}

int kvList(lua_State* L) {
  Call* c = current(L);
  trellis_str prefix = optStr(L, 1);
  trellis_str after = optStr(L, 2);
  lua_Integer limit = luaL_optinteger(L, 3, 0);
  luaL_argcheck(L, limit >= 0 && limit <= 1000, 3, "limit is 0 (the host maximum) to 1000");
  trellis_status s = listKv(c, prefix, after, static_cast<uint32_t>(limit));
  if (s != TRELLIS_OK) return pushFailure(L, c, s);
  const auto& entries = c->ts->entries;
  lua_createtable(L, static_cast<int>(entries.size()), 0);
  markJsonArray(L, -1);  // an empty listing is sent as [], not {}
  for (size_t i = 0; i < entries.size(); ++i) {
    lua_createtable(L, 0, 3);
    lua_pushlstring(L, entries[i].key.data(), entries[i].key.size());
    lua_setfield(L, -2, "key");
    lua_pushlstring(L, entries[i].value.data(), entries[i].value.size());
    lua_setfield(L, -2, "value");
    lua_pushinteger(L, static_cast<lua_Integer>(entries[i].version));
    lua_setfield(L, -2, "version");
    lua_rawseti(L, -2, static_cast<lua_Integer>(i + 1));
  }
  return 1;
}

// -- trellis.events / metrics / clock
int publish(lua_State* L) {
  Call* c = current(L);
  trellis_str topic = checkStr(L, 1);
  trellis_str payload = optStr(L, 2);
  trellis_status s = hostOf(c)->event_publish(c->ctx, topic, payload);
  if (s != TRELLIS_OK) return pushFailure(L, c, s);
  lua_pushboolean(L, 1);
  return 1;
}

int record(lua_State* L) {
  Call* c = current(L);
  trellis_str name = checkStr(L, 1);
  lua_Number value = luaL_optnumber(L, 2, 1);
  trellis_metric_id id = metricId(c, name);
  if (id == 0) {
    lua_pushnil(L);
    lua_pushfstring(L, "no metric named %s: define it in init with t.counter/gauge/histogram",
                    lua_tostring(L, 1));
    lua_pushstring(L, codeName(TRELLIS_NOT_FOUND));
    return 3;
  }
  trellis_status s = hostOf(c)->metric_record(c->ctx, id, value);
  if (s != TRELLIS_OK) return pushFailure(L, c, s);
  lua_pushboolean(L, 1);
  return 1;
}

int unixMs(lua_State* L) {
  Call* c = current(L);
  lua_pushinteger(L, static_cast<lua_Integer>(hostOf(c)->clock_unix_ms(c->ctx)));
  return 1;
}

int monotonicNs(lua_State* L) {
  Call* c = current(L);
  lua_pushinteger(L, static_cast<lua_Integer>(hostOf(c)->clock_monotonic_ns(c->ctx)));
  return 1;
}

// -- tenant self-service: JSON from the host, decoded into tables
int pushJsonResult(lua_State* L, Call* c, trellis_status s, trellis_buf* buf) {
  s = takeBuffer(c, s, buf);
  if (s != TRELLIS_OK) return pushFailure(L, c, s);
  return pushScratchJson(L);
}

int tenantInfo(lua_State* L) {
  Call* c = current(L);
  trellis_buf buf{nullptr, 0};
  return pushJsonResult(L, c, hostOf(c)->tenant_info(c->ctx, &buf), &buf);
}

int keysList(lua_State* L) {
  Call* c = current(L);
  trellis_buf buf{nullptr, 0};
  return pushJsonResult(L, c, hostOf(c)->tenant_keys_list(c->ctx, &buf), &buf);
}

uint64_t optTtl(lua_State* L, int arg) {
  lua_Integer ttl = luaL_optinteger(L, arg, 0);
  luaL_argcheck(L, ttl >= 0, arg, "ttl_seconds is >= 0 (0: the plan's maximum)");
  return static_cast<uint64_t>(ttl);
}

int keysCreate(lua_State* L) {
  Call* c = current(L);
  uint64_t ttl = optTtl(L, 1);
  trellis_buf buf{nullptr, 0};
  return pushJsonResult(L, c, hostOf(c)->tenant_key_create(c->ctx, ttl, &buf), &buf);
}

int keysRotate(lua_State* L) {
  Call* c = current(L);
  uint64_t ttl = optTtl(L, 1);
  trellis_buf buf{nullptr, 0};
  return pushJsonResult(L, c, hostOf(c)->tenant_key_rotate(c->ctx, ttl, &buf), &buf);
}

int keysRevoke(lua_State* L) {
  Call* c = current(L);
  trellis_str id = checkStr(L, 1);
  trellis_status s = hostOf(c)->tenant_key_revoke(c->ctx, id);
  if (s != TRELLIS_OK) return pushFailure(L, c, s);
  lua_pushboolean(L, 1);
  return 1;
}

// -- ABI 1.2: trace context, service calls, jobs (the host checks capabilities and
// grants; a missing slot reads as "unimplemented")
int traceField(lua_State* L, bool state) {
  Call* c = current(L);
  const trellis_host_api* host = hostOf(c);
  trellis_str parent{nullptr, 0}, tracestate{nullptr, 0};
  trellis_status s = TRELLIS_HOST_HAS(host, ctx_trace)
                         ? host->ctx_trace(c->ctx, &parent, &tracestate)
                         : TRELLIS_UNIMPLEMENTED;
  if (s != TRELLIS_OK) return pushFailure(L, c, s);
  pushStr(L, state ? tracestate : parent);
  return 1;
}
int traceparent(lua_State* L) {
  return traceField(L, false);
}
int tracestate(lua_State* L) {
  return traceField(L, true);
}

// trellis.service.call(service, method, request) -> response | nil, message, code
int serviceCall(lua_State* L) {
  Call* c = current(L);
  trellis_str service = checkStr(L, 1), method = checkStr(L, 2), request = optStr(L, 3);
  const trellis_host_api* host = hostOf(c);
  if (!TRELLIS_HOST_HAS(host, service_call)) return pushFailure(L, c, TRELLIS_UNIMPLEMENTED);
  trellis_buf buf{nullptr, 0};
  trellis_status s =
      takeBuffer(c, host->service_call(c->ctx, service, method, request, &buf), &buf);
  if (s != TRELLIS_OK) return pushFailure(L, c, s);
  const std::string& value = c->ts->sb->scratch();
  lua_pushlstring(L, value.data(), value.size());
  return 1;
}

// trellis.audit.emit(action, resource, details_json) -> true | nil, message, code
// A record for the host's audit stream ("secret.read", "secret/db", '{"by":"x"}').
int auditEmit(lua_State* L) {
  Call* c = current(L);
  trellis_str action = checkStr(L, 1), resource = optStr(L, 2), details = optStr(L, 3);
  const trellis_host_api* host = hostOf(c);
  if (!TRELLIS_HOST_HAS(host, audit_emit)) return pushFailure(L, c, TRELLIS_UNIMPLEMENTED);
  trellis_status s = host->audit_emit(c->ctx, action, resource, details);
  if (s != TRELLIS_OK) return pushFailure(L, c, s);
  lua_pushboolean(L, 1);
  return 1;
}

// Field `name` of the table at index 1 as a string view (borrowed from the table).
trellis_str specString(lua_State* L, const char* name) {
  lua_getfield(L, 1, name);
  size_t len = 0;
  const char* text = lua_isnil(L, -1) ? "" : luaL_checklstring(L, -1, &len);
  lua_pop(L, 1);  // the table keeps the string alive
  return {text, len};
}
uint64_t specNumber(lua_State* L, const char* name) {
  lua_getfield(L, 1, name);
  lua_Integer n = luaL_optinteger(L, -1, 0);
  lua_pop(L, 1);
  luaL_argcheck(L, n >= 0, 1, name);
  return static_cast<uint64_t>(n);
}

// trellis.jobs.schedule{name=, kind="once"|"every"|"cron", delay_ms=, interval_ms=, cron=,
//   payload=, durable=, max_attempts=, budget_ms=} -> true | nil, message, code
int jobSchedule(lua_State* L) {
  Call* c = current(L);
  luaL_checktype(L, 1, LUA_TTABLE);
  trellis_job_spec spec{};
  spec.struct_size = sizeof spec;
  spec.name = specString(L, "name");
  trellis_str kind = specString(L, "kind");
  std::string_view k(kind.ptr, kind.len);
  spec.kind = k == "every"               ? TRELLIS_JOB_EVERY
              : k == "cron"              ? TRELLIS_JOB_CRON
              : k == "once" || k.empty() ? TRELLIS_JOB_ONCE
                                         : -1;
  spec.delay_ms = specNumber(L, "delay_ms");
  spec.interval_ms = specNumber(L, "interval_ms");
  spec.cron = specString(L, "cron");
  spec.payload = specString(L, "payload");
  lua_getfield(L, 1, "durable");
  spec.flags = lua_toboolean(L, -1) ? TRELLIS_JOB_DURABLE : 0;
  lua_pop(L, 1);
  spec.max_attempts = static_cast<uint32_t>(specNumber(L, "max_attempts"));
  spec.budget_ms = static_cast<uint32_t>(specNumber(L, "budget_ms"));
  const trellis_host_api* host = hostOf(c);
  trellis_status s = TRELLIS_HOST_HAS(host, job_schedule) ? host->job_schedule(c->ctx, &spec)
                                                          : TRELLIS_UNIMPLEMENTED;
  if (s != TRELLIS_OK) return pushFailure(L, c, s);
  lua_pushboolean(L, 1);
  return 1;
}

int jobCancel(lua_State* L) {
  Call* c = current(L);
  trellis_str name = checkStr(L, 1);
  const trellis_host_api* host = hostOf(c);
  trellis_status s =
      TRELLIS_HOST_HAS(host, job_cancel) ? host->job_cancel(c->ctx, name) : TRELLIS_UNIMPLEMENTED;
  if (s != TRELLIS_OK) return pushFailure(L, c, s);
  lua_pushboolean(L, 1);
  return 1;
}

// -- trellis.usage: the plugin's own billable record, a table or JSON text.
int usageEmit(lua_State* L) {
  Call* c = current(L);
  if (lua_istable(L, 1)) {
    lua_settop(L, 1);
    lua_pushcfunction(L, jsonEncode);
    lua_insert(L, 1);
    lua_call(L, 1, 1);  // metered like any script code; errors are the script's
  }
  trellis_str record = checkStr(L, 1);
  const trellis_host_api* host = hostOf(c);
  trellis_status s =
      TRELLIS_HOST_HAS(host, usage_emit) ? host->usage_emit(c->ctx, record) : TRELLIS_UNIMPLEMENTED;
  if (s != TRELLIS_OK) return pushFailure(L, c, s);
  lua_pushboolean(L, 1);
  return 1;
}

// -- ABI 1.2: blobs and egress. Both copy data in from outside the state, so they refuse
// up front what would not fit in the memory the call has left, and an egress request waits
// at most the wall time the call has left (the wait counts against the budget like any
// other: once it returns past the deadline, the call is over).

// nil, message, code for a refusal the script API makes itself.
int pushOwnFailure(lua_State* L, Call* c, trellis_status s, const char* message) {
  if (s == TRELLIS_QUOTA_EXCEEDED) c->quota_refused = true;
  lua_pushnil(L);
  lua_pushstring(L, message);
  lua_pushstring(L, codeName(s));
  return 3;
}

// drain()'s answer when the data would not fit in the memory the call has left.
constexpr auto kTooBig = static_cast<trellis_status>(1000);

// Reads a whole blob range (or the rest of an egress body) into scratch, `limit` bytes at
// most (kTooBig past it). Closes the handle.
trellis_status drain(Call* c, trellis_handle h, bool blob, size_t limit) noexcept {
  const trellis_host_api* host = hostOf(c);
  std::string& out = c->ts->sb->scratch();
  trellis_status s = TRELLIS_OK;
  try {
    out.clear();
    char buf[64 * 1024];
    for (;;) {
      size_t len = 0;
      s = blob ? host->blob_read(c->ctx, h, buf, sizeof buf, &len)
               : host->http_response_read(c->ctx, h, buf, sizeof buf, &len);
      if (s != TRELLIS_OK || len == 0) break;
      if (out.size() + len > limit) {
        s = kTooBig;
        break;
      }
      out.append(buf, len);
    }
  } catch (...) {
    s = TRELLIS_INTERNAL;
  }
  host->handle_close(c->ctx, h);
  return s;
}

// trellis.blobs.put(key, data [, {content_type=, metadata={name=value}}]) -> head | nil, msg, code
trellis_status putBlob(Call* c, trellis_str key, trellis_str data, trellis_str content_type,
                       trellis_buf* head) noexcept {
  const trellis_host_api* host = hostOf(c);
  std::string& metadata = c->ts->sb->scratch();
  try {
    metadata.clear();
    if (!c->ts->pairs.empty()) {
      metadata = "{";
      for (const auto& [name, value] : c->ts->pairs) {
        if (metadata.size() > 1) metadata.push_back(',');
        util::appendJsonString(metadata, name);
        metadata.push_back(':');
        util::appendJsonString(metadata, value);
      }
      metadata.push_back('}');
    }
  } catch (...) {
    return TRELLIS_INTERNAL;
  }
  trellis_blob_write_options options{
      sizeof(trellis_blob_write_options), content_type, {metadata.data(), metadata.size()}};
  trellis_handle writer = TRELLIS_HANDLE_NONE;
  trellis_status s = host->blob_open_write(c->ctx, key, &options, &writer);
  if (s != TRELLIS_OK) return s;
  constexpr size_t kChunk = 1024 * 1024;
  for (size_t at = 0; at < data.len; at += kChunk) {
    s = host->blob_write(c->ctx, writer, {data.ptr + at, std::min(kChunk, data.len - at)});
    if (s != TRELLIS_OK) {
      host->handle_close(c->ctx, writer);  // aborts the upload
      return s;
    }
  }
  return host->blob_commit(c->ctx, writer, head);
}

// The string fields of the table at the top of the stack into ts->pairs; false (with the
// offending key in ts->error) if a name or value is not a string.
bool collectStringPairs(lua_State* L, Call* c) noexcept {
  try {
    c->ts->pairs.clear();
    lua_pushnil(L);
    while (lua_next(L, -2) != 0) {
      if (lua_type(L, -2) != LUA_TSTRING || lua_type(L, -1) != LUA_TSTRING) {
        lua_pop(L, 2);
        c->ts->error = "names and values must be strings";
        return false;
      }
      size_t nl = 0, vl = 0;
      const char* n = lua_tolstring(L, -2, &nl);
      const char* v = lua_tolstring(L, -1, &vl);
      c->ts->pairs.emplace_back(std::string(n, nl), std::string(v, vl));
      lua_pop(L, 1);
    }
    return true;
  } catch (...) {
    c->ts->error = "out of memory";
    return false;
  }
}

int blobPut(lua_State* L) {
  Call* c = current(L);
  trellis_str key = checkStr(L, 1), data = checkStr(L, 2), content_type{"", 0};
  const trellis_host_api* host = hostOf(c);
  if (!TRELLIS_HOST_HAS(host, blob_open_write)) return pushFailure(L, c, TRELLIS_UNIMPLEMENTED);
  c->ts->pairs.clear();
  if (!lua_isnoneornil(L, 3)) {
    luaL_checktype(L, 3, LUA_TTABLE);
    lua_settop(L, 3);
    lua_getfield(L, 3, "content_type");
    if (!lua_isnil(L, -1)) {
      size_t n = 0;
      const char* p = luaL_checklstring(L, -1, &n);
      content_type = {p, n};  // the options table keeps it alive
    }
    lua_pop(L, 1);
    lua_getfield(L, 3, "metadata");
    if (!lua_isnil(L, -1)) {
      luaL_checktype(L, -1, LUA_TTABLE);
      if (!collectStringPairs(L, c)) {
        return luaL_error(L, "trellis.blobs.put: metadata: %s", c->ts->error.c_str());
      }
    }
    lua_pop(L, 1);
  }
  Sandbox::charge(L, data.len / 64);
  trellis_buf head{nullptr, 0};
  trellis_status s = putBlob(c, key, data, content_type, &head);
  Sandbox::charge(L, 64);  // reads the clock: the write's time counts against the budget
  return pushJsonResult(L, c, s, &head);
}

// trellis.blobs.get(key [, {offset=, length=}]) -> data | nil, msg, code
int blobGet(lua_State* L) {
  Call* c = current(L);
  trellis_str key = checkStr(L, 1);
  uint64_t offset = 0, length = UINT64_MAX;
  if (!lua_isnoneornil(L, 2)) {
    luaL_checktype(L, 2, LUA_TTABLE);
    lua_getfield(L, 2, "offset");
    lua_Integer o = luaL_optinteger(L, -1, 0);
    luaL_argcheck(L, o >= 0, 2, "offset must not be negative");
    offset = static_cast<uint64_t>(o);
    lua_pop(L, 1);
    lua_getfield(L, 2, "length");
    if (!lua_isnil(L, -1)) {
      lua_Integer n = luaL_checkinteger(L, -1);
      luaL_argcheck(L, n >= 0, 2, "length must not be negative");
      length = static_cast<uint64_t>(n);
    }
    lua_pop(L, 1);
  }
  const trellis_host_api* host = hostOf(c);
  if (!TRELLIS_HOST_HAS(host, blob_open_read)) return pushFailure(L, c, TRELLIS_UNIMPLEMENTED);
  trellis_handle reader = TRELLIS_HANDLE_NONE;
  trellis_status s = host->blob_open_read(c->ctx, key, offset, length, &reader);
  if (s != TRELLIS_OK) return pushFailure(L, c, s);
  // Half of what is left: the copy into a Lua string needs as much again.
  s = drain(c, reader, true, Sandbox::memoryLeft(L) / 2);
  Sandbox::charge(L, 64 + c->ts->sb->scratch().size() / 64);
  if (s == kTooBig) {
    return pushOwnFailure(L, c, TRELLIS_INVALID,
                          "trellis.blobs.get: the object is larger than the plugin's memory "
                          "budget allows; read it in ranges ({offset=, length=})");
  }
  if (s != TRELLIS_OK) return pushFailure(L, c, s);
  const std::string& value = c->ts->sb->scratch();
  lua_pushlstring(L, value.data(), value.size());
  return 1;
}

int blobHead(lua_State* L) {
  Call* c = current(L);
  trellis_str key = checkStr(L, 1);
  const trellis_host_api* host = hostOf(c);
  if (!TRELLIS_HOST_HAS(host, blob_head)) return pushFailure(L, c, TRELLIS_UNIMPLEMENTED);
  trellis_buf buf{nullptr, 0};
  return pushJsonResult(L, c, host->blob_head(c->ctx, key, &buf), &buf);
}

int blobDelete(lua_State* L) {
  Call* c = current(L);
  trellis_str key = checkStr(L, 1);
  const trellis_host_api* host = hostOf(c);
  if (!TRELLIS_HOST_HAS(host, blob_delete)) return pushFailure(L, c, TRELLIS_UNIMPLEMENTED);
  trellis_status s = host->blob_delete(c->ctx, key);
  if (s != TRELLIS_OK) return pushFailure(L, c, s);
  lua_pushboolean(L, 1);
  return 1;
}

// trellis.blobs.list(prefix [, {start_after=, limit=}]) -> {items={head…}, next=} | nil, …
int blobList(lua_State* L) {
  Call* c = current(L);
  trellis_str prefix = optStr(L, 1), after{"", 0};
  uint32_t limit = 0;
  if (!lua_isnoneornil(L, 2)) {
    luaL_checktype(L, 2, LUA_TTABLE);
    lua_getfield(L, 2, "start_after");
    if (!lua_isnil(L, -1)) {
      size_t n = 0;
      const char* p = luaL_checklstring(L, -1, &n);
      after = {p, n};  // the options table keeps it alive
    }
    lua_pop(L, 1);
    lua_getfield(L, 2, "limit");
    lua_Integer n = luaL_optinteger(L, -1, 0);
    luaL_argcheck(L, n >= 0 && n <= 1000, 2, "limit must be 0-1000");
    limit = static_cast<uint32_t>(n);
    lua_pop(L, 1);
  }
  const trellis_host_api* host = hostOf(c);
  if (!TRELLIS_HOST_HAS(host, blob_list)) return pushFailure(L, c, TRELLIS_UNIMPLEMENTED);
  trellis_buf buf{nullptr, 0};
  return pushJsonResult(L, c, host->blob_list(c->ctx, prefix, after, limit, &buf), &buf);
}

// Sends the request, collects the response headers into ts->pairs and the body into
// scratch (at most `limit` bytes, else kTooBig).
trellis_status sendHttp(Call* c, const trellis_http_request& request, int32_t* status,
                        size_t limit) noexcept {
  const trellis_host_api* host = hostOf(c);
  trellis_handle response = TRELLIS_HANDLE_NONE;
  trellis_status s = host->http_send(c->ctx, &request, &response);
  if (s != TRELLIS_OK) return s;
  c->ts->pairs.clear();
  s = host->http_response_status(c->ctx, response, status);
  if (s == TRELLIS_OK) {
    s = host->http_response_headers(c->ctx, response, collectHeader, &c->ts->pairs);
  }
  if (s != TRELLIS_OK) {
    host->handle_close(c->ctx, response);
    return s;
  }
  return drain(c, response, false, limit);
}

// trellis.http.request{method=, url=, headers={name=value}, body=, connect_timeout_ms=,
//   first_byte_timeout_ms=, timeout_ms=, max_redirects=, max_response_bytes=}
//   -> {status=, headers={name=value}, body=} | nil, message, code
int httpRequest(lua_State* L) {
  Call* c = current(L);
  luaL_checktype(L, 1, LUA_TTABLE);
  lua_settop(L, 1);
  trellis_http_request r{};
  r.struct_size = sizeof r;
  r.method = specString(L, "method");
  if (r.method.len == 0) r.method = {"GET", 3};
  r.url = specString(L, "url");
  r.body = specString(L, "body");
  r.connect_timeout_ms = static_cast<uint32_t>(specNumber(L, "connect_timeout_ms"));
  r.first_byte_timeout_ms = static_cast<uint32_t>(specNumber(L, "first_byte_timeout_ms"));
  r.total_timeout_ms = static_cast<uint32_t>(specNumber(L, "timeout_ms"));
  r.max_redirects = static_cast<uint32_t>(specNumber(L, "max_redirects"));
  r.max_response_bytes = specNumber(L, "max_response_bytes");
  lua_getfield(L, 1, "headers");  // stays at index 2: it keeps the header strings alive
  c->ts->strs.clear();
  if (!lua_isnil(L, 2)) {
    luaL_checktype(L, 2, LUA_TTABLE);
    if (!collectStringPairs(L, c)) {
      return luaL_error(L, "trellis.http.request: headers: %s", c->ts->error.c_str());
    }
    // Borrow each name and value from the table (no copies): walk it again.
    bool ok = true;
    try {
      c->ts->strs.reserve(c->ts->pairs.size() * 2);
    } catch (...) {
      ok = false;
    }
    if (!ok) return luaL_error(L, "trellis.http.request: out of memory");
    lua_pushnil(L);
    while (lua_next(L, 2) != 0) {
      size_t nl = 0, vl = 0;
      const char* n = lua_tolstring(L, -2, &nl);
      const char* v = lua_tolstring(L, -1, &vl);
      c->ts->strs.push_back({n, nl});  // capacity reserved: does not throw
      c->ts->strs.push_back({v, vl});
      lua_pop(L, 1);
    }
    r.headers = c->ts->strs.data();
    r.header_count = c->ts->strs.size() / 2;
  }
  const trellis_host_api* host = hostOf(c);
  if (!TRELLIS_HOST_HAS(host, http_send)) return pushFailure(L, c, TRELLIS_UNIMPLEMENTED);
  // Wait at most what the call has left of its wall time, rounded up: a wait the budget
  // cut short ends just past the deadline, so the charge below ends the call.
  const auto left = Sandbox::wallLeft(L);
  if (left.count() <= 0) Sandbox::charge(L, 64);  // past the deadline: the call is over
  const uint64_t left_ms = left == std::chrono::microseconds::max()
                               ? UINT64_MAX
                               : static_cast<uint64_t>((left.count() + 999) / 1000) + 1;
  if (left_ms < UINT32_MAX && (r.total_timeout_ms == 0 || r.total_timeout_ms > left_ms)) {
    r.total_timeout_ms = static_cast<uint32_t>(std::max<uint64_t>(left_ms, 1));
  }
  const size_t memory = Sandbox::memoryLeft(L) / 2;
  int32_t status = 0;
  trellis_status s = sendHttp(c, r, &status, memory);
  // 64 units or more: the charge reads the clock, so time spent waiting counts.
  Sandbox::charge(L, 64 + c->ts->sb->scratch().size() / 64);
  if (s == kTooBig) {
    return pushOwnFailure(L, c, TRELLIS_INVALID,
                          "trellis.http.request: the response body is larger than the "
                          "plugin's memory budget allows");
  }
  if (s != TRELLIS_OK) return pushFailure(L, c, s);
  lua_createtable(L, 0, 3);
  lua_pushinteger(L, status);
  lua_setfield(L, -2, "status");
  lua_createtable(L, 0, static_cast<int>(c->ts->pairs.size()));
  for (const auto& [name, value] : c->ts->pairs) {
    lua_pushlstring(L, value.data(), value.size());
    lua_setfield(L, -2, name.c_str());  // repeated names: the last one
  }
  lua_setfield(L, -2, "headers");
  const std::string& body = c->ts->sb->scratch();
  lua_pushlstring(L, body.data(), body.size());
  lua_setfield(L, -2, "body");
  return 1;
}

const luaL_Reg kTrace[] = {
    {"traceparent", traceparent}, {"tracestate", tracestate}, {nullptr, nullptr}};
const luaL_Reg kService[] = {{"call", serviceCall}, {nullptr, nullptr}};
const luaL_Reg kJobs[] = {{"schedule", jobSchedule}, {"cancel", jobCancel}, {nullptr, nullptr}};
const luaL_Reg kAudit[] = {{"emit", auditEmit}, {nullptr, nullptr}};
const luaL_Reg kUsage[] = {{"emit", usageEmit}, {nullptr, nullptr}};
const luaL_Reg kBlobs[] = {{"put", blobPut},       {"get", blobGet},   {"head", blobHead},
                           {"delete", blobDelete}, {"list", blobList}, {nullptr, nullptr}};
const luaL_Reg kHttp[] = {{"request", httpRequest}, {nullptr, nullptr}};

const luaL_Reg kTrellis[] = {{"config", config},          {"tenant", tenant},
                             {"plugin", pluginId},        {"principal", principal},
                             {"tenant_info", tenantInfo}, {nullptr, nullptr}};
const luaL_Reg kLog[] = {{"trace", logTrace}, {"debug", logDebug}, {"info", logInfo},
                         {"warn", logWarn},   {"error", logError}, {nullptr, nullptr}};
const luaL_Reg kKv[] = {
    {"get", kvGet}, {"put", kvPut}, {"delete", kvDelete}, {"list", kvList}, {nullptr, nullptr}};
const luaL_Reg kEvents[] = {{"publish", publish}, {nullptr, nullptr}};
const luaL_Reg kMetrics[] = {{"record", record}, {nullptr, nullptr}};
const luaL_Reg kClock[] = {{"unix_ms", unixMs}, {"monotonic_ns", monotonicNs}, {nullptr, nullptr}};
const luaL_Reg kJson[] = {
    {"encode", jsonEncode}, {"decode", jsonDecode}, {"array", jsonArray}, {nullptr, nullptr}};
const luaL_Reg kKeys[] = {{"list", keysList},
                          {"create", keysCreate},
                          {"rotate", keysRotate},
                          {"revoke", keysRevoke},
                          {nullptr, nullptr}};

struct Library {
  const char* name;
  const luaL_Reg* functions;
};
const Library kLibraries[] = {
    {"trellis", kTrellis},         {"trellis.log", kLog},         {"trellis.kv", kKv},
    {"trellis.events", kEvents},   {"trellis.metrics", kMetrics}, {"trellis.clock", kClock},
    {"trellis.json", kJson},       {"trellis.keys", kKeys},       {"trellis.trace", kTrace},
    {"trellis.service", kService}, {"trellis.jobs", kJobs},       {"trellis.audit", kAudit},
    {"trellis.usage", kUsage},     {"trellis.blobs", kBlobs},     {"trellis.http", kHttp}};

// -- t: what init registers with
Call* registering(lua_State* L, const char* what) {
  Call* c = current(L);
  if (c->phase != Phase::kInit && c->phase != Phase::kReplay) {
    luaL_error(L, "%s can only be called during init", what);
  }
  return c;
}

int tRoute(lua_State* L) {
  Call* c = registering(L, "t.route");
  trellis_str method = checkStr(L, 1);
  trellis_str pattern = checkStr(L, 2);
  luaL_checktype(L, 3, LUA_TFUNCTION);
  lua_pushvalue(L, 3);
  int ref = luaL_ref(L, LUA_REGISTRYINDEX);
  trellis_status s = registerRoute(c, method, pattern, ref);
  if (s != TRELLIS_OK) {
    luaL_unref(L, LUA_REGISTRYINDEX, ref);
    return raiseNoted(L, c, s, "t.route");
  }
  return 0;
}

int tSubscribe(lua_State* L) {
  Call* c = registering(L, "t.subscribe");
  trellis_str topic = checkStr(L, 1);
  luaL_checktype(L, 2, LUA_TFUNCTION);
  lua_pushvalue(L, 2);
  int ref = luaL_ref(L, LUA_REGISTRYINDEX);
  trellis_status s = registerSubscription(c, topic, ref);
  if (s != TRELLIS_OK) {
    luaL_unref(L, LUA_REGISTRYINDEX, ref);
    return raiseNoted(L, c, s, "t.subscribe");
  }
  return 0;
}

int metric(lua_State* L, int32_t kind, const char* what) {
  Call* c = registering(L, what);
  trellis_str name = checkStr(L, 1);
  trellis_str help = optStr(L, 2);
  trellis_status s = defineMetric(c, kind, name, help);
  if (s != TRELLIS_OK) return raiseNoted(L, c, s, what);
  lua_pushvalue(L, 1);  // the name is the handle trellis.metrics.record takes
  return 1;
}
int tCounter(lua_State* L) {
  return metric(L, TRELLIS_METRIC_COUNTER, "t.counter");
}
int tGauge(lua_State* L) {
  return metric(L, TRELLIS_METRIC_GAUGE, "t.gauge");
}
int tHistogram(lua_State* L) {
  return metric(L, TRELLIS_METRIC_HISTOGRAM, "t.histogram");
}

// t.provide(service, method, function(ctx, request) return response end)  (ABI 1.2)
int tProvide(lua_State* L) {
  Call* c = registering(L, "t.provide");
  trellis_str service = checkStr(L, 1);
  trellis_str method = checkStr(L, 2);
  luaL_checktype(L, 3, LUA_TFUNCTION);
  lua_pushvalue(L, 3);
  int ref = luaL_ref(L, LUA_REGISTRYINDEX);
  trellis_status s = registerMethod(c, service, method, ref);
  if (s != TRELLIS_OK) {
    luaL_unref(L, LUA_REGISTRYINDEX, ref);
    return raiseNoted(L, c, s, "t.provide");
  }
  return 0;
}

// t.on_job(function(ctx, name, payload) … end)  (ABI 1.2)
int tOnJob(lua_State* L) {
  Call* c = registering(L, "t.on_job");
  luaL_checktype(L, 1, LUA_TFUNCTION);
  lua_pushvalue(L, 1);
  int ref = luaL_ref(L, LUA_REGISTRYINDEX);
  trellis_status s = registerJobHandler(c, ref);
  if (s != TRELLIS_OK) {
    luaL_unref(L, LUA_REGISTRYINDEX, ref);
    return raiseNoted(L, c, s, "t.on_job");
  }
  return 0;
}

const luaL_Reg kInitTable[] = {{"route", tRoute},  {"subscribe", tSubscribe}, {"counter", tCounter},
                               {"gauge", tGauge},  {"histogram", tHistogram}, {"provide", tProvide},
                               {"on_job", tOnJob}, {nullptr, nullptr}};

// -- ctx and req: read-only proxies, valid for the call that received them. Fields are
// fetched from the host on first use (each fetch is a host call, counted like a native
// plugin's) and cached in the table.
bool isCurrent(lua_State* L, const char* current_key) {
  lua_rawgetp(L, LUA_REGISTRYINDEX, current_key);
  const bool same = lua_rawequal(L, 1, -1);
  lua_pop(L, 1);
  return same;
}

// Caches the value on top of the stack as t[k] and leaves it there.
int cacheField(lua_State* L) {
  lua_pushvalue(L, 2);
  lua_pushvalue(L, -2);
  lua_rawset(L, 1);
  return 1;
}

int fieldFailed(lua_State* L, Call* c, trellis_status s, const char* object) {
  noteError(c, s);
  return raiseNoted(L, c, s, object);
}

int ctxIndex(lua_State* L) {
  Call* c = t_call;
  if (!c || !isCurrent(L, &kCurrentCtx)) {
    return luaL_error(L, "ctx is only valid during the call that received it");
  }
  const char* key = lua_type(L, 2) == LUA_TSTRING ? lua_tostring(L, 2) : "";
  trellis_status (*get)(const trellis_ctx*, trellis_str*) = nullptr;
  if (std::strcmp(key, "tenant") == 0) get = hostOf(c)->ctx_tenant;
  if (std::strcmp(key, "plugin") == 0) get = hostOf(c)->ctx_plugin;
  if (std::strcmp(key, "principal") == 0) get = hostOf(c)->ctx_principal;
  if (!get) {
    lua_pushnil(L);
    return 1;
  }
  trellis_str out{nullptr, 0};
  if (trellis_status s = get(c->ctx, &out); s != TRELLIS_OK) return fieldFailed(L, c, s, "ctx");
  pushStr(L, out);
  return cacheField(L);
}

// A table of name = value; a repeated name gets "first, second", as HTTP folds fields.
void pushPairs(lua_State* L, const std::vector<std::pair<std::string, std::string>>& pairs) {
  lua_createtable(L, 0, static_cast<int>(pairs.size()));
  for (const auto& [name, value] : pairs) {
    lua_pushlstring(L, name.data(), name.size());
    if (lua_rawget(L, -2) == LUA_TSTRING) {
      lua_pushliteral(L, ", ");
      lua_pushlstring(L, value.data(), value.size());
      lua_concat(L, 3);
    } else {
      lua_pop(L, 1);
      lua_pushlstring(L, value.data(), value.size());
    }
    lua_pushlstring(L, name.data(), name.size());
    lua_insert(L, -2);
    lua_rawset(L, -3);
  }
}

int reqIndex(lua_State* L) {
  Call* c = t_call;
  if (!c || !c->req || !isCurrent(L, &kCurrentReq)) {
    return luaL_error(L, "req is only valid during the handler call that received it");
  }
  const char* key = lua_type(L, 2) == LUA_TSTRING ? lua_tostring(L, 2) : "";
  const trellis_host_api* h = hostOf(c);
  trellis_str out{nullptr, 0};
  trellis_status s = TRELLIS_OK;
  if (std::strcmp(key, "method") == 0) {
    s = h->req_method(c->ctx, c->req, &out);
  } else if (std::strcmp(key, "path") == 0) {
    s = h->req_path(c->ctx, c->req, &out);
  } else if (std::strcmp(key, "query") == 0) {
    s = h->req_query(c->ctx, c->req, &out);
  } else if (std::strcmp(key, "body") == 0) {
    s = h->req_body(c->ctx, c->req, &out);
  } else if (std::strcmp(key, "headers") == 0 || std::strcmp(key, "params") == 0 ||
             std::strcmp(key, "args") == 0) {
    const bool headers = key[0] == 'h';
    s = headers ? collectHeaders(c) : key[0] == 'p' ? collectParams(c) : collectArgs(c);
    if (s != TRELLIS_OK) return fieldFailed(L, c, s, "req");
    pushPairs(L, c->ts->pairs);
    return cacheField(L);
  } else {
    lua_pushnil(L);
    return 1;
  }
  if (s != TRELLIS_OK) return fieldFailed(L, c, s, "req");
  pushStr(L, out);
  return cacheField(L);
}

int readOnly(lua_State* L) {
  return luaL_error(L, "ctx and req are read-only");
}

// Per sandbox: the proxies' metatables and the `t` table, in the registry.
int installTables(lua_State* L) {
  auto* ts = lua_touserdata(L, 1);
  const std::pair<char*, lua_CFunction> metas[] = {{&kCtxMetaKey, ctxIndex},
                                                   {&kReqMetaKey, reqIndex}};
  for (const auto& [key, index] : metas) {
    lua_pushcfunction(L, index);
    Sandbox::makeLockedMetatable(L, readOnly);
    lua_rawsetp(L, LUA_REGISTRYINDEX, key);
  }
  lua_newtable(L);
  lua_pushlightuserdata(L, ts);
  luaL_setfuncs(L, kInitTable, 1);
  lua_rawsetp(L, LUA_REGISTRYINDEX, &kInitTableKey);
  return 0;
}

void pushProxy(lua_State* L, char* meta_key, char* current_key) {
  lua_newtable(L);
  lua_rawgetp(L, LUA_REGISTRYINDEX, meta_key);
  lua_setmetatable(L, -2);
  lua_pushvalue(L, -1);
  lua_rawsetp(L, LUA_REGISTRYINDEX, current_key);
}

}  // namespace

// -- marshals
int pushInitArgs(lua_State* L, void*) {
  lua_rawgetp(L, LUA_REGISTRYINDEX, &kInitTableKey);
  return 1;
}

int pushCtxArg(lua_State* L, void*) {
  pushProxy(L, &kCtxMetaKey, &kCurrentCtx);
  return 1;
}

int pushRouteArgs(lua_State* L, void*) {
  pushProxy(L, &kCtxMetaKey, &kCurrentCtx);
  pushProxy(L, &kReqMetaKey, &kCurrentReq);
  return 2;
}

int pushEventArgs(lua_State* L, void* data) {
  auto* c = static_cast<Call*>(data);
  pushProxy(L, &kCtxMetaKey, &kCurrentCtx);
  pushStr(L, c->topic);
  pushStr(L, c->payload);
  return 3;
}

int pushServiceArgs(lua_State* L, void* data) {
  auto* c = static_cast<Call*>(data);
  pushProxy(L, &kCtxMetaKey, &kCurrentCtx);
  pushStr(L, c->payload);
  return 2;
}

// A method answers a string (the response), or nil, "message" (a failure the caller sees
// as INTERNAL with that message).
int readServiceResult(lua_State* L, void* data) {
  auto* c = static_cast<Call*>(data);
  if (lua_isnil(L, 1)) {
    size_t len = 0;
    const char* msg = lua_gettop(L) >= 2 ? luaL_tolstring(L, 2, &len) : "the method failed";
    if (lua_gettop(L) < 2) len = std::strlen(msg);
    noteMessage(c->ts, msg, len);
    c->result = TRELLIS_INTERNAL;
    return 0;
  }
  size_t len = 0;
  const char* bytes = luaL_checklstring(L, 1, &len);
  trellis_status s = hostOf(c)->service_reply(c->ctx, c->reply, {bytes, len});
  if (s != TRELLIS_OK) {
    noteError(c, s);
    c->result = s;
  }
  return 0;
}

// A response call the host refused: a quota refusal ends the handler with that quota's
// status (as a native plugin passing the status on would); anything else is an error.
static int responseFailed(lua_State* L, Call* c, trellis_status s, const char* what) {
  noteError(c, s);
  if (s == TRELLIS_QUOTA_EXCEEDED) {
    c->quota_refused = true;
    c->result = TRELLIS_QUOTA_EXCEEDED;
    return 0;
  }
  return luaL_error(L, "%s: %s", what, c->ts->error.c_str());
}

static bool hasHeader(lua_State* L, int headers, const char* lower_name) {
  if (headers == 0) return false;
  lua_pushnil(L);
  while (lua_next(L, headers) != 0) {
    lua_pop(L, 1);
    if (lua_type(L, -1) == LUA_TSTRING && strcasecmp(lua_tostring(L, -1), lower_name) == 0) {
      lua_pop(L, 1);
      return true;
    }
  }
  return false;
}

// Handler results: status, body[, headers] | {status=, body=, headers=} | body |
// nil, "message" (a failure the plugin reports; logged, the client gets a 500).
int readRouteResult(lua_State* L, void* data) {
  auto* c = static_cast<Call*>(data);
  const int n = lua_gettop(L);
  if (n == 0 || lua_isnil(L, 1)) {
    size_t len = 0;
    const char* msg = n >= 2 ? lua_tolstring(L, 2, &len) : nullptr;
    if (!msg) {
      msg = "the handler returned nothing (return status, body[, headers])";
      len = std::strlen(msg);
    }
    noteMessage(c->ts, msg, len);
    c->result = c->quota_refused ? TRELLIS_QUOTA_EXCEEDED : TRELLIS_INTERNAL;
    return 0;
  }
  int status = 0, body = 0, headers = 0;
  lua_settop(L, 3);
  if (lua_type(L, 1) == LUA_TTABLE) {
    const char* fields[] = {"status", "body", "headers"};
    for (const char* f : fields) {
      lua_pushstring(L, f);
      lua_rawget(L, 1);
    }
    status = 4;
    body = 5;
    headers = 6;
  } else if (lua_type(L, 1) == LUA_TNUMBER) {
    status = 1;
    body = 2;
    headers = 3;
  } else if (lua_type(L, 1) == LUA_TSTRING) {
    body = 1;
  } else {
    return luaL_error(L, "the handler returned a %s; return status, body[, headers]",
                      luaL_typename(L, 1));
  }
  lua_Integer code = 200;
  if (status && !lua_isnil(L, status)) {
    int is_int = 0;
    code = lua_tointegerx(L, status, &is_int);
    if (!is_int || code < 100 || code > 599) {
      return luaL_error(L, "the handler returned status %s; expected an integer from 100 to 599",
                        luaL_tolstring(L, status, nullptr));
    }
  }
  if (headers && lua_isnil(L, headers)) headers = 0;
  if (headers && lua_type(L, headers) != LUA_TTABLE) {
    return luaL_error(L, "the handler's headers must be a table of name = value");
  }
  bool json = false;
  if (body && lua_type(L, body) == LUA_TTABLE) {  // a table body is sent as JSON
    lua_pushcfunction(L, jsonEncode);
    lua_pushvalue(L, body);
    lua_call(L, 1, 1);
    lua_replace(L, body);
    json = true;
  } else if (body && !lua_isnil(L, body) && lua_type(L, body) != LUA_TSTRING) {
    return luaL_error(L, "the handler's body must be a string or a table (sent as JSON), not a %s",
                      luaL_typename(L, body));
  }
  const trellis_host_api* h = hostOf(c);
  trellis_status s = h->res_set_status(c->ctx, c->res, static_cast<int32_t>(code));
  if (s != TRELLIS_OK) return responseFailed(L, c, s, "status");
  if (headers) {
    lua_pushnil(L);
    while (lua_next(L, headers) != 0) {
      if (lua_type(L, -2) != LUA_TSTRING) return luaL_error(L, "header names must be strings");
      trellis_str name{nullptr, 0};
      name.ptr = lua_tolstring(L, -2, &name.len);
      // A list of values sends the header once per value (Set-Cookie).
      const bool list = lua_type(L, -1) == LUA_TTABLE;
      const lua_Integer count = list ? static_cast<lua_Integer>(lua_rawlen(L, -1)) : 1;
      for (lua_Integer i = 1; i <= count; ++i) {
        if (list) lua_rawgeti(L, -1, i);
        if (lua_type(L, -1) != LUA_TSTRING && lua_type(L, -1) != LUA_TNUMBER) {
          return luaL_error(L, "header %s must be a string or a list of strings", name.ptr);
        }
        trellis_str value{nullptr, 0};
        value.ptr = lua_tolstring(L, -1, &value.len);
        s = h->res_add_header(c->ctx, c->res, name, value);
        if (s != TRELLIS_OK) return responseFailed(L, c, s, name.ptr);
        if (list) lua_pop(L, 1);
      }
      lua_pop(L, 1);
    }
  }
  if (json && !hasHeader(L, headers, "content-type")) {
    s = h->res_add_header(c->ctx, c->res, TRELLIS_STR("Content-Type"),
                          TRELLIS_STR("application/json"));
    if (s != TRELLIS_OK) return responseFailed(L, c, s, "Content-Type");
  }
  if (body && !lua_isnil(L, body)) {
    trellis_str text{nullptr, 0};
    text.ptr = lua_tolstring(L, body, &text.len);
    s = h->res_set_body(c->ctx, c->res, text);
    if (s != TRELLIS_OK) return responseFailed(L, c, s, "body");
  }
  return 0;
}

// start(ctx) may answer nil, "message" to refuse to start.
int readStartResult(lua_State* L, void* data) {
  auto* c = static_cast<Call*>(data);
  if (lua_gettop(L) >= 2 && lua_isnil(L, 1)) {
    size_t len = 0;
    const char* msg = luaL_tolstring(L, 2, &len);
    noteMessage(c->ts, msg, len);
    c->result = TRELLIS_INTERNAL;
  }
  return 0;
}

Status installScriptApi(Sandbox& sb, ThreadState* ts) {
  for (const Library& lib : kLibraries) {
    if (Status s = sb.addLibrary(lib.name, lib.functions, ts); !s) return s;
  }
  return sb.protectedCall(installTables, ts);
}

}  // namespace trellis::kernel::lua
