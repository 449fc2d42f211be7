#include "runtime/tenant_config_admin.h"

#include <Poco/JSON/Object.h>
#include <Poco/JSON/Parser.h>
#include <spdlog/spdlog.h>

#include <sstream>

#include "auth/internal/strict_json.h"
#include "runtime/responses.h"
#include "trellis/kernel/http/problem.h"

namespace trellis::kernel::runtime {
namespace bhttp = boost::beast::http;
using Poco::JSON::Object;

namespace {

Poco::Dynamic::Var parsed(const std::string& json) {
  return Poco::JSON::Parser().parse(json);
}

}  // namespace

TenantConfigAdmin::TenantConfigAdmin(tenants::TenantRegistry& registry,
                                     const PluginManager& plugins)
    : registry_(registry), plugins_(plugins) {
  const std::pair<const char*, const char*> routes[] = {
      {"GET", "/v1/tenants/{id}/plugins/{ns}/{name}/config"},
      {"PUT", "/v1/tenants/{id}/plugins/{ns}/{name}/config"},
      {"DELETE", "/v1/tenants/{id}/plugins/{ns}/{name}/config"}};
  for (const auto& [method, pattern] : routes) {
    Status s = router_.add(method, pattern, 0);
    assert(s.isOk() && "admin routes are constant");
    (void)s;
  }
}

std::optional<http::Response> TenantConfigAdmin::handle(const http::Request& req,
                                                        std::string_view path) {
  auto m = router_.match(req.method_string(), path);
  if (!m) return notMatched(router_, req, path);
  const std::string tenant(m->param("id").value_or(""));
  const std::string plugin_id =
      std::string(m->param("ns").value_or("")) + "/" + std::string(m->param("name").value_or(""));
  auto view = registry_.view(tenant);
  if (!view) return failureResponse(req, Status::notFound("no tenant \"" + tenant + "\""));
  const auto running = plugins_.read();
  const PluginInstance* plugin = running.find(plugin_id);
  if (!plugin) {
    return failureResponse(
        req, Status::notFound("plugin \"" + plugin_id + "\" is not enabled on this host"));
  }
  if (!plugin->manifest().tenant_config) {
    return failureResponse(
        req, Status::invalid("plugin " + plugin_id + " " + plugin->manifest().version.toString() +
                             " declares no configuration tenants may override "
                             "(its manifest has no \"tenant_config\")"));
  }
  if (req.method() == bhttp::verb::get) return show(req, tenant, *plugin);

  std::optional<std::string> overrides;
  if (req.method() == bhttp::verb::put) {
    // Strict: a duplicate key would let the schema check and the plugin see two documents.
    auto body = auth::internal::parseJsonObject(req.body(), "the overrides");
    if (!body) return failureResponse(req, body.status());
    std::ostringstream text;
    (*body)->stringify(text);
    if (Status s = plugin->manifest().tenant_config->validate(text.str()); !s) {
      return failureResponse(req, Status::invalid("the overrides do not fit " + plugin_id +
                                                  "'s tenant_config: " + s.message()));
    }
    overrides = text.str();
  }
  if (Status s = registry_.setPluginConfig(tenant, plugin_id, overrides); !s) {
    return failureResponse(req, s);
  }
  spdlog::info("admin: tenant {}'s configuration of plugin {} {}", tenant, plugin_id,
               overrides ? "set" : "removed");
  if (!overrides) {
    http::Response res{bhttp::status::no_content, req.version()};
    res.keep_alive(req.keep_alive());
    return res;
  }
  return show(req, tenant, *plugin);
}

http::Response TenantConfigAdmin::show(const http::Request& req, const std::string& tenant,
                                       const PluginInstance& plugin) const {
  auto view = registry_.view(tenant);
  Object::Ptr o = new Object(Poco::JSON_PRESERVE_KEY_ORDER);
  o->set("tenant", tenant);
  o->set("plugin", plugin.id());
  o->set("version", plugin.manifest().version.toString());
  Poco::Dynamic::Var overrides = Object::Ptr(new Object);
  if (view) {
    if (auto it = view->plugin_config.find(plugin.id()); it != view->plugin_config.end()) {
      overrides = parsed(it->second);
    }
  }
  o->set("overrides", overrides);
  o->set("schema", parsed(plugin.manifest().tenant_config_json));
  return jsonResponse(req, 200, o);
}

}  // namespace trellis::kernel::runtime
