// Publisher commands against a registry's write API (docs/marketplace.md, "Publisher guide"):
//
//   trellis publish build/plugins/acme-hello --key acme.pem [--tags a,b] [--dry-run]
//   trellis publish acme-hello-1.2.0.zip                     # an already signed package
//   trellis publisher key register acme --pubkey acme.pub   # operator: a namespace's first key
//   trellis publisher key rotate acme --key old.pem --new-key new.pem
//   trellis publisher key revoke acme KEYID --reason "laptop stolen" [--at UNIX]
//   trellis publisher key list acme
//   trellis publisher token create acme --expires 30d [--description "acme CI"]
//   trellis publisher token list | revoke ID
//   trellis plugin yank acme/hello@1.2.0 --reason CVE-2026-1234 | unyank …
//
// The registry comes from --registry / TRELLIS_REGISTRY / the profile; its tenant key from
// --registry-key-file / TRELLIS_REGISTRY_KEY / the profile; the registry token (admin or
// publish token) from --registry-token-file / TRELLIS_REGISTRY_TOKEN / the profile. Secrets
// are never taken from argv, where other users of the machine could read them.
#pragma once

#include <CLI/CLI.hpp>
#include <cstdint>
#include <string>
#include <vector>

#include "cli/cli_settings.h"
#include "cli/output.h"

namespace trellis::cli {

class PublisherCommands {
 public:
  PublisherCommands(CLI::App& app, CLI::App& plugin, CliSettings& settings, const Output& output);
  // Runs whichever of our commands was parsed; false if none was.
  bool run();

 private:
  void publish();
  void keyRegister();
  void keyRotate();
  void keyRevoke();
  void keyList();
  void tokenCreate();
  void tokenList();
  void tokenRevoke();
  void setYanked(bool yanked);

  CliSettings& settings_;
  const Output& output_;
  CLI::App* publish_ = nullptr;
  CLI::App* key_register_ = nullptr;
  CLI::App* key_rotate_ = nullptr;
  CLI::App* key_revoke_ = nullptr;
  CLI::App* key_list_ = nullptr;
  CLI::App* token_create_ = nullptr;
  CLI::App* token_list_ = nullptr;
  CLI::App* token_revoke_ = nullptr;
  CLI::App* yank_ = nullptr;
  CLI::App* unyank_ = nullptr;

  std::string path_;  // publish: folder or package; yank: id@version
  std::string key_file_;
  std::string new_key_file_;
  std::string pubkey_;
  std::string tags_;
  bool dry_run_ = false;
  std::string ns_;
  std::string keyid_;
  std::string reason_;
  int64_t at_ = -1;
  std::string expires_ = "30d";
  std::string description_;
  std::string token_id_;
};

}  // namespace trellis::cli
