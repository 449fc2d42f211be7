// `trellis plugin grant-system|revoke-system|system-grants`: the operator's grant of system
// scope to a plugin whose manifest asks for it (docs/admin-guide.md, "System plugins").
//
//   trellis plugin grant-system acme/audit    then: trellis plugin activate acme/audit
//   trellis plugin revoke-system acme/audit   system powers end at once
//   trellis plugin system-grants              every grant, where it comes from, if active
#pragma once

#include <CLI/CLI.hpp>
#include <string>

#include "cli/admin_client.h"

namespace trellis::cli {

class SystemCommands {
 public:
  // Registers the subcommands on `plugin`; `json` is the global --json flag.
  SystemCommands(CLI::App& plugin, const AdminClient& admin, const bool& json);
  // Runs whichever of our subcommands was parsed; false if none was.
  bool run();

 private:
  const AdminClient& admin_;
  const bool& json_;
  std::string id_;
  CLI::App* grant_ = nullptr;
  CLI::App* revoke_ = nullptr;
  CLI::App* list_ = nullptr;
};

}  // namespace trellis::cli
