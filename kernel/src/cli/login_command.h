// `trellis login`: saves where the admin API and the registry are, and their secrets, as a
// named profile (docs/operations.md, "The trellis CLI"), after checking the admin token works.
//
//   trellis login --admin http://10.0.0.5:8081 --token-file /secure/admin.token
//   trellis login --profile registry --registry http://reg:8080 --no-verify
//       --registry-key-file key.txt --registry-token-file publish-token.txt      (one line)
//   trellis --profile registry publish build/plugins/acme-hello --key acme.pem
#pragma once

#include <CLI/CLI.hpp>

#include "cli/cli_settings.h"

namespace trellis::cli {

class LoginCommand {
 public:
  LoginCommand(CLI::App& app, CliSettings& settings);
  bool run();  // false if `login` was not the parsed command

 private:
  CliSettings& settings_;
  CLI::App* login_ = nullptr;
  bool no_verify_ = false;
};

}  // namespace trellis::cli
