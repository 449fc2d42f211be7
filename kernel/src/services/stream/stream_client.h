// Outbound TCP and TLS byte streams for plugins (ABI 1.2 stream_connect): the connection
// itself, without quotas or handles (stream_service.h adds those). A stream is dialled
// exactly like an egress HTTP request (egress/dial.h): checkDestination on the URL, then
// checkAddress on every resolved address, and only the addresses that passed are dialled;
// tls:// verifies the server's chain and name against the host's CA bundle. Every blocking
// step has a deadline, so a peer that never reads or never answers costs the caller at most
// the timeout, never a thread.
//
//   auto client = StreamClient::create({.ca_file = ""});             // the system store
//   auto s = (*client)->connect("tls://logs.example.com:6514", policy, {});
//   if (!s) return s.status();            // INVALID / PERMISSION_DENIED / TIMEOUT / UNAVAILABLE
//   (*s)->write("<134>1 2024-01-01T00:00:00Z host app - - - hello\n");
//   char buf[4096];
//   auto n = (*s)->read(buf, sizeof buf);  // 0 = the peer closed; TIMEOUT = nothing came
#pragma once

#include <chrono>
#include <memory>
#include <mutex>
#include <string>
#include <string_view>

#include "trellis/kernel/services/egress_policy.h"
#include "trellis/status.hpp"

namespace boost::asio::ssl {
class context;
}

namespace trellis::kernel::services::egress {
struct Connection;
}

namespace trellis::kernel::services::stream {

struct Timeouts {
  std::chrono::milliseconds connect{5000};  // resolve + TCP + TLS handshake
  std::chrono::milliseconds io{10000};      // each write (all its bytes) and each read
};

// One open stream. One operation at a time: a call waits for the one in progress at most
// its own io timeout (then TIMEOUT). Destroying it closes the socket; a TLS stream first
// sends close_notify, best effort, within kCloseNotifyTimeout (not on an event loop).
class Stream {
 public:
  static constexpr std::chrono::milliseconds kCloseNotifyTimeout{250};

  Stream(std::unique_ptr<egress::Connection> conn, egress::Url url, Timeouts timeouts);
  ~Stream();
  Stream(const Stream&) = delete;
  Stream& operator=(const Stream&) = delete;

  // Writes all of `bytes`. TIMEOUT past the io timeout, UNAVAILABLE if the peer closed or
  // reset; either way the stream is closed and later calls answer UNAVAILABLE. `*written`
  // (may be null): the bytes that went out, also on failure.
  Status write(std::string_view bytes, size_t* written = nullptr);
  // Waits up to the io timeout for bytes and copies up to `cap` (at least 1), or 0 once the
  // peer closed (a TLS peer closing without close_notify included). TIMEOUT if nothing
  // came in time: the stream stays usable. UNAVAILABLE for a reset or a failed stream.
  Result<size_t> read(char* buf, size_t cap);

  const egress::Url& url() const { return url_; }

 private:
  // Takes `lock` (on mu_) within the io timeout: TIMEOUT if another call holds it that
  // long, UNAVAILABLE once the stream has failed.
  Status claim(std::unique_lock<std::timed_mutex>& lock);
  Status failed(Status s);  // remembers `s` and closes the socket; with mu_ held

  std::unique_ptr<egress::Connection> conn_;
  const egress::Url url_;
  const Timeouts timeouts_;
  std::timed_mutex mu_;
  std::string failure_;  // why the stream is closed; empty while it is usable
  bool eof_ = false;
};

class StreamClient {
 public:
  struct Options {
    std::string ca_file;  // PEM bundle; empty = the system store
  };

  // INVALID naming ca_file if the bundle cannot be read.
  static Result<std::unique_ptr<StreamClient>> create(const Options& options);

  // INVALID for anything but tcp://host:port or tls://host:port; PERMISSION_DENIED naming
  // the rule or the address refused; TIMEOUT naming the connect timeout; UNAVAILABLE for
  // connection and TLS failures (certificate problems named).
  Result<std::unique_ptr<Stream>> connect(std::string_view url, const egress::Policy& policy,
                                          const Timeouts& timeouts);

 private:
  explicit StreamClient(std::shared_ptr<boost::asio::ssl::context> tls) : tls_(std::move(tls)) {}
  std::shared_ptr<boost::asio::ssl::context> tls_;
};

}  // namespace trellis::kernel::services::stream
