// Tenant ids and key hashing, shared by the registry, the config parser and storage.
//
//   isValidTenantId("acme-2");                 // true: safe as a file name and URL segment
//   Sha256Digest d = sha256Digest(presented);  // what the registry compares, in O(1)
#pragma once

#include <array>
#include <optional>
#include <string>
#include <string_view>

namespace trellis::tenants {

// [a-z0-9][a-z0-9-]{0,62}: safe as a file name, a label value and a URL segment.
bool isValidTenantId(std::string_view id);

using Sha256Digest = std::array<unsigned char, 32>;
// Raw SHA-256 of `data`. Fast enough for every request: the algorithm is fetched once and
// each thread keeps its own context. Safe to call from any thread.
Sha256Digest sha256Digest(std::string_view data);
// Lowercase hex SHA-256 of `data`.
std::string sha256Hex(std::string_view data);
// 64 hex digits (either case) to the raw digest; nullopt for anything else.
std::optional<Sha256Digest> parseSha256Hex(std::string_view hex);
// Lowercase hex of a raw digest.
std::string sha256HexOf(const Sha256Digest& digest);

}  // namespace trellis::tenants
