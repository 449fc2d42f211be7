// HTTP message types shared by the listener, the router and the plugin bridge.
//
// The kernel uses Boost.Beast's message types directly so a request is parsed once and
// never copied between the socket and the plugin.
#pragma once

#include <boost/beast/http/message.hpp>
#include <boost/beast/http/string_body.hpp>
#include <functional>
#include <memory>
#include <optional>
#include <string>

#include "trellis/kernel/tls/server_options.h"

namespace trellis::kernel::http {

using Request = boost::beast::http::request<boost::beast::http::string_body>;
using Response = boost::beast::http::response<boost::beast::http::string_body>;

// Who is on the other end of the connection.
struct Peer {
  std::string address;  // "127.0.0.1"
  uint16_t port = 0;
  bool tls = false;  // the connection is TLS
  // The client certificate the listener verified (mTLS), or null: none asked for, none sent.
  std::shared_ptr<const tls::PeerIdentity> certificate;
  // Runs a function on the connection's event loop, from any thread (how work finished
  // elsewhere resumes a request there). Dropped, unrun, once the server has stopped.
  std::function<void(std::function<void()>)> post;
};

// Completes one exchange. May be called from any thread, exactly once.
using Respond = std::function<void(Response)>;

// Answers requests for a Server. handle() runs on an event-loop thread and must not
// block: slow work goes to a BlockingPool and calls `respond` from there. The request and
// the peer stay alive and untouched by the server until `respond` is called.
class RequestHandler {
 public:
  virtual ~RequestHandler() = default;
  // Called on the event loop once the header of a request whose body is still to come has
  // arrived, before any byte of that body is read or `100 Continue` is sent (requests without
  // a body go straight to handle()). A response refuses the request: it is sent, the body is
  // never read, and the connection closes. So an unauthenticated client cannot make the host
  // buffer bodies. The default admits every request.
  virtual std::optional<Response> screen(const Request& header, const Peer& peer) {
    (void)header;
    (void)peer;
    return std::nullopt;
  }
  virtual void handle(Request& req, const Peer& peer, Respond respond) = 0;
};

}  // namespace trellis::kernel::http
