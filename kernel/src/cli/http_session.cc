#include "cli/http_session.h"

#include <Poco/Net/Context.h>
#include <Poco/Net/HTTPSClientSession.h>
#include <Poco/Net/InvalidCertificateHandler.h>
#include <Poco/Net/NetSSL.h>
#include <Poco/Net/SSLException.h>
#include <Poco/Net/SSLManager.h>
#include <Poco/Net/VerificationErrorArgs.h>
#include <openssl/ssl.h>
#include <openssl/x509_vfy.h>

#include <cstdlib>
#include <map>
#include <mutex>

#include "trellis/kernel/tls/client_context.h"

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
// check after the handshake is off: it resolves names and skips "localhost".) Poco makes
// the SSL_CTX; the kernel's client TLS module sets what is accepted, as for egress.
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
  params.verificationMode = Context::VERIFY_RELAXED;  // Poco's callback: records the reason
  params.loadDefaultCAs = false;                      // the module loads the trusted CAs
  Context::Ptr ctx(new Context(Context::TLS_CLIENT_USE, params));
  ctx->enableExtendedCertificateVerification(false);
  const kernel::tls::ClientOptions options{
      .ca_file = ca.file, .cert_file = mine.cert, .key_file = mine.key, .alpn = {"http/1.1"}};
  if (Status s = kernel::tls::configureClientContext(ctx->sslContext(), options); !s) {
    throw Poco::Net::SSLContextException(s.message());
  }
  if (Status s = kernel::tls::expectPeer(SSL_CTX_get0_param(ctx->sslContext()), host); !s) {
    throw Poco::Net::SSLContextException(s.message());
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

// Poco keeps only OpenSSL's text ("error:0A000102:SSL routines::unsupported protocol"):
// the code in it, or 0.
unsigned long opensslErrorIn(const std::string& message) {
  const size_t at = message.find("error:");
  if (at == std::string::npos || message.size() < at + 14) return 0;
  const std::string hex = message.substr(at + 6, 8);
  if (hex.find_first_not_of("0123456789abcdefABCDEF") != std::string::npos) return 0;
  return std::stoul(hex, nullptr, 16);
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
    const bool untrusted = kernel::tls::isUntrustedIssuer(err);
    const std::string reason = kernel::tls::verifyErrorWords(err, last_host);
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
    const std::string words = kernel::tls::handshakeErrorWords(opensslErrorIn(e.message()));
    return "TLS handshake with " + last_host +
           " failed: " + (words.empty() ? e.message() : words + " (" + e.message() + ")");
  }
  return e.displayText();
}

}  // namespace trellis::cli
