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

#include <filesystem>
#include <map>
#include <memory>
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

struct RouteTable {
  http::Router router;
  std::vector<RouteTarget> targets;  // indexed by the router's target
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

  // Every enabled plugin in start order, failed ones included.
  std::vector<const PluginInstance*> plugins() const;
  const std::vector<BrokenPackage>& broken() const { return broken_; }

 private:
  void fail(PluginInstance& p, std::string why);
  // Opens the plugin's code for its runtime: a native library, or the Lua adapter.
  Status loadCode(PluginInstance& p, const std::string& entry_file,
                  const config::LuaBudget& budget);
  bool initPlugin(PluginInstance& p);
  void stopPlugin(PluginInstance& p);

  HostServices services_;
  std::map<std::string, std::unique_ptr<PluginInstance>> by_id_;
  std::vector<PluginInstance*> order_;  // start order; failed ones kept for reports
  std::vector<BrokenPackage> broken_;
};

}  // namespace trellis::kernel::runtime
