// How every HTTP client of the CLI connects (the admin API, registries, HTTP mirrors): one
// place that decides what a verified HTTPS connection is. https:// speaks TLS 1.2 or 1.3,
// sends SNI, and accepts the server only if its chain ends at a trusted CA and the
// certificate names the host (or IP address) that was dialled. The trusted CAs are the
// system store, or the one bundle the CLI was given (--ca, TRELLIS_CA, the profile's ca:).
// To the admin API it may present a client certificate (--cert/--key, TRELLIS_CERT/_KEY,
// the profile's cert:/key:).
//
//   setCaResolver([&settings] { return settings.trustedCa(); });   // once, in main
//   auto session = openHttpSession(Poco::URI("https://registry.example:8443"));
//   try { session->sendRequest(req); ... }
//   catch (const Poco::Exception& e) { die("…: " + describeHttpError(e)); }
//   // "TLS certificate refused: untrusted issuer (unable to get local issuer certificate); …"
#pragma once

#include <Poco/Exception.h>
#include <Poco/Net/HTTPClientSession.h>
#include <Poco/URI.h>

#include <functional>
#include <memory>
#include <string>

#include "trellis/status.hpp"

namespace trellis::cli {

// The CA bundle that verifies HTTPS servers. An empty file means the system store.
struct TrustedCa {
  std::string file;
  std::string source;  // where the choice came from, for messages: "--ca", "TRELLIS_CA", …
};

// The client certificate the CLI presents to the admin API (mTLS; the admin plane may map it
// to an admin principal). Empty: none.
struct ClientCertificate {
  std::string cert;    // PEM chain, leaf first
  std::string key;     // PEM private key, unencrypted
  std::string source;  // "--cert", "TRELLIS_CERT", "profile \"default\"", …
  bool empty() const { return cert.empty(); }
};

// How the client certificate is chosen, asked only when the admin API is dialled over
// https://. Without one, none is presented.
void setClientCertificateResolver(std::function<ClientCertificate()> resolver);

// How the CA is chosen, asked only when an https:// URL is opened (so commands that never
// dial do not read the profile file). Without one, TRELLIS_CA or the system store.
void setCaResolver(std::function<TrustedCa()> resolver);

// INVALID naming `flag` unless `url` is http:// or https:// with a host.
Result<Poco::URI> parseHttpUrl(const std::string& flag, const std::string& url);

// A client session to the URL's host and port: plain for http://, verified TLS for
// https://, presenting the client certificate if `present_certificate` (the admin API
// only: registries and mirrors never learn who the operator is). Poco exceptions from it
// are best described by describeHttpError().
std::unique_ptr<Poco::Net::HTTPClientSession> openHttpSession(const Poco::URI& uri,
                                                              bool present_certificate = false);

// One line on why a request failed. A refused certificate names the reason (untrusted
// issuer, wrong host, expired, not yet valid) and how to trust a CA.
std::string describeHttpError(const Poco::Exception& e);

}  // namespace trellis::cli
