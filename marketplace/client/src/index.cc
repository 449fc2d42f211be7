#include "trellis/marketplace/index.h"

#include <Poco/JSON/Array.h>

#include <algorithm>
#include <set>

#include "trellis/marketplace/canonical_json.h"
#include "trellis/marketplace/encoding.h"

namespace trellis::marketplace {
namespace {

using Poco::Dynamic::Var;
using Poco::JSON::Array;
using Poco::JSON::Object;

constexpr int kSchema = 1;
constexpr size_t kMaxMetadataBytes = kMaxJsonBytes;

// Path-aware accessors: every message names the file and the field.
class Reader {
 public:
  Reader(Object::Ptr o, std::string where) : o_(std::move(o)), where_(std::move(where)) {}

  const std::string& where() const { return where_; }
  bool has(const std::string& name) const { return o_->has(name); }
  Status error(const std::string& name, const std::string& what) const {
    return Status::invalid(where_ + "." + name + ": " + what);
  }

  Result<std::string> str(const std::string& name) const {
    if (!o_->has(name)) return error(name, "required but missing");
    Var v = o_->get(name);
    if (!v.isString()) return error(name, "must be a string");
    return v.extract<std::string>();
  }
  Result<uint64_t> u64(const std::string& name) const {
    if (!o_->has(name)) return error(name, "required but missing");
    Var v = o_->get(name);
    if (!v.isInteger() || (v.isSigned() && v.convert<Poco::Int64>() < 0)) {
      return error(name, "must be a non-negative integer");
    }
    return v.convert<Poco::UInt64>();
  }
  Result<int64_t> i64(const std::string& name) const {
    if (!o_->has(name)) return error(name, "required but missing");
    Var v = o_->get(name);
    if (!v.isInteger() || (!v.isSigned() && v.convert<Poco::UInt64>() > INT64_MAX)) {
      return error(name, "must be an integer (Unix seconds)");
    }
    return v.convert<Poco::Int64>();
  }
  Result<bool> boolean(const std::string& name) const {
    if (!o_->has(name)) return error(name, "required but missing");
    Var v = o_->get(name);
    if (!v.isBoolean()) return error(name, "must be true or false");
    return v.extract<bool>();
  }
  Result<Reader> obj(const std::string& name) const {
    if (!o_->has(name)) return error(name, "required but missing");
    Var v = o_->get(name);
    if (v.type() != typeid(Object::Ptr)) return error(name, "must be an object");
    return Reader(v.extract<Object::Ptr>(), where_ + "." + name);
  }
  Result<Array::Ptr> arr(const std::string& name) const {
    if (!o_->has(name)) return error(name, "required but missing");
    Var v = o_->get(name);
    if (v.type() != typeid(Array::Ptr)) return error(name, "must be an array");
    return v.extract<Array::Ptr>();
  }
  Result<std::vector<std::string>> strings(const std::string& name) const {
    auto a = arr(name);
    if (!a) return a.status();
    std::vector<std::string> out;
    for (size_t i = 0; i < (*a)->size(); ++i) {
      Var v = (*a)->get(static_cast<unsigned>(i));
      if (!v.isString()) return error(name, "must hold strings only");
      out.push_back(v.extract<std::string>());
    }
    return out;
  }
  Result<std::map<std::string, std::string>> stringMap(const std::string& name) const {
    auto o = obj(name);
    if (!o) return o.status();
    std::map<std::string, std::string> out;
    for (const auto& [k, v] : *o->o_) {
      if (!v.isString()) return error(name + "." + k, "must be a string");
      out[k] = v.extract<std::string>();
    }
    return out;
  }
  std::vector<std::string> names() const {
    std::vector<std::string> out;
    for (const auto& [k, v] : *o_) out.push_back(k);
    return out;
  }
  const Object::Ptr& object() const { return o_; }

  // "type" and "schema": the file is what the caller expects, in a schema it reads.
  Status expectKind(const std::string& type) const {
    auto t = str("type");
    if (!t) return t.status();
    if (*t != type) return error("type", "expected \"" + type + "\", got \"" + *t + "\"");
    auto schema = u64("schema");
    if (!schema) return schema.status();
    if (*schema != kSchema) {
      return error("schema", "unsupported schema " + std::to_string(*schema) + " (reads 1)");
    }
    return Status::ok();
  }

  // What root, timestamp and index files begin with: the kind, the schema, the version and
  // the expiry.
  Status header(const std::string& type, uint64_t& version, UnixSeconds& expires) const {
    if (Status s = expectKind(type); !s) return s;
    auto v = u64("version");
    if (!v) return v.status();
    auto e = i64("expires");
    if (!e) return e.status();
    version = *v;
    expires = *e;
    return Status::ok();
  }

 private:
  Object::Ptr o_;
  std::string where_;
};

#define TRY_ASSIGN(lhs, expr)    \
  do {                           \
    auto _r = (expr);            \
    if (!_r) return _r.status(); \
    (lhs) = std::move(*_r);      \
  } while (0)

Object::Ptr newObject() {
  return new Object;
}

// The beginning of every signed root, timestamp and index file (see Reader::header).
Object::Ptr signedHeader(const std::string& type, uint64_t version, UnixSeconds expires) {
  Object::Ptr o = newObject();
  o->set("type", type);
  o->set("schema", kSchema);
  o->set("version", static_cast<Poco::UInt64>(version));
  o->set("expires", static_cast<Poco::Int64>(expires));
  return o;
}

Array::Ptr toArray(const std::vector<std::string>& items) {
  Array::Ptr a = new Array;
  for (const auto& s : items) a->add(s);
  return a;
}

Object::Ptr toObject(const std::map<std::string, std::string>& items) {
  Object::Ptr o = newObject();
  for (const auto& [k, v] : items) o->set(k, v);
  return o;
}

Object::Ptr roleJson(const RoleKeys& r) {
  Object::Ptr o = newObject();
  o->set("keyids", toArray(r.keyids));
  o->set("threshold", static_cast<Poco::UInt64>(r.threshold));
  return o;
}

std::string join(const std::vector<std::string>& items) {
  std::string out;
  for (const auto& s : items) out += (out.empty() ? "" : ", ") + s;
  return out.empty() ? "none" : out;
}

// A parsed envelope: the "signed" object, its canonical bytes, and the signatures.
struct Envelope {
  Object::Ptr signed_part;
  std::string canonical;
  std::vector<std::pair<std::string, std::string>> signatures;  // keyid, raw sig
};

Result<Envelope> parseEnvelope(std::string_view bytes, const std::string& file) {
  auto v = parseJsonStrict(bytes, kMaxMetadataBytes);
  if (!v) return Status::invalid(file + ": " + v.status().message());
  if (v->type() != typeid(Object::Ptr)) return Status::invalid(file + ": must be a JSON object");
  Reader top(v->extract<Object::Ptr>(), file);
  for (const auto& name : top.names()) {
    if (name != "signed" && name != "signatures") {
      return Status::invalid(file + ": unknown field \"" + name + "\" (known: signed, signatures)");
    }
  }
  Envelope env;
  Reader signed_part(nullptr, "");
  TRY_ASSIGN(signed_part, top.obj("signed"));
  env.signed_part = signed_part.object();
  auto canonical = canonicalJson(env.signed_part);
  if (!canonical) return Status::invalid(file + ": " + canonical.status().message());
  env.canonical = std::move(*canonical);
  Array::Ptr sigs;
  TRY_ASSIGN(sigs, top.arr("signatures"));
  for (size_t i = 0; i < sigs->size(); ++i) {
    Var s = sigs->get(static_cast<unsigned>(i));
    std::string where = file + ".signatures[" + std::to_string(i) + "]";
    if (s.type() != typeid(Object::Ptr)) return Status::invalid(where + ": must be an object");
    Reader r(s.extract<Object::Ptr>(), where);
    std::string keyid, sig;
    TRY_ASSIGN(keyid, r.str("keyid"));
    TRY_ASSIGN(sig, r.str("sig"));
    auto raw = base64Decode(sig);
    if (!raw) return r.error("sig", raw.status().message());
    env.signatures.emplace_back(keyid, std::move(*raw));
  }
  return env;
}

// Threshold check with distinct diagnoses: tampered (a listed key's signature fails),
// unknown key (signed, but not by keys the root names for the role), or too few.
Status checkThreshold(const Envelope& env, const std::string& file, const std::string& role,
                      const RoleKeys& keys, const std::map<std::string, PublicKey>& known) {
  std::set<std::string> valid;
  std::vector<std::string> bad, unknown;
  for (const auto& [keyid, sig] : env.signatures) {
    if (valid.count(keyid)) continue;  // a key counts once, however often it signed
    bool in_role = std::find(keys.keyids.begin(), keys.keyids.end(), keyid) != keys.keyids.end();
    auto key = known.find(keyid);
    if (!in_role || key == known.end()) {
      unknown.push_back(keyid);
      continue;
    }
    if (verifySignature(key->second, env.canonical, sig)) {
      valid.insert(keyid);
    } else {
      bad.push_back(keyid);
    }
  }
  if (valid.size() >= keys.threshold && keys.threshold > 0) return Status::ok();
  if (!bad.empty()) {
    return Status::invalid(file + ": signature by " + role + " key " + bad.front() +
                           " does not verify: the metadata was tampered with");
  }
  if (!unknown.empty() && valid.empty()) {
    return Status::permissionDenied(file + ": signed by unknown key " + unknown.front() +
                                    ", which root.json does not name for the " + role +
                                    " role (expected: " + join(keys.keyids) + ")");
  }
  return Status::permissionDenied(file + ": " + std::to_string(valid.size()) +
                                  " valid signature(s) from the " + role +
                                  " role; root.json requires " + std::to_string(keys.threshold));
}

Result<RoleKeys> readRole(const Reader& roles, const std::string& name,
                          const std::map<std::string, PublicKey>& keys) {
  Reader r(nullptr, "");
  TRY_ASSIGN(r, roles.obj(name));
  RoleKeys role;
  TRY_ASSIGN(role.keyids, r.strings("keyids"));
  uint64_t threshold;
  TRY_ASSIGN(threshold, r.u64("threshold"));
  if (threshold == 0 || threshold > role.keyids.size()) {
    return r.error("threshold", "must be between 1 and the number of keyids (" +
                                    std::to_string(role.keyids.size()) + ")");
  }
  role.threshold = static_cast<uint32_t>(threshold);
  for (const auto& id : role.keyids) {
    if (!keys.count(id)) return r.error("keyids", "names key " + id + ", which keys does not hold");
  }
  return role;
}

Result<PublisherKey> readPublisherKey(const Reader& r) {
  PublisherKey k;
  TRY_ASSIGN(k.keyid, r.str("keyid"));
  std::string pub;
  TRY_ASSIGN(pub, r.str("public"));
  auto key = PublicKey::fromBase64(pub);
  if (!key) return r.error("public", key.status().message());
  k.key = *key;
  if (k.key.keyId() != k.keyid) {
    return r.error("keyid", k.keyid + " is not the id of its public key (" + k.key.keyId() + ")");
  }
  TRY_ASSIGN(k.added, r.i64("added"));
  if (r.has("signed_by")) {
    TRY_ASSIGN(k.signed_by, r.str("signed_by"));
    std::string sig;
    TRY_ASSIGN(sig, r.str("rotation_sig"));
    auto raw = base64Decode(sig);
    if (!raw) return r.error("rotation_sig", raw.status().message());
    k.rotation_sig = *raw;
  }
  if (r.has("revoked")) {
    Reader rev(nullptr, "");
    TRY_ASSIGN(rev, r.obj("revoked"));
    Revocation revocation;
    TRY_ASSIGN(revocation.at, rev.i64("at"));
    TRY_ASSIGN(revocation.reason, rev.str("reason"));
    k.revoked = revocation;
  }
  return k;
}

Object::Ptr publisherKeyJson(const PublisherKey& k) {
  Object::Ptr o = newObject();
  o->set("keyid", k.keyid);
  o->set("public", k.key.base64());
  o->set("added", static_cast<Poco::Int64>(k.added));
  if (!k.signed_by.empty()) {
    o->set("signed_by", k.signed_by);
    o->set("rotation_sig", base64Encode(k.rotation_sig));
  }
  if (k.revoked) {
    Object::Ptr rev = newObject();
    rev->set("at", static_cast<Poco::Int64>(k.revoked->at));
    rev->set("reason", k.revoked->reason);
    o->set("revoked", rev);
  }
  return o;
}

Result<PackageRecord> readPackageRecord(const Reader& r) {
  PackageRecord p;
  TRY_ASSIGN(p.sha256, r.str("sha256"));
  if (!isSha256Hex(p.sha256)) return r.error("sha256", "must be 64 lowercase hex characters");
  TRY_ASSIGN(p.length, r.u64("length"));
  TRY_ASSIGN(p.keyid, r.str("keyid"));
  TRY_ASSIGN(p.published, r.i64("published"));
  TRY_ASSIGN(p.runtime, r.str("runtime"));
  if (r.has("abi")) {
    Reader abi(nullptr, "");
    TRY_ASSIGN(abi, r.obj("abi"));
    uint64_t major, minor;
    TRY_ASSIGN(major, abi.u64("major"));
    TRY_ASSIGN(minor, abi.u64("minor"));
    p.abi = {static_cast<uint32_t>(major), static_cast<uint32_t>(minor)};
  }
  if (r.has("host")) TRY_ASSIGN(p.host, r.str("host"));
  TRY_ASSIGN(p.platforms, r.strings("platforms"));
  if (r.has("dependencies")) TRY_ASSIGN(p.dependencies, r.stringMap("dependencies"));
  if (r.has("capabilities")) TRY_ASSIGN(p.capabilities, r.strings("capabilities"));
  TRY_ASSIGN(p.yanked, r.boolean("yanked"));
  if (r.has("yanked_reason")) TRY_ASSIGN(p.yanked_reason, r.str("yanked_reason"));
  return p;
}

Object::Ptr packageRecordJson(const PackageRecord& p) {
  Object::Ptr o = newObject();
  o->set("sha256", p.sha256);
  o->set("length", static_cast<Poco::UInt64>(p.length));
  o->set("keyid", p.keyid);
  o->set("published", static_cast<Poco::Int64>(p.published));
  o->set("runtime", p.runtime);
  if (p.abi) {
    Object::Ptr abi = newObject();
    abi->set("major", static_cast<Poco::UInt64>(p.abi->first));
    abi->set("minor", static_cast<Poco::UInt64>(p.abi->second));
    o->set("abi", abi);
  }
  if (!p.host.empty()) o->set("host", p.host);
  o->set("platforms", toArray(p.platforms));
  o->set("dependencies", toObject(p.dependencies));
  o->set("capabilities", toArray(p.capabilities));
  o->set("yanked", p.yanked);
  if (!p.yanked_reason.empty()) o->set("yanked_reason", p.yanked_reason);
  return o;
}

// A namespace's keys form a chain: each key after the first is vouched for by an earlier
// key of the namespace that was not revoked when the new key was added. The index is
// signed by the registry, but a chain that does not hold means the registry (or its
// index key) is lying, so the whole index is refused.
Status checkKeyChain(const std::string& ns, const std::vector<PublisherKey>& keys) {
  std::set<std::string> seen;
  for (size_t i = 0; i < keys.size(); ++i) {
    const PublisherKey& k = keys[i];
    std::string where = "index.json: namespace \"" + ns + "\": key " + k.keyid;
    if (!seen.insert(k.keyid).second) return Status::invalid(where + " is listed twice");
    if (i == 0) {
      if (!k.signed_by.empty()) {
        return Status::invalid(where + " is the first key but names signed_by " + k.signed_by);
      }
      continue;
    }
    if (k.signed_by.empty()) {
      return Status::invalid(where +
                             " is not vouched for by an earlier key of the namespace "
                             "(rotation needs a signature by the old key)");
    }
    auto prev = std::find_if(keys.begin(), keys.begin() + static_cast<ptrdiff_t>(i),
                             [&](const PublisherKey& p) { return p.keyid == k.signed_by; });
    if (prev == keys.begin() + static_cast<ptrdiff_t>(i)) {
      return Status::invalid(where + " names signed_by " + k.signed_by +
                             ", which is not an earlier key of the namespace");
    }
    if (prev->revoked && prev->revoked->at <= k.added) {
      return Status::invalid(where + " was vouched for by key " + prev->keyid +
                             " after that key was revoked");
    }
    if (!verifySignature(prev->key, rotationStatement(ns, k.key, prev->keyid), k.rotation_sig)) {
      return Status::invalid(where + ": rotation signature by " + prev->keyid + " does not verify");
    }
  }
  return Status::ok();
}

Result<Timestamp> verifyTimestamp(const Root& root, std::string_view bytes, UnixSeconds now) {
  auto env = parseEnvelope(bytes, "timestamp.json");
  if (!env) return env.status();
  if (Status s = checkThreshold(*env, "timestamp.json", "timestamp", root.timestamp, root.keys);
      !s) {
    return s;
  }
  auto ts = Timestamp::fromJson(env->signed_part);
  if (!ts) return ts.status();
  if (ts->expires <= now) {
    return Status::unavailable("timestamp.json expired at " + std::to_string(ts->expires) +
                               " (now " + std::to_string(now) +
                               "): the registry or mirror serves frozen metadata");
  }
  return ts;
}

}  // namespace

// ---- formats ----

Object::Ptr Root::toJson() const {
  Object::Ptr o = signedHeader("root", version, expires);
  Object::Ptr k = newObject();
  for (const auto& [id, key] : keys) {
    Object::Ptr entry = newObject();
    entry->set("keytype", "ed25519");
    entry->set("public", key.base64());
    k->set(id, entry);
  }
  o->set("keys", k);
  Object::Ptr roles = newObject();
  roles->set("root", roleJson(root));
  roles->set("timestamp", roleJson(timestamp));
  roles->set("index", roleJson(index));
  o->set("roles", roles);
  return o;
}

Result<Root> Root::fromJson(const Object::Ptr& signed_part) {
  Reader r(signed_part, "root.json");
  Root root;
  if (Status s = r.header("root", root.version, root.expires); !s) return s;
  Reader keys(nullptr, "");
  TRY_ASSIGN(keys, r.obj("keys"));
  for (const auto& id : keys.names()) {
    Reader k(nullptr, "");
    TRY_ASSIGN(k, keys.obj(id));
    std::string type, pub;
    TRY_ASSIGN(type, k.str("keytype"));
    if (type != "ed25519") return k.error("keytype", "unsupported key type \"" + type + "\"");
    TRY_ASSIGN(pub, k.str("public"));
    auto key = PublicKey::fromBase64(pub);
    if (!key) return k.error("public", key.status().message());
    if (key->keyId() != id) {
      return keys.error(id, "is not the id of its public key (" + key->keyId() + ")");
    }
    root.keys[id] = *key;
  }
  Reader roles(nullptr, "");
  TRY_ASSIGN(roles, r.obj("roles"));
  TRY_ASSIGN(root.root, readRole(roles, "root", root.keys));
  TRY_ASSIGN(root.timestamp, readRole(roles, "timestamp", root.keys));
  TRY_ASSIGN(root.index, readRole(roles, "index", root.keys));
  return root;
}

Result<Root> Root::loadTrusted(std::string_view bytes) {
  auto env = parseEnvelope(bytes, "root.json");
  if (!env) return env.status();
  auto root = fromJson(env->signed_part);
  if (!root) return root.status();
  if (Status s = checkThreshold(*env, "root.json", "root", root->root, root->keys); !s) return s;
  return root;
}

Object::Ptr Timestamp::toJson() const {
  Object::Ptr o = signedHeader("timestamp", version, expires);
  Object::Ptr idx = newObject();
  idx->set("version", static_cast<Poco::UInt64>(index_version));
  idx->set("sha256", index_sha256);
  idx->set("length", static_cast<Poco::UInt64>(index_length));
  o->set("index", idx);
  return o;
}

Result<Timestamp> Timestamp::fromJson(const Object::Ptr& signed_part) {
  Reader r(signed_part, "timestamp.json");
  Timestamp t;
  if (Status s = r.header("timestamp", t.version, t.expires); !s) return s;
  Reader idx(nullptr, "");
  TRY_ASSIGN(idx, r.obj("index"));
  TRY_ASSIGN(t.index_version, idx.u64("version"));
  TRY_ASSIGN(t.index_sha256, idx.str("sha256"));
  if (!isSha256Hex(t.index_sha256)) return idx.error("sha256", "must be 64 lowercase hex");
  TRY_ASSIGN(t.index_length, idx.u64("length"));
  return t;
}

Object::Ptr Index::toJson() const {
  Object::Ptr o = signedHeader("index", version, expires);
  Object::Ptr ns = newObject();
  for (const auto& [name, keys] : namespaces) {
    Array::Ptr list = new Array;
    for (const auto& k : keys) list->add(publisherKeyJson(k));
    Object::Ptr entry = newObject();
    entry->set("keys", list);
    ns->set(name, entry);
  }
  o->set("namespaces", ns);
  Object::Ptr pkgs = newObject();
  for (const auto& [id, versions] : packages) {
    Object::Ptr v = newObject();
    for (const auto& [version, record] : versions) v->set(version, packageRecordJson(record));
    pkgs->set(id, v);
  }
  o->set("packages", pkgs);
  return o;
}

Result<Index> Index::fromJson(const Object::Ptr& signed_part) {
  Reader r(signed_part, "index.json");
  Index index;
  if (Status s = r.header("index", index.version, index.expires); !s) return s;
  Reader namespaces(nullptr, "");
  TRY_ASSIGN(namespaces, r.obj("namespaces"));
  for (const auto& name : namespaces.names()) {
    Reader ns(nullptr, "");
    TRY_ASSIGN(ns, namespaces.obj(name));
    Array::Ptr keys;
    TRY_ASSIGN(keys, ns.arr("keys"));
    auto& out = index.namespaces[name];
    for (size_t i = 0; i < keys->size(); ++i) {
      Var v = keys->get(static_cast<unsigned>(i));
      std::string where = ns.where() + ".keys[" + std::to_string(i) + "]";
      if (v.type() != typeid(Object::Ptr)) return Status::invalid(where + ": must be an object");
      PublisherKey k;
      TRY_ASSIGN(k, readPublisherKey(Reader(v.extract<Object::Ptr>(), where)));
      out.push_back(std::move(k));
    }
  }
  Reader packages(nullptr, "");
  TRY_ASSIGN(packages, r.obj("packages"));
  for (const auto& id : packages.names()) {
    Reader versions(nullptr, "");
    TRY_ASSIGN(versions, packages.obj(id));
    for (const auto& version : versions.names()) {
      Reader rec(nullptr, "");
      TRY_ASSIGN(rec, versions.obj(version));
      TRY_ASSIGN(index.packages[id][version], readPackageRecord(rec));
    }
  }
  return index;
}

// ---- publisher keys and package records ----

std::string rotationStatement(std::string_view ns, const PublicKey& new_key,
                              std::string_view previous_keyid) {
  Object::Ptr o = newObject();
  o->set("type", "trellis-key-rotation");
  o->set("namespace", std::string(ns));
  o->set("keyid", new_key.keyId());
  o->set("public", new_key.base64());
  o->set("previous", std::string(previous_keyid));
  return *canonicalJson(o);  // only strings: cannot fail
}

PublisherKey firstPublisherKey(const PublicKey& key, UnixSeconds added) {
  PublisherKey k;
  k.keyid = key.keyId();
  k.key = key;
  k.added = added;
  return k;
}

Result<PublisherKey> rotatePublisherKey(std::string_view ns, const PrivateKey& old_key,
                                        const PublicKey& new_key, UnixSeconds added) {
  PublisherKey k = firstPublisherKey(new_key, added);
  k.signed_by = old_key.keyId();
  auto sig = old_key.sign(rotationStatement(ns, new_key, old_key.keyId()));
  if (!sig) return sig.status();
  k.rotation_sig = *sig;
  return k;
}

Result<PackageRecord> summarizePackage(const PackageArchive& pkg, UnixSeconds published) {
  const PackageInfo& info = pkg.info();
  Reader m(info.manifest, "trellis-plugin.json");
  PackageRecord p;
  p.sha256 = info.archive_sha256;
  p.length = info.archive_bytes;
  p.keyid = info.signature.keyid;
  p.published = published;
  if (m.has("runtime")) TRY_ASSIGN(p.runtime, m.str("runtime"));
  if (m.has("abi")) {
    Reader abi(nullptr, "");
    TRY_ASSIGN(abi, m.obj("abi"));
    uint64_t major, minor;
    TRY_ASSIGN(major, abi.u64("major"));
    TRY_ASSIGN(minor, abi.u64("minor"));
    p.abi = {static_cast<uint32_t>(major), static_cast<uint32_t>(minor)};
  }
  if (m.has("host")) TRY_ASSIGN(p.host, m.str("host"));
  Reader entry(nullptr, "");
  TRY_ASSIGN(entry, m.obj("entry"));
  p.platforms = entry.names();
  if (m.has("dependencies")) TRY_ASSIGN(p.dependencies, m.stringMap("dependencies"));
  if (m.has("capabilities")) TRY_ASSIGN(p.capabilities, m.strings("capabilities"));
  return p;
}

// ---- signing ----

Result<std::string> signEnvelope(const Object::Ptr& signed_part,
                                 const std::vector<const PrivateKey*>& keys) {
  auto canonical = canonicalJson(signed_part);
  if (!canonical) return canonical.status();
  Array::Ptr sigs = new Array;
  for (const PrivateKey* key : keys) {
    auto sig = key->sign(*canonical);
    if (!sig) return sig.status();
    Object::Ptr s = newObject();
    s->set("keyid", key->keyId());
    s->set("sig", base64Encode(*sig));
    sigs->add(s);
  }
  Object::Ptr env = newObject();
  env->set("signed", signed_part);
  env->set("signatures", sigs);
  return canonicalJson(env);
}

Result<std::string> signRoot(const Root& root, const std::vector<const PrivateKey*>& keys) {
  return signEnvelope(root.toJson(), keys);
}

Result<std::string> signIndex(const Index& index, const std::vector<const PrivateKey*>& keys) {
  return signEnvelope(index.toJson(), keys);
}

Result<std::string> signTimestamp(std::string_view index_bytes, uint64_t version,
                                  UnixSeconds expires, const std::vector<const PrivateKey*>& keys) {
  auto env = parseEnvelope(index_bytes, "index.json");
  if (!env) return env.status();
  Reader r(env->signed_part, "index.json");
  Timestamp ts;
  TRY_ASSIGN(ts.index_version, r.u64("version"));
  ts.version = version;
  ts.expires = expires;
  ts.index_sha256 = sha256Hex(index_bytes);
  ts.index_length = index_bytes.size();
  return signEnvelope(ts.toJson(), keys);
}

// ---- client verification ----

Result<Root> updateRoot(const Root& trusted, std::string_view new_root_bytes) {
  auto env = parseEnvelope(new_root_bytes, "root.json");
  if (!env) return env.status();
  auto next = Root::fromJson(env->signed_part);
  if (!next) return next.status();
  if (next->version != trusted.version + 1) {
    if (next->version <= trusted.version) {
      return Status::invalid("root.json version " + std::to_string(next->version) +
                             " is not newer than the trusted version " +
                             std::to_string(trusted.version) + " (rollback)");
    }
    return Status::invalid("root.json version " + std::to_string(next->version) +
                           " skips versions: fetch " + std::to_string(trusted.version + 1) +
                           " first");
  }
  // The old root vouches for the new one, and the new keys prove they are held.
  if (Status s = checkThreshold(*env, "root.json (by the trusted root's keys)", "root",
                                trusted.root, trusted.keys);
      !s) {
    return s;
  }
  if (Status s =
          checkThreshold(*env, "root.json (by its own keys)", "root", next->root, next->keys);
      !s) {
    return s;
  }
  return next;
}

Result<VerifiedIndex> verifyIndex(const Root& root, uint64_t last_seen_version, UnixSeconds now,
                                  std::string_view timestamp_bytes, std::string_view index_bytes) {
  if (root.expires <= now) {
    return Status::unavailable("root.json expired at " + std::to_string(root.expires) + " (now " +
                               std::to_string(now) + "): update the trusted root");
  }
  auto ts = verifyTimestamp(root, timestamp_bytes, now);
  if (!ts) return ts.status();
  if (ts->index_version < last_seen_version) {
    return Status::invalid("rollback: timestamp.json names index version " +
                           std::to_string(ts->index_version) + ", older than version " +
                           std::to_string(last_seen_version) + " already seen");
  }
  // Hash before parse: bytes the timestamp does not vouch for are never interpreted.
  if (index_bytes.size() != ts->index_length || sha256Hex(index_bytes) != ts->index_sha256) {
    return Status::invalid("index.json does not match timestamp.json (expected sha256 " +
                           ts->index_sha256 + ", " + std::to_string(ts->index_length) +
                           " bytes; got " + sha256Hex(index_bytes) + ", " +
                           std::to_string(index_bytes.size()) + " bytes)");
  }
  auto env = parseEnvelope(index_bytes, "index.json");
  if (!env) return env.status();
  if (Status s = checkThreshold(*env, "index.json", "index", root.index, root.keys); !s) return s;
  auto index = Index::fromJson(env->signed_part);
  if (!index) return index.status();
  if (index->version != ts->index_version) {
    return Status::invalid("index.json is version " + std::to_string(index->version) +
                           " but timestamp.json names version " +
                           std::to_string(ts->index_version));
  }
  if (index->expires <= now) {
    return Status::unavailable("index.json expired at " + std::to_string(index->expires) +
                               " (now " + std::to_string(now) +
                               "): the registry or mirror serves frozen metadata");
  }
  for (const auto& [ns, keys] : index->namespaces) {
    if (Status s = checkKeyChain(ns, keys); !s) return s;
  }
  return VerifiedIndex(std::move(*index));
}

Result<PackageRecord> VerifiedIndex::find(std::string_view id, std::string_view version) const {
  auto p = index_.packages.find(std::string(id));
  if (p == index_.packages.end()) {
    return Status::notFound("the index has no package " + std::string(id));
  }
  auto v = p->second.find(std::string(version));
  if (v == p->second.end()) {
    std::vector<std::string> known;
    for (const auto& [ver, rec] : p->second) known.push_back(ver);
    return Status::notFound("the index has no version " + std::string(version) + " of " +
                            std::string(id) + " (has: " + join(known) + ")");
  }
  return v->second;
}

Result<PublicKey> VerifiedIndex::signingKey(std::string_view id, std::string_view version) const {
  auto record = find(id, version);
  if (!record) return record.status();
  const std::string name = std::string(id) + " " + std::string(version);
  const std::string ns(id.substr(0, id.find('/')));
  auto keys = index_.namespaces.find(ns);
  if (keys == index_.namespaces.end()) {
    return Status::permissionDenied(name + ": namespace " + ns + " has no publisher keys");
  }
  for (const auto& k : keys->second) {
    if (k.keyid != record->keyid) continue;
    if (k.added > record->published) {
      return Status::permissionDenied(name + " was published at " +
                                      std::to_string(record->published) + ", before its key " +
                                      k.keyid + " was added (" + std::to_string(k.added) + ")");
    }
    if (k.revoked && k.revoked->at <= record->published) {
      return Status::permissionDenied(name + " was signed by key " + k.keyid + ", revoked from " +
                                      std::to_string(k.revoked->at) + " (" + k.revoked->reason +
                                      "); the package was published at " +
                                      std::to_string(record->published) + ", after that point");
    }
    return k.key;
  }
  return Status::permissionDenied(name + " was signed by unknown key " + record->keyid +
                                  ", which is not a publisher key of namespace " + ns);
}

Status VerifiedIndex::verifyArchiveBytes(std::string_view id, std::string_view version,
                                         std::string_view bytes) const {
  auto record = find(id, version);
  if (!record) return record.status();
  if (bytes.size() != record->length) {
    return Status::invalid(std::string(id) + " " + std::string(version) + ": the downloaded " +
                           "archive is " + std::to_string(bytes.size()) +
                           " bytes but the index names " + std::to_string(record->length));
  }
  const std::string got = sha256Hex(bytes);
  if (got != record->sha256) {
    return Status::invalid(std::string(id) + " " + std::string(version) +
                           ": the downloaded archive is not the one the index names "
                           "(expected sha256 " +
                           record->sha256 + ", got " + got + ")");
  }
  return Status::ok();
}

Status VerifiedIndex::verifyPackage(std::string_view id, std::string_view version,
                                    const PackageArchive& pkg) const {
  auto record = find(id, version);
  if (!record) return record.status();
  const PackageInfo& info = pkg.info();
  const std::string name = std::string(id) + " " + std::string(version);
  if (info.archive_sha256 != record->sha256 || info.archive_bytes != record->length) {
    return Status::invalid(name +
                           ": the downloaded archive is not the one the index names "
                           "(expected sha256 " +
                           record->sha256 + ", got " + info.archive_sha256 + ")");
  }
  if (info.id != id || info.version != version) {
    return Status::invalid(name + ": the archive holds " + info.id + " " + info.version);
  }
  if (info.signature.keyid != record->keyid) {
    return Status::invalid(name + ": the archive is signed by key " + info.signature.keyid +
                           " but the index says " + record->keyid);
  }
  auto key = signingKey(id, version);
  if (!key) return key.status();
  return pkg.verify({*key});
}

}  // namespace trellis::marketplace
