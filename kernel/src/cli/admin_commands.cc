#include "cli/admin_commands.h"

#include <Poco/JSON/Array.h>
#include <Poco/JSON/Object.h>
#include <Poco/JSON/Parser.h>

#include <cstdio>
#include <iostream>

#include "cli/cert_commands.h"
#include "cli/output.h"

namespace trellis::cli {

AdminCommands::AdminCommands(CLI::App& app, const AdminClient& admin, const bool& json)
    : admin_(admin), json_(json) {
  auto* tokens = app.add_subcommand("admin-token", "Create, list and revoke named admin tokens");
  tokens->require_subcommand(1);
  create_ = tokens->add_subcommand("create", "Create an admin principal; prints its token once");
  create_->add_option("name", name_, "Who holds it (alice, ci-deploy)")->required();
  create_->add_option("--role", role_, "admin, operator, auditor or billing")
      ->check(CLI::IsMember({"admin", "operator", "auditor", "billing"}))
      ->capture_default_str();
  list_ = tokens->add_subcommand("list", "List admin principals (never their tokens)");
  revoke_ = tokens->add_subcommand("revoke", "Revoke an admin principal's token now");
  revoke_->add_option("principal", name_, "Name or id")->required();
  cert_ = tokens->add_subcommand(
      "cert", "Bind a client certificate to an admin principal (mTLS on the admin listener)");
  cert_->add_option("principal", name_, "Name or id")->required();
  addSelectorOptions(cert_, spiffe_, subject_, issuer_, pin_);
  cert_->add_flag("--unbind", unbind_, "Remove the principal's certificate binding");

  x_ = app.add_subcommand("x", "Call a system plugin's admin route (/v1/x/<plugin>/<path>)");
  x_->add_option("plugin", plugin_, "Plugin id (namespace/name)")->required();
  x_->add_option("method", method_, "GET, POST, PUT or DELETE")
      ->required()
      ->check(CLI::IsMember({"GET", "POST", "PUT", "DELETE"}));
  x_->add_option("path", path_, "Path below the plugin's prefix (records, export/today)")
      ->required();
  x_->add_option("--data", data_, "Request body (JSON)");
  x_->add_option("--output", output_, "text or json")
      ->check(CLI::IsMember({"text", "json"}))
      ->capture_default_str();
}

bool AdminCommands::run() {
  if (runTokens()) return true;
  if (x_->parsed()) {
    runX();
    return true;
  }
  return false;
}

bool AdminCommands::runTokens() {
  if (create_->parsed()) {
    Poco::JSON::Object req;
    req.set("name", name_);
    req.set("role", role_);
    std::ostringstream body;
    req.stringify(body);
    std::string answer = admin_.call("POST", "/v1/admin-tokens", body.str());
    if (json_) {
      std::cout << answer;
      return true;
    }
    auto o = parseObject(answer);
    std::printf("admin principal %s (id %s, role %s) created.\n",
                o->getValue<std::string>("name").c_str(), o->getValue<std::string>("id").c_str(),
                o->getValue<std::string>("role").c_str());
    std::printf("Its token, shown this once (only its hash is stored):\n  %s\n",
                o->getValue<std::string>("token").c_str());
    return true;
  }
  if (list_->parsed()) {
    std::string answer = admin_.call("GET", "/v1/admin-tokens");
    if (json_) {
      std::cout << answer;
      return true;
    }
    auto list = parseObject(answer)->getArray("principals");
    std::printf("%-18s %-24s %-9s %-21s %s\n", "ID", "NAME", "ROLE", "CREATED", "REVOKED");
    for (size_t i = 0; i < list->size(); ++i) {
      auto p = list->getObject(static_cast<unsigned>(i));
      std::printf(
          "%-18s %-24s %-9s %-21s %s\n", p->getValue<std::string>("id").c_str(),
          p->getValue<std::string>("name").c_str(), p->getValue<std::string>("role").c_str(),
          utcTime(p->getValue<int64_t>("created_at_ms")).c_str(),
          p->has("revoked_at_ms") ? utcTime(p->getValue<int64_t>("revoked_at_ms")).c_str() : "-");
    }
    return true;
  }
  if (cert_->parsed()) {
    const std::string path = "/v1/admin-tokens/" + name_ + "/certificate";
    std::string answer =
        unbind_ ? admin_.call("DELETE", path)
                : admin_.call("PUT", path,
                              selectorBody("admin-token cert", spiffe_, subject_, issuer_, pin_));
    if (json_) {
      std::cout << answer;
      return true;
    }
    auto o = parseObject(answer);
    std::printf(
        "admin principal %s (%s) %s\n", o->getValue<std::string>("name").c_str(),
        o->getValue<std::string>("id").c_str(),
        o->has("certificate") ? "is bound to a client certificate" : "has no client certificate");
    return true;
  }
  if (revoke_->parsed()) {
    std::string answer = admin_.call("DELETE", "/v1/admin-tokens/" + name_);
    if (json_) {
      std::cout << answer;
      return true;
    }
    auto o = parseObject(answer);
    std::printf("admin principal %s (%s) %s\n", o->getValue<std::string>("name").c_str(),
                o->getValue<std::string>("id").c_str(),
                o->getValue<bool>("changed") ? "revoked" : "was already revoked");
    return true;
  }
  return false;
}

void AdminCommands::runX() {
  if (plugin_.find('/') == std::string::npos) {
    AdminClient::die("plugin must be namespace/name, got " + plugin_);
  }
  while (!path_.empty() && path_.front() == '/') path_.erase(0, 1);
  std::string answer = admin_.call(method_, "/v1/x/" + plugin_ + "/" + path_, data_);
  if (output_ == "json" || json_) {
    try {  // a plugin that answers something else is worth saying so, not passing on
      Poco::JSON::Parser().parse(answer);
    } catch (const Poco::Exception&) {
      AdminClient::die("the plugin's answer is not JSON (try --output text)");
    }
  }
  std::cout << answer;
  if (!answer.empty() && answer.back() != '\n') std::cout << "\n";
}

}  // namespace trellis::cli
