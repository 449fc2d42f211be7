// `trellis admin-token …` (named admin principals) and `trellis x …` (system plugins'
// admin routes); docs/admin-guide.md, "Admin principals and roles".
//
//   trellis admin-token create alice --role operator   prints the token once
//   trellis admin-token list
//   trellis admin-token revoke alice                    (name or id)
//   trellis admin-token cert deployer --spiffe spiffe://acme.test/ops/deployer
//   trellis admin-token cert deployer --unbind
//   trellis x acme/audit GET records --output json      GET /v1/x/acme/audit/records
//   trellis x acme/audit POST export --data '{"since":0}'
#pragma once

#include <CLI/CLI.hpp>
#include <string>

#include "cli/admin_client.h"

namespace trellis::cli {

class AdminCommands {
 public:
  // Registers the subcommands on `app`; `json` is the global --json flag.
  AdminCommands(CLI::App& app, const AdminClient& admin, const bool& json);
  // Runs whichever of our subcommands was parsed; false if none was.
  bool run();

 private:
  bool runTokens();
  void runX();

  const AdminClient& admin_;
  const bool& json_;
  CLI::App* create_ = nullptr;
  CLI::App* list_ = nullptr;
  CLI::App* revoke_ = nullptr;
  CLI::App* cert_ = nullptr;
  CLI::App* x_ = nullptr;
  std::string name_;
  std::string role_ = "operator";
  std::string plugin_;
  std::string method_;
  std::string path_;
  std::string data_;
  std::string output_ = "text";
  std::string spiffe_, subject_, issuer_, pin_;
  bool unbind_ = false;
};

}  // namespace trellis::cli
