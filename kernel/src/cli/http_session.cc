#include "cli/http_session.h"

#include <Poco/Net/Context.h>
#include <Poco/Net/HTTPSClientSession.h>
#include <Poco/Net/IPAddress.h>
#include <Poco/Net/InvalidCertificateHandler.h>
#include <Poco/Net/NetSSL.h>
#include <Poco/Net/SSLException.h>
#include <Poco/Net/SSLManager.h>
#include <Poco/Net/VerificationErrorArgs.h>
#include <openssl/ssl.h>
#include <openssl/x509_vfy.h>
#include <openssl/x509v3.h>

#include <cstdlib>
#include <map>
#include <mutex>

#include "trellis/kernel/tls/server_options.h"

namespace trellis::cli {
namespace {

using Poco::Net::Context;

std::function<TrustedCa()>& caResolver() {
  static std::function<TrustedCa()> resolver;
  return resolver;
}

std::function<ClientCertificate()>& certificateResolver() {
  static std::function<ClientCertificate()> resolver;
  return resolver;
}

TrustedCa trustedCa() {
  if (caResolver()) return caResolver()();
  if (const char* env = std::getenv("TRELLIS_CA"); env && *env) return {env, "TRELLIS_CA"};
  return {"", "the system store"};
}

// Why this thread's last handshake was refused (X509_V_OK: it was not), and the host it
// dialled: Poco's exception only says "certificate verify failed".
thread_local int last_verify_error = X509_V_OK;
thread_local std::string last_host;

// Refuses every certificate OpenSSL could not verify, remembering the first reason. Poco asks
// its SSLManager's handler about each failure; without one it would consult an Application
// configuration the CLI does not have.
class RefuseAndRecord final : public Poco::Net::InvalidCertificateHandler {
 public:
  RefuseAndRecord() : InvalidCertificateHandler(false) {}
  void onInvalidCertificate(const void*, Poco::Net::VerificationErrorArgs& args) override {
    if (last_verify_error == X509_V_OK) last_verify_error = args.errorNumber();
    args.setIgnoreError(false);
  }
};

// One context per host: OpenSSL checks the name (or IP address) while it verifies the chain,
// so a wrong host is refused during the handshake like an untrusted issuer. (Poco's own
// check after the handshake is off: it resolves names and skips "localhost".)
Context::Ptr contextFor(const std::string& host, bool present_certificate) {
  const TrustedCa ca = trustedCa();  // may exit (an unreadable --ca): before taking the lock
  ClientCertificate mine;
  if (present_certificate && certificateResolver()) mine = certificateResolver()();
  static std::mutex mu;
  static std::map<std::string, Context::Ptr> contexts;
  std::lock_guard lock(mu);
  const std::string key = host + (mine.empty() ? "" : "\n" + mine.cert);
  if (auto it = contexts.find(key); it != contexts.end()) return it->second;

  Context::Params params;
  params.certificateFile = mine.cert;
  params.privateKeyFile = mine.key;
  params.verificationMode = Context::VERIFY_RELAXED;  // a client: verify the server
  params.loadDefaultCAs = ca.file.empty();
  params.caLocation = ca.file;
  params.cipherList = kernel::tls::kDefaultCiphers;  // TLS 1.2: ECDHE + AEAD only
  Context::Ptr ctx(new Context(Context::TLS_CLIENT_USE, params));
  ctx->requireMinimumProtocol(Context::PROTO_TLSV1_2);
  ctx->enableExtendedCertificateVerification(false);
  X509_VERIFY_PARAM* param = SSL_CTX_get0_param(ctx->sslContext());
  X509_VERIFY_PARAM_set_hostflags(param, X509_CHECK_FLAG_NO_PARTIAL_WILDCARDS);
  Poco::Net::IPAddress ip;
  const bool literal = Poco::Net::IPAddress::tryParse(host, ip);
  if ((literal ? X509_VERIFY_PARAM_set1_ip_asc(param, host.c_str())
               : X509_VERIFY_PARAM_set1_host(param, host.c_str(), 0)) != 1) {
    throw Poco::Net::SSLContextException("cannot verify the TLS server name " + host);
  }

  static std::once_flag once;
  std::call_once(once, [&] {
    Poco::Net::initializeSSL();
    Poco::Net::SSLManager::instance().initializeClient(
        Poco::Net::SSLManager::PrivateKeyPassphraseHandlerPtr(),
        Poco::Net::SSLManager::InvalidCertificateHandlerPtr(new RefuseAndRecord), ctx);
  });
  contexts[key] = ctx;
  return ctx;
}

std::string refusalReason(int err, bool* untrusted) {
  *untrusted = false;
  switch (err) {
    case X509_V_ERR_HOSTNAME_MISMATCH:
    case X509_V_ERR_IP_ADDRESS_MISMATCH: return "wrong host (it is not for " + last_host + ")";
    case X509_V_ERR_CERT_HAS_EXPIRED: return "expired";
    case X509_V_ERR_CERT_NOT_YET_VALID: return "not yet valid";
    case X509_V_ERR_UNABLE_TO_GET_ISSUER_CERT:
    case X509_V_ERR_UNABLE_TO_GET_ISSUER_CERT_LOCALLY:
    case X509_V_ERR_UNABLE_TO_VERIFY_LEAF_SIGNATURE:
    case X509_V_ERR_DEPTH_ZERO_SELF_SIGNED_CERT:
    case X509_V_ERR_SELF_SIGNED_CERT_IN_CHAIN:
    case X509_V_ERR_CERT_UNTRUSTED: *untrusted = true; return "untrusted issuer";
    default: return "invalid";
  }
}

}  // namespace

void setCaResolver(std::function<TrustedCa()> resolver) {
  caResolver() = std::move(resolver);
}

void setClientCertificateResolver(std::function<ClientCertificate()> resolver) {
  certificateResolver() = std::move(resolver);
}

Result<Poco::URI> parseHttpUrl(const std::string& flag, const std::string& url) {
  try {
    Poco::URI uri(url);
    if (uri.getScheme() != "http" && uri.getScheme() != "https") {
      return Status::invalid(flag + " " + url + ": expected an http:// or https:// URL");
    }
    if (uri.getHost().empty()) return Status::invalid(flag + " " + url + ": no host");
    return uri;
  } catch (const Poco::Exception& e) {
    return Status::invalid(flag + " " + url + ": " + e.displayText());
  }
}

std::unique_ptr<Poco::Net::HTTPClientSession> openHttpSession(const Poco::URI& uri,
                                                              bool present_certificate) {
  if (uri.getScheme() != "https") {
    return std::make_unique<Poco::Net::HTTPClientSession>(uri.getHost(), uri.getPort());
  }
  last_verify_error = X509_V_OK;
  last_host = uri.getHost();
  return std::make_unique<Poco::Net::HTTPSClientSession>(
      uri.getHost(), uri.getPort(), contextFor(uri.getHost(), present_certificate));
}

std::string describeHttpError(const Poco::Exception& e) {
  if (const int err = last_verify_error; err != X509_V_OK) {
    bool untrusted = false;
    const std::string reason = refusalReason(err, &untrusted);
    const TrustedCa ca = trustedCa();
    std::string line =
        "TLS certificate refused: " + reason + " (" + X509_verify_cert_error_string(err) +
        "; trusted: " + (ca.file.empty() ? "the system store" : ca.file + " from " + ca.source) +
        ")";
    if (untrusted) line += "; trust its CA with --ca FILE, TRELLIS_CA or the profile's ca:";
    return line;
  }
  if (dynamic_cast<const Poco::Net::SSLContextException*>(&e)) return e.message();
  if (dynamic_cast<const Poco::Net::SSLException*>(&e)) {
    return "TLS handshake failed: " + e.message();
  }
  return e.displayText();
}

}  // namespace trellis::cli
