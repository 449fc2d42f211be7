// What `trellis plugin install` recorded in a plugin folder's plugins.lock, as trellisd
// needs it: the folder that serves each installed plugin, and the folders an unfinished
// install, upgrade or remove left behind, which are never served. (The installer's own
// reader and writer is kernel/src/cli/install/lock_file.h.)
//
//   auto lock = plugin::readInstallLock(dir);      // no plugins.lock: nothing is locked
//   if (auto why = lock->refusal("acme/hello", "acme.hello@2.0.0")) skip(*why);
#pragma once

#include <filesystem>
#include <map>
#include <optional>
#include <set>
#include <string>

#include "trellis/status.hpp"

namespace trellis::kernel::plugin {

inline constexpr const char* kInstallLockFile = "plugins.lock";

struct InstallLock {
  std::map<std::string, std::string> locked;  // plugin id -> folder name
  std::set<std::string> pending;              // folder names

  // Why trellisd must not serve subfolder `folder`, which holds plugin `id`; nullopt if
  // it may. A locked plugin is served from its locked folder only; a pending folder the
  // lock does not name belongs to a change that never committed.
  std::optional<std::string> refusal(const std::string& id, const std::string& folder) const;
};

// Reads dir/plugins.lock; without one, nothing is locked. INVALID naming the file when it
// is unreadable or malformed.
Result<InstallLock> readInstallLock(const std::filesystem::path& dir);

}  // namespace trellis::kernel::plugin
