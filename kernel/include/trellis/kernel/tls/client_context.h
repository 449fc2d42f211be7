// TLS for connections the kernel opens (egress today; any outbound TLS later): one place
// that decides what "verified" means. The context trusts the system store or an operator's
// CA bundle, speaks TLS 1.2+, and every stream made from it sends SNI and checks the peer's
// certificate chain and its name (or IP address) against the host it was dialled for.
//
//   auto ctx = tls::makeClientContext({.ca_file = "/etc/trellis/ca.pem"});
//   boost::asio::ssl::stream<boost::beast::tcp_stream> s(io, **ctx);
//   if (auto st = tls::prepareClientStream(s.native_handle(), "api.example.com"); !st) ...
#pragma once

#include <openssl/ssl.h>

#include <boost/asio/ssl/context.hpp>
#include <memory>
#include <string>
#include <string_view>

#include "trellis/status.hpp"

namespace trellis::kernel::tls {

struct ClientOptions {
  // PEM bundle of trusted CAs; empty = the system store (OpenSSL's default paths).
  std::string ca_file;
};

// INVALID naming ca_file if the bundle cannot be read or holds no certificate.
Result<std::shared_ptr<boost::asio::ssl::context>> makeClientContext(const ClientOptions& options);

// Before the handshake: SNI (for names, not IP literals) and hostname or IP verification.
Status prepareClientStream(SSL* ssl, std::string_view host);

// Why the handshake failed, in words an operator can act on: "certificate verify failed:
// unable to get local issuer certificate" / "hostname mismatch" / the OpenSSL reason.
std::string describeHandshakeFailure(SSL* ssl, const std::string& fallback);

}  // namespace trellis::kernel::tls
