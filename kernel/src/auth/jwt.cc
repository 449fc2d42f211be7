#include "auth/jwt.h"

#include <Poco/JSON/Array.h>
#include <openssl/bn.h>
#include <openssl/ecdsa.h>
#include <openssl/evp.h>
#include <openssl/rsa.h>

#include <array>
#include <cmath>
#include <limits>
#include <memory>

#include "auth/internal/strict_json.h"

namespace trellis::kernel::auth {
namespace {

using Poco::Dynamic::Var;
using Poco::JSON::Object;

constexpr std::string_view kAlphabet =
    "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_";

constexpr std::array<int8_t, 256> decodeTable() {
  std::array<int8_t, 256> t{};
  for (auto& v : t) v = -1;
  for (size_t i = 0; i < kAlphabet.size(); ++i) {
    t[static_cast<unsigned char>(kAlphabet[i])] = static_cast<int8_t>(i);
  }
  return t;
}
constexpr auto kDecode = decodeTable();

bool isBase64UrlChar(char c) {
  return kDecode[static_cast<unsigned char>(c)] >= 0;
}

struct MdCtxFree {
  void operator()(EVP_MD_CTX* c) const { EVP_MD_CTX_free(c); }
};
struct EcdsaSigFree {
  void operator()(ECDSA_SIG* s) const { ECDSA_SIG_free(s); }
};

// JOSE carries an ES256 signature as r || s, 32 bytes each; OpenSSL verifies DER.
std::optional<std::string> joseToDer(std::string_view raw) {
  if (raw.size() != 64) return std::nullopt;
  std::unique_ptr<ECDSA_SIG, EcdsaSigFree> sig(ECDSA_SIG_new());
  if (!sig) return std::nullopt;
  BIGNUM* r = BN_bin2bn(reinterpret_cast<const unsigned char*>(raw.data()), 32, nullptr);
  BIGNUM* s = BN_bin2bn(reinterpret_cast<const unsigned char*>(raw.data()) + 32, 32, nullptr);
  if (!r || !s || ECDSA_SIG_set0(sig.get(), r, s) != 1) {
    BN_free(r);
    BN_free(s);
    return std::nullopt;
  }
  int len = i2d_ECDSA_SIG(sig.get(), nullptr);
  if (len <= 0) return std::nullopt;
  std::string der(static_cast<size_t>(len), '\0');
  auto* p = reinterpret_cast<unsigned char*>(der.data());
  if (i2d_ECDSA_SIG(sig.get(), &p) != len) return std::nullopt;
  return der;
}

bool verifySignature(const Jwk& key, std::string_view alg, std::string_view input,
                     std::string_view signature) {
  std::unique_ptr<EVP_MD_CTX, MdCtxFree> md(EVP_MD_CTX_new());
  if (!md) return false;
  const EVP_MD* digest = alg == "EdDSA" ? nullptr : EVP_sha256();
  std::string der;
  if (alg == "ES256") {
    auto converted = joseToDer(signature);
    if (!converted) return false;
    der = std::move(*converted);
    signature = der;
  }
  if (EVP_DigestVerifyInit(md.get(), nullptr, digest, nullptr, key.key.get()) != 1) return false;
  if (alg == "RS256") {
    // PKCS#1 v1.5 is the default padding; say so, so a key's defaults cannot change it.
    EVP_PKEY_CTX* pctx = EVP_MD_CTX_get_pkey_ctx(md.get());
    if (!pctx || EVP_PKEY_CTX_set_rsa_padding(pctx, RSA_PKCS1_PADDING) != 1) return false;
  }
  return EVP_DigestVerify(md.get(), reinterpret_cast<const unsigned char*>(signature.data()),
                          signature.size(), reinterpret_cast<const unsigned char*>(input.data()),
                          input.size()) == 1;
}

// The key type an alg needs; nullopt for algs this verifier does not accept.
std::optional<KeyType> keyTypeFor(std::string_view alg) {
  if (alg == "RS256") return KeyType::kRsa;
  if (alg == "ES256") return KeyType::kEcP256;
  if (alg == "EdDSA") return KeyType::kEd25519;
  return std::nullopt;
}

// A NumericDate: an integer or a finite number of seconds since the epoch.
std::optional<int64_t> numericDate(const Object& claims, const std::string& name, bool* present) {
  *present = claims.has(name);
  if (!*present) return std::nullopt;
  Var v = claims.get(name);
  if (v.isEmpty() || v.isString() || v.isBoolean() || !v.isNumeric()) return std::nullopt;
  try {
    if (v.isInteger()) return v.convert<int64_t>();
    double d = v.convert<double>();
    if (!std::isfinite(d) || d < -9.2e18 || d > 9.2e18) return std::nullopt;
    return static_cast<int64_t>(std::floor(d));
  } catch (const Poco::Exception&) {
    return std::nullopt;
  }
}

std::optional<std::string> stringMember(const Object& o, const std::string& name) {
  if (!o.has(name)) return std::nullopt;
  Var v = o.get(name);
  if (!v.isString()) return std::nullopt;
  return v.extract<std::string>();
}

// A claim value quoted in a log line: bounded, printable ASCII only.
std::string quoted(std::string_view s) {
  std::string out = "\"";
  for (char c : s.substr(0, 128)) {
    out += (c >= 0x20 && c < 0x7f && c != '"' && c != '\\') ? c : '?';
  }
  if (s.size() > 128) out += "...";
  return out + "\"";
}

Status refuse(JwtRefusal* refusal, JwtFailure failure, std::string reason) {
  if (refusal) *refusal = {failure, reason};
  return Status::permissionDenied(std::move(reason));
}

}  // namespace

std::optional<std::string> base64UrlDecode(std::string_view in) {
  if (in.size() % 4 == 1) return std::nullopt;  // no base64 string has this length
  std::string out;
  out.reserve(in.size() * 3 / 4);
  uint32_t acc = 0;
  int bits = 0;
  for (char c : in) {
    int8_t v = kDecode[static_cast<unsigned char>(c)];
    if (v < 0) return std::nullopt;
    acc = (acc << 6) | static_cast<uint32_t>(v);
    bits += 6;
    if (bits >= 8) {
      bits -= 8;
      out.push_back(static_cast<char>((acc >> bits) & 0xff));
    }
  }
  // Left-over bits must be zero, so each byte string has exactly one encoding.
  if (bits > 0 && (acc & ((1u << bits) - 1)) != 0) return std::nullopt;
  return out;
}

std::string base64UrlEncode(std::string_view in) {
  std::string out;
  out.reserve((in.size() * 4 + 2) / 3);
  uint32_t acc = 0;
  int bits = 0;
  for (unsigned char c : in) {
    acc = (acc << 8) | c;
    bits += 8;
    while (bits >= 6) {
      bits -= 6;
      out.push_back(kAlphabet[(acc >> bits) & 0x3f]);
    }
  }
  if (bits > 0) out.push_back(kAlphabet[(acc << (6 - bits)) & 0x3f]);
  return out;
}

bool looksLikeJwt(std::string_view credential) {
  size_t dots = 0;
  size_t segment = 0;
  for (char c : credential) {
    if (c == '.') {
      if (segment == 0 && dots < 2) return false;  // header and payload are never empty
      ++dots;
      segment = 0;
    } else if (!isBase64UrlChar(c)) {
      return false;
    } else {
      ++segment;
    }
  }
  return dots == 2;
}

Result<DecodedJwt> decodeJwt(std::string_view token) {
  if (token.size() > kMaxTokenBytes) {
    return Status::invalid("token is " + std::to_string(token.size()) + " bytes, more than " +
                           std::to_string(kMaxTokenBytes));
  }
  const size_t first = token.find('.');
  const size_t second = first == token.npos ? token.npos : token.find('.', first + 1);
  if (second == token.npos || token.find('.', second + 1) != token.npos) {
    return Status::invalid("token is not three dot-separated segments");
  }
  auto header_json = base64UrlDecode(token.substr(0, first));
  auto payload_json = base64UrlDecode(token.substr(first + 1, second - first - 1));
  auto signature = base64UrlDecode(token.substr(second + 1));
  if (!header_json || !payload_json || !signature) {
    return Status::invalid("token segment is not unpadded base64url");
  }
  if (signature->empty()) return Status::invalid("token has no signature");
  auto header = internal::parseJsonObject(*header_json, "token header");
  if (!header) return header.status();
  auto claims = internal::parseJsonObject(*payload_json, "token payload");
  if (!claims) return claims.status();

  DecodedJwt out;
  auto alg = stringMember(**header, "alg");
  if (!alg) return Status::invalid("token header has no string \"alg\"");
  out.alg = std::move(*alg);
  if ((*header)->has("kid")) {
    auto kid = stringMember(**header, "kid");
    if (!kid) return Status::invalid("token header \"kid\" is not a string");
    out.kid = std::move(*kid);
  }
  // Extensions a verifier must understand (RFC 7515 §4.1.11): this one understands none.
  if ((*header)->has("crit")) return Status::invalid("token header has \"crit\" extensions");
  out.claims = std::move(*claims);
  out.signing_input = token.substr(0, second);
  out.signature = std::move(*signature);
  return out;
}

std::string unverifiedIssuer(const DecodedJwt& token) {
  return stringMember(*token.claims, "iss").value_or("");
}

Result<VerifiedToken> verifyJwt(const DecodedJwt& token, const JwkSet& keys,
                                const ClaimRules& rules, int64_t now, JwtRefusal* refusal) {
  // The alg first: nothing else about an unacceptable token is worth looking at.
  if (token.alg == "none" || token.alg.empty()) {
    return refuse(refusal, JwtFailure::kAlgorithm, "unsigned token (alg none) refused");
  }
  if (token.alg.starts_with("HS")) {
    return refuse(refusal, JwtFailure::kAlgorithm,
                  "alg " + quoted(token.alg) + " refused: issuers sign with public keys only");
  }
  const auto type = keyTypeFor(token.alg);
  if (!type) {
    return refuse(refusal, JwtFailure::kAlgorithm,
                  "alg " + quoted(token.alg) + " is not accepted (RS256, ES256, EdDSA)");
  }

  const Jwk* key = nullptr;
  if (!token.kid.empty()) {
    key = keys.find(token.kid);
    if (!key) {
      return refuse(refusal, JwtFailure::kUnknownKid,
                    "unknown kid " + quoted(token.kid) + " for issuer " + quoted(rules.issuer));
    }
  } else {
    size_t fitting = 0;
    for (const auto& k : keys.keys) {
      if (k.type == *type && (k.alg.empty() || k.alg == token.alg)) {
        key = &k;
        ++fitting;
      }
    }
    if (fitting != 1) {
      return refuse(refusal, JwtFailure::kUnknownKid,
                    "token has no kid and " + std::to_string(fitting) + " of the issuer's keys " +
                        "fit alg " + token.alg + " (exactly one must)");
    }
  }
  if (key->type != *type || (!key->alg.empty() && key->alg != token.alg)) {
    return refuse(refusal, JwtFailure::kAlgorithm,
                  "alg " + token.alg + " does not match key " + quoted(key->kid) + " (" +
                      std::string(keyTypeName(key->type)) +
                      (key->alg.empty() ? "" : ", alg " + quoted(key->alg)) + ")");
  }
  if (!verifySignature(*key, token.alg, token.signing_input, token.signature)) {
    return refuse(
        refusal, JwtFailure::kSignature,
        "signature does not verify with key " + quoted(key->kid) + " (" + token.alg + ")");
  }

  // Claims: only now, with the signature good, do they mean anything.
  const Object& c = *token.claims;
  const int64_t skew = rules.clock_skew.count();
  auto iss = stringMember(c, "iss");
  if (!iss || *iss != rules.issuer) {
    return refuse(refusal, JwtFailure::kClaims,
                  "iss " + (iss ? quoted(*iss) : std::string("(missing)")) + " is not " +
                      quoted(rules.issuer));
  }
  bool aud_ok = false;
  if (c.has("aud")) {
    Var aud = c.get("aud");
    if (aud.isString()) {
      aud_ok = aud.extract<std::string>() == rules.audience;
    } else if (auto arr = c.getArray("aud"); !arr.isNull()) {
      for (size_t i = 0; i < arr->size() && !aud_ok; ++i) {
        Var a = arr->get(static_cast<unsigned>(i));
        aud_ok = a.isString() && a.extract<std::string>() == rules.audience;
      }
    }
  }
  if (!aud_ok) {
    return refuse(refusal, JwtFailure::kClaims,
                  "aud does not hold the audience " + quoted(rules.audience));
  }
  bool present = false;
  auto exp = numericDate(c, "exp", &present);
  if (!exp) {
    return refuse(refusal, JwtFailure::kClaims,
                  present ? "exp is not a number" : "token has no exp (it would never expire)");
  }
  if (now >= *exp + skew) {
    return refuse(refusal, JwtFailure::kClaims,
                  "token expired at " + std::to_string(*exp) + " (now " + std::to_string(now) +
                      ", skew " + std::to_string(skew) + " s)");
  }
  auto nbf = numericDate(c, "nbf", &present);
  if (present && !nbf) return refuse(refusal, JwtFailure::kClaims, "nbf is not a number");
  if (nbf && now + skew < *nbf) {
    return refuse(refusal, JwtFailure::kClaims,
                  "token not valid before " + std::to_string(*nbf) + " (now " +
                      std::to_string(now) + ", skew " + std::to_string(skew) + " s)");
  }
  auto iat = numericDate(c, "iat", &present);
  if (present && !iat) return refuse(refusal, JwtFailure::kClaims, "iat is not a number");
  if (iat && now + skew < *iat) {
    return refuse(refusal, JwtFailure::kClaims,
                  "token issued in the future at " + std::to_string(*iat) + " (now " +
                      std::to_string(now) + ", skew " + std::to_string(skew) + " s)");
  }
  auto tenant = stringMember(c, rules.tenant_claim);
  if (!tenant || tenant->empty()) {
    return refuse(refusal, JwtFailure::kClaims,
                  "claim " + quoted(rules.tenant_claim) + " (the tenant) is missing or not a " +
                      "non-empty string");
  }
  auto principal = stringMember(c, rules.principal_claim);
  if (!principal || principal->empty() || principal->size() > 256) {
    return refuse(refusal, JwtFailure::kClaims,
                  "claim " + quoted(rules.principal_claim) +
                      " (the principal) is missing or not a string of 1 to 256 bytes");
  }
  return VerifiedToken{*iss, std::move(*tenant), std::move(*principal), *exp};
}

}  // namespace trellis::kernel::auth
