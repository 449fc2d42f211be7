#include "transit/transit_engine.h"

#include <Poco/JSON/Object.h>
#include <Poco/JSON/Parser.h>

#include <algorithm>
#include <charconv>
#include <functional>
#include <sstream>

#include "audit/audit.h"
#include "crypto/aead.h"
#include "crypto/encoding.h"
#include "keys/envelope.h"
#include "keys/keyring.h"

namespace trellis::secrets::transit {
namespace {

using Poco::JSON::Object;

constexpr std::string_view kPrefix = TransitEngine::kStoragePrefix;
constexpr std::string_view kCipherPrefix = "trellis:v";

std::string storageKey(std::string_view name) {
  return std::string(kPrefix) + std::string(name);
}

std::string keyAad(std::string_view tenant, std::string_view name, uint32_t version) {
  return associatedData({{"tenant", tenant},
                         {"engine", "transit-key"},
                         {"name", name},
                         {"version", std::to_string(version)}});
}

std::string dataAad(std::string_view tenant, std::string_view name, uint32_t version) {
  return associatedData({{"tenant", tenant},
                         {"engine", "transit"},
                         {"name", name},
                         {"version", std::to_string(version)}});
}

// A tenant's delete or config of a key a plugin owns (KeyPolicy::owner).
Status ownedByPlugin(std::string_view name, const KeyPolicy& p) {
  return Status::permissionDenied(
      "the transit key \"" + std::string(name) + "\" is owned by the plugin " + p.owner +
      ", which made it for this tenant: it may not be deleted and its config (deletion_allowed, "
      "min_decryption_version) may not be changed, or what " +
      p.owner + " stored under it would no longer open");
}

Status noKey(std::string_view name) {
  return Status::notFound("no transit key \"" + std::string(name) +
                          "\"; create it with POST /secrets/v1/transit/keys/" + std::string(name));
}

// The stored form: policy plus each version's envelope.
struct StoredKey {
  KeyPolicy policy;
  std::map<uint32_t, envelope::Envelope> wrapped;
};

std::string serialize(const StoredKey& k) {
  Object::Ptr o = new Object;
  o->set("created_ms", k.policy.created_ms);
  o->set("latest", k.policy.latest);
  o->set("min_decryption_version", k.policy.min_decryption_version);
  o->set("deletion_allowed", k.policy.deletion_allowed);
  if (!k.policy.owner.empty()) o->set("owner", k.policy.owner);
  Object::Ptr versions = new Object;
  for (const auto& [v, env] : k.wrapped) {
    Object::Ptr e = new Object;
    e->set("created_ms", k.policy.version_created_ms.at(v));
    e->set("kek", env.kek_version);
    e->set("key", toBase64(env.wrapped_key));
    e->set("box", toBase64(env.box));
    versions->set(std::to_string(v), e);
  }
  o->set("versions", versions);
  std::ostringstream out;
  o->stringify(out);
  return out.str();
}

Result<StoredKey> parse(std::string_view text) {
  try {
    Object::Ptr o = Poco::JSON::Parser().parse(std::string(text)).extract<Object::Ptr>();
    StoredKey k;
    k.policy.created_ms = o->getValue<uint64_t>("created_ms");
    k.policy.latest = o->getValue<uint32_t>("latest");
    k.policy.min_decryption_version = o->getValue<uint32_t>("min_decryption_version");
    k.policy.deletion_allowed = o->getValue<bool>("deletion_allowed");
    k.policy.owner = o->optValue<std::string>("owner", "");
    Object::Ptr versions = o->getObject("versions");
    for (const auto& name : versions->getNames()) {
      Object::Ptr e = versions->getObject(name);
      const auto v = static_cast<uint32_t>(std::stoul(name));
      auto key = fromBase64(e->getValue<std::string>("key"));
      auto box = fromBase64(e->getValue<std::string>("box"));
      if (!key || !box) return Status::internal("a stored transit key is damaged");
      k.policy.version_created_ms[v] = e->getValue<uint64_t>("created_ms");
      k.wrapped[v] = {e->getValue<uint32_t>("kek"), std::move(*key), std::move(*box)};
    }
    return k;
  } catch (const std::exception&) {
    return Status::internal("a stored transit key is damaged");
  }
}

// Adds a fresh version, wrapped under the tenant's current KEK.
Status addVersion(const Context& ctx, const Seal& seal, KekUses& uses, Keyring& ring,
                  std::string_view name, StoredKey& k) {
  SecureBuffer key = randomBytes(aead::kKeyBytes);
  if (key.empty()) return Status::internal("the random generator failed");
  const uint32_t v = k.policy.latest + 1;
  if (Status s = uses.take(ctx, seal, ring); !s) return s;
  auto env = envelope::seal(ring, key.view(), keyAad(ctx.tenant(), name, v));
  if (!env) return env.status();
  k.wrapped[v] = std::move(*env);
  k.policy.version_created_ms[v] = ctx.nowUnixMs();
  k.policy.latest = v;
  return Status::ok();
}

using Change = std::function<Status(StoredKey&, bool exists)>;

Result<StoredKey> change(const Context& ctx, std::string_view name, const Change& fn) {
  if (Status s = checkKeyName(name); !s) return s;
  Kv store = ctx.kv();
  for (int attempt = 0; attempt < 8; ++attempt) {
    auto entry = store.get(storageKey(name));
    if (!entry && entry.status().code() != StatusCode::kNotFound) return entry.status();
    StoredKey k;
    if (entry) {
      auto parsed = parse(entry->value);
      if (!parsed) return parsed.status();
      k = std::move(*parsed);
    }
    if (Status s = fn(k, entry.isOk()); !s) return s;
    auto put = store.put(storageKey(name), serialize(k), entry ? entry->version : Kv::kAbsent);
    if (put) return k;
    if (put.status().code() != StatusCode::kConflict) return put.status();
  }
  return Status::unavailable("the transit key changed concurrently too often; retry");
}

}  // namespace

Status checkKeyName(std::string_view name) {
  if (name.empty() || name.size() > 128) {
    return Status::invalid("a transit key name is 1 to 128 characters");
  }
  for (char c : name) {
    const bool ok = (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9') ||
                    c == '.' || c == '_' || c == '-';
    if (!ok) return Status::invalid("a transit key name holds only A-Z a-z 0-9 . _ -");
  }
  return Status::ok();
}

Result<KeyPolicy> TransitEngine::create(const Context& ctx, std::string_view name,
                                        std::string_view owner) const {
  auto ring = Keyring::open(ctx, seal_, /*create=*/true);
  if (!ring) return ring.status();
  auto k = change(ctx, name, [&](StoredKey& key, bool exists) -> Status {
    if (exists) return Status::conflict("the transit key \"" + std::string(name) + "\" exists");
    key.policy.created_ms = ctx.nowUnixMs();
    key.policy.owner = std::string(owner);
    return addVersion(ctx, seal_, kek_uses_, *ring, name, key);
  });
  if (!k) return k.status();
  return k->policy;
}

Result<KeyPolicy> TransitEngine::policy(const Context& ctx, std::string_view name) const {
  if (Status s = checkKeyName(name); !s) return s;
  if (seal_.sealed()) return Status::unavailable(std::string(kSealedMessage));
  auto entry = ctx.kv().get(storageKey(name));
  if (!entry) return entry.status().code() == StatusCode::kNotFound ? noKey(name) : entry.status();
  auto k = parse(entry->value);
  if (!k) return k.status();
  return k->policy;
}

Result<KeyPolicy> TransitEngine::rotate(const Context& ctx, std::string_view name) const {
  auto ring = Keyring::open(ctx, seal_, /*create=*/true);
  if (!ring) return ring.status();
  auto k = change(ctx, name, [&](StoredKey& key, bool exists) -> Status {
    if (!exists) return noKey(name);
    return addVersion(ctx, seal_, kek_uses_, *ring, name, key);
  });
  if (!k) return k.status();
  return k->policy;
}

Result<KeyPolicy> TransitEngine::configure(const Context& ctx, std::string_view name,
                                           std::optional<uint32_t> min_decryption_version,
                                           std::optional<bool> deletion_allowed) const {
  if (seal_.sealed()) return Status::unavailable(std::string(kSealedMessage));
  auto k = change(ctx, name, [&](StoredKey& key, bool exists) -> Status {
    if (!exists) return noKey(name);
    if (!key.policy.owner.empty()) return ownedByPlugin(name, key.policy);
    if (min_decryption_version) {
      if (*min_decryption_version < 1 || *min_decryption_version > key.policy.latest) {
        return Status::invalid("\"min_decryption_version\" must be from 1 to the latest version, " +
                               std::to_string(key.policy.latest));
      }
      key.policy.min_decryption_version = *min_decryption_version;
    }
    if (deletion_allowed) key.policy.deletion_allowed = *deletion_allowed;
    return Status::ok();
  });
  if (!k) return k.status();
  return k->policy;
}

Status TransitEngine::remove(const Context& ctx, std::string_view name) const {
  auto p = policy(ctx, name);
  if (!p) return p.status();
  if (!p->owner.empty()) return ownedByPlugin(name, *p);
  if (!p->deletion_allowed) {
    return Status::invalid("the transit key \"" + std::string(name) +
                           "\" may not be deleted: set deletion_allowed in its config first");
  }
  return ctx.kv().remove(storageKey(name));
}

Result<uint64_t> TransitEngine::rewrapOlder(const Context& ctx, std::string_view storage_key,
                                            Keyring& ring) const {
  const std::string_view name = storage_key.substr(kPrefix.size());
  uint64_t count = 0;
  auto written = change(ctx, name, [&](StoredKey& key, bool exists) -> Status {
    count = 0;
    // NOT_FOUND writes nothing: gone meanwhile, or nothing older to re-wrap.
    if (!exists) return Status::notFound("gone");
    for (auto& [version, env] : key.wrapped) {
      if (env.kek_version >= ring.current().version) continue;
      if (Status s = kek_uses_.take(ctx, seal_, ring); !s) return s;
      auto again = envelope::rewrap(ring, env, keyAad(ctx.tenant(), name, version));
      if (!again) return again.status();
      env = std::move(*again);
      ++count;
    }
    return count ? Status::ok() : Status::notFound("nothing older");
  });
  if (!written && written.status().code() != StatusCode::kNotFound) return written.status();
  return count;
}

Result<std::shared_ptr<const OpenKey>> TransitEngine::open(const Context& ctx,
                                                           std::string_view name) const {
  if (Status s = checkKeyName(name); !s) return s;
  const uint64_t epoch = seal_.epoch();
  if (seal_.sealed()) return Status::unavailable(std::string(kSealedMessage));
  auto entry = ctx.kv().get(storageKey(name));
  if (!entry) return entry.status().code() == StatusCode::kNotFound ? noKey(name) : entry.status();
  if (auto key = open_keys_.find(ctx.tenant(), name, entry->value, epoch)) return key;
  auto stored = parse(entry->value);
  if (!stored) return stored.status();
  auto ring = Keyring::open(ctx, seal_, /*create=*/false);
  if (!ring) return ring.status();
  OpenKey key;
  key.audit_resource_ = auditResource(ctx, seal_, "transit", name);
  key.policy_ = stored->policy;
  for (const auto& [v, env] : stored->wrapped) {
    auto plain = envelope::open(*ring, env, keyAad(ctx.tenant(), name, v));
    if (!plain) {
      return Status::internal("transit key " + std::string(name) + " version " + std::to_string(v) +
                              " does not open: " + plain.status().message());
    }
    key.versions_[v] = {std::make_unique<const aead::KeyedAead>(std::move(*plain)),
                        dataAad(ctx.tenant(), name, v)};
  }
  auto shared = std::make_shared<const OpenKey>(std::move(key));
  open_keys_.put(ctx.tenant(), name, std::move(entry->value), epoch, shared, seal_);
  return shared;
}

Result<std::string> OpenKey::encrypt(std::string_view plaintext) const {
  if (plaintext.size() > kMaxPlaintextBytes) {
    return Status::quotaExceeded("the plaintext is " + std::to_string(plaintext.size()) +
                                 " bytes; at most 262144 are allowed");
  }
  const uint32_t v = policy_.latest;
  const Version& version = versions_.at(v);
  auto box = version.cipher->seal(plaintext, version.aad);
  if (!box) return box.status();
  std::string out(kCipherPrefix);
  out += std::to_string(v);
  out += ':';
  appendBase64(out, *box);
  return out;
}

Result<SecureBuffer> OpenKey::decrypt(std::string_view ciphertext) const {
  const std::string format = "a ciphertext reads trellis:v<version>:<base64>";
  if (!ciphertext.starts_with(kCipherPrefix)) return Status::invalid(format);
  std::string_view rest = ciphertext.substr(kCipherPrefix.size());
  const size_t colon = rest.find(':');
  uint32_t v = 0;
  auto [end, ec] = std::from_chars(rest.data(), rest.data() + std::min(colon, rest.size()), v);
  if (colon == std::string_view::npos || ec != std::errc() || end != rest.data() + colon) {
    return Status::invalid(format);
  }
  if (v < policy_.min_decryption_version) {
    return Status::invalid("the ciphertext is of key version " + std::to_string(v) +
                           ", below min_decryption_version " +
                           std::to_string(policy_.min_decryption_version));
  }
  auto it = versions_.find(v);
  if (it == versions_.end()) {
    return Status::invalid("the key has no version " + std::to_string(v) + " (latest is " +
                           std::to_string(policy_.latest) + ")");
  }
  auto box = fromBase64(rest.substr(colon + 1));
  if (!box) return Status::invalid("the ciphertext's payload is not base64");
  return it->second.cipher->open(*box, it->second.aad);
}

std::string OpenKey::hmac(std::string_view input) const {
  const uint32_t v = policy_.latest;
  std::string key =
      hmacSha256(versions_.at(v).cipher->key().view(), "trellis-secrets transit hmac");
  const std::string mac = hmacSha256(key, input);
  cleanse(key);
  return std::string(kCipherPrefix) + std::to_string(v) + ":" + toBase64(mac);
}

}  // namespace trellis::secrets::transit
