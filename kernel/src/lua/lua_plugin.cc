#include "lua/lua_plugin.h"

#include <atomic>
#include <fstream>
#include <sstream>
#include <unordered_map>

#include "lua/internal/lua_plugin_state.h"

// The adapter: the descriptor's hooks, route and event handlers, registration with the
// host, and one Lua state per (thread, plugin). What scripts can call is script_api.cc.

namespace trellis::kernel::lua {
namespace fs = std::filesystem;

namespace {

constexpr uintmax_t kMaxSourceBytes = 4 * 1024 * 1024;

std::atomic<uint64_t> g_next_uid{1};

// By plugin uid. Raw pointers: the plugin owns its states, and a uid is never reused.
thread_local std::unordered_map<uint64_t, ThreadState*> t_states;

// What the host calls: the C side of the plugin's routes and subscriptions.
trellis_status routeHandler(void* user, const trellis_ctx* ctx, const trellis_request* req,
                            trellis_response* res);
void eventHandler(void* user, const trellis_ctx* ctx, trellis_str topic, trellis_str payload);
trellis_status methodHandler(void* user, const trellis_ctx* ctx, trellis_str request,
                             trellis_service_reply* reply);
trellis_status jobHandler(void* user, const trellis_ctx* ctx, trellis_str name,
                          trellis_str payload);

Budget toBudget(const config::LuaBudget& b, std::chrono::milliseconds wall) {
  return Budget{.instructions = b.instructions,
                .memory_bytes = static_cast<size_t>(b.memory_bytes),
                .wall_time = wall};
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

// The entry's text, if it is a regular file inside `dir` (after following symlinks: a
// link may point only within the plugin folder) of at most kMaxSourceBytes.
Result<std::string> readEntryText(const fs::path& dir, const std::string& entry) {
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
  if (ec) return Status::unavailable("cannot read lua entry " + entry + ": " + ec.message());
  if (size > kMaxSourceBytes) {
    return Status::invalid("lua entry " + entry + " has " + std::to_string(size) +
                           " bytes; at most " + std::to_string(kMaxSourceBytes) + " are allowed");
  }
  std::ifstream in(real, std::ios::binary);
  std::ostringstream text;
  text << in.rdbuf();
  if (!in.good() && !in.eof()) return Status::unavailable("cannot read lua entry " + entry);
  return text.str();
}

}  // namespace

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
    r.blocking = p->isBlocking(m, pat);
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

// t.provide: a method of a service in the manifest's "provides" (ABI 1.2).
trellis_status registerMethod(Call* c, trellis_str service, trellis_str method, int ref) noexcept {
  try {
    ThreadState* ts = c->ts;
    LuaPlugin::Impl* p = ts->plugin;
    std::string svc(service.ptr, service.len), m(method.ptr, method.len);
    if (c->phase == Phase::kReplay) {
      for (const Method& known : p->methods) {
        if (known.service == svc && known.method == m &&
            ts->method_refs[known.index] == LUA_NOREF) {
          ts->method_refs[known.index] = ref;
          return TRELLIS_OK;
        }
      }
      ts->error = "init provided " + svc + "." + m +
                  " on this thread but not at start: init must provide the same methods "
                  "every time it runs";
      return TRELLIS_INVALID;
    }
    if (!TRELLIS_HOST_HAS(p->host, service_provide)) {
      ts->error = "this host offers no services (needs ABI 1.2)";
      return TRELLIS_UNIMPLEMENTED;
    }
    Method& entry = p->methods.emplace_back();
    entry.plugin = p;
    entry.index = p->methods.size() - 1;
    entry.service = svc;
    entry.method = m;
    trellis_status s = p->host->service_provide(c->ctx, service, method, methodHandler, &entry);
    if (s != TRELLIS_OK) {
      noteError(c, s);
      p->methods.pop_back();
      return s;
    }
    ts->method_refs.push_back(ref);
    return TRELLIS_OK;
  } catch (...) {
    c->ts->error = "out of memory";
    return TRELLIS_INTERNAL;
  }
}

// t.on_job: the plugin's job handler (ABI 1.2).
trellis_status registerJobHandler(Call* c, int ref) noexcept {
  ThreadState* ts = c->ts;
  LuaPlugin::Impl* p = ts->plugin;
  if (ts->job_ref != LUA_NOREF) {
    ts->error = "t.on_job called twice";
    return TRELLIS_CONFLICT;
  }
  if (c->phase == Phase::kInit) {
    if (!TRELLIS_HOST_HAS(p->host, job_handler)) {
      ts->error = "this host runs no jobs (needs ABI 1.2)";
      return TRELLIS_UNIMPLEMENTED;
    }
    trellis_status s = p->host->job_handler(c->ctx, jobHandler, p);
    if (s != TRELLIS_OK) {
      noteError(c, s);
      return s;
    }
    p->job_handler = true;
  } else if (!p->job_handler) {
    ts->error = "init set a job handler on this thread but not at start";
    return TRELLIS_INVALID;
  }
  ts->job_ref = ref;
  return TRELLIS_OK;
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

// ------------------------------------------------------------------ the plugin

Result<std::unique_ptr<ThreadState>> LuaPlugin::Impl::build(const trellis_ctx* ctx, Phase phase) {
  auto ts = std::make_unique<ThreadState>();
  ts->plugin = this;
  auto sb = Sandbox::create(blocking_budget);
  if (!sb) return sb.status();
  ts->sb = std::move(*sb);
  ts->sb->setLabel("lua plugin " + id + " " + version);
  if (Status s = installScriptApi(*ts->sb, ts.get()); !s) return s;
  if (phase == Phase::kReplay) {
    ts->route_refs.assign(routes.size(), LUA_NOREF);
    ts->sub_refs.assign(subscriptions.size(), LUA_NOREF);
    ts->method_refs.assign(methods.size(), LUA_NOREF);
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
  for (const Method& m : methods) {
    if (ts->method_refs[m.index] == LUA_NOREF) {
      return Status::internal("init did not provide " + m.service + "." + m.method +
                              " on this thread, though it did at start");
    }
  }
  if (job_handler && ts->job_ref == LUA_NOREF) {
    return Status::internal(
        "init did not set a job handler on this thread, though it did at "
        "start");
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

// A service method: runs on the caller's thread, under the blocking budget.
trellis_status methodHandler(void* user, const trellis_ctx* ctx, trellis_str request,
                             trellis_service_reply* reply) {
  auto* method = static_cast<Method*>(user);
  LuaPlugin::Impl* p = method->plugin;
  try {
    ThreadState* ts = p->threadState(ctx);
    if (!ts) return TRELLIS_INTERNAL;
    Call c;
    c.phase = Phase::kService;
    c.ts = ts;
    c.ctx = ctx;
    c.payload = request;
    c.reply = reply;
    ts->sb->setBudget(p->blocking_budget);
    CallGuard guard(&c);
    CallResult r =
        ts->sb->callRef(ts->method_refs[method->index], pushServiceArgs, readServiceResult, &c);
    return p->finish(c, r, nullptr);  // the caller's message names service and method
  } catch (...) {
    return TRELLIS_INTERNAL;
  }
}

// A job run: on the jobs pool, under the blocking budget; nil, "message" fails the run.
trellis_status jobHandler(void* user, const trellis_ctx* ctx, trellis_str name,
                          trellis_str payload) {
  auto* p = static_cast<LuaPlugin::Impl*>(user);
  try {
    ThreadState* ts = p->threadState(ctx);
    if (!ts) return TRELLIS_INTERNAL;
    Call c;
    c.phase = Phase::kJob;
    c.ts = ts;
    c.ctx = ctx;
    c.topic = name;
    c.payload = payload;
    ts->sb->setBudget(p->blocking_budget);
    CallGuard guard(&c);
    CallResult r = ts->sb->callRef(ts->job_ref, pushEventArgs, readStartResult, &c);
    return p->finish(c, r, "job");
  } catch (...) {
    return TRELLIS_INTERNAL;
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

Result<std::string> LuaPlugin::readEntry(const fs::path& dir, const std::string& entry) {
  return readEntryText(dir, entry);
}

Result<std::unique_ptr<LuaPlugin>> LuaPlugin::load(
    const fs::path& dir, const plugin::Manifest& manifest, const std::string& entry,
    const config::LuaBudget& budget, metrics::MetricsRegistry* metrics, WithInitCtx with_init_ctx) {
  auto text = readEntryText(dir, entry);
  if (!text) return text.status();
  return fromSource(Source{manifest.id, manifest.version.toString(), entry, std::move(*text),
                           manifest.blocking_routes},
                    budget, metrics, std::move(with_init_ctx));
}

Result<std::unique_ptr<LuaPlugin>> LuaPlugin::fromSource(Source source,
                                                         const config::LuaBudget& budget,
                                                         metrics::MetricsRegistry* metrics,
                                                         WithInitCtx with_init_ctx,
                                                         FailureSink on_failure) {
  if (source.text.size() > kMaxSourceBytes) {
    return Status::invalid("lua entry " + source.entry + " has " +
                           std::to_string(source.text.size()) + " bytes; at most " +
                           std::to_string(kMaxSourceBytes) + " are allowed");
  }
  auto impl = std::make_unique<Impl>();
  impl->uid = g_next_uid.fetch_add(1);
  impl->id = std::move(source.id);
  impl->blocking_routes = std::move(source.blocking_routes);
  impl->entry = std::move(source.entry);
  impl->source = std::move(source.text);
  impl->route_budget = toBudget(budget, budget.wall);
  impl->blocking_budget = toBudget(budget, budget.blocking_wall);
  impl->with_init_ctx = std::move(with_init_ctx);
  impl->on_failure = std::move(on_failure);
  impl->version = std::move(source.version);
  impl->descriptor = trellis_plugin{sizeof(trellis_plugin),
                                    TRELLIS_ABI_MAJOR,
                                    TRELLIS_ABI_MINOR,
                                    impl->id.c_str(),
                                    impl->version.c_str(),
                                    onInit,
                                    onStart,
                                    onStop,
                                    onDestroy};
  if (metrics) {
    for (size_t i = 0; i < impl->failures.size(); ++i) {
      impl->failures[i] = luaFailureCounter(*metrics, impl->id, i);
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

metrics::Counter* luaFailureCounter(metrics::MetricsRegistry& metrics, const std::string& plugin,
                                    size_t cause) {
  static const char* const kCauses[kLuaFailureCauses] = {"error", "instructions", "memory",
                                                         "wall_time"};
  if (cause >= kLuaFailureCauses) return nullptr;
  return &metrics
              .counter("trellis_lua_plugin_failures_total",
                       "Calls into Lua plugins that failed, by cause", {"plugin", "cause"})
              .labels({plugin, kCauses[cause]});
}

}  // namespace trellis::kernel::lua
