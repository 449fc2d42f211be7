#include "runtime/plugin_control.h"

#include <Poco/JSON/Array.h>
#include <Poco/JSON/Object.h>
#include <Poco/JSON/Parser.h>

#include "runtime/responses.h"
#include "trellis/kernel/http/problem.h"
#include "trellis/kernel/util/json.h"

namespace trellis::kernel::runtime {
namespace bhttp = boost::beast::http;
using Poco::JSON::Object;

namespace {

enum Endpoint : size_t { kInstallCheck, kActivate, kDeactivate };

// What POST …/activate may ask for; every member is optional.
struct ActivateBody {
  std::optional<plugin::Version> version;
  std::optional<PluginManager::IsolationChoice> isolation;
};

Result<ActivateBody> parseActivateBody(const std::string& body) {
  ActivateBody out;
  if (body.empty()) return out;
  const std::string shape =
      "body must be {\"version\": \"x.y.z\", \"isolation\": \"process\"|\"in-process\", "
      "\"dedicated_tenants\": [\"tenant\", …]} (each optional)";
  Object::Ptr o;
  try {
    o = Poco::JSON::Parser().parse(body).extract<Object::Ptr>();
  } catch (const Poco::Exception& e) {
    return Status::invalid(shape + ": " + e.displayText());
  }
  for (const auto& [key, value] : *o) {
    if (key != "version" && key != "isolation" && key != "dedicated_tenants") {
      return Status::invalid("unknown member \"" + key + "\"; " + shape);
    }
  }
  if (o->has("version")) {
    if (!o->get("version").isString()) return Status::invalid("version: expected a string");
    auto v = plugin::Version::parse(o->getValue<std::string>("version"));
    if (!v) return v.status();
    out.version = std::move(*v);
  }
  if (o->has("isolation")) {
    if (!o->get("isolation").isString()) {
      return Status::invalid("isolation: expected \"process\" or \"in-process\"");
    }
    const std::string mode = o->getValue<std::string>("isolation");
    PluginManager::IsolationChoice choice;
    if (mode == "process") {
      choice.mode = config::Isolation::kProcess;
    } else if (mode == "in-process") {
      choice.mode = config::Isolation::kInProcess;
    } else {
      std::string got;
      util::appendJsonString(got, mode.substr(0, 64));
      return Status::invalid("isolation: expected \"process\" or \"in-process\", got " + got);
    }
    out.isolation = choice;
  }
  if (o->has("dedicated_tenants")) {
    if (!out.isolation) {
      return Status::invalid("dedicated_tenants needs \"isolation\": \"process\" in the same body");
    }
    auto list = o->getArray("dedicated_tenants");
    if (!list) return Status::invalid("dedicated_tenants: expected an array of tenant ids");
    std::vector<std::string> tenants;
    for (size_t i = 0; i < list->size(); ++i) {
      Poco::Dynamic::Var v = list->get(static_cast<unsigned>(i));
      if (!v.isString() || v.extract<std::string>().empty()) {
        return Status::invalid("dedicated_tenants[" + std::to_string(i) +
                               "]: expected a tenant id");
      }
      tenants.push_back(v.extract<std::string>());
    }
    out.isolation->dedicated_tenants = std::move(tenants);
  }
  return out;
}

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
  // activate takes an optional {"version": "1.0.0"} (that installed version, not the
  // highest) and {"isolation": …, "dedicated_tenants": […]} (run it in that mode).
  ActivateBody body;
  if (m.target == kActivate) {
    auto parsed = parseActivateBody(req.body());
    if (!parsed) return failureResponse(req, parsed.status());
    body = std::move(*parsed);
  }
  auto done = m.target == kActivate
                  ? plugins_.activate(id, routes_, drain_, body.version, body.isolation)
                  : plugins_.deactivate(id, routes_, drain_);
  if (!done) return failureResponse(req, done.status());
  Object::Ptr o = new Object(Poco::JSON_PRESERVE_KEY_ORDER);
  o->set("id", id);
  o->set("version", done->version);
  o->set("previous", done->previous);
  o->set("drained", done->drained);
  o->set("unchanged", done->already);
  if (m.target == kActivate && !done->isolation.empty()) {
    o->set("isolation", done->isolation);
    o->set("previous_isolation", done->previous_isolation);
  }
  if (body.isolation) {
    // Said in every answer, so the choice never reverts at a restart unannounced.
    o->set("persists_across_restart", false);
    o->set("note",
           "isolation chosen at run time holds until trellisd restarts; trellis.yaml sets it "
           "again at start (set isolation on the plugin's plugins.enabled entry to keep it)");
  }
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
