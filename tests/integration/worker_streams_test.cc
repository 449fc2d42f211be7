// Egress streams from a plugin in a worker process (isolation: process), through a real
// trellisd and tests/fixtures/stream: the worker's stream_connect/write/read are served by the
// host under the same egress gate as in process (it_stream_egress_test_in_workers runs that
// whole suite in workers); here what only a worker has: writes larger than one IPC piece, a
// worker killed mid-stream (the host closes its streams, a dedicated tenant's worker keeps
// its own), a worker that dies while idle (its streams closed at once, not at the next
// call) and a handle of the previous worker refused to the restarted one.
#include <Poco/JSON/Parser.h>
#include <gtest/gtest.h>
#include <signal.h>

#include <chrono>
#include <memory>
#include <string>

#include "stream_echo_peers.h"

namespace trellis::test {
namespace {

class WorkerStreamsTest : public StreamEchoPeersTest {
 protected:
  void SetUp() override {
    startPeers();
    if (HasFatalFailure()) return;
    const std::string tcp = "\"egress:tcp://127.0.0.1:" + std::to_string(tcp_->port()) + "\"";
    const std::string tls_port = std::to_string(tls_->port());
    const std::string tls =
        "\"egress:tls://localhost:" + tls_port + "\", \"egress:tls://127.0.0.1:" + tls_port + "\"";
    // acme (shared worker) and hooli (a worker of its own) are granted the loopback
    // servers; globex has the manifest alone.
    std::string config = defaultTestConfig(
        "    - id: fixture/stream\n"
        "      isolation: process\n"
        "      dedicated_tenants: [hooli]\n",
        "  - id: hooli\n"
        "    plugins: [fixture/stream]\n"
        "    keys: [{key: hooli-key}]\n"
        "    grants: {fixture/stream: [egress, " +
            tcp +
            "]}\n"
            "egress: {ca_file: " +
            pki_.path("ca.pem") + "}\n");
    const std::string acme = "  - id: acme\n";
    config.insert(config.find(acme) + acme.size(),
                  "    grants: {fixture/stream: [egress, " + tcp + ", " + tls + "]}\n");
    server_ = std::make_unique<TrellisdProcess>(config);
    ASSERT_TRUE(server_->start()) << server_->log();
  }
};

TEST_F(WorkerStreamsTest, AWorkerEchoesOverTcpAndTls) {
  auto tcp = call("/stream/echo?url=" + tcpUrl(), "acme-key", "<134>1 - web app - - - hi\n");
  ASSERT_EQ(tcp.status, 200) << tcp.body << server_->log();
  EXPECT_EQ(tcp.body, "<134>1 - web app - - - hi\n");
  auto tls = call("/stream/echo?url=" + tlsUrl(), "acme-key", "over tls");
  ASSERT_EQ(tls.status, 200) << tls.body;
  EXPECT_EQ(tls.body, "over tls");
  EXPECT_NE(server_->log().find("stream tenant=acme plugin=fixture/stream closed " + tcpUrl() +
                                " (26 bytes out, 26 bytes in)"),
            std::string::npos)
      << server_->log();
}

TEST_F(WorkerStreamsTest, AWriteLargerThanOnePieceArrivesWhole) {
  // One stream_write of 1 MiB + 4 KiB crosses the channel as two CALLs.
  const std::string bytes = std::to_string(1024 * 1024 + 4096);
  auto tcp = call("/stream/pump?bytes=" + bytes + "&url=" + tcpUrl(), "acme-key", "");
  ASSERT_EQ(tcp.status, 200) << tcp.body;
  EXPECT_EQ(tcp.body, bytes + " bytes, match");
  auto tls = call("/stream/pump?bytes=" + bytes + "&url=" + tlsUrl(), "acme-key", "");
  ASSERT_EQ(tls.status, 200) << tls.body;
  EXPECT_EQ(tls.body, bytes + " bytes, match");
}

TEST_F(WorkerStreamsTest, WithoutAGrantAWorkerIsDenied) {
  auto r = call("/stream/echo?url=" + tcpUrl(), "globex-key", "x");
  EXPECT_EQ(r.status, 403) << r.body;
  EXPECT_NE(r.body.find("127.0.0.1, a loopback address"), std::string::npos) << r.body;
  EXPECT_EQ(tcp_->connections(), 0);
}

TEST_F(WorkerStreamsTest, AKilledWorkerTakesItsStreamsAlongAndOthersKeepTheirs) {
  auto acme = call("/stream/open?url=" + tcpUrl(), "acme-key", "");
  ASSERT_EQ(acme.status, 200) << acme.body << server_->log();
  auto hooli = call("/stream/open?url=" + tcpUrl(), "hooli-key", "");
  ASSERT_EQ(hooli.status, 200) << hooli.body;
  ASSERT_EQ(call("/stream/write/" + acme.body, "acme-key", "before").status, 200);

  // The shared worker writes, then dies in the middle of the request.
  auto crashed = call("/stream/write-abort/" + acme.body, "acme-key", "last words");
  EXPECT_EQ(crashed.status, 502) << crashed.body;
  // The host closed what that worker had open...
  EXPECT_NE(server_->log().find("stream tenant=acme plugin=fixture/stream closed " + tcpUrl() +
                                " (16 bytes out, 0 bytes in)"),
            std::string::npos)
      << server_->log();
  // ...so the restarted worker (the first crash has no backoff) cannot use the old
  // worker's handle.
  auto stale = call("/stream/write/" + acme.body, "acme-key", "again");
  EXPECT_EQ(stale.status, 400) << stale.body;
  EXPECT_NE(stale.body.find("is not open for this plugin and tenant"), std::string::npos)
      << stale.body;
  // hooli's worker and stream are untouched.
  EXPECT_EQ(call("/stream/write/" + hooli.body, "hooli-key", "still here").status, 200);
  auto fresh = call("/stream/echo?url=" + tcpUrl(), "acme-key", "new worker");
  EXPECT_EQ(fresh.status, 200) << fresh.body;
  EXPECT_EQ(fresh.body, "new worker");
}

// The admin API's report of fixture/stream's worker for `tenant` ("*" = the shared one).
Poco::JSON::Object::Ptr streamWorker(const TrellisdProcess& t, const std::string& tenant) {
  auto reply =
      request(t.adminPort(), "GET", "/v1/plugins", {{"Authorization", "Bearer " + t.adminToken()}});
  auto list = Poco::JSON::Parser()
                  .parse(reply.body)
                  .extract<Poco::JSON::Object::Ptr>()
                  ->getArray("plugins");
  for (size_t i = 0; list && i < list->size(); ++i) {
    auto p = list->getObject(static_cast<unsigned>(i));
    if (p->getValue<std::string>("id") != "fixture/stream" || !p->has("workers")) continue;
    auto workers = p->getArray("workers");
    for (size_t j = 0; j < workers->size(); ++j) {
      auto w = workers->getObject(static_cast<unsigned>(j));
      if (w->getValue<std::string>("tenant") == tenant) return w;
    }
  }
  return nullptr;
}

TEST_F(WorkerStreamsTest, AWorkerThatDiesIdleClosesItsStreamsWithoutWaitingForACall) {
  auto acme = call("/stream/open?url=" + tcpUrl(), "acme-key", "");
  ASSERT_EQ(acme.status, 200) << acme.body << server_->log();
  auto hooli = call("/stream/open?url=" + tcpUrl(), "hooli-key", "");
  ASSERT_EQ(hooli.status, 200) << hooli.body;
  ASSERT_EQ(call("/stream/write/" + acme.body, "acme-key", "idle").status, 200);
  auto shared = streamWorker(*server_, "*");
  ASSERT_TRUE(shared) << server_->log();
  const int pid = shared->getValue<int>("pid");
  ASSERT_GT(pid, 0);

  // The shared worker dies with no call in flight (as by the OOM killer); no request
  // follows, yet the host closes its stream.
  ASSERT_EQ(::kill(pid, SIGKILL), 0);
  const std::string closed =
      "stream tenant=acme plugin=fixture/stream closed " + tcpUrl() + " (4 bytes out, 0 bytes in)";
  EXPECT_TRUE(eventually([&] { return server_->log().find(closed) != std::string::npos; },
                         std::chrono::seconds(30)))
      << server_->log();

  // The next call starts a new worker (the first crash has no backoff), which counts the
  // idle death as a crash and cannot use the old worker's handle.
  auto stale = call("/stream/write/" + acme.body, "acme-key", "again");
  EXPECT_EQ(stale.status, 400) << stale.body << server_->log();
  shared = streamWorker(*server_, "*");
  ASSERT_TRUE(shared);
  EXPECT_NE(shared->getValue<int>("pid"), pid);
  EXPECT_EQ(shared->getValue<int>("crashes"), 1);
  EXPECT_NE(server_->log().find("killed by signal 9 (Killed) while idle (crash while idle)"),
            std::string::npos)
      << server_->log();
  // hooli's worker of its own and its stream are untouched.
  EXPECT_EQ(call("/stream/write/" + hooli.body, "hooli-key", "still here").status, 200);
}

}  // namespace
}  // namespace trellis::test
