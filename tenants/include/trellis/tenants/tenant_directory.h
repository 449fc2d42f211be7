// Resolves a presented API key to its tenant. Keys are stored only as SHA-256 hashes;
// lookup hashes the presented key and compares in constant time, so neither timing nor
// a leaked table reveals a key.
//
//   TenantDirectory dir;
//   dir.add({"demo"}, {sha256Hex("s3cret")});
//   const Tenant* t = dir.resolve("s3cret");   // &demo
#pragma once

#include <array>
#include <memory>
#include <optional>
#include <string>
#include <string_view>
#include <unordered_map>
#include <vector>

#include "trellis/status.hpp"

namespace trellis::tenants {

struct Tenant {
  std::string id;  // [a-z0-9][a-z0-9-]{0,62}
};

class TenantDirectory {
 public:
  // INVALID for a malformed id or key hash (64 hex digits, either case), CONFLICT for a
  // duplicate id or key. A refused call changes nothing.
  Status add(Tenant tenant, const std::vector<std::string>& key_sha256_hex);
  // The tenant owning `presented_key`, or nullptr. Safe to call concurrently with other
  // resolve() calls once set-up is done.
  const Tenant* resolve(std::string_view presented_key) const;
  const Tenant* find(std::string_view id) const;
  std::vector<const Tenant*> all() const;  // sorted by id

 private:
  std::unordered_map<std::string, std::unique_ptr<Tenant>> by_id_;
  std::unordered_map<std::string, const Tenant*> by_key_hash_;  // raw 32-byte digest
};

// [a-z0-9][a-z0-9-]{0,62}: safe as a file name, a label value and a URL segment.
bool isValidTenantId(std::string_view id);
// Lowercase hex SHA-256 of `data`.
std::string sha256Hex(std::string_view data);

using Sha256Digest = std::array<unsigned char, 32>;
// Raw SHA-256 of `data`. Fast enough for every request: the algorithm is fetched once and
// each thread keeps its own context. Safe to call from any thread.
Sha256Digest sha256Digest(std::string_view data);
// 64 hex digits (either case) to the raw digest; nullopt for anything else.
std::optional<Sha256Digest> parseSha256Hex(std::string_view hex);
// Lowercase hex of a raw digest.
std::string sha256HexOf(const Sha256Digest& digest);

}  // namespace trellis::tenants
