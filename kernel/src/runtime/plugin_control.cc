#include "runtime/plugin_control.h"

#include <Poco/JSON/Array.h>
#include <Poco/JSON/Object.h>
#include <Poco/JSON/Parser.h>

#include "runtime/responses.h"
#include "trellis/kernel/http/problem.h"

namespace trellis::kernel::runtime {
namespace bhttp = boost::beast::http;
using Poco::JSON::Object;

namespace {

enum Endpoint : size_t { kInstallCheck, kActivate, kDeactivate };

}  // namespace

PluginControl::PluginControl(PluginManager& plugins, ActiveRoutes& routes,
                             std::chrono::milliseconds drain)
    : plugins_(plugins), routes_(routes), drain_(drain) {
  (void)router_.add("POST", "/v1/plugins/install-check", kInstallCheck);
  (void)router_.add("POST", "/v1/plugins/{ns}/{name}/activate", kActivate);
  (void)router_.add("POST", "/v1/plugins/{ns}/{name}/deactivate", kDeactivate);
}

bool PluginControl::handle(const http::Request& req, std::string_view path,
                           const http::Respond& respond) {
  auto m = router_.match(req.method_string(), path);
  if (!m) return respondNotMatched(router_, req, path, respond);
  // The request stays alive and untouched until respond is called (http::RequestHandler);
  // the match's views point into it and into the router.
  if (!worker_.trySubmit([this, &req, match = *m, respond] { respond(answer(req, match)); })) {
    respond(failureResponse(req, Status::unavailable("too many plugin changes queued; retry")));
  }
  return true;
}

http::Response PluginControl::answer(const http::Request& req, const http::RouteMatch& m) {
  if (m.target == kInstallCheck) return installCheck(req);
  const std::string id =
      std::string(m.param("ns").value_or("")) + "/" + std::string(m.param("name").value_or(""));
  if (!plugin::isValidPluginId(id)) {
    return failureResponse(req, Status::invalid("\"" + id + "\" is not a plugin id"));
  }
  // activate takes an optional {"version": "1.0.0"}: that installed version, not the highest.
  std::optional<plugin::Version> version;
  if (m.target == kActivate && !req.body().empty()) {
    try {
      auto o = Poco::JSON::Parser().parse(req.body()).extract<Object::Ptr>();
      auto v = plugin::Version::parse(o->getValue<std::string>("version"));
      if (!v) return failureResponse(req, v.status());
      version = std::move(*v);
    } catch (const Poco::Exception& e) {
      return failureResponse(
          req, Status::invalid("body must be {\"version\": \"x.y.z\"}: " + e.displayText()));
    }
  }
  auto done = m.target == kActivate ? plugins_.activate(id, routes_, drain_, version)
                                    : plugins_.deactivate(id, routes_, drain_);
  if (!done) return failureResponse(req, done.status());
  Object::Ptr o = new Object(Poco::JSON_PRESERVE_KEY_ORDER);
  o->set("id", id);
  o->set("version", done->version);
  o->set("previous", done->previous);
  o->set("drained", done->drained);
  o->set("unchanged", done->already);
  return jsonResponse(req, 200, o);
}

http::Response PluginControl::installCheck(const http::Request& req) {
  InstallCheck check;
  try {
    auto o = Poco::JSON::Parser().parse(req.body()).extract<Object::Ptr>();
    check.id = o->getValue<std::string>("id");
    check.version = o->getValue<std::string>("version");
    check.publisher = o->optValue<std::string>("publisher", "");
    check.source = o->optValue<std::string>("source", "");
    if (auto caps = o->getArray("capabilities")) {
      for (size_t i = 0; i < caps->size(); ++i) {
        check.capabilities.push_back(caps->getElement<std::string>(static_cast<unsigned>(i)));
      }
    }
  } catch (const Poco::Exception& e) {
    return failureResponse(req, Status::invalid("body must be {\"id\",\"version\",\"publisher\","
                                                "\"source\",\"capabilities\"}: " +
                                                e.displayText()));
  }
  if (policy_) {
    if (auto denied = policy_(check)) {
      return http::problem(
          403, "Forbidden",
          "the on_plugin_install policy denied " + check.id + "@" + check.version + ": " + *denied,
          {}, &req);
    }
  }
  Object::Ptr o = new Object(Poco::JSON_PRESERVE_KEY_ORDER);
  o->set("allowed", true);
  o->set("policy", static_cast<bool>(policy_));
  return jsonResponse(req, 200, o);
}

}  // namespace trellis::kernel::runtime
