#include "config.h"

#include <Poco/JSON/Array.h>
#include <Poco/JSON/Object.h>

#include <charconv>
#include <functional>
#include <set>

#include "trellis/marketplace/canonical_json.h"
#include "trellis/marketplace/encoding.h"

namespace trellis::registry {
namespace {

using Poco::Dynamic::Var;
using Poco::JSON::Object;

constexpr std::string_view kKnownFields[] = {"tenant",
                                             "admin_token_sha256",
                                             "root_keys",
                                             "root_threshold",
                                             "root_version",
                                             "root_expires",
                                             "timestamp_key",
                                             "index_key",
                                             "timestamp_expiry_seconds",
                                             "index_expiry_seconds",
                                             "max_package_bytes",
                                             "max_unpacked_bytes",
                                             "chunk_bytes",
                                             "max_token_ttl_seconds"};

Status fieldError(std::string_view field, std::string_view what) {
  return Status::invalid("trellis/registry config: " + std::string(field) + " " +
                         std::string(what));
}

// YAML scalars may arrive as JSON numbers or as their text: accept both, in range.
Result<uint64_t> number(const Object& o, std::string_view field, uint64_t min, uint64_t max) {
  Var v = o.get(std::string(field));
  if (!v.isString() && !v.isInteger()) return fieldError(field, "must be an integer");
  std::string text = v.isString() ? v.extract<std::string>() : v.convert<std::string>();
  uint64_t out = 0;
  auto [end, ec] = std::from_chars(text.data(), text.data() + text.size(), out);
  if (text.empty() || ec != std::errc() || end != text.data() + text.size() || out < min ||
      out > max) {
    return fieldError(field, "must be an integer from " + std::to_string(min) + " to " +
                                 std::to_string(max) + ", got \"" + text + "\"");
  }
  return out;
}

Result<std::string> text(const Object& o, std::string_view field) {
  Var v = o.get(std::string(field));
  if (!v.isString() || v.extract<std::string>().empty()) {
    return fieldError(field, "must be a non-empty string");
  }
  return v.extract<std::string>();
}

Result<marketplace::PrivateKey> loadKey(std::string_view field, const std::string& path) {
  if (path.empty() || path[0] != '/') {
    return fieldError(
        field, "must be an absolute path to a PEM key (trellis keygen), got \"" + path + "\"");
  }
  auto key = marketplace::PrivateKey::loadPem(path);
  if (!key) return fieldError(field, key.status().message());
  return std::move(*key);
}

}  // namespace

Result<RegistryConfig> RegistryConfig::parse(std::string_view config_json) {
  auto parsed = marketplace::parseJsonStrict(config_json);
  if (!parsed || parsed->type() != typeid(Object::Ptr)) {
    return Status::invalid(
        "trellis/registry config must be a map (tenant, admin_token_sha256, root_keys, …)");
  }
  const Object& o = *parsed->extract<Object::Ptr>();
  for (const auto& [name, value] : o) {
    bool known = false;
    for (auto f : kKnownFields) known = known || f == name;
    if (!known)
      return fieldError(name, "is not a known setting (see marketplace/registry/README.md)");
  }
  for (auto required :
       {"tenant", "admin_token_sha256", "root_keys", "root_expires", "timestamp_key"}) {
    if (!o.has(required)) return fieldError(required, "is required");
  }

  RegistryConfig c;
  auto tenant = text(o, "tenant");
  if (!tenant) return tenant.status();
  c.tenant = *tenant;
  auto admin = text(o, "admin_token_sha256");
  if (!admin) return admin.status();
  if (!marketplace::isSha256Hex(*admin)) {
    return fieldError("admin_token_sha256",
                      "must be the SHA-256 of the admin token as 64 lowercase hex characters");
  }
  c.admin_token_sha256 = *admin;

  Var roots = o.get("root_keys");
  if (roots.type() != typeid(Poco::JSON::Array::Ptr)) {
    return fieldError("root_keys", "must be a list of PEM key paths");
  }
  std::set<std::string> root_ids;
  for (const Var& path : *roots.extract<Poco::JSON::Array::Ptr>()) {
    if (!path.isString()) return fieldError("root_keys", "must be a list of PEM key paths");
    auto key = loadKey("root_keys", path.extract<std::string>());
    if (!key) return key.status();
    if (!root_ids.insert(key->keyId()).second) {
      return fieldError("root_keys", "lists key " + key->keyId() + " twice");
    }
    c.root_keys.push_back(std::move(*key));
  }
  if (c.root_keys.empty()) return fieldError("root_keys", "must name at least one key");

  struct Num {
    const char* field;
    uint64_t min, max;
    std::function<void(uint64_t)> set;
  };
  constexpr uint64_t kMaxInt64 = static_cast<uint64_t>(INT64_MAX);
  const Num nums[] = {
      {"root_threshold", 1, c.root_keys.size(),
       [&](uint64_t v) { c.root_threshold = static_cast<uint32_t>(v); }},
      {"root_version", 1, kMaxInt64, [&](uint64_t v) { c.root_version = v; }},
      {"root_expires", 1, kMaxInt64, [&](uint64_t v) { c.root_expires = static_cast<int64_t>(v); }},
      {"timestamp_expiry_seconds", 60, uint64_t{366} * 86'400,
       [&](uint64_t v) { c.timestamp_expiry_seconds = static_cast<int64_t>(v); }},
      {"index_expiry_seconds", 60, uint64_t{3660} * 86'400,
       [&](uint64_t v) { c.index_expiry_seconds = static_cast<int64_t>(v); }},
      {"max_package_bytes", 1, 1ull << 30, [&](uint64_t v) { c.max_package_bytes = v; }},
      {"max_unpacked_bytes", 1, 4ull << 30, [&](uint64_t v) { c.max_unpacked_bytes = v; }},
      // The host caps a KV value at 1 MiB.
      {"chunk_bytes", 1024, 1ull << 20, [&](uint64_t v) { c.chunk_bytes = v; }},
      {"max_token_ttl_seconds", 60, uint64_t{3660} * 86'400,
       [&](uint64_t v) { c.max_token_ttl_seconds = static_cast<int64_t>(v); }},
  };
  for (const Num& n : nums) {
    if (!o.has(n.field)) continue;
    auto v = number(o, n.field, n.min, n.max);
    if (!v) return v.status();
    n.set(*v);
  }

  // A timestamp must never outlive the index it names, or clients would see a fresh
  // timestamp over an expired index.
  if (c.index_expiry_seconds < c.timestamp_expiry_seconds) {
    return fieldError("index_expiry_seconds", "must not be shorter than timestamp_expiry_seconds");
  }

  auto ts_path = text(o, "timestamp_key");
  if (!ts_path) return ts_path.status();
  auto ts = loadKey("timestamp_key", *ts_path);
  if (!ts) return ts.status();
  c.timestamp_key = std::make_unique<marketplace::PrivateKey>(std::move(*ts));
  if (o.has("index_key")) {
    auto idx_path = text(o, "index_key");
    if (!idx_path) return idx_path.status();
    auto idx = loadKey("index_key", *idx_path);
    if (!idx) return idx.status();
    c.index_key = std::make_unique<marketplace::PrivateKey>(std::move(*idx));
  }
  return c;
}

Result<std::string> RegistryConfig::signedRoot() const {
  marketplace::Root root;
  root.version = root_version;
  root.expires = root_expires;
  std::vector<const marketplace::PrivateKey*> signers;
  for (const auto& k : root_keys) {
    root.keys[k.keyId()] = k.publicKey();
    root.root.keyids.push_back(k.keyId());
    signers.push_back(&k);
  }
  root.root.threshold = root_threshold;
  const marketplace::PrivateKey& index = index_key ? *index_key : *timestamp_key;
  root.keys[timestamp_key->keyId()] = timestamp_key->publicKey();
  root.keys[index.keyId()] = index.publicKey();
  root.timestamp = {{timestamp_key->keyId()}, 1};
  root.index = {{index.keyId()}, 1};
  return marketplace::signRoot(root, signers);
}

}  // namespace trellis::registry
