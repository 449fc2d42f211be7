// The HTTP/1.1 listener: Boost.Beast on Boost.Asio, one io_context per thread, each with
// its own SO_REUSEPORT acceptor on the same port, so the kernel balances connections and
// no lock is shared between threads on the hot path.
//
//   ServerOptions opts{.host = "127.0.0.1", .port = 8080, .threads = 2};
//   Server server(opts, handler);
//   if (auto s = server.start(); !s) die(s.toString());
//   ...
//   server.stop(std::chrono::seconds(10));  // drains in-flight requests
#pragma once

#include <chrono>
#include <cstddef>
#include <cstdint>
#include <memory>
#include <string>

#include "trellis/kernel/http/message.h"
#include "trellis/status.hpp"

namespace trellis::kernel::tls {
class ServerContext;
}

namespace trellis::kernel::http {

struct ServerOptions {
  std::string name = "data";  // for logs: "data" or "admin"
  std::string host = "127.0.0.1";
  uint16_t port = 8080;                 // 0 = any free port; see Server::port()
  unsigned threads = 0;                 // 0 = one per core
  size_t max_header_bytes = 16 * 1024;  // larger: 431
  size_t max_body_bytes = 1024 * 1024;  // larger: 413
  // A whole request must arrive in this (408 once part of it came), and writing a
  // response must finish in it.
  std::chrono::milliseconds read_timeout{10'000};
  std::chrono::milliseconds idle_timeout{60'000};  // keep-alive connection with no request
  size_t max_connections = 10'000;                 // further accepts are closed at once
  // Set: every connection is TLS, with the context's current certificates at accept time
  // and its handshake_timeout. Null: plain HTTP.
  std::shared_ptr<tls::ServerContext> tls;
};

class Server {
 public:
  Server(ServerOptions options, std::shared_ptr<RequestHandler> handler);
  ~Server();  // stops without draining if still running
  Server(const Server&) = delete;
  Server& operator=(const Server&) = delete;

  // Binds and starts the threads. Fails (e.g. address in use) with a message naming
  // the address.
  Status start();
  // The bound port (useful when options.port was 0). Valid after start().
  uint16_t port() const;
  // Stops accepting, lets in-flight requests finish for up to `drain` (their responses
  // close the connection), closes idle keep-alive connections, then joins the threads.
  // Idempotent. Must not be called from a handler on the server's own threads. Responds
  // arriving after stop() are dropped.
  void stop(std::chrono::milliseconds drain);
  // Requests read but not yet answered.
  size_t inFlight() const;

 private:
  struct Impl;
  std::unique_ptr<Impl> impl_;
};

}  // namespace trellis::kernel::http
