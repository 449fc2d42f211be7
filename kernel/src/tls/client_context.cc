#include "trellis/kernel/tls/client_context.h"

#include <openssl/err.h>
#include <openssl/x509v3.h>

#include <boost/asio/ip/address.hpp>
#include <boost/asio/ssl/error.hpp>

#include "trellis/kernel/tls/server_options.h"

namespace trellis::kernel::tls {
namespace {

std::string opensslReason() {
  const unsigned long e = ERR_peek_last_error();
  ERR_clear_error();
  const char* reason = e == 0 ? nullptr : ERR_reason_error_string(e);
  return reason ? reason : "unknown OpenSSL error";
}

// ALPN's wire form: each protocol prefixed by its length.
std::string alpnWire(const std::vector<std::string>& protocols) {
  std::string wire;
  for (const std::string& p : protocols) {
    wire += static_cast<char>(p.size());
    wire += p;
  }
  return wire;
}

}  // namespace

Status configureClientContext(SSL_CTX* ctx, const ClientOptions& options) {
  SSL_CTX_set_min_proto_version(ctx, TLS1_2_VERSION);
  SSL_CTX_set_max_proto_version(ctx, TLS1_3_VERSION);
  SSL_CTX_set_options(ctx, SSL_OP_NO_COMPRESSION | SSL_OP_NO_RENEGOTIATION);
  if (SSL_CTX_set_cipher_list(ctx, kDefaultCiphers) != 1 ||
      SSL_CTX_set_ciphersuites(ctx, kDefaultCipherSuites) != 1) {
    return Status::internal("TLS client: the default cipher list is not usable: " +
                            opensslReason());
  }
  // Keep a callback another library installed (Poco records why it refused a peer).
  SSL_CTX_set_verify(ctx, SSL_VERIFY_PEER, SSL_CTX_get_verify_callback(ctx));
  SSL_CTX_set_verify_depth(ctx, 8);  // bounds the work an oversized chain can cause
  if (options.ca_file.empty()) {
    if (SSL_CTX_set_default_verify_paths(ctx) != 1) {
      return Status::unavailable("TLS client: cannot load the system CA store: " + opensslReason());
    }
  } else if (SSL_CTX_load_verify_locations(ctx, options.ca_file.c_str(), nullptr) != 1) {
    return Status::invalid("ca_file: cannot load trusted certificates from " + options.ca_file +
                           ": " + opensslReason());
  }
  if (options.cert_file.empty() != options.key_file.empty()) {
    return Status::invalid("a client certificate needs both its certificate and its key file");
  }
  if (!options.cert_file.empty()) {
    if (SSL_CTX_use_certificate_chain_file(ctx, options.cert_file.c_str()) != 1) {
      return Status::invalid("cannot use the client certificate " + options.cert_file + ": " +
                             opensslReason());
    }
    if (SSL_CTX_use_PrivateKey_file(ctx, options.key_file.c_str(), SSL_FILETYPE_PEM) != 1 ||
        SSL_CTX_check_private_key(ctx) != 1) {
      return Status::invalid("cannot use the client key " + options.key_file + " with " +
                             options.cert_file + ": " + opensslReason());
    }
  }
  if (!options.alpn.empty()) {
    const std::string wire = alpnWire(options.alpn);
    // Unlike most of OpenSSL, 0 is success here.
    if (SSL_CTX_set_alpn_protos(ctx, reinterpret_cast<const unsigned char*>(wire.data()),
                                static_cast<unsigned>(wire.size())) != 0) {
      return Status::internal("TLS client: cannot set ALPN");
    }
  }
  return Status::ok();
}

Result<std::shared_ptr<boost::asio::ssl::context>> makeClientContext(const ClientOptions& options) {
  namespace ssl = boost::asio::ssl;
  auto ctx = std::make_shared<ssl::context>(ssl::context::tls_client);
  if (Status s = configureClientContext(ctx->native_handle(), options); !s) return s;
  return ctx;
}

Status expectPeer(X509_VERIFY_PARAM* param, std::string_view host) {
  const std::string h(host);
  boost::system::error_code ec;
  (void)boost::asio::ip::make_address(h, ec);  // only: is it an IP literal?
  X509_VERIFY_PARAM_set_hostflags(param, X509_CHECK_FLAG_NO_PARTIAL_WILDCARDS);
  const bool ok = !ec ? X509_VERIFY_PARAM_set1_ip_asc(param, h.c_str()) == 1
                      : X509_VERIFY_PARAM_set1_host(param, h.c_str(), 0) == 1;
  if (!ok) return Status::invalid("cannot verify the TLS server name " + h);
  return Status::ok();
}

Status prepareClientStream(SSL* ssl, std::string_view host) {
  if (Status s = expectPeer(SSL_get0_param(ssl), host); !s) return s;
  const std::string h(host);
  boost::system::error_code ec;
  (void)boost::asio::ip::make_address(h, ec);
  // RFC 6066: no SNI for IP literals; the certificate must carry the IP as a SAN.
  if (ec && SSL_set_tlsext_host_name(ssl, h.c_str()) != 1) {
    return Status::internal("cannot set the TLS server name " + h);
  }
  return Status::ok();
}

std::string handshakeErrorWords(unsigned long openssl_error) {
  switch (ERR_GET_REASON(openssl_error)) {
    case SSL_R_UNSUPPORTED_PROTOCOL:
    case SSL_R_TLSV1_ALERT_PROTOCOL_VERSION:
    case SSL_R_NO_PROTOCOLS_AVAILABLE:
      return "the server offers no TLS version this client accepts (1.2 or 1.3)";
    default: return "";
  }
}

std::string describeHandshakeFailure(SSL* ssl, std::string_view host,
                                     const boost::system::error_code& ec) {
  const long result = ssl == nullptr ? X509_V_OK : SSL_get_verify_result(ssl);
  if (result != X509_V_OK) {
    return std::string("certificate verify failed: ") + X509_verify_cert_error_string(result) +
           " (" + verifyErrorWords(result, host) + ")";
  }
  if (ec.category() == boost::asio::error::get_ssl_category()) {
    const std::string words = handshakeErrorWords(static_cast<unsigned long>(ec.value()));
    if (!words.empty()) return words + ": " + ec.message();
  }
  return ec.message();
}

}  // namespace trellis::kernel::tls
