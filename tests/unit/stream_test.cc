// Egress streams: the tcp:// and tls:// URL and rule forms, and the stream client against
// real TCP and TLS servers on loopback (certificates made with the openssl CLI at test start),
// nginx among them for writes larger than one TLS record.
#include <gtest/gtest.h>

#include <cstdlib>
#include <thread>

#include "services/stream/stream_client.h"
#include "support/loopback_server.h"
#include "support/nginx_server.h"
#include "support/openssl_server.h"
#include "support/test_support.h"
#include "trellis/kernel/services/egress_client.h"
#include "trellis/kernel/services/egress_policy.h"

namespace trellis::kernel::services::stream {
namespace {

namespace asio = boost::asio;
using namespace std::chrono_literals;
using egress::checkAddress;
using egress::checkDestination;
using egress::parseRule;
using egress::parseRules;
using egress::parseUrl;
using egress::Policy;
using test::LoopbackServer;
using test::TestPki;

std::string urlError(const std::string& url) {
  auto r = parseUrl(url);
  return r ? "" : r.status().message();
}

TEST(StreamUrlTest, ParsesTcpAndTlsUrlsWithAPort) {
  auto tcp = parseUrl("TCP://127.0.0.1:514");
  ASSERT_TRUE(tcp) << tcp.status().toString();
  EXPECT_EQ(tcp->scheme, "tcp");
  EXPECT_EQ(tcp->port, 514);
  EXPECT_TRUE(tcp->stream());
  EXPECT_FALSE(tcp->tls());
  EXPECT_EQ(tcp->origin(), "tcp://127.0.0.1:514");
  auto tls = parseUrl("tls://Logs.Example.com:6514/");
  ASSERT_TRUE(tls) << tls.status().toString();
  EXPECT_EQ(tls->host, "logs.example.com");
  EXPECT_TRUE(tls->tls());
  EXPECT_TRUE(tls->stream());
  EXPECT_EQ(parseUrl("tls://[::1]:6514")->host, "::1");
  EXPECT_TRUE(parseUrl("https://x.test/")->tls());
  EXPECT_FALSE(parseUrl("https://x.test/")->stream());
}

TEST(StreamUrlTest, RefusesWhatAStreamCannotCarry) {
  EXPECT_EQ(urlError("tcp://logs.test"), "url: tcp:// and tls:// need a port");
  EXPECT_EQ(urlError("tls://127.0.0.1/"), "url: tcp:// and tls:// need a port");
  EXPECT_EQ(urlError("tls://logs.test:6514/path"),
            "url: a tls:// URL names host:port only (no path, query or fragment)");
  EXPECT_EQ(urlError("tcp://logs.test:514?x=1"),
            "url: a tcp:// URL names host:port only (no path, query or fragment)");
  EXPECT_EQ(urlError("tcp://logs.test:514#f"),
            "url: a tcp:// URL names host:port only (no path, query or fragment)");
  EXPECT_EQ(urlError("tcp://user@logs.test:514"), "url: userinfo (user@host) is not allowed");
  EXPECT_EQ(urlError("tcp://logs.test:0"), "url: port 0 is outside 1..65535");
  EXPECT_EQ(urlError("tcp://0x7f.1:514").rfind("url: host \"0x7f.1\" is not a canonical", 0), 0u);
  EXPECT_EQ(urlError("udp://logs.test:514"), "url: scheme \"udp\" is not http, https, tcp or tls");
  // A redirect never turns an HTTP request into a stream.
  auto base = parseUrl("http://api.test/");
  auto hop = egress::resolveReference(*base, "tcp://127.0.0.1:25");
  ASSERT_FALSE(hop);
  EXPECT_EQ(hop.status().message(), "url: a redirect to tcp:// is not followed");
}

TEST(StreamRuleTest, RulesNameAPortAndAllowTheirOwnSchemeOnly) {
  auto tcp = parseRule("tcp://127.0.0.1:514");
  ASSERT_TRUE(tcp) << tcp.status().toString();
  EXPECT_TRUE(tcp->matches(*parseUrl("tcp://127.0.0.1:514")));
  EXPECT_FALSE(tcp->matches(*parseUrl("tls://127.0.0.1:514")));
  EXPECT_FALSE(tcp->matches(*parseUrl("tcp://127.0.0.1:515")));
  auto any = parseRule("tls://*.example.com:*");
  ASSERT_TRUE(any) << any.status().toString();
  EXPECT_TRUE(any->matches(*parseUrl("tls://logs.example.com:6514")));
  EXPECT_FALSE(any->matches(*parseUrl("tcp://logs.example.com:6514")));
  EXPECT_FALSE(any->matches(*parseUrl("https://logs.example.com:6514/")));
  // An https rule never allows tls://, nor a tls rule https://.
  EXPECT_FALSE(
      parseRule("https://logs.example.com:*")->matches(*parseUrl("tls://logs.example.com:443")));
  EXPECT_FALSE(
      parseRule("tls://logs.example.com:*")->matches(*parseUrl("https://logs.example.com/")));

  for (auto [bad, message] : {std::pair{"tcp://logs.test", "tcp:// and tls:// rules need a port"},
                              {"tls://logs.test:6514/x", "no path, query or userinfo"},
                              {"udp://logs.test:1", "scheme must be http, https, tcp or tls"},
                              {"tcp://logs.test:99999", "outside 1..65535"}}) {
    auto r = parseRule(bad);
    ASSERT_FALSE(r) << bad;
    EXPECT_NE(r.status().message().find(std::string("egress rule \"") + bad + "\""),
              std::string::npos)
        << r.status().message();
    EXPECT_NE(r.status().message().find(message), std::string::npos) << r.status().message();
  }
}

TEST(StreamPolicyTest, OnlyAGrantOfTheSameSchemeNamesALoopbackAddress) {
  const auto url = *parseUrl("tls://127.0.0.1:6514");
  const auto loopback = asio::ip::make_address("127.0.0.1");
  Policy p{.manifest = *parseRules({"tls://127.0.0.1:*"}), .tenant = "acme"};
  EXPECT_TRUE(checkDestination(url, p));
  Status no_grant = checkAddress(loopback, url, p);
  EXPECT_EQ(no_grant.code(), StatusCode::kPermissionDenied);
  EXPECT_NE(no_grant.message().find("a loopback address; only a tenant egress grant rule naming "
                                    "it (e.g. tls://127.0.0.1:6514)"),
            std::string::npos)
      << no_grant.message();
  p.grant = *parseRules({"tcp://127.0.0.1:6514"});
  EXPECT_FALSE(checkDestination(url, p));  // the grant's scheme is not the URL's
  EXPECT_FALSE(checkAddress(loopback, url, p));
  p.grant = *parseRules({"tls://127.0.0.1:6514"});
  EXPECT_TRUE(checkAddress(loopback, url, p));
  // A system plugin's tenant-less call: the operator's list plays the grant, and says so.
  Policy sys{.manifest = *parseRules({"tls://*:*"}),
             .tenant = "_system",
             .system_plugin = "trellis/audit"};
  Status s = checkAddress(loopback, url, sys);
  EXPECT_NE(s.message().find("in the operator's egress list for system plugin trellis/audit "
                             "(plugins.enabled[].egress)"),
            std::string::npos)
      << s.message();
  sys.grant = *parseRules({"tls://10.0.0.1:6514"});
  s = checkDestination(url, sys);
  EXPECT_NE(s.message().find("not allowed by the operator's egress list for system plugin "
                             "trellis/audit"),
            std::string::npos)
      << s.message();
}

TEST(StreamPolicyTest, HttpSendRefusesAStreamUrl) {
  auto client = egress::EgressClient::create({});
  ASSERT_TRUE(client);
  Policy p{.manifest = *parseRules({"tcp://*:*"}), .tenant = "acme"};
  auto r = (*client)->send({.method = "GET", .url = "tcp://127.0.0.1:9"}, p);
  ASSERT_FALSE(r);
  EXPECT_EQ(r.status().code(), StatusCode::kInvalid);
  EXPECT_NE(r.status().message().find("open it with stream_connect"), std::string::npos);
}

// ---------------------------------------------------------------- the client on loopback

LoopbackServer::Handler echo() {
  return [](const auto& read, const auto& write, const auto&) {
    for (std::string bytes = read(); !bytes.empty(); bytes = read()) {
      if (!write(bytes)) return;
    }
  };
}

// Accepts and then neither reads nor writes until the server stops.
LoopbackServer::Handler silent() {
  return [](const auto&, const auto&, const auto& stop) {
    while (!stop) std::this_thread::sleep_for(10ms);
  };
}

// Closes the connection at once.
LoopbackServer::Handler closer() {
  return [](const auto&, const auto&, const auto&) {};
}

class StreamClientTest : public ::testing::Test {
 protected:
  void SetUp() override {
    ASSERT_TRUE(pki_.ok()) << "openssl could not make the test certificates";
    auto c = StreamClient::create({.ca_file = pki_.path("ca.pem")});
    ASSERT_TRUE(c) << c.status().toString();
    client_ = std::move(*c);
  }

  // Rules that let the tenant reach exactly this loopback port.
  static Policy loopbackPolicy(uint16_t port, const std::string& scheme) {
    const std::string p = std::to_string(port);
    return Policy{
        .manifest = *parseRules({scheme + "://localhost:*", scheme + "://127.0.0.1:*"}),
        .grant = *parseRules({scheme + "://localhost:" + p, scheme + "://127.0.0.1:" + p}),
        .tenant = "acme"};
  }

  Result<std::unique_ptr<Stream>> connect(const std::string& scheme, const std::string& host,
                                          uint16_t port,
                                          Timeouts timeouts = {.connect = 2000ms, .io = 2000ms}) {
    return client_->connect(scheme + "://" + host + ":" + std::to_string(port),
                            loopbackPolicy(port, scheme), timeouts);
  }

  // Reads until `want` bytes came, the peer closed, or a call failed.
  static std::string readBytes(Stream& s, size_t want) {
    std::string out;
    char buf[65536];
    while (out.size() < want) {
      auto n = s.read(buf, std::min(sizeof buf, want - out.size()));
      if (!n || *n == 0) break;
      out.append(buf, *n);
    }
    return out;
  }

  static TestPki& sharedPki() {
    static TestPki pki;
    return pki;
  }

  TestPki& pki_ = sharedPki();
  std::unique_ptr<StreamClient> client_;
};

TEST_F(StreamClientTest, EchoesOverTcpAndWritesEveryByte) {
  LoopbackServer server(LoopbackServer::kRawBytes, echo());
  auto s = connect("tcp", "127.0.0.1", server.port());
  ASSERT_TRUE(s) << s.status().toString();
  ASSERT_TRUE((*s)->write("<134>1 - host app - - - hello\n"));
  EXPECT_EQ(readBytes(**s, 30), "<134>1 - host app - - - hello\n");
}

TEST_F(StreamClientTest, AWriteLargerThanTheSocketBuffersGoesOutWhole) {
  const size_t size = 8 * 1024 * 1024;
  // Reads everything, then answers how much came and a checksum of it.
  LoopbackServer server(LoopbackServer::kRawBytes,
                        [size](const auto& read, const auto& write, const auto&) {
                          size_t got = 0;
                          uint64_t sum = 0;
                          while (got < size) {
                            std::string bytes = read();
                            if (bytes.empty()) return;
                            for (unsigned char c : bytes) sum = sum * 31 + c;
                            got += bytes.size();
                          }
                          write(std::to_string(got) + " " + std::to_string(sum) + "\n");
                        });
  auto s = connect("tcp", "127.0.0.1", server.port());
  ASSERT_TRUE(s) << s.status().toString();
  std::string big(size, 'x');
  uint64_t sum = 0;
  for (size_t i = 0; i < big.size(); ++i) {
    big[i] = static_cast<char>('a' + (i * 7) % 26);
    sum = sum * 31 + static_cast<unsigned char>(big[i]);
  }
  size_t written = 0;
  ASSERT_TRUE((*s)->write(big, &written));
  EXPECT_EQ(written, size);
  const std::string expected = std::to_string(size) + " " + std::to_string(sum) + "\n";
  EXPECT_EQ(readBytes(**s, expected.size()), expected);
}

TEST_F(StreamClientTest, EchoesOverTlsVerifiedByTheTestCa) {
  LoopbackServer server(LoopbackServer::kRawBytes, echo(), &pki_, "localhost");
  auto s = connect("tls", "localhost", server.port());
  ASSERT_TRUE(s) << s.status().toString();
  ASSERT_TRUE((*s)->write("over tls\n"));
  EXPECT_EQ(readBytes(**s, 9), "over tls\n");
}

TEST_F(StreamClientTest, RefusesAWrongNameAndAnUntrustedCaNamingTheProblem) {
  LoopbackServer other(LoopbackServer::kRawBytes, echo(), &pki_, "other");
  auto wrong_name = connect("tls", "localhost", other.port());
  ASSERT_FALSE(wrong_name);
  EXPECT_EQ(wrong_name.status().code(), StatusCode::kUnavailable);
  EXPECT_NE(wrong_name.status().message().find("certificate verify failed: hostname mismatch"),
            std::string::npos)
      << wrong_name.status().message();

  LoopbackServer rogue(LoopbackServer::kRawBytes, echo(), &pki_, "rogue");
  auto untrusted = connect("tls", "localhost", rogue.port());
  ASSERT_FALSE(untrusted);
  EXPECT_EQ(untrusted.status().code(), StatusCode::kUnavailable);
  EXPECT_NE(
      untrusted.status().message().find("certificate verify failed: unable to get local issuer"),
      std::string::npos)
      << untrusted.status().message();
}

TEST_F(StreamClientTest, RefusesAnExpiredCertificateAndATls11OnlyServer) {
  LoopbackServer expired(LoopbackServer::kRawBytes, echo(), &pki_, "expired");
  auto r = connect("tls", "localhost", expired.port());
  ASSERT_FALSE(r);
  EXPECT_EQ(r.status().code(), StatusCode::kUnavailable);
  EXPECT_NE(r.status().message().find("certificate has expired (expired)"), std::string::npos)
      << r.status().message();

  test::OpensslServer old(pki_.path("localhost.pem"), pki_.path("localhost.key"),
                          test::OpensslServer::tls11Only());
  ASSERT_TRUE(old.ready());
  r = connect("tls", "localhost", old.port());
  ASSERT_FALSE(r);
  EXPECT_EQ(r.status().code(), StatusCode::kUnavailable);
  EXPECT_NE(r.status().message().find("offers no TLS version this client accepts"),
            std::string::npos)
      << r.status().message();
}

TEST_F(StreamClientTest, RefusesDestinationsOutsideTheRulesBeforeDialling) {
  LoopbackServer server(LoopbackServer::kRawBytes, echo());
  const std::string port = std::to_string(server.port());
  // The manifest allows the name, but no grant names the loopback address it resolves to.
  Policy manifest_only{.manifest = *parseRules({"tcp://localhost:*"}), .tenant = "acme"};
  auto r = client_->connect("tcp://localhost:" + port, manifest_only, {});
  ASSERT_FALSE(r);
  EXPECT_EQ(r.status().code(), StatusCode::kPermissionDenied);
  EXPECT_NE(r.status().message().find("a loopback address"), std::string::npos);
  // A tls rule does not allow a tcp stream.
  r = client_->connect("tcp://127.0.0.1:" + port, loopbackPolicy(server.port(), "tls"), {});
  ASSERT_FALSE(r);
  EXPECT_EQ(r.status().code(), StatusCode::kPermissionDenied);
  EXPECT_NE(r.status().message().find("is not allowed by the plugin's manifest egress rules"),
            std::string::npos);
  auto http =
      client_->connect("http://127.0.0.1:" + port, loopbackPolicy(server.port(), "http"), {});
  ASSERT_FALSE(http);
  EXPECT_EQ(http.status().code(), StatusCode::kInvalid);
  EXPECT_EQ(server.connections(), 0);
}

TEST_F(StreamClientTest, APeerThatNeverReadsCostsTheWriterTheIoTimeout) {
  LoopbackServer server(LoopbackServer::kRawBytes, silent());
  auto s = connect("tcp", "127.0.0.1", server.port(), {.connect = 2000ms, .io = 300ms});
  ASSERT_TRUE(s) << s.status().toString();
  // Far more than the socket buffers hold: the write can only end by its deadline.
  const std::string flood(64 * 1024 * 1024, 'f');
  size_t written = 0;
  Status st = (*s)->write(flood, &written);
  EXPECT_EQ(st.code(), StatusCode::kTimeout) << st.toString();
  EXPECT_NE(st.message().find("took over the io timeout of 300 ms"), std::string::npos);
  EXPECT_LT(written, flood.size());
  // The stream is closed after a write cut short.
  Status again = (*s)->write("x");
  EXPECT_EQ(again.code(), StatusCode::kUnavailable) << again.toString();
}

TEST_F(StreamClientTest, APeerThatSaysNothingTimesOutTheReadAndTheStreamStaysUsable) {
  for (bool tls : {false, true}) {
    SCOPED_TRACE(tls ? "tls" : "tcp");
    LoopbackServer server(LoopbackServer::kRawBytes, echo(), tls ? &pki_ : nullptr, "localhost");
    auto s =
        connect(tls ? "tls" : "tcp", "localhost", server.port(), {.connect = 2000ms, .io = 200ms});
    ASSERT_TRUE(s) << s.status().toString();
    char buf[16];
    auto nothing = (*s)->read(buf, sizeof buf);
    ASSERT_FALSE(nothing);
    EXPECT_EQ(nothing.status().code(), StatusCode::kTimeout);
    EXPECT_NE(nothing.status().message().find("sent nothing within the io timeout of 200 ms"),
              std::string::npos);
    ASSERT_TRUE((*s)->write("still here"));
    EXPECT_EQ(readBytes(**s, 10), "still here");
  }
}

TEST_F(StreamClientTest, APeerThatClosesReadsAsEndOfStreamAndRefusesWrites) {
  for (bool tls : {false, true}) {
    SCOPED_TRACE(tls ? "tls" : "tcp");
    LoopbackServer server(LoopbackServer::kRawBytes, closer(), tls ? &pki_ : nullptr, "localhost");
    auto s = connect(tls ? "tls" : "tcp", "localhost", server.port());
    ASSERT_TRUE(s) << s.status().toString();
    char buf[16];
    auto eof = (*s)->read(buf, sizeof buf);
    ASSERT_TRUE(eof) << eof.status().toString();
    EXPECT_EQ(*eof, 0u);
    EXPECT_EQ(*(*s)->read(buf, sizeof buf), 0u);  // and stays so
    // The first write after the peer's close may still reach its socket buffer; the peer's
    // reset refuses the next ones.
    Status st;
    for (int i = 0; i < 100 && st.isOk(); ++i) {
      st = (*s)->write("anyone?");
      if (st.isOk()) std::this_thread::sleep_for(10ms);
    }
    EXPECT_EQ(st.code(), StatusCode::kUnavailable) << st.toString();
  }
}

// ---------------------------------------------------------------- writes over one TLS record

// nginx over TLS 1.2 or 1.3 (the parameter, as its ssl_protocols), spoken to in HTTP over a
// tls:// stream: each PUT's body lands in a file (WebDAV), so what each write sent is
// compared byte for byte with what nginx decrypted. A TLS record carries at most 16 KiB: a
// larger write goes out as many records, and must go on until the last byte went.
class StreamTlsWriteTest : public StreamClientTest,
                           public ::testing::WithParamInterface<std::string> {
 protected:
  struct Answer {
    int status = 0;  // 0: the stream ended or failed before a whole response head
    std::string body{};
  };
  // One HTTP/1.1 response (Content-Length framed, else up to the peer's close); `carry`
  // holds what was read past the previous one.
  static Answer readAnswer(Stream& s, std::string& carry) {
    char buf[65536];
    auto more = [&] {
      auto n = s.read(buf, sizeof buf);
      if (!n || *n == 0) return false;
      carry.append(buf, *n);
      return true;
    };
    size_t end;
    while ((end = carry.find("\r\n\r\n")) == std::string::npos) {
      if (!more()) return {};
    }
    std::string head = carry.substr(0, end + 4);
    carry.erase(0, end + 4);
    for (char& c : head) c = static_cast<char>(std::tolower(static_cast<unsigned char>(c)));
    Answer a{.status = std::atoi(head.c_str() + 9)};  // "http/1.1 201 created"
    const auto at = head.find("\r\ncontent-length:");
    const size_t length = at == std::string::npos
                              ? std::string::npos
                              : std::strtoul(head.c_str() + at + 17, nullptr, 10);
    while (carry.size() < length && more()) {
    }
    a.body = carry.substr(0, length);
    carry.erase(0, a.body.size());
    return a;
  }
};

TEST_P(StreamTlsWriteTest, WritesLargerThanOneRecordReachTheTlsPeerWhole) {
  test::TempDir root;
  test::NginxServer nginx(0);
  nginx.serveTls(pki_.path("localhost.pem"), pki_.path("localhost.key"), GetParam());
  nginx.serveDirectory(root.path());
  nginx.acceptUploads();
  ASSERT_TRUE(nginx.start()) << nginx.error();
  auto s = connect("tls", "localhost", nginx.port(), {.connect = 5000ms, .io = 20000ms});
  ASSERT_TRUE(s) << s.status().toString();
  Stream& stream = **s;
  std::string carry;

  // A request's head and body in one write each time.
  const std::vector<size_t> sizes = {16200, 16384, 16385, 64 * 1024, 1024 * 1024 + 1};
  unsigned seed = 11;
  for (size_t size : sizes) {
    SCOPED_TRACE(std::to_string(size) + " bytes over " + GetParam());
    const std::string body = test::randomBytes(size, seed++);
    const std::string name = std::to_string(size) + ".bin";
    const std::string request = "PUT /up/" + name + " HTTP/1.1\r\nHost: localhost\r\n" +
                                "Content-Length: " + std::to_string(size) + "\r\n\r\n" + body;
    size_t written = 0;
    ASSERT_TRUE(stream.write(request, &written));
    EXPECT_EQ(written, request.size());
    EXPECT_EQ(readAnswer(stream, carry).status, 201);
    EXPECT_EQ(test::bytesDiffer(test::readFile(root / ("up/" + name)), body), "");
  }

  // A streamed upload: chunked, one write per piece, pieces on both sides of a record.
  std::string streamed;
  ASSERT_TRUE(stream.write(
      "PUT /up/streamed.bin HTTP/1.1\r\nHost: localhost\r\nTransfer-Encoding: chunked\r\n\r\n"));
  for (size_t size : {1, 16383, 16384, 16385, 100000, 3 * 65536 + 7, 5}) {
    const std::string piece = test::randomBytes(size, seed++);
    char length[32];
    std::snprintf(length, sizeof length, "%zx\r\n", size);
    ASSERT_TRUE(stream.write(length));
    ASSERT_TRUE(stream.write(piece));
    ASSERT_TRUE(stream.write("\r\n"));
    streamed += piece;
  }
  ASSERT_TRUE(stream.write("0\r\n\r\n"));
  EXPECT_EQ(readAnswer(stream, carry).status, 201);
  EXPECT_EQ(test::bytesDiffer(test::readFile(root / "up/streamed.bin"), streamed), "");

  // And back: reads of a response many records long.
  ASSERT_TRUE(stream.write(
      "GET /up/streamed.bin HTTP/1.1\r\nHost: localhost\r\nConnection: close\r\n\r\n"));
  const Answer back = readAnswer(stream, carry);
  EXPECT_EQ(back.status, 200);
  EXPECT_EQ(test::bytesDiffer(back.body, streamed), "");

  // All on the one connection, as the TLS version asked for.
  const auto lines = nginx.logged(sizes.size() + 2);
  ASSERT_EQ(lines.size(), sizes.size() + 2) << test::readFile(nginx.accessLog());
  for (size_t i = 0; i < lines.size(); ++i) {
    EXPECT_EQ(lines[i].ssl_protocol, GetParam()) << i;
    EXPECT_EQ(lines[i].connection, lines[0].connection) << i;
  }
  EXPECT_EQ(nginx.errorLog().find("[error]"), std::string::npos) << nginx.errorLog();
}

INSTANTIATE_TEST_SUITE_P(TlsVersions, StreamTlsWriteTest, ::testing::Values("TLSv1.2", "TLSv1.3"),
                         [](const auto& info) {
                           return info.param == "TLSv1.2" ? std::string("Tls12")
                                                          : std::string("Tls13");
                         });

}  // namespace
}  // namespace trellis::kernel::services::stream
