// TLS for the listeners: the SSL_CTX set-up (TLS 1.2/1.3, AEAD suites, ALPN http/1.1, SNI
// across several certificates, session resumption, client-certificate verification) and its
// reload. Each load builds a new Generation; new handshakes take the current one, and a
// connection keeps the generation it started with, so a reload never touches a live
// connection. A load that fails (missing file, key not matching its certificate, bad CA)
// leaves the current generation in place and says why.
//
//   auto ctx = tls::ServerContext::create(options, "data");   // INVALID with the reason
//   if (!ctx) die(ctx.status());
//   (*ctx)->watch();                       // polls the files every options.reload_check
//   auto gen = (*ctx)->current();          // per accepted connection
//   boost::asio::ssl::stream<tcp::socket> s(std::move(socket), gen->context());
//   ...
//   (*ctx)->reload();                      // SIGHUP
#pragma once

#include <openssl/ssl.h>

#include <atomic>
#include <boost/asio/ssl/context.hpp>
#include <boost/system/error_code.hpp>
#include <condition_variable>
#include <memory>
#include <mutex>
#include <string>
#include <thread>
#include <vector>

#include "trellis/kernel/tls/server_options.h"
#include "trellis/status.hpp"

namespace trellis::kernel::tls {

// The SSL contexts of one load: the default certificate's (handshakes start on it) and one
// per further certificate, switched to by the SNI callback. Thread-safe to share.
class Generation {
 public:
  struct Entry;
  Generation();
  ~Generation();
  Generation(const Generation&) = delete;
  Generation& operator=(const Generation&) = delete;

  boost::asio::ssl::context& context();  // the default certificate's
  uint64_t number() const { return number_; }

 private:
  friend class ServerContext;
  std::vector<std::unique_ptr<Entry>> entries_;  // [0] is the default
  uint64_t number_ = 0;
};

class ServerContext {
 public:
  // `name` ("data", "admin") prefixes log lines and error messages.
  static Result<std::shared_ptr<ServerContext>> create(ServerTlsOptions options, std::string name);
  ~ServerContext();  // stops watching
  ServerContext(const ServerContext&) = delete;
  ServerContext& operator=(const ServerContext&) = delete;

  std::shared_ptr<Generation> current() const;
  const ServerTlsOptions& options() const { return options_; }

  // Loads the files again and swaps the new generation in; on failure keeps the current
  // one and returns (and logs) why. Safe from any thread.
  Status reload();
  // Starts a thread that reloads when a file's mtime, size or inode changes. A failed
  // reload is retried only after the files change again. No-op if reload_check is 0.
  void watch();

 private:
  ServerContext(ServerTlsOptions options, std::string name);
  Result<std::shared_ptr<Generation>> load(const Generation* previous);
  std::string fingerprintFiles() const;
  void watchLoop();

  ServerTlsOptions options_;
  std::string name_;
  std::mutex reload_mu_;                 // one load at a time
  std::shared_ptr<Generation> current_;  // std::atomic_load/atomic_store
  uint64_t loads_ = 0;
  std::string files_seen_;  // fingerprint of the files the watcher last acted on

  std::mutex watch_mu_;
  std::condition_variable watch_cv_;
  bool stopping_ = false;
  std::thread watcher_;
};

// After a successful handshake: the client's certificate if it sent one and it verified,
// else null. Cheap enough to call once per connection.
std::shared_ptr<const PeerIdentity> peerIdentity(SSL* ssl);

// Why a handshake failed, for the log: for the client certificate, the check that refused it
// ("untrusted issuer", "expired", "no client certificate, and this listener requires one")
// with the certificate's subject and issuer when known; otherwise OpenSSL's reason. Sets
// `client_certificate` when the failure is about the client certificate. Never key material.
std::string handshakeFailureReason(SSL* ssl, const boost::system::error_code& ec,
                                   bool* client_certificate);

}  // namespace trellis::kernel::tls
