#include "cli/plugin_commands.h"

#include <Poco/JSON/Array.h>
#include <Poco/JSON/Object.h>
#include <unistd.h>

#include <ctime>
#include <filesystem>
#include <fstream>
#include <iostream>
#include <memory>
#include <optional>
#include <set>
#include <sstream>

#include "cli/install/installer.h"
#include "cli/install/lock_file.h"
#include "cli/install/outdated.h"
#include "cli/install/resolve.h"
#include "cli/install/source.h"
#include "cli/install/transaction.h"
#include "cli/install/trust.h"
#include "cli/output.h"
#include "trellis/kernel/config/config.h"

namespace trellis::cli {
namespace {

namespace fs = std::filesystem;
using install::FetchedPackage;
using install::InstallPlan;
using install::LockFile;
using install::PlannedPackage;
using install::Source;

[[noreturn]] void fail(const Status& s) {
  AdminClient::die(s.message());
}

std::string joined(const std::vector<std::string>& parts, const char* sep = ", ") {
  std::string out;
  for (const auto& p : parts) out += (out.empty() ? "" : sep) + p;
  return out;
}

std::string humanBytes(uint64_t n) {
  char buf[32];
  if (n < 1024) {
    std::snprintf(buf, sizeof buf, "%llu B", static_cast<unsigned long long>(n));
  } else if (n < (1u << 20)) {
    std::snprintf(buf, sizeof buf, "%.1f KiB", static_cast<double>(n) / 1024);
  } else {
    std::snprintf(buf, sizeof buf, "%.1f MiB", static_cast<double>(n) / (1 << 20));
  }
  return buf;
}

// Progress on stderr: a line redrawn in place on a terminal, one line at the end otherwise.
install::ProgressFn progressLine(const std::string& what) {
  if (!::isatty(STDERR_FILENO)) return {};
  return [what](uint64_t done, uint64_t total) {
    std::fprintf(stderr, "\r  downloading %s  %s / %s ", what.c_str(), humanBytes(done).c_str(),
                 humanBytes(total).c_str());
    if (done >= total) std::fprintf(stderr, "\n");
  };
}

bool confirmed(const std::string& question) {
  if (!::isatty(STDIN_FILENO)) return false;
  std::printf("%s [y/N] ", question.c_str());
  std::fflush(stdout);
  std::string answer;
  std::getline(std::cin, answer);
  return answer == "y" || answer == "Y" || answer == "yes";
}

std::string jsonText(const Poco::JSON::Object& o) {
  std::ostringstream out;
  o.stringify(out);
  return out.str();
}

// Where things are: from the flags, else from trellis.yaml, else defaults under var/.
struct Paths {
  fs::path plugin_dir;
  fs::path lock_file;
  fs::path state_dir;
  std::vector<std::string> enabled;  // plugins.enabled in trellis.yaml
};

}  // namespace

PluginCommands::PluginCommands(CLI::App& app, CLI::App& plugin, const AdminClient& admin)
    : admin_(admin) {
  if (const char* env = std::getenv("TRELLIS_REGISTRY"); env && *env) registry_ = env;
  auto addConfig = [&](CLI::App* c) {
    if (c->get_option_no_throw("--config")) return;
    c->add_option("--config", config_file_,
                  "trellis.yaml: plugins.dirs[0] is the plugin folder, the trust store is beside "
                  "storage.data_dir (default config/trellis.yaml)");
  };
  auto withSource = [&](CLI::App* c) {
    addConfig(c);
    c->add_option("--from", from_dir_,
                  "A mirror: a folder (trellis mirror export) or its http:// URL");
    c->add_option("--registry", registry_,
                  "A Trellis registry: its trellisd URL (env TRELLIS_REGISTRY)");
    c->add_option("--registry-key-file", registry_key_file_,
                  "File holding the registry tenant's key (or env TRELLIS_REGISTRY_KEY)");
    c->add_option("--state-dir", state_dir_,
                  "Trust store: pinned root.json and last index version (default: "
                  "var/marketplace beside the data dir)");
    c->add_option("--root", root_file_, "Pin this root.json on first use instead of the source's");
    c->add_option("--download-timeout", download_timeout_s_,
                  "Seconds one HTTP download may take in all (default 600)")
        ->check(CLI::Range(1, 24 * 3600));
    return c;
  };
  auto withTarget = [&](CLI::App* c) {
    addConfig(c);
    c->add_option("--plugin-dir", plugin_dir_, "Plugin folder to install into");
    c->add_option("--lock", lock_file_, "Lock file (default: PLUGIN_DIR/plugins.lock)");
    c->add_flag("--yes,-y", yes_, "Do not ask for confirmation");
    c->add_flag("--offline", offline_,
                "Do not contact trellisd: no on_plugin_install policy, no hot activation");
    return c;
  };
  search_ = withSource(plugin.add_subcommand("search", "Search the registry's index"));
  search_->add_option("text", id_, "Part of a plugin id");
  info_ = withSource(plugin.add_subcommand("info", "Show every version of a plugin"));
  info_->add_option("id", id_, "Plugin id (namespace/name)")->required();
  install_ = withTarget(withSource(plugin.add_subcommand(
      "install", "Install plugins and their dependencies (none given: the plugins.lock set)")));
  install_->add_option("plugins", args_, "namespace/name[@RANGE]");
  upgrade_ = withTarget(withSource(plugin.add_subcommand(
      "upgrade", "Upgrade installed plugins to the newest fitting versions")));
  upgrade_->add_option("plugins", args_, "namespace/name[@RANGE] (none: all requested ones)");
  remove_ =
      withTarget(plugin.add_subcommand("remove", "Deactivate and remove an installed plugin"));
  remove_->add_option("id", id_, "Plugin id")->required();
  activate_ = plugin.add_subcommand("activate", "Load an installed plugin into trellisd now");
  activate_->add_option("id", id_, "Plugin id")->required();
  activate_
      ->add_option("--isolation", isolation_,
                   "Run it in this mode from now on: the new instance starts, routes move, the "
                   "old one drains. Holds until trellisd restarts (trellis.yaml sets it at start)")
      ->check(CLI::IsMember({"process", "in-process"}));
  activate_
      ->add_option("--dedicated-tenant", dedicated_tenants_,
                   "With --isolation process: a tenant that gets a worker of its own (repeat)")
      ->needs("--isolation");

  outdated_ = withSource(plugin.add_subcommand(
      "outdated",
      "Installed, locked, newest allowed and newest available versions, and why "
      "newer ones are held back"));
  outdated_->add_option("--plugin-dir", plugin_dir_, "Plugin folder (its plugins.lock)");
  outdated_->add_option("--lock", lock_file_, "Lock file (default: PLUGIN_DIR/plugins.lock)");
  outdated_->add_flag("--offline", offline_, "Do not ask trellisd which versions it serves");

  auto* mirror = app.add_subcommand("mirror", "Mirrors for air-gapped sites");
  mirror->require_subcommand(1);
  export_ = withSource(mirror->add_subcommand(
      "export", "Copy the verified metadata and every archive into a new folder"));
  export_->add_option("dir", out_dir_, "Folder to create")->required();
}

bool PluginCommands::run() {
  // A registry and its key from the profile when neither flag nor environment names one.
  if (registry_.empty() && from_dir_.empty() && admin_.settings) {
    registry_ = admin_.settings->registryUrl();
  }
  if (search_->parsed()) {
    search();
  } else if (info_->parsed()) {
    info();
  } else if (install_->parsed()) {
    install(false);
  } else if (upgrade_->parsed()) {
    install(true);
  } else if (remove_->parsed()) {
    remove();
  } else if (activate_->parsed()) {
    activate();
  } else if (export_->parsed()) {
    mirrorExport();
  } else if (outdated_->parsed()) {
    outdated();
  } else {
    return false;
  }
  return true;
}

namespace {

struct Session {
  std::unique_ptr<Source> source;
  std::optional<marketplace::VerifiedIndex> index;
  install::MetadataFiles files;
};

std::optional<kernel::config::Config> loadConfig(const std::string& flag) {
  fs::path file = flag.empty() ? fs::path("config/trellis.yaml") : fs::path(flag);
  std::error_code ec;
  if (flag.empty() && !fs::exists(file, ec)) return std::nullopt;
  try {
    return kernel::config::Config::load(file);
  } catch (const std::exception& e) {
    AdminClient::die(e.what());
  }
}

Paths resolvePaths(const std::string& config_flag, const std::string& plugin_dir,
                   const std::string& lock, const std::string& state_dir) {
  Paths p;
  auto cfg = loadConfig(config_flag);
  if (!plugin_dir.empty()) {
    p.plugin_dir = plugin_dir;
  } else if (cfg && !cfg->plugin_dirs.empty()) {
    p.plugin_dir = cfg->plugin_dirs.front();
  } else {
    AdminClient::die(
        "no plugin folder: pass --plugin-dir, or --config with plugins.dirs set (the first "
        "entry is where plugins are installed)");
  }
  p.lock_file = lock.empty() ? p.plugin_dir / "plugins.lock" : fs::path(lock);
  if (!state_dir.empty()) {
    p.state_dir = state_dir;
  } else if (cfg && !cfg->data_dir.empty()) {
    p.state_dir = cfg->data_dir.parent_path() / "marketplace";
  } else {
    p.state_dir = "var/marketplace";
  }
  if (cfg) {
    for (const auto& e : cfg->plugins) p.enabled.push_back(e.id);
  }
  return p;
}

// The registry tenant's key: TRELLIS_REGISTRY_KEY, or the first line of a file (kept out of
// argv, where other users could read it).
std::string registryKey(const std::string& file, const std::string& fallback) {
  if (!file.empty()) {
    std::ifstream in(file);
    std::string key;
    if (!std::getline(in, key) || key.empty()) {
      AdminClient::die("--registry-key-file " + file + ": no key in it");
    }
    return key;
  }
  if (const char* env = std::getenv("TRELLIS_REGISTRY_KEY"); env && *env) return env;
  return fallback;
}

Session openSession(const std::string& from, const std::string& registry,
                    const std::string& registry_key_file, const std::string& profile_key,
                    const fs::path& state_dir, const std::string& root_file,
                    int download_timeout_s) {
  Session s;
  install::HttpTimeouts timeouts;
  timeouts.total = std::chrono::seconds(download_timeout_s);
  if (!from.empty() && !registry.empty()) AdminClient::die("pass --from or --registry, not both");
  if (from.rfind("http://", 0) == 0 || from.rfind("https://", 0) == 0) {
    auto src = install::httpMirrorSource(from, timeouts);
    if (!src) fail(src.status());
    s.source = std::move(*src);
  } else if (!from.empty()) {
    std::error_code ec;
    if (!fs::is_directory(from, ec)) AdminClient::die("--from " + from + ": not a folder");
    s.source = install::directorySource(from);
  } else if (!registry.empty()) {
    auto src =
        install::registrySource(registry, registryKey(registry_key_file, profile_key), timeouts);
    if (!src) fail(src.status());
    s.source = std::move(*src);
  } else {
    AdminClient::die("where from? pass --registry URL (or set TRELLIS_REGISTRY) or --from DIR");
  }
  install::TrustStore trust(state_dir);
  std::vector<std::string> notices;
  std::optional<fs::path> root;
  if (!root_file.empty()) root = fs::path(root_file);
  auto index = trust.refresh(*s.source, static_cast<marketplace::UnixSeconds>(std::time(nullptr)),
                             root, &notices, &s.files);
  for (const auto& n : notices) std::fprintf(stderr, "trellis: %s\n", n.c_str());
  if (!index) {
    // A source that cannot be reached (down, or its TLS certificate refused) is exit 3.
    if (index.status().code() == StatusCode::kUnavailable) {
      AdminClient::die(s.source->describe() + ": " + index.status().message(), kExitUnreachable);
    }
    AdminClient::die(s.source->describe() + ": refused the index: " + index.status().message());
  }
  s.index = std::move(*index);
  return s;
}

fs::path defaultStateDir(const std::string& flag, const std::string& config_flag) {
  if (!flag.empty()) return flag;
  auto cfg = loadConfig(config_flag);
  if (cfg && !cfg->data_dir.empty()) return cfg->data_dir.parent_path() / "marketplace";
  return "var/marketplace";
}

const char* actionName(PlannedPackage::Action a) {
  switch (a) {
    case PlannedPackage::Action::kInstall: return "install";
    case PlannedPackage::Action::kUpgrade: return "upgrade";
    case PlannedPackage::Action::kKeep: return "keep";
  }
  return "?";
}

// Undoes or finishes what an interrupted run left (transaction.h), and brings a running
// trellisd back to the lock's versions of the plugins whose uncommitted folders went.
void tidyInterrupted(const Paths& paths, LockFile& lock, const AdminClient& admin, bool offline) {
  auto undone = install::recoverInterrupted(paths.plugin_dir, lock, paths.lock_file);
  if (!undone) {
    AdminClient::die("cannot tidy up after an interrupted run: " + undone.status().message() +
                     "; nothing was changed");
  }
  for (const auto& id : *undone) {
    std::fprintf(stderr, "trellis: removed a folder of %s that an interrupted run left\n",
                 id.c_str());
    if (offline) continue;
    auto locked = lock.packages.find(id);
    if (locked != lock.packages.end()) {
      (void)admin.tryCall("POST", "/v1/plugins/" + id + "/activate",
                          "{\"version\":\"" + locked->second.version + "\"}");
    } else {
      (void)admin.tryCall("POST", "/v1/plugins/" + id + "/deactivate");
    }
  }
}

// After a failed commit: trellisd goes back to what it served before this run, in reverse
// order (dependents before their dependencies).
void rollBack(const AdminClient& admin, const std::vector<const PlannedPackage*>& activated) {
  for (auto it = activated.rbegin(); it != activated.rend(); ++it) {
    const PlannedPackage& p = **it;
    if (p.action == PlannedPackage::Action::kUpgrade) {
      (void)admin.tryCall("POST", "/v1/plugins/" + p.id + "/activate",
                          "{\"version\":\"" + p.replaces + "\"}");
    } else if (p.action == PlannedPackage::Action::kInstall) {
      (void)admin.tryCall("POST", "/v1/plugins/" + p.id + "/deactivate");
    }
  }
}

}  // namespace

void PluginCommands::search() {
  Session s =
      openSession(from_dir_, registry_, registry_key_file_, profileRegistryKey(),
                  defaultStateDir(state_dir_, config_file_), root_file_, download_timeout_s_);
  const auto host = install::thisHost();
  std::printf("%-32s %-12s %-24s %s\n", "PLUGIN", "LATEST", "PLATFORMS", "CAPABILITIES");
  size_t shown = 0;
  for (const auto& [id, versions] : s.index->index().packages) {
    if (!id_.empty() && id.find(id_) == std::string::npos) continue;
    // The newest version that is not yanked and runs here, else the newest at all.
    const std::string* best = nullptr;
    kernel::plugin::Version best_v;
    for (const auto& [text, rec] : versions) {
      auto v = kernel::plugin::Version::parse(text);
      if (!v || rec.yanked) continue;
      if (install::unfitReason(rec.runtime, rec.abi, rec.host, rec.platforms, host)) continue;
      if (!best || best_v < *v) best = &text, best_v = *v;
    }
    if (!best) {
      std::printf("%-32s %-12s (no version runs on this host)\n", id.c_str(), "-");
    } else {
      const auto& rec = versions.at(*best);
      std::printf("%-32s %-12s %-24s %s\n", id.c_str(), best->c_str(),
                  joined(rec.platforms, ",").c_str(), joined(rec.capabilities).c_str());
    }
    ++shown;
  }
  if (shown == 0) std::printf("(no plugin matches \"%s\")\n", id_.c_str());
}

void PluginCommands::info() {
  Session s =
      openSession(from_dir_, registry_, registry_key_file_, profileRegistryKey(),
                  defaultStateDir(state_dir_, config_file_), root_file_, download_timeout_s_);
  auto it = s.index->index().packages.find(id_);
  if (it == s.index->index().packages.end()) AdminClient::die(id_ + " is not in the index");
  const auto host = install::thisHost();
  std::printf("%s (index version %llu, %s)\n", id_.c_str(),
              static_cast<unsigned long long>(s.index->version()), s.source->describe().c_str());
  for (const auto& [version, rec] : it->second) {
    std::printf("  %s%s\n", version.c_str(),
                rec.yanked ? (" (yanked" +
                              (rec.yanked_reason.empty() ? "" : ": " + rec.yanked_reason) + ")")
                                 .c_str()
                           : "");
    std::printf(
        "    runtime %s, ABI %s, trellisd %s, platforms %s\n", rec.runtime.c_str(),
        rec.abi ? (std::to_string(rec.abi->first) + "." + std::to_string(rec.abi->second)).c_str()
                : "-",
        rec.host.empty() ? "any" : rec.host.c_str(), joined(rec.platforms).c_str());
    std::string deps;
    for (const auto& [d, r] : rec.dependencies) deps += (deps.empty() ? "" : ", ") + d + " " + r;
    std::printf("    capabilities: %s\n",
                rec.capabilities.empty() ? "(none)" : joined(rec.capabilities).c_str());
    std::printf("    dependencies: %s\n", deps.empty() ? "(none)" : deps.c_str());
    std::printf("    signed by key %s, published %lld, %s, sha256 %s\n", rec.keyid.c_str(),
                static_cast<long long>(rec.published), humanBytes(rec.length).c_str(),
                rec.sha256.c_str());
    if (auto why = install::unfitReason(rec.runtime, rec.abi, rec.host, rec.platforms, host)) {
      std::printf("    cannot run here: it %s\n", why->c_str());
    }
  }
}

void PluginCommands::install(bool upgrade) {
  const Paths paths = resolvePaths(config_file_, plugin_dir_, lock_file_, state_dir_);
  auto held = install::lockPluginDir(paths.plugin_dir);
  if (!held) fail(held.status());
  auto lock = LockFile::load(paths.lock_file);
  if (!lock) fail(lock.status());
  tidyInterrupted(paths, *lock, admin_, offline_);
  Session s = openSession(from_dir_, registry_, registry_key_file_, profileRegistryKey(),
                          paths.state_dir, root_file_, download_timeout_s_);

  if (Status st = install::checkPublisherRoots(s.index->index(), *lock); !st) {
    AdminClient::die(st.message() + "; nothing was installed");
  }

  std::vector<install::InstallRequest> requests;
  std::set<std::string> upgrading;
  for (const auto& a : args_) {
    auto r = install::parseInstallRequest(a);
    if (!r) fail(r.status());
    if (upgrade && !lock->packages.count(r->id)) {
      AdminClient::die(r->id + " is not installed (see " + paths.lock_file.string() +
                       "); use trellis plugin install");
    }
    if (upgrade) upgrading.insert(r->id);
    requests.push_back(std::move(*r));
  }
  if (args_.empty()) {
    // install: the locked set, exactly; upgrade: every package asked for by name.
    for (const auto& [id, lp] : lock->packages) {
      if (upgrade && !lp.requested) continue;
      install::InstallRequest r{id, std::nullopt};
      if (!upgrade) r.range = kernel::plugin::VersionRange::parse("=" + lp.version).value();
      if (upgrade) upgrading.insert(id);
      requests.push_back(std::move(r));
    }
    if (requests.empty()) {
      AdminClient::die(upgrade ? "nothing is installed to upgrade"
                               : "name a plugin to install (namespace/name[@RANGE]); " +
                                     paths.lock_file.string() + " lists nothing");
    }
  }
  // Upgrading a package also lets its installed dependencies move within their ranges.
  if (upgrade) {
    for (const auto& [id, lp] : lock->packages) {
      if (!lp.requested) upgrading.insert(id);
    }
  }
  auto plan =
      install::resolveInstall(s.index->index(), requests, *lock, install::thisHost(), upgrading);
  if (!plan) AdminClient::die("cannot install: " + plan.status().message());

  // What changes: new, changed, and locked packages whose folder has gone missing.
  std::vector<const PlannedPackage*> work;
  for (const auto& p : plan->packages) {
    std::error_code ec;
    bool present = fs::exists(paths.plugin_dir / install::packageDirName(p.id, p.version), ec);
    if (p.action != PlannedPackage::Action::kKeep || !present) work.push_back(&p);
  }
  for (const auto& w : plan->warnings) std::fprintf(stderr, "trellis: warning: %s\n", w.c_str());
  if (work.empty()) {
    std::printf("nothing to do: everything is installed (%s)\n", paths.lock_file.c_str());
    return;
  }
  std::printf("from %s (index version %llu), into %s:\n", s.source->describe().c_str(),
              static_cast<unsigned long long>(s.index->version()), paths.plugin_dir.c_str());
  for (const PlannedPackage* p : work) {
    std::string what = p->action == PlannedPackage::Action::kUpgrade
                           ? p->replaces + " -> " + p->version
                           : p->version;
    std::printf("  %-8s %s %s  (%s, signed by %s)\n", actionName(p->action), p->id.c_str(),
                what.c_str(), humanBytes(p->record.length).c_str(), p->record.keyid.c_str());
    std::printf("           capabilities: %s\n",
                p->record.capabilities.empty() ? "(none)" : joined(p->record.capabilities).c_str());
  }
  if (!yes_ && !confirmed("Install these plugins with these capabilities?")) {
    AdminClient::die("not confirmed; nothing was installed (pass --yes in scripts)");
  }

  // The admin's on_plugin_install policy runs in trellisd (admin API), before anything is
  // downloaded or written.
  bool reachable = !offline_;
  if (!offline_) {
    for (const PlannedPackage* p : work) {
      Poco::JSON::Object body;
      body.set("id", p->id);
      body.set("version", p->version);
      body.set("publisher", p->record.keyid);
      body.set("source", s.source->describe());
      Poco::JSON::Array::Ptr caps = new Poco::JSON::Array;
      for (const auto& c : p->record.capabilities) caps->add(c);
      body.set("capabilities", caps);
      auto answer = admin_.tryCall("POST", "/v1/plugins/install-check", jsonText(body));
      if (!answer) {
        AdminClient::die("cannot reach trellisd at " + admin_.baseUrl() +
                         " to run the on_plugin_install policy; nothing was installed (pass "
                         "--offline to install without it, then restart trellisd)");
      }
      if (answer->status != 200) {
        AdminClient::die("the install policy refused " + p->id + "@" + p->version + ": " +
                         AdminClient::problemDetail(answer->status, answer->body) +
                         "; nothing was installed");
      }
    }
  }

  // Download and verify everything before the plugin folder is touched.
  std::vector<FetchedPackage> fetched;
  fetched.reserve(work.size());
  const auto host = install::thisHost();
  for (const PlannedPackage* p : work) {
    auto pkg = install::fetchVerified(*s.source, *s.index, p->id, p->version, host,
                                      progressLine(p->id + "@" + p->version));
    if (!pkg) AdminClient::die("refused " + pkg.status().message() + "; nothing was installed");
    std::fprintf(stderr, "  verified %s@%s (%s, signed by %s)\n", p->id.c_str(), p->version.c_str(),
                 humanBytes(p->record.length).c_str(), p->record.keyid.c_str());
    fetched.push_back(std::move(*pkg));
  }
  std::vector<const FetchedPackage*> to_write;
  for (const auto& f : fetched) to_write.push_back(&f);
  auto staged = install::stagePackages(paths.plugin_dir, to_write);
  if (!staged) AdminClient::die(staged.status().message() + "; nothing was installed");
  install::testHook("staged");

  // 1. The lock lists every folder this run may add or delete before any of them changes:
  // until the commit they are not installed, for trellisd and for the next run.
  LockFile next = *lock;
  next.pending = staged->dirs();
  for (const PlannedPackage* p : work) {
    if (p->action == PlannedPackage::Action::kUpgrade) {
      next.pending.push_back(install::packageDirName(p->id, p->replaces));
    }
  }
  if (Status st = next.save(paths.lock_file); !st) {
    staged->discard();
    AdminClient::die("cannot write " + paths.lock_file.string() + ": " + st.message() +
                     "; nothing was installed");
  }
  install::testHook("pending");
  auto placed = staged->place();
  if (!placed) {
    staged->discard();
    AdminClient::die(placed.status().message() + "; nothing was installed");
  }
  staged->discard();  // the empty staging folder
  install::testHook("placed");

  // 2. Hot activation, dependencies first. A package trellisd refuses is taken out again;
  // for an upgrade the old version keeps serving.
  std::string failure;
  bool activation_skipped = !reachable;
  std::vector<const PlannedPackage*> activated, installed;
  for (size_t i = 0; i < work.size(); ++i) {
    const PlannedPackage& p = *work[i];
    if (failure.empty() && !activation_skipped) {
      // The exact version: the highest installed one may be the old one (a downgrade).
      auto answer = admin_.tryCall("POST", "/v1/plugins/" + p.id + "/activate",
                                   "{\"version\":\"" + p.version + "\"}");
      if (!answer) {
        activation_skipped = true;
      } else if (answer->status != 200) {
        failure = p.id + "@" + p.version + ": " +
                  AdminClient::problemDetail(answer->status, answer->body);
      } else {
        activated.push_back(&p);
      }
    }
    if (!failure.empty()) {
      (void)install::removePendingDir((*placed)[i]);
      continue;
    }
    installed.push_back(&p);
  }
  install::testHook("activated");

  // 3. Commit: one atomic rename of the lock makes the new folders the installed ones.
  for (const PlannedPackage* p : installed) {
    install::LockedPackage lp;
    lp.version = p->version;
    lp.sha256 = p->record.sha256;
    lp.keyid = p->record.keyid;
    lp.publisher_root = install::publisherRoot(s.index->index(), p->id);
    lp.dir = install::packageDirName(p->id, p->version);
    // Reinstalling the locked set keeps what was asked for by name.
    auto was = lock->packages.find(p->id);
    lp.requested = args_.empty() && !upgrade && was != lock->packages.end() ? was->second.requested
                                                                            : p->requested;
    lp.dependencies = p->record.dependencies;
    next.packages[p->id] = std::move(lp);
  }
  // Requested flags of kept packages can change too (a dependency later asked for by name).
  for (const auto& p : plan->packages) {
    if (args_.empty()) break;
    if (auto it = next.packages.find(p.id); it != next.packages.end() && p.requested) {
      it->second.requested = true;
    }
  }
  if (Status st = next.save(paths.lock_file); !st) {
    rollBack(admin_, activated);
    std::vector<std::string> kept;  // e.g. on a read-only file system
    for (const auto& dir : *placed) {
      if (!install::removePendingDir(dir)) kept.push_back(dir.filename());
    }
    AdminClient::die("cannot write " + paths.lock_file.string() + ": " + st.message() +
                     "; rolled back, nothing was installed" +
                     (activated.empty() ? "" : " (trellisd serves the versions it served before)") +
                     (kept.empty()
                          ? ""
                          : "; " + joined(kept) +
                                " could not be deleted: trellisd does not load them, and the next "
                                "install, upgrade or remove deletes them"));
  }
  install::testHook("committed");

  // 4. Tidy up: replaced versions go, then the pending list (else the next run does it).
  for (const PlannedPackage* p : installed) {
    if (p->action != PlannedPackage::Action::kUpgrade) continue;
    const fs::path old = paths.plugin_dir / install::packageDirName(p->id, p->replaces);
    if (Status st = install::removePendingDir(old); !st) {
      std::fprintf(stderr, "trellis: warning: %s\n", st.message().c_str());
    }
  }
  next.pending.clear();
  if (Status st = next.save(paths.lock_file); !st) {
    std::fprintf(stderr, "trellis: warning: %s (the next install, upgrade or remove tidies up)\n",
                 st.message().c_str());
  }
  install::testHook("tidied");
  for (const PlannedPackage* p : installed) {
    std::printf("installed %s@%s in %s%s\n", p->id.c_str(), p->version.c_str(),
                (paths.plugin_dir / install::packageDirName(p->id, p->version)).c_str(),
                activation_skipped ? "" : " (active)");
  }
  if (!failure.empty()) {
    AdminClient::die("trellisd refused to activate " + failure +
                     (upgrade ? "; the installed version keeps serving" : "") +
                     "; that package was not installed");
  }
  if (activation_skipped) {
    std::printf("trellisd %s: restart it or run trellis plugin activate ID\n",
                offline_ ? "was not contacted (--offline)" : "is not running");
  }
  for (const PlannedPackage* p : work) {
    if (std::find(paths.enabled.begin(), paths.enabled.end(), p->id) == paths.enabled.end() &&
        !paths.enabled.empty()) {
      std::printf(
          "note: %s is not in plugins.enabled of trellis.yaml; add it there to keep it "
          "after a restart\n",
          p->id.c_str());
    }
  }
}

void PluginCommands::remove() {
  const Paths paths = resolvePaths(config_file_, plugin_dir_, lock_file_, state_dir_);
  auto held = install::lockPluginDir(paths.plugin_dir);
  if (!held) fail(held.status());
  auto lock = LockFile::load(paths.lock_file);
  if (!lock) fail(lock.status());
  tidyInterrupted(paths, *lock, admin_, offline_);
  auto it = lock->packages.find(id_);
  if (it == lock->packages.end()) {
    AdminClient::die(id_ + " was not installed by trellis (not in " + paths.lock_file.string() +
                     ")");
  }
  std::vector<std::string> dependents;
  for (const auto& d : lock->dependentsOf(id_)) {
    const auto& lp = lock->packages.at(d);
    dependents.push_back(d + "@" + lp.version + " (requires " + lp.dependencies.at(id_) + ")");
  }
  if (!dependents.empty()) {
    AdminClient::die("cannot remove " + id_ + ": installed plugins depend on it: " +
                     joined(dependents) + "; remove them first");
  }
  const std::string version = it->second.version;
  const std::string dir = it->second.dir;
  if (!yes_ && !confirmed("Remove " + id_ + "@" + version + "?")) {
    AdminClient::die("not confirmed; nothing was removed (pass --yes in scripts)");
  }
  bool deactivated = false;
  if (!offline_) {
    auto answer = admin_.tryCall("POST", "/v1/plugins/" + id_ + "/deactivate");
    if (answer && answer->status != 200 && answer->status != 404) {
      AdminClient::die("trellisd refused to deactivate " + id_ + ": " +
                       AdminClient::problemDetail(answer->status, answer->body) +
                       "; nothing was removed");
    }
    deactivated = answer && answer->status == 200;
  }
  // Commit first: from the lock's rename on, the folder is no longer installed.
  LockFile next = *lock;
  next.packages.erase(id_);
  next.pending = {dir};
  if (Status st = next.save(paths.lock_file); !st) {
    if (deactivated) {
      (void)admin_.tryCall("POST", "/v1/plugins/" + id_ + "/activate",
                           "{\"version\":\"" + version + "\"}");
    }
    AdminClient::die("cannot write " + paths.lock_file.string() + ": " + st.message() +
                     "; nothing was removed");
  }
  install::testHook("remove-committed");
  if (Status st = install::removePendingDir(paths.plugin_dir / dir); !st) {
    std::fprintf(stderr, "trellis: warning: %s\n", st.message().c_str());
  }
  next.pending.clear();
  if (Status st = next.save(paths.lock_file); !st) {
    std::fprintf(stderr, "trellis: warning: %s (the next install, upgrade or remove tidies up)\n",
                 st.message().c_str());
  }
  std::printf("removed %s@%s\n", id_.c_str(), version.c_str());
}

void PluginCommands::activate() {
  std::string body;
  if (!isolation_.empty()) {
    Poco::JSON::Object request(Poco::JSON_PRESERVE_KEY_ORDER);
    request.set("isolation", isolation_);
    if (!dedicated_tenants_.empty()) {
      Poco::JSON::Array::Ptr tenants = new Poco::JSON::Array;
      for (const auto& t : dedicated_tenants_) tenants->add(t);
      request.set("dedicated_tenants", tenants);
    }
    std::ostringstream out;
    request.stringify(out);
    body = out.str();
  }
  auto answer = admin_.tryCall("POST", "/v1/plugins/" + id_ + "/activate", body);
  if (!answer)
    AdminClient::die("cannot reach trellisd at " + admin_.baseUrl() + " (is it running?)");
  if (answer->status != 200) {
    AdminClient::die("trellisd refused to activate " + id_ + ": " +
                     AdminClient::problemDetail(answer->status, answer->body));
  }
  auto o = parseObject(answer->body);
  std::string mode = o->optValue<std::string>("isolation", "");
  std::printf("%s@%s is active%s\n", id_.c_str(), o->getValue<std::string>("version").c_str(),
              mode.empty() ? "" : (" (isolation: " + mode + ")").c_str());
  if (!isolation_.empty()) {
    std::printf(
        "note: this isolation holds until trellisd restarts; trellis.yaml sets it again at "
        "start. To keep it, set `isolation: %s` on %s's plugins.enabled entry.\n",
        isolation_.c_str(), id_.c_str());
  }
}

void PluginCommands::mirrorExport() {
  Session s =
      openSession(from_dir_, registry_, registry_key_file_, profileRegistryKey(),
                  defaultStateDir(state_dir_, config_file_), root_file_, download_timeout_s_);
  auto report = install::exportMirror(*s.source, *s.index, s.files, out_dir_);
  if (!report) AdminClient::die("mirror export: " + report.status().message());
  std::printf("exported index version %llu with %zu archives (%s) to %s\n",
              static_cast<unsigned long long>(s.index->version()), report->archives,
              humanBytes(report->bytes).c_str(), out_dir_.c_str());
}

}  // namespace trellis::cli

namespace trellis::cli {
namespace {

void printOutdated(const std::string& body) {
  auto list = parseObject(body)->getArray("plugins");
  std::printf("%-28s %-12s %-12s %-14s %s\n", "PLUGIN", "INSTALLED", "LOCKED", "NEWEST ALLOWED",
              "NEWEST AVAILABLE");
  for (size_t i = 0; i < list->size(); ++i) {
    auto p = list->getObject(static_cast<unsigned>(i));
    auto text = [&](const char* k) {
      std::string v = p->optValue<std::string>(k, "");
      return v.empty() ? std::string("-") : v;
    };
    std::printf("%-28s %-12s %-12s %-14s %s\n", text("id").c_str(), text("installed").c_str(),
                text("locked").c_str(), text("newest_allowed").c_str(),
                text("newest_available").c_str());
    auto held = p->getArray("held_back");
    for (size_t h = 0; h < held->size(); ++h) {
      auto hb = held->getObject(static_cast<unsigned>(h));
      std::printf("    %s held back: %s\n", hb->getValue<std::string>("version").c_str(),
                  hb->getValue<std::string>("reason").c_str());
    }
  }
  if (list->size() == 0) std::printf("(plugins.lock names no packages)\n");
}

}  // namespace

void PluginCommands::outdated() {
  Paths paths = resolvePaths(config_file_, plugin_dir_, lock_file_, state_dir_);
  auto lock = LockFile::load(paths.lock_file);
  if (!lock) fail(lock.status());
  Session s = openSession(from_dir_, registry_, registry_key_file_, profileRegistryKey(),
                          paths.state_dir, root_file_, download_timeout_s_);
  // What trellisd serves right now, when it is running and we have its token.
  std::map<std::string, std::string> serving;
  if (!offline_ && admin_.settings && admin_.settings->findAdminToken()) {
    if (auto answer = admin_.tryCall("GET", "/v1/plugins"); answer && answer->status == 200) {
      auto list = parseObject(answer->body)->getArray("plugins");
      for (size_t i = 0; i < list->size(); ++i) {
        auto p = list->getObject(static_cast<unsigned>(i));
        if (p->getValue<std::string>("state") == "active") {
          serving[p->getValue<std::string>("id")] = p->getValue<std::string>("version");
        }
      }
    }
  }
  Poco::JSON::Array::Ptr list = new Poco::JSON::Array;
  for (const auto& row : install::outdatedReport(s.index->index(), *lock, install::thisHost())) {
    Poco::JSON::Object::Ptr o = new Poco::JSON::Object(Poco::JSON_PRESERVE_KEY_ORDER);
    o->set("id", row.id);
    auto it = serving.find(row.id);
    o->set("installed", it == serving.end() ? std::string() : it->second);
    o->set("locked", row.locked);
    o->set("newest_allowed", row.newest_allowed);
    o->set("newest_available", row.newest_available);
    Poco::JSON::Array::Ptr held = new Poco::JSON::Array;
    for (const auto& h : row.held_back) {
      Poco::JSON::Object::Ptr hb = new Poco::JSON::Object(Poco::JSON_PRESERVE_KEY_ORDER);
      hb->set("version", h.version);
      hb->set("reason", h.reason);
      held->add(hb);
    }
    o->set("held_back", held);
    list->add(o);
  }
  Poco::JSON::Object::Ptr body = new Poco::JSON::Object;
  body->set("plugins", list);
  currentOutput().print(body, printOutdated);
}

}  // namespace trellis::cli
