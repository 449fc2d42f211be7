#include "keys/keyring.h"

#include <Poco/JSON/Array.h>
#include <Poco/JSON/Parser.h>

#include <algorithm>
#include <sstream>

#include "crypto/aead.h"
#include "crypto/encoding.h"

namespace trellis::secrets {
namespace {

using Poco::JSON::Array;
using Poco::JSON::Object;

constexpr std::string_view kKey = "sys/keyring";
constexpr int kAttempts = 8;

std::string kekAad(std::string_view tenant, uint32_t version, std::string_view root_check) {
  return associatedData({{"purpose", "kek"},
                         {"tenant", tenant},
                         {"version", std::to_string(version)},
                         {"root", root_check}});
}

std::string text(const Object::Ptr& o) {
  std::ostringstream out;
  o->stringify(out);
  return out.str();
}

// A fresh KEK of `version`, wrapped under the root key, as a stored entry of "keys".
Result<Object::Ptr> newKek(const Context& ctx, const SecureBuffer& root, std::string_view check,
                           uint32_t version) {
  SecureBuffer kek = randomBytes(aead::kKeyBytes);
  if (kek.empty()) return Status::internal("the random generator failed");
  auto wrapped = aead::seal(root, kek.view(), kekAad(ctx.tenant(), version, check));
  if (!wrapped) return wrapped.status();
  Object::Ptr key = new Object;
  key->set("version", version);
  key->set("created_ms", ctx.nowUnixMs());
  key->set("uses", 0);
  key->set("wrapped", toBase64(*wrapped));
  return key;
}

// A keyring with KEK version 1, as stored JSON.
Result<std::string> freshKeyring(const Context& ctx, const Seal& seal) {
  std::string stored;
  Status s = seal.withRoot([&](const SecureBuffer& root, std::string_view check) {
    auto key = newKek(ctx, root, check, 1);
    if (!key) return key.status();
    Array::Ptr keys = new Array;
    keys->add(*key);
    Object::Ptr ring = new Object;
    ring->set("format", 1);
    ring->set("root_check", std::string(check));
    ring->set("keys", keys);
    stored = text(ring);
    return Status::ok();
  });
  if (!s) return s;
  return stored;
}

Result<Object::Ptr> parse(const std::string& stored) {
  try {
    return Poco::JSON::Parser().parse(stored).extract<Object::Ptr>();
  } catch (const Poco::Exception&) {
    return Status::internal("the tenant's keyring is not valid JSON");
  }
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
  for (int attempt = 0; !entry && attempt < kAttempts; ++attempt) {
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
  if (Status s = ring.load(ctx, seal, entry->value); !s) return s;
  return ring;
}

Status Keyring::load(const Context& ctx, const Seal& seal, const std::string& stored_text) {
  auto stored = parse(stored_text);
  if (!stored) return stored.status();
  std::vector<Kek> keys;
  Status s = seal.withRoot([&](const SecureBuffer& root, std::string_view check) {
    const std::string made_under = (*stored)->optValue<std::string>("root_check", "");
    if (made_under != check) {
      return Status::unavailable("the tenant's keys were made under root key " + made_under +
                                 ", but this host is unsealed with root key " + std::string(check));
    }
    Array::Ptr list = (*stored)->getArray("keys");
    for (size_t i = 0; list && i < list->size(); ++i) {
      Object::Ptr k = list->getObject(static_cast<unsigned>(i));
      const auto version = k->getValue<uint32_t>("version");
      auto wrapped = fromBase64(k->getValue<std::string>("wrapped"));
      if (!wrapped) return Status::internal("a wrapped key of the tenant's keyring is damaged");
      auto key = aead::open(root, *wrapped, kekAad(ctx.tenant(), version, check));
      if (!key)
        return Status::internal("the tenant's KEK " + std::to_string(version) +
                                " does not open: " + key.status().message());
      keys.push_back({version, std::move(*key), k->optValue<uint64_t>("created_ms", 0),
                      k->optValue<uint64_t>("uses", 0)});
    }
    if (keys.empty()) return Status::internal("the tenant's keyring holds no key");
    return Status::ok();
  });
  if (!s) return s;
  keys_ = std::move(keys);
  return Status::ok();
}

// Applies `edit` to the stored keyring with compare-and-set (retrying on a concurrent
// change), then reopens this object from what was written.
Status Keyring::update(const Context& ctx, const Seal& seal, const Edit& edit) {
  Kv kv = ctx.kv();
  for (int attempt = 0; attempt < kAttempts; ++attempt) {
    auto entry = kv.get(kKey);
    if (!entry) return entry.status();
    auto stored = parse(entry->value);
    if (!stored) return stored.status();
    Status s = seal.withRoot([&](const SecureBuffer& root, std::string_view check) {
      return edit(*stored, root, check);
    });
    if (!s) return s;
    const std::string changed = text(*stored);
    auto put = kv.put(kKey, changed, entry->version);
    if (put) return load(ctx, seal, changed);
    if (put.status().code() != StatusCode::kConflict) return put.status();
  }
  return Status::unavailable("the tenant's keyring changed concurrently too often; retry");
}

Status Keyring::rotate(const Context& ctx, const Seal& seal) {
  return update(
      ctx, seal,
      [&](Object::Ptr& stored, const SecureBuffer& root, std::string_view check) -> Status {
        Array::Ptr list = stored->getArray("keys");
        const auto last = list->getObject(static_cast<unsigned>(list->size() - 1));
        auto key = newKek(ctx, root, check, last->getValue<uint32_t>("version") + 1);
        if (!key) return key.status();
        list->add(*key);
        return Status::ok();
      });
}

Status Keyring::retireBelow(const Context& ctx, const Seal& seal, uint32_t version) {
  return update(ctx, seal, [&](Object::Ptr& stored, const SecureBuffer&, std::string_view) {
    Array::Ptr list = stored->getArray("keys");
    Array::Ptr kept = new Array;
    for (size_t i = 0; i < list->size(); ++i) {
      Object::Ptr k = list->getObject(static_cast<unsigned>(i));
      if (k->getValue<uint32_t>("version") >= version || i + 1 == list->size()) kept->add(k);
    }
    stored->set("keys", kept);
    return Status::ok();
  });
}

Result<uint32_t> Keyring::reserveUses(const Context& ctx, const Seal& seal, uint64_t n,
                                      uint64_t max_uses) {
  uint32_t version = 0;
  Status s =
      update(ctx, seal,
             [&](Object::Ptr& stored, const SecureBuffer& root, std::string_view check) -> Status {
               Array::Ptr list = stored->getArray("keys");
               Object::Ptr last = list->getObject(static_cast<unsigned>(list->size() - 1));
               if (last->optValue<uint64_t>("uses", 0) + n > max_uses) {
                 auto key = newKek(ctx, root, check, last->getValue<uint32_t>("version") + 1);
                 if (!key) return key.status();
                 list->add(*key);
                 last = *key;
               }
               last->set("uses", last->optValue<uint64_t>("uses", 0) + n);
               version = last->getValue<uint32_t>("version");
               return Status::ok();
             });
  if (!s) return s;
  return version;
}

Status KekUses::take(const Context& ctx, const Seal& seal, Keyring& ring) {
  {
    std::lock_guard lock(mu_);
    auto it = blocks_.find(ctx.tenant());
    if (it != blocks_.end() && it->second.left > 0 &&
        it->second.version == ring.current().version) {
      --it->second.left;
      return Status::ok();
    }
  }
  // Reserved without the lock, so one tenant's keyring write never stalls another's
  // encryptions. Two threads of one tenant may both reserve; the block one of them drops
  // stays counted, which errs on the safe side.
  const uint64_t n = std::min(kBlock, max_uses_);
  auto version = ring.reserveUses(ctx, seal, n, max_uses_);
  if (!version) return version.status();
  std::lock_guard lock(mu_);
  blocks_[std::string(ctx.tenant())] = {*version, n - 1};
  return Status::ok();
}

}  // namespace trellis::secrets
