// `trellis plugin outdated`: for each package of plugins.lock, the locked version, the newest
// version an upgrade would choose now ("allowed") and the newest the index has ("available"),
// and for each version in between, why it is held back: yanked, it does not run on this host
// (ABI, trellisd version, platform), or a dependency range of another installed package (or
// its own dependencies) excludes it.
//
//   for (const auto& row : outdatedReport(index, lock, thisHost())) ...
#pragma once

#include <string>
#include <vector>

#include "cli/install/lock_file.h"
#include "cli/install/resolve.h"
#include "trellis/marketplace/index.h"

namespace trellis::cli::install {

struct HeldBack {
  std::string version;
  std::string
      reason;  // "yanked (CVE-…)", "needs plugin ABI 2.0, …", "acme/app@1.0.0 requires ^1.0.0"
};

struct OutdatedRow {
  std::string id;
  std::string locked;               // plugins.lock's version
  std::string newest_allowed;       // what `trellis plugin upgrade ID` would install now
  std::string newest_available;     // the highest version in the index ("" if none)
  std::vector<HeldBack> held_back;  // newer than allowed, newest first
  bool upToDate() const { return newest_allowed == newest_available; }
};

// One row per locked package, in id order.
std::vector<OutdatedRow> outdatedReport(const marketplace::Index& index, const LockFile& lock,
                                        const HostFacts& host);

}  // namespace trellis::cli::install
