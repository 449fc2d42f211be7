// One checked outbound connection, shared by egress HTTP (egress_client.cc) and byte streams
// (services/stream/): resolve, check every address against the Policy (checkAddress), dial
// only the addresses that passed — so DNS cannot rebind between check and use — and, for
// https:// and tls://, the TLS handshake that verifies the peer's chain and name. Resolve,
// connect and handshake together stay within the connect timeout.
//
//   auto conn = dial(url, policy, *tls_context, 5000ms, Clock::now() + 30s);
//   if (!conn) return conn.status();   // PERMISSION_DENIED / TIMEOUT / UNAVAILABLE
//   (*conn)->tcp().expires_after(10s);
//   error_code ec = (*conn)->run([&](auto h) { (*conn)->plain->async_write_some(b, h); });
#pragma once

#include <boost/asio/io_context.hpp>
#include <boost/asio/ip/address.hpp>
#include <boost/asio/ssl/context.hpp>
#include <boost/beast/core/flat_buffer.hpp>
#include <boost/beast/core/tcp_stream.hpp>
#include <boost/beast/ssl/ssl_stream.hpp>
#include <chrono>
#include <memory>
#include <optional>
#include <string>

#include "trellis/kernel/services/egress_policy.h"
#include "trellis/status.hpp"

namespace trellis::kernel::services::egress {

// A connection with its own small io_context, driven by the one thread that holds it: an
// operation is started and the context run until it completes. The stream's expiry
// (beast::tcp_stream) turns a missed deadline into a timeout error that closes the socket.
struct Connection {
  Connection(bool tls, boost::asio::ssl::context& ctx) {
    if (tls) {
      secure.emplace(io, ctx);
    } else {
      plain.emplace(io);
    }
  }
  boost::beast::tcp_stream& tcp() { return plain ? *plain : secure->next_layer(); }

  // Starts `init(handler)` and runs the context until the handler ran.
  template <typename Init>
  boost::system::error_code run(Init&& init) {
    boost::system::error_code result = boost::asio::error::would_block;
    init([&result](boost::system::error_code ec, auto&&...) { result = ec; });
    io.restart();
    io.run();
    return result;
  }

  boost::asio::io_context io;
  std::optional<boost::beast::tcp_stream> plain;
  // Written with http::async_write (egress HTTP) or asio::async_write of one buffer (streams),
  // never asio::async_write of a std::array of two buffers: once the first has gone out, asio
  // hands Beast's flat_stream an empty buffer and then the rest, flat_stream then writes
  // nothing if the rest is over one TLS record (16 KiB), and asio takes a write of nothing
  // for the end. The write succeeds with the second buffer unsent (Boost 1.74). Tests:
  // EgressTlsBodyTest, StreamTlsWriteTest.
  std::optional<boost::beast::ssl_stream<boost::beast::tcp_stream>> secure;
  boost::beast::flat_buffer buffer;  // bytes read ahead (HTTP)
  boost::asio::ip::address peer;     // the address dialled, checked against the policy
  std::chrono::steady_clock::time_point idle_since;  // in a keep-alive pool (HTTP)
};

// Resolves `url`'s host, dials the first allowed address that answers and, if url.tls(),
// completes the TLS handshake, all by min(deadline, now + connect_timeout).
// PERMISSION_DENIED (checkAddress) when no address may be dialled; TIMEOUT naming the connect
// timeout; UNAVAILABLE for resolution, connection and TLS failures (certificate problems
// named). Does not call checkDestination: the caller does, before.
Result<std::unique_ptr<Connection>> dial(const Url& url, const Policy& policy,
                                         boost::asio::ssl::context& tls,
                                         std::chrono::milliseconds connect_timeout,
                                         std::chrono::steady_clock::time_point deadline);

// "250 ms": how refusals name a timeout.
std::string describeMs(std::chrono::milliseconds d);

}  // namespace trellis::kernel::services::egress
