// Chooses one version of each package to install from a verified index: the requested
// ranges, the dependencies of every chosen version and the packages already installed
// (plugins.lock) must all agree, and each chosen version must run on this host (ABI,
// trellisd version, platform). Yanked versions are never chosen anew; a version the lock
// names still is, with a warning, so locked installs stay reproducible.
//
//   auto plan = resolveInstall(index, {{"acme/hello", range}}, lock, thisHost(), {});
//   for (const auto& p : plan->packages) ...   // dependencies before dependents
#pragma once

#include <optional>
#include <set>
#include <string>
#include <vector>

#include "cli/install/lock_file.h"
#include "trellis/kernel/plugin/manifest.h"
#include "trellis/kernel/plugin/semver.h"
#include "trellis/marketplace/index.h"

namespace trellis::cli::install {

struct HostFacts {
  kernel::plugin::Version version;  // trellisd's
  uint32_t abi_major = 0, abi_minor = 0;
  std::string platform;  // "linux-x86_64"
};
HostFacts thisHost();

// Why a package with this summary cannot run on `host`, or nullopt if it can:
// "needs plugin ABI 2.0, this host speaks 1.1", "has no build for linux-x86_64 (has:
// linux-aarch64)", "needs trellisd >=2.0.0, this is 0.1.0".
std::optional<std::string> unfitReason(const std::string& runtime,
                                       std::optional<std::pair<uint32_t, uint32_t>> abi,
                                       const std::string& host_range,
                                       const std::vector<std::string>& platforms,
                                       const HostFacts& host);
// The same check on an archive's own manifest (the index summary is only a summary).
std::optional<std::string> unfitReason(const kernel::plugin::Manifest& m, const HostFacts& host);

struct InstallRequest {
  std::string id;
  std::optional<kernel::plugin::VersionRange> range;  // none: any (the locked one if locked)
};
// "acme/hello", "acme/hello@^1.2" -> InstallRequest; INVALID names what is wrong.
Result<InstallRequest> parseInstallRequest(const std::string& text);

struct PlannedPackage {
  std::string id;
  std::string version;
  marketplace::PackageRecord record;
  enum class Action { kInstall, kUpgrade, kKeep } action = Action::kInstall;
  std::string replaces;  // kUpgrade: the installed version
  bool requested = false;
};

struct InstallPlan {
  std::vector<PlannedPackage> packages;  // dependencies first
  std::vector<std::string> warnings;     // e.g. a locked version that is yanked
};

// `upgrade`: ids whose locked version is not preferred (the newest fitting one is chosen).
Result<InstallPlan> resolveInstall(const marketplace::Index& index,
                                   const std::vector<InstallRequest>& requests,
                                   const LockFile& lock, const HostFacts& host,
                                   const std::set<std::string>& upgrade);

}  // namespace trellis::cli::install
