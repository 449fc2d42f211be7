// trellis: the command-line client for operators and admins. Talks to a trellisd admin
// API (default http://127.0.0.1:8081) with the admin token; https:// URLs are verified
// against the system's CAs or --ca / TRELLIS_CA / the profile's ca: (http_session.h).
//
//   trellis status
//   trellis plugin list [--json]
//   trellis tenant … / trellis key …      (see tenant_commands.h)
//   trellis keygen / trellis package …     (see marketplace_commands.h)
//   trellis policy …                       (see policy_commands.h)
//   trellis job list|run|cancel            (see job_commands.h)
//   trellis plugin grant-system|revoke-system|system-grants   (see system_commands.h)
//   trellis admin-token create|list|revoke, trellis x <plugin> GET|POST <path>
//                                          (see admin_commands.h)
//   trellis plugin search|info|install|upgrade|remove|activate, trellis mirror export
//                                          (see plugin_commands.h)
//   trellis publish, trellis publisher key|token …, trellis plugin yank|unyank
//                                          (see publisher_commands.h)
//   trellis login                          (see login_command.h; settings: cli_settings.h)
//   trellis secrets init|unseal|seal|status  (see secrets_commands.h)
//   trellis audit verify <pack> …          runs trellis-audit (see audit_command.h)
//
// Read verbs take --output table|json|yaml. Exit codes: admin_client.h (ExitCode).
#include <Poco/JSON/Array.h>

#include <CLI/CLI.hpp>
#include <cstdio>
#include <cstdlib>
#include <iostream>
#include <string>

#include "cli/admin_client.h"
#include "cli/admin_commands.h"
#include "cli/audit_command.h"
#include "cli/cli_settings.h"
#include "cli/config_commands.h"
#include "cli/job_commands.h"
#include "cli/login_command.h"
#include "cli/marketplace_commands.h"
#include "cli/output.h"
#include "cli/plugin_commands.h"
#include "cli/policy_commands.h"
#include "cli/publisher_commands.h"
#include "cli/secrets_commands.h"
#include "cli/system_commands.h"
#include "cli/tenant_commands.h"

namespace {
using trellis::cli::AdminClient;
using trellis::cli::CliSettings;
using trellis::cli::Output;
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
    // A mode an admin chose at run time is not in trellis.yaml: say so before a restart.
    if (p->optValue<bool>("isolation_set_at_runtime", false)) {
      std::printf("  isolation=%s (set at run time; trellis.yaml sets it again at restart)\n",
                  p->getValue<std::string>("isolation").c_str());
    }
    // Plugins in worker processes: one line per worker (shared "*", or a tenant's own).
    if (auto workers = p->getArray("workers")) {
      for (size_t w = 0; w < workers->size(); ++w) {
        auto wk = workers->getObject(static_cast<unsigned>(w));
        std::string line = "  worker tenant=" + wk->getValue<std::string>("tenant") +
                           " state=" + wk->getValue<std::string>("state") +
                           " restarts=" + std::to_string(wk->getValue<uint64_t>("restarts")) +
                           " crashes=" + std::to_string(wk->getValue<uint64_t>("crashes"));
        if (wk->has("pid")) line += " pid=" + std::to_string(wk->getValue<int>("pid"));
        if (wk->has("last_crash"))
          line += " last_crash=\"" + wk->getValue<std::string>("last_crash") + "\"";
        std::printf("%s\n", line.c_str());
      }
    }
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
  // Global flags work after the command too: `trellis status --output json`.
  cli.fallthrough();
  CliSettings settings;
  AdminClient admin;
  admin.settings = &settings;
  cli.add_option("--admin", settings.admin_flag,
                 "Admin API URL (env TRELLIS_ADMIN_URL, the profile, the server config; "
                 "default http://127.0.0.1:8081)");
  cli.add_option("--token", admin.token,
                 "Admin token (prefer --token-file or TRELLIS_ADMIN_TOKEN)");
  cli.add_option("--token-file", settings.token_file_flag,
                 "File holding the admin token (default: the server config's admin.token_file)");
  cli.add_option("--config", settings.config_flag,
                 "The server's trellis.yaml, for the admin URL and token file (env "
                 "TRELLIS_CONFIG; default config/trellis.yaml)");
  cli.add_option("--profile", settings.profile_flag,
                 "Profile of the profile file to use (env TRELLIS_PROFILE; default \"default\")");
  cli.add_option("--ca", settings.ca_flag,
                 "PEM bundle of the CAs that sign the https:// admin API, registry or mirror "
                 "(env TRELLIS_CA, the profile's ca:; default the system's trusted CAs)");
  cli.add_option("--cert", settings.cert_flag,
                 "PEM client certificate for the https:// admin API (mTLS; env TRELLIS_CERT, "
                 "the profile's cert:); with --key, a token is optional");
  cli.add_option("--key", settings.key_flag,
                 "Its unencrypted PEM private key, readable only by you (env TRELLIS_KEY, the "
                 "profile's key:)");
  // Every HTTPS connection (admin API, registries, mirrors) trusts what the settings say;
  // only the admin API is shown the client certificate.
  trellis::cli::setCaResolver([&settings] { return settings.trustedCa(); });
  trellis::cli::setClientCertificateResolver([&settings] { return settings.clientCertificate(); });
  Output output;
  cli.add_option("--output,-o", output.format, "How read verbs print: table, json or yaml")
      ->check(CLI::IsMember({"table", "json", "yaml"}))
      ->capture_default_str();
  cli.add_flag("--json", output.json_flag, "Same as --output json");
  // The older commands take a bool: true means structured (json or yaml) output.
  bool json = false;

  auto* status = cli.add_subcommand("status", "Show the host's status");
  auto* plugin = cli.add_subcommand("plugin", "Inspect, install and remove plugins");
  plugin->require_subcommand(1);
  auto* plugin_list = plugin->add_subcommand("list", "List enabled plugins and their state");
  trellis::cli::TenantCommands tenant_commands(cli, admin, json);
  trellis::cli::MarketplaceCommands marketplace_commands(cli);
  trellis::cli::PolicyCommands policy_commands(cli, admin, json);
  trellis::cli::JobCommands job_commands(cli, admin, json);
  trellis::cli::PluginCommands plugin_commands(cli, *plugin, admin);
  trellis::cli::PublisherCommands publisher_commands(cli, *plugin, settings, output);
  trellis::cli::LoginCommand login_command(cli, settings);
  trellis::cli::SystemCommands system_commands(*plugin, admin, json);
  trellis::cli::AdminCommands admin_commands(cli, admin, json);
  trellis::cli::SecretsCommands secrets_commands(cli, admin, json);
  trellis::cli::ConfigCommands config_commands(cli, admin);
  trellis::cli::AuditCommand audit_command(cli);

  try {
    cli.parse(argc, argv);
  } catch (const CLI::CallForHelp& e) {
    return cli.exit(e);
  } catch (const CLI::CallForAllHelp& e) {
    return cli.exit(e);
  } catch (const CLI::CallForVersion& e) {
    return cli.exit(e);
  } catch (const CLI::ParseError& e) {
    cli.exit(e);
    return trellis::cli::kExitUsage;
  }
  audit_command.run();  // runs trellis-audit in place of this process, if asked
  json = output.structured();
  trellis::cli::setCurrentOutput(output);
  try {
    if (status->parsed()) {
      output.print(admin.call("GET", "/v1/status"), printStatus);
    } else if (plugin_list->parsed()) {
      output.print(admin.call("GET", "/v1/plugins"), printPlugins);
    } else if (!login_command.run() && !publisher_commands.run() && !marketplace_commands.run() &&
               !policy_commands.run() && !plugin_commands.run() && !job_commands.run() &&
               !system_commands.run() && !admin_commands.run() && !secrets_commands.run() &&
               !config_commands.run()) {
      tenant_commands.run();
    }
  } catch (const Poco::Exception& e) {
    AdminClient::die("unexpected answer from the admin API: " + e.displayText(),
                     trellis::cli::kExitUnreachable);
  }
  return 0;
}
