// `trellis plugin outdated`'s report (cli/install/outdated.h) over an index and a lock file:
// the newest allowed version and, for each newer one, why it is held back.
#include "cli/install/outdated.h"

#include <gmock/gmock.h>
#include <gtest/gtest.h>

namespace trellis::cli::install {
namespace {

using ::testing::HasSubstr;

marketplace::PackageRecord record(const HostFacts& host, uint32_t abi_major = 0) {
  marketplace::PackageRecord rec;
  rec.abi = {{abi_major ? abi_major : host.abi_major, 0}};
  rec.platforms = {host.platform};
  return rec;
}

class OutdatedTest : public ::testing::Test {
 protected:
  void SetUp() override {
    host_ = thisHost();
    auto& db = index_.packages["acme/db"];
    db["1.0.0"] = record(host_);
    db["1.1.0"] = record(host_);
    db["2.0.0"] = record(host_);
    db["2.1.0"] = record(host_);
    db["2.1.0"].yanked = true;
    db["2.1.0"].yanked_reason = "corrupts data";
    db["3.0.0"] = record(host_, host_.abi_major + 1);
    auto& app = index_.packages["acme/app"];
    app["1.0.0"] = record(host_);
    app["1.0.0"].dependencies = {{"acme/db", "^1.0.0"}};

    lock_.packages["acme/db"].version = "1.0.0";
    lock_.packages["acme/app"].version = "1.0.0";
    lock_.packages["acme/app"].dependencies = {{"acme/db", "^1.0.0"}};
  }

  const OutdatedRow& row(const std::vector<OutdatedRow>& rows, const std::string& id) {
    for (const auto& r : rows) {
      if (r.id == id) return r;
    }
    ADD_FAILURE() << "no row for " << id;
    return rows.front();
  }

  HostFacts host_;
  marketplace::Index index_;
  LockFile lock_;
};

TEST_F(OutdatedTest, NamesTheNewestAllowedAndWhyEachNewerVersionIsHeldBack) {
  auto rows = outdatedReport(index_, lock_, host_);
  ASSERT_EQ(rows.size(), 2u);
  const auto& db = row(rows, "acme/db");
  EXPECT_EQ(db.locked, "1.0.0");
  EXPECT_EQ(db.newest_allowed, "1.1.0");
  EXPECT_EQ(db.newest_available, "3.0.0");
  EXPECT_FALSE(db.upToDate());
  ASSERT_EQ(db.held_back.size(), 3u);
  EXPECT_EQ(db.held_back[0].version, "3.0.0");
  EXPECT_THAT(db.held_back[0].reason, HasSubstr("ABI"));
  EXPECT_EQ(db.held_back[1].version, "2.1.0");
  EXPECT_EQ(db.held_back[1].reason, "yanked (corrupts data)");
  EXPECT_EQ(db.held_back[2].version, "2.0.0");
  EXPECT_EQ(db.held_back[2].reason, "acme/app@1.0.0 requires ^1.0.0");

  const auto& app = row(rows, "acme/app");
  EXPECT_TRUE(app.upToDate());
  EXPECT_TRUE(app.held_back.empty());
}

TEST_F(OutdatedTest, WithoutTheDependentTheMajorUpgradeIsAllowed) {
  lock_.packages.erase("acme/app");
  auto rows = outdatedReport(index_, lock_, host_);
  ASSERT_EQ(rows.size(), 1u);
  EXPECT_EQ(rows[0].newest_allowed, "2.0.0");
  ASSERT_EQ(rows[0].held_back.size(), 2u);
}

TEST_F(OutdatedTest, AVersionWhoseOwnDependencyCannotBeMetIsHeldBackWithTheResolversReason) {
  index_.packages["acme/db"]["1.1.0"].dependencies = {{"acme/missing", "^1.0.0"}};
  auto rows = outdatedReport(index_, lock_, host_);
  const auto& db = row(rows, "acme/db");
  EXPECT_EQ(db.newest_allowed, "1.0.0");
  ASSERT_EQ(db.held_back.size(), 4u);
  EXPECT_EQ(db.held_back[3].version, "1.1.0");
  EXPECT_THAT(db.held_back[3].reason, HasSubstr("acme/missing"));
}

}  // namespace
}  // namespace trellis::cli::install
