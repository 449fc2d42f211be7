// Egress streams through a real trellisd, driven by tests/fixtures/stream: a tenant's
// blocking route connects to a loopback TCP (and TLS) echo server, writes and reads back;
// refusals without the grant naming the address (PERMISSION_DENIED, counted and audited), on
// an event loop (INVALID), for another tenant's handle (INVALID), and past the day's bytes.
#include <Poco/JSON/Object.h>
#include <Poco/JSON/Parser.h>
#include <gtest/gtest.h>

#include <memory>
#include <mutex>
#include <thread>

#include "stream_echo_peers.h"

namespace trellis::test {
namespace {

Poco::JSON::Object::Ptr json(const std::string& body) {
  return Poco::JSON::Parser().parse(body).extract<Poco::JSON::Object::Ptr>();
}

class StreamEgressTest : public StreamEchoPeersTest {
 protected:
  void SetUp() override {
    startPeers();
    if (HasFatalFailure()) return;
    const std::string tcp = std::to_string(tcp_->port());
    const std::string tls = std::to_string(tls_->port());
    // acme: granted exactly the two loopback servers; globex: the manifest alone (no
    // loopback); hooli: the TCP server, and 10 egress bytes a day.
    std::string config = defaultTestConfig("    - id: fixture/stream\n",
                                           "  - id: hooli\n"
                                           "    plugins: [fixture/stream]\n"
                                           "    keys: [{key: hooli-key}]\n"
                                           "    quotas: {egress_bytes_per_day: 10}\n"
                                           "    grants: {fixture/stream: [egress, "
                                           "\"egress:tcp://127.0.0.1:" +
                                               tcp +
                                               "\"]}\n"
                                               "egress: {ca_file: " +
                                               pki_.path("ca.pem") + "}\n");
    const std::string acme = "  - id: acme\n";
    config.insert(config.find(acme) + acme.size(),
                  "    grants: {fixture/stream: [egress, \"egress:tcp://127.0.0.1:" + tcp +
                      "\", \"egress:tls://localhost:" + tls +
                      "\", \"egress:tls://127.0.0.1:" + tls + "\"]}\n");
    server_ = std::make_unique<TrellisdProcess>(config);
    ASSERT_TRUE(server_->start()) << server_->log();
  }

  HttpReply admin(const std::string& path) {
    return request(server_->adminPort(), "GET", path,
                   {{"Authorization", "Bearer " + server_->adminToken()}});
  }
};

TEST_F(StreamEgressTest, ATenantRouteEchoesOverTcpAndTls) {
  auto tcp = call("/stream/echo?url=" + tcpUrl(), "acme-key", "<134>1 - web app - - - hi\n");
  ASSERT_EQ(tcp.status, 200) << tcp.body;
  EXPECT_EQ(tcp.body, "<134>1 - web app - - - hi\n");
  auto tls = call("/stream/echo?url=" + tlsUrl(), "acme-key", "over tls");
  ASSERT_EQ(tls.status, 200) << tls.body;
  EXPECT_EQ(tls.body, "over tls");

  const std::string metrics = admin("/metrics").body;
  EXPECT_NE(metrics.find("trellis_stream_connects_total{plugin=\"fixture/stream\",destination=\"" +
                         tcpUrl() + "\",outcome=\"ok\"} 1"),
            std::string::npos)
      << metrics;
  EXPECT_NE(metrics.find("trellis_stream_bytes_total{plugin=\"fixture/stream\",destination=\"" +
                         tcpUrl() + "\",direction=\"out\"} 26"),
            std::string::npos)
      << metrics;
  // A connect is a request; bytes out and in are bytes.
  auto egress = json(admin("/v1/tenants/acme/usage").body)->getObject("egress");
  EXPECT_EQ(egress->getValue<uint64_t>("requests_today"), 2u);
  EXPECT_EQ(egress->getValue<uint64_t>("bytes_today"), 2u * (26 + 8));
  EXPECT_NE(server_->log().find("stream tenant=acme plugin=fixture/stream closed " + tcpUrl() +
                                " (26 bytes out, 26 bytes in)"),
            std::string::npos);
}

TEST_F(StreamEgressTest, WithoutAGrantNamingTheAddressItIsDeniedAndAudited) {
  auto r = call("/stream/echo?url=" + tcpUrl(), "globex-key", "x");
  EXPECT_EQ(r.status, 403) << r.body;
  EXPECT_NE(r.body.find("127.0.0.1, a loopback address; only a tenant egress grant rule naming "
                        "it (e.g. " +
                        tcpUrl() + ")"),
            std::string::npos)
      << r.body;
  // Outside the manifest's rules altogether.
  auto outside = call("/stream/echo?url=tls://evil.test:443", "acme-key", "x");
  EXPECT_EQ(outside.status, 403) << outside.body;
  EXPECT_NE(outside.body.find("manifest egress rules"), std::string::npos) << outside.body;
  auto no_port = call("/stream/echo?url=tcp://127.0.0.1", "acme-key", "x");
  EXPECT_EQ(no_port.status, 400) << no_port.body;
  EXPECT_EQ(no_port.body, "url: tcp:// and tls:// need a port");
  EXPECT_EQ(tcp_->connections(), 0);
  const std::string metrics = admin("/metrics").body;
  EXPECT_NE(metrics.find("trellis_plugin_capability_denied_total{plugin=\"fixture/stream\","
                         "capability=\"egress\"} 2"),
            std::string::npos)
      << metrics;
  EXPECT_NE(server_->log().find("plugin=fixture/stream tenant=globex denied: egress: 127.0.0.1 "
                                "resolved to 127.0.0.1"),
            std::string::npos)
      << server_->log();
}

TEST_F(StreamEgressTest, AnEventLoopRouteIsRefused) {
  auto r = call("/stream/echo-inline?url=" + tcpUrl(), "acme-key", "x");
  EXPECT_EQ(r.status, 400) << r.body;
  EXPECT_EQ(r.body,
            "stream_connect blocks, so it is refused on an event loop: declare the route in "
            "blocking_routes, or call it from a job or an event handler");
  EXPECT_EQ(tcp_->connections(), 0);
}

TEST_F(StreamEgressTest, AnotherTenantCannotUseTheHandle) {
  auto opened = call("/stream/open?url=" + tcpUrl(), "acme-key", "");
  ASSERT_EQ(opened.status, 200) << opened.body;
  const std::string h = opened.body;
  auto stolen = call("/stream/write/" + h, "globex-key", "not yours");
  EXPECT_EQ(stolen.status, 400) << stolen.body;
  auto own = call("/stream/write/" + h, "acme-key", "mine");
  EXPECT_EQ(own.status, 200) << own.body;
}

TEST_F(StreamEgressTest, AWritePastTheDaysBytesIsRefusedNamingTheQuota) {
  auto opened = call("/stream/open?url=" + tcpUrl(), "hooli-key", "");
  ASSERT_EQ(opened.status, 200) << opened.body;
  const std::string h = opened.body;
  ASSERT_EQ(call("/stream/write/" + h, "hooli-key", "0123456789abcdef").status, 200);
  auto over = call("/stream/write/" + h, "hooli-key", "x");
  EXPECT_EQ(over.status, 429) << over.body;
  EXPECT_EQ(json(over.body)->getValue<std::string>("quota"), "egress_bytes_per_day");
  auto egress = json(admin("/v1/tenants/hooli/usage").body)->getObject("egress");
  EXPECT_EQ(egress->getValue<uint64_t>("bytes_today"), 16u);
}

// A system plugin's tenant-less ctx: on_start may connect where the operator's egress list
// allows (it alone names the loopback collector); on_init is too early.
class SystemStreamTest : public ::testing::Test {
 protected:
  // Keeps every byte that comes.
  static LoopbackServer::Handler collect(std::shared_ptr<std::string> into,
                                         std::shared_ptr<std::mutex> mu) {
    return [into, mu](const auto& read, const auto&, const auto&) {
      for (std::string bytes = read(); !bytes.empty(); bytes = read()) {
        std::lock_guard lock(*mu);
        *into += bytes;
      }
    };
  }
  std::string received() {
    std::lock_guard lock(*mu_);
    return *got_;
  }
  // Starts trellisd with fixture/stream-sys pointed at the collector; `egress_yaml` is the
  // entry's egress line ("" for none).
  void start(const std::string& egress_yaml) {
    const std::string url = "tcp://127.0.0.1:" + std::to_string(collector_.port());
    server_ = std::make_unique<TrellisdProcess>(
        defaultTestConfig("    - id: fixture/stream-sys\n      system: true\n"
                          "      config: {url: \"" +
                          url + "\"}\n" + egress_yaml));
    ASSERT_TRUE(server_->start()) << server_->log();
  }
  // The log line the plugin wrote for `phase`, waiting (bounded) for it.
  std::string reported(const std::string& phase) {
    const std::string tag = "stream-sys " + phase + ": ";
    for (int i = 0; i < 500; ++i) {
      const std::string log = server_->log();
      if (auto at = log.find(tag); at != std::string::npos) {
        return log.substr(at + tag.size(), log.find('\n', at) - at - tag.size());
      }
      std::this_thread::sleep_for(std::chrono::milliseconds(10));
    }
    return "(no line)";
  }

  std::shared_ptr<std::string> got_ = std::make_shared<std::string>();
  std::shared_ptr<std::mutex> mu_ = std::make_shared<std::mutex>();
  LoopbackServer collector_{LoopbackServer::kRawBytes, collect(got_, mu_)};
  std::unique_ptr<TrellisdProcess> server_;
};

TEST_F(SystemStreamTest, OnStartReachesTheCollectorTheOperatorListNames) {
  start("      egress: [\"tcp://127.0.0.1:" + std::to_string(collector_.port()) + "\"]\n");
  EXPECT_EQ(reported("start").rfind("status 0", 0), 0u) << reported("start");
  EXPECT_EQ(reported("init").rfind("status 1 stream_connect is not available during on_init", 0),
            0u)
      << reported("init");
  for (int i = 0; i < 500 && received().empty(); ++i) {
    std::this_thread::sleep_for(std::chrono::milliseconds(10));
  }
  EXPECT_EQ(received(), "hello from start\n");
  EXPECT_NE(server_->log().find("stream tenant=_system plugin=fixture/stream-sys connected to "
                                "tcp://127.0.0.1:"),
            std::string::npos);
}

TEST_F(SystemStreamTest, WithoutTheOperatorListALoopbackCollectorIsRefused) {
  start("");
  const std::string line = reported("start");
  EXPECT_EQ(line.rfind("status 3 ", 0), 0u) << line;  // PERMISSION_DENIED
  EXPECT_NE(line.find("in the operator's egress list for system plugin fixture/stream-sys "
                      "(plugins.enabled[].egress) may reach it"),
            std::string::npos)
      << line;
  EXPECT_EQ(collector_.connections(), 0);
}

}  // namespace
}  // namespace trellis::test
