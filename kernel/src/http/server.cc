#include "trellis/kernel/http/server.h"

#include <pthread.h>
#include <signal.h>
#include <spdlog/spdlog.h>
#include <sys/socket.h>

#include <algorithm>
#include <array>
#include <atomic>
#include <boost/asio/executor_work_guard.hpp>
#include <boost/asio/io_context.hpp>
#include <boost/asio/ip/tcp.hpp>
#include <boost/asio/post.hpp>
#include <boost/asio/steady_timer.hpp>
#include <boost/asio/write.hpp>
#include <boost/beast/core/flat_buffer.hpp>
#include <boost/beast/http/error.hpp>
#include <cerrno>
#include <exception>
#include <functional>
#include <mutex>
#include <optional>
#include <thread>
#include <utility>
#include <vector>

#include "http/response_head.h"
#include "http/tls_socket_stream.h"
#include "trellis/kernel/exec/event_loop.h"
#include "trellis/kernel/http/problem.h"
#include "trellis/kernel/http/request_id.h"
#include "trellis/kernel/http/request_parser.h"
#include "trellis/kernel/tls/server_context.h"
#include "trellis/kernel/util/log_limiter.h"

namespace trellis::kernel::http {
namespace {

namespace asio = boost::asio;
namespace beast = boost::beast;
namespace bhttp = boost::beast::http;
using tcp = asio::ip::tcp;
using Clock = std::chrono::steady_clock;
using ErrorCode = boost::system::error_code;

constexpr size_t kReadChunk = 8 * 1024;
constexpr Clock::time_point kNever = Clock::time_point::max();
// After a final response with `Connection: close`, unread request bytes would turn our
// close into a RST that can destroy the response in flight; read and discard for a while.
constexpr std::chrono::milliseconds kMaxLinger{2'000};
constexpr std::string_view kContinue = "HTTP/1.1 100 Continue\r\n\r\n";

using ReusePort = asio::detail::socket_option::boolean<SOL_SOCKET, SO_REUSEPORT>;

// State every connection of a server shares. Connections keep it alive: a Respond may
// outlive the Server.
struct Shared {
  ServerOptions opts;
  std::shared_ptr<RequestHandler> handler;
  std::atomic<size_t> in_flight{0};
  std::atomic<size_t> connections{0};
  std::atomic<uint64_t> rejected{0};
  std::atomic<bool> draining{false};
  util::LogLimiter refused_certificates;  // their info lines; a flood writes a few
};

std::string formatEndpoint(const tcp::endpoint& ep) {
  std::string addr = ep.address().to_string();
  if (ep.address().is_v6()) addr = "[" + addr + "]";
  return addr + ":" + std::to_string(ep.port());
}

// The listener's own answers (malformed, too large, too slow, a handler that threw) carry a
// request id like the handler's answers do.
Response listenerProblem(unsigned status, std::string_view title, std::string_view detail,
                         const Request* req = nullptr) {
  std::string id = newRequestId();
  Response res = problem(status, title, detail, {{"request_id", id}}, req);
  res.set("X-Request-Id", id);
  return res;
}

// OpenSSL writes a TLS connection's socket with write(2), which raises SIGPIPE once the peer
// has gone (asio's own sends pass MSG_NOSIGNAL). trellisd ignores SIGPIPE (main.cc), and
// Poco's Foundation library happens to block it in the thread that loads it; the listener
// relies on neither. Blocked on its event-loop threads, the signal stays pending on the
// thread that caused it, and the write fails with EPIPE.
void blockSigpipe() {
  sigset_t set;
  sigemptyset(&set);
  sigaddset(&set, SIGPIPE);
  pthread_sigmask(SIG_BLOCK, &set, nullptr);
}

// Powers of two: a log line for the 1st, 2nd, 4th, … occurrence of a repeated event.
bool shouldLog(uint64_t count) {
  return (count & (count - 1)) == 0;
}

// What the worker needs of a connection, whatever it is carried over.
class SessionBase : public std::enable_shared_from_this<SessionBase> {
 public:
  virtual ~SessionBase() = default;
  virtual void drain() = 0;
  virtual void close() = 0;
};

// One event loop with its own acceptor. Everything but `post_mu`/`closed` is touched only
// by the loop's thread (or by the stopping thread once the loop has been joined).
struct Worker : std::enable_shared_from_this<Worker> {
  explicit Worker(std::shared_ptr<Shared> s)
      : shared(std::move(s)),
        ioc(1),
        acceptor(ioc),
        accept_retry(ioc),
        guard(asio::make_work_guard(ioc)) {}

  void accept();
  void onAccept(const ErrorCode& ec, tcp::socket socket);
  void beginDrain();
  void closeAll();
  // Any thread: runs `fn` on this loop (dropped once `closed`). Work arriving while earlier
  // work waits joins it, so a burst — every answer of one storage commit — wakes the loop
  // once instead of once per item.
  void postFromAnyThread(std::function<void()> fn) {
    std::lock_guard lock(post_mu);
    if (closed) return;
    inbox.push_back(std::move(fn));
    if (inbox.size() == 1) asio::post(ioc, [this] { runInbox(); });
  }
  void runInbox() {
    std::vector<std::function<void()>> work;
    {
      std::lock_guard lock(post_mu);
      work.swap(inbox);
    }
    for (auto& fn : work) fn();
  }

  std::shared_ptr<Shared> shared;
  asio::io_context ioc;
  tcp::acceptor acceptor;
  asio::steady_timer accept_retry;  // backs off while out of file descriptors
  asio::executor_work_guard<asio::io_context::executor_type> guard;
  std::thread thread;
  // Weak, so a connection never has to unregister (it may die on a pool thread).
  std::vector<std::weak_ptr<SessionBase>> sessions;
  size_t sweep_at = 64;
  // Respond calls from other threads post under this lock; once `closed`, they are
  // dropped so nothing is queued on a loop that will never run again.
  std::mutex post_mu;
  bool closed = false;
  std::vector<std::function<void()>> inbox;  // guarded by post_mu
};

// OpenSSL on the socket itself (see tls_socket_stream.h); a small response's head and body
// go out as one TLS record and one send.
using TlsStream = TlsSocketStream;

// One connection, plain (Stream = tcp::socket) or TLS (Stream = TlsStream).
template <class Stream>
class Session final : public SessionBase {
 public:
  static constexpr bool kTls = std::is_same_v<Stream, TlsStream>;

  Session(std::shared_ptr<Worker> worker, tcp::socket socket) requires(!kTls)
      : worker_(std::move(worker)),
        shared_(*worker_->shared),
        socket_(std::move(socket)),
        timer_(worker_->ioc),
        buffer_(std::max<size_t>(shared_.opts.max_header_bytes, 1) + kReadChunk) {}

  Session(std::shared_ptr<Worker> worker, tcp::socket socket,
          std::shared_ptr<tls::Generation> generation) requires kTls
      : worker_(std::move(worker)),
        shared_(*worker_->shared),
        generation_(std::move(generation)),
        socket_(std::move(socket), generation_->context().native_handle()),
        timer_(worker_->ioc),
        buffer_(std::max<size_t>(shared_.opts.max_header_bytes, 1) + kReadChunk) {}

  ~Session() override {
    // Normally closed on the loop; otherwise the last Respond was dropped uncalled.
    if (counted_) shared_.connections.fetch_sub(1, std::memory_order_relaxed);
    if (awaiting_) shared_.in_flight.fetch_sub(1, std::memory_order_relaxed);
  }

  Session(const Session&) = delete;
  Session& operator=(const Session&) = delete;

  void start() {
    peer_.post = [w = worker_](std::function<void()> fn) { w->postFromAnyThread(std::move(fn)); };
    ErrorCode ec;
    tcpSocket().set_option(tcp::no_delay(true), ec);
    auto remote = tcpSocket().remote_endpoint(ec);
    if (!ec) {
      peer_.address = remote.address().to_string();
      peer_.port = remote.port();
    }
    if constexpr (kTls) {
      peer_.tls = true;
      phase_ = Phase::kHandshake;
      setDeadline(Clock::now() + shared_.opts.tls->options().handshake_timeout);
      socket_.async_handshake(asio::ssl::stream_base::server,
                              [self = self()](const ErrorCode& ec) { self->onHandshake(ec); });
    } else {
      startRequest();
    }
  }

  // The server is draining: a connection between requests has nothing left to finish.
  void drain() override {
    if (phase_ == Phase::kIdle || phase_ == Phase::kHandshake) close();
  }

  void close() override {
    if (phase_ == Phase::kClosed) return;
    phase_ = Phase::kClosed;
    ErrorCode ec;
    tcpSocket().close(ec);
    timer_.cancel();
    if (counted_) {
      counted_ = false;
      shared_.connections.fetch_sub(1, std::memory_order_relaxed);
    }
  }

 private:
  enum class Phase { kHandshake, kIdle, kReading, kHandling, kWriting, kLingering, kClosed };

  std::shared_ptr<Session> self() { return std::static_pointer_cast<Session>(shared_from_this()); }

  tcp::socket& tcpSocket() {
    if constexpr (kTls) {
      return socket_.next_layer();
    } else {
      return socket_;
    }
  }

  // A failed handshake is the client's problem: the connection is closed. A refused client
  // certificate (untrusted issuer, expired, none sent when required) is logged at info with
  // the reason, since an operator rolling out mTLS needs to see it (a bounded number of lines
  // per window); the rest (wrong version, no shared cipher, garbage) at debug, so scanners
  // cannot flood the log.
  void onHandshake(const ErrorCode& ec) {
    if (phase_ == Phase::kClosed) return;
    if (ec) {
      bool client_certificate = false;
      std::string why = ec.message();
      if constexpr (kTls) {
        why = tls::handshakeFailureReason(socket_.native_handle(), ec, &client_certificate);
      }
      uint64_t left_out = 0;
      if (!client_certificate) {
        spdlog::debug("{} listener: TLS handshake with {}:{} failed: {}", shared_.opts.name,
                      peer_.address, peer_.port, why);
      } else if (shared_.refused_certificates.allow(&left_out)) {
        spdlog::info("{} listener: TLS handshake with {}:{} failed: {}{}", shared_.opts.name,
                     peer_.address, peer_.port, why, util::leftOut(left_out));
      }
      return close();
    }
    if constexpr (kTls) peer_.certificate = tls::peerIdentity(socket_.native_handle());
    startRequest();
  }

  // --- deadlines: one timer per connection, re-armed lazily ---------------------------
  // Moving the deadline later costs nothing; the timer wakes at the old expiry and sleeps
  // again. It is re-armed at once only when the deadline moves earlier.

  void setDeadline(Clock::time_point d) {
    deadline_ = d;
    if (d == kNever || (timer_armed_ && timer_expiry_ <= d)) return;
    armTimer(d);
  }

  void armTimer(Clock::time_point at) {
    timer_armed_ = true;
    timer_expiry_ = at;
    timer_.expires_at(at);  // a pending wait completes with a stale generation
    // Weak: a pending wait must not keep a connection alive whose Respond was dropped.
    timer_.async_wait([weak = weak_from_this(), gen = ++timer_gen_](const ErrorCode&) {
      if (auto self = weak.lock()) static_cast<Session&>(*self).onTimer(gen);
    });
  }

  void onTimer(uint64_t gen) {
    if (gen != timer_gen_ || phase_ == Phase::kClosed) return;
    timer_armed_ = false;
    if (deadline_ == kNever) return;
    if (Clock::now() < deadline_) return armTimer(deadline_);
    switch (phase_) {
      case Phase::kHandshake:  // a client stalling mid-handshake holds nothing longer
      case Phase::kIdle: return close();
      case Phase::kReading:
        // Part of a request arrived: cancel the pending read (or 100-continue write),
        // whose handler answers 408. The TLS stream's cancel also catches a retry between
        // two of its waits.
        timed_out_ = true;
        {
          ErrorCode ec;
          socket_.cancel(ec);
        }
        return;
      case Phase::kWriting:
      case Phase::kLingering: return close();
      case Phase::kHandling:
      case Phase::kClosed: return;
    }
  }

  // --- reading ----------------------------------------------------------------------

  void startRequest() {
    parser_.emplace(RequestLimits{shared_.opts.max_header_bytes, shared_.opts.max_body_bytes});
    timed_out_ = false;
    screened_ = false;
    continue_sent_ = false;
    if (buffer_.size() == 0) {
      if (shared_.draining.load(std::memory_order_relaxed)) return close();
      phase_ = Phase::kIdle;
      setDeadline(Clock::now() + shared_.opts.idle_timeout);
    } else {
      phase_ = Phase::kReading;  // pipelined bytes are already here
      setDeadline(Clock::now() + shared_.opts.read_timeout);
    }
    parseAndRead();
  }

  // Reads the header, lets the handler screen it, then reads the body: the parser returns
  // once the header is complete (Beast's eager mode is off), before it takes a body byte.
  void parseAndRead() {
    ErrorCode ec;
    while (buffer_.size() > 0 && !parser_->is_done()) {
      if (parser_->is_header_done() && !screened_ && !screen()) return;
      size_t used = parser_->put(buffer_.data(), ec);
      buffer_.consume(used);
      if (ec == bhttp::error::need_more) {
        ec = {};
        break;
      }
      if (ec) return rejectRequest(ec);
      if (used == 0) break;
    }
    if (parser_->is_done()) return onRequest();
    if (parser_->is_header_done() && !screened_ && !screen()) return;

    if (parser_->is_header_done() && !continue_sent_ && buffer_.size() == 0 && expectsContinue()) {
      continue_sent_ = true;
      asio::async_write(
          socket_, asio::buffer(kContinue.data(), kContinue.size()),
          [self = self()](const ErrorCode& ec, size_t) { self->onContinueWritten(ec); });
      return;
    }

    size_t room = buffer_.max_size() - buffer_.size();
    if (room == 0) {
      // Only an unterminated line can fill the buffer: the parser consumes bodies as
      // they come and reports an oversized header section itself.
      if (!parser_->is_header_done()) {
        return sendError(431, "Request Header Fields Too Large", "the request header is too large");
      }
      return sendError(400, "Bad Request", "a chunk header line is too long");
    }
    socket_.async_read_some(
        buffer_.prepare(std::min(room, kReadChunk)),
        [self = self()](const ErrorCode& ec, size_t n) { self->onRead(ec, n); });
  }

  // The handler's look at a header whose body is still to come; false if it refused the
  // request (the refusal is being written). Then the declared length meets the body limit,
  // so a client waiting for `100 Continue` hears 413 instead.
  bool screen() {
    screened_ = true;
    const Request& header = parser_->get();
    std::optional<Response> refusal;
    try {
      refusal = shared_.handler->screen(header, peer_);
    } catch (const std::exception& e) {
      spdlog::error("{} listener: request screen threw: {}", shared_.opts.name, e.what());
      refusal = listenerProblem(500, "Internal Server Error", "the request handler failed");
    } catch (...) {
      spdlog::error("{} listener: request screen threw a non-standard exception",
                    shared_.opts.name);
      refusal = listenerProblem(500, "Internal Server Error", "the request handler failed");
    }
    if (refusal) {
      res_ = std::move(*refusal);
      keep_alive_ = false;  // the unread body would be taken for the next request
      head_ = header.method() == bhttp::verb::head;
      version_ = header.version();
      finishAndWrite();
      return false;
    }
    auto declared = parser_->content_length();
    if (declared && *declared > shared_.opts.max_body_bytes) {
      rejectRequest(bhttp::error::body_limit);
      return false;
    }
    return true;
  }

  bool expectsContinue() const {
    const auto& req = parser_->get();
    if (req.version() < 11) return false;
    auto it = req.find(bhttp::field::expect);
    return it != req.end() && beast::iequals(it->value(), "100-continue");
  }

  void onContinueWritten(const ErrorCode& ec) {
    if (phase_ == Phase::kClosed) return;
    if (timed_out_) return sendTimeout();
    if (ec) return close();
    parseAndRead();
  }

  void onRead(const ErrorCode& ec, size_t n) {
    if (phase_ == Phase::kClosed) return;
    if (timed_out_) return sendTimeout();
    // EOF or reset: an idle client left, or gave up on a partial request.
    if (ec) return close();
    buffer_.commit(n);
    if (phase_ == Phase::kIdle) {
      phase_ = Phase::kReading;
      setDeadline(Clock::now() + shared_.opts.read_timeout);
    }
    parseAndRead();
  }

  void rejectRequest(const ErrorCode& ec) {
    if (ec == bhttp::error::header_limit) {
      return sendError(
          431, "Request Header Fields Too Large",
          "the request header exceeds " + std::to_string(shared_.opts.max_header_bytes) + " bytes");
    }
    if (ec == bhttp::error::body_limit) {
      return sendError(
          413, "Content Too Large",
          "the request body exceeds " + std::to_string(shared_.opts.max_body_bytes) + " bytes");
    }
    if (ec == bhttp::error::bad_version && isWellFormedVersion()) {
      return sendError(505, "HTTP Version Not Supported", "only HTTP/1.0 and HTTP/1.1 are served");
    }
    if (unsigned status = framingStatus(ec)) {
      return sendError(status, status == 501 ? "Not Implemented" : "Bad Request", ec.message());
    }
    sendError(400, "Bad Request", "malformed request: " + ec.message());
  }

  // Beast rejects every version but 1.0 and 1.1 alike; "HTTP/2.0" deserves a 505, not a 400.
  // A line with more than two spaces is malformed (a space in the target), not a version
  // problem. The parser consumes nothing of a failing request line, so it is in the buffer.
  bool isWellFormedVersion() const {
    auto data = buffer_.data();
    std::string_view pending(static_cast<const char*>(data.data()), data.size());
    std::string_view line = pending.substr(0, pending.find("\r\n"));
    if (line.size() < 9 || line.size() == pending.size()) return false;
    if (std::count(line.begin(), line.end(), ' ') != 2) return false;
    std::string_view v = line.substr(line.size() - 8);
    auto digit = [](char c) { return c >= '0' && c <= '9'; };
    return v.starts_with("HTTP/") && digit(v[5]) && v[6] == '.' && digit(v[7]) &&
           line[line.size() - 9] == ' ';
  }

  void sendTimeout() { sendError(408, "Request Timeout", "the request did not arrive in time"); }

  // A final error answer while reading; the connection closes after it.
  void sendError(unsigned status, std::string_view title, std::string_view detail) {
    res_ = listenerProblem(status, title, detail);
    keep_alive_ = false;
    head_ = false;
    version_ = 11;
    finishAndWrite();
  }

  // --- handling ---------------------------------------------------------------------

  void onRequest() {
    phase_ = Phase::kHandling;
    setDeadline(kNever);
    Request& req = parser_->get();
    keep_alive_ = req.keep_alive();
    head_ = req.method() == bhttp::verb::head;
    version_ = req.version();
    awaiting_ = true;
    uint64_t gen = ++request_gen_;
    shared_.in_flight.fetch_add(1, std::memory_order_relaxed);
    try {
      shared_.handler->handle(
          req, peer_, [self = self(), gen](Response res) { self->respond(gen, std::move(res)); });
    } catch (const std::exception& e) {
      spdlog::error("{} listener: request handler threw: {}", shared_.opts.name, e.what());
      deliver(gen,
              listenerProblem(500, "Internal Server Error", "the request handler failed", &req));
    } catch (...) {
      spdlog::error("{} listener: request handler threw a non-standard exception",
                    shared_.opts.name);
      deliver(gen,
              listenerProblem(500, "Internal Server Error", "the request handler failed", &req));
    }
  }

  // Any thread.
  void respond(uint64_t gen, Response res) {
    Worker& w = *worker_;
    if (w.ioc.get_executor().running_in_this_thread()) return deliver(gen, std::move(res));
    // Dropped once the server has stopped; ~Session settles the counters.
    w.postFromAnyThread([self = self(), gen, res = std::move(res)]() mutable {
      self->deliver(gen, std::move(res));
    });
  }

  void deliver(uint64_t gen, Response res) {
    // A second call, or the answer to a request already answered with a 500.
    if (!awaiting_ || gen != request_gen_) return;
    awaiting_ = false;
    shared_.in_flight.fetch_sub(1, std::memory_order_relaxed);
    if (phase_ == Phase::kClosed) return;
    res_ = std::move(res);
    keep_alive_ = keep_alive_ && res_.keep_alive();
    finishAndWrite();
  }

  // --- writing ----------------------------------------------------------------------

  void finishAndWrite() {
    if (shared_.draining.load(std::memory_order_relaxed)) keep_alive_ = false;
    res_.version(version_ == 10 ? 10 : 11);
    res_.keep_alive(keep_alive_);
    res_.erase(bhttp::field::server);  // ours goes last in the head, as set() would put it
    unsigned code = res_.result_int();
    if (code < 200 || code == 204 || code == 304) res_.body().clear();  // no body allowed
    if (head_) {
      // HEAD: the length of what GET would send, and no body.
      if (!res_.body().empty() || res_.find(bhttp::field::content_length) == res_.end()) {
        res_.prepare_payload();
      }
      res_.body().clear();
    } else {
      res_.prepare_payload();
    }
    phase_ = Phase::kWriting;
    setDeadline(Clock::now() + shared_.opts.read_timeout);
    head_text_.clear();
    appendResponseHead(res_, head_text_, "Server: trellis\r\n");
    // Head and body in one write: one send (writev) in plain HTTP, one TLS record when
    // small (TlsSocketStream joins buffers that fit in one).
    const std::array<asio::const_buffer, 2> wire{asio::buffer(head_text_),
                                                 asio::buffer(res_.body())};
    asio::async_write(socket_, wire,
                      [self = self()](const ErrorCode& ec, size_t) { self->onWritten(ec); });
  }

  void onWritten(const ErrorCode& ec) {
    if (phase_ == Phase::kClosed) return;
    if (head_text_.capacity() > kReadChunk) head_text_ = std::string();  // an unusual head
    res_ = Response();
    if (ec) return close();
    if (!keep_alive_) return linger();
    startRequest();
  }

  void linger() {
    phase_ = Phase::kLingering;
    setDeadline(Clock::now() + std::min(kMaxLinger, shared_.opts.read_timeout));
    if constexpr (kTls) {
      // close_notify, then whatever the client still sends is read and dropped until its
      // own close_notify, EOF or the deadline.
      socket_.async_shutdown([self = self()](const ErrorCode&) { self->close(); });
    } else {
      ErrorCode ec;
      socket_.shutdown(tcp::socket::shutdown_send, ec);
      if (ec) return close();
      discard();
    }
  }

  void discard() {
    buffer_.clear();
    socket_.async_read_some(buffer_.prepare(kReadChunk),
                            [self = self()](const ErrorCode& ec, size_t) {
                              if (self->phase_ == Phase::kClosed) return;
                              if (ec) return self->close();
                              self->discard();
                            });
  }

  // Declared first so it is destroyed last: the socket and timer need the io_context.
  std::shared_ptr<Worker> worker_;
  Shared& shared_;
  std::shared_ptr<tls::Generation> generation_;  // the certificates this connection started on
  Stream socket_;
  asio::steady_timer timer_;
  beast::flat_buffer buffer_;  // reused for every request on the connection
  std::optional<RequestParser> parser_;
  Response res_;
  std::string head_text_;  // the response head being written; its capacity is reused
  Peer peer_;

  Phase phase_ = Phase::kIdle;
  bool counted_ = true;  // holds one unit of Shared::connections
  bool keep_alive_ = false;
  bool head_ = false;
  bool timed_out_ = false;
  bool screened_ = false;  // the handler has seen this request's header (see screen())
  bool continue_sent_ = false;
  bool awaiting_ = false;  // handle() was called and the answer has not been delivered
  unsigned version_ = 11;
  uint64_t request_gen_ = 0;

  Clock::time_point deadline_ = kNever;
  Clock::time_point timer_expiry_ = kNever;
  bool timer_armed_ = false;
  uint64_t timer_gen_ = 0;
};

void Worker::accept() {
  acceptor.async_accept(
      [this](const ErrorCode& ec, tcp::socket socket) { onAccept(ec, std::move(socket)); });
}

void Worker::onAccept(const ErrorCode& ec, tcp::socket socket) {
  if (ec == asio::error::operation_aborted || !acceptor.is_open()) return;
  if (ec) {
    if (ec == asio::error::no_descriptors || ec == asio::error::no_buffer_space ||
        ec == asio::error::no_memory || ec.value() == ENFILE) {
      // Retrying at once would spin: the pending connection stays in the backlog.
      spdlog::error("{} listener: accept failed: {}", shared->opts.name, ec.message());
      accept_retry.expires_after(std::chrono::milliseconds(50));
      accept_retry.async_wait([this](const ErrorCode& e) {
        if (!e && acceptor.is_open()) accept();
      });
      return;
    }
    return accept();  // e.g. the client reset before we accepted
  }
  accept();

  ErrorCode ignored;
  if (shared->draining.load(std::memory_order_relaxed)) {
    socket.close(ignored);
    return;
  }
  if (shared->connections.fetch_add(1, std::memory_order_relaxed) >= shared->opts.max_connections) {
    shared->connections.fetch_sub(1, std::memory_order_relaxed);
    uint64_t n = shared->rejected.fetch_add(1, std::memory_order_relaxed) + 1;
    if (shouldLog(n)) {
      spdlog::warn("{} listener: max_connections ({}) reached; {} connection(s) refused so far",
                   shared->opts.name, shared->opts.max_connections, n);
    }
    socket.close(ignored);
    return;
  }
  if (sessions.size() >= sweep_at) {
    std::erase_if(sessions, [](const std::weak_ptr<SessionBase>& s) { return s.expired(); });
    sweep_at = std::max<size_t>(64, sessions.size() * 2);
  }
  if (shared->opts.tls) {
    auto session = std::make_shared<Session<TlsStream>>(shared_from_this(), std::move(socket),
                                                        shared->opts.tls->current());
    sessions.push_back(session);
    session->start();
  } else {
    auto session = std::make_shared<Session<tcp::socket>>(shared_from_this(), std::move(socket));
    sessions.push_back(session);
    session->start();
  }
}

void Worker::beginDrain() {
  ErrorCode ignored;
  acceptor.close(ignored);
  accept_retry.cancel();
  for (auto& weak : sessions) {
    if (auto s = weak.lock()) s->drain();
  }
}

void Worker::closeAll() {
  beginDrain();
  for (auto& weak : sessions) {
    if (auto s = weak.lock()) s->close();
  }
  sessions.clear();
}

}  // namespace

struct Server::Impl {
  std::shared_ptr<Shared> shared;
  std::vector<std::shared_ptr<Worker>> workers;
  uint16_t port = 0;
  std::mutex mu;  // start() and stop()
  bool started = false;
  bool stopped = false;

  Status bind();
  void shutdown(std::chrono::milliseconds drain);
};

Status Server::Impl::bind() {
  const ServerOptions& o = shared->opts;
  auto failure = [&](const std::string& where, const ErrorCode& ec) {
    return Status::unavailable("cannot listen on " + where + ": " + ec.message());
  };
  std::string where = o.host + ":" + std::to_string(o.port);

  ErrorCode ec;
  auto address = asio::ip::make_address(o.host, ec);
  if (ec) {
    asio::io_context resolver_ioc;
    tcp::resolver resolver(resolver_ioc);
    auto results = resolver.resolve(o.host, std::to_string(o.port),
                                    tcp::resolver::passive | tcp::resolver::address_configured, ec);
    if (ec) return failure(where, ec);
    if (results.empty()) return failure(where, asio::error::host_not_found);
    address = results.begin()->endpoint().address();
  }
  tcp::endpoint ep(address, o.port);

  // SO_REUSEPORT would let us share the port with another process that also sets it (a
  // second trellisd), silently splitting traffic. A probe bound without it fails if anyone
  // listens there, and picks the port when 0 was asked for.
  {
    tcp::acceptor probe(workers.front()->ioc);
    probe.open(ep.protocol(), ec);
    if (!ec) probe.set_option(tcp::acceptor::reuse_address(true), ec);
    if (!ec) probe.bind(ep, ec);
    if (!ec) ep.port(probe.local_endpoint(ec).port());
    if (ec) return failure(formatEndpoint(ep), ec);
  }

  for (auto& w : workers) {
    auto& a = w->acceptor;
    a.open(ep.protocol(), ec);
    if (!ec) a.set_option(tcp::acceptor::reuse_address(true), ec);
    if (!ec) a.set_option(ReusePort(true), ec);
    if (!ec) a.bind(ep, ec);
    if (!ec) a.listen(asio::socket_base::max_listen_connections, ec);
    if (ec) {
      ErrorCode ignored;
      for (auto& other : workers) other->acceptor.close(ignored);
      return failure(formatEndpoint(ep), ec);
    }
  }
  port = ep.port();
  return Status::ok();
}

void Server::Impl::shutdown(std::chrono::milliseconds drain) {
  std::lock_guard lock(mu);
  if (!started || stopped) return;
  stopped = true;

  shared->draining.store(true);
  for (auto& w : workers) asio::post(w->ioc, [w = w.get()] { w->beginDrain(); });
  auto deadline = Clock::now() + drain;
  while (Clock::now() < deadline && shared->connections.load() > 0) {
    std::this_thread::sleep_for(std::chrono::milliseconds(5));
  }
  for (auto& w : workers) {
    asio::post(w->ioc, [w = w.get()] {
      w->closeAll();
      w->guard.reset();
      w->ioc.stop();
    });
  }
  for (auto& w : workers) {
    if (w->thread.joinable()) w->thread.join();
  }
  // Run what the loops left queued (aborted operations, late answers) on this thread, so
  // queued handlers release their connections; later answers are dropped.
  for (auto& w : workers) {
    {
      std::lock_guard post_lock(w->post_mu);
      w->closed = true;
    }
    w->ioc.restart();
    w->ioc.poll();
  }
  // Nothing calls the handler any more. A late answer's closure on another thread still
  // holds its connection, and through it this state: it must not also hold the handler, or
  // the handler (with the pool that thread belongs to) could be destroyed on that thread.
  shared->handler.reset();
}

Server::Server(ServerOptions options, std::shared_ptr<RequestHandler> handler)
    : impl_(std::make_unique<Impl>()) {
  impl_->shared = std::make_shared<Shared>();
  impl_->shared->opts = std::move(options);
  impl_->shared->handler = std::move(handler);
}

Server::~Server() {
  stop(std::chrono::milliseconds(0));
}

Status Server::start() {
  std::lock_guard lock(impl_->mu);
  if (impl_->started || impl_->stopped) return Status::invalid("server already started");
  if (!impl_->shared->handler) return Status::invalid("server has no request handler");
  const ServerOptions& o = impl_->shared->opts;
  unsigned threads = o.threads ? o.threads : std::max(1u, std::thread::hardware_concurrency());
  impl_->workers.clear();
  for (unsigned i = 0; i < threads; ++i) {
    impl_->workers.push_back(std::make_shared<Worker>(impl_->shared));
  }
  if (Status s = impl_->bind(); !s) {
    impl_->workers.clear();
    return s;
  }
  for (unsigned i = 0; i < threads; ++i) {
    auto* w = impl_->workers[i].get();
    w->accept();
    w->thread = std::thread([w, name = o.name] {
      exec::markEventLoopThread(&w->ioc);
      blockSigpipe();
      while (true) {
        try {
          w->ioc.run();
          return;
        } catch (const std::exception& e) {
          spdlog::error("{} listener: event loop: {}", name, e.what());
        }
      }
    });
    std::string thread_name = (o.name + "-io-" + std::to_string(i)).substr(0, 15);
    pthread_setname_np(w->thread.native_handle(), thread_name.c_str());
  }
  impl_->started = true;
  spdlog::info("{} listener on {}:{} ({} threads)", o.name, o.host, impl_->port, threads);
  return Status::ok();
}

uint16_t Server::port() const {
  return impl_->port;
}

void Server::stop(std::chrono::milliseconds drain) {
  impl_->shutdown(drain);
}

size_t Server::inFlight() const {
  return impl_->shared->in_flight.load();
}

}  // namespace trellis::kernel::http
