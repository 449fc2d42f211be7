// Debian's nginx as a reverse proxy in front of a test's trellisd: its own prefix in a temp
// dir (never /etc/nginx or /var/log/nginx), one worker, listening on 127.0.0.1 on a free
// port, proxying everything to 127.0.0.1:<upstream_port> over kept-alive HTTP/1.1
// connections. As root the worker runs as root too (`user root;`), so it can use its temp
// dir. Each response carries `X-Proxy-Id` (nginx's $request_id), which nginx also sends
// upstream; access.log holds one line per request: `$request_id $status $upstream_status
// $upstream_http_x_request_id $ssl_protocol $connection $request_length` (an empty value
// as "-"; $request_length counts the request line, header and body as received).
//
//   NginxServer nginx(trellisd.port());
//   ASSERT_TRUE(nginx.start()) << nginx.error();
//   HttpReply r = request(nginx.port(), "GET", "/hello/ann", key);
//
// Before start(), serveTls() makes it listen with TLS (HTTPS clients under test),
// serveDirectory() makes it serve a folder's files instead of proxying (an HTTP mirror), and
// acceptUploads() lets a PUT store its body there as a file (nginx's WebDAV module), so a
// test can compare what a client sent with what nginx received, byte for byte.
//
// A missing nginx is a failure with a message naming scripts/deps.sh, not a skip.
#pragma once

#include <sys/types.h>

#include <chrono>
#include <cstdint>
#include <filesystem>
#include <string>
#include <vector>

#include "support/test_support.h"

namespace trellis::test {

class NginxServer {
 public:
  explicit NginxServer(uint16_t upstream_port);
  ~NginxServer();  // SIGQUIT (graceful), then SIGKILL
  NginxServer(const NginxServer&) = delete;
  NginxServer& operator=(const NginxServer&) = delete;

  // TLS with this PEM certificate chain and key; `protocols` as nginx's ssl_protocols.
  void serveTls(std::filesystem::path cert, std::filesystem::path key,
                std::string protocols = "TLSv1.2 TLSv1.3") {
    tls_cert_ = std::move(cert);
    tls_key_ = std::move(key);
    tls_protocols_ = std::move(protocols);
  }
  // Static files from `root` (404 for anything else); upstream_port is then unused.
  void serveDirectory(std::filesystem::path root) { root_ = std::move(root); }
  // With serveDirectory(): PUT /a/b stores the request body (Content-Length or chunked, any
  // size) as <root>/a/b, creating folders, and answers 201 (204 when it replaced a file).
  void acceptUploads() { uploads_ = true; }

  // Starts nginx and waits until it accepts connections; false with error() on failure.
  bool start(std::chrono::milliseconds timeout = std::chrono::seconds(15));
  void stop();

  uint16_t port() const { return port_; }
  const std::string& error() const { return error_; }
  std::filesystem::path accessLog() const { return dir_ / "access.log"; }
  // What access.log says of one request, for tests of the clients in front of nginx.
  struct Logged {
    std::string status, ssl_protocol, connection;  // ssl_protocol "-" without TLS
    uint64_t request_length = 0;
  };
  // Waits (bounded) until access.log holds `want` lines (nginx logs a request once it has
  // answered), then answers them all.
  std::vector<Logged> logged(size_t want) const;
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
  std::string tls_protocols_;
  bool uploads_ = false;
};

}  // namespace trellis::test
