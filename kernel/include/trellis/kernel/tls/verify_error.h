// A certificate OpenSSL refused, in the words Trellis logs and prints on both sides of a
// handshake: the listener about a client certificate, every client about a server's.
//
//   tls::verifyErrorWords(X509_V_ERR_HOSTNAME_MISMATCH, "api.example.com")
//   // "wrong host: it is not for api.example.com"
#pragma once

#include <string>
#include <string_view>

namespace trellis::kernel::tls {

// "untrusted issuer", "expired", "not yet valid", "revoked", "wrong host: it is not for
// <host>", "unverifiable (revocation list)", or "refused" for the rest.
std::string verifyErrorWords(long x509_error, std::string_view host);

// The issuer is unknown (trusting its CA would fix it), not a bad certificate itself.
bool isUntrustedIssuer(long x509_error);

}  // namespace trellis::kernel::tls
