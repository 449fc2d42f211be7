// TLS for every connection Trellis opens as a client: the egress client (http_send), plugin
// streams (tls://), JWKS fetches, and the CLI's HTTPS sessions (admin plane, registries,
// mirrors). One place decides what "verified" means: TLS 1.2 or 1.3 only, the listeners'
// modern suites (kDefaultCiphers in server_options.h), the system store or one CA bundle,
// SNI, the peer's chain and its name (or IP address) checked during the handshake, and
// failures named in words an operator can act on. Asio users take a whole context; a
// library that makes its own SSL_CTX (Poco) has it configured here. libpq makes its own and
// takes none: tenants/src/postgres.cc sets its floor (ssl_min_protocol_version=TLSv1.2);
// the operator's URL sets sslmode=verify-full and sslrootcert.
//
//   auto ctx = tls::makeClientContext({.ca_file = "/etc/trellis/ca.pem", .alpn = {"http/1.1"}});
//   boost::asio::ssl::stream<boost::beast::tcp_stream> s(io, **ctx);
//   if (auto st = tls::prepareClientStream(s.native_handle(), "api.example.com"); !st) ...
//   ... handshake fails: tls::describeHandshakeFailure(s.native_handle(), "api.example.com", ec)
//   // "certificate verify failed: hostname mismatch (wrong host: it is not for api.example.com)"
#pragma once

#include <openssl/ssl.h>

#include <boost/asio/ssl/context.hpp>
#include <boost/system/error_code.hpp>
#include <memory>
#include <string>
#include <string_view>
#include <vector>

#include "trellis/kernel/tls/verify_error.h"
#include "trellis/status.hpp"

namespace trellis::kernel::tls {

struct ClientOptions {
  // PEM bundle of trusted CAs; empty = the system store (OpenSSL's default paths).
  std::string ca_file{};
  // A client certificate (PEM chain, leaf first) and its unencrypted key; empty = none.
  std::string cert_file{};
  std::string key_file{};
  // Protocols offered by ALPN, e.g. {"http/1.1"}; empty = no ALPN (raw byte streams).
  std::vector<std::string> alpn{};
};

// Applies the client policy to a context another library made (it keeps that library's
// verify callback, so Poco still learns why a certificate was refused). INVALID naming the
// file if the CA bundle, certificate or key cannot be used.
Status configureClientContext(SSL_CTX* ctx, const ClientOptions& options);

// A new context with the policy applied.
Result<std::shared_ptr<boost::asio::ssl::context>> makeClientContext(const ClientOptions& options);

// The peer must be `host`: its certificate must name it (a DNS SAN, no partial wildcards) or,
// for an IP literal, carry it as an IP SAN. On an SSL (per connection) or, where a library
// hides the SSL, on an SSL_CTX kept for that host.
Status expectPeer(X509_VERIFY_PARAM* param, std::string_view host);

// Before the handshake: SNI (for names, not IP literals, RFC 6066) and expectPeer().
Status prepareClientStream(SSL* ssl, std::string_view host);

// Words for a failed handshake's OpenSSL error (as ERR_get_error gives it), or "" when
// the OpenSSL reason says it best: "the server offers no TLS version this client accepts".
std::string handshakeErrorWords(unsigned long openssl_error);

// Why a client handshake with `host` failed, for an error message:
// "certificate verify failed: unable to get local issuer certificate (untrusted issuer)",
// "the server offers no TLS version this client accepts (1.2 or 1.3)", or ec's message.
std::string describeHandshakeFailure(SSL* ssl, std::string_view host,
                                     const boost::system::error_code& ec);

}  // namespace trellis::kernel::tls
