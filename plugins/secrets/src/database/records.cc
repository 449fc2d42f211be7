#include "database/records.h"

#include <Poco/JSON/Array.h>
#include <Poco/JSON/Object.h>
#include <Poco/JSON/Parser.h>

#include "crypto/encoding.h"
#include "http/json_io.h"

namespace trellis::secrets::database {
namespace {

using http::stringify;
using Poco::JSON::Array;
using Poco::JSON::Object;

Array::Ptr toArray(const std::vector<std::string>& v) {
  Array::Ptr a = new Array;
  for (const auto& s : v) a->add(s);
  return a;
}
std::vector<std::string> fromArray(const Array::Ptr& a) {
  std::vector<std::string> out;
  if (!a) return out;
  for (size_t i = 0; i < a->size(); ++i) out.push_back(a->getElement<std::string>(i));
  return out;
}

}  // namespace

std::string passwordAad(std::string_view tenant, std::string_view name) {
  return associatedData({{"tenant", tenant}, {"engine", "database-config"}, {"name", name}});
}

std::string serialize(const StoredConfig& c) {
  Object::Ptr o = new Object;
  o->set("connection_url", c.view.connection_url);
  o->set("username", c.view.username);
  o->set("allowed_roles", toArray(c.view.allowed_roles));
  o->set("updated_ms", c.view.updated_ms);
  Object::Ptr p = new Object;
  p->set("kek", c.password.kek_version);
  p->set("key", toBase64(c.password.wrapped_key));
  p->set("box", toBase64(c.password.box));
  o->set("password", p);
  return stringify(o);
}

Result<StoredConfig> parseConfig(std::string_view name, const std::string& text) {
  try {
    Object::Ptr o = Poco::JSON::Parser().parse(text).extract<Object::Ptr>();
    StoredConfig c;
    c.view.name = std::string(name);
    c.view.connection_url = o->getValue<std::string>("connection_url");
    c.view.username = o->getValue<std::string>("username");
    c.view.allowed_roles = fromArray(o->getArray("allowed_roles"));
    c.view.updated_ms = o->getValue<uint64_t>("updated_ms");
    Object::Ptr p = o->getObject("password");
    auto key = fromBase64(p->getValue<std::string>("key"));
    auto box = fromBase64(p->getValue<std::string>("box"));
    if (!key || !box) return Status::internal("a stored database connection is damaged");
    c.password = {p->getValue<uint32_t>("kek"), std::move(*key), std::move(*box)};
    return c;
  } catch (const std::exception&) {
    return Status::internal("a stored database connection is damaged");
  }
}

std::string serialize(const RoleConfig& r) {
  Object::Ptr o = new Object;
  o->set("db_name", r.db_name);
  o->set("creation_statements", toArray(r.creation_statements));
  o->set("revocation_statements", toArray(r.revocation_statements));
  o->set("renew_statements", toArray(r.renew_statements));
  o->set("default_ttl", r.default_ttl_s);
  o->set("max_ttl", r.max_ttl_s);
  return stringify(o);
}

Result<RoleConfig> parseRole(std::string_view name, const std::string& text) {
  try {
    Object::Ptr o = Poco::JSON::Parser().parse(text).extract<Object::Ptr>();
    RoleConfig r;
    r.name = std::string(name);
    r.db_name = o->getValue<std::string>("db_name");
    r.creation_statements = fromArray(o->getArray("creation_statements"));
    r.revocation_statements = fromArray(o->getArray("revocation_statements"));
    r.renew_statements = fromArray(o->getArray("renew_statements"));
    r.default_ttl_s = o->getValue<uint64_t>("default_ttl");
    r.max_ttl_s = o->getValue<uint64_t>("max_ttl");
    return r;
  } catch (const std::exception&) {
    return Status::internal("a stored database role is damaged");
  }
}

std::string serialize(const Lease& l) {
  Object::Ptr o = new Object;
  o->set("role", l.role);
  o->set("db_name", l.db_name);
  o->set("username", l.username);
  o->set("issued_ms", l.issued_ms);
  o->set("expire_ms", l.expire_ms);
  o->set("max_expire_ms", l.max_expire_ms);
  o->set("default_ttl", l.default_ttl_s);
  o->set("revocation_statements", toArray(l.revocation_statements));
  o->set("renew_statements", toArray(l.renew_statements));
  return stringify(o);
}

Result<Lease> parseLease(std::string_view id, std::string_view text) {
  try {
    Object::Ptr o = Poco::JSON::Parser().parse(std::string(text)).extract<Object::Ptr>();
    Lease l;
    l.id = std::string(id);
    l.role = o->getValue<std::string>("role");
    l.db_name = o->getValue<std::string>("db_name");
    l.username = o->getValue<std::string>("username");
    l.issued_ms = o->getValue<uint64_t>("issued_ms");
    l.expire_ms = o->getValue<uint64_t>("expire_ms");
    l.max_expire_ms = o->getValue<uint64_t>("max_expire_ms");
    l.default_ttl_s = o->getValue<uint64_t>("default_ttl");
    l.revocation_statements = fromArray(o->getArray("revocation_statements"));
    l.renew_statements = fromArray(o->getArray("renew_statements"));
    return l;
  } catch (const std::exception&) {
    return Status::internal("a stored lease is damaged");
  }
}

}  // namespace trellis::secrets::database
