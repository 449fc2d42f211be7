#include "runtime/tenant_admin.h"

#include <Poco/JSON/Array.h>
#include <Poco/JSON/Object.h>
#include <Poco/JSON/Parser.h>
#include <spdlog/spdlog.h>

#include "auth/cert_identity.h"
#include "runtime/responses.h"
#include "runtime/tenant_json.h"
#include "trellis/kernel/http/problem.h"
#include "trellis/kernel/plugin/manifest.h"

namespace trellis::kernel::runtime {
namespace bhttp = boost::beast::http;
using Poco::JSON::Array;
using Poco::JSON::Object;

namespace {

using tenants::kQuotaFields;

// Strict JSON body: an object with only `allowed` members.
Object::Ptr certJson(const tenants::CertCredential& c) {
  Object::Ptr o = new Object(Poco::JSON_PRESERVE_KEY_ORDER);
  o->set("id", c.id);
  o->set("tenant", c.tenant);
  o->set("principal", "cert:" + c.id);
  o->set("kind", std::string(tenants::certSelectorKindName(c.selector.kind)));
  o->set("selector", auth::selectorJson(c.selector));
  o->set("created_at_ms", c.created_at_ms);
  if (c.expires_at_ms) o->set("expires_at_ms", *c.expires_at_ms);
  if (c.revoked_at_ms) o->set("revoked_at_ms", *c.revoked_at_ms);
  return o;
}

Result<Object::Ptr> parseBody(const http::Request& req,
                              std::initializer_list<std::string_view> allowed) {
  if (req.body().empty()) return Object::Ptr(new Object);
  Poco::Dynamic::Var v;
  try {
    v = Poco::JSON::Parser().parse(req.body());
  } catch (const Poco::Exception& e) {
    return Status::invalid("body is not valid JSON: " + e.message());
  }
  if (v.type() != typeid(Object::Ptr)) return Status::invalid("body must be a JSON object");
  auto o = v.extract<Object::Ptr>();
  for (const auto& name : o->getNames()) {
    if (std::find(allowed.begin(), allowed.end(), name) == allowed.end()) {
      return Status::invalid("unknown field \"" + name + "\"");
    }
  }
  return o;
}

// Fills plan, labels, plugins and overrides of `t` from a create/update body.
Status readTenantFields(const Object::Ptr& o, tenants::TenantRecord& t) {
  try {
    if (o->has("plan")) t.plan = o->getValue<std::string>("plan");
    if (o->has("labels")) {
      auto labels = o->getObject("labels");
      if (!labels) return Status::invalid("labels: expected an object of strings");
      t.labels.clear();
      for (const auto& k : labels->getNames()) t.labels[k] = labels->getValue<std::string>(k);
    }
    if (o->has("plugins")) {
      auto plugins = o->getArray("plugins");
      if (!plugins) return Status::invalid("plugins: expected an array of plugin ids");
      t.plugins.clear();
      for (size_t i = 0; i < plugins->size(); ++i) {
        t.plugins.insert(plugins->getElement<std::string>(static_cast<unsigned>(i)));
      }
    }
    if (o->has("grants")) {
      auto grants = o->getObject("grants");
      if (!grants) return Status::invalid("grants: expected an object of capability arrays");
      t.grants.clear();
      for (const auto& plugin : grants->getNames()) {
        auto list = grants->getArray(plugin);
        if (!list) return Status::invalid("grants." + plugin + ": expected an array");
        auto& granted = t.grants[plugin];
        for (size_t i = 0; i < list->size(); ++i) {
          auto capability = list->getElement<std::string>(static_cast<unsigned>(i));
          if (!plugin::isKnownCapability(capability)) {
            return Status::invalid("grants." + plugin + ": unknown capability \"" + capability +
                                   "\"");
          }
          granted.insert(std::move(capability));
        }
      }
    }
    if (o->has("quotas")) {
      auto q = o->getObject("quotas");
      if (!q) return Status::invalid("quotas: expected an object");
      t.overrides = {};
      for (const auto& name : q->getNames()) {
        bool known = false;
        for (const auto& [field_name, field] : kQuotaFields) {
          if (name != field_name) continue;
          known = true;
          auto value = q->getValue<int64_t>(name);
          if (value < 1) return Status::invalid("quotas." + name + ": must be at least 1");
          t.overrides.*field = static_cast<uint64_t>(value);
        }
        if (!known) return Status::invalid("quotas." + name + ": unknown quota");
      }
    }
  } catch (const Poco::Exception& e) {
    return Status::invalid("wrong type: " + e.message());
  }
  return Status::ok();
}

}  // namespace

TenantAdmin::TenantAdmin(tenants::TenantRegistry& registry, tenants::Admission& admission,
                         storage::KvStore& storage, std::vector<tenants::Drift> drift,
                         EgressUsageFn egress_usage)
    : registry_(registry),
      admission_(admission),
      storage_(storage),
      egress_usage_(std::move(egress_usage)),
      drift_(std::move(drift)) {
  const std::tuple<const char*, const char*, Endpoint> routes[] = {
      {"GET", "/v1/tenants", kList},
      {"POST", "/v1/tenants", kCreate},
      {"GET", "/v1/tenants/{id}", kShow},
      {"PUT", "/v1/tenants/{id}", kUpdate},
      {"POST", "/v1/tenants/{id}/suspend", kSuspend},
      {"POST", "/v1/tenants/{id}/resume", kResume},
      {"DELETE", "/v1/tenants/{id}", kDelete},
      {"GET", "/v1/tenants/{id}/usage", kUsage},
      {"GET", "/v1/tenants/{id}/keys", kKeys},
      {"POST", "/v1/tenants/{id}/keys", kCreateKey},
      {"DELETE", "/v1/keys/{key}", kRevokeKey},
      {"GET", "/v1/tenants/{id}/certs", kCerts},
      {"POST", "/v1/tenants/{id}/certs", kAddCert},
      {"DELETE", "/v1/tenants/{id}/certs/{cert}", kRevokeCert},
      {"GET", "/v1/drift", kDrift}};
  for (const auto& [method, pattern, endpoint] : routes) {
    Status s = router_.add(method, pattern, endpoint);
    assert(s.isOk() && "admin routes are constant");
    (void)s;
  }
}

std::optional<http::Response> TenantAdmin::handle(const http::Request& req, std::string_view path) {
  auto m = router_.match(req.method_string(), path);
  if (!m) return notMatched(router_, req, path);
  return dispatch(static_cast<Endpoint>(m->target), req, *m);
}

http::Response TenantAdmin::dispatch(Endpoint e, const http::Request& req,
                                     const http::RouteMatch& m) {
  std::string id(m.param("id").value_or(""));
  switch (e) {
    case kList: {
      Array::Ptr list = new Array;
      for (const auto& t : registry_.list()) list->add(tenantJson(t));
      Object::Ptr o = new Object;
      o->set("tenants", list);
      return jsonResponse(req, 200, o);
    }
    case kCreate:
    case kUpdate: {
      auto body = parseBody(req, {"id", "plan", "labels", "plugins", "grants", "quotas"});
      if (!body) return failureResponse(req, body.status());
      tenants::TenantRecord t;
      if (e == kUpdate) {
        auto current = registry_.get(id);
        if (!current) return failureResponse(req, current.status());
        t = std::move(*current);
      } else {
        t.id = (*body)->optValue<std::string>("id", "");
      }
      if (Status s = readTenantFields(*body, t); !s) return failureResponse(req, s);
      auto saved = e == kCreate ? registry_.create(std::move(t)) : registry_.update(std::move(t));
      if (!saved) return failureResponse(req, saved.status());
      spdlog::info("admin: tenant {} {}", saved->id, e == kCreate ? "created" : "updated");
      return jsonResponse(req, e == kCreate ? 201 : 200, tenantJson(*saved));
    }
    case kShow: {
      auto t = registry_.get(id);
      if (!t) return failureResponse(req, t.status());
      return jsonResponse(req, 200, tenantJson(*t));
    }
    case kSuspend:
    case kResume: {
      auto status =
          e == kSuspend ? tenants::TenantStatus::kSuspended : tenants::TenantStatus::kActive;
      if (Status s = registry_.setStatus(id, status); !s) return failureResponse(req, s);
      spdlog::info("admin: tenant {} {}", id, e == kSuspend ? "suspended" : "resumed");
      auto t = registry_.get(id);
      return t ? jsonResponse(req, 200, tenantJson(*t)) : failureResponse(req, t.status());
    }
    case kDelete: {
      // Deleting destroys data: the caller repeats the id, as `trellis tenant delete` does.
      std::string_view target = req.target();
      size_t q = target.find('?');
      auto confirm = q == std::string_view::npos
                         ? std::nullopt
                         : http::queryParam(target.substr(q + 1), "confirm");
      if (confirm != id) {
        return http::problem(400, "Bad Request",
                             "deleting a tenant removes all its data: repeat its id as "
                             "?confirm=" +
                                 id,
                             {}, &req);
      }
      if (Status s = registry_.remove(id); !s) return failureResponse(req, s);
      admission_.forget(id);
      if (Status s = storage_.removeTenant(id); !s) {
        spdlog::error("admin: tenant {} deleted but its data was not removed: {}", id,
                      s.toString());
        return failureResponse(req, s);
      }
      spdlog::info("admin: tenant {} deleted with its data", id);
      http::Response res{bhttp::status::no_content, req.version()};
      res.keep_alive(req.keep_alive());
      return res;
    }
    case kUsage: {
      auto view = registry_.view(id);
      if (!view) return failureResponse(req, Status::notFound("no tenant \"" + id + "\""));
      auto stored = storage_.storageBytes(id);
      if (!stored) return failureResponse(req, stored.status());
      auto o = usageJson(*view, admission_.usage(id), *stored,
                         egress_usage_ ? egress_usage_(id) : EgressUsage{});
      return jsonResponse(req, 200, o);
    }
    case kKeys: {
      if (auto t = registry_.get(id); !t) return failureResponse(req, t.status());
      Array::Ptr list = new Array;
      for (const auto& k : registry_.listKeys(id)) list->add(keyJson(k));
      Object::Ptr o = new Object;
      o->set("keys", list);
      return jsonResponse(req, 200, o);
    }
    case kCreateKey: {
      auto body = parseBody(req, {"ttl_seconds"});
      if (!body) return failureResponse(req, body.status());
      std::optional<int64_t> ttl;
      if ((*body)->has("ttl_seconds")) {
        try {
          ttl = (*body)->getValue<int64_t>("ttl_seconds");
        } catch (const Poco::Exception&) {
          return failureResponse(req, Status::invalid("ttl_seconds: expected an integer"));
        }
        if (*ttl < 1)
          return failureResponse(req, Status::invalid("ttl_seconds: must be at least 1"));
      }
      auto key = registry_.createKey(id, ttl);
      if (!key) return failureResponse(req, key.status());
      spdlog::info("admin: key {} created for tenant {}", key->info.id, id);  // never the secret
      auto o = keyJson(key->info);
      o->set("key", key->secret);
      return jsonResponse(req, 201, o);
    }
    case kRevokeKey: {
      std::string key_id(m.param("key").value_or(""));
      if (Status s = registry_.revokeKey(key_id); !s) return failureResponse(req, s);
      spdlog::info("admin: key {} revoked", key_id);
      http::Response res{bhttp::status::no_content, req.version()};
      res.keep_alive(req.keep_alive());
      return res;
    }
    case kCerts: {
      if (auto t = registry_.get(id); !t) return failureResponse(req, t.status());
      Array::Ptr list = new Array;
      for (const auto& c : registry_.listCertCredentials(id)) list->add(certJson(c));
      Object::Ptr o = new Object;
      o->set("certs", list);
      return jsonResponse(req, 200, o);
    }
    case kAddCert: {
      auto body = parseBody(req, {"spiffe", "subject", "issuer", "pin", "expires_at_ms"});
      if (!body) return failureResponse(req, body.status());
      auto selector = auth::selectorFromJson(*body, {"expires_at_ms"});
      if (!selector) return failureResponse(req, selector.status());
      std::optional<int64_t> expires;
      if ((*body)->has("expires_at_ms")) {
        const auto& v = (*body)->get("expires_at_ms");
        if (!v.isInteger())
          return failureResponse(req, Status::invalid("expires_at_ms: expected an integer"));
        expires = v.convert<int64_t>();
      }
      auto added = registry_.addCertCredential(id, std::move(*selector), expires);
      if (!added) return failureResponse(req, added.status());
      spdlog::info("admin: certificate credential {} ({}) added for tenant {}", added->id,
                   added->selector.describe(), id);
      return jsonResponse(req, 201, certJson(*added));
    }
    case kRevokeCert: {
      std::string cert_id(m.param("cert").value_or(""));
      if (Status s = registry_.revokeCertCredential(id, cert_id); !s)
        return failureResponse(req, s);
      spdlog::info("admin: certificate credential {} of tenant {} revoked", cert_id, id);
      http::Response res{bhttp::status::no_content, req.version()};
      res.keep_alive(req.keep_alive());
      return res;
    }
    case kDrift: {
      Array::Ptr list = new Array;
      for (const auto& d : drift_) {
        Object::Ptr o = new Object(Poco::JSON_PRESERVE_KEY_ORDER);
        o->set("tenant", d.tenant);
        o->set("detail", d.detail);
        list->add(o);
      }
      Object::Ptr o = new Object;
      o->set("drift", list);
      return jsonResponse(req, 200, o);
    }
  }
  return failureResponse(req, Status::internal("unhandled admin endpoint"));
}

}  // namespace trellis::kernel::runtime
