// A server-side TLS stream on which OpenSSL reads and writes the socket itself (SSL_set_fd on
// the non-blocking socket), for the listeners' connections. Asio's ssl::stream runs OpenSSL
// over a BIO pair: each record is copied between the socket, the pair and the engine's
// buffers, and each read and write goes through the engine's state machine, about 4% of
// trellisd's CPU under TLS keep-alive load. Here an operation calls SSL_* and, when OpenSSL
// wants the socket readable or writable, waits for that (async_wait) and calls again.
//
// It offers what http::Server's sessions use of a stream: one operation of a kind at a time
// (a read and a write may be pending together); handlers run on the socket's executor (an
// executor of their own is not consulted: the listener's have none), never from within the
// initiating call.
//
//   TlsSocketStream tls(std::move(socket), generation->context().native_handle());
//   tls.async_handshake(ssl::stream_base::server, [](const error_code& ec) {});
//   tls.async_read_some(buffer, [](const error_code& ec, size_t n) {});  // eof at the end
//   asio::async_write(tls, std::array{head, body}, [](const error_code& ec, size_t n) {});
//   tls.async_shutdown([](const error_code& ec) {});  // close_notify
//   tls.next_layer().close(ec);  // what waits completes with operation_aborted
#pragma once

#include <openssl/ssl.h>

#include <boost/asio/buffer.hpp>
#include <boost/asio/error.hpp>
#include <boost/asio/ip/tcp.hpp>
#include <boost/asio/post.hpp>
#include <boost/asio/ssl/stream_base.hpp>
#include <boost/system/error_code.hpp>
#include <cstddef>
#include <cstdint>
#include <memory>
#include <string>
#include <type_traits>
#include <utility>

namespace trellis::kernel::http {

// The public names are asio's (a stream's, ssl::stream's): Session<Stream> calls them on
// either stream, and asio::async_write needs get_executor and async_write_some.
// NOLINTBEGIN(readability-identifier-naming)
class TlsSocketStream {
 public:
  using executor_type = boost::asio::ip::tcp::socket::executor_type;
  using ErrorCode = boost::system::error_code;
  static constexpr size_t kRecordPayload = SSL3_RT_MAX_PLAIN_LENGTH;  // 16 KiB

  // Takes the accepted socket and binds a new SSL object of `context` to its descriptor.
  // Throws boost::system::system_error if OpenSSL cannot make one (out of memory), as
  // asio's stream did.
  TlsSocketStream(boost::asio::ip::tcp::socket socket, SSL_CTX* context);
  ~TlsSocketStream();
  // Operations in flight hold `this`.
  TlsSocketStream(const TlsSocketStream&) = delete;
  TlsSocketStream& operator=(const TlsSocketStream&) = delete;

  executor_type get_executor() { return socket_.get_executor(); }
  boost::asio::ip::tcp::socket& next_layer() { return socket_; }
  SSL* native_handle() { return ssl_.get(); }

  // Aborts the operations in flight: each completes with operation_aborted, also one whose
  // wait has just finished but whose retry has not run yet (the socket's cancel alone would
  // miss it, and its next wait would not end with the session's deadline).
  void cancel(ErrorCode& ec) {
    ++cancels_;
    socket_.cancel(ec);
  }

  template <class Handler>  // void(const ErrorCode&)
  void async_handshake(boost::asio::ssl::stream_base::handshake_type type, Handler&& handler) {
    if (type == boost::asio::ssl::stream_base::server) {
      SSL_set_accept_state(ssl_.get());
    } else {
      SSL_set_connect_state(ssl_.get());
    }
    run([this] { return handshakeStep(); }, withoutSize(std::forward<Handler>(handler)));
  }

  // Reads what one SSL_read gives (at most one record's worth). A close_notify from the
  // peer, or its end of the connection without one, completes with asio::error::eof:
  // the HTTP framing above knows whether anything was cut off.
  template <class Handler>  // void(const ErrorCode&, size_t)
  void async_read_some(const boost::asio::mutable_buffer& buffer, Handler&& handler) {
    run([this, buffer] { return readStep(buffer); }, std::forward<Handler>(handler));
  }

  // Writes all of the buffers joined, as one TLS record and one send, when they fit in one
  // record; else only the first non-empty buffer (asio::async_write comes back for the
  // rest). So a response's head and small body go out together; a large one's head goes
  // alone, then the body in full records.
  template <class ConstBufferSequence, class Handler>  // void(const ErrorCode&, size_t)
  void async_write_some(const ConstBufferSequence& buffers, Handler&& handler) {
    const void* data = nullptr;
    size_t size = 0;
    size_t total = 0;
    size_t pieces = 0;
    for (auto it = boost::asio::buffer_sequence_begin(buffers);
         it != boost::asio::buffer_sequence_end(buffers); ++it) {
      const boost::asio::const_buffer piece(*it);
      if (piece.size() == 0) continue;
      if (pieces++ == 0) {
        data = piece.data();
        size = piece.size();
      }
      total += piece.size();
    }
    if (pieces > 1 && total <= kRecordPayload) {
      scratch_.clear();  // keeps its capacity from the connection's earlier responses
      for (auto it = boost::asio::buffer_sequence_begin(buffers);
           it != boost::asio::buffer_sequence_end(buffers); ++it) {
        const boost::asio::const_buffer piece(*it);
        scratch_.append(static_cast<const char*>(piece.data()), piece.size());
      }
      data = scratch_.data();
      size = total;
    }
    run([this, data, size] { return writeStep(data, size); }, std::forward<Handler>(handler));
  }

  // Sends close_notify, then reads and drops what the peer still sends until its own
  // close_notify or the end of the connection.
  template <class Handler>  // void(const ErrorCode&)
  void async_shutdown(Handler&& handler) {
    run([this, sent = false]() mutable { return shutdownStep(sent); },
        withoutSize(std::forward<Handler>(handler)));
  }

 private:
  // What an attempt at an SSL call came to: done (with `ec` and `bytes`), or a retry once
  // the socket is readable or writable, or right after other handlers had their turn.
  enum class Want { kNothing, kRead, kWrite, kTurn };
  struct Attempt {
    Want want = Want::kNothing;
    ErrorCode ec;
    size_t bytes = 0;
  };
  static Attempt done(ErrorCode ec = {}, size_t bytes = 0) { return {Want::kNothing, ec, bytes}; }
  static Attempt retry(Want want) { return {want, {}, 0}; }

  Attempt handshakeStep();
  Attempt readStep(const boost::asio::mutable_buffer& buffer);
  Attempt writeStep(const void* data, size_t size);
  Attempt shutdownStep(bool& sent);
  // The attempt after an SSL call returned `result` (<= 0); `sys_errno` is errno right after.
  Attempt failure(int result, int sys_errno);

  template <class Handler>
  static auto withoutSize(Handler&& handler) {
    return [h = std::forward<Handler>(handler)](const ErrorCode& ec, size_t) mutable { h(ec); };
  }

  // An operation between two attempts: its step, its handler, and the cancel() count when
  // it started. Called as the completion of a wait (or a posted turn).
  template <class Step, class Handler>
  struct Op {
    TlsSocketStream* stream;
    uint64_t cancels;
    Step step;
    Handler handler;

    void operator()(const ErrorCode& waited) {
      if (waited || cancels != stream->cancels_) {
        return handler(waited ? waited : ErrorCode(boost::asio::error::operation_aborted),
                       size_t{0});
      }
      Attempt a = step();
      if (a.want == Want::kNothing) return handler(a.ec, a.bytes);
      TlsSocketStream* s = stream;
      s->await(a.want, std::move(*this));
    }
  };

  template <class Step, class Handler>
  void run(Step step, Handler&& handler) {
    Attempt a = step();
    if (a.want == Want::kNothing) {
      boost::asio::post(socket_.get_executor(),
                        [h = std::forward<Handler>(handler), a]() mutable { h(a.ec, a.bytes); });
      return;
    }
    await(a.want, Op<Step, std::decay_t<Handler>>{this, cancels_, std::move(step),
                                                  std::forward<Handler>(handler)});
  }

  template <class Step, class Handler>
  void await(Want want, Op<Step, Handler>&& op) {
    using tcp = boost::asio::ip::tcp;
    switch (want) {
      case Want::kRead: return socket_.async_wait(tcp::socket::wait_read, std::move(op));
      case Want::kWrite: return socket_.async_wait(tcp::socket::wait_write, std::move(op));
      case Want::kTurn:
      case Want::kNothing:
        boost::asio::post(socket_.get_executor(),
                          [op = std::move(op)]() mutable { op(ErrorCode()); });
        return;
    }
  }

  struct SslFree {
    void operator()(SSL* ssl) const { SSL_free(ssl); }
  };
  // Declared before the socket, so destroyed after it: the descriptor is closed before the
  // SSL object (whose BIO does not own it) is freed.
  std::unique_ptr<SSL, SslFree> ssl_;
  boost::asio::ip::tcp::socket socket_;
  std::string scratch_;   // a response's head and body joined into one record
  uint64_t cancels_ = 0;  // cancel() calls so far
  bool failed_ = false;   // a fatal TLS error happened: no close_notify may follow
};
// NOLINTEND(readability-identifier-naming)

}  // namespace trellis::kernel::http
