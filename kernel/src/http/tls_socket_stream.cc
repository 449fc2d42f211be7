#include "http/tls_socket_stream.h"

#include <openssl/err.h>

#include <boost/asio/ssl/error.hpp>
#include <boost/system/system_error.hpp>
#include <cerrno>

namespace trellis::kernel::http {
namespace {

namespace asio = boost::asio;
using ErrorCode = boost::system::error_code;

// Reads of what a peer sends after our close_notify, per turn of the event loop: a peer that
// keeps sending then waits behind the loop's other work instead of holding the thread.
constexpr int kDrainReadsPerTurn = 16;

[[noreturn]] void throwSslError(const char* what) {
  throw boost::system::system_error(
      ErrorCode(static_cast<int>(ERR_get_error()), asio::error::get_ssl_category()), what);
}

}  // namespace

TlsSocketStream::TlsSocketStream(asio::ip::tcp::socket socket, SSL_CTX* context)
    : ssl_(SSL_new(context)), socket_(std::move(socket)) {
  if (!ssl_) throwSslError("SSL_new");
  // OpenSSL's reads and writes come back with WANT_READ/WANT_WRITE rather than block the loop.
  socket_.non_blocking(true);
  if (SSL_set_fd(ssl_.get(), socket_.native_handle()) != 1) throwSslError("SSL_set_fd");
  // A write that had to wait is retried with the same bytes; the mode also lets them have
  // moved, which OpenSSL would otherwise refuse as a bad write retry.
  SSL_set_mode(ssl_.get(), SSL_MODE_ACCEPT_MOVING_WRITE_BUFFER);
  // SSL_MODE_RELEASE_BUFFERS stays off (a new SSL object does not have it; asio's stream set it
  // and the listener cleared it): OpenSSL would free its record buffers whenever they empty
  // and allocate them (~17 KiB each) again on the next SSL_read/SSL_write, two malloc/free
  // pairs of that size per keep-alive request. Keeping them costs ~34 KiB per open TLS
  // connection (see docs/operations.md).
  //
  // Read-ahead: OpenSSL reads as much as its buffer takes rather than a record's 5-byte header
  // and then its body, so a request costs one read(2), not two per record (asio's engine read
  // the socket into its own buffer in one go too). Bytes read ahead are no longer the socket's,
  // so waiting for readability is right only after SSL_read said WANT_READ: the only time an
  // operation here waits.
  SSL_set_read_ahead(ssl_.get(), 1);
  // A client that closes without close_notify (many do) ends the stream like one that sends
  // it; HTTP's framing tells whether anything was cut off. Without this OpenSSL 3 would
  // answer that end with a fatal alert, a write into a connection the client has left.
  SSL_set_options(ssl_.get(), SSL_OP_IGNORE_UNEXPECTED_EOF);
}

TlsSocketStream::~TlsSocketStream() = default;

// Every step first checks that the socket is open: once closed, its descriptor number may
// already belong to another connection, which OpenSSL must never read or write.

TlsSocketStream::Attempt TlsSocketStream::handshakeStep() {
  if (!socket_.is_open()) return done(asio::error::bad_descriptor);
  ERR_clear_error();  // the queue is the thread's, shared by every connection of the loop
  errno = 0;
  const int r = SSL_do_handshake(ssl_.get());
  if (r == 1) return done();
  return failure(r, errno);
}

TlsSocketStream::Attempt TlsSocketStream::readStep(const asio::mutable_buffer& buffer) {
  if (!socket_.is_open()) return done(asio::error::bad_descriptor);
  if (buffer.size() == 0) return done();
  ERR_clear_error();
  errno = 0;
  size_t n = 0;
  const int r = SSL_read_ex(ssl_.get(), buffer.data(), buffer.size(), &n);
  if (r == 1) return done({}, n);
  return failure(r, errno);
}

TlsSocketStream::Attempt TlsSocketStream::writeStep(const void* data, size_t size) {
  if (!socket_.is_open()) return done(asio::error::bad_descriptor);
  if (size == 0) return done();
  ERR_clear_error();
  errno = 0;
  size_t n = 0;
  // Without SSL_MODE_ENABLE_PARTIAL_WRITE a success means all `size` bytes went out.
  const int r = SSL_write_ex(ssl_.get(), data, size, &n);
  if (r == 1) return done({}, n);
  return failure(r, errno);
}

TlsSocketStream::Attempt TlsSocketStream::shutdownStep(bool& sent) {
  if (!socket_.is_open()) return done(asio::error::bad_descriptor);
  // After a fatal error there is no clean end to send (SSL_shutdown(3) must not be called).
  if (failed_) return done();
  if (!sent) {
    ERR_clear_error();
    errno = 0;
    const int r = SSL_shutdown(ssl_.get());
    if (r == 1) return done();  // the peer's close_notify had come already
    if (r < 0) return failure(r, errno);
    sent = true;
  }
  // Ours is out. What the client sent meanwhile is read and dropped, so that closing does
  // not turn unread bytes into a reset that destroys the response in flight.
  char sink[kRecordPayload];
  for (int i = 0; i < kDrainReadsPerTurn; ++i) {
    ERR_clear_error();
    errno = 0;
    size_t n = 0;
    const int r = SSL_read_ex(ssl_.get(), sink, sizeof sink, &n);
    if (r == 1) continue;
    Attempt a = failure(r, errno);
    if (a.ec == asio::error::eof) a.ec = {};  // its close_notify, or the connection's end
    return a;
  }
  return retry(Want::kTurn);
}

TlsSocketStream::Attempt TlsSocketStream::failure(int result, int sys_errno) {
  switch (SSL_get_error(ssl_.get(), result)) {
    case SSL_ERROR_WANT_READ: return retry(Want::kRead);
    case SSL_ERROR_WANT_WRITE: return retry(Want::kWrite);
    case SSL_ERROR_ZERO_RETURN: return done(asio::error::eof);  // the peer's close_notify
    case SSL_ERROR_SYSCALL: {
      failed_ = true;
      const unsigned long e = ERR_get_error();
      if (e != 0 && ERR_SYSTEM_ERROR(e)) {
        return done(ErrorCode(ERR_GET_REASON(e), boost::system::system_category()));
      }
      if (e != 0) return done(ErrorCode(static_cast<int>(e), asio::error::get_ssl_category()));
      // No errno: the connection ended without a close_notify.
      if (sys_errno == 0) return done(asio::error::eof);
      return done(ErrorCode(sys_errno, boost::system::system_category()));  // ECONNRESET, …
    }
    case SSL_ERROR_SSL: {
      failed_ = true;
      const unsigned long e = ERR_get_error();
      // OpenSSL 3's report of a connection that ended without a close_notify.
      if (ERR_GET_LIB(e) == ERR_LIB_SSL &&
          ERR_GET_REASON(e) == SSL_R_UNEXPECTED_EOF_WHILE_READING) {
        return done(asio::error::eof);
      }
      if (e == 0) return done(asio::ssl::error::unexpected_result);
      // As asio's stream reported it: tls::handshakeFailureReason reads OpenSSL's reason
      // (SSL_R_PEER_DID_NOT_RETURN_A_CERTIFICATE) from it.
      return done(ErrorCode(static_cast<int>(e), asio::error::get_ssl_category()));
    }
    default: return done(asio::ssl::error::unexpected_result);
  }
}

}  // namespace trellis::kernel::http
