// The registry's signed metadata (TUF-style; formats in docs/marketplace.md): root.json from
// the config's root keys, index.json built from everything stored, timestamp.json naming
// the current index. "meta/signed" points at the current index (content-addressed blob) and
// holds the timestamp bytes; it changes only by compare-and-set, so index versions are
// strictly increasing and each timestamp names exactly one index, whatever runs
// concurrently.
//
//   Metadata meta(config);
//   meta.republish(store, now);            // after any change: index version + 1
//   auto ts = meta.timestamp(store, now);  // re-signed first when stale
#pragma once

#include <string>

#include "config.h"
#include "store.h"
#include "trellis/marketplace/index.h"
#include "trellis/status.hpp"

namespace trellis::registry {

class Metadata {
 public:
  explicit Metadata(const RegistryConfig& config) : config_(config) {}

  // Signs a new index (version + 1) holding every stored namespace and version, and a
  // timestamp for it. Returns the new index version.
  Result<uint64_t> republish(const Store& store, marketplace::UnixSeconds now) const;

  // The current bytes, re-signed first if less than half of their lifetime is left.
  Result<std::string> timestamp(const Store& store, marketplace::UnixSeconds now) const;
  Result<std::string> index(const Store& store, marketplace::UnixSeconds now) const;

 private:
  struct Current;
  Result<Current> refresh(const Store& store, marketplace::UnixSeconds now, bool force) const;
  Result<marketplace::Index> build(const Store& store) const;

  const RegistryConfig& config_;
};

}  // namespace trellis::registry
