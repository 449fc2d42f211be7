// How the registry's stored records are encoded. Publisher keys and package records are
// stored as one-entry fragments of the signed index's own format (Index::toJson/fromJson
// of marketplace/client), so the index the registry signs and what it stores cannot
// disagree, and there is one codec for both.
#pragma once

#include <Poco/JSON/Object.h>

#include <string>
#include <vector>

#include "trellis/marketplace/index.h"
#include "trellis/status.hpp"

namespace trellis::registry {

// A published version: the index record plus what only the registry API shows.
struct VersionEntry {
  std::string id;
  std::string version;
  marketplace::PackageRecord record;
  std::string description;
  std::vector<std::string> tags;
};

Poco::JSON::Object::Ptr encodeKeys(const std::string& ns,
                                   const std::vector<marketplace::PublisherKey>& keys);
Result<std::vector<marketplace::PublisherKey>> decodeKeys(const std::string& ns,
                                                          const Poco::JSON::Object::Ptr& stored);

Poco::JSON::Object::Ptr encodeVersion(const VersionEntry& v);
Result<VersionEntry> decodeVersion(const Poco::JSON::Object::Ptr& stored);

// The API's JSON for a key and for a version (docs/marketplace.md, "Registry HTTP API").
Poco::JSON::Object::Ptr keyJson(const std::string& ns, const marketplace::PublisherKey& key);
Poco::JSON::Object::Ptr versionJson(const VersionEntry& v, uint64_t downloads);

// Storage keys (store.h lists them all).
std::string namespaceKey(const std::string& ns);
std::string versionKey(const std::string& id, const std::string& version);
std::string versionsPrefix(const std::string& id);
std::string downloadsKey(const std::string& id, const std::string& version);

}  // namespace trellis::registry
