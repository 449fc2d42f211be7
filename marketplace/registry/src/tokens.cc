#include "tokens.h"

#include <Poco/JSON/Array.h>
#include <openssl/crypto.h>
#include <openssl/rand.h>

#include <vector>

#include "trellis/marketplace/encoding.h"

namespace trellis::registry {
namespace {

using Poco::JSON::Object;

constexpr std::string_view kPrefix = "tok/";
constexpr size_t kIdChars = 16;

bool sameHash(const std::string& a, const std::string& b) {
  return a.size() == b.size() && CRYPTO_memcmp(a.data(), b.data(), a.size()) == 0;
}

// 32 random bytes, base64url without padding, so the token survives any header or shell.
Result<std::string> newSecret() {
  unsigned char raw[32];
  if (RAND_bytes(raw, sizeof raw) != 1) return Status::internal("no randomness for a token");
  std::string b64 = marketplace::base64Encode(std::string_view(reinterpret_cast<char*>(raw), 32));
  std::string out = "trp_";
  for (char c : b64) {
    if (c == '=') continue;
    out += c == '+' ? '-' : c == '/' ? '_' : c;
  }
  return out;
}

Object::Ptr publicView(const Object::Ptr& stored, const std::string& sha, UnixSeconds now) {
  Object::Ptr o = new Object;
  o->set("id", sha.substr(0, kIdChars));
  for (auto field : {"namespace", "description"})
    o->set(field, stored->getValue<std::string>(field));
  for (auto field : {"created", "expires"}) o->set(field, stored->getValue<Poco::Int64>(field));
  o->set("expired", stored->getValue<Poco::Int64>("expires") <= now);
  return o;
}

}  // namespace

Status Caller::mayActFor(std::string_view target) const {
  if (admin || ns == target) return Status::ok();
  return Status::permissionDenied("this publish token is for namespace \"" + ns + "\", not \"" +
                                  std::string(target) + "\"");
}

Status Caller::mustBeAdmin() const {
  return admin ? Status::ok() : Status::permissionDenied("this needs the registry admin token");
}

Result<Caller> Tokens::authenticate(const Store& store, std::string_view token,
                                    UnixSeconds now) const {
  const std::string sha = marketplace::sha256Hex(token);
  if (sameHash(sha, admin_sha256_)) return Caller{true, "", ""};
  auto stored = store.getJson(std::string(kPrefix) + sha);
  if (!stored) {
    if (stored.status().code() == StatusCode::kNotFound) {
      return Status::permissionDenied("unknown or revoked registry token");
    }
    return stored.status();
  }
  if (stored->value->getValue<Poco::Int64>("expires") <= now) {
    return Status::permissionDenied(
        "registry token " + sha.substr(0, kIdChars) + " expired at " +
        std::to_string(stored->value->getValue<Poco::Int64>("expires")));
  }
  return Caller{false, stored->value->getValue<std::string>("namespace"), sha.substr(0, kIdChars)};
}

Result<Object::Ptr> Tokens::create(const Store& store, const std::string& ns, int64_t ttl_seconds,
                                   const std::string& description, UnixSeconds now) const {
  auto secret = newSecret();
  if (!secret) return secret.status();
  const std::string sha = marketplace::sha256Hex(*secret);
  Object::Ptr stored = new Object;
  stored->set("namespace", ns);
  stored->set("description", description);
  stored->set("created", static_cast<Poco::Int64>(now));
  stored->set("expires", static_cast<Poco::Int64>(now + ttl_seconds));
  auto put = store.putJson(std::string(kPrefix) + sha, stored, Kv::kAbsent);
  if (!put) return put.status();
  Object::Ptr shown = publicView(stored, sha, now);
  shown->remove("expired");
  shown->set("token", *secret);
  return shown;
}

Result<Object::Ptr> Tokens::list(const Store& store, UnixSeconds now) const {
  Poco::JSON::Array::Ptr all = new Poco::JSON::Array;
  Status s = store.forEach(kPrefix, [&](std::string_view key, std::string_view value) {
    auto stored = parseStoredJson(key, value);
    if (!stored) return stored.status();
    all->add(publicView(*stored, std::string(key.substr(kPrefix.size())), now));
    return Status::ok();
  });
  if (!s) return s;
  Object::Ptr o = new Object;
  o->set("tokens", all);
  return o;
}

Status Tokens::revoke(const Store& store, std::string_view id) const {
  if (id.size() != kIdChars) return Status::notFound("no publish token has id " + std::string(id));
  std::vector<std::string> matches;
  Status s = store.forEach(std::string(kPrefix) + std::string(id),
                           [&](std::string_view key, std::string_view) {
                             matches.emplace_back(key);
                             return Status::ok();
                           });
  if (!s) return s;
  if (matches.empty()) return Status::notFound("no publish token has id " + std::string(id));
  for (const auto& key : matches) {
    if (Status r = store.remove(key); !r) return r;
  }
  return Status::ok();
}

}  // namespace trellis::registry
