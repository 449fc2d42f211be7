#include "cli/install/resolve.h"

#include <algorithm>
#include <map>

#include "trellis/kernel/plugin/resolver.h"
#include "trellis/plugin.h"

namespace trellis::cli::install {
using kernel::plugin::Version;
using kernel::plugin::VersionRange;
using marketplace::PackageRecord;

namespace {

struct Constraint {
  std::optional<VersionRange> range;  // none: any version
  std::string by;                     // "requested", "acme/a@1.0.0", "acme/a@1.0.0 (installed)"
};

std::string rangeText(const Constraint& c) {
  return c.range ? c.range->text() : "*";
}

std::string describe(const std::vector<Constraint>& cons) {
  std::string out;
  for (const auto& c : cons) {
    out += (out.empty() ? "" : " and ") + rangeText(c) +
           (c.by == "requested" ? " (requested)" : " (required by " + c.by + ")");
  }
  return out;
}

std::string joined(const std::vector<std::string>& parts, const char* sep) {
  std::string out;
  for (const auto& p : parts) out += (out.empty() ? "" : sep) + p;
  return out;
}

bool satisfies(const Version& v, const std::vector<Constraint>& cons) {
  return std::all_of(cons.begin(), cons.end(),
                     [&](const Constraint& c) { return !c.range || c.range->contains(v); });
}

class Resolver {
 public:
  Resolver(const marketplace::Index& index, const LockFile& lock, const HostFacts& host,
           const std::set<std::string>& upgrade)
      : index_(index), lock_(lock), host_(host), upgrade_(upgrade) {}

  // The version of `id` to install under `cons`, or why there is none.
  Result<std::string> pick(const std::string& id, const std::vector<Constraint>& cons) {
    auto pit = index_.packages.find(id);
    if (pit == index_.packages.end()) {
      return Status::notFound(id + " is not in the index" +
                              (cons.empty() ? "" : " (needed as " + describe(cons) + ")"));
    }
    std::vector<std::pair<Version, const std::string*>> versions;
    std::vector<std::string> available;
    for (const auto& [text, rec] : pit->second) {
      if (auto v = Version::parse(text)) versions.emplace_back(*v, &text);
      available.push_back(text);
    }
    std::sort(versions.begin(), versions.end(),
              [](const auto& a, const auto& b) { return b.first < a.first; });

    // The locked version first: reproducible installs, even of a version yanked since.
    auto locked = lock_.packages.find(id);
    if (locked != lock_.packages.end() && !upgrade_.count(id)) {
      for (const auto& [v, text] : versions) {
        if (*text != locked->second.version || !satisfies(v, cons)) continue;
        const PackageRecord& rec = pit->second.at(*text);
        if (unfit(rec)) break;
        if (rec.yanked) {
          warnings_[id] = id + "@" + *text + " is yanked" +
                          (rec.yanked_reason.empty() ? "" : " (" + rec.yanked_reason + ")") +
                          "; installing it because plugins.lock names it";
        }
        return *text;
      }
    }
    std::vector<std::string> skipped;
    bool any_matches = false;
    for (const auto& [v, text] : versions) {
      if (!satisfies(v, cons)) continue;
      any_matches = true;
      const PackageRecord& rec = pit->second.at(*text);
      if (rec.yanked) {
        skipped.push_back(*text + " is yanked" +
                          (rec.yanked_reason.empty() ? "" : " (" + rec.yanked_reason + ")"));
      } else if (auto why = unfit(rec)) {
        skipped.push_back(*text + " " + *why);
      } else {
        return *text;
      }
    }
    const std::string have = " (available: " + joined(available, ", ") + ")";
    if (any_matches) {
      return Status::notFound("no installable version of " + id + " matches " + describe(cons) +
                              ": " + joined(skipped, "; "));
    }
    if (cons.size() > 1) {
      return Status::conflict("dependency conflict on " + id + ": " + describe(cons) +
                              ", and no version satisfies them all" + have);
    }
    return Status::notFound("no version of " + id + " matches " + describe(cons) + have);
  }

  std::optional<std::string> unfit(const PackageRecord& rec) const {
    return unfitReason(rec.runtime, rec.abi, rec.host, rec.platforms, host_);
  }

  std::map<std::string, std::string> warnings_;  // id -> warning for the chosen version

 private:
  const marketplace::Index& index_;
  const LockFile& lock_;
  const HostFacts& host_;
  const std::set<std::string>& upgrade_;
};

// Adds the dependencies of id@version (from its index record) as constraints.
Status addDependencies(const std::map<std::string, std::string>& deps, const std::string& by,
                       std::map<std::string, std::vector<Constraint>>& cons) {
  for (const auto& [dep, text] : deps) {
    auto range = VersionRange::parse(text);
    if (!range) {
      return Status::invalid(by + " requires " + dep + " \"" + text +
                             "\", which is not a valid range");
    }
    cons[dep].push_back({std::move(*range), by});
  }
  return Status::ok();
}

}  // namespace

HostFacts thisHost() {
  HostFacts h;
  h.version = Version::parse(TRELLIS_VERSION).value();
  h.abi_major = TRELLIS_ABI_MAJOR;
  h.abi_minor = TRELLIS_ABI_MINOR;
  h.platform = kernel::plugin::currentPlatform();
  return h;
}

std::optional<std::string> unfitReason(const std::string& runtime,
                                       std::optional<std::pair<uint32_t, uint32_t>> abi,
                                       const std::string& host_range,
                                       const std::vector<std::string>& platforms,
                                       const HostFacts& host) {
  const std::string platform = runtime == "lua" ? "lua" : host.platform;
  if (runtime != "lua") {
    if (!abi) return "declares no plugin ABI";
    if (abi->first != host.abi_major || abi->second > host.abi_minor) {
      return "needs plugin ABI " + std::to_string(abi->first) + "." + std::to_string(abi->second) +
             ", this host speaks " + std::to_string(host.abi_major) + "." +
             std::to_string(host.abi_minor);
    }
  }
  if (std::find(platforms.begin(), platforms.end(), platform) == platforms.end()) {
    return "has no build for " + platform + " (has: " + joined(platforms, ", ") + ")";
  }
  if (!host_range.empty()) {
    auto range = VersionRange::parse(host_range);
    if (!range) return "declares an invalid trellisd range \"" + host_range + "\"";
    if (!range->contains(host.version)) {
      return "needs trellisd " + host_range + ", this is " + host.version.toString();
    }
  }
  return std::nullopt;
}

std::optional<std::string> unfitReason(const kernel::plugin::Manifest& m, const HostFacts& host) {
  std::vector<std::string> platforms;
  for (const auto& [platform, file] : m.entry) platforms.push_back(platform);
  std::optional<std::pair<uint32_t, uint32_t>> abi;
  if (m.runtime != "lua") abi = {{m.abi_major, m.abi_minor}};
  return unfitReason(m.runtime, abi, m.host ? m.host->text() : "", platforms, host);
}

Result<InstallRequest> parseInstallRequest(const std::string& text) {
  InstallRequest r;
  auto at = text.find('@');
  r.id = text.substr(0, at);
  if (!kernel::plugin::isValidPluginId(r.id)) {
    return Status::invalid("\"" + r.id + "\" is not a plugin id (namespace/name)");
  }
  if (at != std::string::npos) {
    auto range = VersionRange::parse(text.substr(at + 1));
    if (!range) return Status::invalid(text + ": " + range.status().message());
    r.range = std::move(*range);
  }
  return r;
}

Result<InstallPlan> resolveInstall(const marketplace::Index& index,
                                   const std::vector<InstallRequest>& requests,
                                   const LockFile& lock, const HostFacts& host,
                                   const std::set<std::string>& upgrade) {
  InstallPlan plan;
  Resolver resolver(index, lock, host, upgrade);
  std::set<std::string> requested;
  for (const auto& r : requests) requested.insert(r.id);

  // Fixpoint: constraints come from the requests, the dependencies of the versions chosen
  // in the previous round and those of installed packages outside the choice (which stay
  // as they are); stop when a round chooses what the previous one did.
  std::map<std::string, std::string> chosen;
  for (int round = 0;; ++round) {
    if (round == 64) return Status::conflict("dependency resolution did not settle");
    std::map<std::string, std::vector<Constraint>> cons;
    for (const auto& r : requests) cons[r.id].push_back({r.range, "requested"});
    for (const auto& [id, version] : chosen) {
      const auto& rec = index.packages.at(id).at(version);
      if (Status s = addDependencies(rec.dependencies, id + "@" + version, cons); !s) return s;
    }
    for (const auto& [id, lp] : lock.packages) {
      if (chosen.count(id) || requested.count(id)) continue;
      if (Status s = addDependencies(lp.dependencies, id + "@" + lp.version + " (installed)", cons);
          !s) {
        return s;
      }
    }
    std::set<std::string> needed = requested;
    for (const auto& [id, version] : chosen) {
      for (const auto& [dep, range] : index.packages.at(id).at(version).dependencies) {
        needed.insert(dep);
      }
    }
    std::map<std::string, std::string> next;
    for (const auto& id : needed) {
      auto v = resolver.pick(id, cons[id]);
      if (!v) return v.status();
      next[id] = *v;
    }
    // An installed package outside the choice must still accept what was chosen.
    for (const auto& [id, version] : next) {
      auto lit = lock.packages.find(id);
      if (lit != lock.packages.end() && lit->second.version == version) continue;
      for (const auto& c : cons[id]) {
        if (c.range && !c.range->contains(Version::parse(version).value())) {
          return Status::conflict("dependency conflict on " + id + ": " + describe(cons[id]) +
                                  ", and no version satisfies them all");
        }
      }
    }
    if (next == chosen) break;
    chosen = std::move(next);
  }

  // Dependencies first; the kernel's resolver names cycles.
  std::map<std::string, kernel::plugin::Manifest> graph;
  for (const auto& [id, version] : chosen) {
    kernel::plugin::Manifest m;
    m.id = id;
    m.version = Version::parse(version).value();
    for (const auto& [dep, range] : index.packages.at(id).at(version).dependencies) {
      m.dependencies.push_back({dep, VersionRange::parse(range).value()});
    }
    graph.emplace(id, std::move(m));
  }
  auto order = kernel::plugin::resolveStartOrder(graph);
  if (!order.refused.empty()) {
    return Status::conflict(order.refused.begin()->first + ": " + order.refused.begin()->second);
  }
  for (const auto& id : order.order) {
    PlannedPackage p;
    p.id = id;
    p.version = chosen.at(id);
    p.record = index.packages.at(id).at(p.version);
    p.requested = requested.count(id) > 0;
    if (auto lit = lock.packages.find(id); lit != lock.packages.end()) {
      p.requested = p.requested || lit->second.requested;
      if (lit->second.version == p.version) {
        if (!lit->second.sha256.empty() && lit->second.sha256 != p.record.sha256) {
          return Status::permissionDenied(id + "@" + p.version +
                                          ": the index names archive sha256 " + p.record.sha256 +
                                          " but plugins.lock recorded " + lit->second.sha256 +
                                          " (the same version must never change)");
        }
        p.action = PlannedPackage::Action::kKeep;
      } else {
        p.action = PlannedPackage::Action::kUpgrade;
        p.replaces = lit->second.version;
      }
    }
    if (auto w = resolver.warnings_.find(id); w != resolver.warnings_.end()) {
      plan.warnings.push_back(w->second);
    }
    plan.packages.push_back(std::move(p));
  }
  return plan;
}

}  // namespace trellis::cli::install
