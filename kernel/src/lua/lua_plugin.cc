#include "lua/lua_plugin.h"

#include <strings.h>

#include <algorithm>
#include <array>
#include <atomic>
#include <cctype>
#include <cstring>
#include <deque>
#include <fstream>
#include <map>
#include <mutex>
#include <sstream>
#include <unordered_map>
#include <utility>
#include <vector>

#include "trellis/kernel/http/router.h"
#include "trellis/kernel/metrics/registry.h"

// Lua reports errors by longjmp. Every function here that Lua calls (the trellis library,
// t.*, the ctx/req proxies and the marshal callbacks) keeps only trivially destructible
// objects in its frame while it calls a raising Lua API function; C++ work happens in
// noexcept helpers that return first, and results built in C++ wait in ThreadState.

namespace trellis::kernel::lua {
namespace fs = std::filesystem;

namespace {

constexpr uintmax_t kMaxSourceBytes = 4 * 1024 * 1024;
constexpr size_t kMaxLogBytes = 4096;

std::atomic<uint64_t> g_next_uid{1};

// Registry keys (their addresses).
char kInitTableKey;  // the `t` passed to init
char kCtxMetaKey;    // metatable of ctx proxies
char kReqMetaKey;    // metatable of req proxies
char kCurrentCtx;    // the ctx proxy of the call in progress
char kCurrentReq;    // the req proxy of the call in progress

enum class Phase { kInit, kReplay, kStart, kStop, kRoute, kEvent };

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

Budget toBudget(const config::LuaBudget& b, std::chrono::milliseconds wall) {
  return Budget{.instructions = b.instructions,
                .memory_bytes = static_cast<size_t>(b.memory_bytes),
                .wall_time = wall};
}

}  // namespace

struct Route {
  LuaPlugin::Impl* plugin = nullptr;
  size_t index = 0;
  std::string method;
  std::string pattern;
  bool blocking = false;
  std::vector<std::string> params;  // names of the pattern's {param} segments
};

struct Subscription {
  LuaPlugin::Impl* plugin = nullptr;
  size_t index = 0;
  std::string topic;
};

// The plugin's Lua state on one thread, and scratch space for results built in C++.
struct ThreadState {
  LuaPlugin::Impl* plugin = nullptr;
  std::unique_ptr<Sandbox> sb;
  std::vector<int> route_refs;  // by Route::index: registry refs of the handlers
  std::vector<int> sub_refs;    // by Subscription::index
  std::vector<std::pair<std::string, std::string>> pairs;  // headers, params, args
  struct Entry {
    std::string key, value;
    uint64_t version = 0;
  };
  std::vector<Entry> entries;  // kv.list
  std::string error;           // a message to raise or report
};

// One call into the plugin on this thread: what the trellis.* functions act on.
struct Call {
  Phase phase = Phase::kInit;
  ThreadState* ts = nullptr;
  const trellis_ctx* ctx = nullptr;
  const trellis_request* req = nullptr;
  trellis_response* res = nullptr;
  const Route* route = nullptr;
  trellis_str topic{nullptr, 0};
  trellis_str payload{nullptr, 0};
  bool quota_refused = false;          // a host call answered QUOTA_EXCEEDED
  trellis_status result = TRELLIS_OK;  // a handler may report a failure (nil, "message")
};

namespace {
thread_local Call* t_call = nullptr;

// Makes `c` the call the trellis.* functions on this thread act on, until destruction.
class CallGuard {
 public:
  explicit CallGuard(Call* c) : previous_(t_call) { t_call = c; }
  ~CallGuard() { t_call = previous_; }
  CallGuard(const CallGuard&) = delete;
  CallGuard& operator=(const CallGuard&) = delete;

 private:
  Call* previous_;
};
}  // namespace

struct LuaPlugin::Impl {
  uint64_t uid = g_next_uid.fetch_add(1);
  plugin::Manifest manifest;
  std::string entry;  // "main.lua": the chunk name in error messages
  std::string source;
  Budget route_budget;
  Budget blocking_budget;
  WithInitCtx with_init_ctx;
  const trellis_host_api* host = nullptr;
  std::string version;  // the descriptor's
  trellis_plugin descriptor{};

  // Filled by the first init (on_init), read-only afterwards.
  std::deque<Route> routes;
  std::deque<Subscription> subscriptions;
  std::map<std::string, trellis_metric_id, std::less<>> metric_ids;

  std::array<metrics::Counter*, 4> failures{};  // error, instructions, memory, wall_time

  std::mutex mu;  // guards states
  std::vector<std::unique_ptr<ThreadState>> states;

  Result<std::unique_ptr<ThreadState>> build(const trellis_ctx* ctx, Phase phase);
  ThreadState* adopt(std::unique_ptr<ThreadState> ts);
  ThreadState* threadState(const trellis_ctx* ctx);
  trellis_status finish(Call& c, const CallResult& r, const char* what);
  void countFailure(Outcome o) {
    if (o != Outcome::kOk && failures[static_cast<size_t>(o) - 1]) {
      failures[static_cast<size_t>(o) - 1]->add(1);
    }
  }
};

namespace {

// By plugin uid. Raw pointers: the plugin owns its states, and a uid is never reused.
thread_local std::unordered_map<uint64_t, ThreadState*> t_states;

// What the host calls: the C side of the plugin's routes and subscriptions.
trellis_status routeHandler(void* user, const trellis_ctx* ctx, const trellis_request* req,
                            trellis_response* res);
void eventHandler(void* user, const trellis_ctx* ctx, trellis_str topic, trellis_str payload);

// ------------------------------------------------------------------ helpers (C++ work)

const trellis_host_api* hostOf(const Call* c) {
  return c->ts->plugin->host;
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

std::vector<std::string> paramNames(std::string_view pattern) {
  std::vector<std::string> names;
  for (size_t open = pattern.find('{'); open != std::string_view::npos;
       open = pattern.find('{', open + 1)) {
    size_t close = pattern.find('}', open);
    if (close == std::string_view::npos) break;
    std::string_view name = pattern.substr(open + 1, close - open - 1);
    if (name.ends_with("...")) name.remove_suffix(3);
    names.emplace_back(name);
  }
  return names;
}

// t.route: the first init registers with the host; later ones bind to what it registered.
trellis_status registerRoute(Call* c, trellis_str method, trellis_str pattern, int ref) noexcept {
  try {
    ThreadState* ts = c->ts;
    LuaPlugin::Impl* p = ts->plugin;
    std::string m(method.ptr, method.len), pat(pattern.ptr, pattern.len);
    if (c->phase == Phase::kReplay) {
      // Bound by method and pattern, not order: pairs() order differs between states.
      for (const Route& r : p->routes) {
        if (r.method == m && r.pattern == pat && ts->route_refs[r.index] == LUA_NOREF) {
          ts->route_refs[r.index] = ref;
          return TRELLIS_OK;
        }
      }
      ts->error = "init registered " + m + " " + pat +
                  " on this thread but not at start: init must register the same routes "
                  "every time it runs";
      return TRELLIS_INVALID;
    }
    Route& r = p->routes.emplace_back();
    r.plugin = p;
    r.index = p->routes.size() - 1;
    r.method = m;
    r.pattern = pat;
    r.blocking = p->manifest.isBlocking(m, pat);
    r.params = paramNames(pat);
    trellis_status s = p->host->route_add(c->ctx, method, pattern, routeHandler, &r);
    if (s != TRELLIS_OK) {
      noteError(c, s);
      p->routes.pop_back();
      return s;
    }
    ts->route_refs.push_back(ref);
    return TRELLIS_OK;
  } catch (...) {
    c->ts->error = "out of memory";
    return TRELLIS_INTERNAL;
  }
}

trellis_status registerSubscription(Call* c, trellis_str topic, int ref) noexcept {
  try {
    ThreadState* ts = c->ts;
    LuaPlugin::Impl* p = ts->plugin;
    std::string t(topic.ptr, topic.len);
    if (c->phase == Phase::kReplay) {
      for (const Subscription& sub : p->subscriptions) {
        if (sub.topic == t && ts->sub_refs[sub.index] == LUA_NOREF) {
          ts->sub_refs[sub.index] = ref;
          return TRELLIS_OK;
        }
      }
      ts->error = "init subscribed to " + t +
                  " on this thread but not at start: init must subscribe to the same topics "
                  "every time it runs";
      return TRELLIS_INVALID;
    }
    Subscription& sub = p->subscriptions.emplace_back();
    sub.plugin = p;
    sub.index = p->subscriptions.size() - 1;
    sub.topic = t;
    trellis_status s = p->host->event_subscribe(c->ctx, topic, eventHandler, &sub);
    if (s != TRELLIS_OK) {
      noteError(c, s);
      p->subscriptions.pop_back();
      return s;
    }
    ts->sub_refs.push_back(ref);
    return TRELLIS_OK;
  } catch (...) {
    c->ts->error = "out of memory";
    return TRELLIS_INTERNAL;
  }
}

trellis_status defineMetric(Call* c, int32_t kind, trellis_str name, trellis_str help) noexcept {
  try {
    LuaPlugin::Impl* p = c->ts->plugin;
    std::string n(name.ptr, name.len);
    if (c->phase == Phase::kReplay) {
      if (p->metric_ids.count(n)) return TRELLIS_OK;
      c->ts->error = "init defined metric " + n + " on this thread, unlike at start";
      return TRELLIS_INVALID;
    }
    trellis_metric_id id = 0;
    trellis_status s = p->host->metric_define(c->ctx, kind, name, help, &id);
    if (s != TRELLIS_OK) {
      noteError(c, s);
      return s;
    }
    p->metric_ids[n] = id;
    return TRELLIS_OK;
  } catch (...) {
    c->ts->error = "out of memory";
    return TRELLIS_INTERNAL;
  }
}

// 0 if the plugin defined no metric of that name.
trellis_metric_id metricId(const Call* c, trellis_str name) noexcept {
  const auto& ids = c->ts->plugin->metric_ids;
  auto it = ids.find(std::string_view(name.ptr, name.len));
  return it == ids.end() ? 0 : it->second;
}

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
const luaL_Reg kJson[] = {{"encode", jsonEncode}, {"decode", jsonDecode}, {nullptr, nullptr}};
const luaL_Reg kKeys[] = {{"list", keysList},
                          {"create", keysCreate},
                          {"rotate", keysRotate},
                          {"revoke", keysRevoke},
                          {nullptr, nullptr}};

struct Library {
  const char* name;
  const luaL_Reg* functions;
};
const Library kLibraries[] = {{"trellis", kTrellis},         {"trellis.log", kLog},
                              {"trellis.kv", kKv},           {"trellis.events", kEvents},
                              {"trellis.metrics", kMetrics}, {"trellis.clock", kClock},
                              {"trellis.json", kJson},       {"trellis.keys", kKeys}};

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

const luaL_Reg kInitTable[] = {{"route", tRoute}, {"subscribe", tSubscribe}, {"counter", tCounter},
                               {"gauge", tGauge}, {"histogram", tHistogram}, {nullptr, nullptr}};

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
    lua_createtable(L, 0, 3);
    lua_pushcfunction(L, index);
    lua_setfield(L, -2, "__index");
    lua_pushcfunction(L, readOnly);
    lua_setfield(L, -2, "__newindex");
    lua_pushliteral(L, "locked");
    lua_setfield(L, -2, "__metatable");
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

// A response call the host refused: a quota refusal ends the handler with that quota's
// status (as a native plugin passing the status on would); anything else is an error.
int responseFailed(lua_State* L, Call* c, trellis_status s, const char* what) {
  noteError(c, s);
  if (s == TRELLIS_QUOTA_EXCEEDED) {
    c->quota_refused = true;
    c->result = TRELLIS_QUOTA_EXCEEDED;
    return 0;
  }
  return luaL_error(L, "%s: %s", what, c->ts->error.c_str());
}

bool hasHeader(lua_State* L, int headers, const char* lower_name) {
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

Result<std::string> readEntry(const fs::path& dir, const std::string& entry) {
  std::error_code ec;
  const fs::path file = dir / entry;
  if (!fs::exists(fs::symlink_status(file, ec))) {
    return Status::notFound("lua entry " + entry + " is missing from " + dir.string());
  }
  const fs::path real = fs::canonical(file, ec);
  if (ec) return Status::notFound("lua entry " + entry + " cannot be resolved: " + ec.message());
  const fs::path root = fs::canonical(dir, ec);
  if (ec) return Status::notFound("plugin folder " + dir.string() + ": " + ec.message());
  const fs::path inside = real.lexically_relative(root);
  if (inside.empty() || *inside.begin() == ".." || inside == ".") {
    return Status::permissionDenied("lua entry " + entry + " resolves to " + real.string() +
                                    ", outside the plugin folder (a symlink must stay inside it)");
  }
  if (!fs::is_regular_file(real, ec)) {
    return Status::invalid("lua entry " + entry + " is not a regular file");
  }
  const uintmax_t size = fs::file_size(real, ec);
  if (ec || size > kMaxSourceBytes) {
    return Status::invalid("lua entry " + entry + " is larger than 4 MiB");
  }
  std::ifstream in(real, std::ios::binary);
  std::ostringstream text;
  text << in.rdbuf();
  if (!in.good() && !in.eof()) return Status::unavailable("cannot read lua entry " + entry);
  return text.str();
}

}  // namespace

// ------------------------------------------------------------------ the plugin

Result<std::unique_ptr<ThreadState>> LuaPlugin::Impl::build(const trellis_ctx* ctx, Phase phase) {
  auto ts = std::make_unique<ThreadState>();
  ts->plugin = this;
  auto sb = Sandbox::create(blocking_budget);
  if (!sb) return sb.status();
  ts->sb = std::move(*sb);
  for (const Library& lib : kLibraries) {
    if (Status s = ts->sb->addLibrary(lib.name, lib.functions, ts.get()); !s) return s;
  }
  if (Status s = ts->sb->protectedCall(installTables, ts.get()); !s) return s;
  if (phase == Phase::kReplay) {
    ts->route_refs.assign(routes.size(), LUA_NOREF);
    ts->sub_refs.assign(subscriptions.size(), LUA_NOREF);
  }
  Call c;
  c.phase = phase;
  c.ts = ts.get();
  c.ctx = ctx;
  CallGuard guard(&c);
  CallResult loaded = ts->sb->load(source, entry);
  if (!loaded.ok()) return Status::invalid(loaded.error);
  if (ts->sb->hasFunction("init")) {
    CallResult r = ts->sb->call("init", pushInitArgs, nullptr, &c);
    if (!r.ok()) return Status::invalid("init: " + r.error);
  }
  for (const Route& r : routes) {
    if (ts->route_refs[r.index] == LUA_NOREF) {
      return Status::internal("init did not register " + r.method + " " + r.pattern +
                              " on this thread, though it did at start");
    }
  }
  for (const Subscription& sub : subscriptions) {
    if (ts->sub_refs[sub.index] == LUA_NOREF) {
      return Status::internal("init did not subscribe to " + sub.topic +
                              " on this thread, though it did at start");
    }
  }
  return ts;
}

ThreadState* LuaPlugin::Impl::adopt(std::unique_ptr<ThreadState> ts) {
  ThreadState* raw = ts.get();
  {
    std::lock_guard lock(mu);
    states.push_back(std::move(ts));
  }
  t_states[uid] = raw;
  return raw;
}

// This thread's state, built on first use; null (the reason set as the ctx's error) if
// main.lua does not load here.
ThreadState* LuaPlugin::Impl::threadState(const trellis_ctx* ctx) {
  if (auto it = t_states.find(uid); it != t_states.end()) return it->second;
  Result<std::unique_ptr<ThreadState>> made = Status::internal("no init ctx");
  with_init_ctx([&](const trellis_ctx* init_ctx) { made = build(init_ctx, Phase::kReplay); });
  if (!made) {
    countFailure(Outcome::kError);
    std::string msg = entry + " does not load on this thread: " + made.status().message();
    host->set_error(ctx, {msg.data(), msg.size()});
    return nullptr;
  }
  return adopt(std::move(*made));
}

trellis_status LuaPlugin::Impl::finish(Call& c, const CallResult& r, const char* what) {
  std::string msg;
  trellis_status status = c.result;
  if (!r.ok()) {
    countFailure(r.outcome);
    msg = what ? std::string(what) + ": " + r.error : r.error;
    const bool budget = r.outcome != Outcome::kError;
    status = budget            ? TRELLIS_UNAVAILABLE
             : c.quota_refused ? TRELLIS_QUOTA_EXCEEDED
                               : TRELLIS_INTERNAL;
  } else if (status != TRELLIS_OK) {
    if (status != TRELLIS_QUOTA_EXCEEDED) countFailure(Outcome::kError);
    msg = what ? std::string(what) + ": " + c.ts->error : c.ts->error;
  }
  // Last: any host call after set_error would clear the message.
  if (status != TRELLIS_OK) host->set_error(c.ctx, {msg.data(), msg.size()});
  return status;
}

namespace {

trellis_status routeHandler(void* user, const trellis_ctx* ctx, const trellis_request* req,
                            trellis_response* res) {
  auto* route = static_cast<Route*>(user);
  LuaPlugin::Impl* p = route->plugin;
  try {
    ThreadState* ts = p->threadState(ctx);
    if (!ts) return TRELLIS_INTERNAL;
    Call c;
    c.phase = Phase::kRoute;
    c.ts = ts;
    c.ctx = ctx;
    c.req = req;
    c.res = res;
    c.route = route;
    ts->sb->setBudget(route->blocking ? p->blocking_budget : p->route_budget);
    CallGuard guard(&c);
    CallResult r =
        ts->sb->callRef(ts->route_refs[route->index], pushRouteArgs, readRouteResult, &c);
    return p->finish(c, r, nullptr);  // the data plane's log line names the route
  } catch (...) {
    return TRELLIS_INTERNAL;
  }
}

void eventHandler(void* user, const trellis_ctx* ctx, trellis_str topic, trellis_str payload) {
  auto* sub = static_cast<Subscription*>(user);
  LuaPlugin::Impl* p = sub->plugin;
  try {
    ThreadState* ts = p->threadState(ctx);
    trellis_status status = TRELLIS_INTERNAL;
    if (ts) {
      Call c;
      c.phase = Phase::kEvent;
      c.ts = ts;
      c.ctx = ctx;
      c.topic = topic;
      c.payload = payload;
      ts->sb->setBudget(p->blocking_budget);
      CallGuard guard(&c);
      CallResult r = ts->sb->callRef(ts->sub_refs[sub->index], pushEventArgs, nullptr, &c);
      const std::string what = "event " + sub->topic;
      status = p->finish(c, r, what.c_str());
    }
    if (status == TRELLIS_OK) return;
    // Nobody waits for an event handler: its failure goes to the log, tagged by the host.
    trellis_str msg{nullptr, 0};
    p->host->last_error(ctx, &msg);
    p->host->log(ctx, TRELLIS_LOG_ERROR, msg);
  } catch (...) {
  }
}

trellis_status onInit(const trellis_host_api* host, const trellis_ctx* ctx, void** state) {
  auto* p = static_cast<LuaPlugin::Impl*>(state ? *state : nullptr);
  if (!p || !host || !TRELLIS_HOST_HAS(host, last_error)) return TRELLIS_INVALID;
  try {
    p->host = host;
    auto made = p->build(ctx, Phase::kInit);
    if (!made) {
      host->set_error(ctx, {made.status().message().data(), made.status().message().size()});
      return TRELLIS_INVALID;
    }
    p->adopt(std::move(*made));
    return TRELLIS_OK;
  } catch (...) {
    return TRELLIS_INTERNAL;
  }
}

// start(ctx) and stop(ctx), if main.lua defines them.
trellis_status runLifecycle(LuaPlugin::Impl* p, const trellis_ctx* ctx, const char* function,
                            Phase phase) {
  ThreadState* ts = p->threadState(ctx);
  if (!ts) return TRELLIS_INTERNAL;
  if (!ts->sb->hasFunction(function)) return TRELLIS_OK;
  Call c;
  c.phase = phase;
  c.ts = ts;
  c.ctx = ctx;
  ts->sb->setBudget(p->blocking_budget);
  CallGuard guard(&c);
  CallResult r = ts->sb->call(function, pushCtxArg, readStartResult, &c);
  return p->finish(c, r, function);
}

trellis_status onStart(void* state, const trellis_ctx* ctx) {
  try {
    return runLifecycle(static_cast<LuaPlugin::Impl*>(state), ctx, "start", Phase::kStart);
  } catch (...) {
    return TRELLIS_INTERNAL;
  }
}

void onStop(void* state, const trellis_ctx* ctx) {
  try {
    auto* p = static_cast<LuaPlugin::Impl*>(state);
    if (runLifecycle(p, ctx, "stop", Phase::kStop) != TRELLIS_OK) {
      trellis_str msg{nullptr, 0};
      p->host->last_error(ctx, &msg);
      p->host->log(ctx, TRELLIS_LOG_ERROR, msg);
    }
  } catch (...) {
  }
}

// The Lua states are the LuaPlugin's; they go with it.
void onDestroy(void*) {}

}  // namespace

Result<std::unique_ptr<LuaPlugin>> LuaPlugin::load(
    const fs::path& dir, const plugin::Manifest& manifest, const std::string& entry,
    const config::LuaBudget& budget, metrics::MetricsRegistry* metrics, WithInitCtx with_init_ctx) {
  auto source = readEntry(dir, entry);
  if (!source) return source.status();
  auto impl = std::make_unique<Impl>();
  impl->manifest = manifest;
  impl->entry = entry;
  impl->source = std::move(*source);
  impl->route_budget = toBudget(budget, budget.wall);
  impl->blocking_budget = toBudget(budget, budget.blocking_wall);
  impl->with_init_ctx = std::move(with_init_ctx);
  impl->version = manifest.version.toString();
  impl->descriptor = trellis_plugin{sizeof(trellis_plugin),
                                    TRELLIS_ABI_MAJOR,
                                    TRELLIS_ABI_MINOR,
                                    impl->manifest.id.c_str(),
                                    impl->version.c_str(),
                                    onInit,
                                    onStart,
                                    onStop,
                                    onDestroy};
  if (metrics) {
    auto& family =
        metrics->counter("trellis_lua_plugin_failures_total",
                         "Calls into Lua plugins that failed, by cause", {"plugin", "cause"});
    const char* causes[] = {"error", "instructions", "memory", "wall_time"};
    for (size_t i = 0; i < impl->failures.size(); ++i) {
      impl->failures[i] = &family.labels({manifest.id, causes[i]});
    }
  }
  return std::unique_ptr<LuaPlugin>(new LuaPlugin(std::move(impl)));
}

LuaPlugin::LuaPlugin(std::unique_ptr<Impl> impl) : impl_(std::move(impl)) {}

LuaPlugin::~LuaPlugin() {
  t_states.erase(impl_->uid);  // this thread's entry; other threads never look it up again
}

const trellis_plugin& LuaPlugin::descriptor() const {
  return impl_->descriptor;
}

void* LuaPlugin::hookState() const {
  return impl_.get();
}

}  // namespace trellis::kernel::lua
