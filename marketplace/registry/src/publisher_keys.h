// Namespaces and their publisher key chains ("ns/<ns>"), changed with compare-and-set so
// concurrent registrations cannot lose one another. Rules (docs/marketplace.md):
//   - the first key of a namespace is registered with the admin token;
//   - every later key is a rotation: signed by an existing, unrevoked key of the namespace
//     over rotationStatement(ns, new, old);
//   - a revoked key gets {at, reason}; `at` may be backdated (compromise), never in the future.
#pragma once

#include <optional>
#include <string>
#include <vector>

#include "store.h"
#include "trellis/marketplace/index.h"
#include "trellis/status.hpp"

namespace trellis::registry {

using marketplace::PublisherKey;
using marketplace::UnixSeconds;

// NOT_FOUND if the namespace has no keys.
Result<std::vector<PublisherKey>> namespaceKeys(const Store& store, const std::string& ns);

// Every namespace with keys.
Result<std::vector<std::string>> namespaces(const Store& store);

// CONFLICT if the namespace already has a key, or its name is confusable with another's.
Result<PublisherKey> addFirstKey(const Store& store, const std::string& ns,
                                 const marketplace::PublicKey& key, UnixSeconds now);

// INVALID if the rotation signature does not verify or `signed_by` is unknown or revoked
// (even with a revocation time still ahead);
// CONFLICT if the key is already registered.
Result<PublisherKey> addRotatedKey(const Store& store, const std::string& ns,
                                   const marketplace::PublicKey& key, const std::string& signed_by,
                                   const std::string& rotation_sig, UnixSeconds now);

// CONFLICT if already revoked, or if an explicit `at` is not after every key this key
// vouched for (clients would refuse the chain); NOT_FOUND if the namespace has no such key.
// Without `at`: now, or one second after the newest key it vouched for if that is later.
Result<PublisherKey> revokeKey(const Store& store, const std::string& ns, const std::string& keyid,
                               const std::string& reason, std::optional<UnixSeconds> at,
                               UnixSeconds now);

// The key that may sign a package published now: registered for the namespace and not
// revoked at all (a revocation ends publishing even before its time). INVALID names why not.
Result<PublisherKey> signingKey(const std::vector<PublisherKey>& keys, const std::string& ns,
                                const std::string& keyid);

}  // namespace trellis::registry
