// `trellis config diff|apply FILE`: declarative configuration (docs/operations.md,
// "Declarative configuration"). FILE holds plans, tenants (with their keys by hash, grants,
// quotas, plugins and plugin_config) and policies, in trellis.yaml's syntax; `diff` shows
// what applying it would change and the drift (what the registry holds that FILE does not
// say), `apply` makes the change all or nothing. A policy may be given as {file: x.lua}
// (relative to FILE); the CLI reads it and sends its name and source.
//
//   trellis config diff state.yaml [--exit-code]   # exit 5 if anything would change
//   trellis config apply state.yaml
#pragma once

#include <CLI/CLI.hpp>
#include <string>

#include "cli/admin_client.h"

namespace trellis::cli {

class ConfigCommands {
 public:
  ConfigCommands(CLI::App& app, const AdminClient& admin);
  // True if one of ours was parsed (and has run).
  bool run();

 private:
  const AdminClient& admin_;
  CLI::App* diff_ = nullptr;
  CLI::App* apply_ = nullptr;
  std::string file_;
  bool exit_code_ = false;
};

// FILE's text with every policy {file: path} replaced by {name, source}: what the admin
// API's /v1/config/plan and /v1/config/apply take. Exits (usage) naming the problem.
std::string stateWithPolicySources(const std::string& file);

}  // namespace trellis::cli
