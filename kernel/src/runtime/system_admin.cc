#include "runtime/system_admin.h"

#include <Poco/JSON/Array.h>
#include <Poco/JSON/Object.h>

#include "runtime/plugin_manager.h"
#include "runtime/responses.h"
#include "trellis/kernel/http/problem.h"

namespace trellis::kernel::runtime {
namespace bhttp = boost::beast::http;
using Poco::JSON::Object;

namespace {

enum Endpoint : size_t { kList, kGrant, kRevoke };

}  // namespace

SystemAdmin::SystemAdmin(SystemGrants& grants, const PluginManager& plugins)
    : grants_(grants), plugins_(plugins) {
  (void)router_.add("GET", "/v1/system-grants", kList);
  (void)router_.add("PUT", "/v1/plugins/{ns}/{name}/system", kGrant);
  (void)router_.add("DELETE", "/v1/plugins/{ns}/{name}/system", kRevoke);
}

std::optional<http::Response> SystemAdmin::handle(const http::Request& req, std::string_view path) {
  auto m = router_.match(req.method_string(), path);
  if (!m) return notMatched(router_, req, path);
  if (m->target == kList) {
    Poco::JSON::Array::Ptr list = new Poco::JSON::Array;
    const auto running = plugins_.read();
    for (const auto& g : grants_.list()) {
      Object::Ptr o = new Object(Poco::JSON_PRESERVE_KEY_ORDER);
      o->set("plugin", g.plugin);
      o->set("source", std::string(grantSourceName(g.source)));
      o->set("active", running.isSystemPlugin(g.plugin));
      list->add(o);
    }
    Object::Ptr body = new Object(Poco::JSON_PRESERVE_KEY_ORDER);
    body->set("grants", list);
    return jsonResponse(req, 200, body);
  }
  const std::string id =
      std::string(m->param("ns").value_or("")) + "/" + std::string(m->param("name").value_or(""));
  if (!plugin::isValidPluginId(id)) {
    return failureResponse(req, Status::invalid("\"" + id + "\" is not a plugin id"));
  }
  auto changed = m->target == kGrant ? grants_.grant(id) : grants_.revoke(id);
  if (!changed) return failureResponse(req, changed.status());
  Object::Ptr o = new Object(Poco::JSON_PRESERVE_KEY_ORDER);
  o->set("plugin", id);
  o->set("system", m->target == kGrant);
  o->set("changed", *changed);
  o->set("note", m->target == kGrant
                     ? "takes effect when the plugin next activates (trellis plugin activate)"
                     : "system powers end now; the plugin is refused at its next activation");
  return jsonResponse(req, 200, o);
}

}  // namespace trellis::kernel::runtime
