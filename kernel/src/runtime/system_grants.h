// The operator's grants of system scope. A plugin whose manifest asks for
// "scope": "system" runs with system powers (the usage and audit streams of all tenants,
// admin routes) only while its id is granted here; asking alone gets it refused at load.
// Grants come from trellis.yaml (`system: true` on a plugins.enabled entry, fixed for the
// process) or the admin API (persisted in <data_dir>/system-grants.json, written
// atomically). Thread-safe: the data plane and host calls ask isGranted() concurrently.
//
//   auto grants = SystemGrants::open(data_dir / "system-grants.json", cfg.plugins);
//   grants->grant("acme/audit");              // admin API; takes effect at next activation
//   if (instance.isSystemPlugin()) ...         // asked + granted (plugin_instance.h)
#pragma once

#include <filesystem>
#include <map>
#include <memory>
#include <mutex>
#include <shared_mutex>
#include <string>
#include <string_view>
#include <vector>

#include "trellis/kernel/config/config.h"
#include "trellis/status.hpp"

namespace trellis::kernel::runtime {

class SystemGrants {
 public:
  enum class Source { kConfig, kAdminApi };
  struct Grant {
    std::string plugin;
    Source source;
  };

  // Reads the persisted admin-API grants (a missing file is none) and adds the config's.
  static Result<std::unique_ptr<SystemGrants>> open(
      std::filesystem::path file, const std::vector<config::PluginEntry>& enabled);
  // No file: grants from `enabled` only, admin-API grants refused (tests, in-memory hosts).
  explicit SystemGrants(const std::vector<config::PluginEntry>& enabled);

  bool isGranted(std::string_view plugin) const;
  std::vector<Grant> list() const;
  // Persisted before it returns; `false` if it was already granted (nothing changed).
  Result<bool> grant(const std::string& plugin);
  // CONFLICT for a grant in trellis.yaml (only the file can take it back); `false` if it
  // was not granted.
  Result<bool> revoke(const std::string& plugin);

 private:
  Status persistLocked() const;

  std::filesystem::path file_;  // empty: not persisted
  mutable std::shared_mutex mu_;
  std::map<std::string, Source, std::less<>> grants_;
};

std::string_view grantSourceName(SystemGrants::Source s);

}  // namespace trellis::kernel::runtime
