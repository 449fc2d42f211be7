// The operator's grants of system scope. A plugin whose manifest asks for
// "scope": "system" runs with system powers (the usage and audit streams of all tenants,
// admin routes) only while its id is granted here; asking alone gets it refused at load.
// Grants come from trellis.yaml (`system: true` on a plugins.enabled entry, fixed for the
// process) or the admin API (persisted in a SharedDocument: <data_dir>/system-grants.json
// on one host, PostgreSQL when hosts share it, where a grant or revocation on one host
// reaches the others within a second). Thread-safe: the data plane and host calls ask
// isGranted() concurrently.
//
//   auto grants = SystemGrants::open(SharedDocument::file(data_dir / "system-grants.json"),
//                                    cfg.plugins);
//   grants->grant("acme/audit");              // admin API; takes effect at next activation
//   if (instance.isSystemPlugin()) ...         // asked + granted (plugin_instance.h)
#pragma once

#include <filesystem>
#include <functional>
#include <map>
#include <memory>
#include <mutex>
#include <set>
#include <shared_mutex>
#include <string>
#include <string_view>
#include <vector>

#include "admin/shared_document.h"
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

  // Reads the persisted admin-API grants (a document never written is none) and adds the
  // config's.
  static Result<std::unique_ptr<SystemGrants>> open(
      std::unique_ptr<admin::SharedDocument> doc, const std::vector<config::PluginEntry>& enabled);
  // Moving to a shared document: adds the grants of `legacy` (this host's file from before),
  // then renames it to <file>.imported. The number added; 0 if there is no such file.
  Result<size_t> importFile(const std::filesystem::path& legacy);
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
  using Ids = std::set<std::string>;  // the admin-API grants, as the document holds them

  static Result<Ids> parse(const std::optional<std::string>& text, const std::string& where);
  static std::string serialize(const Ids& ids);
  // Applies `change` to the latest document and writes it; then serves what was written.
  Status edit(const std::function<Status(Ids&)>& change);
  void adopt(const Ids& ids, int64_t version);

  mutable std::shared_mutex mu_;
  std::map<std::string, Source, std::less<>> grants_;
  int64_t version_ = -1;                        // of the document the admin-API grants came from
  std::unique_ptr<admin::SharedDocument> doc_;  // null: not persisted; last, so its watcher
                                                // stops before the rest goes
};

std::string_view grantSourceName(SystemGrants::Source s);

}  // namespace trellis::kernel::runtime
