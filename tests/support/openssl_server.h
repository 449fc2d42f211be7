// `openssl s_server` on loopback as a real TLS peer that Trellis' own listener cannot be:
// one that speaks only TLS 1.1, for the clients that must refuse it. It answers GET with
// its status page (-www). Header-only; stopped by its PID when it goes out of scope.
//
//   OpensslServer old(pki.path("localhost.pem"), pki.path("localhost.key"),
//                     OpensslServer::tls11Only());
//   fetch("https://localhost:" + std::to_string(old.port()) + "/");  // must fail
#pragma once

#include <fcntl.h>
#include <signal.h>
#include <unistd.h>

#include <chrono>
#include <string>
#include <vector>

#include "support/test_support.h"

namespace trellis::test {

class OpensslServer {
 public:
  // TLS 1.1 and nothing else; security level 0, which OpenSSL 3 needs to speak it at all.
  static std::vector<std::string> tls11Only() {
    return {"-tls1_1", "-cipher", "DEFAULT:@SECLEVEL=0"};
  }

  OpensslServer(const std::string& cert, const std::string& key,
                const std::vector<std::string>& extra_args) {
    port_ = freeLoopbackPort();
    std::vector<std::string> args = {
        "openssl", "s_server", "-accept", "127.0.0.1:" + std::to_string(port_),
        "-cert",   cert,       "-key",    key,
        "-www",    "-quiet"};
    args.insert(args.end(), extra_args.begin(), extra_args.end());
    std::vector<char*> argv;  // built before fork: the child only calls exec-safe functions
    for (std::string& a : args) argv.push_back(a.data());
    argv.push_back(nullptr);
    pid_ = fork();
    if (pid_ == 0) {
      const int devnull = open("/dev/null", O_RDWR);
      dup2(devnull, 0);
      dup2(devnull, 1);
      dup2(devnull, 2);
      execvp("openssl", argv.data());
      _exit(127);
    }
    ready_ = pid_ > 0 &&
             eventually([this] { return acceptsOnLoopback(port_); }, std::chrono::seconds(10));
  }
  ~OpensslServer() { stopChild(pid_, SIGTERM, std::chrono::seconds(5)); }
  OpensslServer(const OpensslServer&) = delete;
  OpensslServer& operator=(const OpensslServer&) = delete;

  bool ready() const { return ready_; }
  uint16_t port() const { return port_; }

 private:
  pid_t pid_ = -1;
  uint16_t port_ = 0;
  bool ready_ = false;
};

}  // namespace trellis::test
