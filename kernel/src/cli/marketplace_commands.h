// Publisher commands: make a signing key, package and sign a plugin build, and check a
// package before it is published or installed. They work offline (no admin API).
//
//   trellis keygen --out ~/.trellis/keys --name acme        # acme.pem (0600) + acme.pub
//   trellis package build/plugins/acme-hello --key ~/.trellis/keys/acme.pem --out hello.zip
//   trellis package inspect acme-hello-1.2.0.zip           # what is inside (not verified)
//   trellis package verify acme-hello-1.2.0.zip --pubkey ~/.trellis/keys/acme.pub
#pragma once

#include <CLI/CLI.hpp>
#include <string>
#include <vector>

namespace trellis::cli {

class MarketplaceCommands {
 public:
  explicit MarketplaceCommands(CLI::App& app);
  // Runs whichever of our commands was parsed; false if none was.
  bool run();

 private:
  void keygen();
  void package();
  void inspect();
  void verify();

  CLI::App* keygen_ = nullptr;
  CLI::App* package_ = nullptr;
  CLI::App* inspect_ = nullptr;
  CLI::App* verify_ = nullptr;
  std::string out_dir_;
  std::string name_ = "publisher";
  std::string plugin_dir_;
  std::string key_file_;
  std::string out_file_;
  bool force_ = false;
  std::string archive_;
  std::vector<std::string> pubkeys_;
};

}  // namespace trellis::cli
