#include "trellis/kernel/tls/client_context.h"

#include <openssl/x509v3.h>

#include <boost/asio/ip/address.hpp>

namespace trellis::kernel::tls {

Result<std::shared_ptr<boost::asio::ssl::context>> makeClientContext(const ClientOptions& options) {
  namespace ssl = boost::asio::ssl;
  auto ctx = std::make_shared<ssl::context>(ssl::context::tls_client);
  SSL_CTX* native = ctx->native_handle();
  SSL_CTX_set_min_proto_version(native, TLS1_2_VERSION);
  SSL_CTX_set_verify(native, SSL_VERIFY_PEER, nullptr);
  if (options.ca_file.empty()) {
    if (SSL_CTX_set_default_verify_paths(native) != 1) {
      return Status::unavailable("cannot load the system CA store");
    }
  } else if (SSL_CTX_load_verify_locations(native, options.ca_file.c_str(), nullptr) != 1) {
    return Status::invalid("ca_file: cannot load trusted certificates from " + options.ca_file);
  }
  return ctx;
}

Status prepareClientStream(SSL* ssl, std::string_view host) {
  const std::string h(host);
  boost::system::error_code ec;
  (void)boost::asio::ip::make_address(h, ec);  // only: is it an IP literal?
  X509_VERIFY_PARAM* param = SSL_get0_param(ssl);
  X509_VERIFY_PARAM_set_hostflags(param, X509_CHECK_FLAG_NO_PARTIAL_WILDCARDS);
  if (!ec) {
    // RFC 6066: no SNI for IP literals; the certificate must carry the IP as a SAN.
    if (X509_VERIFY_PARAM_set1_ip_asc(param, h.c_str()) != 1) {
      return Status::internal("cannot set the TLS peer address " + h);
    }
    return Status::ok();
  }
  if (SSL_set_tlsext_host_name(ssl, h.c_str()) != 1 || SSL_set1_host(ssl, h.c_str()) != 1) {
    return Status::internal("cannot set the TLS server name " + h);
  }
  return Status::ok();
}

std::string describeHandshakeFailure(SSL* ssl, const std::string& fallback) {
  const long result = SSL_get_verify_result(ssl);
  if (result != X509_V_OK) {
    return std::string("certificate verify failed: ") + X509_verify_cert_error_string(result);
  }
  return fallback;
}

}  // namespace trellis::kernel::tls
