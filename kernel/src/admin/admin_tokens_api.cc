#include "admin/admin_tokens_api.h"

#include <Poco/JSON/Array.h>
#include <Poco/JSON/Object.h>
#include <Poco/JSON/Parser.h>

#include "auth/cert_identity.h"
#include "runtime/responses.h"
#include "trellis/kernel/http/problem.h"

namespace trellis::kernel::admin {
namespace bhttp = boost::beast::http;
using Poco::JSON::Object;

namespace {

enum Endpoint : size_t { kList, kCreate, kRevoke, kBindCert, kUnbindCert };

Object::Ptr describe(const Principal& p) {
  Object::Ptr o = new Object(Poco::JSON_PRESERVE_KEY_ORDER);
  o->set("id", p.id);
  o->set("name", p.name);
  o->set("role", std::string(roleName(p.role)));
  o->set("created_at_ms", p.created_at_ms);
  if (p.revoked_at_ms) o->set("revoked_at_ms", *p.revoked_at_ms);
  if (p.certificate) o->set("certificate", auth::selectorJson(*p.certificate));
  return o;
}

}  // namespace

AdminTokensApi::AdminTokensApi(AdminPrincipals& principals) : principals_(principals) {
  (void)router_.add("GET", "/v1/admin-tokens", kList);
  (void)router_.add("POST", "/v1/admin-tokens", kCreate);
  (void)router_.add("DELETE", "/v1/admin-tokens/{id}", kRevoke);
  (void)router_.add("PUT", "/v1/admin-tokens/{id}/certificate", kBindCert);
  (void)router_.add("DELETE", "/v1/admin-tokens/{id}/certificate", kUnbindCert);
}

std::optional<http::Response> AdminTokensApi::handle(const http::Request& req,
                                                     std::string_view path) {
  auto m = router_.match(req.method_string(), path);
  if (!m) return runtime::notMatched(router_, req, path);
  if (m->target == kList) {
    Poco::JSON::Array::Ptr list = new Poco::JSON::Array;
    for (const auto& p : principals_.list()) list->add(describe(p));
    Object::Ptr body = new Object(Poco::JSON_PRESERVE_KEY_ORDER);
    body->set("principals", list);
    return runtime::jsonResponse(req, 200, body);
  }
  if (m->target == kRevoke) {
    Principal revoked;
    auto changed = principals_.revoke(std::string(m->param("id").value_or("")), &revoked);
    if (!changed) return runtime::failureResponse(req, changed.status());
    Object::Ptr o = describe(revoked);
    o->set("changed", *changed);
    return runtime::jsonResponse(req, 200, o);
  }
  if (m->target == kBindCert || m->target == kUnbindCert) {
    std::optional<tenants::CertSelector> selector;
    if (m->target == kBindCert) {
      Object::Ptr body;
      try {
        body = Poco::JSON::Parser().parse(req.body()).extract<Object::Ptr>();
      } catch (const Poco::Exception& e) {
        return runtime::failureResponse(
            req, Status::invalid("body must be a JSON object: " + e.displayText()));
      }
      auto parsed = auth::selectorFromJson(body);
      if (!parsed) return runtime::failureResponse(req, parsed.status());
      selector = std::move(*parsed);
    }
    auto bound = principals_.bindCertificate(std::string(m->param("id").value_or("")), selector);
    if (!bound) return runtime::failureResponse(req, bound.status());
    return runtime::jsonResponse(req, 200, describe(*bound));
  }
  std::string name, role_text;
  try {
    auto o = Poco::JSON::Parser().parse(req.body()).extract<Object::Ptr>();
    std::vector<std::string> names;
    o->getNames(names);
    for (const auto& n : names) {
      if (n != "name" && n != "role") {
        return runtime::failureResponse(
            req, Status::invalid("unknown field \"" + n + "\" (known: name, role)"));
      }
    }
    name = o->getValue<std::string>("name");
    role_text = o->getValue<std::string>("role");
  } catch (const Poco::Exception& e) {
    return runtime::failureResponse(req,
                                    Status::invalid("body must be {\"name\": \"alice\", \"role\": "
                                                    "\"admin|operator|auditor|billing\"}: " +
                                                    e.displayText()));
  }
  auto role = parseRole(role_text);
  if (!role) {
    return runtime::failureResponse(
        req, Status::invalid("unknown role \"" + role_text +
                             "\" (known: admin, operator, auditor, billing)"));
  }
  auto made = principals_.create(name, *role);
  if (!made) return runtime::failureResponse(req, made.status());
  Object::Ptr o = describe(made->principal);
  o->set("token", made->token);
  return runtime::jsonResponse(req, 201, o);
}

}  // namespace trellis::kernel::admin
