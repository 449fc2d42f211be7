// One loaded plugin as the kernel sees it: manifest, code (a native library or a Lua
// adapter, both behind a trellis_plugin descriptor), the state its on_init returned, and
// everything it registered. Owned by PluginManager; host API calls reach
// it through the call context.
#pragma once

#include <atomic>
#include <filesystem>
#include <map>
#include <memory>
#include <mutex>
#include <optional>
#include <string>
#include <variant>
#include <vector>

#include "lua/lua_plugin.h"
#include "trellis/kernel/plugin/manifest.h"
#include "trellis/kernel/plugin/native_library.h"
#include "trellis/plugin.h"
#include "trellis/tenants/registry.h"
#include "worker/host_side/worker_plugin.h"

namespace trellis::kernel::events {
class EventBus;
}
namespace trellis::kernel::metrics {
class MetricsRegistry;
class Counter;
class Gauge;
class Histogram;
}  // namespace trellis::kernel::metrics
namespace trellis::kernel::storage {
class KvStore;
}
namespace trellis::kernel::admin {
class AuditStream;
}
namespace trellis::tenants {
class TenantRegistry;
}
namespace trellis::kernel::services {
class HandleTable;
class JobScheduler;
class ServiceRegistry;
namespace blobs {
class BlobStore;
}
namespace egress {
class EgressService;
}
namespace stream {
class StreamService;
}
namespace usage {
class UsageStream;
}
namespace seal {
class SealKey;
}
}  // namespace trellis::kernel::services

namespace trellis::kernel::runtime {

class SelfService;
class SystemGrants;

// Kernel services every plugin reaches through the host table.
struct HostServices {
  storage::KvStore* kv = nullptr;
  events::EventBus* events = nullptr;
  metrics::MetricsRegistry* metrics = nullptr;
  const tenants::TenantRegistry* tenants = nullptr;
  SelfService* self_service = nullptr;       // the tenant_* host calls; null = unavailable
  services::HandleTable* handles = nullptr;  // ABI 1.2 handles; null = none
  services::ServiceRegistry* service_registry = nullptr;  // inter-plugin services
  services::JobScheduler* jobs = nullptr;                 // jobs and timers
  services::blobs::BlobStore* blobs = nullptr;            // null = no blob storage
  services::egress::EgressService* egress = nullptr;      // null = no egress
  services::stream::StreamService* streams = nullptr;     // null = no egress streams
  const SystemGrants* system_grants = nullptr;            // the operator's; null = none granted
  services::usage::UsageStream* usage = nullptr;          // null = no usage stream
  admin::AuditStream* audit = nullptr;                    // null = nothing audits act_for_tenant
  const services::seal::SealKey* seal = nullptr;          // null = no server.seal_key_file
};

enum class PluginState { kDiscovered, kLoaded, kInitialized, kActive, kFailed, kStopped };
std::string_view pluginStateName(PluginState s);

struct RouteRegistration {
  std::string method;
  std::string pattern;
  trellis_handler_fn handler = nullptr;
  void* user = nullptr;
  bool blocking = false;
};

// A route on the admin port (admin_route_add; system plugins only), with the admin role
// it declares ("admin", "operator", "auditor", "billing").
struct AdminRouteRegistration {
  std::string method;
  std::string pattern;  // always under /v1/x/<namespace>/<name>/
  std::string role;
  trellis_handler_fn handler = nullptr;
  void* user = nullptr;
};

// A method a provider registered with service_provide.
struct ServiceMethod {
  trellis_service_fn fn = nullptr;
  void* user = nullptr;
};
// service -> method -> handler; filled during on_init, read-only afterwards.
using ServiceMethods =
    std::map<std::string, std::map<std::string, ServiceMethod, std::less<>>, std::less<>>;

using MetricSlot = std::variant<metrics::Counter*, metrics::Gauge*, metrics::Histogram*>;

class PluginInstance {
 public:
  PluginInstance(plugin::Manifest manifest, std::filesystem::path dir, std::string config_json,
                 HostServices services)
      : manifest_(std::move(manifest)),
        dir_(std::move(dir)),
        config_json_(std::move(config_json)),
        services_(services) {}

  const plugin::Manifest& manifest() const { return manifest_; }
  const std::string& id() const { return manifest_.id; }
  const std::filesystem::path& dir() const { return dir_; }
  const HostServices& services() const { return services_; }

  // True while this plugin has system scope: its manifest asks for "scope": "system" and
  // the operator's grant stands (runtime/system_grants.h). Asked live, so a revoked grant
  // ends the plugin's system powers at once. Thread-safe.
  bool isSystemPlugin() const;

  // Dotted-path lookup in the plugin's config; the returned view stays valid for the
  // plugin's lifetime (answers are cached). NOT_FOUND if absent.
  Result<std::string_view> config(std::string_view path);
  // The same lookup in the config as `tenant` sees it: its overrides (TenantView::
  // plugin_config) laid over the global config. Cached until the overrides change.
  Result<std::string> config(std::string_view path, const tenants::TenantView& tenant);
  const std::string& configJson() const { return config_json_; }

  // Lifecycle state as reported to operators; read by the event thread, hence atomic.
  std::atomic<PluginState> state{PluginState::kDiscovered};
  std::string error;  // why it failed, for the admin API and CLI

  std::unique_ptr<plugin::NativeLibrary> library;  // runtime "native"
  std::unique_ptr<lua::LuaPlugin> lua;             // runtime "lua"
  std::unique_ptr<worker::WorkerPlugin> worker;    // runtime "native", isolation: process
  void* plugin_state = nullptr;                    // from on_init

  // The hooks of whichever runtime loaded the plugin; null before loading.
  const trellis_plugin* descriptor() const {
    return library  ? &library->descriptor()
           : lua    ? &lua->descriptor()
           : worker ? &worker->descriptor()
                    : nullptr;
  }

  // Filled during on_init.
  std::vector<RouteRegistration> routes;
  std::vector<AdminRouteRegistration> admin_routes;
  std::vector<uint64_t> subscriptions;
  std::vector<MetricSlot> metrics;
  ServiceMethods service_methods;
  // The job handler set with job_handler; null = the plugin runs no jobs.
  trellis_job_fn job_fn = nullptr;
  void* job_user = nullptr;
  // The usage stream handler set with usage_subscribe; null = not a subscriber.
  trellis_usage_fn usage_fn = nullptr;
  void* usage_user = nullptr;

  std::atomic<uint64_t> denied_calls{0};
  // True when an admin chose this instance's isolation at run time (activate with
  // "isolation"), so it may differ from trellis.yaml until the next start. Set before the
  // instance is published; read-only afterwards.
  bool isolation_set_at_runtime = false;

  // The operator's egress list for this plugin's tenant-less calls while it is a system
  // plugin (plugins.enabled[].egress; unset = the manifest's rules alone). Set at load,
  // read-only afterwards.
  std::optional<std::vector<std::string>> operator_egress;
  // The most a script this plugin loads (script_load) may use per call: the operator's
  // `lua:` budget for the plugin (plugins.enabled[].lua; wall time: blocking_wall_ms).
  // Set at load, read-only afterwards.
  lua::Budget script_ceiling{.instructions = 10'000'000,
                             .memory_bytes = 32 * 1024 * 1024,
                             .wall_time = std::chrono::milliseconds(1000)};

 private:
  plugin::Manifest manifest_;
  std::filesystem::path dir_;
  std::string config_json_;
  HostServices services_;
  struct TenantConfig {
    std::string overrides;  // as they were when `merged` was built
    std::string merged;
    std::map<std::string, std::string, std::less<>> answers;  // by path
  };
  std::string mergedFor(const std::string& tenant, const std::string& overrides);

  std::mutex config_mu_;
  std::map<std::string, std::string, std::less<>> config_cache_;    // node-stable
  std::map<std::string, TenantConfig, std::less<>> tenant_config_;  // by tenant id
};

}  // namespace trellis::kernel::runtime
