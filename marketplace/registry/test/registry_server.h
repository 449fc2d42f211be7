// A real trellisd serving the registry plugin (marketplace/registry) for tests: fresh root,
// timestamp and index keys, tenant "acme" (key "acme-key") as the registry tenant, and a
// known registry admin token.
//
//   RegistryServer reg;
//   ASSERT_TRUE(reg.start()) << reg.log();
//   request(reg.port(), "GET", "/registry/v1/root.json", {{"Authorization", "Bearer acme-key"}});
#pragma once

#include <chrono>
#include <filesystem>
#include <memory>
#include <string>

#include "support/test_support.h"
#include "trellis/marketplace/ed25519.h"
#include "trellis/marketplace/encoding.h"

namespace trellis::test {

class RegistryServer {
 public:
  static constexpr const char* kAdminToken = "registry-admin-token-for-tests";
  static constexpr const char* kTenantKey = "acme-key";

  bool start(uint64_t max_package_bytes = 8u << 20) {
    namespace fs = std::filesystem;
    namespace mk = trellis::marketplace;
    const fs::path keys = dir_ / "registry-keys";
    fs::create_directories(keys);
    for (const char* name : {"root", "timestamp", "index"}) {
      auto key = mk::PrivateKey::generate();
      if (!key || !key->writePem(keys / (std::string(name) + ".pem"))) return false;
    }
    const auto now = std::chrono::duration_cast<std::chrono::seconds>(
                         std::chrono::system_clock::now().time_since_epoch())
                         .count();
    const std::string plugins =
        "    - id: trellis/registry\n"
        "      config:\n"
        "        tenant: acme\n"
        "        admin_token_sha256: \"" +
        mk::sha256Hex(kAdminToken) + "\"\n        root_keys: [" + (keys / "root.pem").string() +
        "]\n        root_expires: " + std::to_string(now + 365 * 86400) +
        "\n        timestamp_key: " + (keys / "timestamp.pem").string() +
        "\n        index_key: " + (keys / "index.pem").string() +
        "\n        max_package_bytes: " + std::to_string(max_package_bytes) + "\n";
    std::string config = defaultTestConfig(plugins);
    const std::string threads = "  threads: 2\n";
    config.insert(config.find(threads) + threads.size(), "  max_body_bytes: 16777216\n");
    server_ = std::make_unique<TrellisdProcess>(config);
    return server_->start();
  }

  TrellisdProcess& process() { return *server_; }
  uint16_t port() const { return server_->port(); }
  std::string url() const { return "http://127.0.0.1:" + std::to_string(port()); }
  std::string log() const { return server_ ? server_->log() : "not started"; }

 private:
  TempDir dir_;
  std::unique_ptr<TrellisdProcess> server_;
};

}  // namespace trellis::test
