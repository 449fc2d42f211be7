// `trellis job …`: jobs and timers that plugins scheduled (docs/admin-guide.md).
//
//   trellis job list [--tenant acme]          runs, failures, last error, next run
//   trellis job run acme acme/backup nightly  fire now (retries a dead-lettered job)
//   trellis job cancel acme acme/backup nightly
#pragma once

#include <CLI/CLI.hpp>
#include <map>
#include <string>

#include "cli/admin_client.h"

namespace trellis::cli {

class JobCommands {
 public:
  // Registers the subcommands on `app`; `json` is the global --json flag.
  JobCommands(CLI::App& app, const AdminClient& admin, const bool& json);
  // Runs whichever of our subcommands was parsed; false if none was.
  bool run();

 private:
  std::string path() const;  // /v1/jobs/<tenant>/<plugin>/<name>

  const AdminClient& admin_;
  const bool& json_;
  std::string tenant_;
  std::string plugin_;
  std::string name_;
  std::map<std::string, CLI::App*> commands_;
};

}  // namespace trellis::cli
