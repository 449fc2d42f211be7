#include "trellis/kernel/tls/verify_error.h"

#include <openssl/x509_vfy.h>

namespace trellis::kernel::tls {

bool isUntrustedIssuer(long x509_error) {
  switch (x509_error) {
    case X509_V_ERR_UNABLE_TO_GET_ISSUER_CERT:
    case X509_V_ERR_UNABLE_TO_GET_ISSUER_CERT_LOCALLY:
    case X509_V_ERR_UNABLE_TO_VERIFY_LEAF_SIGNATURE:
    case X509_V_ERR_DEPTH_ZERO_SELF_SIGNED_CERT:
    case X509_V_ERR_SELF_SIGNED_CERT_IN_CHAIN:
    case X509_V_ERR_CERT_UNTRUSTED:
    // Names a trusted CA but was not signed by it: an impostor CA of the same name.
    case X509_V_ERR_CERT_SIGNATURE_FAILURE: return true;
    default: return false;
  }
}

std::string verifyErrorWords(long x509_error, std::string_view host) {
  if (isUntrustedIssuer(x509_error)) return "untrusted issuer";
  switch (x509_error) {
    case X509_V_ERR_HOSTNAME_MISMATCH:
    case X509_V_ERR_IP_ADDRESS_MISMATCH: return "wrong host: it is not for " + std::string(host);
    case X509_V_ERR_CERT_HAS_EXPIRED: return "expired";
    case X509_V_ERR_CERT_NOT_YET_VALID: return "not yet valid";
    case X509_V_ERR_CERT_REVOKED: return "revoked";
    // A CRL is configured but none is current for the issuer: nobody it signed is vouched for.
    case X509_V_ERR_UNABLE_TO_GET_CRL:
    case X509_V_ERR_CRL_HAS_EXPIRED:
    case X509_V_ERR_CRL_NOT_YET_VALID:
    case X509_V_ERR_CRL_SIGNATURE_FAILURE: return "unverifiable (revocation list)";
    default: return "refused";
  }
}

}  // namespace trellis::kernel::tls
