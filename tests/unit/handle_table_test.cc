// The kernel's handle table: handles are integers tagged with plugin, tenant and kind, so
// a handle used after release, by another plugin, under another tenant or as another kind
// is refused (INVALID) without touching the object.
#include "services/core/handle_table.h"

#include <gtest/gtest.h>

#include <set>
#include <thread>
#include <vector>

namespace trellis::kernel::services {
namespace {

struct Tracked : HandleObject {
  explicit Tracked(int* live) : live_(live) { ++*live_; }
  ~Tracked() override { --*live_; }
  int* live_;
};

// Their addresses stand for two plugin instances.
int plugin_a = 0;
int plugin_b = 0;
const void* const kPluginA = &plugin_a;
const void* const kPluginB = &plugin_b;

TEST(HandleTableTest, OwnerKindAndReleaseAreChecked) {
  HandleTable table;
  int live = 0;
  auto h =
      table.open({kPluginA, "acme"}, HandleKind::kBlobWriter, std::make_shared<Tracked>(&live));
  ASSERT_TRUE(h);
  EXPECT_NE(*h, 0u);
  EXPECT_TRUE(table.get<Tracked>({kPluginA, "acme"}, HandleKind::kBlobWriter, *h));

  auto other_tenant = table.get<Tracked>({kPluginA, "globex"}, HandleKind::kBlobWriter, *h);
  ASSERT_FALSE(other_tenant);
  EXPECT_EQ(other_tenant.status().code(), StatusCode::kInvalid);
  EXPECT_FALSE(table.get<Tracked>({kPluginB, "acme"}, HandleKind::kBlobWriter, *h));
  EXPECT_FALSE(table.get<Tracked>({kPluginA, ""}, HandleKind::kBlobWriter, *h));
  EXPECT_FALSE(table.get<Tracked>({kPluginA, "acme"}, HandleKind::kBlobReader, *h));
  EXPECT_FALSE(table.get<Tracked>({kPluginA, "acme"}, HandleKind::kBlobWriter, *h + 1));
  EXPECT_FALSE(table.close({kPluginB, "acme"}, *h));  // not B's to close
  EXPECT_EQ(live, 1);

  EXPECT_TRUE(table.close({kPluginA, "acme"}, *h));
  EXPECT_EQ(live, 0);
  auto after = table.get<Tracked>({kPluginA, "acme"}, HandleKind::kBlobWriter, *h);
  ASSERT_FALSE(after);
  EXPECT_EQ(after.status().code(), StatusCode::kInvalid);
  EXPECT_FALSE(table.close({kPluginA, "acme"}, *h));  // double close
}

TEST(HandleTableTest, ObjectOutlivesCloseWhileInUse) {
  HandleTable table;
  int live = 0;
  auto h =
      table.open({kPluginA, "acme"}, HandleKind::kHttpResponse, std::make_shared<Tracked>(&live));
  auto in_use = table.get<Tracked>({kPluginA, "acme"}, HandleKind::kHttpResponse, *h);
  ASSERT_TRUE(in_use);
  EXPECT_TRUE(table.close({kPluginA, "acme"}, *h));
  EXPECT_EQ(live, 1);  // the call still using it keeps it
  in_use = Status::invalid("done");
  EXPECT_EQ(live, 0);
}

TEST(HandleTableTest, TakeFinishesAHandleOnce) {
  HandleTable table;
  int live = 0;
  auto h =
      table.open({kPluginA, "acme"}, HandleKind::kBlobWriter, std::make_shared<Tracked>(&live));
  EXPECT_FALSE(table.take({kPluginA, "acme"}, HandleKind::kBlobReader, *h));
  EXPECT_TRUE(table.take({kPluginA, "acme"}, HandleKind::kBlobWriter, *h));
  EXPECT_FALSE(table.take({kPluginA, "acme"}, HandleKind::kBlobWriter, *h));
  EXPECT_EQ(table.size(), 0u);
}

TEST(HandleTableTest, NumbersAreNeverReused) {
  HandleTable table;
  std::set<uint64_t> seen;
  for (int i = 0; i < 100; ++i) {
    auto h = table.open({kPluginA, "acme"}, HandleKind::kBlobReader, nullptr);
    ASSERT_TRUE(h);
    EXPECT_TRUE(seen.insert(*h).second);
    ASSERT_TRUE(table.close({kPluginA, "acme"}, *h));
  }
}

TEST(HandleTableTest, CapPerOwnerAndReleaseAllAtStop) {
  HandleTable table;
  int live = 0;
  for (size_t i = 0; i < HandleTable::kMaxPerOwner; ++i) {
    ASSERT_TRUE(
        table.open({kPluginA, "acme"}, HandleKind::kBlobReader, std::make_shared<Tracked>(&live)));
  }
  auto over = table.open({kPluginA, "acme"}, HandleKind::kBlobReader, nullptr);
  ASSERT_FALSE(over);
  EXPECT_EQ(over.status().code(), StatusCode::kQuotaExceeded);
  // The cap is per (plugin, tenant): others are unaffected.
  auto mine =
      table.open({kPluginA, "globex"}, HandleKind::kBlobReader, std::make_shared<Tracked>(&live));
  auto theirs =
      table.open({kPluginB, "acme"}, HandleKind::kBlobReader, std::make_shared<Tracked>(&live));
  ASSERT_TRUE(mine && theirs);

  EXPECT_EQ(table.releaseAll(kPluginA), HandleTable::kMaxPerOwner + 1);
  EXPECT_EQ(live, 1);
  EXPECT_TRUE(table.get<Tracked>({kPluginB, "acme"}, HandleKind::kBlobReader, *theirs));
  EXPECT_TRUE(table.open({kPluginA, "acme"}, HandleKind::kBlobReader, nullptr));
}

TEST(HandleTableTest, ConcurrentUseAndCloseNeverCrash) {
  HandleTable table;
  std::vector<uint64_t> handles;
  for (int i = 0; i < 200; ++i) {
    handles.push_back(
        *table.open({kPluginA, "acme"}, HandleKind::kBlobReader, std::make_shared<HandleObject>()));
  }
  std::thread closer([&] {
    for (uint64_t h : handles) (void)table.close({kPluginA, "acme"}, h);
  });
  for (int round = 0; round < 5; ++round) {
    for (uint64_t h : handles)
      (void)table.get<HandleObject>({kPluginA, "acme"}, HandleKind::kBlobReader, h);
  }
  closer.join();
  EXPECT_EQ(table.size(), 0u);
}

}  // namespace
}  // namespace trellis::kernel::services
