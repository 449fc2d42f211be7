// Debian's nginx as a reverse proxy in front of a test's trellisd: its own prefix in a temp
// dir (never /etc/nginx or /var/log/nginx), one worker, listening on 127.0.0.1 on a free
// port, proxying everything to 127.0.0.1:<upstream_port> over kept-alive HTTP/1.1
// connections. As root the worker runs as root too (`user root;`), so it can use its temp
// dir. Each response carries `X-Proxy-Id` (nginx's $request_id), which nginx also sends
// upstream; access.log holds one line per request: `$request_id $status $upstream_status
// $upstream_http_x_request_id`.
//
//   NginxServer nginx(trellisd.port());
//   ASSERT_TRUE(nginx.start()) << nginx.error();
//   HttpReply r = request(nginx.port(), "GET", "/hello/ann", key);
//
// Before start(), serveTls() makes it listen with TLS (HTTPS clients under test), and
// serveDirectory() makes it serve a folder's files instead of proxying (an HTTP mirror).
//
// A missing nginx is a failure with a message naming scripts/deps.sh, not a skip.
#pragma once

#include <sys/types.h>

#include <chrono>
#include <cstdint>
#include <filesystem>
#include <string>

#include "support/test_support.h"

namespace trellis::test {

class NginxServer {
 public:
  explicit NginxServer(uint16_t upstream_port);
  ~NginxServer();  // SIGQUIT (graceful), then SIGKILL
  NginxServer(const NginxServer&) = delete;
  NginxServer& operator=(const NginxServer&) = delete;

  // TLS 1.2/1.3 with this PEM certificate chain and key.
  void serveTls(std::filesystem::path cert, std::filesystem::path key) {
    tls_cert_ = std::move(cert);
    tls_key_ = std::move(key);
  }
  // Static files from `root` (404 for anything else); upstream_port is then unused.
  void serveDirectory(std::filesystem::path root) { root_ = std::move(root); }

  // Starts nginx and waits until it accepts connections; false with error() on failure.
  bool start(std::chrono::milliseconds timeout = std::chrono::seconds(15));
  void stop();

  uint16_t port() const { return port_; }
  const std::string& error() const { return error_; }
  std::filesystem::path accessLog() const { return dir_ / "access.log"; }
  std::string errorLog() const;
  std::string version() const;  // "nginx/1.22.1"

 private:
  bool startOn(uint16_t port, std::chrono::milliseconds timeout);

  TempDir dir_;
  uint16_t upstream_port_;
  uint16_t port_ = 0;
  pid_t pid_ = -1;
  std::string binary_;
  std::string error_;
  std::filesystem::path tls_cert_, tls_key_, root_;
};

}  // namespace trellis::test
