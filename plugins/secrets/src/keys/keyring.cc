#include "keys/keyring.h"

#include <Poco/JSON/Array.h>
#include <Poco/JSON/Object.h>
#include <Poco/JSON/Parser.h>

#include <sstream>

#include "crypto/aead.h"
#include "crypto/encoding.h"

namespace trellis::secrets {
namespace {

using Poco::JSON::Array;
using Poco::JSON::Object;

constexpr std::string_view kKey = "sys/keyring";
constexpr int kCreateAttempts = 4;

std::string kekAad(std::string_view tenant, uint32_t version, std::string_view root_check) {
  return associatedData({{"purpose", "kek"},
                         {"tenant", tenant},
                         {"version", std::to_string(version)},
                         {"root", root_check}});
}

// A keyring with KEK version 1, wrapped under the root key, as stored JSON.
Result<std::string> freshKeyring(const Context& ctx, const Seal& seal) {
  SecureBuffer kek = randomBytes(aead::kKeyBytes);
  if (kek.empty()) return Status::internal("the random generator failed");
  std::string stored;
  Status s = seal.withRoot([&](const SecureBuffer& root, std::string_view check) {
    auto wrapped = aead::seal(root, kek.view(), kekAad(ctx.tenant(), 1, check));
    if (!wrapped) return wrapped.status();
    Object::Ptr key = new Object;
    key->set("version", 1);
    key->set("created_ms", ctx.nowUnixMs());
    key->set("wrapped", toBase64(*wrapped));
    Array::Ptr keys = new Array;
    keys->add(key);
    Object::Ptr ring = new Object;
    ring->set("format", 1);
    ring->set("root_check", std::string(check));
    ring->set("keys", keys);
    std::ostringstream out;
    ring->stringify(out);
    stored = out.str();
    return Status::ok();
  });
  if (!s) return s;
  return stored;
}

}  // namespace

Result<const Kek*> Keyring::find(uint32_t version) const {
  for (const Kek& k : keys_) {
    if (k.version == version) return &k;
  }
  return Status::notFound("the tenant has no key-encryption key version " +
                          std::to_string(version));
}

Result<Keyring> Keyring::open(const Context& ctx, const Seal& seal, bool create) {
  if (seal.status().sealed) return Status::unavailable(std::string(kSealedMessage));
  Kv kv = ctx.kv();
  auto entry = kv.get(kKey);
  for (int attempt = 0; !entry && attempt < kCreateAttempts; ++attempt) {
    if (entry.status().code() != StatusCode::kNotFound) return entry.status();
    if (!create) return Status::notFound("the tenant has no keys yet");
    auto fresh = freshKeyring(ctx, seal);
    if (!fresh) return fresh.status();
    auto put = kv.put(kKey, *fresh, Kv::kAbsent);
    if (!put && put.status().code() != StatusCode::kConflict) return put.status();
    entry = kv.get(kKey);  // ours, or the one a concurrent first write made
  }
  if (!entry) return entry.status();

  Keyring ring;
  ring.tenant_ = std::string(ctx.tenant());
  Status s = seal.withRoot([&](const SecureBuffer& root, std::string_view check) {
    Object::Ptr stored;
    try {
      stored = Poco::JSON::Parser().parse(entry->value).extract<Object::Ptr>();
    } catch (const Poco::Exception&) {
      return Status::internal("the tenant's keyring is not valid JSON");
    }
    const std::string made_under = stored->optValue<std::string>("root_check", "");
    if (made_under != check) {
      return Status::unavailable("the tenant's keys were made under root key " + made_under +
                                 ", but this host is unsealed with root key " + std::string(check));
    }
    Array::Ptr keys = stored->getArray("keys");
    for (size_t i = 0; keys && i < keys->size(); ++i) {
      Object::Ptr k = keys->getObject(static_cast<unsigned>(i));
      const auto version = k->getValue<uint32_t>("version");
      auto wrapped = fromBase64(k->getValue<std::string>("wrapped"));
      if (!wrapped) return Status::internal("a wrapped key of the tenant's keyring is damaged");
      auto key = aead::open(root, *wrapped, kekAad(ring.tenant_, version, check));
      if (!key)
        return Status::internal("the tenant's KEK " + std::to_string(version) +
                                " does not open: " + key.status().message());
      ring.keys_.push_back({version, std::move(*key)});
    }
    if (ring.keys_.empty()) return Status::internal("the tenant's keyring holds no key");
    return Status::ok();
  });
  if (!s) return s;
  return ring;
}

}  // namespace trellis::secrets
