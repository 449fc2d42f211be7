// What an operator configures for TLS on one listener (`server.tls`, `admin.tls`), and what
// the listener learns about a client that presented a certificate. Plain data, no OpenSSL:
// the config parser and request handlers include this; server_context.h builds from it.
//
//   ServerTlsOptions tls;
//   tls.certificates = {{"/etc/trellis/api.pem", "/etc/trellis/api.key"}};
//   tls.client_auth = ClientAuth::kOptional;
//   tls.client_ca = "/etc/trellis/clients-ca.pem";
#pragma once

#include <chrono>
#include <filesystem>
#include <string>
#include <vector>

namespace trellis::kernel::tls {

// TLS 1.2 suites: forward secret (ECDHE) and authenticated encryption (GCM, ChaCha20-Poly1305)
// only; no RSA key exchange, no CBC, no SHA-1 MACs. TLS 1.3 suites are all AEAD already.
inline constexpr const char* kDefaultCiphers =
    "ECDHE-ECDSA-AES128-GCM-SHA256:ECDHE-RSA-AES128-GCM-SHA256:"
    "ECDHE-ECDSA-AES256-GCM-SHA384:ECDHE-RSA-AES256-GCM-SHA384:"
    "ECDHE-ECDSA-CHACHA20-POLY1305:ECDHE-RSA-CHACHA20-POLY1305";
inline constexpr const char* kDefaultCipherSuites =
    "TLS_AES_128_GCM_SHA256:TLS_AES_256_GCM_SHA384:TLS_CHACHA20_POLY1305_SHA256";

// Client certificates: not asked for; asked for and verified when sent; or demanded.
enum class ClientAuth { kOff, kOptional, kRequired };

struct CertificateFiles {
  std::filesystem::path cert;  // PEM: the leaf first, then intermediates
  std::filesystem::path key;   // PEM private key matching the leaf
};

struct ServerTlsOptions {
  // Empty: the listener speaks plain HTTP. The first is served when the client sends no
  // SNI or a name no certificate covers; the others when their SAN matches the SNI name.
  std::vector<CertificateFiles> certificates;
  ClientAuth client_auth = ClientAuth::kOff;
  std::filesystem::path client_ca;  // PEM bundle; required unless client_auth is kOff
  // PEM CRLs, one per CA in client_ca that issues client certificates; empty: none checked.
  std::filesystem::path client_crl;
  std::string ciphers = kDefaultCiphers;            // TLS 1.2 (OpenSSL cipher list)
  std::string ciphersuites = kDefaultCipherSuites;  // TLS 1.3
  // A client that has not finished its handshake in this is disconnected.
  std::chrono::milliseconds handshake_timeout{10'000};
  // How often the certificate, key and CA files are checked for changes (their mtime, size
  // and inode); 0 = only on SIGHUP.
  std::chrono::milliseconds reload_check{2'000};

  bool enabled() const { return !certificates.empty(); }
};

// A client certificate the listener verified against client_ca. Never holds key material.
struct PeerIdentity {
  std::string sha256;             // lowercase hex of SHA-256 over the leaf's DER: a pin
  std::string subject;            // RFC 2253, e.g. "CN=billing,O=Acme"
  std::string issuer;             // RFC 2253
  std::vector<std::string> uris;  // URI subject alternative names
  std::string spiffe_id;          // the first URI SAN starting with "spiffe://", or ""
};

}  // namespace trellis::kernel::tls
