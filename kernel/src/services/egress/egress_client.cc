// EgressClient on Beast. Connections come from dial() (dial.h), which it shares with byte
// streams: each owns a small io_context driven by the thread that holds it. Idle keep-alive
// connections wait in a pool per (scheme, host, port); before one is reused, its peer address is
// checked against the caller's policy again, as two tenants' grants may differ about the same name.
#include "trellis/kernel/services/egress_client.h"

#include <boost/asio/connect.hpp>
#include <boost/asio/ip/tcp.hpp>
#include <boost/beast/core.hpp>
#include <boost/beast/http.hpp>
#include <boost/beast/ssl.hpp>
#include <deque>
#include <map>
#include <mutex>
#include <optional>

#include "services/egress/dial.h"
#include "trellis/kernel/tls/client_context.h"

namespace trellis::kernel::services::egress {
namespace {

namespace asio = boost::asio;
namespace beast = boost::beast;
namespace http = beast::http;
using Clock = std::chrono::steady_clock;
using boost::system::error_code;

constexpr size_t kMaxIdleTotal = 256;
constexpr uint32_t kMaxHeaderBytes = 64 * 1024;

bool isToken(std::string_view s) {
  static constexpr std::string_view kExtra = "!#$%&'*+-.^_`|~";
  return !s.empty() && std::all_of(s.begin(), s.end(), [](char c) {
    return std::isalnum(static_cast<unsigned char>(c)) || kExtra.find(c) != std::string_view::npos;
  });
}

bool iequals(std::string_view a, std::string_view b) {
  return a.size() == b.size() && std::equal(a.begin(), a.end(), b.begin(), [](char x, char y) {
           return std::tolower(static_cast<unsigned char>(x)) ==
                  std::tolower(static_cast<unsigned char>(y));
         });
}

bool isIdempotent(std::string_view method) {
  for (const char* m : {"GET", "HEAD", "PUT", "DELETE", "OPTIONS"}) {
    if (method == m) return true;
  }
  return false;
}

std::string ms(std::chrono::milliseconds d) {
  return describeMs(d);
}

// Outcome of one request/response on one connection.
struct Exchange {
  Status status;
  Response response{};
  bool keep_alive = false;
  bool nothing_received = false;  // failed before any response byte: retryable on reuse
};

class BeastEgressClient final : public EgressClient {
 public:
  BeastEgressClient(Options options, std::shared_ptr<asio::ssl::context> tls)
      : options_(std::move(options)), tls_(std::move(tls)) {}

  Result<Response> send(const Request& request, const Policy& policy) override {
    if (Status s = validateRequestHeaders(request.headers); !s) return s;
    if (!isToken(request.method)) {
      return Status::invalid("method: \"" + request.method + "\" is not an HTTP method");
    }
    if (request.max_redirects < 0 || request.max_redirects > kMaxRedirects) {
      return Status::invalid("max_redirects: must be 0 to " + std::to_string(kMaxRedirects));
    }
    auto url = parseUrl(request.url);
    if (!url) return url.status();
    if (url->stream()) {
      return Status::invalid("url: " + url->scheme +
                             ":// is a byte stream: open it with stream_connect, not http_send");
    }
    const Clock::time_point deadline = Clock::now() + request.timeouts.total;
    std::string method = request.method;
    std::string body = request.body;
    Headers headers = request.headers;
    uint64_t sent = 0;
    for (int hop = 0;; ++hop) {
      if (Status s = checkDestination(*url, policy); !s) return s;
      auto ex = exchange(*url, method, headers, body, request, policy, deadline);
      if (!ex.status) return ex.status;
      sent += body.size();
      Response& response = ex.response;
      const int code = response.status;
      const bool redirect = code == 301 || code == 302 || code == 303 || code == 307 || code == 308;
      const auto location =
          std::find_if(response.headers.begin(), response.headers.end(),
                       [](const auto& h) { return iequals(h.first, "location"); });
      if (!redirect || request.max_redirects == 0 || location == response.headers.end()) {
        response.url = url->redacted();
        response.redirects = hop;
        response.bytes_sent = sent;
        return std::move(response);
      }
      if (hop == request.max_redirects) {
        return Status::unavailable("egress: " + url->redacted() + " redirected more than " +
                                   std::to_string(request.max_redirects) +
                                   " times (max_redirects)");
      }
      auto next = resolveReference(*url, location->second);
      if (!next)
        return Status::invalid("redirect from " + url->redacted() + ": " + next.status().message());
      if (code == 303 || ((code == 301 || code == 302) && method == "POST")) {
        method = "GET";
        body.clear();
      }
      if (next->origin() != url->origin()) {
        // Credentials were meant for the first origin only.
        std::erase_if(headers, [](const auto& h) {
          return iequals(h.first, "authorization") || iequals(h.first, "cookie") ||
                 iequals(h.first, "proxy-authorization");
        });
      }
      url = std::move(next);
    }
  }

  size_t idleConnections() const override {
    std::lock_guard lock(mu_);
    size_t n = 0;
    for (const auto& [k, q] : idle_) n += q.size();
    return n;
  }

 private:
  Exchange exchange(const Url& url, const std::string& method, const Headers& headers,
                    const std::string& body, const Request& request, const Policy& policy,
                    Clock::time_point deadline) {
    // A pooled connection may have been closed by the server meanwhile; that shows as a
    // failure before any response byte, and an idempotent request then goes again on a
    // fresh connection.
    if (auto pooled = takeIdle(url, policy)) {
      Exchange ex = roundTrip(*pooled, url, method, headers, body, request, deadline);
      if (ex.status || !ex.nothing_received || !isIdempotent(method)) {
        if (ex.status && ex.keep_alive) putIdle(url, std::move(pooled));
        return ex;
      }
    }
    auto fresh = dial(url, policy, *tls_, request.timeouts.connect, deadline);
    if (!fresh) return Exchange{fresh.status()};
    Exchange ex = roundTrip(**fresh, url, method, headers, body, request, deadline);
    if (ex.status && ex.keep_alive) putIdle(url, std::move(*fresh));
    return ex;
  }

  Exchange roundTrip(Connection& conn, const Url& url, const std::string& method,
                     const Headers& headers, const std::string& body, const Request& request,
                     Clock::time_point deadline) {
    http::request<http::string_body> req;
    req.version(11);
    req.method_string(method);
    req.target(url.target);
    const bool default_port = url.port == (url.tls() ? 443 : 80);
    const std::string host =
        url.host.find(':') != std::string::npos ? "[" + url.host + "]" : url.host;
    req.set(http::field::host, default_port ? host : host + ":" + std::to_string(url.port));
    req.set(http::field::user_agent, options_.user_agent);
    for (const auto& [name, value] : headers) req.insert(name, value);
    if (!request.traceparent.empty()) req.set("traceparent", request.traceparent);
    if (!request.tracestate.empty()) req.set("tracestate", request.tracestate);
    req.body() = body;
    if (!body.empty() || method == "POST" || method == "PUT" || method == "PATCH") {
      req.prepare_payload();
    }
    req.keep_alive(true);

    Exchange ex;
    const auto write_by = deadline;
    conn.tcp().expires_at(write_by);
    error_code ec = conn.run([&](auto handler) {
      if (conn.secure) {
        http::async_write(*conn.secure, req, std::move(handler));
      } else {
        http::async_write(*conn.plain, req, std::move(handler));
      }
    });
    if (ec) {
      ex.nothing_received = true;
      ex.status = failure(ec, url, request, "sending the request");
      return ex;
    }
    http::response_parser<http::string_body> parser;
    parser.header_limit(kMaxHeaderBytes);
    parser.body_limit(request.max_response_bytes);
    if (method == "HEAD") parser.skip(true);
    const Clock::time_point header_by =
        std::min(deadline, Clock::now() + request.timeouts.first_byte);
    conn.tcp().expires_at(header_by);
    ec = conn.run([&](auto handler) {
      if (conn.secure) {
        http::async_read_header(*conn.secure, conn.buffer, parser, std::move(handler));
      } else {
        http::async_read_header(*conn.plain, conn.buffer, parser, std::move(handler));
      }
    });
    if (ec) {
      ex.nothing_received =
          conn.buffer.size() == 0 && (ec == http::error::end_of_stream || ec == asio::error::eof ||
                                      ec == asio::error::connection_reset);
      ex.status = ec == beast::error::timeout && header_by < deadline
                      ? Status::timeout("egress: " + url.origin() +
                                        " sent no response header within the first_byte "
                                        "timeout of " +
                                        ms(request.timeouts.first_byte))
                      : failure(ec, url, request, "reading the response header");
      return ex;
    }
    conn.tcp().expires_at(deadline);
    ec = conn.run([&](auto handler) {
      if (conn.secure) {
        http::async_read(*conn.secure, conn.buffer, parser, std::move(handler));
      } else {
        http::async_read(*conn.plain, conn.buffer, parser, std::move(handler));
      }
    });
    if (ec) {
      ex.status = failure(ec, url, request, "reading the response body");
      return ex;
    }
    auto res = parser.release();
    ex.keep_alive = res.keep_alive() && conn.buffer.size() == 0;
    ex.response.status = static_cast<int>(res.result_int());
    for (const auto& field : res) {
      ex.response.headers.emplace_back(std::string(field.name_string()),
                                       std::string(field.value()));
    }
    ex.response.body = std::move(res.body());
    return ex;
  }

  static Status failure(error_code ec, const Url& url, const Request& request, const char* what) {
    if (ec == beast::error::timeout) {
      return Status::timeout("egress: " + url.origin() + " took over the total timeout of " +
                             ms(request.timeouts.total) + " (" + what + ")");
    }
    if (ec == http::error::body_limit) {
      return Status::quotaExceeded("egress: the response from " + url.origin() +
                                   " exceeds max_response_bytes (" +
                                   std::to_string(request.max_response_bytes) + ")");
    }
    if (ec == http::error::header_limit) {
      return Status::unavailable("egress: the response header from " + url.origin() + " exceeds " +
                                 std::to_string(kMaxHeaderBytes) + " bytes");
    }
    return Status::unavailable("egress: " + url.origin() + " failed while " + what + ": " +
                               ec.message());
  }

  static std::string poolKey(const Url& url) { return url.origin(); }

  std::unique_ptr<Connection> takeIdle(const Url& url, const Policy& policy) {
    std::lock_guard lock(mu_);
    auto it = idle_.find(poolKey(url));
    if (it == idle_.end()) return nullptr;
    auto& queue = it->second;
    const auto expired = Clock::now() - options_.idle_timeout;
    while (!queue.empty()) {
      std::unique_ptr<Connection> c = std::move(queue.back());
      queue.pop_back();
      if (c->idle_since >= expired && checkAddress(c->peer, url, policy)) return c;
    }
    return nullptr;
  }

  void putIdle(const Url& url, std::unique_ptr<Connection> conn) {
    conn->idle_since = Clock::now();
    std::lock_guard lock(mu_);
    size_t total = 0;
    for (const auto& [k, q] : idle_) total += q.size();
    auto& queue = idle_[poolKey(url)];
    if (queue.size() >= options_.max_idle_per_destination || total >= kMaxIdleTotal) return;
    queue.push_back(std::move(conn));
  }

  const Options options_;
  std::shared_ptr<asio::ssl::context> tls_;
  mutable std::mutex mu_;
  std::map<std::string, std::deque<std::unique_ptr<Connection>>> idle_;
};

}  // namespace

Status validateRequestHeaders(const Headers& headers) {
  static constexpr std::string_view kReserved[] = {
      "host",    "content-length", "transfer-encoding", "connection",  "upgrade",    "te",
      "trailer", "keep-alive",     "proxy-connection",  "traceparent", "tracestate", "expect"};
  for (const auto& [name, value] : headers) {
    if (!isToken(name)) return Status::invalid("headers: \"" + name + "\" is not a header name");
    for (auto r : kReserved) {
      if (iequals(name, r)) {
        return Status::invalid("headers: " + name + " is set by the kernel");
      }
    }
    if (value.find_first_of(std::string_view("\r\n\0", 3)) != std::string::npos) {
      return Status::invalid("headers: the value of " + name + " holds CR, LF or NUL");
    }
  }
  return Status::ok();
}

Result<std::unique_ptr<EgressClient>> EgressClient::create(const Options& options) {
  // ALPN: a server that speaks several protocols on one port picks HTTP/1.1 for us.
  auto tls = tls::makeClientContext({.ca_file = options.ca_file, .alpn = {"http/1.1"}});
  if (!tls) return tls.status();
  return std::unique_ptr<EgressClient>(std::make_unique<BeastEgressClient>(options, *tls));
}

}  // namespace trellis::kernel::services::egress
