#include "records.h"

#include <Poco/JSON/Array.h>

namespace trellis::registry {
namespace {

using marketplace::Index;
using Poco::JSON::Array;
using Poco::JSON::Object;

Object::Ptr fragmentOf(const Object::Ptr& stored) {
  return stored->has("fragment") ? stored->getObject("fragment") : nullptr;
}

Result<Index> decodeFragment(const Object::Ptr& stored) {
  Object::Ptr fragment = fragmentOf(stored);
  if (!fragment) return Status::internal("stored record has no index fragment");
  auto index = Index::fromJson(fragment);
  if (!index) return Status::internal("stored record is corrupt: " + index.status().message());
  return index;
}

Array::Ptr stringArray(const std::vector<std::string>& items) {
  Array::Ptr a = new Array;
  for (const auto& s : items) a->add(s);
  return a;
}

}  // namespace

Object::Ptr encodeKeys(const std::string& ns, const std::vector<marketplace::PublisherKey>& keys) {
  Index fragment;
  fragment.namespaces[ns] = keys;
  Object::Ptr o = new Object;
  o->set("fragment", fragment.toJson());
  return o;
}

Result<std::vector<marketplace::PublisherKey>> decodeKeys(const std::string& ns,
                                                          const Object::Ptr& stored) {
  auto index = decodeFragment(stored);
  if (!index) return index.status();
  auto it = index->namespaces.find(ns);
  if (it == index->namespaces.end())
    return Status::internal("stored keys of " + ns + " are corrupt");
  return it->second;
}

Object::Ptr encodeVersion(const VersionEntry& v) {
  Index fragment;
  fragment.packages[v.id][v.version] = v.record;
  Object::Ptr o = new Object;
  o->set("fragment", fragment.toJson());
  o->set("description", v.description);
  o->set("tags", stringArray(v.tags));
  return o;
}

Result<VersionEntry> decodeVersion(const Object::Ptr& stored) {
  auto index = decodeFragment(stored);
  if (!index) return index.status();
  if (index->packages.size() != 1 || index->packages.begin()->second.size() != 1) {
    return Status::internal("stored version record is corrupt");
  }
  VersionEntry v;
  v.id = index->packages.begin()->first;
  v.version = index->packages.begin()->second.begin()->first;
  v.record = index->packages.begin()->second.begin()->second;
  v.description = stored->optValue<std::string>("description", "");
  if (Array::Ptr tags = stored->getArray("tags")) {
    for (const auto& t : *tags) v.tags.push_back(t.convert<std::string>());
  }
  return v;
}

Object::Ptr keyJson(const std::string& ns, const marketplace::PublisherKey& key) {
  return encodeKeys(ns, {key})
      ->getObject("fragment")
      ->getObject("namespaces")
      ->getObject(ns)
      ->getArray("keys")
      ->getObject(0);
}

Object::Ptr versionJson(const VersionEntry& v, uint64_t downloads) {
  Object::Ptr o = encodeVersion(v)
                      ->getObject("fragment")
                      ->getObject("packages")
                      ->getObject(v.id)
                      ->getObject(v.version);
  o->set("id", v.id);
  o->set("version", v.version);
  if (!o->has("host")) o->set("host", "");
  if (!o->has("yanked_reason")) o->set("yanked_reason", "");
  o->set("description", v.description);
  o->set("tags", stringArray(v.tags));
  o->set("downloads", static_cast<Poco::UInt64>(downloads));
  return o;
}

std::string namespaceKey(const std::string& ns) {
  return "ns/" + ns;
}
std::string versionKey(const std::string& id, const std::string& version) {
  return "pkg/" + id + "/" + version;
}
std::string versionsPrefix(const std::string& id) {
  return "pkg/" + id + "/";
}
std::string downloadsKey(const std::string& id, const std::string& version) {
  return "dl/" + id + "/" + version;
}

}  // namespace trellis::registry
