#include "cli/install/outdated.h"

#include <algorithm>

#include "trellis/kernel/plugin/semver.h"

namespace trellis::cli::install {
namespace {

using kernel::plugin::Version;
using kernel::plugin::VersionRange;

// Why `version` of `id` cannot replace the locked one, or "" if nothing holds it back.
std::string reasonHeldBack(const marketplace::Index& index, const LockFile& lock,
                           const HostFacts& host, const std::string& id, const std::string& version,
                           const marketplace::PackageRecord& rec) {
  if (rec.yanked) {
    return "yanked" + (rec.yanked_reason.empty() ? "" : " (" + rec.yanked_reason + ")");
  }
  if (auto unfit = unfitReason(rec.runtime, rec.abi, rec.host, rec.platforms, host)) return *unfit;
  const auto v = Version::parse(version);
  if (!v) return "not a semantic version";
  // Installed packages that depend on it, and the ranges they accept.
  std::vector<std::string> excluded_by;
  for (const auto& [other, lp] : lock.packages) {
    auto dep = lp.dependencies.find(id);
    if (dep == lp.dependencies.end()) continue;
    auto range = VersionRange::parse(dep->second);
    if (range && !range->contains(*v)) {
      excluded_by.push_back(other + "@" + lp.version + " requires " + dep->second);
    }
  }
  if (!excluded_by.empty()) {
    std::string out;
    for (const auto& e : excluded_by) out += (out.empty() ? "" : "; ") + e;
    return out;
  }
  // Its own dependencies, against everything else installed: what the resolver says.
  auto exact = VersionRange::parse("=" + version);
  if (!exact) return exact.status().message();
  auto plan = resolveInstall(index, {{id, *exact}}, lock, host, {id});
  return plan ? "" : plan.status().message();
}

}  // namespace

std::vector<OutdatedRow> outdatedReport(const marketplace::Index& index, const LockFile& lock,
                                        const HostFacts& host) {
  std::vector<OutdatedRow> rows;
  for (const auto& [id, locked] : lock.packages) {
    OutdatedRow row;
    row.id = id;
    row.locked = locked.version;
    row.newest_allowed = locked.version;
    auto pit = index.packages.find(id);
    if (pit == index.packages.end()) {
      rows.push_back(std::move(row));
      continue;
    }
    std::vector<std::pair<Version, std::string>> versions;
    for (const auto& [text, rec] : pit->second) {
      if (auto v = Version::parse(text)) versions.emplace_back(*v, text);
    }
    std::sort(versions.begin(), versions.end(),
              [](const auto& a, const auto& b) { return b.first < a.first; });
    if (!versions.empty()) row.newest_available = versions.front().second;
    const auto current = Version::parse(locked.version);
    // Newest first: the first version nothing holds back is the newest allowed.
    for (const auto& [v, text] : versions) {
      if (current && !(*current < v)) break;
      std::string reason = reasonHeldBack(index, lock, host, id, text, pit->second.at(text));
      if (reason.empty()) {
        row.newest_allowed = text;
        break;
      }
      row.held_back.push_back({text, std::move(reason)});
    }
    rows.push_back(std::move(row));
  }
  return rows;
}

}  // namespace trellis::cli::install
