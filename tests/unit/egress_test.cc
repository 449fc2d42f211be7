// Egress: the URL and rule parser, the address ranges, and the client against real HTTP and
// HTTPS servers on loopback (certificates made with the openssl CLI at test start), nginx
// among them for bodies larger than one TLS record.
#include <gtest/gtest.h>

#include <atomic>
#include <boost/asio.hpp>
#include <boost/asio/ssl.hpp>
#include <functional>
#include <thread>

#include "support/loopback_server.h"
#include "support/nginx_server.h"
#include "support/openssl_server.h"
#include "support/test_support.h"
#include "trellis/kernel/services/egress_client.h"
#include "trellis/kernel/services/egress_policy.h"

namespace trellis::kernel::services::egress {
namespace {

namespace asio = boost::asio;
using namespace std::chrono_literals;
using test::TempDir;

// ---------------------------------------------------------------- parsing and policy

Status urlStatus(const std::string& url) {
  auto r = parseUrl(url);
  return r ? Status::ok() : r.status();
}

TEST(EgressUrlTest, ParsesAbsoluteHttpUrls) {
  auto u = parseUrl("HTTPS://Api.Example.COM./v1/items?page=2#frag");
  ASSERT_TRUE(u) << u.status().toString();
  EXPECT_EQ(u->scheme, "https");
  EXPECT_EQ(u->host, "api.example.com");
  EXPECT_EQ(u->port, 443);
  EXPECT_EQ(u->target, "/v1/items?page=2");
  EXPECT_EQ(u->redacted(), "https://api.example.com:443/v1/items");
  auto v6 = parseUrl("http://[::1]:8080");
  ASSERT_TRUE(v6);
  EXPECT_EQ(v6->host, "::1");
  EXPECT_TRUE(v6->host_is_ip);
  EXPECT_EQ(v6->target, "/");
  EXPECT_EQ(parseUrl("http://10.0.0.1:81?x")->target, "/?x");
}

TEST(EgressUrlTest, RefusesEverythingButCanonicalForms) {
  for (const char* url :
       {"http://2130706433/", "http://0x7f.1/", "http://0177.0.0.1/", "http://127.1/",
        "http://0x7f000001/", "http://127.0.0.01/", "http://1.2.3.4.5/", "http://256.0.0.1/"}) {
    Status s = urlStatus(url);
    EXPECT_EQ(s.code(), StatusCode::kInvalid) << url;
    EXPECT_NE(s.message().find("not a canonical dotted-decimal IPv4"), std::string::npos)
        << url << ": " << s.message();
  }
  EXPECT_NE(urlStatus("http://user:pw@127.0.0.1/").message().find("userinfo"), std::string::npos);
  EXPECT_NE(urlStatus("http://evil.com@127.0.0.1/").message().find("userinfo"), std::string::npos);
  EXPECT_NE(urlStatus("ftp://example.com/").message().find("scheme"), std::string::npos);
  EXPECT_NE(urlStatus("/relative/path").message().find("absolute"), std::string::npos);
  EXPECT_NE(urlStatus("http:///path").message().find("no host"), std::string::npos);
  EXPECT_NE(urlStatus("http://example.com:0/").message().find("1..65535"), std::string::npos);
  EXPECT_NE(urlStatus("http://example.com:99999/").message().find("1..65535"), std::string::npos);
  EXPECT_NE(urlStatus("http://exa%6dple.com/").message().find("percent"), std::string::npos);
  EXPECT_NE(urlStatus("http://a b.com/").message().find("character"), std::string::npos);
  EXPECT_NE(urlStatus("http://example.com/a b").message().find("space"), std::string::npos);
  for (const char* url : {"http://user:pw@127.0.0.1/", "ftp://x/", "http://0x7f.1/"}) {
    EXPECT_EQ(urlStatus(url).message().rfind("url: ", 0), 0u) << url;
  }
}

TEST(EgressRuleTest, MatchesSchemeHostAndPort) {
  auto wild = parseRule("https://*.example.com:443");
  ASSERT_TRUE(wild) << wild.status().toString();
  EXPECT_TRUE(wild->matches(*parseUrl("https://api.example.com/")));
  EXPECT_TRUE(wild->matches(*parseUrl("https://a.b.example.com:443/")));
  EXPECT_FALSE(wild->matches(*parseUrl("https://example.com/")));  // not the apex
  EXPECT_FALSE(wild->matches(*parseUrl("https://evilexample.com/")));
  EXPECT_FALSE(wild->matches(*parseUrl("http://api.example.com:443/")));
  EXPECT_FALSE(wild->matches(*parseUrl("https://api.example.com:8443/")));
  auto any_port = parseRule("http://api.test:*");
  ASSERT_TRUE(any_port);
  EXPECT_TRUE(any_port->matches(*parseUrl("http://api.test:9/")));
  auto default_port = parseRule("http://api.test");
  EXPECT_FALSE(default_port->matches(*parseUrl("http://api.test:8080/")));
  auto v6 = parseRule("http://[::1]:8080");
  ASSERT_TRUE(v6);
  EXPECT_TRUE(v6->matches(*parseUrl("http://[::1]:8080/x")));
  for (const char* bad : {"api.test", "ftp://x", "https://*.com", "https://x/path", "https://u@x",
                          "https://x:70000", "https://0x7f.1"}) {
    auto r = parseRule(bad);
    ASSERT_FALSE(r) << bad;
    EXPECT_NE(r.status().message().find(std::string("egress rule \"") + bad), std::string::npos)
        << r.status().message();
  }
}

TEST(EgressAddressTest, ClassifiesSpecialRanges) {
  auto range = [](const char* a) { return std::string(specialRange(asio::ip::make_address(a))); };
  EXPECT_EQ(range("127.0.0.1"), "loopback");
  EXPECT_EQ(range("127.255.0.9"), "loopback");
  EXPECT_EQ(range("10.1.2.3"), "private");
  EXPECT_EQ(range("172.16.0.1"), "private");
  EXPECT_EQ(range("172.31.255.255"), "private");
  EXPECT_EQ(range("192.168.1.1"), "private");
  EXPECT_EQ(range("169.254.169.254"), "link-local");
  EXPECT_EQ(range("0.0.0.0"), "unspecified (0.0.0.0/8)");
  EXPECT_EQ(range("0.1.2.3"), "unspecified (0.0.0.0/8)");
  EXPECT_EQ(range("100.64.0.1"), "shared (CGNAT)");
  EXPECT_EQ(range("224.0.0.1"), "multicast");
  EXPECT_EQ(range("255.255.255.255"), "reserved");
  EXPECT_EQ(range("::1"), "loopback");
  EXPECT_EQ(range("::"), "unspecified");
  EXPECT_EQ(range("fd00::1"), "unique-local");
  EXPECT_EQ(range("fc12::1"), "unique-local");
  EXPECT_EQ(range("fe80::1"), "link-local");
  EXPECT_EQ(range("::ffff:127.0.0.1"), "loopback");
  EXPECT_EQ(range("::ffff:169.254.169.254"), "link-local");
  EXPECT_EQ(range("64:ff9b::a9fe:a9fe"), "NAT64");
  EXPECT_EQ(range("8.8.8.8"), "");
  EXPECT_EQ(range("172.32.0.1"), "");
  EXPECT_EQ(range("2606:4700::1111"), "");
}

TEST(EgressPolicyTest, GrantNarrowsTheManifestAndAloneNamesPrivateAddresses) {
  Policy p{.manifest = *parseRules({"https://*.example.com", "http://10.0.0.7:8080"}),
           .grant = std::nullopt,
           .tenant = "acme"};
  EXPECT_TRUE(checkDestination(*parseUrl("https://api.example.com/"), p));
  Status outside = checkDestination(*parseUrl("https://evil.test/"), p);
  EXPECT_EQ(outside.code(), StatusCode::kPermissionDenied);
  EXPECT_NE(outside.message().find("manifest egress rules [https://*.example.com, "),
            std::string::npos)
      << outside.message();
  // The manifest naming a private address is not enough: only a grant may.
  const Url internal = *parseUrl("http://10.0.0.7:8080/");
  EXPECT_TRUE(checkDestination(internal, p));
  Status priv = checkAddress(asio::ip::make_address("10.0.0.7"), internal, p);
  EXPECT_EQ(priv.code(), StatusCode::kPermissionDenied);
  EXPECT_NE(priv.message().find("10.0.0.7, a private address"), std::string::npos);
  p.grant = *parseRules({"http://10.0.0.7:8080"});
  EXPECT_TRUE(checkAddress(asio::ip::make_address("10.0.0.7"), internal, p));
  EXPECT_TRUE(checkAddress(asio::ip::make_address("::ffff:10.0.0.7"), internal, p));
  EXPECT_FALSE(checkAddress(asio::ip::make_address("10.0.0.8"), internal, p));
  Status narrowed = checkDestination(*parseUrl("https://api.example.com/"), p);
  EXPECT_NE(narrowed.message().find("not allowed by tenant acme's egress grant"), std::string::npos)
      << narrowed.message();
  EXPECT_TRUE(checkAddress(asio::ip::make_address("93.184.216.34"),
                           *parseUrl("https://api.example.com/"), p));
}

TEST(EgressHeadersTest, RefusesKernelHeadersAndInjection) {
  EXPECT_TRUE(validateRequestHeaders({{"X-Api-Key", "k"}, {"Accept", "*/*"}}));
  EXPECT_NE(validateRequestHeaders({{"Host", "x"}}).message().find("set by the kernel"),
            std::string::npos);
  EXPECT_FALSE(validateRequestHeaders({{"transfer-encoding", "chunked"}}));
  EXPECT_NE(validateRequestHeaders({{"X-A", "v\r\nX-Injected: 1"}}).message().find("CR, LF"),
            std::string::npos);
  EXPECT_NE(validateRequestHeaders({{"Bad Name", "v"}}).message().find("not a header name"),
            std::string::npos);
}

// ---------------------------------------------------------------- loopback servers

using test::LoopbackServer;
using test::reply;
using test::TestPki;

// Answers every request on the connection with its own request line and headers.
LoopbackServer::Handler echo() {
  return [](const auto& read, const auto& write, const auto&) {
    for (std::string req = read(); !req.empty(); req = read()) {
      if (!write(reply(200, req))) return;
    }
  };
}

// Redirects every request to `location`.
LoopbackServer::Handler redirectTo(std::string location) {
  return [location](const auto& read, const auto& write, const auto&) {
    for (std::string req = read(); !req.empty(); req = read()) {
      if (req.rfind("GET /final", 0) == 0) {
        write(reply(200, "final"));
      } else {
        write(reply(302, "", "Location: " + location + "\r\n"));
      }
    }
  };
}

class EgressClientTest : public ::testing::Test {
 protected:
  void SetUp() override {
    ASSERT_TRUE(pki_.ok()) << "openssl could not make the test certificates";
    auto c = EgressClient::create({.ca_file = pki_.path("ca.pem")});
    ASSERT_TRUE(c) << c.status().toString();
    client_ = std::move(*c);
  }

  // Rules that let the tenant reach exactly this loopback port.
  Policy loopbackPolicy(uint16_t port, const std::string& scheme = "http") {
    const std::string p = std::to_string(port);
    return Policy{
        .manifest = *parseRules({scheme + "://localhost:*", scheme + "://127.0.0.1:*"}),
        .grant = *parseRules({scheme + "://localhost:" + p, scheme + "://127.0.0.1:" + p}),
        .tenant = "acme"};
  }

  Result<Response> get(const std::string& url, const Policy& policy, int redirects = 0) {
    Request req{.method = "GET", .url = url};
    req.max_redirects = redirects;
    req.timeouts = {.connect = 2000ms, .first_byte = 2000ms, .total = 5000ms};
    return client_->send(req, policy);
  }

  // Made once per run: openssl takes about a second.
  static TestPki& sharedPki() {
    static TestPki pki;
    return pki;
  }

  TestPki& pki_ = sharedPki();
  std::unique_ptr<EgressClient> client_;
};

TEST_F(EgressClientTest, AllowedHostWorksAndKeepsTheConnectionAlive) {
  LoopbackServer server(echo());
  const std::string base = "http://localhost:" + std::to_string(server.port());
  Request req{.method = "POST", .url = base + "/v1/items?token=secret", .body = "payload"};
  req.headers = {{"X-Api-Key", "k1"}};
  req.traceparent = "00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01";
  auto r = client_->send(req, loopbackPolicy(server.port()));
  ASSERT_TRUE(r) << r.status().toString();
  EXPECT_EQ(r->status, 200);
  EXPECT_EQ(r->body.rfind("POST /v1/items?token=secret HTTP/1.1\r\n", 0), 0u) << r->body;
  EXPECT_NE(r->body.find("Host: localhost:" + std::to_string(server.port())), std::string::npos);
  EXPECT_NE(r->body.find("X-Api-Key: k1"), std::string::npos);
  EXPECT_NE(r->body.find("traceparent: 00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01"),
            std::string::npos);
  EXPECT_NE(r->body.find("\r\n\r\npayload"), std::string::npos);
  EXPECT_EQ(r->url, base + "/v1/items") << "the query string is never reported";
  EXPECT_EQ(r->bytes_sent, 7u);
  auto again = get(base + "/second", loopbackPolicy(server.port()));
  ASSERT_TRUE(again) << again.status().toString();
  EXPECT_EQ(server.connections(), 1) << "the second request reused the connection";
  EXPECT_EQ(client_->idleConnections(), 1u);
}

TEST_F(EgressClientTest, HttpsVerifiesTheTestCaAndSendsSni) {
  LoopbackServer server(echo(), &pki_, "localhost");
  auto r = get("https://localhost:" + std::to_string(server.port()) + "/tls",
               loopbackPolicy(server.port(), "https"));
  ASSERT_TRUE(r) << r.status().toString();
  EXPECT_EQ(r->status, 200);
  EXPECT_EQ(r->body.rfind("GET /tls HTTP/1.1", 0), 0u);
}

TEST_F(EgressClientTest, RefusesAHostOutsideTheRulesBeforeConnecting) {
  LoopbackServer server(echo());
  Policy p{.manifest = *parseRules({"https://*.example.com"}), .tenant = "acme"};
  auto r = get("http://localhost:" + std::to_string(server.port()) + "/", p);
  ASSERT_FALSE(r);
  EXPECT_EQ(r.status().code(), StatusCode::kPermissionDenied);
  EXPECT_NE(r.status().message().find("manifest egress rules [https://*.example.com]"),
            std::string::npos)
      << r.status().message();
  EXPECT_EQ(server.connections(), 0);
}

TEST_F(EgressClientTest, RefusesANameResolvingToLoopbackWithoutAGrant) {
  LoopbackServer server(echo());
  Policy p{.manifest = *parseRules({"http://localhost:*"}), .tenant = "acme"};
  auto r = get("http://localhost:" + std::to_string(server.port()) + "/", p);
  ASSERT_FALSE(r);
  EXPECT_EQ(r.status().code(), StatusCode::kPermissionDenied);
  EXPECT_NE(r.status().message().find("localhost resolved to"), std::string::npos);
  EXPECT_NE(r.status().message().find("a loopback address; only a tenant egress grant rule"),
            std::string::npos)
      << r.status().message();
  EXPECT_EQ(server.connections(), 0);
}

TEST_F(EgressClientTest, GrantNarrowsTheManifestPerTenant) {
  LoopbackServer server(echo());
  Policy p = loopbackPolicy(server.port());
  p.grant = *parseRules({"http://127.0.0.1:1"});
  auto r = get("http://127.0.0.1:" + std::to_string(server.port()) + "/", p);
  ASSERT_FALSE(r);
  EXPECT_NE(r.status().message().find("tenant acme's egress grant [http://127.0.0.1:1]"),
            std::string::npos)
      << r.status().message();
}

TEST_F(EgressClientTest, RedirectsAreOffByDefaultAndCheckedHopByHop) {
  LoopbackServer metadata(redirectTo("http://169.254.169.254/latest/meta-data/"));
  Policy p = loopbackPolicy(metadata.port());
  p.manifest.push_back(*parseRule("http://*:*"));
  p.grant->push_back(*parseRule("http://*:*"));
  const std::string url = "http://127.0.0.1:" + std::to_string(metadata.port()) + "/start";
  auto off = get(url, p);
  ASSERT_TRUE(off) << off.status().toString();
  EXPECT_EQ(off->status, 302);
  auto r = get(url, p, 3);
  ASSERT_FALSE(r);
  EXPECT_EQ(r.status().code(), StatusCode::kPermissionDenied);
  EXPECT_NE(r.status().message().find("169.254.169.254, a link-local address"), std::string::npos)
      << r.status().message();

  LoopbackServer other(echo());
  LoopbackServer port_hop(redirectTo("http://127.0.0.1:" + std::to_string(other.port()) + "/"));
  auto hop = get("http://127.0.0.1:" + std::to_string(port_hop.port()) + "/",
                 loopbackPolicy(port_hop.port()), 3);
  ASSERT_FALSE(hop);
  EXPECT_NE(hop.status().message().find("127.0.0.1:" + std::to_string(other.port()) +
                                        " is not allowed by tenant acme's egress grant"),
            std::string::npos)
      << hop.status().message();
  EXPECT_EQ(other.connections(), 0);

  LoopbackServer numeric(redirectTo("http://2130706433/"));
  auto n = get("http://127.0.0.1:" + std::to_string(numeric.port()) + "/",
               loopbackPolicy(numeric.port()), 3);
  ASSERT_FALSE(n);
  EXPECT_NE(n.status().message().find("not a canonical dotted-decimal IPv4"), std::string::npos);

  LoopbackServer same(redirectTo("/final"));
  auto ok =
      get("http://127.0.0.1:" + std::to_string(same.port()) + "/a", loopbackPolicy(same.port()), 1);
  ASSERT_TRUE(ok) << ok.status().toString();
  EXPECT_EQ(ok->body, "final");
  EXPECT_EQ(ok->redirects, 1);
  LoopbackServer loop(redirectTo("/again"));
  auto looped =
      get("http://127.0.0.1:" + std::to_string(loop.port()) + "/", loopbackPolicy(loop.port()), 5);
  ASSERT_FALSE(looped);
  EXPECT_NE(looped.status().message().find("more than 5 times"), std::string::npos);
}

TEST_F(EgressClientTest, RefusesNumericIpFormsAndUserinfo) {
  Policy p{.manifest = *parseRules({"http://*:*"}), .tenant = "acme"};
  for (const char* url : {"http://2130706433/", "http://0x7f.1/", "http://017700000001/",
                          "http://user:pw@127.0.0.1/"}) {
    auto r = get(url, p);
    ASSERT_FALSE(r) << url;
    EXPECT_EQ(r.status().code(), StatusCode::kInvalid) << url;
    EXPECT_EQ(r.status().message().rfind("url: ", 0), 0u) << r.status().message();
  }
}

TEST_F(EgressClientTest, RefusesAWrongTlsHostname) {
  LoopbackServer server(echo(), &pki_, "other");
  auto r = get("https://localhost:" + std::to_string(server.port()) + "/",
               loopbackPolicy(server.port(), "https"));
  ASSERT_FALSE(r);
  EXPECT_EQ(r.status().code(), StatusCode::kUnavailable);
  EXPECT_NE(r.status().message().find("certificate verify failed: hostname mismatch"),
            std::string::npos)
      << r.status().message();
}

TEST_F(EgressClientTest, RefusesAnUntrustedCa) {
  LoopbackServer server(echo(), &pki_, "rogue");
  auto r = get("https://localhost:" + std::to_string(server.port()) + "/",
               loopbackPolicy(server.port(), "https"));
  ASSERT_FALSE(r);
  EXPECT_EQ(r.status().code(), StatusCode::kUnavailable);
  EXPECT_NE(r.status().message().find("certificate verify failed: unable to get local issuer"),
            std::string::npos)
      << r.status().message();
}

TEST_F(EgressClientTest, RefusesAnExpiredCertificate) {
  LoopbackServer server(echo(), &pki_, "expired");
  auto r = get("https://localhost:" + std::to_string(server.port()) + "/",
               loopbackPolicy(server.port(), "https"));
  ASSERT_FALSE(r);
  EXPECT_EQ(r.status().code(), StatusCode::kUnavailable);
  EXPECT_NE(
      r.status().message().find("certificate verify failed: certificate has expired (expired)"),
      std::string::npos)
      << r.status().message();
  EXPECT_NE(r.status().message().find("https://localhost:"), std::string::npos)
      << r.status().message();
}

TEST_F(EgressClientTest, RefusesAServerThatSpeaksOnlyTls11) {
  test::OpensslServer old(pki_.path("localhost.pem"), pki_.path("localhost.key"),
                          test::OpensslServer::tls11Only());
  ASSERT_TRUE(old.ready());
  auto r = get("https://localhost:" + std::to_string(old.port()) + "/",
               loopbackPolicy(old.port(), "https"));
  ASSERT_FALSE(r);
  EXPECT_EQ(r.status().code(), StatusCode::kUnavailable);
  EXPECT_NE(r.status().message().find(
                "the server offers no TLS version this client accepts (1.2 or 1.3)"),
            std::string::npos)
      << r.status().message();
}

TEST_F(EgressClientTest, ASlowServerHitsTheTimeoutAndTheCallReturns) {
  LoopbackServer slow([](const auto& read, const auto& write, const auto& stop) {
    read();
    for (int i = 0; i < 300 && !stop; ++i) std::this_thread::sleep_for(100ms);
    write(reply(200, "late"));
  });
  Request req{.url = "http://127.0.0.1:" + std::to_string(slow.port()) + "/"};
  req.timeouts = {.connect = 1000ms, .first_byte = 300ms, .total = 5000ms};
  const auto start = std::chrono::steady_clock::now();
  auto r = client_->send(req, loopbackPolicy(slow.port()));
  const auto took = std::chrono::steady_clock::now() - start;
  ASSERT_FALSE(r);
  EXPECT_EQ(r.status().code(), StatusCode::kTimeout);
  EXPECT_NE(r.status().message().find("first_byte timeout of 300 ms"), std::string::npos)
      << r.status().message();
  EXPECT_LT(took, 20s) << "the server answers after 30 s; the call must not wait for it";
  EXPECT_EQ(client_->idleConnections(), 0u);
}

TEST_F(EgressClientTest, AnEndlessResponseHitsTheCap) {
  LoopbackServer endless([](const auto& read, const auto& write, const auto& stop) {
    read();
    if (!write("HTTP/1.1 200 OK\r\nContent-Type: text/plain\r\n\r\n")) return;
    const std::string chunk(64 * 1024, 'x');
    while (!stop && write(chunk)) {
    }
  });
  Request req{.url = "http://127.0.0.1:" + std::to_string(endless.port()) + "/"};
  req.max_response_bytes = 1024 * 1024;
  auto r = client_->send(req, loopbackPolicy(endless.port()));
  ASSERT_FALSE(r);
  EXPECT_EQ(r.status().code(), StatusCode::kQuotaExceeded);
  EXPECT_NE(r.status().message().find("exceeds max_response_bytes (1048576)"), std::string::npos)
      << r.status().message();
}

TEST_F(EgressClientTest, StrangersCannotReuseAPooledConnectionToAPrivateAddress) {
  LoopbackServer server(echo());
  const std::string url = "http://localhost:" + std::to_string(server.port()) + "/";
  ASSERT_TRUE(get(url, loopbackPolicy(server.port())));
  ASSERT_EQ(client_->idleConnections(), 1u);
  Policy stranger{.manifest = *parseRules({"http://localhost:*"}), .tenant = "globex"};
  auto r = get(url, stranger);
  ASSERT_FALSE(r);
  EXPECT_EQ(r.status().code(), StatusCode::kPermissionDenied);
}

// ---------------------------------------------------------------- bodies over one TLS record

// nginx over TLS 1.2 or 1.3 (the parameter, as its ssl_protocols) storing each PUT's body as
// a file (WebDAV) and serving it back. A TLS record carries at most 16 KiB, and Beast's
// ssl_stream writes a request whose head and body pass that as the head, then the body in
// records of their own; the client must go on until every byte went out (a writer that
// stopped after the head is what dial.h warns of), and read a response of many records whole.
class EgressTlsBodyTest : public EgressClientTest,
                          public ::testing::WithParamInterface<std::string> {};

TEST_P(EgressTlsBodyTest, BodiesLargerThanOneRecordGoOutAndComeBackWhole) {
  TempDir root;
  test::NginxServer nginx(0);
  nginx.serveTls(pki_.path("localhost.pem"), pki_.path("localhost.key"), GetParam());
  nginx.serveDirectory(root.path());
  nginx.acceptUploads();
  ASSERT_TRUE(nginx.start()) << nginx.error();
  const std::string base = "https://localhost:" + std::to_string(nginx.port()) + "/up/";
  const Policy policy = loopbackPolicy(nginx.port(), "https");
  const Timeouts slow{.connect = 5000ms, .first_byte = 20000ms, .total = 60000ms};

  // 16,200: head and body each fit a record, together they do not (a head of ~100 bytes).
  const std::vector<size_t> sizes = {16200, 16384, 16385, 64 * 1024, 1024 * 1024 + 1};
  unsigned seed = 1;
  for (size_t size : sizes) {
    SCOPED_TRACE(std::to_string(size) + " bytes over " + GetParam());
    const std::string body = test::randomBytes(size, seed++);
    const std::string name = std::to_string(size) + ".bin";
    Request put;
    put.method = "PUT";
    put.url = base + name;
    put.body = body;
    put.timeouts = slow;
    auto stored = client_->send(put, policy);
    ASSERT_TRUE(stored) << stored.status().toString();
    EXPECT_EQ(stored->status, 201) << stored->body;
    EXPECT_EQ(stored->bytes_sent, size);
    EXPECT_EQ(test::bytesDiffer(test::readFile(root / ("up/" + name)), body), "");

    Request get;
    get.url = base + name;
    get.timeouts = slow;
    auto back = client_->send(get, policy);
    ASSERT_TRUE(back) << back.status().toString();
    EXPECT_EQ(back->status, 200);
    EXPECT_EQ(test::bytesDiffer(back->body, body), "");
  }

  // Every exchange on one kept-alive connection: a byte lost or left over by a large write
  // would have shifted the requests after it.
  const auto lines = nginx.logged(2 * sizes.size());
  ASSERT_EQ(lines.size(), 2 * sizes.size()) << test::readFile(nginx.accessLog());
  for (size_t i = 0; i < lines.size(); ++i) {
    EXPECT_EQ(lines[i].status, i % 2 == 0 ? "201" : "200") << i;
    EXPECT_EQ(lines[i].ssl_protocol, GetParam()) << i;
    EXPECT_EQ(lines[i].connection, lines[0].connection) << i;
    if (i % 2 == 0) {
      EXPECT_GT(lines[i].request_length, sizes[i / 2]) << i;
    }
  }
  EXPECT_EQ(client_->idleConnections(), 1u);
  EXPECT_EQ(nginx.errorLog().find("[error]"), std::string::npos) << nginx.errorLog();
}

INSTANTIATE_TEST_SUITE_P(TlsVersions, EgressTlsBodyTest, ::testing::Values("TLSv1.2", "TLSv1.3"),
                         [](const auto& info) {
                           return info.param == "TLSv1.2" ? std::string("Tls12")
                                                          : std::string("Tls13");
                         });

}  // namespace
}  // namespace trellis::kernel::services::egress
