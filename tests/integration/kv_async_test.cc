// kv_put_async on a real trellisd (tests/fixtures/kv-async): a write suspends the request
// instead of blocking its event loop, and its completion finishes the response — or
// starts the next write; the rules of the call (one in flight, not in blocking routes);
// a request that fails while a write is pending; the storage quota decided in the write's
// own transaction. (trellis/hello writes this way: plugins/hello/test.)
#include <gmock/gmock.h>
#include <gtest/gtest.h>

#include <string>
#include <thread>

#include "support/test_support.h"

namespace trellis::test {
namespace {

using ::testing::HasSubstr;
using ::testing::StartsWith;

const std::map<std::string, std::string> kAcme = {{"Authorization", "Bearer acme-key"}};
const std::map<std::string, std::string> kGlobex = {{"Authorization", "Bearer globex-key"}};

class KvAsyncTest : public ::testing::Test {
 protected:
  void SetUp() override {
    std::string config = defaultTestConfig("    - id: fixture/kv-async\n");
    // globex may store 100 bytes in all.
    const std::string globex = "  - id: globex\n";
    config.insert(config.find(globex) + globex.size(), "    quotas: {max_storage_bytes: 100}\n");
    server_ = std::make_unique<TrellisdProcess>(config);
    ASSERT_TRUE(server_->start()) << server_->log();
  }
  HttpReply get(const std::string& path, const std::map<std::string, std::string>& h = kAcme) {
    return request(server_->port(), "GET", path, h);
  }
  std::unique_ptr<TrellisdProcess> server_;
};

TEST_F(KvAsyncTest, EachCompletionCanStartTheNextWriteAndTheLastOneAnswers) {
  auto r = get("/kv-async/chain/5");
  ASSERT_EQ(r.status, 200) << r.body;
  EXPECT_EQ(r.body, "OK version=5 steps=5");
  EXPECT_EQ(get("/kv-async/get/chain").body, "v");
  // Five more: the versions go on from the durable state.
  EXPECT_EQ(get("/kv-async/chain/5").body, "OK version=10 steps=5");
}

TEST_F(KvAsyncTest, OnlyOneCallIsInFlightPerRequest) {
  auto r = get("/kv-async/twice");
  ASSERT_EQ(r.status, 200) << r.body;
  EXPECT_THAT(r.body, StartsWith("first=OK second=INVALID: "));
  EXPECT_THAT(r.body, HasSubstr("still pending"));
  EXPECT_EQ(get("/kv-async/get/twice").body, "1");  // the refused write wrote nothing
}

TEST_F(KvAsyncTest, ABlockingRouteIsToldToUseKvPut) {
  auto r = get("/kv-async/blocking");
  ASSERT_EQ(r.status, 200) << r.body;
  EXPECT_THAT(r.body, StartsWith("INVALID: "));
  EXPECT_THAT(r.body, HasSubstr("use kv_put"));
  EXPECT_EQ(get("/kv-async/get/blocking").status, 404);
}

TEST_F(KvAsyncTest, ARequestThatFailsWhileAWriteIsPendingIsAnsweredAndTheCompletionStillRuns) {
  auto r = get("/kv-async/abandon");
  EXPECT_EQ(r.status, 503) << r.body;
  EXPECT_THAT(r.body, HasSubstr("could not handle the request"));
  EXPECT_THAT(r.body, ::testing::Not(HasSubstr("gave up on purpose")));  // log only
  // The write committed, and its completion ran once, late, with an empty request.
  std::string late;
  for (int i = 0; i < 100 && late.empty(); ++i) {
    auto l = get("/kv-async/get/late");
    if (l.status == 200)
      late = l.body;
    else
      std::this_thread::sleep_for(std::chrono::milliseconds(50));
  }
  EXPECT_EQ(late, "OK version=1 request_path=0");
  EXPECT_EQ(get("/kv-async/get/abandoned").body, "1");
}

TEST_F(KvAsyncTest, TheStorageQuotaIsDecidedInTheWritesTransactionAndAnsweredAs507) {
  auto fits = get("/kv-async/chain/1?size=50", kGlobex);
  EXPECT_EQ(fits.status, 200) << fits.body;
  auto over = get("/kv-async/chain/1?size=200", kGlobex);
  EXPECT_EQ(over.status, 507) << over.body;
  EXPECT_THAT(over.body, HasSubstr("max_storage_bytes"));
  // Nothing of the refused write is stored: the value is still the 50 bytes.
  EXPECT_EQ(get("/kv-async/get/chain", kGlobex).body, std::string(50, 'v'));
  // Oversized before anything is queued: refused by the call itself, with the reason.
  auto huge = get("/kv-async/chain/1?size=1048577");
  EXPECT_THAT(huge.body, StartsWith("refused INVALID: value is 1048577 bytes"));
}

}  // namespace
}  // namespace trellis::test
