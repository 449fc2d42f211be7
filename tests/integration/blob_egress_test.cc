// Blob storage and egress HTTP through a real trellisd, driven by the SDK's C example
// (sdk/examples/fetch-store-c): grants, quotas (507), refusals naming the rule, the event
// loop refusal, metrics, secrets kept out of the log, and a 1 GiB object streamed through a
// blocking route while the host's RSS stays flat.
#include <Poco/JSON/Object.h>
#include <Poco/JSON/Parser.h>
#include <gtest/gtest.h>

#include <chrono>
#include <fstream>
#include <thread>

#include "support/loopback_server.h"
#include "support/test_support.h"
#include "trellis/tenants/identity.h"

namespace trellis::test {
namespace {

Poco::JSON::Object::Ptr json(const std::string& body) {
  return Poco::JSON::Parser().parse(body).extract<Poco::JSON::Object::Ptr>();
}

std::map<std::string, std::string> bearer(const std::string& key,
                                          std::map<std::string, std::string> more = {}) {
  more["Authorization"] = "Bearer " + key;
  return more;
}

long rssKiB(pid_t pid) {
  std::ifstream status("/proc/" + std::to_string(pid) + "/status");
  std::string line;
  while (std::getline(status, line)) {
    if (line.rfind("VmRSS:", 0) == 0) return std::stol(line.substr(6));
  }
  return -1;
}

// Echoes each request (line and headers) back as the body.
LoopbackServer::Handler echo() {
  return [](const auto& read, const auto& write, const auto&) {
    for (std::string req = read(); !req.empty(); req = read()) {
      if (!write(reply(200, req))) return;
    }
  };
}

class BlobEgressTest : public ::testing::Test {
 protected:
  void SetUp() override {
    upstream_ = std::make_unique<LoopbackServer>(echo());
    const std::string port = std::to_string(upstream_->port());
    // acme: granted exactly the loopback upstream; globex: the manifest alone (no private
    // addresses); initech: a 3 MiB storage quota; umbrella: egress but not blobs.
    std::string config = defaultTestConfig("    - id: acme/fetch-store\n",
                                           "  - id: initech\n"
                                           "    plugins: [acme/fetch-store]\n"
                                           "    keys: [{key: initech-key}]\n"
                                           "    quotas: {max_storage_bytes: 3145728}\n"
                                           "  - id: umbrella\n"
                                           "    plugins: [acme/fetch-store]\n"
                                           "    keys: [{key: umbrella-key}]\n"
                                           "    grants: {acme/fetch-store: [egress]}\n"
                                           "  - id: hooli\n"
                                           "    plugins: [acme/fetch-store]\n"
                                           "    keys: [{key: hooli-key}]\n"
                                           "    quotas: {egress_requests_per_second: 1, "
                                           "egress_bytes_per_day: 900}\n"
                                           "    grants: {acme/fetch-store: [egress, "
                                           "\"egress:http://127.0.0.1:" +
                                               port + "\"]}\n");
    const std::string acme = "  - id: acme\n";
    config.insert(config.find(acme) + acme.size(),
                  "    grants: {acme/fetch-store: [blobs, egress, \"egress:http://127.0.0.1:" +
                      port + "\", \"egress:http://localhost:" + port + "\"]}\n");
    server_ = std::make_unique<TrellisdProcess>(config);
    ASSERT_TRUE(server_->start()) << server_->log();
  }

  HttpReply call(const std::string& method, const std::string& target, const std::string& key,
                 const std::string& body = "", std::map<std::string, std::string> headers = {}) {
    return request(server_->port(), method, target, bearer(key, std::move(headers)), body);
  }
  HttpReply admin(const std::string& path) {
    return request(server_->adminPort(), "GET", path,
                   {{"Authorization", "Bearer " + server_->adminToken()}});
  }
  std::string upstream(const std::string& path) {
    return "http://127.0.0.1:" + std::to_string(upstream_->port()) + path;
  }

  std::unique_ptr<LoopbackServer> upstream_;
  std::unique_ptr<TrellisdProcess> server_;
};

TEST_F(BlobEgressTest, BlobsRoundTripPerTenantWithHeadListAndRanges) {
  const std::string content = "hello blobs, 0123456789";
  auto put = call("PUT", "/fs/blob/docs%2Fa.txt", "acme-key", content,
                  {{"Content-Type", "text/plain"}, {"X-Meta", R"({"owner":"ann","tier":"hot"})"}});
  ASSERT_EQ(put.status, 201) << put.body;
  auto head = json(call("GET", "/fs/head/docs%2Fa.txt", "acme-key").body);
  EXPECT_EQ(head->getValue<std::string>("key"), "docs/a.txt");
  EXPECT_EQ(head->getValue<uint64_t>("size"), content.size());
  EXPECT_EQ(head->getValue<std::string>("sha256"), tenants::sha256Hex(content));
  EXPECT_EQ(head->getValue<std::string>("content_type"), "text/plain");
  EXPECT_EQ(head->getObject("metadata")->getValue<std::string>("owner"), "ann");
  EXPECT_GT(head->getValue<int64_t>("created_at_ms"), 0);
  EXPECT_EQ(call("GET", "/fs/blob/docs%2Fa.txt", "acme-key").body, content);
  EXPECT_EQ(call("GET", "/fs/blob/docs%2Fa.txt?offset=6&length=5", "acme-key").body, "blobs");
  ASSERT_EQ(call("PUT", "/fs/blob/docs%2Fb.txt", "acme-key", "b").status, 201);
  ASSERT_EQ(call("PUT", "/fs/blob/other", "acme-key", "o").status, 201);
  auto page = json(call("GET", "/fs/list?prefix=docs%2F&limit=1", "acme-key").body);
  EXPECT_EQ(page->getArray("items")->size(), 1u);
  EXPECT_EQ(page->getValue<std::string>("next"), "docs/a.txt");
  // Another tenant of the same plugin sees none of it.
  EXPECT_EQ(call("GET", "/fs/blob/docs%2Fa.txt", "globex-key").status, 404);
  EXPECT_EQ(json(call("GET", "/fs/list", "globex-key").body)->getArray("items")->size(), 0u);
  // Blob bytes count in the tenant's storage usage; deleting gives them back.
  auto usage = json(admin("/v1/tenants/acme/usage").body);
  EXPECT_EQ(usage->getValue<uint64_t>("storage_bytes"), content.size() + 2);
  ASSERT_EQ(call("DELETE", "/fs/blob/docs%2Fa.txt", "acme-key").status, 204);
  EXPECT_EQ(json(admin("/v1/tenants/acme/usage").body)->getValue<uint64_t>("storage_bytes"), 2u);
  EXPECT_EQ(call("GET", "/fs/head/docs%2Fa.txt", "acme-key").status, 404);
}

TEST_F(BlobEgressTest, BadKeysAreRefusedNamingTheField) {
  auto longkey = call("PUT", "/fs/blob/" + std::string(1025, 'k'), "acme-key", "x");
  EXPECT_EQ(longkey.status, 400);
  EXPECT_NE(longkey.body.find("key: is 1025 bytes"), std::string::npos)
      << "[" << longkey.body << "]";
  auto dots = call("PUT", "/fs/blob/a%2F..%2Fb", "acme-key", "x");
  EXPECT_EQ(dots.status, 400);
  EXPECT_NE(dots.body.find("key: contains a \"..\" segment"), std::string::npos) << dots.body;
  auto meta = call("PUT", "/fs/blob/k", "acme-key", "x", {{"X-Meta", "[1]"}});
  EXPECT_EQ(meta.status, 400);
  EXPECT_NE(meta.body.find("metadata: "), std::string::npos) << meta.body;
}

TEST_F(BlobEgressTest, StorageQuotaIsChargedAtCommitAnd507) {
  ASSERT_EQ(call("POST", "/fs/gen/a?mib=2", "initech-key").status, 201);
  auto over = call("POST", "/fs/gen/b?mib=2", "initech-key");
  EXPECT_EQ(over.status, 507) << over.body;
  EXPECT_NE(over.body.find("max_storage_bytes"), std::string::npos) << over.body;
  EXPECT_EQ(call("GET", "/fs/head/b", "initech-key").status, 404);
  auto usage = json(admin("/v1/tenants/initech/usage").body);
  EXPECT_EQ(usage->getValue<uint64_t>("storage_bytes"), 2u * 1024 * 1024);
  ASSERT_EQ(call("POST", "/fs/gen/b?mib=1", "initech-key").status, 201);  // exactly full
}

TEST_F(BlobEgressTest, UngrantedCapabilityIsPermissionDenied) {
  auto r = call("PUT", "/fs/blob/k", "umbrella-key", "x");
  EXPECT_EQ(r.status, 403) << r.body;
  EXPECT_NE(r.body.find("\"blobs\""), std::string::npos) << r.body;
}

TEST_F(BlobEgressTest, EgressReachesTheGrantedUpstreamWithTraceAndNoSecretsInTheLog) {
  auto r = call("POST", "/fs/fetch", "acme-key", upstream("/items?api_token=s3cr3t-q"),
                {{"traceparent", "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01"}});
  ASSERT_EQ(r.status, 200) << r.body;
  EXPECT_EQ(r.body.rfind("GET /items?api_token=s3cr3t-q HTTP/1.1", 0), 0u) << r.body;
  EXPECT_NE(r.body.find("traceparent: 00-4bf92f3577b34da6a3ce929d0e0e4736-"), std::string::npos)
      << r.body;
  const std::string metrics = admin("/metrics").body;
  EXPECT_NE(metrics.find("trellis_egress_requests_total{plugin=\"acme/fetch-store\","
                         "destination=\"http://127.0.0.1:" +
                         std::to_string(upstream_->port()) + "\",outcome=\"200\"} 1"),
            std::string::npos)
      << metrics;
  auto egress = json(admin("/v1/tenants/acme/usage").body)->getObject("egress");
  EXPECT_EQ(egress->getValue<uint64_t>("requests_today"), 1u);
  EXPECT_EQ(egress->getValue<uint64_t>("bytes_today"), r.body.size());
  EXPECT_EQ(server_->log().find("s3cr3t-q"), std::string::npos);
  EXPECT_NE(server_->log().find("egress tenant=acme plugin=acme/fetch-store GET"),
            std::string::npos);
}

TEST_F(BlobEgressTest, EgressRefusalsNameTheRule) {
  // globex did not grant the loopback address: the name resolves to it, the kernel refuses.
  auto loop = call("POST", "/fs/fetch", "globex-key",
                   "http://localhost:" + std::to_string(upstream_->port()) + "/");
  EXPECT_EQ(loop.status, 403);
  EXPECT_NE(loop.body.find("a loopback address"), std::string::npos) << loop.body;
  auto outside = call("POST", "/fs/fetch", "acme-key", "https://evil.test/");
  EXPECT_EQ(outside.status, 403);
  EXPECT_NE(outside.body.find("manifest egress rules"), std::string::npos) << outside.body;
  auto numeric = call("POST", "/fs/fetch", "acme-key", "http://2130706433/");
  EXPECT_EQ(numeric.status, 400);
  EXPECT_NE(numeric.body.find("url: host \"2130706433\""), std::string::npos) << numeric.body;
  EXPECT_EQ(upstream_->connections(), 0);
  auto inline_call = call("POST", "/fs/fetch-inline", "acme-key", upstream("/"));
  EXPECT_EQ(inline_call.status, 400);
  EXPECT_NE(inline_call.body.find("refused on an event loop"), std::string::npos)
      << inline_call.body;
}

TEST_F(BlobEgressTest, EgressGrantMissingIsDeniedCountedAndAudited) {
  // umbrella grants "egress" but no destination rule naming the loopback upstream.
  auto r = call("POST", "/fs/fetch", "umbrella-key", upstream("/"));
  EXPECT_EQ(r.status, 403) << r.body;
  EXPECT_NE(r.body.find("loopback"), std::string::npos) << r.body;
  // umbrella does not grant the blobs capability: refused before anything else, counted too.
  auto no_capability = call("PUT", "/fs/blob/k", "umbrella-key", "x");
  EXPECT_EQ(no_capability.status, 403);
  const std::string metrics = admin("/metrics").body;
  EXPECT_NE(metrics.find("trellis_plugin_capability_denied_total{plugin=\"acme/fetch-store\","
                         "capability=\"egress\"} 1"),
            std::string::npos)
      << metrics;
  EXPECT_NE(metrics.find("trellis_plugin_capability_denied_total{plugin=\"acme/fetch-store\","
                         "capability=\"blobs\"} 1"),
            std::string::npos)
      << metrics;
  EXPECT_NE(server_->log().find("plugin=acme/fetch-store tenant=umbrella denied: "),
            std::string::npos);
  EXPECT_EQ(upstream_->connections(), 0);
}

TEST_F(BlobEgressTest, EgressQuotasAreRefusedWithTheirNames) {
  // One request per second: a burst meets egress_requests_per_second.
  std::string rate_quota;
  int sent = 0;
  for (int i = 0; i < 6 && rate_quota.empty(); ++i) {
    auto r = call("POST", "/fs/fetch", "hooli-key", upstream("/burst"));
    if (r.status == 200) ++sent;
    if (r.status == 429) rate_quota = json(r.body)->getValue<std::string>("quota");
  }
  EXPECT_EQ(rate_quota, "egress_requests_per_second");
  // 900 bytes a day: spaced out, requests run until the day's bytes are spent.
  std::string bytes_quota;
  for (int i = 0; i < 20 && bytes_quota.empty(); ++i) {
    std::this_thread::sleep_for(std::chrono::milliseconds(1100));
    auto r = call("POST", "/fs/fetch", "hooli-key", upstream("/spend"));
    if (r.status == 200) ++sent;
    if (r.status == 429) bytes_quota = json(r.body)->getValue<std::string>("quota");
  }
  EXPECT_EQ(bytes_quota, "egress_bytes_per_day");
  auto egress = json(admin("/v1/tenants/hooli/usage").body)->getObject("egress");
  EXPECT_GE(egress->getValue<uint64_t>("bytes_today"), 900u);
  EXPECT_GE(sent, 2);
}

// 1 GiB through a blocking route (written in 1 MiB chunks, then streamed back and hashed):
// the host never holds the object.
TEST_F(BlobEgressTest, OneGibObjectStreamsWhileRssStaysFlat) {
  ASSERT_EQ(call("POST", "/fs/gen/warmup?mib=2", "acme-key").status, 201);
  const long before = rssKiB(server_->pid());
  ASSERT_GT(before, 0);
  // Minutes, not seconds, for a GiB on a loaded CI machine.
  const auto slow = std::chrono::minutes(3);
  auto put =
      request(server_->port(), "POST", "/fs/gen/huge?mib=1024", bearer("acme-key", {}), "", slow);
  ASSERT_EQ(put.status, 201) << put.body;
  EXPECT_EQ(json(put.body)->getValue<uint64_t>("size"), 1024ull * 1024 * 1024);
  auto digest =
      request(server_->port(), "GET", "/fs/digest/huge", bearer("acme-key", {}), "", slow);
  ASSERT_EQ(digest.status, 200) << digest.body;
  EXPECT_EQ(json(digest.body)->getValue<uint64_t>("size"), 1024ull * 1024 * 1024);
  const long after = rssKiB(server_->pid());
  EXPECT_LT(after - before, 64 * 1024) << "RSS " << before << " KiB -> " << after << " KiB";
}

}  // namespace
}  // namespace trellis::test
