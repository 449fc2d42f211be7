// The registry's signed metadata, in the spirit of TUF (The Update Framework): a client
// that trusts one root.json can tell, even through an untrusted mirror, whether the
// index it got was tampered with, is older than one it saw before (rollback / replay),
// or has stopped being refreshed (freeze); and which publisher keys may sign which
// packages. docs/marketplace.md ("Trust model") describes the formats and the threats.
//
// Every metadata file is an envelope around a "signed" object; signatures are Ed25519
// over the canonical JSON bytes (canonical_json.h) of "signed":
//   {"signed": {...}, "signatures": [{"keyid": "<16 hex>", "sig": "<base64>"}]}
//
//   root.json       root, timestamp and index keys with thresholds; version, expiry
//   timestamp.json  the current index version with its SHA-256 and length; short expiry
//   index.json      namespaces -> publisher keys (rotation chain, revocations),
//                   packages -> versions -> archive SHA-256 + manifest summary
//
// Client:
//   auto root = Root::loadTrusted(pinned_root_bytes);           // shipped / pinned
//   root = updateRoot(*root, new_root_bytes);                    // one version at a time
//   auto index = verifyIndex(*root, last_seen_version, now, ts_bytes, index_bytes);
//   auto pkg = PackageArchive::open(download);
//   if (auto s = index->verifyPackage("acme/hello", "1.2.0", *pkg); !s) refuse(s);
// Registry:
//   auto index_bytes = signIndex(index, {&index_key});
//   auto ts_bytes = signTimestamp(index_bytes, ts_version, expires, {&timestamp_key});
#pragma once

#include <Poco/JSON/Object.h>

#include <cstdint>
#include <map>
#include <optional>
#include <string>
#include <string_view>
#include <vector>

#include "trellis/marketplace/ed25519.h"
#include "trellis/marketplace/package.h"
#include "trellis/status.hpp"

namespace trellis::marketplace {

// Times in signed metadata are integer Unix seconds (canonical JSON has no floats).
using UnixSeconds = int64_t;

struct RoleKeys {
  std::vector<std::string> keyids;
  uint32_t threshold = 1;
};

struct Root {
  uint64_t version = 1;
  UnixSeconds expires = 0;
  std::map<std::string, PublicKey> keys;  // keyid -> key
  RoleKeys root, timestamp, index;

  Poco::JSON::Object::Ptr toJson() const;
  static Result<Root> fromJson(const Poco::JSON::Object::Ptr& signed_part);
  // A root the client already trusts (shipped with it or pinned by the admin): parsed and
  // checked to be signed by its own root threshold. Expiry is checked by verifyIndex.
  static Result<Root> loadTrusted(std::string_view root_bytes);
};

struct Timestamp {
  uint64_t version = 1;
  UnixSeconds expires = 0;
  uint64_t index_version = 0;
  std::string index_sha256;
  uint64_t index_length = 0;

  Poco::JSON::Object::Ptr toJson() const;
  static Result<Timestamp> fromJson(const Poco::JSON::Object::Ptr& signed_part);
};

struct Revocation {
  // Packages the registry published at or after this time, and keys this key vouched
  // for from this time on, are refused. Routine retirement: now. Compromise: the
  // earliest moment the key may have leaked (earlier packages stay installable).
  UnixSeconds at = 0;
  std::string reason;
};

struct PublisherKey {
  std::string keyid;
  PublicKey key;
  UnixSeconds added = 0;
  // Rotation: the earlier key of the same namespace that vouches for this one, and its
  // signature over rotationStatement(). Empty for a namespace's first key.
  std::string signed_by;
  std::string rotation_sig;  // raw 64 bytes
  std::optional<Revocation> revoked;
};

struct PackageRecord {
  std::string sha256;  // of the archive
  uint64_t length = 0;
  std::string keyid;  // the publisher key that signed the manifest
  UnixSeconds published = 0;
  // Manifest summary, so resolution needs no downloads.
  std::string runtime = "native";
  std::optional<std::pair<uint32_t, uint32_t>> abi;  // major, minor
  std::string host;                                  // version range, "" if any
  std::vector<std::string> platforms;                // entry keys: linux-x86_64, lua, …
  std::map<std::string, std::string> dependencies;   // id -> range
  std::vector<std::string> capabilities;
  bool yanked = false;
  std::string yanked_reason;
};

struct Index {
  uint64_t version = 1;
  UnixSeconds expires = 0;
  std::map<std::string, std::vector<PublisherKey>> namespaces;           // in order of addition
  std::map<std::string, std::map<std::string, PackageRecord>> packages;  // id -> version ->

  Poco::JSON::Object::Ptr toJson() const;
  static Result<Index> fromJson(const Poco::JSON::Object::Ptr& signed_part);
};

// The bytes an old publisher key signs to vouch for a new one.
std::string rotationStatement(std::string_view ns, const PublicKey& new_key,
                              std::string_view previous_keyid);
// A namespace's first key, registered by the registry (no rotation signature).
PublisherKey firstPublisherKey(const PublicKey& key, UnixSeconds added);
// A new key vouched for by `old_key` (rotation).
Result<PublisherKey> rotatePublisherKey(std::string_view ns, const PrivateKey& old_key,
                                        const PublicKey& new_key, UnixSeconds added);
// The index record for a package the registry accepts (manifest summary from the archive).
Result<PackageRecord> summarizePackage(const PackageArchive& pkg, UnixSeconds published);

// Signing (the registry side): the canonical envelope bytes.
Result<std::string> signEnvelope(const Poco::JSON::Object::Ptr& signed_part,
                                 const std::vector<const PrivateKey*>& keys);
Result<std::string> signRoot(const Root& root, const std::vector<const PrivateKey*>& keys);
Result<std::string> signIndex(const Index& index, const std::vector<const PrivateKey*>& keys);
// A timestamp naming `index_bytes` (its version is read from them).
Result<std::string> signTimestamp(std::string_view index_bytes, uint64_t version,
                                  UnixSeconds expires, const std::vector<const PrivateKey*>& keys);

// A new root, accepted only if its version is trusted.version + 1 and it is signed both by
// the threshold of the trusted root's root keys and by the threshold of its own.
Result<Root> updateRoot(const Root& trusted, std::string_view new_root_bytes);

class VerifiedIndex {
 public:
  const Index& index() const { return index_; }
  uint64_t version() const { return index_.version; }

  // The record of id@version; NOT_FOUND names what is missing.
  Result<PackageRecord> find(std::string_view id, std::string_view version) const;
  // The key that may have signed id@version: the record's key, from the namespace's
  // verified chain, not revoked before the package was published. PERMISSION_DENIED says
  // why not (unknown key, revoked).
  Result<PublicKey> signingKey(std::string_view id, std::string_view version) const;
  // Raw downloaded bytes are the archive the index names (same length and SHA-256). Run it
  // before any parsing, so only bytes the index vouches for reach the zip reader.
  Status verifyArchiveBytes(std::string_view id, std::string_view version,
                            std::string_view bytes) const;
  // A downloaded archive is the one the index names: same SHA-256 and length, same id
  // and version inside, signed by signingKey(), every file intact.
  Status verifyPackage(std::string_view id, std::string_view version,
                       const PackageArchive& pkg) const;

 private:
  friend Result<VerifiedIndex> verifyIndex(const Root&, uint64_t, UnixSeconds, std::string_view,
                                           std::string_view);
  explicit VerifiedIndex(Index index) : index_(std::move(index)) {}
  Index index_;
};

// The client's whole check of a fetched timestamp.json + index.json, each refusal with
// its own message: a signature that does not verify (tampered), a key the root does not
// name for the role (unknown key), too few signatures, an expired timestamp, index or
// root (freeze), an index older than `last_seen_version` (rollback / replay), an index
// whose bytes do not match the timestamp, and an inconsistent publisher key chain.
Result<VerifiedIndex> verifyIndex(const Root& root, uint64_t last_seen_version, UnixSeconds now,
                                  std::string_view timestamp_bytes, std::string_view index_bytes);

}  // namespace trellis::marketplace
