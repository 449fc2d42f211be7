// trellis/hello on a real trellisd: the greeting and the per-tenant count, and the count
// under contention — every greeting answered 200 is exactly one durable increment, though
// the counter's compare-and-set writes suspend the request (kv_put_async) instead of
// holding a thread while they commit.
#include <gmock/gmock.h>
#include <gtest/gtest.h>

#include <atomic>
#include <string>
#include <thread>
#include <vector>

#include "support/test_support.h"

namespace trellis::test {
namespace {

using ::testing::HasSubstr;

const std::map<std::string, std::string> kAcme = {{"Authorization", "Bearer acme-key"}};
const std::map<std::string, std::string> kGlobex = {{"Authorization", "Bearer globex-key"}};

class HelloTest : public ::testing::Test {
 protected:
  void SetUp() override {
    server_ = std::make_unique<TrellisdProcess>(defaultTestConfig("    - id: trellis/hello\n"));
    ASSERT_TRUE(server_->start()) << server_->log();
  }
  HttpReply get(const std::string& path, const std::map<std::string, std::string>& h = kAcme) {
    return request(server_->port(), "GET", path, h);
  }
  std::unique_ptr<TrellisdProcess> server_;
};

TEST_F(HelloTest, GreetsAndCountsEachNamePerTenant) {
  EXPECT_EQ(get("/hello/ann").body, R"({"message":"Hello, ann!","visits":1})");
  EXPECT_EQ(get("/hello/ann").body, R"({"message":"Hello, ann!","visits":2})");
  EXPECT_EQ(get("/hello/ann", kGlobex).body, R"({"message":"Hello, ann!","visits":1})");
  auto bad = get("/hello/%01");
  EXPECT_EQ(bad.status, 400);
  EXPECT_THAT(bad.body, HasSubstr("1-64 printable ASCII"));
}

TEST_F(HelloTest, ConcurrentGreetingsOfOneNameLoseNoCount) {
  constexpr int kThreads = 8, kEach = 25;
  std::atomic<int> ok{0};
  std::vector<std::thread> clients;
  for (int t = 0; t < kThreads; ++t) {
    clients.emplace_back([&] {
      for (int i = 0; i < kEach; ++i) {
        if (get("/hello/hot").status == 200) ++ok;
      }
    });
  }
  for (auto& c : clients) c.join();
  // A request that gave up after 16 conflicts is a 409 and counted nothing.
  auto last = get("/hello/hot");
  ASSERT_EQ(last.status, 200) << last.body;
  EXPECT_THAT(last.body, HasSubstr("\"visits\":" + std::to_string(ok.load() + 1) + "}"));
  EXPECT_GT(ok.load(), kThreads * kEach / 2);
}

}  // namespace
}  // namespace trellis::test
