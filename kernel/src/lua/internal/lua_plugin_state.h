// Internals shared by the Lua plugin adapter (lua_plugin.cc: hooks, registration, the
// per-thread states) and the API it gives scripts (script_api.cc: trellis.*, t, the ctx
// and req proxies, handler results). Private to these two files.
//
// Lua reports errors by longjmp. Every function that Lua calls keeps only trivially
// destructible objects in its frame while it calls a raising Lua API function; C++ work
// happens in noexcept helpers that return first, and results built in C++ wait in
// ThreadState.
#pragma once

#include <array>
#include <deque>
#include <map>
#include <memory>
#include <mutex>
#include <string>
#include <utility>
#include <vector>

#include "lua/lua_plugin.h"
#include "trellis/kernel/lua/sandbox.h"
#include "trellis/kernel/metrics/registry.h"

namespace trellis::kernel::lua {

// What the plugin is being called for; registration (t.*) is allowed only in the first two.
enum class Phase { kInit, kReplay, kStart, kStop, kRoute, kEvent, kService, kJob };

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

// A service method the script provides (t.provide, ABI 1.2).
struct Method {
  LuaPlugin::Impl* plugin = nullptr;
  size_t index = 0;
  std::string service;
  std::string method;
};

// The plugin's Lua state on one thread, and scratch space for results built in C++.
struct ThreadState {
  LuaPlugin::Impl* plugin = nullptr;
  std::unique_ptr<Sandbox> sb;
  std::vector<int> route_refs;   // by Route::index: registry refs of the handlers
  std::vector<int> sub_refs;     // by Subscription::index
  std::vector<int> method_refs;  // by Method::index
  int job_ref = LUA_NOREF;       // t.on_job's function
  std::vector<std::pair<std::string, std::string>> pairs;  // headers, params, args
  struct Entry {
    std::string key, value;
    uint64_t version = 0;
  };
  std::vector<Entry> entries;     // kv.list
  std::vector<trellis_str> strs;  // egress request headers, borrowed from the script's table
  std::string error;              // a message to raise or report
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
  trellis_str payload{nullptr, 0};         // event payload, service request, job payload
  trellis_service_reply* reply = nullptr;  // kService: where the answer goes
  bool quota_refused = false;              // a host call answered QUOTA_EXCEEDED
  trellis_status result = TRELLIS_OK;      // a handler may report a failure (nil, "message")
};

// The call in progress on this thread: what the trellis.* functions act on.
inline thread_local Call* t_call = nullptr;

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

struct LuaPlugin::Impl {
  uint64_t uid = 0;  // tells thread-local caches of different plugins apart
  std::string id;    // the manifest's
  std::vector<plugin::BlockingRoute> blocking_routes;
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
  std::deque<Method> methods;
  bool job_handler = false;
  std::map<std::string, trellis_metric_id, std::less<>> metric_ids;

  std::array<metrics::Counter*, 4> failures{};  // error, instructions, memory, wall_time
  FailureSink on_failure;                       // instead, without a metrics registry

  std::mutex mu;  // guards states
  std::vector<std::unique_ptr<ThreadState>> states;

  Result<std::unique_ptr<ThreadState>> build(const trellis_ctx* ctx, Phase phase);
  ThreadState* adopt(std::unique_ptr<ThreadState> ts);
  ThreadState* threadState(const trellis_ctx* ctx);
  trellis_status finish(Call& c, const CallResult& r, const char* what);
  bool isBlocking(std::string_view method, std::string_view pattern) const {
    for (const plugin::BlockingRoute& b : blocking_routes) {
      if (b.pattern == pattern && (b.method == "*" || b.method == method)) return true;
    }
    return false;
  }
  void countFailure(Outcome o) {
    if (o == Outcome::kOk) return;
    const size_t cause = static_cast<size_t>(o) - 1;
    if (failures[cause]) {
      failures[cause]->add(1);
    } else if (on_failure) {
      on_failure(cause);
    }
  }
};

const char* codeName(trellis_status s);  // "not_found", as scripts see codes

inline const trellis_host_api* hostOf(const Call* c) {
  return c->ts->plugin->host;
}

// Note a message in c->ts->error: the host's for the failed call (else the code's name),
// or the given text.
void noteError(Call* c, trellis_status s) noexcept;
void noteMessage(ThreadState* ts, const char* msg, size_t len) noexcept;

// t.route, t.subscribe, t.counter/gauge/histogram (lua_plugin.cc): the first init
// registers with the host; a thread's replay binds its functions to what that registered.
// On failure the reason is in c->ts->error.
trellis_status registerRoute(Call* c, trellis_str method, trellis_str pattern, int ref) noexcept;
trellis_status registerSubscription(Call* c, trellis_str topic, int ref) noexcept;
// t.provide and t.on_job (ABI 1.2), the same way.
trellis_status registerMethod(Call* c, trellis_str service, trellis_str method, int ref) noexcept;
trellis_status registerJobHandler(Call* c, int ref) noexcept;
trellis_status defineMetric(Call* c, int32_t kind, trellis_str name, trellis_str help) noexcept;
// 0 if the plugin defined no metric of that name.
trellis_metric_id metricId(const Call* c, trellis_str name) noexcept;

// The script API (script_api.cc): the trellis.* libraries and the `t` and proxy tables,
// installed in a new sandbox before main.lua loads; each marshal gets a Call*.
Status installScriptApi(Sandbox& sb, ThreadState* ts);
int pushInitArgs(lua_State* L, void* call);     // t
int pushCtxArg(lua_State* L, void* call);       // ctx
int pushRouteArgs(lua_State* L, void* call);    // ctx, req
int pushEventArgs(lua_State* L, void* call);    // ctx, topic, payload (also a job's name, payload)
int pushServiceArgs(lua_State* L, void* call);  // ctx, request
int readServiceResult(lua_State* L, void* call);  // response | nil, "message"
// Applies a handler's results to the response through the host.
int readRouteResult(lua_State* L, void* call);
int readStartResult(lua_State* L, void* call);  // nil, "message" refuses

}  // namespace trellis::kernel::lua
