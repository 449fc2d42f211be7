// TLS and mTLS on the listeners, through real handshakes: certificates come from
// support/test_certs.h (a CA, leaves for SNI names, an expired one, client certificates from
// a trusted and an untrusted CA); the client is plain OpenSSL on a blocking socket with a
// receive timeout, so a hang fails instead of stalling the suite.
#include <arpa/inet.h>
#include <gtest/gtest.h>
#include <netinet/in.h>
#include <openssl/err.h>
#include <openssl/pem.h>
#include <openssl/ssl.h>
#include <openssl/x509v3.h>
#include <poll.h>
#include <signal.h>
#include <sys/socket.h>
#include <unistd.h>

#include <atomic>
#include <cerrno>
#include <chrono>
#include <cstdio>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <memory>
#include <string>
#include <thread>
#include <vector>

#include "support/test_certs.h"
#include "support/test_support.h"
#include "trellis/kernel/config/config.h"
#include "trellis/kernel/http/server.h"
#include "trellis/kernel/tls/server_context.h"

namespace trellis::test {
namespace {

using namespace std::chrono_literals;

// --- a small TLS client ---------------------------------------------------------------

struct ClientOptions {
  std::string sni;          // "" = send none
  std::string verify_host;  // with ca: the name the certificate must carry
  fs::path ca;              // "" = do not verify the server
  fs::path cert, key;       // client certificate
  int min_version = 0, max_version = 0;
  std::string ciphers;  // TLS 1.2 list
  bool alpn = true;
  int receive_buffer = 0;  // SO_RCVBUF; 0 = the system's
};

struct Reply {
  std::string error;  // "" = a response arrived
  int status = 0;
  std::string head;
  std::string body;
  std::string alpn;
  std::string peer_cn;
  std::string version;
  bool resumed = false;
};

class TlsClient {
 public:
  ~TlsClient() { close(); }

  // "" on success, else why the connection or handshake failed.
  std::string connect(uint16_t port, const ClientOptions& o, SSL_SESSION* resume = nullptr) {
    ctx_ = SSL_CTX_new(TLS_client_method());
    if (!o.ciphers.empty()) SSL_CTX_set_cipher_list(ctx_, o.ciphers.c_str());
    // Old versions need the client's security level lowered, or OpenSSL would not even
    // offer them: the refusal under test must be the server's.
    if (o.max_version != 0 && o.max_version < TLS1_2_VERSION) {
      SSL_CTX_set_security_level(ctx_, 0);
      SSL_CTX_set_cipher_list(ctx_, "DEFAULT:@SECLEVEL=0");
    }
    if (o.min_version) SSL_CTX_set_min_proto_version(ctx_, o.min_version);
    if (o.max_version) SSL_CTX_set_max_proto_version(ctx_, o.max_version);
    if (!o.ca.empty()) {
      SSL_CTX_load_verify_locations(ctx_, o.ca.c_str(), nullptr);
      SSL_CTX_set_verify(ctx_, SSL_VERIFY_PEER, nullptr);
    }
    if (!o.cert.empty()) {
      SSL_CTX_use_certificate_chain_file(ctx_, o.cert.c_str());
      SSL_CTX_use_PrivateKey_file(ctx_, o.key.c_str(), SSL_FILETYPE_PEM);
    }
    fd_ = ::socket(AF_INET, SOCK_STREAM, 0);
    if (o.receive_buffer) {
      setsockopt(fd_, SOL_SOCKET, SO_RCVBUF, &o.receive_buffer, sizeof o.receive_buffer);
    }
    timeval tv{5, 0};
    setsockopt(fd_, SOL_SOCKET, SO_RCVTIMEO, &tv, sizeof tv);
    setsockopt(fd_, SOL_SOCKET, SO_SNDTIMEO, &tv, sizeof tv);
    sockaddr_in addr{};
    addr.sin_family = AF_INET;
    addr.sin_port = htons(port);
    addr.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    if (::connect(fd_, reinterpret_cast<sockaddr*>(&addr), sizeof addr) != 0) return "connect";
    ssl_ = SSL_new(ctx_);
    SSL_set_fd(ssl_, fd_);
    if (!o.sni.empty()) SSL_set_tlsext_host_name(ssl_, o.sni.c_str());
    if (!o.verify_host.empty()) SSL_set1_host(ssl_, o.verify_host.c_str());
    if (o.alpn) {
      static const unsigned char kProtos[] = {8, 'h', 't', 't', 'p', '/', '1', '.', '1'};
      SSL_set_alpn_protos(ssl_, kProtos, sizeof kProtos);
    }
    if (resume) SSL_set_session(ssl_, resume);
    if (SSL_connect(ssl_) != 1) return "handshake: " + errors();
    return "";
  }

  Reply get(const std::string& target, const std::string& host = "localhost") {
    std::string req = "GET " + target + " HTTP/1.1\r\nHost: " + host + "\r\n\r\n";
    if (!send(req)) {
      Reply r;
      r.error = "write: " + errors();
      return r;
    }
    return read();
  }

  // Writes `raw` in one SSL_write: one TLS record when it fits in one.
  bool send(const std::string& raw) {
    return SSL_write(ssl_, raw.data(), static_cast<int>(raw.size())) ==
           static_cast<int>(raw.size());
  }

  // The next response (Content-Length framed, or a head alone: 100 Continue); bytes read past
  // it are kept for the next call.
  Reply read() {
    Reply r;
    std::string& in = pending_;
    size_t header_end = in.find("\r\n\r\n");
    size_t need = header_end == std::string::npos ? 0 : contentLength(in, header_end);
    char buf[4096];
    while (true) {
      if (header_end != std::string::npos && in.size() >= header_end + 4 + need) break;
      int n = SSL_read(ssl_, buf, sizeof buf);
      if (n <= 0) {
        r.error = "read: " + errors();
        return r;
      }
      in.append(buf, n);
      if (header_end == std::string::npos && (header_end = in.find("\r\n\r\n")) != in.npos) {
        need = contentLength(in, header_end);
      }
    }
    r.status = std::stoi(in.substr(9, 3));
    r.head = in.substr(0, header_end + 4);
    r.body = in.substr(header_end + 4, need);
    in.erase(0, header_end + 4 + need);
    const unsigned char* alpn = nullptr;
    unsigned len = 0;
    SSL_get0_alpn_selected(ssl_, &alpn, &len);
    r.alpn.assign(reinterpret_cast<const char*>(alpn), len);
    r.version = SSL_get_version(ssl_);
    r.resumed = SSL_session_reused(ssl_) == 1;
    if (X509* peer = SSL_get0_peer_certificate(ssl_)) {
      char cn[256] = {0};
      X509_NAME_get_text_by_NID(X509_get_subject_name(peer), NID_commonName, cn, sizeof cn);
      r.peer_cn = cn;
    }
    return r;
  }

  // What the next SSL_read says once no more application data comes: SSL_ERROR_ZERO_RETURN
  // for the server's close_notify.
  int readEnd() {
    char buf[4096];
    int n = 0;
    while ((n = SSL_read(ssl_, buf, sizeof buf)) > 0) {
    }
    return SSL_get_error(ssl_, n);
  }

  // At least `n` bytes of the next answer, kept for read().
  bool readAtLeast(size_t n) {
    char buf[4096];
    while (pending_.size() < n) {
      int got = SSL_read(ssl_, buf, sizeof buf);
      if (got <= 0) return false;
      pending_.append(buf, got);
    }
    return true;
  }

  // Sends close_notify (SSL_shutdown's first step).
  bool closeNotify() { return SSL_shutdown(ssl_) >= 0; }

  // How the server ended the TCP connection, reading raw bytes for up to `timeout` (call it
  // once TLS has nothing more to say): "closed" (a FIN), "reset" (a RST: it closed with bytes
  // of ours unread) or "open"; `received` counts the bytes that came before.
  std::string howClosed(std::chrono::milliseconds timeout, size_t* received = nullptr) {
    auto deadline = std::chrono::steady_clock::now() + timeout;
    size_t got = 0;
    std::string result = "open";
    while (std::chrono::steady_clock::now() < deadline) {
      pollfd p{fd_, POLLIN, 0};
      if (::poll(&p, 1, 50) <= 0) continue;
      char c[4096];
      ssize_t n = ::recv(fd_, c, sizeof c, 0);
      if (n > 0) {
        got += static_cast<size_t>(n);
        continue;
      }
      result = n == 0 ? "closed" : errno == ECONNRESET ? "reset" : std::strerror(errno);
      break;
    }
    if (received) *received = got;
    return result;
  }

  // Closes with a RST instead of a FIN.
  void reset() {
    linger l{1, 0};
    setsockopt(fd_, SOL_SOCKET, SO_LINGER, &l, sizeof l);
    close();
  }

  SSL_SESSION* session() { return SSL_get1_session(ssl_); }

  void close() {
    if (ssl_) SSL_free(ssl_);
    if (fd_ >= 0) ::close(fd_);
    if (ctx_) SSL_CTX_free(ctx_);
    ssl_ = nullptr;
    ctx_ = nullptr;
    fd_ = -1;
  }

 private:
  std::string errors() {
    std::string out;
    long v = ssl_ ? SSL_get_verify_result(ssl_) : X509_V_OK;
    if (v != X509_V_OK) out = std::string("verify: ") + X509_verify_cert_error_string(v) + "; ";
    while (unsigned long e = ERR_get_error()) {
      char b[256];
      ERR_error_string_n(e, b, sizeof b);
      out += std::string(b) + "; ";
    }
    return out.empty() ? "closed" : out;
  }

  static size_t contentLength(const std::string& in, size_t header_end) {
    auto cl = in.find("Content-Length: ");
    if (cl == std::string::npos || cl > header_end) return 0;
    return std::stoul(in.substr(cl + 16));
  }

  SSL_CTX* ctx_ = nullptr;
  SSL* ssl_ = nullptr;
  int fd_ = -1;
  std::string pending_;  // read past the last response
};

// One request on a new connection.
Reply fetch(uint16_t port, const ClientOptions& o, const std::string& target = "/healthz") {
  TlsClient c;
  Reply r;
  if (std::string e = c.connect(port, o); !e.empty()) {
    r.error = e;
    return r;
  }
  return c.get(target);
}

// `openssl s_client` offering exactly what the arguments say; true if a handshake completed.
bool sClientConnects(uint16_t port, const std::string& args) {
  int status = 0;
  std::string out =
      runCommand("echo | timeout 10 openssl s_client -connect 127.0.0.1:" + std::to_string(port) +
                     " " + args + " 2>&1",
                 &status);
  return status == 0 && out.find("Cipher is (NONE)") == std::string::npos &&
         out.find("New, ") != std::string::npos;
}

// --- fixture --------------------------------------------------------------------------

class TlsTest : public ::testing::Test {
 protected:
  void SetUp() override {
    dir_ = certs_.path();
    ca_ = makeCert(dir_, "ca", {.cn = "Test CA", .ca = true}, nullptr);
    server_ =
        makeCert(dir_, "server",
                 {.cn = "localhost", .sans = "DNS:localhost,IP:127.0.0.1", .rsa = true}, &ca_);
    other_ = makeCert(dir_, "other", {.cn = "other.test", .sans = "DNS:other.test"}, &ca_);
    client_ =
        makeCert(dir_, "client",
                 {.cn = "billing", .sans = "URI:spiffe://acme.test/ns/prod/sa/billing"}, &ca_);
    rogue_ca_ = makeCert(dir_, "rogue-ca", {.cn = "Rogue CA", .ca = true}, nullptr);
    rogue_client_ = makeCert(dir_, "rogue-client", {.cn = "billing"}, &rogue_ca_);
  }

  ClientOptions verifying(const std::string& host = "localhost") const {
    return {.sni = host, .verify_host = host, .ca = ca_.cert_file};
  }

  std::string config(const std::string& server_tls, const std::string& admin_extra = "") const {
    return "server:\n"
           "  listen: 127.0.0.1:0\n"
           "  threads: 2\n"
           "  drain_timeout_ms: 2000\n" +
           server_tls +
           "admin:\n"
           "  listen: 127.0.0.1:0\n"
           "  token_file: @DIR@/admin.token\n" +
           admin_extra +
           "storage:\n"
           "  data_dir: @DATA@\n"
           "log:\n"
           "  level: debug\n"
           "  access_log: \"off\"\n";
  }

  std::string tlsBlock(const std::string& extra = "", const std::string& indent = "  ") const {
    return indent + "tls:\n" + indent + "  certificates:\n" + indent +
           "    - {cert: " + server_.cert_file.string() + ", key: " + server_.key_file.string() +
           "}\n" + indent + "    - {cert: " + other_.cert_file.string() +
           ", key: " + other_.key_file.string() + "}\n" + extra;
  }

  TempDir certs_;
  fs::path dir_;
  Identity ca_, server_, other_, client_, rogue_ca_, rogue_client_;
};

TEST_F(TlsTest, ServesHttp11OverTlsWithAlpnOnBothPlanes) {
  TrellisdProcess proc(config(tlsBlock(), tlsBlock("", "  ")));
  ASSERT_TRUE(proc.start()) << proc.log();

  Reply r = fetch(proc.port(), verifying());
  ASSERT_EQ(r.error, "") << proc.log();
  EXPECT_EQ(r.status, 200);
  EXPECT_EQ(r.alpn, "http/1.1");
  EXPECT_EQ(r.version, "TLSv1.3");
  EXPECT_EQ(r.peer_cn, "localhost");

  Reply tls12 = fetch(proc.port(), {.sni = "localhost",
                                    .verify_host = "localhost",
                                    .ca = ca_.cert_file,
                                    .max_version = TLS1_2_VERSION});
  ASSERT_EQ(tls12.error, "");
  EXPECT_EQ(tls12.status, 200);
  EXPECT_EQ(tls12.version, "TLSv1.2");

  Reply admin = fetch(proc.adminPort(), verifying());
  ASSERT_EQ(admin.error, "");
  EXPECT_EQ(admin.status, 200);

  // Plain HTTP to a TLS listener gets no HTTP answer.
  HttpReply plain = request(proc.port(), "GET", "/healthz");
  EXPECT_EQ(plain.status, 0);
}

TEST_F(TlsTest, SniChoosesTheCertificateAndTheFirstIsTheDefault) {
  TrellisdProcess proc(config(tlsBlock()));
  ASSERT_TRUE(proc.start()) << proc.log();

  Reply other = fetch(proc.port(), verifying("other.test"));
  ASSERT_EQ(other.error, "");
  EXPECT_EQ(other.peer_cn, "other.test");

  Reply none = fetch(proc.port(), {});  // no SNI
  ASSERT_EQ(none.error, "");
  EXPECT_EQ(none.peer_cn, "localhost");

  Reply unknown = fetch(proc.port(), {.sni = "unknown.test"});
  ASSERT_EQ(unknown.error, "");
  EXPECT_EQ(unknown.peer_cn, "localhost");

  // A verifying client asking for a name the served certificate does not carry refuses it.
  Reply wrong = fetch(proc.port(), verifying("unknown.test"));
  EXPECT_NE(wrong.error.find("hostname mismatch"), std::string::npos) << wrong.error;
}

TEST_F(TlsTest, RefusesOldProtocolVersionsAndWeakCiphers) {
  TrellisdProcess proc(config(tlsBlock()));
  ASSERT_TRUE(proc.start()) << proc.log();

  for (int v : {TLS1_VERSION, TLS1_1_VERSION}) {
    Reply r = fetch(proc.port(), {.min_version = v, .max_version = v});
    EXPECT_NE(r.error, "") << "version " << std::hex << v << " was accepted";
    EXPECT_EQ(r.status, 0);
  }
  const uint16_t port = proc.port();
  EXPECT_FALSE(sClientConnects(port, "-tls1_1 -cipher DEFAULT:@SECLEVEL=0"));
  EXPECT_FALSE(sClientConnects(port, "-tls1 -cipher DEFAULT:@SECLEVEL=0"));
  // Positive control: the same tool with a suite the default list has.
  EXPECT_TRUE(sClientConnects(port, "-tls1_2 -cipher ECDHE-RSA-AES128-GCM-SHA256"));
  // RSA key exchange (no forward secrecy), CBC, 3DES, anonymous: each offered alone.
  for (const char* weak : {"AES128-GCM-SHA256", "AES256-SHA", "ECDHE-RSA-AES128-SHA",
                           "ECDHE-RSA-AES256-SHA384", "DES-CBC3-SHA", "ADH-AES128-SHA"}) {
    EXPECT_FALSE(sClientConnects(port, std::string("-tls1_2 -cipher ") + weak + ":@SECLEVEL=0"))
        << weak << " was accepted";
  }
  EXPECT_TRUE(sClientConnects(port, "-tls1_3 -ciphersuites TLS_CHACHA20_POLY1305_SHA256"));
}

TEST_F(TlsTest, VerifyingClientRefusesAnExpiredServerCertificate) {
  Identity expired = makeCert(
      dir_, "expired",
      {.cn = "localhost", .sans = "DNS:localhost", .not_before = -7200, .not_after = -3600}, &ca_);
  TrellisdProcess proc(
      config("  tls:\n    certificates:\n      - {cert: " + expired.cert_file.string() +
             ", key: " + expired.key_file.string() + "}\n"));
  ASSERT_TRUE(proc.start()) << proc.log();
  EXPECT_NE(proc.log().find("has expired"), std::string::npos) << proc.log();

  Reply r = fetch(proc.port(), verifying());
  EXPECT_NE(r.error.find("certificate has expired"), std::string::npos) << r.error;
  EXPECT_EQ(r.status, 0);
}

TEST_F(TlsTest, RequiredClientCertificatesAreVerifiedAgainstTheConfiguredCa) {
  TrellisdProcess proc(config(
      tlsBlock("    client_auth: required\n    client_ca: " + ca_.cert_file.string() + "\n")));
  ASSERT_TRUE(proc.start()) << proc.log();

  ClientOptions good = verifying();
  good.cert = client_.cert_file;
  good.key = client_.key_file;
  Reply ok = fetch(proc.port(), good);
  ASSERT_EQ(ok.error, "") << proc.log();
  EXPECT_EQ(ok.status, 200);

  // In TLS 1.3 the client finishes first; the server's refusal arrives as an alert in
  // place of the response. Either way no request is served.
  Reply none = fetch(proc.port(), verifying());
  EXPECT_NE(none.error, "");
  EXPECT_EQ(none.status, 0);

  ClientOptions rogue = verifying();
  rogue.cert = rogue_client_.cert_file;
  rogue.key = rogue_client_.key_file;
  Reply untrusted = fetch(proc.port(), rogue);
  EXPECT_NE(untrusted.error, "");
  EXPECT_EQ(untrusted.status, 0);

  // The listener keeps serving after the refusals.
  EXPECT_EQ(fetch(proc.port(), good).status, 200);
}

TEST_F(TlsTest, OptionalClientCertificatesAllowNoneButRefuseUntrusted) {
  TrellisdProcess proc(config(
      tlsBlock("    client_auth: optional\n    client_ca: " + ca_.cert_file.string() + "\n")));
  ASSERT_TRUE(proc.start()) << proc.log();
  EXPECT_EQ(fetch(proc.port(), verifying()).status, 200);
  ClientOptions rogue = verifying();
  rogue.cert = rogue_client_.cert_file;
  rogue.key = rogue_client_.key_file;
  EXPECT_EQ(fetch(proc.port(), rogue).status, 0);
}

TEST_F(TlsTest, StalledHandshakeIsDroppedWhileOthersAreServed) {
  TrellisdProcess proc(config(tlsBlock("    handshake_timeout_ms: 300\n")));
  ASSERT_TRUE(proc.start()) << proc.log();

  // A TLS record header announcing a ClientHello, then nothing more.
  Connection stalled(proc.port());
  ASSERT_TRUE(stalled.send(std::string("\x16\x03\x01\x02\x00\x01\x00", 7)));
  Connection silent(proc.port());  // connects and never sends a byte

  EXPECT_EQ(fetch(proc.port(), verifying()).status, 200);
  EXPECT_TRUE(stalled.closedByPeer(10s));
  EXPECT_TRUE(silent.closedByPeer(10s));
  EXPECT_EQ(fetch(proc.port(), verifying()).status, 200);
}

TEST_F(TlsTest, GarbageInTheHandshakeClosesOnlyThatConnection) {
  TrellisdProcess proc(config(tlsBlock()));
  ASSERT_TRUE(proc.start()) << proc.log();
  Connection garbage(proc.port());
  ASSERT_TRUE(garbage.send(std::string(4096, '\x42')));
  EXPECT_TRUE(garbage.closedByPeer(10s));
  // A ClientHello record that claims more than a record may hold.
  Connection oversized(proc.port());
  ASSERT_TRUE(oversized.send(std::string("\x16\x03\x01\xff\xff", 5) + std::string(1024, '\0')));
  EXPECT_TRUE(oversized.closedByPeer(10s));
  EXPECT_EQ(fetch(proc.port(), verifying()).status, 200);
  EXPECT_EQ(proc.log().find("critical"), std::string::npos);
}

TEST_F(TlsTest, StopsCleanlyWithTlsConnectionsOpen) {
  TrellisdProcess proc(config(tlsBlock()));
  ASSERT_TRUE(proc.start()) << proc.log();
  TlsClient idle;
  ASSERT_EQ(idle.connect(proc.port(), verifying()), "");
  ASSERT_EQ(idle.get("/healthz").status, 200);
  Connection handshaking(proc.port());
  ASSERT_TRUE(handshaking.send(std::string("\x16\x03\x01\x02\x00\x01\x00", 7)));
  EXPECT_EQ(proc.stop(), 0) << proc.log();
}

TEST_F(TlsTest, SessionsResume) {
  TrellisdProcess proc(config(tlsBlock()));
  ASSERT_TRUE(proc.start()) << proc.log();
  ClientOptions o = verifying();
  o.max_version = TLS1_2_VERSION;  // the session is known right after the handshake
  TlsClient first;
  ASSERT_EQ(first.connect(proc.port(), o), "");
  ASSERT_EQ(first.get("/healthz").status, 200);
  SSL_SESSION* session = first.session();
  ASSERT_NE(session, nullptr);
  TlsClient second;
  ASSERT_EQ(second.connect(proc.port(), o, session), "");
  Reply r = second.get("/healthz");
  SSL_SESSION_free(session);
  EXPECT_EQ(r.status, 200);
  EXPECT_TRUE(r.resumed);
}

// Replaces server.pem/server.key (by rename) with a certificate for the same names but a
// new subject CN, so a client can tell which one it got.
Identity rotate(const fs::path& dir, const Identity& ca, const std::string& cn) {
  return makeCert(dir, "server", {.cn = cn, .sans = "DNS:localhost,IP:127.0.0.1", .rsa = true},
                  &ca);
}

TEST_F(TlsTest, SighupReloadsUnderLoadWithoutFailingARequest) {
  TrellisdProcess proc(config(tlsBlock("    reload_check_ms: 0\n")));
  ASSERT_TRUE(proc.start()) << proc.log();
  const uint16_t port = proc.port();

  // A connection opened before the reload stays usable after it.
  TlsClient kept;
  ASSERT_EQ(kept.connect(port, verifying()), "");
  ASSERT_EQ(kept.get("/healthz").status, 200);

  std::atomic<bool> stop{false};
  std::atomic<int> ok{0}, failed{0};
  std::string first_failure;
  std::thread load([&] {
    while (!stop) {
      Reply r = fetch(port, verifying());
      if (r.status == 200) {
        ++ok;
      } else if (failed++ == 0) {
        first_failure = r.error;
      }
    }
  });
  while (ok < 20) std::this_thread::sleep_for(10ms);

  rotate(dir_, ca_, "localhost-v2");
  ASSERT_EQ(::kill(proc.pid(), SIGHUP), 0);
  bool seen = false;
  for (auto until = std::chrono::steady_clock::now() + 10s;
       !seen && std::chrono::steady_clock::now() < until;) {
    seen = fetch(port, verifying()).peer_cn == "localhost-v2";
    if (!seen) std::this_thread::sleep_for(20ms);
  }
  int before = ok;
  while (ok < before + 20) std::this_thread::sleep_for(10ms);
  stop = true;
  load.join();
  EXPECT_TRUE(seen) << proc.log();
  EXPECT_EQ(failed, 0) << first_failure;
  EXPECT_EQ(kept.get("/healthz").status, 200);
  EXPECT_NE(proc.log().find("TLS certificates reloaded"), std::string::npos);

  // A key that does not match its certificate: refused, the current pair keeps serving.
  Identity stray = makeCert(dir_, "stray", {.cn = "stray"}, &ca_);
  fs::copy_file(stray.key_file, server_.key_file, fs::copy_options::overwrite_existing);
  ASSERT_EQ(::kill(proc.pid(), SIGHUP), 0);
  bool logged = false;
  for (auto until = std::chrono::steady_clock::now() + 10s;
       !logged && std::chrono::steady_clock::now() < until;) {
    logged = proc.log().find("does not match the certificate") != std::string::npos;
    if (!logged) std::this_thread::sleep_for(20ms);
  }
  EXPECT_TRUE(logged) << proc.log();
  EXPECT_EQ(proc.log().find("BEGIN PRIVATE KEY"), std::string::npos);
  Reply after = fetch(port, verifying());
  EXPECT_EQ(after.status, 200);
  EXPECT_EQ(after.peer_cn, "localhost-v2");
}

TEST_F(TlsTest, SessionsIssuedBeforeAReloadResumeAfterIt) {
  TrellisdProcess proc(config(tlsBlock("    reload_check_ms: 0\n")));
  ASSERT_TRUE(proc.start()) << proc.log();
  ClientOptions o = verifying();
  o.max_version = TLS1_2_VERSION;
  TlsClient first;
  ASSERT_EQ(first.connect(proc.port(), o), "");
  ASSERT_EQ(first.get("/healthz").status, 200);
  SSL_SESSION* session = first.session();
  ASSERT_NE(session, nullptr);

  rotate(dir_, ca_, "localhost-v4");
  ASSERT_EQ(::kill(proc.pid(), SIGHUP), 0);
  bool seen = false;
  for (auto until = std::chrono::steady_clock::now() + 10s;
       !seen && std::chrono::steady_clock::now() < until;) {
    seen = fetch(proc.port(), verifying()).peer_cn == "localhost-v4";
    if (!seen) std::this_thread::sleep_for(20ms);
  }
  ASSERT_TRUE(seen) << proc.log();

  TlsClient resumed;
  ASSERT_EQ(resumed.connect(proc.port(), o, session), "");
  Reply r = resumed.get("/healthz");
  SSL_SESSION_free(session);
  EXPECT_EQ(r.status, 200);
  EXPECT_TRUE(r.resumed);
}

TEST_F(TlsTest, ChangedFilesAreReloadedWithoutASignal) {
  TrellisdProcess proc(config(tlsBlock("    reload_check_ms: 100\n")));
  ASSERT_TRUE(proc.start()) << proc.log();
  ASSERT_EQ(fetch(proc.port(), verifying()).peer_cn, "localhost");
  rotate(dir_, ca_, "localhost-v3");
  bool seen = false;
  for (auto until = std::chrono::steady_clock::now() + 10s;
       !seen && std::chrono::steady_clock::now() < until;) {
    seen = fetch(proc.port(), verifying()).peer_cn == "localhost-v3";
    if (!seen) std::this_thread::sleep_for(50ms);
  }
  EXPECT_TRUE(seen) << proc.log();
}

TEST_F(TlsTest, AdminPlaneRefusesPlainHttpOnANonLoopbackAddress) {
  std::string cfg = config("");
  const std::string loopback = "admin:\n  listen: 127.0.0.1:0";
  cfg.replace(cfg.find(loopback), loopback.size(), "admin:\n  listen: 0.0.0.0:0");
  {
    TrellisdProcess proc(cfg);
    EXPECT_FALSE(proc.start());
    EXPECT_NE(proc.log().find("admin.allow_plaintext: true"), std::string::npos) << proc.log();
  }
  {
    std::string allowed = cfg;
    allowed.replace(allowed.find("  token_file:"), 0, "  allow_plaintext: true\n");
    TrellisdProcess ok(allowed);
    ASSERT_TRUE(ok.start()) << ok.log();
    EXPECT_EQ(request(ok.adminPort(), "GET", "/healthz").status, 200);
  }
  {
    std::string with_tls = cfg;
    with_tls.replace(with_tls.find("  token_file:"), 0, tlsBlock());
    TrellisdProcess ok(with_tls);
    ASSERT_TRUE(ok.start()) << ok.log();
    EXPECT_EQ(fetch(ok.adminPort(), verifying()).status, 200);
  }
}

// --- configuration errors (parsed, not started) ---------------------------------------

class TlsConfigTest : public TlsTest {
 protected:
  std::string errorFor(const std::string& server_tls) {
    try {
      kernel::config::Config::parse("server:\n" + server_tls, dir_);
    } catch (const kernel::config::ConfigError& e) {
      return e.what();
    }
    return "";
  }
};

TEST_F(TlsConfigTest, BadInputIsNamed) {
  EXPECT_EQ(errorFor(tlsBlock()), "");
  EXPECT_NE(
      errorFor("  tls:\n    certificates:\n      - {cert: missing.pem, key: server.key}\n")
          .find("server.tls.certificates[0].cert: cannot read " + (dir_ / "missing.pem").string()),
      std::string::npos);
  EXPECT_NE(errorFor("  tls:\n    certificates:\n      - {cert: server.pem, key: other.key}\n")
                .find("server.tls.certificates[0].key:"),
            std::string::npos);
  EXPECT_NE(errorFor("  tls:\n    certificates:\n      - {cert: server.pem, key: other.key}\n")
                .find("does not match the certificate"),
            std::string::npos);
  EXPECT_NE(errorFor(tlsBlock("    verify: yes\n")).find("server.tls.verify: unknown key"),
            std::string::npos);
  EXPECT_NE(errorFor(tlsBlock("    client_auth: required\n")).find("server.tls.client_ca"),
            std::string::npos);
  EXPECT_NE(
      errorFor(tlsBlock("    client_auth: maybe\n")).find("expected off, optional or required"),
      std::string::npos);
  EXPECT_NE(errorFor(tlsBlock("    ciphers: \"NOPE-CIPHER\"\n")).find("server.tls.ciphers"),
            std::string::npos);
  EXPECT_NE(errorFor("  tls:\n    certificates: []\n").find("server.tls.certificates"),
            std::string::npos);
  // client_crl: with client certificates only, and a file of PEM CRLs.
  const std::string mtls = "    client_auth: optional\n    client_ca: ca.pem\n";
  EXPECT_NE(errorFor(tlsBlock("    client_crl: ca.pem\n")).find("client_crl: set, but client_auth"),
            std::string::npos);
  EXPECT_NE(errorFor(tlsBlock(mtls + "    client_crl: nowhere.crl\n"))
                .find("server.tls.client_crl: cannot read"),
            std::string::npos);
  EXPECT_NE(errorFor(tlsBlock(mtls + "    client_crl: ca.pem\n"))
                .find("server.tls.client_crl: no CRL in"),
            std::string::npos);
  writeCrl(dir_ / "ca.crl", ca_, {});
  EXPECT_EQ(errorFor(tlsBlock(mtls + "    client_crl: ca.crl\n")), "");
  EXPECT_NE(errorFor("  tls:\n    certificates:\n      - {cert: server.pem, key: server.key, "
                     "password: x}\n")
                .find("unknown key"),
            std::string::npos);
}

// --- the identity a handler sees (the listener alone, with a handler that echoes it) -----

class EchoPeer : public kernel::http::RequestHandler {
 public:
  void handle(kernel::http::Request& req, const kernel::http::Peer& peer,
              kernel::http::Respond respond) override {
    kernel::http::Response res{boost::beast::http::status::ok, req.version()};
    std::string body = peer.tls ? "tls" : "plain";
    if (peer.certificate) {
      body += "\nsha256=" + peer.certificate->sha256 + "\nsubject=" + peer.certificate->subject +
              "\nissuer=" + peer.certificate->issuer + "\nspiffe=" + peer.certificate->spiffe_id;
    }
    res.body() = body;
    respond(std::move(res));
  }
};

TEST_F(TlsTest, HandlerSeesTheVerifiedClientCertificate) {
  kernel::tls::ServerTlsOptions o;
  o.certificates = {{server_.cert_file, server_.key_file}};
  o.client_auth = kernel::tls::ClientAuth::kOptional;
  o.client_ca = ca_.cert_file;
  auto ctx = kernel::tls::ServerContext::create(o, "test");
  ASSERT_TRUE(ctx) << ctx.status().toString();
  kernel::http::Server server({.name = "test", .port = 0, .threads = 1, .tls = *ctx},
                              std::make_shared<EchoPeer>());
  ASSERT_TRUE(server.start());

  ClientOptions with_cert = verifying();
  with_cert.cert = client_.cert_file;
  with_cert.key = client_.key_file;
  Reply r = fetch(server.port(), with_cert, "/");
  ASSERT_EQ(r.status, 200) << r.error;
  unsigned char md[EVP_MAX_MD_SIZE];
  unsigned len = 0;
  X509_digest(client_.cert.get(), EVP_sha256(), md, &len);
  std::string pin;
  for (unsigned i = 0; i < len; ++i) {
    char b[3];
    std::snprintf(b, sizeof b, "%02x", md[i]);
    pin += b;
  }
  EXPECT_EQ(r.body, "tls\nsha256=" + pin +
                        "\nsubject=CN=billing\nissuer=CN=Test CA\n"
                        "spiffe=spiffe://acme.test/ns/prod/sa/billing");

  Reply anonymous = fetch(server.port(), verifying(), "/");
  EXPECT_EQ(anonymous.body, "tls");
  server.stop(1s);
}

// --- the stream under the listener: answers of every size, pipelining, how connections end --

// `n` letters and digits without a short period, so a cut or reordered record shows; safe in
// JSON as they are.
std::string pattern(size_t n) {
  static constexpr char kChars[] = "abcdefghijklmnopqrstuvwxyz0123456789";
  std::string s(n, ' ');
  for (size_t i = 0; i < n; ++i) s[i] = kChars[(i * 7 + i / 997) % 36];
  return s;
}

// GET /bytes/<n>: n bytes of pattern(). Anything else: the target, a newline and the body.
class BytesOrEcho : public kernel::http::RequestHandler {
 public:
  void handle(kernel::http::Request& req, const kernel::http::Peer&,
              kernel::http::Respond respond) override {
    kernel::http::Response res{boost::beast::http::status::ok, req.version()};
    const std::string target(req.target());
    if (target.starts_with("/bytes/")) {
      res.body() = pattern(std::stoul(target.substr(7)));
    } else {
      res.body() = target + "\n" + req.body();
    }
    respond(std::move(res));
  }
};

class TlsStreamTest : public TlsTest {
 protected:
  // trellisd with trellis/echo-c (POST /echo answers with the request as JSON) for tenant
  // acme (key acme-key), TLS on the data plane.
  std::string echoConfig() const {
    std::string yaml = defaultTestConfig();
    const std::string drain = "  drain_timeout_ms: 5000\n";
    yaml.replace(yaml.find(drain), drain.size(), drain + tlsBlock());
    return yaml;
  }

  static std::string echoRequest(const std::string& path, const std::string& body,
                                 bool close = false) {
    return "POST " + path +
           " HTTP/1.1\r\nHost: localhost\r\nAuthorization: Bearer acme-key\r\n"
           "Content-Length: " +
           std::to_string(body.size()) + "\r\n" + (close ? "Connection: close\r\n" : "") + "\r\n" +
           body;
  }

  // The listener alone, in this process, on the server certificate with one thread and
  // BytesOrEcho.
  void startListener(std::chrono::milliseconds read_timeout = 10s) {
    kernel::tls::ServerTlsOptions o;
    o.certificates = {{server_.cert_file, server_.key_file}};
    auto ctx = kernel::tls::ServerContext::create(o, "test");
    ASSERT_TRUE(ctx) << ctx.status().toString();
    listener_ = std::make_unique<kernel::http::Server>(
        kernel::http::ServerOptions{
            .name = "test", .port = 0, .threads = 1, .read_timeout = read_timeout, .tls = *ctx},
        std::make_shared<BytesOrEcho>());
    ASSERT_TRUE(listener_->start());
  }

  void TearDown() override {
    if (listener_) listener_->stop(1s);
  }

  std::unique_ptr<kernel::http::Server> listener_;
};

// Answers below and above one TLS record (16 KiB with the head) on one keep-alive connection:
// a small one goes out with its head as one record, a large one as many. Each arrives whole
// and in order, over TLS 1.3 and 1.2.
TEST_F(TlsStreamTest, AnswersOfEverySizeArriveIntact) {
  TrellisdProcess proc(echoConfig());
  ASSERT_TRUE(proc.start()) << proc.log();
  for (int version : {TLS1_3_VERSION, TLS1_2_VERSION}) {
    ClientOptions o = verifying();
    o.min_version = o.max_version = version;
    TlsClient c;
    ASSERT_EQ(c.connect(proc.port(), o), "");
    for (size_t size : {1, 15'000, 16'200, 16'384, 17'000, 300'000, 1'000'000}) {
      const std::string body = pattern(size);
      ASSERT_TRUE(c.send(echoRequest("/echo", body))) << size;
      Reply r = c.read();
      ASSERT_EQ(r.error, "") << size << " bytes, " << proc.log();
      EXPECT_EQ(r.status, 200) << size;
      EXPECT_TRUE(r.body.find("\"body\":\"" + body + "\"") != std::string::npos)
          << size << " bytes came back as " << r.body.size() << " bytes of JSON";
    }
  }
}

// Requests sent before any answer: in one TLS record (the second is already in the
// listener's buffer when the first is answered) and in records of their own (the next may
// sit in OpenSSL's read-ahead rather than the socket). The answers come in order; after the
// last, which asked for Connection: close, the server's close_notify.
TEST_F(TlsStreamTest, PipelinedRequestsAreAnsweredInOrder) {
  TrellisdProcess proc(echoConfig());
  ASSERT_TRUE(proc.start()) << proc.log();
  TlsClient c;
  ASSERT_EQ(c.connect(proc.port(), verifying()), "");

  ASSERT_TRUE(c.send(echoRequest("/echo/one", "1") + echoRequest("/echo/two", "2")));
  ASSERT_TRUE(c.send(echoRequest("/echo/three", pattern(300'000))));
  ASSERT_TRUE(c.send(echoRequest("/echo/four", "4")));
  ASSERT_TRUE(c.send(echoRequest("/echo/five", "5", /*close=*/true)));
  for (const char* path : {"/echo/one", "/echo/two", "/echo/three", "/echo/four", "/echo/five"}) {
    Reply r = c.read();
    ASSERT_EQ(r.error, "") << path << ": " << proc.log();
    EXPECT_EQ(r.status, 200) << path;
    EXPECT_TRUE(r.body.find(std::string("\"path\":\"") + path + "\"") != std::string::npos)
        << path << ": " << r.body.substr(0, 200);
  }
  EXPECT_EQ(c.readEnd(), SSL_ERROR_ZERO_RETURN);
}

// A reader slower than the answer: the listener's write waits for the socket (OpenSSL's
// WANT_WRITE, more than the socket buffers hold) and goes on where it stopped.
TEST_F(TlsStreamTest, LargeAnswerWaitsForASlowReader) {
  startListener();
  ClientOptions o = verifying();
  o.receive_buffer = 64 * 1024;
  TlsClient c;
  ASSERT_EQ(c.connect(listener_->port(), o), "");
  ASSERT_TRUE(c.send("GET /bytes/16000000 HTTP/1.1\r\nHost: localhost\r\n\r\n"));
  std::this_thread::sleep_for(300ms);
  Reply r = c.read();
  ASSERT_EQ(r.error, "");
  EXPECT_EQ(r.body.size(), 16'000'000u);
  EXPECT_TRUE(r.body == pattern(16'000'000));
  EXPECT_EQ(c.get("/bytes/10").body, pattern(10));  // the connection goes on
}

// A request whose body waits for 100 Continue: that interim answer, then the final one.
TEST_F(TlsStreamTest, ExpectContinueWorksOverTls) {
  startListener();
  TlsClient c;
  ASSERT_EQ(c.connect(listener_->port(), verifying()), "");
  ASSERT_TRUE(
      c.send("POST /echo HTTP/1.1\r\nHost: localhost\r\nExpect: 100-continue\r\n"
             "Content-Length: 5\r\n\r\n"));
  Reply interim = c.read();
  ASSERT_EQ(interim.error, "");
  EXPECT_EQ(interim.status, 100);
  ASSERT_TRUE(c.send("hello"));
  Reply r = c.read();
  EXPECT_EQ(r.status, 200);
  EXPECT_EQ(r.body, "/echo\nhello");
}

// Part of a request and then nothing: the read timeout ends the waiting read, and the client
// hears 408 over TLS, then the server's close_notify.
TEST_F(TlsStreamTest, PartialRequestTimesOutWith408) {
  startListener(300ms);
  TlsClient c;
  ASSERT_EQ(c.connect(listener_->port(), verifying()), "");
  ASSERT_EQ(c.get("/bytes/3").body, pattern(3));
  ASSERT_TRUE(c.send("GET /bytes/5 HTTP/1.1\r\nHo"));
  Reply r = c.read();
  ASSERT_EQ(r.error, "");
  EXPECT_EQ(r.status, 408);
  EXPECT_NE(r.head.find("Connection: close"), std::string::npos) << r.head;
  EXPECT_EQ(c.readEnd(), SSL_ERROR_ZERO_RETURN);
}

// A client's close_notify ends its connection at once, between requests or in the middle of
// one (which then gets no answer).
TEST_F(TlsStreamTest, ClientCloseNotifyClosesTheConnection) {
  startListener();
  TlsClient idle;
  ASSERT_EQ(idle.connect(listener_->port(), verifying()), "");
  ASSERT_EQ(idle.get("/bytes/5").body, pattern(5));
  ASSERT_TRUE(idle.closeNotify());
  EXPECT_EQ(idle.howClosed(10s), "closed");

  TlsClient midway;
  ASSERT_EQ(midway.connect(listener_->port(), verifying()), "");
  ASSERT_EQ(midway.get("/bytes/6").body, pattern(6));  // reads the session tickets too
  ASSERT_TRUE(midway.send("GET /bytes/5 HTTP/1.1\r\nHo"));
  ASSERT_TRUE(midway.closeNotify());
  size_t received = 0;
  EXPECT_EQ(midway.howClosed(10s, &received), "closed");
  EXPECT_EQ(received, 0u);  // no answer, and no close_notify of the server's

  EXPECT_EQ(fetch(listener_->port(), verifying(), "/bytes/7").body, pattern(7));
}

// After an answer with Connection: close the server sends close_notify, then reads and drops
// what the client still sends until the client's close_notify: its close is a FIN, not the
// RST that unread bytes would cause.
TEST_F(TlsStreamTest, ConnectionCloseEndsWithCloseNotifyBothWays) {
  startListener();
  TlsClient c;
  ASSERT_EQ(c.connect(listener_->port(), verifying()), "");
  ASSERT_TRUE(c.send("GET /bytes/5 HTTP/1.1\r\nHost: localhost\r\nConnection: close\r\n\r\n"));
  Reply r = c.read();
  ASSERT_EQ(r.error, "");
  EXPECT_EQ(r.body, pattern(5));
  EXPECT_EQ(c.readEnd(), SSL_ERROR_ZERO_RETURN);
  ASSERT_TRUE(c.send(pattern(400'000)));  // more than it drains in one turn of its loop
  ASSERT_TRUE(c.closeNotify());
  EXPECT_EQ(c.howClosed(10s), "closed");
}

// Clients that reset mid-request or mid-answer, or leave right after asking: only their
// connection ends. The listener goes on serving, and this process lives: OpenSSL's writes to
// a connection the peer closed fail with EPIPE, and the SIGPIPE that comes with it must not
// kill the process.
TEST_F(TlsStreamTest, ClientsThatResetOrLeaveEarlyAffectOnlyThemselves) {
  // Poco's Foundation library blocks SIGPIPE in the thread that loads it, so in every thread
  // of this process; the listener's threads start without that here, as they may elsewhere.
  sigset_t pipe, before;
  sigemptyset(&pipe);
  sigaddset(&pipe, SIGPIPE);
  pthread_sigmask(SIG_UNBLOCK, &pipe, &before);
  startListener();
  pthread_sigmask(SIG_SETMASK, &before, nullptr);
  const uint16_t port = listener_->port();
  {
    TlsClient c;  // half a header
    ASSERT_EQ(c.connect(port, verifying()), "");
    ASSERT_TRUE(c.send("GET /bytes/5 HTTP/1.1\r\nHo"));
    c.reset();
  }
  {
    TlsClient c;  // part of a body
    ASSERT_EQ(c.connect(port, verifying()), "");
    ASSERT_TRUE(c.send("POST /echo HTTP/1.1\r\nHost: localhost\r\nContent-Length: 100000\r\n\r\n" +
                       pattern(1000)));
    c.reset();
  }
  {
    TlsClient c;  // an answer larger than the socket buffers, begun and then refused
    ASSERT_EQ(c.connect(port, verifying()), "");
    ASSERT_TRUE(c.send("GET /bytes/16000000 HTTP/1.1\r\nHost: localhost\r\n\r\n"));
    ASSERT_TRUE(c.readAtLeast(100'000));
    c.reset();
  }
  // Asked and left (a FIN: TLS 1.2 leaves nothing unread after the handshake): the answer's
  // first record draws a RST, the next write meets EPIPE.
  ClientOptions tls12 = verifying();
  tls12.max_version = TLS1_2_VERSION;
  for (int i = 0; i < 20; ++i) {
    TlsClient c;
    ASSERT_EQ(c.connect(port, tls12), "");
    ASSERT_TRUE(c.send("GET /bytes/200000 HTTP/1.1\r\nHost: localhost\r\n\r\n"));
    c.close();
  }
  Reply r = fetch(port, verifying(), "/bytes/9");
  EXPECT_EQ(r.error, "");
  EXPECT_EQ(r.body, pattern(9));
}

}  // namespace
}  // namespace trellis::test
