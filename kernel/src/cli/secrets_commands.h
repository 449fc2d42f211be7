// `trellis secrets init|unseal|seal|status`: the seal of the trellis/secrets plugin, through
// its admin routes (/v1/x/trellis/secrets/…; plugins/secrets/README.md).
//
//   trellis secrets init --shares 5 --threshold 3   prints the shares, once
//   trellis secrets unseal                           asks for one share, not echoed; run it
//                                                    once per share holder, on every host
//   trellis secrets unseal --reset                   forget the shares given so far
//   trellis secrets seal | status
//
// A share is read from the terminal with echo off, or from standard input when it is not a
// terminal (a script, a secret manager's pipe); never from the command line, where it would
// reach the shell's history and the process list.
#pragma once

#include <CLI/CLI.hpp>

#include "cli/admin_client.h"

namespace trellis::cli {

class SecretsCommands {
 public:
  SecretsCommands(CLI::App& app, const AdminClient& admin, const bool& json);
  // Runs whichever of our subcommands was parsed; false if none was.
  bool run();

 private:
  const AdminClient& admin_;
  const bool& json_;
  int shares_ = 5;
  int threshold_ = 3;
  bool reset_ = false;
  CLI::App* init_ = nullptr;
  CLI::App* unseal_ = nullptr;
  CLI::App* seal_ = nullptr;
  CLI::App* status_ = nullptr;
};

}  // namespace trellis::cli
