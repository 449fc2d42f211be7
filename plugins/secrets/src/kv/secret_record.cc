#include "kv/secret_record.h"

#include <Poco/JSON/Object.h>
#include <Poco/JSON/Parser.h>

#include <sstream>

#include "crypto/encoding.h"

namespace trellis::secrets::kv {

using Poco::JSON::Object;

std::string serialize(const SecretRecord& r) {
  Object::Ptr o = new Object;
  o->set("created_ms", r.created_ms);
  o->set("updated_ms", r.updated_ms);
  o->set("max_versions", r.max_versions);
  o->set("cas_required", r.cas_required);
  Object::Ptr custom = new Object;
  for (const auto& [k, v] : r.custom_metadata) custom->set(k, v);
  o->set("custom_metadata", custom);
  o->set("current", r.current);
  Object::Ptr versions = new Object;
  for (const auto& [n, v] : r.versions) {
    Object::Ptr e = new Object;
    e->set("created_ms", v.created_ms);
    e->set("deleted_ms", v.deleted_ms);
    e->set("destroyed", v.destroyed);
    if (!v.destroyed) {
      e->set("kek", v.value.kek_version);
      e->set("key", toBase64(v.value.wrapped_key));
      e->set("box", toBase64(v.value.box));
    }
    versions->set(std::to_string(n), e);
  }
  o->set("versions", versions);
  std::ostringstream out;
  o->stringify(out);
  return out.str();
}

Result<SecretRecord> parse(std::string_view stored) {
  try {
    Object::Ptr o = Poco::JSON::Parser().parse(std::string(stored)).extract<Object::Ptr>();
    SecretRecord r;
    r.created_ms = o->getValue<uint64_t>("created_ms");
    r.updated_ms = o->getValue<uint64_t>("updated_ms");
    r.max_versions = o->getValue<uint32_t>("max_versions");
    r.cas_required = o->getValue<bool>("cas_required");
    r.current = o->getValue<uint64_t>("current");
    Object::Ptr custom = o->getObject("custom_metadata");
    for (const auto& name : custom->getNames()) {
      r.custom_metadata[name] = custom->getValue<std::string>(name);
    }
    Object::Ptr versions = o->getObject("versions");
    for (const auto& name : versions->getNames()) {
      Object::Ptr e = versions->getObject(name);
      SecretVersion v;
      v.created_ms = e->getValue<uint64_t>("created_ms");
      v.deleted_ms = e->getValue<uint64_t>("deleted_ms");
      v.destroyed = e->getValue<bool>("destroyed");
      if (!v.destroyed) {
        auto key = fromBase64(e->getValue<std::string>("key"));
        auto box = fromBase64(e->getValue<std::string>("box"));
        if (!key || !box) return Status::internal("a stored secret version is damaged");
        v.value = {e->getValue<uint32_t>("kek"), std::move(*key), std::move(*box)};
      }
      r.versions[std::stoull(name)] = std::move(v);
    }
    return r;
  } catch (const std::exception&) {
    return Status::internal("a stored secret record is damaged");
  }
}

}  // namespace trellis::secrets::kv
