#include "runtime/policy_admin.h"

#include <Poco/JSON/Array.h>
#include <Poco/JSON/Object.h>
#include <Poco/JSON/Parser.h>
#include <spdlog/spdlog.h>

#include <cassert>

#include "runtime/responses.h"
#include "trellis/kernel/http/problem.h"

namespace trellis::kernel::runtime {
namespace bhttp = boost::beast::http;
using Poco::JSON::Array;
using Poco::JSON::Object;

namespace {

http::Response failure(const http::Request& req, const Status& s, unsigned invalid_as = 400) {
  unsigned code = s.code() == StatusCode::kInvalid ? invalid_as : httpStatusFor(s.toC());
  return http::problem(code, bhttp::obsolete_reason(static_cast<bhttp::status>(code)), s.message(),
                       {}, &req);
}

Object::Ptr infoJson(const lua::PolicyInfo& p) {
  Object::Ptr o = new Object(Poco::JSON_PRESERVE_KEY_ORDER);
  o->set("scope", p.scope);
  if (!p.tenant.empty()) o->set("tenant", p.tenant);
  o->set("version", p.version);
  o->set("name", p.name);
  Array::Ptr hooks = new Array;
  for (const auto& h : p.hooks) hooks->add(h);
  o->set("hooks", hooks);
  o->set("applied_at_ms", p.applied_at_ms);
  return o;
}

}  // namespace

PolicyAdmin::PolicyAdmin(lua::PolicyEngine& engine, const tenants::TenantRegistry& registry)
    : engine_(engine), registry_(registry) {
  const std::tuple<const char*, const char*, Endpoint> routes[] = {
      {"GET", "/v1/policies", kList},
      {"PUT", "/v1/policies/global", kApplyGlobal},
      {"PUT", "/v1/policies/tenants/{id}", kApplyTenant},
      {"POST", "/v1/policies/global/rollback", kRollbackGlobal},
      {"POST", "/v1/policies/tenants/{id}/rollback", kRollbackTenant},
      {"DELETE", "/v1/policies/global", kRemoveGlobal},
      {"DELETE", "/v1/policies/tenants/{id}", kRemoveTenant}};
  for (const auto& [method, pattern, endpoint] : routes) {
    Status s = router_.add(method, pattern, endpoint);
    assert(s.isOk() && "admin routes are constant");
    (void)s;
  }
}

bool PolicyAdmin::handle(const http::Request& req, std::string_view path,
                         const http::Respond& respond) {
  auto m = router_.match(req.method_string(), path);
  if (!m) return respondNotMatched(router_, req, path, respond);
  const auto e = static_cast<Endpoint>(m->target);
  std::string tenant(m->param("id").value_or(""));
  if (e != kApplyGlobal && e != kApplyTenant && e != kRollbackGlobal && e != kRollbackTenant) {
    respond(dispatch(e, req, tenant));
    return true;
  }
  // The request stays alive and untouched until respond is called (http::RequestHandler).
  if (!compiler_.trySubmit(
          [this, e, &req, tenant, respond] { respond(dispatch(e, req, tenant)); })) {
    respond(failure(req, Status::unavailable("too many policy changes queued; retry")));
  }
  return true;
}

void PolicyAdmin::tenantDeleted(std::string_view tenant) {
  if (Status s = engine_.forgetTenant(tenant); !s) {
    spdlog::error("admin: tenant {} deleted but its policy was not: {}", tenant, s.toString());
  }
}

http::Response PolicyAdmin::dispatch(Endpoint e, const http::Request& req,
                                     const std::string& tenant) {
  if (!tenant.empty() && !registry_.get(tenant)) {
    return failure(req, Status::notFound("no tenant \"" + tenant + "\""));
  }
  switch (e) {
    case kList: {
      Array::Ptr list = new Array;
      for (const auto& p : engine_.list()) list->add(infoJson(p));
      Object::Ptr o = new Object;
      o->set("policies", list);
      return jsonResponse(req, 200, o);
    }
    case kApplyGlobal:
    case kApplyTenant: {
      std::string name, source;
      try {
        auto v = Poco::JSON::Parser().parse(req.body());
        auto o = v.extract<Object::Ptr>();
        for (const auto& field : o->getNames()) {
          if (field != "name" && field != "source") {
            return failure(req, Status::invalid("unknown field \"" + field + "\""));
          }
        }
        name = o->getValue<std::string>("name");
        source = o->getValue<std::string>("source");
      } catch (const Poco::Exception& ex) {
        return failure(req, Status::invalid("body must be {\"name\": \"file.lua\", \"source\": "
                                            "\"...\"}: " +
                                            ex.message()));
      }
      auto applied = engine_.apply(tenant, name, source);
      if (!applied) return failure(req, applied.status(), 422);
      return jsonResponse(req, 200, infoJson(*applied));
    }
    case kRollbackGlobal:
    case kRollbackTenant: {
      auto back = engine_.rollback(tenant);
      if (!back) return failure(req, back.status(), 422);
      return jsonResponse(req, 200, infoJson(*back));
    }
    case kRemoveGlobal:
    case kRemoveTenant: {
      if (Status s = engine_.remove(tenant); !s) return failure(req, s);
      http::Response res{bhttp::status::no_content, req.version()};
      res.keep_alive(req.keep_alive());
      return res;
    }
  }
  return failure(req, Status::internal("unhandled policy endpoint"));
}

}  // namespace trellis::kernel::runtime
