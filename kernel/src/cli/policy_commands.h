// `trellis policy …`: admin Lua policies (docs/policies.md).
//
//   trellis policy test config/policies/example.lua --input request.json   # dry run, local
//   trellis policy apply config/policies/example.lua [--tenant acme]       # new version
//   trellis policy rollback [--tenant acme]                                # version before
//   trellis policy remove [--tenant acme]                                  # no policy
//   trellis policy list
#pragma once

#include <CLI/CLI.hpp>
#include <map>
#include <string>

#include "cli/admin_client.h"

namespace trellis::cli {

class PolicyCommands {
 public:
  // Registers the subcommands on `app`; `json` is the global --json flag.
  PolicyCommands(CLI::App& app, const AdminClient& admin, const bool& json);
  // Runs whichever of our subcommands was parsed; false if none was.
  bool run();

 private:
  int test() const;

  const AdminClient& admin_;
  const bool& json_;
  std::string file_;
  std::string input_;
  std::string hook_ = "on_request";
  std::string config_;
  std::string tenant_;
  std::map<std::string, CLI::App*> commands_;
};

}  // namespace trellis::cli
