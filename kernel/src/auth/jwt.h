// Signed bearer tokens (JWT, RFC 7519, in JWS compact form, RFC 7515) checked against one
// issuer's public keys: RS256, ES256 and EdDSA (Ed25519) only. Everything a token says about
// itself is distrusted until its signature verifies with a key the issuer published: "alg"
// none and every HMAC alg are refused (a public key used as an HMAC secret is the classic
// confusion), the key is chosen by "kid" from the issuer's set and must be of the type the
// alg needs, and "jwk", "jku" or "x5u" headers are never followed.
//
//   auto token = decodeJwt(credential);                  // structure only, no trust yet
//   if (!token) log(token.status().message());
//   ClaimRules rules{.issuer = "https://idp.example.com/", .audience = "trellis"};
//   auto claims = verifyJwt(*token, keys, rules, nowSeconds());
//   // claims->tenant, claims->principal; else INVALID / PERMISSION_DENIED with the reason
//
// Refusal messages name the check that failed and the header or claim values that are safe
// to log (alg, kid, iss, aud, times); never the token, its signature or key material.
#pragma once

#include <Poco/JSON/Object.h>

#include <chrono>
#include <cstdint>
#include <optional>
#include <string>
#include <string_view>
#include <vector>

#include "auth/jwks.h"
#include "trellis/status.hpp"

namespace trellis::kernel::auth {

inline constexpr size_t kMaxTokenBytes = 8 * 1024;
inline constexpr std::chrono::seconds kDefaultClockSkew{60};
inline constexpr std::chrono::seconds kMaxClockSkew{300};

// Unpadded base64url (RFC 4648 §5) only: '=', '+', '/', whitespace and a length that cannot
// end a base64 string are refused, as are non-zero bits after the last full byte.
std::optional<std::string> base64UrlDecode(std::string_view in);
std::string base64UrlEncode(std::string_view in);

// Whether a bearer credential has the shape of a compact JWS: three dot-separated segments,
// the first two non-empty, all of base64url characters. Cheap; decides only which check
// (token or API key) a credential goes to.
bool looksLikeJwt(std::string_view credential);

struct DecodedJwt {
  std::string alg;
  std::string kid;  // empty: none in the header
  Poco::JSON::Object::Ptr claims;
  std::string signing_input;  // header.payload, as received
  std::string signature;      // raw bytes
};

// Structure only: size, three segments, base64url, JSON objects without duplicate members,
// a string "alg", no "crit". INVALID naming what is wrong.
Result<DecodedJwt> decodeJwt(std::string_view token);

// The "iss" claim if it is a string, else empty; decides which issuer's keys to try.
std::string unverifiedIssuer(const DecodedJwt& token);

struct ClaimRules {
  std::string issuer;    // "iss" must equal it exactly
  std::string audience;  // "aud" (a string or an array of strings) must hold it
  std::string tenant_claim = "tenant";
  std::string principal_claim = "sub";
  std::chrono::seconds clock_skew = kDefaultClockSkew;
};

struct VerifiedToken {
  std::string issuer;
  std::string tenant;
  std::string principal;
  int64_t expires_at = 0;  // seconds since the epoch
};

// What went wrong with a token, for the caller to decide on (e.g. refetch keys for kUnknownKid).
enum class JwtFailure { kNone, kMalformed, kAlgorithm, kUnknownKid, kSignature, kClaims };

struct JwtRefusal {
  JwtFailure failure = JwtFailure::kNone;
  std::string reason;  // safe to log
};

// Chooses the key (by kid; without one, the only key of the alg's type), checks the alg
// against it, verifies the signature, then the claims against `rules` at `now` (seconds since
// the epoch): iss exact, aud holds the audience, exp required and not past (minus skew), nbf
// and iat not in the future (plus skew), the tenant and principal claims non-empty strings.
// Fills `refusal` (if given) when it returns an error.
Result<VerifiedToken> verifyJwt(const DecodedJwt& token, const JwkSet& keys,
                                const ClaimRules& rules, int64_t now,
                                JwtRefusal* refusal = nullptr);

}  // namespace trellis::kernel::auth
