// The registry's configuration (the plugin's `config:` in trellis.yaml), read once at init.
// Unknown fields and bad values refuse the plugin with a message naming the field. Private
// keys are loaded here and never printed; marketplace/registry/README.md lists every field.
//
//   plugins:
//     enabled:
//       - id: trellis/registry
//         config:
//           tenant: registry
//           admin_token_sha256: "<64 hex>"
//           root_keys: [/etc/trellis/registry/root.pem]
//           root_expires: 1830000000
//           timestamp_key: /etc/trellis/registry/timestamp.pem
//           index_key: /etc/trellis/registry/index.pem
#pragma once

#include <cstdint>
#include <memory>
#include <string>
#include <string_view>
#include <vector>

#include "trellis/marketplace/ed25519.h"
#include "trellis/marketplace/index.h"
#include "trellis/status.hpp"

namespace trellis::registry {

struct RegistryConfig {
  std::string tenant;              // the one tenant whose storage holds the catalogue
  std::string admin_token_sha256;  // lowercase hex
  std::vector<marketplace::PrivateKey> root_keys;
  uint32_t root_threshold = 1;
  uint64_t root_version = 1;
  marketplace::UnixSeconds root_expires = 0;
  std::unique_ptr<marketplace::PrivateKey> timestamp_key;
  std::unique_ptr<marketplace::PrivateKey> index_key;  // the timestamp key if not set
  int64_t timestamp_expiry_seconds = 86'400;
  int64_t index_expiry_seconds = int64_t{30} * 86'400;
  uint64_t max_package_bytes = 20ull << 20;
  uint64_t max_unpacked_bytes = 64ull << 20;  // all files of a package, uncompressed
  uint64_t chunk_bytes = 512ull << 10;
  int64_t max_token_ttl_seconds = int64_t{90} * 86'400;

  // Parses the plugin's whole config (JSON, as the host hands it over) and loads the keys.
  static Result<RegistryConfig> parse(std::string_view config_json);

  // root.json, signed by the root keys (deterministic: the same config gives the same bytes).
  Result<std::string> signedRoot() const;
};

}  // namespace trellis::registry
