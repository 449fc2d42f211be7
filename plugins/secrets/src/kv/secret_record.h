// One KV v2 secret as stored: its metadata and every kept version's envelope, in a single
// KV entry, so each change (a write, delete, destroy, metadata update) is one
// compare-and-set and never half-written.
#pragma once

#include <cstdint>
#include <map>
#include <string>
#include <string_view>

#include "keys/envelope.h"
#include "trellis/status.hpp"

namespace trellis::secrets::kv {

struct SecretVersion {
  uint64_t created_ms = 0;
  uint64_t deleted_ms = 0;  // 0: not deleted
  bool destroyed = false;   // envelope dropped for good
  envelope::Envelope value;
};

struct SecretRecord {
  uint64_t created_ms = 0;
  uint64_t updated_ms = 0;
  uint32_t max_versions = 0;  // 0: the store's default
  bool cas_required = false;
  std::map<std::string, std::string> custom_metadata;
  uint64_t current = 0;  // highest version ever written
  std::map<uint64_t, SecretVersion> versions;

  uint64_t oldest() const { return versions.empty() ? 0 : versions.begin()->first; }
};

std::string serialize(const SecretRecord& r);
// INTERNAL when the stored bytes are damaged.
Result<SecretRecord> parse(std::string_view stored);

}  // namespace trellis::secrets::kv
