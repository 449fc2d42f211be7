// Streams on the egress Connection (one io_context per stream, run by the calling thread).
// Writes use the stream's expiry, which closes the socket when it fires: a write cut short
// leaves the peer with a partial message, so the stream must not be used again. Reads use a
// timer that only cancels the read, so a read that times out leaves the stream usable (a
// client may poll for what a server sends now and then).
#include "services/stream/stream_client.h"

#include <boost/asio/steady_timer.hpp>
#include <boost/asio/write.hpp>
#include <boost/beast/core/error.hpp>

#include "services/egress/dial.h"
#include "trellis/kernel/exec/event_loop.h"
#include "trellis/kernel/tls/client_context.h"

namespace trellis::kernel::services::stream {
namespace {

namespace asio = boost::asio;
namespace beast = boost::beast;
using boost::system::error_code;
using Clock = std::chrono::steady_clock;

// Starts `init(handler)` and runs the connection's context until the handler ran; the
// handler's byte count goes to *n.
template <typename Init>
error_code runIo(egress::Connection& c, size_t* n, Init&& init) {
  error_code result = asio::error::would_block;
  init([&result, n](error_code ec, size_t bytes) {
    result = ec;
    *n = bytes;
  });
  c.io.restart();
  c.io.run();
  return result;
}

bool isEndOfStream(const error_code& ec) {
  return ec == asio::error::eof || ec == asio::ssl::error::stream_truncated;
}

}  // namespace

Stream::Stream(std::unique_ptr<egress::Connection> conn, egress::Url url, Timeouts timeouts)
    : conn_(std::move(conn)), url_(std::move(url)), timeouts_(timeouts) {
  conn_->tcp().expires_never();
}

Stream::~Stream() {
  error_code ec;
  if (conn_->secure && failure_.empty() && !exec::onEventLoopThread()) {
    // Our close_notify only: marking the peer's as received keeps SSL_shutdown from waiting
    // for an answer the peer may never send.
    SSL* ssl = conn_->secure->native_handle();
    SSL_set_shutdown(ssl, SSL_get_shutdown(ssl) | SSL_RECEIVED_SHUTDOWN);
    conn_->tcp().expires_after(kCloseNotifyTimeout);
    conn_->run([&](auto handler) { conn_->secure->async_shutdown(std::move(handler)); });
  }
  conn_->tcp().socket().shutdown(asio::ip::tcp::socket::shutdown_both, ec);
  conn_->tcp().socket().close(ec);
}

Status Stream::failed(Status s) {
  failure_ = s.message();
  error_code ec;
  conn_->tcp().socket().close(ec);
  return s;
}

Status Stream::claim(std::unique_lock<std::timed_mutex>& lock) {
  if (!lock.try_lock_for(timeouts_.io)) {
    return Status::timeout("stream: " + url_.origin() +
                           " was busy with another call for the io timeout of " +
                           egress::describeMs(timeouts_.io));
  }
  if (!failure_.empty()) {
    return Status::unavailable("stream: " + url_.origin() + " is closed (" + failure_ + ")");
  }
  return Status::ok();
}

Status Stream::write(std::string_view bytes, size_t* written) {
  size_t n = 0;
  if (written) *written = 0;
  std::unique_lock lock(mu_, std::defer_lock);
  if (Status s = claim(lock); !s) return s;
  if (bytes.empty()) return Status::ok();
  conn_->tcp().expires_after(timeouts_.io);
  error_code ec = runIo(*conn_, &n, [&](auto handler) {
    if (conn_->secure) {
      asio::async_write(*conn_->secure, asio::buffer(bytes.data(), bytes.size()),
                        std::move(handler));
    } else {
      asio::async_write(*conn_->plain, asio::buffer(bytes.data(), bytes.size()),
                        std::move(handler));
    }
  });
  conn_->tcp().expires_never();
  if (written) *written = n;
  if (ec == beast::error::timeout) {
    return failed(Status::timeout("stream: writing " + std::to_string(bytes.size()) + " bytes to " +
                                  url_.origin() + " took over the io timeout of " +
                                  egress::describeMs(timeouts_.io) + " (" + std::to_string(n) +
                                  " went out); the stream is closed"));
  }
  if (ec) {
    return failed(Status::unavailable("stream: " + url_.origin() +
                                      " closed or failed while writing: " + ec.message()));
  }
  return Status::ok();
}

Result<size_t> Stream::read(char* buf, size_t cap) {
  std::unique_lock lock(mu_, std::defer_lock);
  if (Status s = claim(lock); !s) return s;
  if (eof_ || cap == 0) return size_t{0};
  bool timed_out = false;
  asio::steady_timer timer(conn_->io);
  timer.expires_after(timeouts_.io);
  timer.async_wait([&](error_code ec) {
    if (ec) return;
    timed_out = true;
    conn_->tcp().cancel();  // cancels the read; the socket stays open
  });
  size_t n = 0;
  error_code ec = runIo(*conn_, &n, [&](auto handler) {
    auto done = [&timer, h = std::move(handler)](error_code e, size_t bytes) mutable {
      timer.cancel();
      h(e, bytes);
    };
    if (conn_->secure) {
      conn_->secure->async_read_some(asio::buffer(buf, cap), std::move(done));
    } else {
      conn_->plain->async_read_some(asio::buffer(buf, cap), std::move(done));
    }
  });
  if (!ec) return n;  // bytes that came as the timer fired still count
  if (isEndOfStream(ec)) {
    eof_ = true;
    return size_t{0};
  }
  if (timed_out && ec == asio::error::operation_aborted) {
    return Status::timeout("stream: " + url_.origin() + " sent nothing within the io timeout of " +
                           egress::describeMs(timeouts_.io));
  }
  return failed(
      Status::unavailable("stream: " + url_.origin() + " failed while reading: " + ec.message()));
}

Result<std::unique_ptr<StreamClient>> StreamClient::create(const Options& options) {
  auto tls = tls::makeClientContext({.ca_file = options.ca_file});
  if (!tls) return tls.status();
  return std::unique_ptr<StreamClient>(new StreamClient(std::move(*tls)));
}

Result<std::unique_ptr<Stream>> StreamClient::connect(std::string_view text,
                                                      const egress::Policy& policy,
                                                      const Timeouts& timeouts) {
  auto url = egress::parseUrl(text);
  if (!url) return url.status();
  if (!url->stream()) {
    return Status::invalid("url: stream_connect takes tcp://host:port or tls://host:port, not " +
                           url->scheme + "://");
  }
  if (Status s = egress::checkDestination(*url, policy); !s) return s;
  auto conn = egress::dial(*url, policy, *tls_, timeouts.connect, Clock::now() + timeouts.connect);
  if (!conn) return conn.status();
  return std::make_unique<Stream>(std::move(*conn), std::move(*url), timeouts);
}

}  // namespace trellis::kernel::services::stream
