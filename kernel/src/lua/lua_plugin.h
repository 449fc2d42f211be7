// A Lua plugin (manifest "runtime": "lua") as the kernel runs it: an adapter that speaks
// the C ABI. It hands the plugin manager an ordinary trellis_plugin descriptor whose hooks
// and route handlers are C functions here; they run the plugin's Lua code in sandboxes
// (sandbox.h), and every trellis.* call the script makes goes to the same trellis_host_api
// table, with the ctx the hook was given. Capability checks, per-tenant grants, host-call
// and storage quotas, ctx liveness, metrics and audit events are therefore the very code
// paths native plugins go through.
//
//   auto lua = LuaPlugin::load(dir, manifest, "main.lua", budget, &metrics, withInitCtx);
//   if (!lua) refuse(lua.status());     // "main.lua resolves to /etc/passwd, outside ..."
//   void* state = (*lua)->hookState();  // on_init finds its plugin in *state
//   (*lua)->descriptor().on_init(hostApi(), &ctx, &state);  // runs main.lua and init(t)
//
// Sandboxes: one per (thread, plugin), built on a thread's first call by running main.lua
// and init(t) again under an init ctx (`with_init_ctx`), where t.route/t.subscribe/
// t.counter only bind the functions to what the first init registered. Lua state is never
// shared across threads; plugin state that must be shared lives in KV.
//
// Budgets (config::LuaBudget, from trellis.yaml): every call runs under the instruction,
// memory and wall-time budget. A call over budget fails with UNAVAILABLE (the client gets
// 503), a Lua error with INTERNAL (500); both are counted in
// trellis_lua_plugin_failures_total{plugin, cause} and the message (main.lua:12: ...) goes
// to the log, never to the client.
#pragma once

#include <filesystem>
#include <functional>
#include <memory>
#include <string>
#include <vector>

#include "trellis/kernel/config/config.h"
#include "trellis/kernel/lua/sandbox.h"
#include "trellis/kernel/plugin/manifest.h"
#include "trellis/plugin.h"
#include "trellis/status.hpp"

namespace trellis::kernel::metrics {
class MetricsRegistry;
class Counter;
}  // namespace trellis::kernel::metrics

namespace trellis::kernel::lua {

// trellis_lua_plugin_failures_total{plugin, cause} for cause 0 error, 1 instructions,
// 2 memory, 3 wall_time; nullptr for another cause. One definition for a Lua plugin in
// trellisd and one in a worker (whose failures arrive as a call's effect).
inline constexpr size_t kLuaFailureCauses = 4;
metrics::Counter* luaFailureCounter(metrics::MetricsRegistry& metrics, const std::string& plugin,
                                    size_t cause);

class LuaPlugin {
 public:
  // Runs `fn` with a live init-phase ctx for this plugin; the kernel provides it, so the
  // script's calls while a thread's sandbox is built follow the on_init rules.
  using WithInitCtx = std::function<void(const std::function<void(const trellis_ctx*)>&)>;

  // Reads the entry (`entry`, relative to `dir`): it must be a regular file inside `dir`
  // (a symlink may point only within the folder) of at most 4 MiB. Syntax errors surface
  // at on_init, as main.lua:LINE: ... . `metrics` may be null.
  static Result<std::unique_ptr<LuaPlugin>> load(const std::filesystem::path& dir,
                                                 const plugin::Manifest& manifest,
                                                 const std::string& entry,
                                                 const config::LuaBudget& budget,
                                                 metrics::MetricsRegistry* metrics,
                                                 WithInitCtx with_init_ctx);

  // The entry's text, checked as load() checks it. The kernel checks a plugin that runs in
  // a worker process this way before the worker gets the file.
  static Result<std::string> readEntry(const std::filesystem::path& dir, const std::string& entry);

  // What load() takes from the manifest and the folder. trellis-worker builds the plugin
  // from this (it has the entry's text as a descriptor, and no manifest parser).
  struct Source {
    std::string id;
    std::string version;
    std::string entry;  // "main.lua": the chunk name in error messages
    std::string text;
    std::vector<plugin::BlockingRoute> blocking_routes;
  };
  // Without `metrics`, each failed call is handed to `on_failure` instead (cause: 0 error,
  // 1 instructions, 2 memory, 3 wall time): the worker sends it on to trellisd.
  using FailureSink = std::function<void(size_t cause)>;
  static Result<std::unique_ptr<LuaPlugin>> fromSource(Source source,
                                                       const config::LuaBudget& budget,
                                                       metrics::MetricsRegistry* metrics,
                                                       WithInitCtx with_init_ctx,
                                                       FailureSink on_failure = nullptr);
  ~LuaPlugin();
  LuaPlugin(const LuaPlugin&) = delete;
  LuaPlugin& operator=(const LuaPlugin&) = delete;

  // The descriptor (id and version from the manifest). Valid while this object lives.
  const trellis_plugin& descriptor() const;
  // What the caller must put in *state before calling on_init: C hooks have no user
  // pointer, so on_init finds its plugin there (and leaves it as the plugin's state).
  void* hookState() const;

  struct Impl;

 private:
  explicit LuaPlugin(std::unique_ptr<Impl> impl);
  std::unique_ptr<Impl> impl_;
};

}  // namespace trellis::kernel::lua
