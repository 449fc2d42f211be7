// The kernel's outbound HTTP/1.1 client for plugins (Boost.Beast, OpenSSL). It blocks the
// calling thread, so the host offers it only on blocking routes, jobs and event handlers.
// Each request is checked against an egress Policy before anything is sent: the URL
// (checkDestination), then every address the kernel's own resolution returns
// (checkAddress) — the socket dials exactly the address that was checked, so DNS cannot
// rebind between check and use. Redirects are off unless asked for, and each hop is
// checked the same way (at most 5). Every phase has a deadline and the response body has
// a cap, so a slow or endless server costs the caller a bounded time, never a thread.
//
//   auto client = EgressClient::create({.ca_file = ""});       // system CA store
//   Request req{.method = "GET", .url = "https://api.example.com/v1/items"};
//   Result<Response> r = (*client)->send(req, policy);
//   // PERMISSION_DENIED / TIMEOUT / UNAVAILABLE / QUOTA_EXCEEDED (cap) name what happened.
#pragma once

#include <chrono>
#include <cstdint>
#include <memory>
#include <string>
#include <utility>
#include <vector>

#include "trellis/kernel/services/egress_policy.h"
#include "trellis/status.hpp"

namespace trellis::kernel::services::egress {

using Headers = std::vector<std::pair<std::string, std::string>>;

inline constexpr int kMaxRedirects = 5;

struct Timeouts {
  std::chrono::milliseconds connect{5000};      // resolve + TCP + TLS handshake
  std::chrono::milliseconds first_byte{10000};  // request sent -> response header complete
  std::chrono::milliseconds total{30000};       // the whole exchange, redirects included
};

struct Request {
  std::string method = "GET";
  std::string url{};
  Headers headers{};  // Host, Content-Length, Connection, Transfer-Encoding... are the kernel's
  std::string body{};
  Timeouts timeouts{};
  uint64_t max_response_bytes = 10 * 1024 * 1024;
  int max_redirects = 0;      // 0: a 3xx is returned as it is; at most kMaxRedirects
  std::string traceparent{};  // W3C trace context to propagate (empty: none)
  std::string tracestate{};
};

struct Response {
  int status = 0;
  Headers headers;
  std::string body;
  std::string url;  // the final URL, redacted (no query string)
  int redirects = 0;
  uint64_t bytes_sent = 0;  // request bodies over all hops
};

class EgressClient {
 public:
  struct Options {
    std::string ca_file;  // PEM bundle; empty = the system store
    size_t max_idle_per_destination = 4;
    std::chrono::seconds idle_timeout{30};
    std::string user_agent = "trellis";
  };

  static Result<std::unique_ptr<EgressClient>> create(const Options& options);
  virtual ~EgressClient() = default;

  // INVALID for a bad URL, method or header (naming it); PERMISSION_DENIED naming the rule;
  // TIMEOUT naming the phase; QUOTA_EXCEEDED when the body passes max_response_bytes;
  // UNAVAILABLE for connection and TLS failures (certificate problems named).
  virtual Result<Response> send(const Request& request, const Policy& policy) = 0;

  // Connections kept alive for reuse (all destinations).
  virtual size_t idleConnections() const = 0;
};

// Refuses header names that are not tokens, values with CR, LF or NUL, and the headers
// the kernel sets itself. INVALID "headers: ...".
Status validateRequestHeaders(const Headers& headers);

}  // namespace trellis::kernel::services::egress
