// trellis.blobs and trellis.http for Lua plugins (tests/fixtures/blobs-lua) through a real
// trellisd: the same host calls as native plugins, so the same grants and refusals, inside
// the sandbox's budgets (an egress wait ends with the call's wall time).
#include <Poco/JSON/Object.h>
#include <Poco/JSON/Parser.h>
#include <gmock/gmock.h>
#include <gtest/gtest.h>

#include <chrono>
#include <thread>

#include "support/loopback_server.h"
#include "support/test_support.h"
#include "trellis/tenants/identity.h"

namespace trellis::test {
namespace {

using ::testing::AllOf;
using ::testing::HasSubstr;
using ::testing::StartsWith;

Poco::JSON::Object::Ptr json(const std::string& body) {
  return Poco::JSON::Parser().parse(body).extract<Poco::JSON::Object::Ptr>();
}

std::map<std::string, std::string> bearer(const std::string& key,
                                          std::map<std::string, std::string> more = {}) {
  more["Authorization"] = "Bearer " + key;
  return more;
}

// Echoes each request (line and headers) back as the body.
LoopbackServer::Handler echo() {
  return [](const auto& read, const auto& write, const auto&) {
    for (std::string req = read(); !req.empty(); req = read()) {
      if (!write(reply(200, req))) return;
    }
  };
}

// Reads the request and never answers.
LoopbackServer::Handler silent() {
  return [](const auto& read, const auto&, const auto& stop) {
    read();
    while (!stop) std::this_thread::sleep_for(std::chrono::milliseconds(20));
  };
}

class LuaBlobEgressTest : public ::testing::Test {
 protected:
  void SetUp() override {
    upstream_ = std::make_unique<LoopbackServer>(echo());
    slow_ = std::make_unique<LoopbackServer>(silent());
    // acme: blobs and egress to the two loopback upstreams; globex: egress by the manifest
    // alone (no private addresses) and no blobs.
    std::string config = defaultTestConfig("    - id: fixture/blobs-lua\n");
    const std::string acme = "  - id: acme\n";
    config.insert(config.find(acme) + acme.size(),
                  "    grants: {fixture/blobs-lua: [blobs, egress, \"egress:" + url(*upstream_) +
                      "\", \"egress:" + url(*slow_) + "\"]}\n");
    const std::string globex = "  - id: globex\n";
    config.insert(config.find(globex) + globex.size(),
                  "    grants: {fixture/blobs-lua: [egress]}\n");
    server_ = std::make_unique<TrellisdProcess>(config);
    ASSERT_TRUE(server_->start()) << server_->log();
  }
  static std::string url(const LoopbackServer& s) {
    return "http://127.0.0.1:" + std::to_string(s.port());
  }
  HttpReply call(const std::string& method, const std::string& target, const std::string& key,
                 const std::string& body = "", std::map<std::string, std::string> headers = {}) {
    return request(server_->port(), method, target, bearer(key, std::move(headers)), body);
  }

  std::unique_ptr<LoopbackServer> upstream_, slow_;
  std::unique_ptr<TrellisdProcess> server_;
};

TEST_F(LuaBlobEgressTest, BlobsRoundTripWithHeadRangesListAndDelete) {
  const std::string content = "hello lua blobs, 0123456789";
  auto put = call("PUT", "/lb/blob/docs%2Fa.txt", "acme-key", content,
                  {{"Content-Type", "text/plain"}, {"X-Owner", "ann"}});
  ASSERT_EQ(put.status, 201) << put.body << server_->log();
  auto head = json(call("GET", "/lb/head/docs%2Fa.txt", "acme-key").body);
  EXPECT_EQ(head->getValue<std::string>("key"), "docs/a.txt");
  EXPECT_EQ(head->getValue<uint64_t>("size"), content.size());
  EXPECT_EQ(head->getValue<std::string>("sha256"), tenants::sha256Hex(content));
  EXPECT_EQ(head->getValue<std::string>("content_type"), "text/plain");
  EXPECT_EQ(head->getObject("metadata")->getValue<std::string>("owner"), "ann");
  EXPECT_EQ(call("GET", "/lb/blob/docs%2Fa.txt", "acme-key").body, content);
  EXPECT_EQ(call("GET", "/lb/blob/docs%2Fa.txt?offset=6&length=3", "acme-key").body, "lua");
  ASSERT_EQ(call("PUT", "/lb/blob/docs%2Fb.txt", "acme-key", "b").status, 201);
  EXPECT_EQ(call("GET", "/lb/list?prefix=docs%2F&limit=1", "acme-key").body,
            "docs/a.txt next=docs/a.txt");
  EXPECT_EQ(call("GET", "/lb/list?prefix=docs%2F&after=docs%2Fa.txt", "acme-key").body,
            "docs/b.txt next=nil");
  EXPECT_EQ(call("DELETE", "/lb/blob/docs%2Fa.txt", "acme-key").body, "deleted");
  EXPECT_THAT(call("GET", "/lb/blob/docs%2Fa.txt", "acme-key").body, StartsWith("not_found: "));
  // Bad input is refused naming the field, as for native plugins.
  EXPECT_THAT(call("PUT", "/lb/blob/a%2F..%2Fb", "acme-key", "x").body,
              AllOf(StartsWith("invalid: "), HasSubstr("\"..\" segment")));
}

TEST_F(LuaBlobEgressTest, UngrantedBlobsArePermissionDenied) {
  auto r = call("PUT", "/lb/blob/k", "globex-key", "x");
  EXPECT_EQ(r.status, 400);
  EXPECT_THAT(r.body, AllOf(StartsWith("permission_denied: "), HasSubstr("\"blobs\"")));
}

TEST_F(LuaBlobEgressTest, EgressReachesTheGrantedUpstreamAndRefusalsNameTheRule) {
  auto r = call("POST", "/lb/fetch", "acme-key", url(*upstream_) + "/items");
  ASSERT_EQ(r.status, 200) << r.body << server_->log();
  EXPECT_THAT(r.body, StartsWith("200 GET /items HTTP/1.1"));
  EXPECT_THAT(r.body, HasSubstr(": lua\r\n"));
  EXPECT_THAT(r.body, HasSubstr("traceparent: 00-"));
  // globex did not grant the loopback address.
  auto loop = call("POST", "/lb/fetch", "globex-key", url(*upstream_) + "/");
  EXPECT_THAT(loop.body, AllOf(StartsWith("permission_denied: "), HasSubstr("loopback")));
  // Not on an event loop, like native plugins.
  auto inline_call = call("POST", "/lb/fetch-inline", "acme-key", url(*upstream_) + "/");
  EXPECT_THAT(inline_call.body,
              AllOf(StartsWith("invalid: "), HasSubstr("refused on an event loop")));
}

TEST_F(LuaBlobEgressTest, AnEgressWaitEndsWithinTheCallsBudget) {
  // An explicit timeout reaches the script as a status it can handle.
  auto timed = call("POST", "/lb/fetch", "acme-key", url(*slow_) + "/", {{"X-Timeout-Ms", "200"}});
  EXPECT_EQ(timed.status, 400) << timed.body;
  EXPECT_THAT(timed.body, StartsWith("timeout: "));
  // Without one, the wait ends with the route's wall budget (1 s for blocking routes), not
  // the host's 10 s first-byte default: the call is over budget (503).
  auto budget = call("POST", "/lb/fetch", "acme-key", url(*slow_) + "/");
  EXPECT_EQ(budget.status, 503) << budget.body;
  EXPECT_THAT(server_->log(), HasSubstr("wall"));
  // The thread is free again.
  EXPECT_EQ(call("POST", "/lb/fetch", "acme-key", url(*upstream_) + "/").status, 200);
}

}  // namespace
}  // namespace trellis::test
