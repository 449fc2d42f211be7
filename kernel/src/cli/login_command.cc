#include "cli/login_command.h"

#include <cstdio>
#include <filesystem>

#include "cli/admin_client.h"

namespace trellis::cli {

LoginCommand::LoginCommand(CLI::App& app, CliSettings& settings) : settings_(settings) {
  login_ = app.add_subcommand(
      "login", "Save the admin API, registry and their secrets as a profile (mode 0600)");
  login_->add_option("--registry", settings_.registry_flag, "The registry's trellisd URL");
  login_->add_option("--registry-key-file", settings_.registry_key_file_flag,
                     "File holding the registry tenant's key");
  login_->add_option("--registry-token-file", settings_.registry_token_file_flag,
                     "File holding a registry admin or publish token");
  login_->add_flag("--no-verify", no_verify_, "Do not check the admin token against trellisd");
}

bool LoginCommand::run() {
  if (!login_->parsed()) return false;
  settings_.allow_missing_profile = true;
  const auto file = profileFilePath();
  auto all = loadProfiles(file);
  if (!all) {
    AdminClient::die(all.status().message(), all.status().code() == StatusCode::kPermissionDenied
                                                 ? kExitAuth
                                                 : kExitFailed);
  }
  Profile p;
  p.admin = settings_.adminUrl();
  if (auto token = settings_.findAdminToken()) p.token = *token;
  p.registry = settings_.registryUrl();
  p.registry_key = settings_.registryKey();
  p.registry_token = settings_.registryToken();
  // Saved absolute: later commands run from other folders.
  if (std::string ca = settings_.trustedCa().file; !ca.empty()) {
    p.ca = std::filesystem::absolute(ca).string();
  }
  if (ClientCertificate mine = settings_.clientCertificate(); !mine.empty()) {
    p.cert = std::filesystem::absolute(mine.cert).string();
    p.key = std::filesystem::absolute(mine.key).string();
  }
  if (p.token.empty() && p.registry.empty() && p.cert.empty()) {
    AdminClient::die(
        "nothing to save: no admin token found (pass --token-file or set TRELLIS_ADMIN_TOKEN) "
        "and no --registry",
        kExitUsage);
  }
  if (!p.token.empty() && !no_verify_) {
    AdminClient admin;
    admin.url = p.admin;
    admin.token = p.token;
    auto answer = admin.tryCall("GET", "/v1/status");
    if (!answer) {
      AdminClient::die("cannot reach the admin API at " + p.admin +
                           " to check the token (pass --no-verify to save it anyway)",
                       kExitUnreachable);
    }
    if (answer->status != 200) {
      AdminClient::die("the admin API at " + p.admin + " answered " +
                           std::to_string(answer->status) + "; nothing was saved",
                       kExitFailed);
    }
  }
  (*all)[settings_.profileName()] = p;
  if (Status s = saveProfiles(file, *all); !s) AdminClient::die(s.message());
  std::printf("saved profile \"%s\" in %s (mode 0600)\n", settings_.profileName().c_str(),
              file.c_str());
  if (!p.token.empty() || !p.cert.empty()) std::printf("  admin API  %s\n", p.admin.c_str());
  if (!p.cert.empty()) std::printf("  client certificate %s\n", p.cert.c_str());
  if (!p.registry.empty()) std::printf("  registry   %s\n", p.registry.c_str());
  return true;
}

}  // namespace trellis::cli
