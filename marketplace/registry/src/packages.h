// Published packages: the publish checks (docs/marketplace.md, "What publish checks"),
// version listing, search, downloads and yanking. A version record ("pkg/<id>/<version>")
// is created with compare-and-set on an absent key, so it is written once and never
// replaced; its archive is stored as a content-addressed blob before the record appears.
#pragma once

#include <Poco/JSON/Object.h>

#include <optional>
#include <string>
#include <vector>

#include "config.h"
#include "records.h"
#include "store.h"
#include "tokens.h"
#include "trellis/status.hpp"

namespace trellis::registry {

class Packages {
 public:
  explicit Packages(const RegistryConfig& config) : config_(config) {}

  // Verifies and stores one archive. INVALID (422) names the failed check; CONFLICT for a
  // version that exists or a confusable id; PERMISSION_DENIED for another namespace.
  // `dry_run` runs every check and stores nothing: the entry is what a publish would store.
  Result<VersionEntry> publish(const Store& store, const Caller& caller, const std::string& archive,
                               const std::vector<std::string>& tags, UnixSeconds now,
                               bool dry_run = false) const;

  // Versions of `id` in ascending precedence; NOT_FOUND if none.
  Result<std::vector<VersionEntry>> versions(const Store& store, const std::string& id) const;
  Result<VersionEntry> version(const Store& store, const std::string& id,
                               const std::string& version) const;
  uint64_t downloads(const Store& store, const std::string& id, const std::string& version) const;

  // The archive bytes (hash-checked), counting one download.
  Result<std::string> download(const Store& store, const VersionEntry& v) const;

  // Package summaries matching the query (docs: GET /packages).
  Result<Poco::JSON::Object::Ptr> search(const Store& store, const std::string& q,
                                         const std::string& tag) const;
  // Summary of one package plus its versions.
  Poco::JSON::Object::Ptr summary(const Store& store, const std::vector<VersionEntry>& versions,
                                  bool with_versions) const;

  // Sets or clears the yank flag. CONFLICT if it is already in that state.
  Result<VersionEntry> setYanked(const Store& store, const std::string& id,
                                 const std::string& version, bool yanked,
                                 const std::string& reason) const;

 private:
  Status verify(const Store& store, const Caller& caller,
                const marketplace::PackageArchive& pkg) const;

  const RegistryConfig& config_;
};

}  // namespace trellis::registry
