// Loopback HTTP and HTTPS servers for tests of the kernel's outbound requests, and the
// certificates they serve (made with the openssl CLI). Header-only: only the tests that
// use it link Boost.Asio's SSL.
//
//   TestPki pki;                         // ca.pem, localhost.pem, expired.pem, rogue.pem ...
//   LoopbackServer server([](auto& read, auto& write, auto& stop) {
//     for (auto req = read(); !req.empty(); req = read()) write(reply(200, "hi"));
//   }, &pki, "localhost");                          // omit the last two for plain HTTP
//   fetch("https://localhost:" + std::to_string(server.port()) + "/");
//   LoopbackServer raw(LoopbackServer::kRawBytes, [](auto& read, auto& write, auto& stop) {
//     for (auto bytes = read(); !bytes.empty(); bytes = read()) write(bytes);  // echo
//   });                                             // read() answers whatever bytes came
#pragma once

#include <atomic>
#include <boost/asio.hpp>
#include <boost/asio/ssl.hpp>
#include <functional>
#include <mutex>
#include <optional>
#include <string>
#include <thread>
#include <vector>

#include "support/test_support.h"

namespace trellis::test {

namespace loopback_asio = boost::asio;

// Certificates for the HTTPS tests: a test CA with a server certificate for "localhost",
// one for another name, an expired one for "localhost", and a server certificate from a CA
// the client does not trust.
class TestPki {
 public:
  TestPki() {
    const std::string d = dir_.path().string();
    const std::string script =
        "set -e; cd '" + d +
        "'\n"
        "mkca() { openssl req -x509 -newkey ec -pkeyopt ec_paramgen_curve:prime256v1 -nodes "
        "-keyout $1.key -out $1.pem -days 2 -subj \"/CN=$1\" 2>/dev/null; }\n"
        "mkcert() { openssl req -newkey ec -pkeyopt ec_paramgen_curve:prime256v1 -nodes "
        "-keyout $1.key -out $1.csr -subj \"/CN=$3\" 2>/dev/null;"
        " printf 'subjectAltName=DNS:%s\\n' $3 > $1.ext;"
        " openssl x509 -req -in $1.csr -CA $2.pem -CAkey $2.key -CAcreateserial -days ${4:-2} "
        "-extfile $1.ext -out $1.pem 2>/dev/null; }\n"
        "mkca ca; mkca rogue-ca\n"
        "mkcert localhost ca localhost\n"
        "mkcert other ca other.example\n"
        "mkcert rogue rogue-ca localhost\n"
        "mkcert expired ca localhost -1\n";  // valid until a day before it was made
    int status = 0;
    runCommand("bash -c \"$(cat <<'EOF_PKI'\n" + script + "EOF_PKI\n)\"", &status);
    ok_ = status == 0;
  }
  bool ok() const { return ok_; }
  std::string path(const std::string& f) const { return (dir_.path() / f).string(); }

 private:
  TempDir dir_;
  bool ok_ = false;
};

// A loopback server that runs `handler` for every accepted connection, on a thread of its
// own, over plain TCP or TLS with the given certificate.
class LoopbackServer {
 public:
  // Reads one request (header + Content-Length body); empty when the peer closed.
  using Read = std::function<std::string()>;
  using Write = std::function<bool(const std::string&)>;
  using Handler = std::function<void(const Read&, const Write&, const std::atomic<bool>& stop)>;

  // Read answers the bytes of each read as they come (empty when the peer closed).
  enum RawBytes { kRawBytes };
  LoopbackServer(RawBytes, Handler handler, const TestPki* pki = nullptr,
                 const std::string& cert = "")
      : LoopbackServer(std::move(handler), pki, cert, true) {}
  LoopbackServer(Handler handler, const TestPki* pki = nullptr, const std::string& cert = "",
                 bool raw = false)
      : handler_(std::move(handler)),
        raw_(raw),
        acceptor_(io_, {loopback_asio::ip::make_address("127.0.0.1"), 0}) {
    if (pki) {
      tls_.emplace(loopback_asio::ssl::context::tls_server);
      tls_->use_certificate_chain_file(pki->path(cert + ".pem"));
      tls_->use_private_key_file(pki->path(cert + ".key"), loopback_asio::ssl::context::pem);
    }
    thread_ = std::thread([this] { acceptLoop(); });
  }
  ~LoopbackServer() {
    stop_ = true;
    boost::system::error_code ec;
    {
      // A blocking accept() ignores close() on Linux: wake it with one last connection.
      loopback_asio::ip::tcp::socket waker(io_);
      waker.connect({loopback_asio::ip::make_address("127.0.0.1"), port()}, ec);
    }
    thread_.join();
    acceptor_.close(ec);
    {
      std::lock_guard lock(mu_);
      for (auto* s : open_) s->shutdown(loopback_asio::ip::tcp::socket::shutdown_both, ec);
    }
    for (auto& t : sessions_) t.join();
  }
  uint16_t port() const { return acceptor_.local_endpoint().port(); }
  int connections() const { return connections_; }

 private:
  void acceptLoop() {
    for (;;) {
      auto socket = std::make_shared<loopback_asio::ip::tcp::socket>(io_);
      boost::system::error_code ec;
      acceptor_.accept(*socket, ec);
      if (ec || stop_) return;
      ++connections_;
      sessions_.emplace_back([this, socket] { serve(socket); });
    }
  }

  void serve(std::shared_ptr<loopback_asio::ip::tcp::socket> socket) {
    {
      std::lock_guard lock(mu_);
      open_.push_back(socket.get());
    }
    std::optional<loopback_asio::ssl::stream<loopback_asio::ip::tcp::socket&>> ssl;
    boost::system::error_code ec;
    if (tls_) {
      ssl.emplace(*socket, *tls_);
      ssl->handshake(loopback_asio::ssl::stream_base::server, ec);
    }
    std::string buffered;
    auto readSome = [&](char* buf, size_t n) -> size_t {
      return ssl ? ssl->read_some(loopback_asio::buffer(buf, n), ec)
                 : socket->read_some(loopback_asio::buffer(buf, n), ec);
    };
    Read read_raw = [&]() -> std::string {
      char buf[4096];
      size_t n = readSome(buf, sizeof buf);
      return ec ? std::string() : std::string(buf, n);
    };
    Read read = [&]() -> std::string {
      char buf[4096];
      size_t end;
      while ((end = buffered.find("\r\n\r\n")) == std::string::npos) {
        size_t n = readSome(buf, sizeof buf);
        if (ec || n == 0) return "";
        buffered.append(buf, n);
      }
      size_t length = 0;
      std::string lower = buffered.substr(0, end);
      for (auto& c : lower) c = static_cast<char>(std::tolower(c));
      if (auto at = lower.find("content-length:"); at != std::string::npos) {
        length = std::stoul(lower.substr(at + 15));
      }
      while (buffered.size() < end + 4 + length) {
        size_t n = readSome(buf, sizeof buf);
        if (ec || n == 0) return "";
        buffered.append(buf, n);
      }
      std::string request = buffered.substr(0, end + 4 + length);
      buffered.erase(0, request.size());
      return request;
    };
    Write write = [&](const std::string& bytes) {
      if (ssl) {
        loopback_asio::write(*ssl, loopback_asio::buffer(bytes), ec);
      } else {
        loopback_asio::write(*socket, loopback_asio::buffer(bytes), ec);
      }
      return !ec;
    };
    if (!ec) handler_(raw_ ? read_raw : read, write, stop_);
    std::lock_guard lock(mu_);
    std::erase(open_, socket.get());
    socket->close(ec);
  }

  Handler handler_;
  const bool raw_ = false;
  loopback_asio::io_context io_;
  loopback_asio::ip::tcp::acceptor acceptor_;
  std::optional<loopback_asio::ssl::context> tls_;
  std::atomic<bool> stop_{false};
  std::atomic<int> connections_{0};
  std::thread thread_;
  std::vector<std::thread> sessions_;
  std::mutex mu_;
  std::vector<loopback_asio::ip::tcp::socket*> open_;
};

inline std::string reply(int status, const std::string& body, const std::string& extra = "") {
  return "HTTP/1.1 " + std::to_string(status) +
         " X\r\nContent-Length: " + std::to_string(body.size()) + "\r\n" + extra + "\r\n" + body;
}

}  // namespace trellis::test
