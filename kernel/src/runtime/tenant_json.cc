#include "runtime/tenant_json.h"

#include <Poco/JSON/Array.h>

namespace trellis::kernel::runtime {
using Poco::JSON::Array;
using Poco::JSON::Object;

Object::Ptr quotasJson(const tenants::Quotas& q) {
  Object::Ptr o = new Object(Poco::JSON_PRESERVE_KEY_ORDER);
  for (const auto& [name, field] : tenants::kQuotaFields) {
    if (q.*field) o->set(std::string(name), *(q.*field));
  }
  return o;
}

Object::Ptr grantsJson(const std::map<std::string, std::set<std::string>>& grants) {
  Object::Ptr o = new Object(Poco::JSON_PRESERVE_KEY_ORDER);
  for (const auto& [plugin, capabilities] : grants) {
    Array::Ptr list = new Array;
    for (const auto& c : capabilities) list->add(c);
    o->set(plugin, list);
  }
  return o;
}

Object::Ptr tenantJson(const tenants::TenantRecord& t) {
  Object::Ptr o = new Object(Poco::JSON_PRESERVE_KEY_ORDER);
  o->set("id", t.id);
  o->set("status", std::string(tenants::tenantStatusName(t.status)));
  o->set("plan", t.plan);
  Object::Ptr labels = new Object(Poco::JSON_PRESERVE_KEY_ORDER);
  for (const auto& [k, v] : t.labels) labels->set(k, v);
  o->set("labels", labels);
  Array::Ptr plugins = new Array;
  for (const auto& p : t.plugins) plugins->add(p);
  o->set("plugins", plugins);
  o->set("grants", grantsJson(t.grants));
  o->set("quotas", quotasJson(t.overrides));
  o->set("source", t.source);
  o->set("created_at_ms", t.created_at_ms);
  return o;
}

Object::Ptr keyJson(const tenants::KeyInfo& k) {
  Object::Ptr o = new Object(Poco::JSON_PRESERVE_KEY_ORDER);
  o->set("id", k.id);
  o->set("tenant", k.tenant);
  o->set("created_at_ms", k.created_at_ms);
  if (k.expires_at_ms) o->set("expires_at_ms", *k.expires_at_ms);
  if (k.revoked_at_ms) o->set("revoked_at_ms", *k.revoked_at_ms);
  return o;
}

Object::Ptr usageJson(const tenants::TenantView& tenant, const tenants::Admission::Usage& usage,
                      uint64_t storage_bytes, EgressUsage egress) {
  Object::Ptr o = new Object(Poco::JSON_PRESERVE_KEY_ORDER);
  o->set("tenant", tenant.id);
  o->set("plan", tenant.plan);
  o->set("quotas", quotasJson(tenant.quotas));
  o->set("in_flight", usage.in_flight);
  o->set("admitted", usage.admitted);
  o->set("rejected", usage.rejected);
  o->set("storage_bytes", storage_bytes);
  Object::Ptr e = new Object(Poco::JSON_PRESERVE_KEY_ORDER);
  e->set("requests_today", egress.requests_today);
  e->set("bytes_today", egress.bytes_today);
  o->set("egress", e);
  return o;
}

}  // namespace trellis::kernel::runtime
