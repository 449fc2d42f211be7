#include "services/egress/dial.h"

#include <boost/asio/ip/tcp.hpp>
#include <boost/beast/core/error.hpp>
#include <vector>

#include "trellis/kernel/tls/client_context.h"

namespace trellis::kernel::services::egress {

namespace asio = boost::asio;
namespace beast = boost::beast;
using Clock = std::chrono::steady_clock;
using boost::system::error_code;

std::string describeMs(std::chrono::milliseconds d) {
  return std::to_string(d.count()) + " ms";
}

Result<std::unique_ptr<Connection>> dial(const Url& url, const Policy& policy,
                                         asio::ssl::context& tls,
                                         std::chrono::milliseconds connect_timeout,
                                         Clock::time_point deadline) {
  auto conn = std::make_unique<Connection>(url.tls(), tls);
  const Clock::time_point connect_by = std::min(deadline, Clock::now() + connect_timeout);
  std::vector<asio::ip::tcp::endpoint> endpoints;
  if (url.host_is_ip) {
    endpoints.emplace_back(asio::ip::make_address(url.host), url.port);
  } else {
    asio::ip::tcp::resolver resolver(conn->io);
    error_code ec;
    auto results = resolver.resolve(url.host, std::to_string(url.port),
                                    asio::ip::resolver_base::numeric_service, ec);
    if (ec) {
      return Status::unavailable("egress: cannot resolve " + url.host + ": " + ec.message());
    }
    for (const auto& r : results) endpoints.push_back(r.endpoint());
  }
  // Every address is checked; only the allowed ones are dialled.
  Status refused;
  std::vector<asio::ip::tcp::endpoint> allowed;
  for (const auto& ep : endpoints) {
    Status s = checkAddress(ep.address(), url, policy);
    if (s) {
      allowed.push_back(ep);
    } else if (refused.isOk()) {
      refused = s;
    }
  }
  if (allowed.empty()) {
    return refused.isOk() ? Status::unavailable("egress: " + url.host + " has no address")
                          : refused;
  }
  error_code ec = asio::error::host_unreachable;
  for (const auto& ep : allowed) {
    if (Clock::now() >= connect_by) break;
    conn->tcp().expires_at(connect_by);
    ec = conn->run([&](auto handler) { conn->tcp().async_connect(ep, std::move(handler)); });
    if (!ec) {
      conn->peer = ep.address();
      break;
    }
  }
  if (ec == beast::error::timeout || (ec && Clock::now() >= connect_by)) {
    return Status::timeout("egress: connecting to " + url.origin() +
                           " took over the connect timeout of " + describeMs(connect_timeout));
  }
  if (ec) {
    return Status::unavailable("egress: cannot connect to " + url.origin() + ": " + ec.message());
  }
  if (conn->secure) {
    SSL* ssl = conn->secure->native_handle();
    if (Status s = tls::prepareClientStream(ssl, url.host); !s) return s;
    conn->tcp().expires_at(connect_by);
    ec = conn->run([&](auto handler) {
      conn->secure->async_handshake(asio::ssl::stream_base::client, std::move(handler));
    });
    if (ec == beast::error::timeout) {
      return Status::timeout("egress: the TLS handshake with " + url.origin() +
                             " took over the connect timeout of " + describeMs(connect_timeout));
    }
    if (ec) {
      return Status::unavailable("egress: TLS with " + url.origin() +
                                 " failed: " + tls::describeHandshakeFailure(ssl, url.host, ec));
    }
  }
  return conn;
}

}  // namespace trellis::kernel::services::egress
