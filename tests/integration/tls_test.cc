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
#include <signal.h>
#include <sys/socket.h>
#include <unistd.h>

#include <atomic>
#include <chrono>
#include <cstdio>
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
};

struct Reply {
  std::string error;  // "" = a response arrived
  int status = 0;
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
    Reply r;
    std::string req = "GET " + target + " HTTP/1.1\r\nHost: " + host + "\r\n\r\n";
    if (SSL_write(ssl_, req.data(), static_cast<int>(req.size())) <= 0) {
      r.error = "write: " + errors();
      return r;
    }
    std::string in;
    size_t header_end = std::string::npos;
    size_t need = 0;
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
        auto cl = in.find("Content-Length: ");
        if (cl != std::string::npos && cl < header_end) need = std::stoul(in.substr(cl + 16));
      }
    }
    r.status = std::stoi(in.substr(9, 3));
    r.body = in.substr(header_end + 4, need);
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

  SSL_CTX* ctx_ = nullptr;
  SSL* ssl_ = nullptr;
  int fd_ = -1;
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

}  // namespace
}  // namespace trellis::test
