// `trellis tenant config …`: a tenant's overrides of a plugin's configuration, through the
// admin API's /v1/tenants/{id}/plugins/{ns}/{name}/config routes. The plugin sees them on
// its next call, without a restart; only the keys its manifest's "tenant_config" declares
// may be overridden.
//
//   trellis tenant config show acme trellis/hello
//   trellis tenant config set acme trellis/hello '{"greeting": "Bonjour"}'
//   trellis tenant config set acme trellis/hello --file hello-acme.json
//   trellis tenant config unset acme trellis/hello
#pragma once

#include <CLI/CLI.hpp>
#include <string>

#include "cli/admin_client.h"

namespace trellis::cli {

class TenantConfigCommands {
 public:
  // Registers `config show|set|unset` under the `tenant` subcommand.
  TenantConfigCommands(CLI::App& tenant, const AdminClient& admin, const bool& json);
  // True if one of ours was parsed (and has run).
  bool run();

 private:
  const AdminClient& admin_;
  const bool& json_;
  CLI::App* show_ = nullptr;
  CLI::App* set_ = nullptr;
  CLI::App* unset_ = nullptr;
  std::string tenant_, plugin_, overrides_, file_;
};

}  // namespace trellis::cli
