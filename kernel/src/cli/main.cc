// trellis: the command-line client for operators and admins. Talks to a trellisd admin
// API (default http://127.0.0.1:8081) with the admin token.
//
//   trellis status
//   trellis plugin list [--json]
//   trellis tenant … / trellis key …      (see tenant_commands.h)
//   trellis keygen / trellis package …     (see marketplace_commands.h)
//   trellis policy …                       (see policy_commands.h)
//   trellis job list|run|cancel            (see job_commands.h)
//   trellis plugin search|info|install|upgrade|remove|activate, trellis mirror export
//                                          (see plugin_commands.h)
#include <Poco/JSON/Array.h>

#include <CLI/CLI.hpp>
#include <cstdio>
#include <cstdlib>
#include <iostream>
#include <string>

#include "cli/admin_client.h"
#include "cli/job_commands.h"
#include "cli/marketplace_commands.h"
#include "cli/plugin_commands.h"
#include "cli/policy_commands.h"
#include "cli/tenant_commands.h"

namespace {
using trellis::cli::AdminClient;
using trellis::cli::parseObject;

void printStatus(const std::string& body) {
  auto o = parseObject(body);
  auto plugins = o->getObject("plugins");
  std::printf("trellisd %s (plugin ABI %s)\n", o->getValue<std::string>("version").c_str(),
              o->getValue<std::string>("abi").c_str());
  std::printf("  ready:       %s\n", o->getValue<bool>("ready") ? "yes" : "no");
  std::printf("  uptime:      %llds\n",
              static_cast<long long>(o->getValue<int64_t>("uptime_seconds")));
  std::printf("  data plane:  %s (%llu in flight)\n",
              o->getValue<std::string>("data_plane").c_str(),
              static_cast<unsigned long long>(o->getValue<uint64_t>("in_flight")));
  std::printf("  tenants:     %llu\n",
              static_cast<unsigned long long>(o->getValue<uint64_t>("tenants")));
  std::printf("  plugins:     %llu active, %llu failed, %llu broken packages\n",
              static_cast<unsigned long long>(plugins->getValue<uint64_t>("active")),
              static_cast<unsigned long long>(plugins->getValue<uint64_t>("failed")),
              static_cast<unsigned long long>(plugins->getValue<uint64_t>("broken_packages")));
}

void printPlugins(const std::string& body) {
  auto o = parseObject(body);
  auto list = o->getArray("plugins");
  std::printf("%-28s %-10s %-8s %s\n", "PLUGIN", "VERSION", "STATE", "ROUTES / ERROR");
  for (size_t i = 0; i < list->size(); ++i) {
    auto p = list->getObject(static_cast<unsigned>(i));
    std::string detail;
    if (p->has("error")) {
      detail = p->getValue<std::string>("error");
    } else {
      auto routes = p->getArray("routes");
      for (size_t r = 0; r < routes->size(); ++r) {
        detail += (r ? ", " : "") + routes->getElement<std::string>(static_cast<unsigned>(r));
      }
    }
    std::printf("%-28s %-10s %-8s %s\n", p->getValue<std::string>("id").c_str(),
                p->getValue<std::string>("version").c_str(),
                p->getValue<std::string>("state").c_str(), detail.c_str());
  }
  auto broken = o->getArray("broken_packages");
  for (size_t i = 0; i < broken->size(); ++i) {
    auto b = broken->getObject(static_cast<unsigned>(i));
    std::printf("broken package %s: %s\n", b->getValue<std::string>("path").c_str(),
                b->getValue<std::string>("error").c_str());
  }
}

}  // namespace

int main(int argc, char** argv) {
  CLI::App cli{"trellis — manage a Trellis host"};
  cli.require_subcommand(1);
  AdminClient admin;
  if (const char* env = std::getenv("TRELLIS_ADMIN_URL"); env && *env) admin.url = env;
  cli.add_option("--admin", admin.url, "Admin API URL (env TRELLIS_ADMIN_URL)")
      ->capture_default_str();
  cli.add_option("--token", admin.token, "Admin token (env TRELLIS_ADMIN_TOKEN)");
  cli.add_option("--token-file", admin.token_file, "File holding the admin token")
      ->capture_default_str();
  bool json = false;
  cli.add_flag("--json", json, "Print the admin API's JSON as is");

  auto* status = cli.add_subcommand("status", "Show the host's status");
  auto* plugin = cli.add_subcommand("plugin", "Inspect, install and remove plugins");
  plugin->require_subcommand(1);
  auto* plugin_list = plugin->add_subcommand("list", "List enabled plugins and their state");
  trellis::cli::TenantCommands tenant_commands(cli, admin, json);
  trellis::cli::MarketplaceCommands marketplace_commands(cli);
  trellis::cli::PolicyCommands policy_commands(cli, admin, json);
  trellis::cli::JobCommands job_commands(cli, admin, json);
  trellis::cli::PluginCommands plugin_commands(cli, *plugin, admin);

  CLI11_PARSE(cli, argc, argv);
  try {
    if (status->parsed()) {
      std::string body = admin.call("GET", "/v1/status");
      json ? void(std::cout << body) : printStatus(body);
    } else if (plugin_list->parsed()) {
      std::string body = admin.call("GET", "/v1/plugins");
      json ? void(std::cout << body) : printPlugins(body);
    } else if (!marketplace_commands.run() && !policy_commands.run() && !plugin_commands.run() &&
               !job_commands.run()) {
      tenant_commands.run();
    }
  } catch (const Poco::Exception& e) {
    AdminClient::die("unexpected answer from the admin API: " + e.displayText());
  }
  return 0;
}
