// Discovers, loads, orders and runs the enabled plugins, and owns them until shutdown.
// A plugin that fails at any step is reported (state "failed" with the reason) and the
// others keep going: one bad plugin never takes the host down.
//
//   PluginManager pm(services);
//   pm.startAll(config.plugin_dirs, config.plugins);
//   auto table = pm.buildRouteTable();   // routes of active plugins
//   ...serve...
//   pm.stopAll();                         // reverse start order
#pragma once

#include <atomic>
#include <chrono>
#include <filesystem>
#include <map>
#include <memory>
#include <optional>
#include <shared_mutex>
#include <string>
#include <vector>

#include "runtime/plugin_instance.h"
#include "trellis/kernel/config/config.h"
#include "trellis/kernel/http/router.h"

namespace trellis::kernel::runtime {

// What the data plane dispatches to.
struct RouteTarget {
  PluginInstance* plugin = nullptr;
  trellis_handler_fn handler = nullptr;
  void* user = nullptr;
  bool blocking = false;
  std::string method;
  std::string pattern;
};

// A system plugin's route on the admin port (admin_route_add), with its declared role.
struct AdminRouteTarget {
  PluginInstance* plugin = nullptr;
  trellis_handler_fn handler = nullptr;
  void* user = nullptr;
  std::string method;
  std::string pattern;
  std::string role;
};

struct RouteTable {
  http::Router router;
  std::vector<RouteTarget> targets;  // indexed by the router's target
  // Admin routes of active system plugins, /v1/x/<ns>/<name>/… (admin/plugin_admin_routes.h).
  http::Router admin_router;
  std::vector<AdminRouteTarget> admin_targets;
};

// The route table the data plane serves, replaced whole by hot activation. Each request
// holds the table it loaded until it has answered, so a replaced table, and the plugin
// versions only it names, stay alive while requests still use them: activation waits for
// the old table's last holder before unloading anything (PluginManager::activate).
class ActiveRoutes {
 public:
  ActiveRoutes() : table_(std::make_shared<const RouteTable>()) {}
  // One atomic shared_ptr load: the data plane's whole cost of hot swapping.
  std::shared_ptr<const RouteTable> load() const {
    return std::atomic_load_explicit(&table_, std::memory_order_acquire);
  }
  void store(std::shared_ptr<const RouteTable> table) {
    std::atomic_store_explicit(&table_, std::move(table), std::memory_order_release);
  }

 private:
  // Only through std::atomic_load/atomic_store: not C++20 std::atomic<std::shared_ptr>,
  // whose GCC 12 load() ThreadSanitizer reports as a race (see tenants/src/registry.cc).
  std::shared_ptr<const RouteTable> table_;
};

// A plugin that could not be identified by id (e.g. a broken manifest), for reports.
struct BrokenPackage {
  std::filesystem::path dir;
  std::string error;
};

class PluginManager {
 public:
  explicit PluginManager(HostServices services) : services_(services) {}
  ~PluginManager();  // stops whatever still runs
  PluginManager(const PluginManager&) = delete;
  PluginManager& operator=(const PluginManager&) = delete;

  // Discover → load → resolve → init → start. Never throws for plugin faults.
  void startAll(const std::vector<std::filesystem::path>& dirs,
                const std::vector<config::PluginEntry>& enabled);
  // Routes of the active plugins. A plugin whose route collides with an earlier plugin's
  // is failed and stopped, naming both.
  RouteTable buildRouteTable();
  // on_stop in reverse start order, then on_destroy and unload.
  void stopAll();

  // Hot activation: loads the highest installed version of `id` from the plugin folders
  // (the same checks as at start), inits and starts it next to what runs, then swaps
  // `routes` to a table that serves it. For an upgrade the old version serves until the
  // swap, and is stopped and unloaded once the requests that hold the old table finish
  // (at most `drain`; past that it is unloaded at shutdown). Any failure before the swap
  // (load, dependencies, on_init, on_start, route conflict) leaves everything as it was and
  // says why. Call from one thread at a time (the admin API's).
  struct Activation {
    std::string version;
    std::string previous;  // the version it replaced; "" for a new plugin
    bool drained = true;   // false: the old version outlived `drain`
    bool already = false;  // this version was already active; nothing changed
    // "process" or "in-process" ("" for a Lua plugin in trellisd, in its sandbox there):
    // the mode it runs in now, and the mode of the instance it replaced ("" for a new
    // plugin).
    std::string isolation;
    std::string previous_isolation;
  };
  // The admin's choice of mode (POST …/activate {"isolation": …}). It holds for later
  // activations (upgrades) of this trellisd, not across a restart: trellis.yaml sets the
  // mode at start.
  struct IsolationChoice {
    config::Isolation mode = config::Isolation::kDefault;  // kProcess or kInProcess
    // kProcess only; nullopt: keep the tenants the plugin's entry names.
    std::optional<std::vector<std::string>> dedicated_tenants;
  };
  // `version`: that installed version instead of the highest (a downgrade). `isolation`:
  // run the new instance in that mode; the same version switches mode by the same start,
  // swap and drain as an upgrade.
  Result<Activation> activate(const std::string& id, ActiveRoutes& routes,
                              std::chrono::milliseconds drain,
                              const std::optional<plugin::Version>& version = std::nullopt,
                              const std::optional<IsolationChoice>& isolation = std::nullopt);
  // Takes `id`'s routes away, drains and stops it. CONFLICT while active plugins depend on it.
  Result<Activation> deactivate(const std::string& id, ActiveRoutes& routes,
                                std::chrono::milliseconds drain);

  // How plugins with isolation: process run (before startAll).
  void setWorkerConfig(const config::WorkerConfig& worker) { worker_config_ = worker; }

  // The plugin list as admin threads read it while plugin control (activate, deactivate:
  // one change at a time, on its own thread) may change it. The view holds a shared lock;
  // a change swaps the list under the exclusive lock and stops what it removed only after
  // it, so no instance a view shows is stopped or freed while the view lives. Keep views
  // short, and never change plugins while holding one.
  class ReadView {
   public:
    // Every enabled plugin in start order, failed ones included.
    const std::vector<const PluginInstance*>& plugins() const { return plugins_; }
    const PluginInstance* find(std::string_view id) const;
    // True if `id` runs now as a system plugin (PluginInstance::isSystemPlugin): its
    // manifest asks for "scope": "system", the operator granted it, and it is active.
    bool isSystemPlugin(std::string_view id) const;

   private:
    friend class PluginManager;
    explicit ReadView(const PluginManager& m)
        : lock_(m.list_mu_), plugins_(m.order_.begin(), m.order_.end()) {}
    std::shared_lock<std::shared_mutex> lock_;
    std::vector<const PluginInstance*> plugins_;
  };
  ReadView read() const { return ReadView(*this); }

  const std::vector<BrokenPackage>& broken() const { return broken_; }

 private:
  void fail(PluginInstance& p, std::string why);
  // Opens the plugin's code for its runtime: a native library, or the Lua adapter.
  Status loadCode(PluginInstance& p, const std::string& entry_file,
                  const config::PluginEntry& entry);
  Status loadPlugin(PluginInstance& p, const config::PluginEntry& entry);
  // The scope the manifest asks for against the operator's grant, before any code loads.
  Status checkScope(const PluginInstance& p);
  bool initPlugin(PluginInstance& p);
  bool startPlugin(PluginInstance& p);
  void stopPlugin(PluginInstance& p);
  // `entry` with the admin's isolation choice applied; INVALID for a contradictory one.
  static Status applyIsolationChoice(config::PluginEntry& entry, const IsolationChoice& choice);
  // Logs an admin's change of mode and writes it to the audit stream.
  void recordIsolationChange(const std::string& id, const Activation& result,
                             const config::PluginEntry& entry);
  // Routes of `plugins` (active ones), or CONFLICT naming the first collision.
  static Result<RouteTable> routeTableOf(const std::vector<PluginInstance*>& plugins);
  // Publishes `next` and waits (up to `drain`) until no request holds the table it replaced.
  static bool swapAndDrain(ActiveRoutes& routes, RouteTable next, std::chrono::milliseconds drain);

  HostServices services_;
  config::WorkerConfig worker_config_;
  std::vector<std::filesystem::path> dirs_;
  std::vector<config::PluginEntry> enabled_;
  // Replaced versions that outlived the drain: stopped at shutdown, after the data plane.
  std::vector<std::unique_ptr<PluginInstance>> retired_;
  // by_id_ and order_ change under list_mu_ held exclusively once trellisd serves.
  mutable std::shared_mutex list_mu_;
  std::map<std::string, std::unique_ptr<PluginInstance>> by_id_;
  std::vector<PluginInstance*> order_;  // start order; failed ones kept for reports
  std::vector<BrokenPackage> broken_;
};

}  // namespace trellis::kernel::runtime
