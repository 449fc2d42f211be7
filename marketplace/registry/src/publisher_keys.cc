#include "publisher_keys.h"

#include <algorithm>

#include "names.h"
#include "records.h"

namespace trellis::registry {
namespace {

// Up to this many compare-and-set rounds before giving up (UNAVAILABLE: retry later).
constexpr int kCasAttempts = 16;

struct Loaded {
  std::vector<PublisherKey> keys;
  uint64_t version = Kv::kAbsent;
};

Result<Loaded> load(const Store& store, const std::string& ns) {
  auto stored = store.getJson(namespaceKey(ns));
  if (!stored) {
    if (stored.status().code() == StatusCode::kNotFound) return Loaded{};
    return stored.status();
  }
  auto keys = decodeKeys(ns, stored->value);
  if (!keys) return keys.status();
  return Loaded{std::move(*keys), stored->version};
}

// Applies `change` to the namespace's keys and stores them if nothing changed meanwhile.
template <typename Change>
Result<PublisherKey> update(const Store& store, const std::string& ns, Change change) {
  for (int attempt = 0; attempt < kCasAttempts; ++attempt) {
    auto loaded = load(store, ns);
    if (!loaded) return loaded.status();
    Result<PublisherKey> changed = change(loaded->keys);
    if (!changed) return changed;
    auto put = store.putJson(namespaceKey(ns), encodeKeys(ns, loaded->keys), loaded->version);
    if (put) return changed;
    if (put.status().code() != StatusCode::kConflict) return put.status();
  }
  return Status::unavailable("namespace " + ns + " is being changed concurrently; retry");
}

const PublisherKey* find(const std::vector<PublisherKey>& keys, const std::string& keyid) {
  auto it = std::find_if(keys.begin(), keys.end(),
                         [&](const PublisherKey& k) { return k.keyid == keyid; });
  return it == keys.end() ? nullptr : &*it;
}

}  // namespace

Result<std::vector<PublisherKey>> namespaceKeys(const Store& store, const std::string& ns) {
  auto loaded = load(store, ns);
  if (!loaded) return loaded.status();
  if (loaded->keys.empty()) return Status::notFound("namespace \"" + ns + "\" has no keys");
  return std::move(loaded->keys);
}

Result<std::vector<std::string>> namespaces(const Store& store) {
  std::vector<std::string> out;
  Status s = store.forEach("ns/", [&](std::string_view key, std::string_view) {
    out.emplace_back(key.substr(3));
    return Status::ok();
  });
  if (!s) return s;
  return out;
}

Result<PublisherKey> addFirstKey(const Store& store, const std::string& ns,
                                 const marketplace::PublicKey& key, UnixSeconds now) {
  auto existing = namespaces(store);
  if (!existing) return existing.status();
  if (auto clash = confusableNamespace(ns, *existing)) {
    return Status::conflict("namespace \"" + ns + "\" is too close to the existing namespace \"" +
                            *clash + "\" (confusable names are refused)");
  }
  return update(store, ns, [&](std::vector<PublisherKey>& keys) -> Result<PublisherKey> {
    if (!keys.empty()) {
      return Status::conflict("namespace \"" + ns +
                              "\" already has keys; add a key as a rotation signed by one of them");
    }
    keys.push_back(marketplace::firstPublisherKey(key, now));
    return keys.back();
  });
}

Result<PublisherKey> addRotatedKey(const Store& store, const std::string& ns,
                                   const marketplace::PublicKey& key, const std::string& signed_by,
                                   const std::string& rotation_sig, UnixSeconds now) {
  return update(store, ns, [&](std::vector<PublisherKey>& keys) -> Result<PublisherKey> {
    if (keys.empty()) return Status::notFound("namespace \"" + ns + "\" has no keys");
    if (find(keys, key.keyId())) {
      return Status::conflict("key " + key.keyId() + " is already registered for " + ns);
    }
    const PublisherKey* old = find(keys, signed_by);
    if (!old) {
      return Status::invalid("signed_by: key " + signed_by + " is not a key of namespace \"" + ns +
                             "\"");
    }
    if (old->revoked) {
      return Status::invalid("signed_by: key " + signed_by + " was revoked at " +
                             std::to_string(old->revoked->at) + " and cannot vouch for new keys");
    }
    if (Status s = marketplace::verifySignature(
            old->key, marketplace::rotationStatement(ns, key, signed_by), rotation_sig);
        !s) {
      return Status::invalid("rotation_sig: " + s.message());
    }
    PublisherKey k;
    k.keyid = key.keyId();
    k.key = key;
    k.added = now;
    k.signed_by = signed_by;
    k.rotation_sig = rotation_sig;
    keys.push_back(k);
    return k;
  });
}

Result<PublisherKey> revokeKey(const Store& store, const std::string& ns, const std::string& keyid,
                               const std::string& reason, std::optional<UnixSeconds> at,
                               UnixSeconds now) {
  return update(store, ns, [&](std::vector<PublisherKey>& keys) -> Result<PublisherKey> {
    auto it = std::find_if(keys.begin(), keys.end(),
                           [&](const PublisherKey& k) { return k.keyid == keyid; });
    if (it == keys.end()) {
      return Status::notFound("namespace \"" + ns + "\" has no key " + keyid);
    }
    if (it->revoked) {
      return Status::conflict("key " + keyid + " was already revoked at " +
                              std::to_string(it->revoked->at));
    }
    // Clients refuse a chain in which a key vouched for another at or after its own
    // revocation, so such a revocation would make the whole index unusable. Without an
    // explicit time, the revocation takes effect just after the newest key it vouched for
    // (a rotation and a revocation in the same second).
    UnixSeconds effective = at.value_or(now);
    for (const PublisherKey& k : keys) {
      if (k.signed_by != keyid || k.added < effective) continue;
      if (at) {
        return Status::conflict("key " + keyid + " vouched for key " + k.keyid + " at " +
                                std::to_string(k.added) + "; revoke it at a later time than that");
      }
      effective = k.added + 1;
    }
    it->revoked = marketplace::Revocation{effective, reason};
    return *it;
  });
}

Result<PublisherKey> signingKey(const std::vector<PublisherKey>& keys, const std::string& ns,
                                const std::string& keyid) {
  const PublisherKey* k = find(keys, keyid);
  if (!k) {
    return Status::invalid("the package is signed by key " + keyid +
                           ", which is not registered for namespace \"" + ns + "\"");
  }
  // Any revocation, even one taking effect a second from now, ends publishing with the key.
  if (k->revoked) {
    return Status::invalid("the package is signed by key " + keyid + ", which was revoked at " +
                           std::to_string(k->revoked->at) + " (" + k->revoked->reason + ")");
  }
  return *k;
}

}  // namespace trellis::registry
