// trellis-plugin.json: what a plugin is, what it needs and what it may do. Parsed
// strictly: unknown fields, wrong types and bad values are refused with a message that
// names the field, e.g. `dependencies."acme/db": "^1..2" is not a valid version range`.
//
//   {
//     "schema": 1,
//     "id": "acme/hello",                 // namespace/name: [a-z0-9][a-z0-9-]{0,62} each
//     "version": "1.2.0",                 // semver
//     "description": "Greets people",     // optional
//     "license": "Apache-2.0",            // optional
//     "runtime": "native",                // "native" (default) or "lua"
//     "abi": {"major": 1, "minor": 0},    // native only: the ABI it was built against
//     "host": ">=0.1.0 <2",               // optional: trellisd versions it supports
//     "entry": {"linux-x86_64": "libacme_hello.so"},  // native: per-platform library
//                                         // lua: {"lua": "main.lua"}
//     "dependencies": {"acme/db": "^1.0.0"},          // optional
//     "capabilities": ["kv", "events.publish"],       // optional; see kKnownCapabilities
//     "blocking_routes": ["GET /hello/{name}"],       // optional: run on the blocking pool
//     "provides": [{"name": "secrets", "version": "1.0.0"}],   // optional: services offered
//     "requires": [{"name": "kms", "range": "^1", "optional": false}],  // services used
//     "egress": ["https://*.example.com:443"],     // with capability "egress": destinations
//     "scope": "system",                  // optional: "tenant" (default) or "system";
//                                         // system needs the operator's grant as well
//     "tenant_config": {"type": "object",           // optional: keys tenants may override
//         "properties": {"greeting": {"type": "string", "maxLength": 80}}},
//     "files": {"libacme_hello.so": "<sha256 hex>"}   // optional: checked when present
//   }
#pragma once

#include <array>
#include <filesystem>
#include <map>
#include <optional>
#include <string>
#include <string_view>
#include <vector>

#include "trellis/kernel/config/json_schema.h"
#include "trellis/kernel/plugin/semver.h"
#include "trellis/status.hpp"

namespace trellis::kernel::plugin {

// Capabilities a manifest may request. Host calls outside the granted set return
// PERMISSION_DENIED. log, config, clock, request/response and routes need none.
// "tenant.read" and "tenant.keys" reach the calling tenant's own account (ABI 1.1);
// "jobs", "egress", "blobs", "script" and "seal" the ABI 1.2 services, and "service:<name>" calls
// to the inter-plugin service <name> (see isValidServiceName).
inline constexpr std::array<std::string_view, 12> kKnownCapabilities = {
    "kv",   "events.publish", "events.subscribe", "metrics", "egress", "tenant.read", "tenant.keys",
    "jobs", "blobs",          "usage.emit",       "script",  "seal"};
inline constexpr std::string_view kServiceCapabilityPrefix = "service:";
// In a tenant's grants only: "egress:<rule>" narrows the plugin's manifest destinations for
// that tenant, and is the only way to let it dial a private or loopback address.
inline constexpr std::string_view kEgressGrantPrefix = "egress:";
bool isValidEgressGrant(std::string_view rule);

// An inter-plugin service name: 1..64 bytes of [a-z0-9], '.', '-', starting with a letter
// ("secrets", "blobstore.s3").
bool isValidServiceName(std::string_view name);

inline bool isKnownCapability(std::string_view cap) {
  if (cap.starts_with(kServiceCapabilityPrefix)) {
    return isValidServiceName(cap.substr(kServiceCapabilityPrefix.size()));
  }
  if (cap.starts_with(kEgressGrantPrefix)) {
    return isValidEgressGrant(cap.substr(kEgressGrantPrefix.size()));
  }
  for (auto known : kKnownCapabilities) {
    if (known == cap) return true;
  }
  return false;
}

struct Dependency {
  std::string id;
  VersionRange range;
};

// An inter-plugin service the plugin offers (ABI 1.2 service_provide).
struct ProvidedService {
  std::string name;
  Version version;
};

// A service the plugin calls. The resolver starts its provider first and refuses the
// plugin when no enabled plugin provides a version in `range` (unless `optional`).
struct RequiredService {
  std::string name;
  VersionRange range;
  bool optional = false;
};

// What a plugin asks to be. A tenant plugin serves tenants' requests and sees only the
// calling tenant. A system plugin may also subscribe to the usage and audit streams of all
// tenants and serve admin routes — but only once the operator grants it (`system: true` on
// its config entry, or the admin API); a manifest alone never makes a plugin system.
enum class PluginScope { Tenant, System };
std::optional<PluginScope> parsePluginScope(std::string_view text);  // "tenant" | "system"
std::string_view pluginScopeName(PluginScope scope);

struct BlockingRoute {
  std::string method;   // "GET" or "*"
  std::string pattern;  // "/hello/{name}"
};

struct Manifest {
  std::string id;
  Version version;
  std::string description;
  std::string license;
  std::string runtime = "native";
  uint16_t abi_major = 0;
  uint16_t abi_minor = 0;
  std::optional<VersionRange> host;
  std::map<std::string, std::string> entry;  // platform -> relative file
  std::vector<Dependency> dependencies;
  std::vector<std::string> capabilities;
  std::vector<BlockingRoute> blocking_routes;
  std::map<std::string, std::string> files;  // relative path -> sha256 hex
  std::vector<ProvidedService> provides;
  std::vector<RequiredService> required_services;  // "requires" in the JSON
  std::vector<std::string> egress;                 // destination rules (services/egress_policy.h)
  PluginScope scope = PluginScope::Tenant;         // what it asks for; see PluginScope
  // "tenant_config": the JSON Schema (config/json_schema.h subset) of the configuration keys
  // a tenant may override; absent when the plugin allows no per-tenant configuration.
  std::optional<config::JsonSchema> tenant_config;
  std::string tenant_config_json;  // the schema as written, for the admin API

  static Result<Manifest> parse(std::string_view json);
  static Result<Manifest> load(const std::filesystem::path& file);  // names the file

  bool hasCapability(std::string_view cap) const;
  bool isBlocking(std::string_view method, std::string_view pattern) const;
  // The entry for this machine ("linux-x86_64", or "lua"); NOT_FOUND names the
  // platforms the manifest does offer.
  Result<std::string> entryForThisPlatform() const;
};

// "linux-x86_64", "linux-aarch64", … for the running host.
std::string currentPlatform();

// True if `id` is "namespace/name" with both parts [a-z0-9][a-z0-9-]{0,62}.
bool isValidPluginId(std::string_view id);

}  // namespace trellis::kernel::plugin
