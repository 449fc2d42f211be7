#include "cli/system_commands.h"

#include <Poco/JSON/Array.h>
#include <Poco/JSON/Object.h>

#include <cstdio>
#include <iostream>

namespace trellis::cli {

SystemCommands::SystemCommands(CLI::App& plugin, const AdminClient& admin, const bool& json)
    : admin_(admin), json_(json) {
  grant_ = plugin.add_subcommand("grant-system",
                                 "Grant system scope to a plugin that asks for it (then activate)");
  revoke_ = plugin.add_subcommand("revoke-system", "Take a plugin's system scope away now");
  for (auto* c : {grant_, revoke_}) {
    c->add_option("plugin", id_, "Plugin id (namespace/name)")->required();
  }
  list_ = plugin.add_subcommand("system-grants", "List the plugins granted system scope");
}

bool SystemCommands::run() {
  if (grant_->parsed() || revoke_->parsed()) {
    if (id_.find('/') == std::string::npos) {
      AdminClient::die("plugin must be namespace/name, got " + id_);
    }
    const bool grant = grant_->parsed();
    std::string body = admin_.call(grant ? "PUT" : "DELETE", "/v1/plugins/" + id_ + "/system");
    if (json_) {
      std::cout << body;
      return true;
    }
    auto o = parseObject(body);
    std::printf("%s %s system scope%s; %s\n", id_.c_str(), grant ? "granted" : "revoked",
                o->getValue<bool>("changed") ? "" : " (unchanged)",
                o->getValue<std::string>("note").c_str());
    return true;
  }
  if (list_->parsed()) {
    std::string body = admin_.call("GET", "/v1/system-grants");
    if (json_) {
      std::cout << body;
      return true;
    }
    auto grants = parseObject(body)->getArray("grants");
    std::printf("%-32s %-10s %s\n", "PLUGIN", "SOURCE", "ACTIVE");
    for (size_t i = 0; i < grants->size(); ++i) {
      auto g = grants->getObject(static_cast<unsigned>(i));
      std::printf("%-32s %-10s %s\n", g->getValue<std::string>("plugin").c_str(),
                  g->getValue<std::string>("source").c_str(),
                  g->getValue<bool>("active") ? "yes" : "no");
    }
    return true;
  }
  return false;
}

}  // namespace trellis::cli
