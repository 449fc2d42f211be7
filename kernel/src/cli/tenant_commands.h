// `trellis tenant …` and `trellis key …`: tenant administration through the admin API.
//
//   trellis tenant create acme --plan free --plugin trellis/hello --label team=payments
//   trellis key create acme --ttl 86400        # prints the key once
//   trellis tenant usage acme
//   trellis tenant delete acme                 # asks to type the id (or --yes)
//   trellis tenant cert add acme --spiffe spiffe://acme.test/billing   (cert_commands.h)
//   trellis tenant config set acme trellis/hello '{"greeting":"Hej"}'  (tenant_config_commands.h)
#pragma once

#include <CLI/CLI.hpp>
#include <map>
#include <memory>
#include <string>
#include <vector>

#include "cli/admin_client.h"
#include "cli/cert_commands.h"
#include "cli/tenant_config_commands.h"

namespace trellis::cli {

class TenantCommands {
 public:
  // Registers the subcommands on `app`; `json` is the global --json flag.
  TenantCommands(CLI::App& app, const AdminClient& admin, const bool& json);
  // Runs whichever of our subcommands was parsed (no-op if none).
  void run();

 private:
  void print(const std::string& body, void (*human)(const std::string&)) const;

  const AdminClient& admin_;
  const bool& json_;
  std::string id_;
  std::string plan_;
  std::vector<std::string> labels_;  // k=v
  std::vector<std::string> plugins_;
  std::vector<std::string> grants_;  // plugin=cap,cap
  bool clear_grants_ = false;
  std::map<std::string, uint64_t> quotas_;
  bool yes_ = false;
  int64_t ttl_seconds_ = 0;
  std::map<std::string, CLI::App*> commands_;     // "tenant create" -> subcommand
  std::unique_ptr<TenantCertCommands> certs_;     // `tenant cert …`
  std::unique_ptr<TenantConfigCommands> config_;  // `tenant config …`
};

}  // namespace trellis::cli
