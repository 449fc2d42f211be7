#include "cli/tenant_config_commands.h"

#include <Poco/JSON/Object.h>
#include <Poco/JSON/Stringifier.h>

#include <cstdio>
#include <fstream>
#include <sstream>

#include "cli/output.h"

namespace trellis::cli {
namespace {

std::string pretty(const Poco::Dynamic::Var& v) {
  std::ostringstream out;
  Poco::JSON::Stringifier::stringify(v, out, 2);
  return out.str();
}

void printConfig(const std::string& body) {
  auto o = parseObject(body);
  std::printf("tenant %s, plugin %s %s\n", o->getValue<std::string>("tenant").c_str(),
              o->getValue<std::string>("plugin").c_str(),
              o->getValue<std::string>("version").c_str());
  auto overrides = o->getObject("overrides");
  if (!overrides || overrides->size() == 0) {
    std::printf("overrides: none (the plugin's global config applies)\n");
  } else {
    std::printf("overrides:\n%s\n", pretty(o->get("overrides")).c_str());
  }
  std::printf("overridable keys (tenant_config):\n%s\n", pretty(o->get("schema")).c_str());
}

std::string readFile(const std::string& path) {
  std::ifstream in(path, std::ios::binary);
  if (!in) AdminClient::die("cannot read " + path, kExitUsage);
  std::ostringstream text;
  text << in.rdbuf();
  return text.str();
}

// The ids become path segments of the admin URL: nothing else may ride along.
void checkIds(const std::string& tenant, const std::string& plugin) {
  auto plain = [](std::string_view s) {
    return !s.empty() &&
           s.find_first_not_of("abcdefghijklmnopqrstuvwxyz0123456789._-") == std::string_view::npos;
  };
  const size_t slash = plugin.find('/');
  if (!plain(tenant)) AdminClient::die("not a tenant id: \"" + tenant + "\"", kExitUsage);
  if (slash == std::string::npos || !plain(std::string_view(plugin).substr(0, slash)) ||
      !plain(std::string_view(plugin).substr(slash + 1))) {
    AdminClient::die("not a plugin id (namespace/name): \"" + plugin + "\"", kExitUsage);
  }
}

}  // namespace

TenantConfigCommands::TenantConfigCommands(CLI::App& tenant, const AdminClient& admin,
                                           const bool& json)
    : admin_(admin), json_(json) {
  auto* config = tenant.add_subcommand(
      "config", "A tenant's overrides of a plugin's configuration (manifest tenant_config)");
  config->require_subcommand(1);
  auto withIds = [&](const char* name, const char* help) {
    auto* c = config->add_subcommand(name, help);
    c->add_option("tenant", tenant_, "tenant id")->required();
    c->add_option("plugin", plugin_, "plugin id (namespace/name)")->required();
    return c;
  };
  show_ = withIds("show", "Show the tenant's overrides and the keys it may override");
  set_ = withIds("set", "Replace the tenant's overrides (applies without a restart)");
  auto* inline_json = set_->add_option("overrides", overrides_, "the overrides as a JSON object");
  set_->add_option("--file", file_, "read the overrides from this JSON file")
      ->excludes(inline_json);
  unset_ = withIds("unset", "Remove the tenant's overrides");
}

bool TenantConfigCommands::run() {
  if (!show_->parsed() && !set_->parsed() && !unset_->parsed()) return false;
  checkIds(tenant_, plugin_);
  const std::string path = "/v1/tenants/" + tenant_ + "/plugins/" + plugin_ + "/config";
  if (show_->parsed() || set_->parsed()) {
    if (set_->parsed() && overrides_.empty() && file_.empty()) {
      AdminClient::die("tenant config set: give the overrides as a JSON object or --file",
                       kExitUsage);
    }
    std::string answer =
        show_->parsed() ? admin_.call("GET", path)
                        : admin_.call("PUT", path, file_.empty() ? overrides_ : readFile(file_));
    json_ ? printStructured(answer) : printConfig(answer);
    return true;
  }
  if (unset_->parsed()) {
    admin_.call("DELETE", path);
    if (json_) {
      std::printf("{\"tenant\":\"%s\",\"plugin\":\"%s\",\"overrides\":{}}\n", tenant_.c_str(),
                  plugin_.c_str());
    } else {
      std::printf("tenant %s: overrides of %s removed\n", tenant_.c_str(), plugin_.c_str());
    }
    return true;
  }
  return false;
}

}  // namespace trellis::cli
