#include "runtime/plugin_manager.h"

#include <spdlog/spdlog.h>

#include <algorithm>
#include <fstream>
#include <functional>
#include <sstream>
#include <thread>

#include "runtime/call_context.h"
#include "runtime/system_grants.h"
#include "services/calls/service_registry.h"
#include "services/core/handle_table.h"
#include "services/jobs/scheduler.h"
#include "services/usage/usage_stream.h"
#include "trellis/kernel/events/event_bus.h"
#include "trellis/kernel/metrics/registry.h"
#include "trellis/kernel/plugin/install_lock.h"
#include "trellis/kernel/plugin/resolver.h"
#include "trellis/kernel/util/json.h"
#include "trellis/tenants/identity.h"

namespace trellis::kernel::runtime {
namespace fs = std::filesystem;
namespace {

constexpr std::string_view kManifestFile = "trellis-plugin.json";

struct Candidate {
  plugin::Manifest manifest;
  fs::path dir;
};

// Which installed folders discover() offers.
enum class Installed {
  kLocked,  // what each folder's plugins.lock names: what serves at start
  kAny,     // any complete folder: an admin activating an exact version
};

// Every plugin folder (a directory holding trellis-plugin.json) directly below `dirs`.
// Hidden folders are never offered: the installer extracts and deletes under such names.
std::map<std::string, std::vector<Candidate>> discover(const std::vector<fs::path>& dirs,
                                                       std::vector<BrokenPackage>& broken,
                                                       Installed which = Installed::kLocked) {
  std::map<std::string, std::vector<Candidate>> found;
  for (const auto& dir : dirs) {
    std::error_code ec;
    if (!fs::is_directory(dir, ec)) {
      spdlog::warn("plugin directory {} does not exist", dir.string());
      continue;
    }
    auto lock = plugin::readInstallLock(dir);
    if (!lock) {  // fail closed: nothing of this folder is served on a guess
      broken.push_back({dir, lock.status().message() + "; no plugin in this folder is loaded"});
      continue;
    }
    std::vector<fs::path> subdirs;
    for (const auto& entry : fs::directory_iterator(dir, ec)) {
      if (entry.path().filename().string().front() == '.') continue;
      if (entry.is_directory() && fs::exists(entry.path() / kManifestFile)) {
        subdirs.push_back(entry.path());
      }
    }
    std::sort(subdirs.begin(), subdirs.end());
    for (const auto& sub : subdirs) {
      auto manifest = plugin::Manifest::load(sub / kManifestFile);
      if (!manifest) {
        broken.push_back({sub, manifest.status().message()});
        continue;
      }
      if (which == Installed::kLocked) {
        if (auto why = lock->refusal(manifest->id, sub.filename().string())) {
          spdlog::info("plugin folder {} is not served: {}", sub.string(), *why);
          continue;
        }
      }
      found[manifest->id].push_back({std::move(*manifest), sub});
    }
  }
  return found;
}

std::string readAll(const fs::path& file) {
  std::ifstream in(file, std::ios::binary);
  std::ostringstream ss;
  ss << in.rdbuf();
  return ss.str();
}

// Checks the SHA-256 of every file the manifest lists, before any code is loaded.
Status verifyFiles(const plugin::Manifest& m, const fs::path& dir) {
  for (const auto& [rel, expected] : m.files) {
    fs::path file = dir / rel;
    std::error_code ec;
    if (!fs::is_regular_file(file, ec))
      return Status::notFound("listed file " + rel + " is missing");
    if (tenants::sha256Hex(readAll(file)) != expected) {
      return Status::invalid("SHA-256 of " + rel + " does not match the manifest");
    }
  }
  return Status::ok();
}

// "/a/{x}/b" and "/a/{y}/b" are the same route shape.
std::string routeShape(std::string_view pattern) {
  std::string shape;
  for (size_t i = 0; i < pattern.size(); ++i) {
    if (pattern[i] == '{') {
      shape += "{}";
      i = std::min(pattern.find('}', i), pattern.size());
    } else {
      shape += pattern[i];
    }
  }
  return shape;
}

// Third-party native plugins from a marketplace run in a worker unless the operator says
// otherwise; first-party ones ("trellis/…") and plugins put in place by hand run in process.
bool runsInWorker(const PluginInstance& p, const config::PluginEntry& entry) {
  if (entry.isolation != config::Isolation::kDefault) {
    return entry.isolation == config::Isolation::kProcess;
  }
  if (p.id().rfind("trellis/", 0) == 0) return false;
  auto lock = plugin::readInstallLock(p.dir().parent_path());
  return lock && lock->locked.count(p.id()) > 0;
}

worker::WorkerOptions workerOptions(const config::WorkerConfig& c) {
  worker::WorkerOptions o;
  o.binary = c.binary;
  if (o.binary.empty()) {
    std::error_code ec;
    o.binary = fs::read_symlink("/proc/self/exe", ec).parent_path() / "trellis-worker";
  }
  o.channels = static_cast<int>(c.channels);
  o.call_timeout = c.call_timeout;
  o.sandbox = c.sandbox;
  o.user = c.user;
  o.max_memory_bytes = c.max_memory_bytes;
  o.max_files = c.max_files;
  o.max_cpu_seconds = c.max_cpu_seconds;
  o.snapshot_bytes = c.snapshot_bytes;
  o.snapshot_min_bytes = c.snapshot_min_bytes;
  return o;
}

// How an instance runs, as the admin API names it; "" for Lua in trellisd (in its sandbox
// there), "process" for Lua in a worker (its sandbox inside the worker's).
std::string isolationName(const PluginInstance& p) {
  if (p.worker) return "process";
  return p.manifest().runtime == "lua" ? "" : "in-process";
}

// How trellis-worker builds a Lua plugin: what LuaPlugin::load takes from the manifest and
// the operator's budget, on its command line (the worker parses no manifest).
std::vector<std::string> luaWorkerArgs(const plugin::Manifest& m, const std::string& entry,
                                       const config::LuaBudget& b) {
  std::vector<std::string> args = {"--lua",
                                   "--lua-entry",
                                   entry,
                                   "--plugin-id",
                                   m.id,
                                   "--plugin-version",
                                   m.version.toString(),
                                   "--lua-instructions",
                                   std::to_string(b.instructions),
                                   "--lua-memory-bytes",
                                   std::to_string(b.memory_bytes),
                                   "--lua-wall-ms",
                                   std::to_string(b.wall.count()),
                                   "--lua-blocking-wall-ms",
                                   std::to_string(b.blocking_wall.count())};
  for (const auto& r : m.blocking_routes) {
    args.insert(args.end(), {"--blocking-route", r.method + " " + r.pattern});
  }
  return args;
}

}  // namespace

PluginManager::~PluginManager() {
  stopAll();
}

void PluginManager::fail(PluginInstance& p, std::string why) {
  spdlog::error("plugin {} failed: {}", p.id(), why);
  if (services_.events) {  // the audit stream records it (admin/audit_stream.h)
    std::string payload = "{\"plugin\":";
    util::appendJsonString(payload, p.id());
    payload += ",\"reason\":";
    util::appendJsonString(payload, why);
    payload += "}";
    services_.events->publish({"", "kernel", "audit.plugin_failed", std::move(payload)});
  }
  stopPlugin(p);
  p.state = PluginState::kFailed;
  p.error = std::move(why);
}

void PluginManager::startAll(const std::vector<fs::path>& dirs,
                             const std::vector<config::PluginEntry>& enabled) {
  dirs_ = dirs;
  enabled_ = enabled;
  auto found = discover(dirs, broken_);
  for (const auto& b : broken_) {
    spdlog::error("plugin package {} is broken: {}", b.dir.string(), b.error);
  }

  // Load: pick the highest installed version of each enabled plugin and open it.
  std::map<std::string, plugin::Manifest> loaded;
  for (const auto& entry : enabled) {
    auto it = found.find(entry.id);
    if (it == found.end()) {
      plugin::Manifest placeholder;
      placeholder.id = entry.id;
      auto p = std::make_unique<PluginInstance>(std::move(placeholder), fs::path(),
                                                entry.config_json, services_);
      fail(*p, "not installed in any plugin directory");
      by_id_[entry.id] = std::move(p);
      continue;
    }
    auto& candidates = it->second;
    auto best = std::max_element(candidates.begin(), candidates.end(),
                                 [](const Candidate& a, const Candidate& b) {
                                   return a.manifest.version < b.manifest.version;
                                 });
    auto p =
        std::make_unique<PluginInstance>(best->manifest, best->dir, entry.config_json, services_);
    PluginInstance& inst = *p;
    by_id_[entry.id] = std::move(p);
    if (Status s = loadPlugin(inst, entry); !s) {
      fail(inst, s.message());
      continue;
    }
    loaded.emplace(inst.id(), inst.manifest());
  }

  // A plugin whose dependency is enabled but failed to load fails for that reason (the
  // resolver only sees what loaded); repeat until chains of such failures settle.
  for (bool changed = true; changed;) {
    changed = false;
    for (auto it = loaded.begin(); it != loaded.end();) {
      const plugin::Dependency* broken = nullptr;
      for (const auto& dep : it->second.dependencies) {
        auto d = by_id_.find(dep.id);
        if (d != by_id_.end() && d->second->state == PluginState::kFailed) broken = &dep;
      }
      if (!broken) {
        ++it;
        continue;
      }
      fail(*by_id_.at(it->first),
           "dependency " + broken->id + " failed: " + by_id_.at(broken->id)->error);
      it = loaded.erase(it);
      changed = true;
    }
  }

  // Resolve: dependencies first; cycles and unsatisfied ranges are refused by name.
  plugin::StartPlan plan = plugin::resolveStartOrder(loaded);
  for (const auto& [id, why] : plan.refused) fail(*by_id_.at(id), why);

  auto dependenciesReady = [&](PluginInstance& p, PluginState needed) -> bool {
    for (const auto& dep : p.manifest().dependencies) {
      auto& d = *by_id_.at(dep.id);
      if (d.state != needed) {
        fail(p, "dependency " + dep.id + " failed: " + d.error);
        return false;
      }
    }
    return true;
  };

  for (const auto& id : plan.order) {
    PluginInstance& p = *by_id_.at(id);
    order_.push_back(&p);
    if (dependenciesReady(p, PluginState::kInitialized)) initPlugin(p);
  }
  for (PluginInstance* p : order_) {
    if (p->state != PluginState::kInitialized) continue;
    if (!dependenciesReady(*p, PluginState::kActive)) continue;
    startPlugin(*p);
  }
  // Failed plugins are reported after the started ones.
  for (auto& [id, p] : by_id_) {
    if (std::find(order_.begin(), order_.end(), p.get()) == order_.end()) order_.push_back(p.get());
  }
}

Status PluginManager::loadCode(PluginInstance& p, const std::string& entry_file,
                               const config::PluginEntry& entry) {
  const config::LuaBudget& budget = entry.lua;
  const plugin::Manifest& m = p.manifest();
  // A system plugin is trusted by the operator's grant, and its admin routes and usage
  // subscription are host threads calling into it, which a worker does not offer yet.
  const bool system = m.scope == plugin::PluginScope::System;
  if (system && entry.isolation == config::Isolation::kProcess) {
    return Status::unimplemented(
        "isolation: process is not available for system plugins yet (admin routes and the "
        "usage stream call into the plugin in process)");
  }
  if (m.runtime == "lua") {
    // Only by the operator's choice: a Lua plugin is sandboxed in trellisd already, and a
    // worker adds a process (and IPC per host call) to what it costs.
    if (entry.isolation == config::Isolation::kProcess) {
      if (auto text = lua::LuaPlugin::readEntry(p.dir(), entry_file); !text) return text.status();
      worker::WorkerOptions options = workerOptions(worker_config_);
      options.plugin_args = luaWorkerArgs(m, entry_file, budget);
      auto worker =
          worker::WorkerPlugin::open(p, p.dir() / entry_file, options, entry.dedicated_tenants);
      if (!worker) return worker.status();
      p.worker = std::move(*worker);
      return Status::ok();
    }
    // The adapter builds each thread's Lua state under an init ctx of this plugin.
    auto with_init_ctx = [plugin = &p](const std::function<void(const trellis_ctx*)>& fn) {
      trellis_ctx ctx;
      ctx.plugin = plugin;
      ctx.phase = Phase::kInit;
      CallScope scope(&ctx);
      fn(&ctx);
    };
    auto lua =
        lua::LuaPlugin::load(p.dir(), m, entry_file, budget, services_.metrics, with_init_ctx);
    if (!lua) return lua.status();
    p.lua = std::move(*lua);
    return Status::ok();
  }
  if (!system && runsInWorker(p, entry)) {
    auto worker = worker::WorkerPlugin::open(p, p.dir() / entry_file, workerOptions(worker_config_),
                                             entry.dedicated_tenants);
    if (!worker) return worker.status();
    p.worker = std::move(*worker);
    return Status::ok();
  }
  auto library = plugin::NativeLibrary::open(p.dir() / entry_file, m);
  if (!library) return library.status();
  p.library = std::move(*library);
  return Status::ok();
}

Status PluginManager::loadPlugin(PluginInstance& inst, const config::PluginEntry& entry) {
  static const auto host_version = plugin::Version::parse(TRELLIS_VERSION);
  const auto& m = inst.manifest();
  if (m.host && host_version && !m.host->contains(*host_version)) {
    return Status::invalid("needs trellisd " + m.host->text() + " but this is " TRELLIS_VERSION);
  }
  auto entry_file = m.entryForThisPlatform();
  if (!entry_file) return entry_file.status();
  if (Status s = checkScope(inst); !s) return s;
  if (Status s = verifyFiles(m, inst.dir()); !s) return s;
  inst.operator_egress = entry.egress;
  inst.script_ceiling = lua::Budget{.instructions = entry.lua.instructions,
                                    .memory_bytes = entry.lua.memory_bytes,
                                    .wall_time = entry.lua.blocking_wall};
  if (Status s = loadCode(inst, *entry_file, entry); !s) return s;
  inst.state = PluginState::kLoaded;
  return Status::ok();
}

Status PluginManager::checkScope(const PluginInstance& p) {
  const bool asks = p.manifest().scope == plugin::PluginScope::System;
  const bool granted = services_.system_grants && services_.system_grants->isGranted(p.id());
  if (asks == granted) return Status::ok();
  // Either way the operator and the package disagree about what this plugin may do.
  std::string why =
      asks ? "asks for \"scope\": \"system\", which only the operator can grant (set "
             "`system: true` on its plugins.enabled entry in trellis.yaml, or `trellis plugin "
             "grant-system " +
                 p.id() + "`); refused"
           : "is granted system scope but its manifest asks for \"scope\": \"tenant\"; "
             "remove the grant or install a version that asks for system scope";
  if (services_.metrics) {
    services_.metrics
        ->counter("trellis_plugin_scope_refusals_total",
                  "Plugins refused because the scope they ask for and the operator's grant differ",
                  {"plugin"})
        .labels({p.id()})
        .add(1);
  }
  if (services_.events) {
    std::string payload = "{\"plugin\":";
    util::appendJsonString(payload, p.id());
    payload += ",\"reason\":";
    util::appendJsonString(payload, why);
    payload += "}";
    services_.events->publish({"", "kernel", "audit.plugin_scope_refused", std::move(payload)});
  }
  return Status::permissionDenied(why);
}

const PluginInstance* PluginManager::ReadView::find(std::string_view id) const {
  for (const PluginInstance* p : plugins_) {
    if (p->id() == id) return p;
  }
  return nullptr;
}

bool PluginManager::ReadView::isSystemPlugin(std::string_view id) const {
  const PluginInstance* p = find(id);
  return p && p->state == PluginState::kActive && p->isSystemPlugin();
}

bool PluginManager::startPlugin(PluginInstance& p) {
  const trellis_plugin& d = *p.descriptor();
  if (d.on_start) {
    trellis_ctx ctx;
    ctx.plugin = &p;
    ctx.phase = Phase::kStart;
    trellis_status s = TRELLIS_OK;
    {
      CallScope scope(&ctx);
      s = d.on_start(p.plugin_state, &ctx);
    }
    if (s != TRELLIS_OK) {
      fail(p, "on_start returned " + std::string(statusCodeName(static_cast<StatusCode>(s))) +
                  (ctx.error.empty() ? "" : ": " + ctx.error));
      return false;
    }
  }
  p.state = PluginState::kActive;
  // From here on, its services answer calls (a previous version's drain as it stops).
  if (services_.service_registry) services_.service_registry->bind(p);
  if (services_.jobs && p.job_fn) services_.jobs->bind(p);
  if (services_.usage && p.usage_fn) services_.usage->bind(p);
  spdlog::info("plugin {}@{} active ({} routes)", p.id(), p.manifest().version.toString(),
               p.routes.size());
  return true;
}

bool PluginManager::initPlugin(PluginInstance& p) {
  const trellis_plugin& d = *p.descriptor();
  trellis_ctx ctx;
  ctx.plugin = &p;
  ctx.phase = Phase::kInit;
  trellis_status s = TRELLIS_INTERNAL;
  // C hooks carry no user pointer: the Lua adapter finds its plugin in *state.
  p.plugin_state = p.lua ? p.lua->hookState() : p.worker ? p.worker->hookState() : nullptr;
  {
    CallScope scope(&ctx);
    s = d.on_init(hostApi(), &ctx, &p.plugin_state);
  }
  if (s != TRELLIS_OK) {
    p.plugin_state = nullptr;  // on_init failed: it owns nothing we may destroy
    fail(p, "on_init returned " + std::string(statusCodeName(static_cast<StatusCode>(s))) +
                (ctx.error.empty() ? "" : ": " + ctx.error));
    return false;
  }
  p.state = PluginState::kInitialized;
  return true;
}

void PluginManager::stopPlugin(PluginInstance& p) {
  // No service call may reach the plugin once it starts tearing down; those running end.
  if (services_.service_registry) services_.service_registry->unbind(p);
  if (services_.jobs) services_.jobs->unbind(p);    // its job runs finish first
  if (services_.usage) services_.usage->unbind(p);  // a batch in progress finishes first
  // No event may reach the plugin once it starts tearing down.
  if (services_.events) {
    for (uint64_t id : p.subscriptions) services_.events->unsubscribe(id);
    if (!p.subscriptions.empty()) services_.events->flush();
  }
  p.subscriptions.clear();
  if (const trellis_plugin* code = p.descriptor()) {
    const trellis_plugin& d = *code;
    if (p.state == PluginState::kActive && d.on_stop) {
      trellis_ctx ctx;
      ctx.plugin = &p;
      ctx.phase = Phase::kStop;
      CallScope scope(&ctx);
      d.on_stop(p.plugin_state, &ctx);
    }
    // What the plugin left open is the host's to reclaim; nothing it holds outlives it.
    if (services_.handles) {
      if (size_t n = services_.handles->releaseAll(&p)) {
        spdlog::info("plugin={} stopped holding {} handle(s); released", p.id(), n);
      }
    }
    bool initialized = p.state == PluginState::kInitialized || p.state == PluginState::kActive;
    if (initialized && d.on_destroy) {
      d.on_destroy(p.plugin_state);
    }
  }
  p.plugin_state = nullptr;
  p.routes.clear();
  p.admin_routes.clear();
  p.metrics.clear();
  p.library.reset();
  p.lua.reset();
  p.worker.reset();
  p.state = PluginState::kStopped;
}

namespace {

// Adds `p`'s routes to a copy of `table`'s router; "" on success, else the collision.
std::string addRoutes(RouteTable& table, PluginInstance& p) {
  http::Router trial = table.router;
  for (size_t i = 0; i < p.routes.size(); ++i) {
    const auto& r = p.routes[i];
    if (Status s = trial.add(r.method, r.pattern, table.targets.size() + i); !s) {
      std::string conflict = "route " + r.method + " " + r.pattern + " conflicts";
      for (const auto& t : table.targets) {
        if (t.method == r.method && routeShape(t.pattern) == routeShape(r.pattern)) {
          conflict += " with " + t.plugin->id() + "'s " + t.method + " " + t.pattern;
        }
      }
      return conflict;
    }
  }
  // Admin routes sit under the plugin's own /v1/x/<id>/ prefix, so they cannot collide
  // with another plugin's; they are served only while the plugin holds system scope.
  http::Router admin_trial = table.admin_router;
  if (p.isSystemPlugin()) {
    for (size_t i = 0; i < p.admin_routes.size(); ++i) {
      const auto& r = p.admin_routes[i];
      if (Status s = admin_trial.add(r.method, r.pattern, table.admin_targets.size() + i); !s) {
        return "admin route " + r.method + " " + r.pattern + ": " + s.message();
      }
    }
  }
  table.router = std::move(trial);
  for (const auto& r : p.routes) {
    table.targets.push_back({&p, r.handler, r.user, r.blocking, r.method, r.pattern});
  }
  if (p.isSystemPlugin()) {
    table.admin_router = std::move(admin_trial);
    for (const auto& r : p.admin_routes) {
      table.admin_targets.push_back({&p, r.handler, r.user, r.method, r.pattern, r.role});
    }
  }
  return "";
}

}  // namespace

RouteTable PluginManager::buildRouteTable() {
  RouteTable table;
  for (PluginInstance* p : order_) {
    if (p->state != PluginState::kActive) continue;
    if (std::string conflict = addRoutes(table, *p); !conflict.empty()) fail(*p, conflict);
  }
  return table;
}

Result<RouteTable> PluginManager::routeTableOf(const std::vector<PluginInstance*>& plugins) {
  RouteTable table;
  for (PluginInstance* p : plugins) {
    if (p->state != PluginState::kActive) continue;
    if (std::string conflict = addRoutes(table, *p); !conflict.empty()) {
      return Status::conflict(p->id() + ": " + conflict);
    }
  }
  return table;
}

bool PluginManager::swapAndDrain(ActiveRoutes& routes, RouteTable next,
                                 std::chrono::milliseconds drain) {
  std::weak_ptr<const RouteTable> old = routes.load();
  routes.store(std::make_shared<const RouteTable>(std::move(next)));
  // Every request that could still reach a replaced plugin holds the old table; when the
  // last one lets go, nothing can call into it any more.
  const auto deadline = std::chrono::steady_clock::now() + drain;
  while (!old.expired()) {
    if (std::chrono::steady_clock::now() >= deadline) return false;
    std::this_thread::sleep_for(std::chrono::milliseconds(2));
  }
  return true;
}

Result<PluginManager::Activation> PluginManager::activate(
    const std::string& id, ActiveRoutes& routes, std::chrono::milliseconds drain,
    const std::optional<plugin::Version>& wanted, const std::optional<IsolationChoice>& isolation) {
  std::vector<BrokenPackage> broken;
  // An exact version is the admin's (or the installer's) instruction; otherwise what the
  // lock names, as at start.
  auto found = discover(dirs_, broken, wanted ? Installed::kAny : Installed::kLocked);
  auto it = found.find(id);
  if (it == found.end()) {
    std::string why = id + " is not installed in any plugin folder";
    for (const auto& b : broken) why += "; broken package " + b.dir.string() + ": " + b.error;
    return Status::notFound(why);
  }
  auto& candidates = it->second;
  if (wanted) {
    std::erase_if(candidates, [&](const Candidate& c) { return !(c.manifest.version == *wanted); });
    if (candidates.empty()) {
      return Status::notFound(id + "@" + wanted->toString() +
                              " is not installed in any plugin folder");
    }
  }
  const Candidate& best = *std::max_element(candidates.begin(), candidates.end(),
                                            [](const Candidate& a, const Candidate& b) {
                                              return a.manifest.version < b.manifest.version;
                                            });
  const std::string version = best.manifest.version.toString();
  auto existing = by_id_.find(id);
  PluginInstance* old = existing == by_id_.end() ? nullptr : existing->second.get();
  if (old && old->state != PluginState::kActive) old = nullptr;  // failed or stopped: replace

  config::PluginEntry entry;
  entry.id = id;
  for (const auto& e : enabled_) {
    if (e.id == id) entry = e;
  }
  const std::vector<std::string> dedicated_before = entry.dedicated_tenants;
  if (isolation) {
    if (Status s = applyIsolationChoice(entry, *isolation); !s) return s;
  }
  if (old && old->dir() == best.dir && old->manifest().version == best.manifest.version) {
    const bool same_mode = !isolation || ((isolation->mode == config::Isolation::kProcess) ==
                                              (old->worker != nullptr) &&
                                          entry.dedicated_tenants == dedicated_before);
    if (same_mode) {
      return Activation{version, version, true, true, isolationName(*old), isolationName(*old)};
    }
  }

  // Dependencies must be running, in range; active dependents must accept the new version.
  for (const auto& dep : best.manifest.dependencies) {
    auto d = by_id_.find(dep.id);
    if (d == by_id_.end() || d->second->state != PluginState::kActive) {
      return Status::conflict(id + "@" + version + " requires " + dep.id + " " + dep.range.text() +
                              ", which is not active");
    }
    if (!dep.range.contains(d->second->manifest().version)) {
      return Status::conflict(id + "@" + version + " requires " + dep.id + " " + dep.range.text() +
                              " but " + d->second->manifest().version.toString() + " is active");
    }
  }
  for (PluginInstance* q : order_) {
    if (q->state != PluginState::kActive || q->id() == id) continue;
    for (const auto& dep : q->manifest().dependencies) {
      if (dep.id == id && !dep.range.contains(best.manifest.version)) {
        return Status::conflict(q->id() + " requires " + id + " " + dep.range.text() + ", so " +
                                version + " would break it");
      }
    }
  }

  auto next =
      std::make_unique<PluginInstance>(best.manifest, best.dir, entry.config_json, services_);
  next->isolation_set_at_runtime = isolation || (old && old->isolation_set_at_runtime);
  if (Status s = loadPlugin(*next, entry); !s)
    return Status(s.code(), id + "@" + version + ": " + s.message());
  // The new version starts while the old one still serves; on any failure it is torn down
  // (fail() stops it) and the old one is untouched.
  if (!initPlugin(*next) || !startPlugin(*next)) {
    return Status::invalid(id + "@" + version + " failed: " + next->error);
  }
  std::vector<PluginInstance*> plugins;
  for (PluginInstance* p : order_) plugins.push_back(p == old ? next.get() : p);
  if (!old) plugins.push_back(next.get());
  auto table = routeTableOf(plugins);
  if (!table) {
    stopPlugin(*next);
    return table.status();
  }

  Activation result{version,
                    old ? old->manifest().version.toString() : "",
                    true,
                    false,
                    isolationName(*next),
                    old ? isolationName(*old) : ""};
  result.drained = swapAndDrain(routes, std::move(*table), drain);
  // The choice holds for later activations (an upgrade keeps the mode) until a restart.
  if (isolation) {
    auto e = std::find_if(enabled_.begin(), enabled_.end(),
                          [&](const config::PluginEntry& x) { return x.id == id; });
    if (e == enabled_.end()) {
      enabled_.push_back(entry);
    } else {
      *e = entry;
    }
    recordIsolationChange(id, result, entry);
  }
  // Start order: the new version takes the old one's place (dependencies come earlier);
  // a new plugin goes after every running one, before the failed ones kept for reports.
  std::unique_ptr<PluginInstance> replaced;
  {
    std::unique_lock lock(list_mu_);
    if (existing != by_id_.end()) replaced = std::move(existing->second);
    PluginInstance* raw = next.get();
    by_id_[id] = std::move(next);
    auto pos = std::find(order_.begin(), order_.end(), replaced.get());
    if (replaced && pos != order_.end()) {
      *pos = raw;
    } else {
      auto first_inactive = std::find_if(order_.begin(), order_.end(), [](PluginInstance* p) {
        return p->state != PluginState::kActive;
      });
      order_.insert(first_inactive, raw);
    }
  }
  if (replaced) {
    if (result.drained) {
      stopPlugin(*replaced);
    } else {
      spdlog::warn(
          "plugin {}@{} still has requests in flight after {} ms; it is unloaded at "
          "shutdown",
          id, result.previous, drain.count());
      retired_.push_back(std::move(replaced));
    }
  }
  spdlog::info("plugin {}@{} activated{}", id, version,
               result.previous.empty() ? "" : " (replacing " + result.previous + ")");
  return result;
}

Status PluginManager::applyIsolationChoice(config::PluginEntry& entry,
                                           const IsolationChoice& choice) {
  if (choice.mode == config::Isolation::kProcess) {
    if (choice.dedicated_tenants) entry.dedicated_tenants = *choice.dedicated_tenants;
  } else if (choice.mode == config::Isolation::kInProcess) {
    if (choice.dedicated_tenants && !choice.dedicated_tenants->empty()) {
      return Status::invalid("dedicated_tenants needs isolation \"process\"");
    }
    entry.dedicated_tenants.clear();
  } else {
    return Status::invalid("isolation: expected \"process\" or \"in-process\"");
  }
  entry.isolation = choice.mode;
  return Status::ok();
}

void PluginManager::recordIsolationChange(const std::string& id, const Activation& result,
                                          const config::PluginEntry& entry) {
  spdlog::warn(
      "plugin {}@{} now runs {} (was {}) by an admin's choice; trellis.yaml sets its isolation "
      "again at the next start",
      id, result.version, result.isolation.empty() ? "in its Lua sandbox" : result.isolation,
      !result.previous_isolation.empty() ? result.previous_isolation
      : result.previous.empty()          ? "not active"
                                         : "in its Lua sandbox");
  if (!services_.events) return;
  std::string payload = "{\"plugin\":";
  util::appendJsonString(payload, id);
  payload += ",\"version\":";
  util::appendJsonString(payload, result.version);
  payload += ",\"from\":";
  util::appendJsonString(payload, result.previous_isolation);
  payload += ",\"to\":";
  util::appendJsonString(payload, result.isolation);
  payload += ",\"dedicated_tenants\":[";
  for (size_t i = 0; i < entry.dedicated_tenants.size(); ++i) {
    if (i) payload += ",";
    util::appendJsonString(payload, entry.dedicated_tenants[i]);
  }
  payload += "],\"persists_across_restart\":false}";
  services_.events->publish({"", "kernel", "audit.plugin_isolation_changed", std::move(payload)});
}

Result<PluginManager::Activation> PluginManager::deactivate(const std::string& id,
                                                            ActiveRoutes& routes,
                                                            std::chrono::milliseconds drain) {
  auto it = by_id_.find(id);
  if (it == by_id_.end() || it->second->state != PluginState::kActive) {
    return Status::notFound(id + " is not active");
  }
  for (PluginInstance* q : order_) {
    if (q->state != PluginState::kActive || q->id() == id) continue;
    for (const auto& dep : q->manifest().dependencies) {
      if (dep.id == id) {
        return Status::conflict(q->id() + " depends on " + id + "; deactivate it first");
      }
    }
  }
  PluginInstance* p = it->second.get();
  std::vector<PluginInstance*> rest;
  for (PluginInstance* q : order_) {
    if (q != p) rest.push_back(q);
  }
  auto table = routeTableOf(rest);
  if (!table) return table.status();
  Activation result{"", p->manifest().version.toString(), true, false, "", isolationName(*p)};
  result.drained = swapAndDrain(routes, std::move(*table), drain);
  std::unique_ptr<PluginInstance> gone;
  {
    std::unique_lock lock(list_mu_);
    gone = std::move(it->second);
    by_id_.erase(it);
    order_ = std::move(rest);
  }
  if (result.drained) {
    stopPlugin(*gone);
  } else {
    retired_.push_back(std::move(gone));
  }
  spdlog::info("plugin {}@{} deactivated", id, result.previous);
  return result;
}

void PluginManager::stopAll() {
  for (auto& p : retired_) {
    if (p->state == PluginState::kActive) stopPlugin(*p);
  }
  for (auto it = order_.rbegin(); it != order_.rend(); ++it) {
    PluginInstance& p = **it;
    if (p.state == PluginState::kActive || p.state == PluginState::kInitialized) {
      stopPlugin(p);
      spdlog::info("plugin {} stopped", p.id());
    }
  }
}

}  // namespace trellis::kernel::runtime
