// Certificate selectors: how a tenant credential or an admin principal names a client
// certificate that a listener has already verified against its client CA. Three kinds, from
// the most specific to the least:
//   pin      SHA-256 of the certificate's DER, 64 hex digits (colons allowed, as
//            `openssl x509 -noout -fingerprint -sha256` prints them)
//   spiffe   the SPIFFE ID in a URI SAN, "spiffe://<trust domain>/<path>"
//   subject  subject and issuer distinguished names in RFC 2253 form, as
//            `openssl x509 -noout -subject -issuer -nameopt RFC2253` prints them
// Each selector has a lookup digest (SHA-256 over its kind and values), which is what the
// registry indexes; a presented certificate yields one digest per kind it can match.
//
//   auto s = parseSpiffeSelector("spiffe://acme.test/ns/prod/sa/billing");  // INVALID + why
//   auto d = lookupsOf({.sha256 = pin, .spiffe_id = id, .subject = sub, .issuer = iss});
#pragma once

#include <array>
#include <optional>
#include <string>
#include <string_view>

#include "trellis/status.hpp"
#include "trellis/tenants/identity.h"

namespace trellis::tenants {

enum class CertSelectorKind { kPin, kSpiffe, kSubject };
std::string_view certSelectorKindName(CertSelectorKind kind);  // "pin", "spiffe", "subject"
std::optional<CertSelectorKind> parseCertSelectorKind(std::string_view name);

struct CertSelector {
  CertSelectorKind kind = CertSelectorKind::kPin;
  std::string value;   // pin: lowercase hex; spiffe: the ID; subject: the normalised subject DN
  std::string issuer;  // subject only: the normalised issuer DN; "" otherwise
  Sha256Digest lookup() const;
  // For messages and listings: `spiffe "spiffe://acme.test/x"`.
  std::string describe() const;
  friend bool operator==(const CertSelector&, const CertSelector&) = default;
};

// Each refuses garbage with INVALID naming what is wrong.
Result<CertSelector> parsePinSelector(std::string_view pin);
Result<CertSelector> parseSpiffeSelector(std::string_view id);
Result<CertSelector> parseSubjectSelector(std::string_view subject, std::string_view issuer);
// A distinguished name in RFC 2253 form with spacing around separators dropped and attribute
// types upper-cased, so "cn=billing, O=Acme" and "CN=billing,O=Acme" compare equal.
Result<std::string> normalizeDn(std::string_view dn);

// What a verified client certificate offers to selectors. Never key material.
struct PresentedCertificate {
  std::string_view sha256;     // lowercase hex of the DER
  std::string_view spiffe_id;  // "" if it has none
  std::string_view subject;    // RFC 2253
  std::string_view issuer;     // RFC 2253
};

// The lookup digests a certificate can match, most specific first (pin, spiffe, subject);
// unset where it offers nothing of that kind.
std::array<std::optional<Sha256Digest>, 3> lookupsOf(const PresentedCertificate& cert);

}  // namespace trellis::tenants
