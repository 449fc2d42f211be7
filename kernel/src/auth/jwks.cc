#include "auth/jwks.h"

#include <Poco/JSON/Array.h>
#include <openssl/core_names.h>
#include <openssl/evp.h>
#include <openssl/param_build.h>

#include <set>

#include "auth/internal/strict_json.h"
#include "auth/jwt.h"

namespace trellis::kernel::auth {
namespace {

using Poco::Dynamic::Var;
using Poco::JSON::Object;

struct PkeyCtxFree {
  void operator()(EVP_PKEY_CTX* c) const { EVP_PKEY_CTX_free(c); }
};
struct ParamBldFree {
  void operator()(OSSL_PARAM_BLD* b) const { OSSL_PARAM_BLD_free(b); }
};
struct ParamFree {
  void operator()(OSSL_PARAM* p) const { OSSL_PARAM_free(p); }
};
struct BnFree {
  void operator()(BIGNUM* b) const { BN_free(b); }
};
using BnPtr = std::unique_ptr<BIGNUM, BnFree>;

// A key name for messages: its position and kid (bounded, printable), never its bytes.
std::string nameOf(size_t index, const Object& k) {
  std::string name = "keys[" + std::to_string(index) + "]";
  if (k.has("kid") && k.get("kid").isString()) {
    std::string kid = k.get("kid").extract<std::string>();
    std::string safe;
    for (char c : kid.substr(0, 64)) safe += (c >= 0x20 && c < 0x7f && c != '"') ? c : '?';
    name += " (kid \"" + safe + "\")";
  }
  return name;
}

Result<std::string> member(const Object& k, const std::string& key, const std::string& name) {
  if (!k.has(key)) return Status::invalid("jwks: " + name + " has no \"" + key + "\"");
  Var v = k.get(key);
  if (!v.isString()) return Status::invalid("jwks: " + name + " \"" + key + "\" is not a string");
  return v.extract<std::string>();
}

Result<std::string> bytesMember(const Object& k, const std::string& key, const std::string& name) {
  auto text = member(k, key, name);
  if (!text) return text.status();
  auto bytes = base64UrlDecode(*text);
  if (!bytes || bytes->empty()) {
    return Status::invalid("jwks: " + name + " \"" + key + "\" is not unpadded base64url");
  }
  return std::move(*bytes);
}

Result<std::shared_ptr<EVP_PKEY>> fromParams(const char* type, OSSL_PARAM_BLD* bld,
                                             const std::string& name) {
  std::unique_ptr<OSSL_PARAM, ParamFree> params(OSSL_PARAM_BLD_to_param(bld));
  std::unique_ptr<EVP_PKEY_CTX, PkeyCtxFree> ctx(
      EVP_PKEY_CTX_new_from_name(nullptr, type, nullptr));
  EVP_PKEY* raw = nullptr;
  if (!params || !ctx || EVP_PKEY_fromdata_init(ctx.get()) != 1 ||
      EVP_PKEY_fromdata(ctx.get(), &raw, EVP_PKEY_PUBLIC_KEY, params.get()) != 1) {
    return Status::invalid("jwks: " + name + " is not a valid " + type + " public key");
  }
  return std::shared_ptr<EVP_PKEY>(raw, EvpPkeyFree{});
}

Result<std::shared_ptr<EVP_PKEY>> rsaKey(const Object& k, const std::string& name) {
  auto n = bytesMember(k, "n", name);
  if (!n) return n.status();
  auto e = bytesMember(k, "e", name);
  if (!e) return e.status();
  if ((*n)[0] == '\0' || (*e)[0] == '\0') {
    return Status::invalid("jwks: " + name + " has a leading zero byte in \"n\" or \"e\"");
  }
  if (n->size() < 256) {
    return Status::invalid("jwks: " + name + " is a " + std::to_string(n->size() * 8) +
                           "-bit RSA key; at least 2048 bits are required");
  }
  if (n->size() > 1024 || e->size() > 8) {
    return Status::invalid("jwks: " + name + " has an RSA modulus or exponent that is too large");
  }
  BnPtr bn_n(BN_bin2bn(reinterpret_cast<const unsigned char*>(n->data()),
                       static_cast<int>(n->size()), nullptr));
  BnPtr bn_e(BN_bin2bn(reinterpret_cast<const unsigned char*>(e->data()),
                       static_cast<int>(e->size()), nullptr));
  std::unique_ptr<OSSL_PARAM_BLD, ParamBldFree> bld(OSSL_PARAM_BLD_new());
  if (!bn_n || !bn_e || !bld ||
      OSSL_PARAM_BLD_push_BN(bld.get(), OSSL_PKEY_PARAM_RSA_N, bn_n.get()) != 1 ||
      OSSL_PARAM_BLD_push_BN(bld.get(), OSSL_PKEY_PARAM_RSA_E, bn_e.get()) != 1) {
    return Status::internal("jwks: cannot build an RSA key");
  }
  return fromParams("RSA", bld.get(), name);
}

Result<std::shared_ptr<EVP_PKEY>> ecKey(const Object& k, const std::string& name) {
  auto crv = member(k, "crv", name);
  if (!crv) return crv.status();
  if (*crv != "P-256") {
    return Status::invalid("jwks: " + name + " is on curve \"" + crv->substr(0, 16) +
                           "\"; only P-256 (ES256) is accepted");
  }
  auto x = bytesMember(k, "x", name);
  if (!x) return x.status();
  auto y = bytesMember(k, "y", name);
  if (!y) return y.status();
  if (x->size() != 32 || y->size() != 32) {
    return Status::invalid("jwks: " + name + " P-256 \"x\" and \"y\" must be 32 bytes each");
  }
  std::string point = "\x04" + *x + *y;
  std::unique_ptr<OSSL_PARAM_BLD, ParamBldFree> bld(OSSL_PARAM_BLD_new());
  if (!bld ||
      OSSL_PARAM_BLD_push_utf8_string(bld.get(), OSSL_PKEY_PARAM_GROUP_NAME, "prime256v1", 0) !=
          1 ||
      OSSL_PARAM_BLD_push_octet_string(bld.get(), OSSL_PKEY_PARAM_PUB_KEY, point.data(),
                                       point.size()) != 1) {
    return Status::internal("jwks: cannot build an EC key");
  }
  auto key = fromParams("EC", bld.get(), name);
  if (!key) return Status::invalid("jwks: " + name + " is not a point on P-256");
  // fromdata does not prove the point is on the curve; an invalid point must not verify.
  std::unique_ptr<EVP_PKEY_CTX, PkeyCtxFree> check(EVP_PKEY_CTX_new(key->get(), nullptr));
  if (!check || EVP_PKEY_public_check(check.get()) != 1) {
    return Status::invalid("jwks: " + name + " is not a point on P-256");
  }
  return key;
}

Result<std::shared_ptr<EVP_PKEY>> okpKey(const Object& k, const std::string& name) {
  auto crv = member(k, "crv", name);
  if (!crv) return crv.status();
  if (*crv != "Ed25519") {
    return Status::invalid("jwks: " + name + " is on curve \"" + crv->substr(0, 16) +
                           "\"; only Ed25519 (EdDSA) is accepted");
  }
  auto x = bytesMember(k, "x", name);
  if (!x) return x.status();
  if (x->size() != 32) return Status::invalid("jwks: " + name + " Ed25519 \"x\" must be 32 bytes");
  EVP_PKEY* raw = EVP_PKEY_new_raw_public_key(
      EVP_PKEY_ED25519, nullptr, reinterpret_cast<const unsigned char*>(x->data()), x->size());
  if (!raw) return Status::invalid("jwks: " + name + " is not a valid Ed25519 public key");
  return std::shared_ptr<EVP_PKEY>(raw, EvpPkeyFree{});
}

}  // namespace

std::string_view keyTypeName(KeyType t) {
  switch (t) {
    case KeyType::kRsa: return "RSA";
    case KeyType::kEcP256: return "EC P-256";
    case KeyType::kEd25519: return "OKP Ed25519";
  }
  return "?";
}

const Jwk* JwkSet::find(std::string_view kid) const {
  for (const auto& k : keys) {
    if (k.kid == kid) return &k;
  }
  return nullptr;
}

Result<JwkSet> parseJwks(std::string_view json) {
  if (json.size() > kMaxJwksBytes) {
    return Status::invalid("jwks: document is " + std::to_string(json.size()) +
                           " bytes, more than " + std::to_string(kMaxJwksBytes));
  }
  auto root = internal::parseJsonObject(json, "jwks: document");
  if (!root) return root.status();
  auto arr = (*root)->getArray("keys");
  if (arr.isNull()) return Status::invalid("jwks: document has no \"keys\" array");
  if (arr->size() > kMaxJwksKeys) {
    return Status::invalid("jwks: " + std::to_string(arr->size()) + " keys, more than " +
                           std::to_string(kMaxJwksKeys));
  }
  JwkSet set;
  std::set<std::string> kids;
  for (size_t i = 0; i < arr->size(); ++i) {
    auto obj = arr->getObject(static_cast<unsigned>(i));
    if (obj.isNull())
      return Status::invalid("jwks: keys[" + std::to_string(i) + "] is not an object");
    const Object& k = *obj;
    const std::string name = nameOf(i, k);
    if (k.has("use")) {
      auto use = member(k, "use", name);
      if (!use) return use.status();
      if (*use != "sig") continue;  // an encryption key may share the set
    }
    // A private member in a public set is an operator's mistake worth stopping on: the
    // private key has leaked to whoever can read the set.
    for (const char* priv : {"d", "p", "q", "dp", "dq", "qi", "k"}) {
      if (k.has(priv)) {
        return Status::invalid("jwks: " + name + " holds private key material (\"" + priv +
                               "\"); publish public keys only");
      }
    }
    auto kty = member(k, "kty", name);
    if (!kty) return kty.status();
    Jwk jwk;
    if (k.has("kid")) {
      auto kid = member(k, "kid", name);
      if (!kid) return kid.status();
      jwk.kid = std::move(*kid);
      if (!jwk.kid.empty() && !kids.insert(jwk.kid).second) {
        return Status::invalid("jwks: " + name + " repeats a kid; each kid must be unique");
      }
    }
    if (k.has("alg")) {
      auto alg = member(k, "alg", name);
      if (!alg) return alg.status();
      jwk.alg = std::move(*alg);
    }
    Result<std::shared_ptr<EVP_PKEY>> key = Status::invalid("");
    if (*kty == "RSA") {
      jwk.type = KeyType::kRsa;
      key = rsaKey(k, name);
    } else if (*kty == "EC") {
      jwk.type = KeyType::kEcP256;
      key = ecKey(k, name);
    } else if (*kty == "OKP") {
      jwk.type = KeyType::kEd25519;
      key = okpKey(k, name);
    } else {
      return Status::invalid("jwks: " + name + " has kty \"" + kty->substr(0, 16) +
                             "\"; only RSA, EC (P-256) and OKP (Ed25519) are accepted");
    }
    if (!key) return key.status();
    const char* expected = jwk.type == KeyType::kRsa      ? "RS256"
                           : jwk.type == KeyType::kEcP256 ? "ES256"
                                                          : "EdDSA";
    if (!jwk.alg.empty() && jwk.alg != expected) {
      return Status::invalid("jwks: " + name + " declares alg \"" + jwk.alg.substr(0, 16) +
                             "\" but a " + std::string(keyTypeName(jwk.type)) + " key signs " +
                             expected + " here");
    }
    jwk.key = std::move(*key);
    set.keys.push_back(std::move(jwk));
  }
  if (set.keys.empty()) return Status::invalid("jwks: no signing keys in the set");
  return set;
}

}  // namespace trellis::kernel::auth
