// Admin commands that install plugins from a registry or a mirror folder, and move them in
// and out of a running trellisd (docs/marketplace.md, "Admin guide (install)"):
//
//   trellis plugin search [TEXT]            --from DIR|URL | --registry URL
//   trellis plugin info ID
//   trellis plugin install [ID[@RANGE]...] [--yes] [--offline]   (none: the plugins.lock set)
//   trellis plugin upgrade [ID...] [--yes] [--offline]          (none: every requested one)
//   trellis plugin remove ID [--yes] [--offline]
//   trellis plugin activate ID              load the installed version into trellisd
//       [--isolation process|in-process] [--dedicated-tenant T]...   switch its mode (hot)
//   trellis plugin outdated                 locked vs newest allowed vs newest, and why
//   trellis mirror export DIR               a verified copy for air-gapped sites
//
// Order of an install: verify the index (pinned root) -> resolve -> show the plan and ask
// -> the admin API's on_plugin_install policy -> download and verify every archive ->
// extract (all or nothing) -> activate in trellisd -> write plugins.lock.
#pragma once

#include <CLI/CLI.hpp>
#include <string>
#include <vector>

#include "cli/admin_client.h"

namespace trellis::cli {

class PluginCommands {
 public:
  PluginCommands(CLI::App& app, CLI::App& plugin, const AdminClient& admin);
  // Runs whichever of our commands was parsed; false if none was.
  bool run();

 private:
  void search();
  void info();
  void install(bool upgrade);
  void remove();
  void activate();
  void mirrorExport();
  void outdated();
  // The registry tenant's key of the CLI profile, used when no flag or variable gives one.
  std::string profileRegistryKey() const {
    return admin_.settings && admin_.settings->profile() ? admin_.settings->profile()->registry_key
                                                         : "";
  }

  const AdminClient& admin_;
  CLI::App* search_ = nullptr;
  CLI::App* info_ = nullptr;
  CLI::App* install_ = nullptr;
  CLI::App* upgrade_ = nullptr;
  CLI::App* remove_ = nullptr;
  CLI::App* activate_ = nullptr;
  CLI::App* export_ = nullptr;
  CLI::App* outdated_ = nullptr;

  std::string from_dir_;
  std::string registry_;
  std::string registry_key_file_;
  std::string config_file_;
  std::string plugin_dir_;
  std::string state_dir_;
  std::string root_file_;
  int download_timeout_s_ = 600;
  std::string lock_file_;
  std::vector<std::string> args_;
  std::string id_;
  std::string isolation_;                       // activate --isolation
  std::vector<std::string> dedicated_tenants_;  // activate --dedicated-tenant
  std::string out_dir_;
  bool yes_ = false;
  bool offline_ = false;
};

}  // namespace trellis::cli
