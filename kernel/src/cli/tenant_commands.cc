#include "cli/tenant_commands.h"

#include <Poco/JSON/Array.h>
#include <Poco/JSON/Stringifier.h>
#include <unistd.h>

#include <iostream>

#include "cli/output.h"
#include "trellis/tenants/registry.h"

namespace trellis::cli {
namespace {

std::string quotasText(const Poco::JSON::Object::Ptr& q) {
  std::string out;
  for (const auto& [name_view, field] : tenants::kQuotaFields) {
    const std::string name(name_view);
    if (!q->has(name)) continue;
    out += (out.empty() ? "" : ", ") + name + "=" + q->get(name).toString();
  }
  return out.empty() ? "unlimited" : out;
}

void printTenant(const std::string& body) {
  auto t = parseObject(body);
  std::printf("tenant %s (%s, plan %s, from %s)\n", t->getValue<std::string>("id").c_str(),
              t->getValue<std::string>("status").c_str(), t->getValue<std::string>("plan").c_str(),
              t->getValue<std::string>("source").c_str());
  auto plugins = t->getArray("plugins");
  std::string list;
  for (size_t i = 0; i < plugins->size(); ++i) {
    list += (i ? ", " : "") + plugins->getElement<std::string>(static_cast<unsigned>(i));
  }
  std::printf("  plugins: %s\n", list.empty() ? "(none)" : list.c_str());
  auto labels = t->getObject("labels");
  for (const auto& k : labels->getNames()) {
    std::printf("  label %s=%s\n", k.c_str(), labels->getValue<std::string>(k).c_str());
  }
  if (auto grants = t->getObject("grants")) {
    for (const auto& plugin : grants->getNames()) {
      auto list = grants->getArray(plugin);
      std::string caps;
      for (size_t i = 0; i < list->size(); ++i) {
        caps += (i ? "," : "") + list->getElement<std::string>(static_cast<unsigned>(i));
      }
      std::printf("  grants %s=%s\n", plugin.c_str(), caps.empty() ? "(none)" : caps.c_str());
    }
  }
  std::printf("  quota overrides: %s\n", quotasText(t->getObject("quotas")).c_str());
}

// --grant plugin=cap,cap (empty after '=': no capabilities) as the API's grants object.
Poco::JSON::Object::Ptr grantsBody(const std::vector<std::string>& grants) {
  Poco::JSON::Object::Ptr out = new Poco::JSON::Object;
  for (const auto& g : grants) {
    auto eq = g.find('=');
    if (eq == std::string::npos || eq == 0) {
      AdminClient::die("--grant expects plugin=capability[,capability...], got " + g);
    }
    Poco::JSON::Array::Ptr caps = new Poco::JSON::Array;
    for (size_t begin = eq + 1; begin < g.size();) {
      size_t end = std::min(g.find(',', begin), g.size());
      if (end > begin) caps->add(g.substr(begin, end - begin));
      begin = end + 1;
    }
    out->set(g.substr(0, eq), caps);
  }
  return out;
}

void printTenantList(const std::string& body) {
  auto list = parseObject(body)->getArray("tenants");
  std::printf("%-24s %-10s %-12s %-7s %s\n", "TENANT", "STATUS", "PLAN", "SOURCE", "PLUGINS");
  for (size_t i = 0; i < list->size(); ++i) {
    auto t = list->getObject(static_cast<unsigned>(i));
    std::printf("%-24s %-10s %-12s %-7s %zu\n", t->getValue<std::string>("id").c_str(),
                t->getValue<std::string>("status").c_str(),
                t->getValue<std::string>("plan").c_str(),
                t->getValue<std::string>("source").c_str(), t->getArray("plugins")->size());
  }
}

void printUsage(const std::string& body) {
  auto u = parseObject(body);
  std::printf("tenant %s (plan %s)\n", u->getValue<std::string>("tenant").c_str(),
              u->getValue<std::string>("plan").c_str());
  std::printf("  quotas:    %s\n", quotasText(u->getObject("quotas")).c_str());
  std::printf("  in flight: %s\n", u->get("in_flight").toString().c_str());
  std::printf("  admitted:  %s\n", u->get("admitted").toString().c_str());
  std::printf("  rejected:  %s\n", u->get("rejected").toString().c_str());
  std::printf("  storage:   %s bytes\n", u->get("storage_bytes").toString().c_str());
}

void printKeys(const std::string& body) {
  auto list = parseObject(body)->getArray("keys");
  std::printf("%-12s %-16s %-16s %s\n", "KEY ID", "CREATED (ms)", "EXPIRES (ms)", "STATE");
  for (size_t i = 0; i < list->size(); ++i) {
    auto k = list->getObject(static_cast<unsigned>(i));
    std::printf("%-12s %-16s %-16s %s\n", k->getValue<std::string>("id").c_str(),
                k->get("created_at_ms").toString().c_str(),
                k->has("expires_at_ms") ? k->get("expires_at_ms").toString().c_str() : "never",
                k->has("revoked_at_ms") ? "revoked" : "active");
  }
}

void printNewKey(const std::string& body) {
  auto k = parseObject(body);
  std::printf("key %s for tenant %s (shown once; store it now):\n  %s\n",
              k->getValue<std::string>("id").c_str(), k->getValue<std::string>("tenant").c_str(),
              k->getValue<std::string>("key").c_str());
}

void printNothing(const std::string&) {}

}  // namespace

TenantCommands::TenantCommands(CLI::App& app, const AdminClient& admin, const bool& json)
    : admin_(admin), json_(json) {
  auto* tenant = app.add_subcommand("tenant", "Manage tenants");
  auto* key = app.add_subcommand("key", "Manage tenant API keys");
  tenant->require_subcommand(1);
  key->require_subcommand(1);
  auto withId = [&](CLI::App* parent, const std::string& name, const std::string& help,
                    const std::string& what = "tenant id") {
    auto* c = parent->add_subcommand(name, help);
    c->add_option(what == "tenant id" ? "tenant" : "key-id", id_, what)->required();
    commands_[parent->get_name() + " " + name] = c;
    return c;
  };
  commands_["tenant list"] = tenant->add_subcommand("list", "List tenants");
  withId(tenant, "show", "Show one tenant");
  for (const char* verb : {"create", "update"}) {
    auto* c = withId(tenant, verb, std::string(verb) + " a tenant");
    c->add_option("--plan", plan_, "Plan (quota set) name");
    c->add_option("--label", labels_, "Label key=value (repeatable)");
    c->add_option("--plugin", plugins_, "Enable a plugin for the tenant (repeatable)");
    auto* grant =
        c->add_option("--grant", grants_,
                      "Limit a plugin to these capabilities for the tenant: plugin=cap,cap "
                      "(repeatable; replaces the tenant's grants). egress:<rule> narrows "
                      "egress to destinations, e.g. egress:https://api.example.com or "
                      "egress:tcp://db.internal:5432; list the plugin's other capabilities "
                      "too");
    c->add_flag("--all-capabilities", clear_grants_,
                "Drop every grant: each plugin gets all the capabilities it requests")
        ->excludes(grant);
    for (const auto& [name_view, field] : tenants::kQuotaFields) {
      const std::string q(name_view);
      c->add_option("--" + q, quotas_[q], "Quota override: " + q);
    }
  }
  withId(tenant, "suspend", "Suspend a tenant: its requests get 403");
  withId(tenant, "resume", "Resume a suspended tenant");
  withId(tenant, "delete", "Delete a tenant with its keys and data")
      ->add_flag("--yes", yes_, "Do not ask for confirmation");
  withId(tenant, "usage", "Show a tenant's quotas and current use");
  withId(key, "create", "Create an API key (shown once)")
      ->add_option("--ttl", ttl_seconds_, "Expire after this many seconds");
  withId(key, "list", "List a tenant's keys (ids only)");
  withId(key, "revoke", "Revoke a key", "key id");
  certs_ = std::make_unique<TenantCertCommands>(*tenant, admin_, json_);
  config_ = std::make_unique<TenantConfigCommands>(*tenant, admin_, json_);
}

void TenantCommands::print(const std::string& body, void (*human)(const std::string&)) const {
  if (json_) {
    printStructured(body);
  } else {
    human(body);
  }
}

void TenantCommands::run() {
  auto parsed = [&](const char* name) { return commands_.at(name)->parsed(); };
  if (certs_->run() || config_->run()) return;
  const std::string tenant_path = "/v1/tenants/" + id_;
  if (parsed("tenant list")) return print(admin_.call("GET", "/v1/tenants"), printTenantList);
  if (parsed("tenant show")) return print(admin_.call("GET", tenant_path), printTenant);
  if (parsed("tenant create") || parsed("tenant update")) {
    bool create = parsed("tenant create");
    Poco::JSON::Object body;
    if (create) body.set("id", id_);
    if (!plan_.empty()) body.set("plan", plan_);
    if (!labels_.empty()) {
      Poco::JSON::Object::Ptr labels = new Poco::JSON::Object;
      for (const auto& kv : labels_) {
        auto eq = kv.find('=');
        if (eq == std::string::npos) AdminClient::die("--label expects key=value, got " + kv);
        labels->set(kv.substr(0, eq), kv.substr(eq + 1));
      }
      body.set("labels", labels);
    }
    if (!plugins_.empty()) {
      Poco::JSON::Array::Ptr plugins = new Poco::JSON::Array;
      for (const auto& p : plugins_) plugins->add(p);
      body.set("plugins", plugins);
    }
    if (!grants_.empty() || clear_grants_) body.set("grants", grantsBody(grants_));
    Poco::JSON::Object::Ptr quotas = new Poco::JSON::Object;
    for (const auto& [name, value] : quotas_) {
      if (value > 0) quotas->set(name, value);
    }
    if (quotas->size() > 0) body.set("quotas", quotas);
    std::ostringstream out;
    body.stringify(out);
    return print(
        admin_.call(create ? "POST" : "PUT", create ? "/v1/tenants" : tenant_path, out.str()),
        printTenant);
  }
  if (parsed("tenant suspend")) {
    return print(admin_.call("POST", tenant_path + "/suspend"), printTenant);
  }
  if (parsed("tenant resume")) {
    return print(admin_.call("POST", tenant_path + "/resume"), printTenant);
  }
  if (parsed("tenant delete")) {
    if (!yes_) {
      if (!::isatty(STDIN_FILENO)) {
        AdminClient::die("deleting " + id_ + " removes all its data: pass --yes to confirm");
      }
      std::printf("Deleting tenant %s removes its keys and all its data.\nType its id to confirm: ",
                  id_.c_str());
      std::string typed;
      std::getline(std::cin, typed);
      if (typed != id_) AdminClient::die("not confirmed; nothing was deleted");
    }
    admin_.call("DELETE", tenant_path + "?confirm=" + id_);
    if (!json_) std::printf("tenant %s deleted\n", id_.c_str());
    return;
  }
  if (parsed("tenant usage")) return print(admin_.call("GET", tenant_path + "/usage"), printUsage);
  if (parsed("key create")) {
    std::string body =
        ttl_seconds_ > 0 ? "{\"ttl_seconds\":" + std::to_string(ttl_seconds_) + "}" : "";
    return print(admin_.call("POST", tenant_path + "/keys", body), printNewKey);
  }
  if (parsed("key list")) return print(admin_.call("GET", tenant_path + "/keys"), printKeys);
  if (parsed("key revoke")) {
    print(admin_.call("DELETE", "/v1/keys/" + id_), printNothing);
    if (!json_) std::printf("key %s revoked\n", id_.c_str());
  }
}

}  // namespace trellis::cli
