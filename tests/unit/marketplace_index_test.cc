// The signed index: what a client refuses (tampering, rollback, freeze, unknown keys),
// root rotation, publisher key rotation and revocation.
#include <gtest/gtest.h>

#include <filesystem>
#include <vector>

#include "trellis/marketplace/canonical_json.h"
#include "trellis/marketplace/encoding.h"
#include "trellis/marketplace/index.h"
#include "trellis/marketplace/package.h"

namespace {

using namespace trellis::marketplace;
using trellis::Status;
using trellis::StatusCode;
namespace fs = std::filesystem;

constexpr UnixSeconds kNow = 1'800'000'000;
constexpr UnixSeconds kDay = 86'400;

PrivateKey newKey() {
  return PrivateKey::generate().value();
}

bool contains(const Status& s, const std::string& text) {
  return s.message().find(text) != std::string::npos;
}

class IndexTest : public ::testing::Test {
 protected:
  IndexTest() : root_key_(newKey()), ts_key_(newKey()), index_key_(newKey()), acme_(newKey()) {}

  void SetUp() override {
    root_.version = 1;
    root_.expires = kNow + 365 * kDay;
    for (const PrivateKey* k : {&root_key_, &ts_key_, &index_key_}) {
      root_.keys[k->keyId()] = k->publicKey();
    }
    root_.root = {{root_key_.keyId()}, 1};
    root_.timestamp = {{ts_key_.keyId()}, 1};
    root_.index = {{index_key_.keyId()}, 1};
    auto bytes = signRoot(root_, {&root_key_});
    ASSERT_TRUE(bytes) << bytes.status().message();
    auto trusted = Root::loadTrusted(*bytes);
    ASSERT_TRUE(trusted) << trusted.status().message();
    trusted_ = *trusted;

    index_.version = 5;
    index_.expires = kNow + 30 * kDay;
    index_.namespaces["acme"] = {firstPublisherKey(acme_.publicKey(), kNow - 10 * kDay)};
    PackageRecord rec;
    rec.sha256 = sha256Hex("archive");
    rec.length = 7;
    rec.keyid = acme_.keyId();
    rec.published = kNow - 5 * kDay;
    rec.abi = {{1, 0}};
    rec.host = ">=0.1.0 <2.0.0";
    rec.platforms = {"linux-x86_64"};
    rec.dependencies = {{"acme/db", "^1.0.0"}};
    rec.capabilities = {"kv"};
    index_.packages["acme/hello"]["1.0.0"] = rec;
  }

  // Signed index + timestamp bytes for `index`.
  std::pair<std::string, std::string> publish(const Index& index,
                                              UnixSeconds ts_expires = kNow + kDay,
                                              uint64_t ts_version = 1) {
    auto idx = signIndex(index, {&index_key_});
    EXPECT_TRUE(idx) << idx.status().message();
    auto ts = signTimestamp(*idx, ts_version, ts_expires, {&ts_key_});
    EXPECT_TRUE(ts) << ts.status().message();
    return {*ts, *idx};
  }

  Status verify(const std::pair<std::string, std::string>& files, uint64_t last_seen = 0,
                UnixSeconds now = kNow) {
    auto r = verifyIndex(trusted_, last_seen, now, files.first, files.second);
    return r ? Status::ok() : r.status();
  }

  PrivateKey root_key_, ts_key_, index_key_, acme_;
  Root root_, trusted_;
  Index index_;
};

TEST_F(IndexTest, AcceptsAFreshIndexAndKeepsItsContent) {
  auto files = publish(index_);
  auto verified = verifyIndex(trusted_, 5, kNow, files.first, files.second);
  ASSERT_TRUE(verified) << verified.status().message();
  EXPECT_EQ(verified->version(), 5u);
  auto rec = verified->find("acme/hello", "1.0.0");
  ASSERT_TRUE(rec);
  EXPECT_EQ(rec->dependencies.at("acme/db"), "^1.0.0");
  EXPECT_EQ(rec->abi->first, 1u);
  EXPECT_EQ(rec->host, ">=0.1.0 <2.0.0");
  EXPECT_EQ(*verified->signingKey("acme/hello", "1.0.0"), acme_.publicKey());
  EXPECT_EQ(verified->find("acme/hello", "2.0.0").status().message(),
            "the index has no version 2.0.0 of acme/hello (has: 1.0.0)");
}

TEST_F(IndexTest, MetadataBytesAreCanonical) {
  auto files = publish(index_);
  EXPECT_EQ(*canonicalizeJsonText(files.second), files.second);
  EXPECT_EQ(*canonicalizeJsonText(files.first), files.first);
}

TEST_F(IndexTest, RefusesATamperedIndex) {
  auto files = publish(index_);
  auto pos = files.second.find(sha256Hex("archive"));
  ASSERT_NE(pos, std::string::npos);
  files.second[pos] = files.second[pos] == '0' ? '1' : '0';  // point at another archive
  Status s = verify(files);
  EXPECT_TRUE(contains(s, "index.json does not match timestamp.json")) << s.message();
}

TEST_F(IndexTest, RefusesATamperedTimestamp) {
  auto files = publish(index_);
  auto pos = files.first.find("\"expires\":");
  ASSERT_NE(pos, std::string::npos);
  files.first.replace(pos, 11, "\"expires\":9");  // extend the expiry by hand
  Status s = verify(files);
  EXPECT_TRUE(contains(s, "timestamp.json: signature by timestamp key " + ts_key_.keyId() +
                              " does not verify: the metadata was tampered with"))
      << s.message();
}

TEST_F(IndexTest, RefusesAnIndexSignedByAKeyTheRootDoesNotName) {
  PrivateKey intruder = newKey();
  auto idx = signIndex(index_, {&intruder});
  auto ts = signTimestamp(*idx, 1, kNow + kDay, {&ts_key_});
  Status s = verify({*ts, *idx});
  EXPECT_EQ(s.code(), StatusCode::kPermissionDenied);
  EXPECT_TRUE(contains(s, "index.json: signed by unknown key " + intruder.keyId() +
                              ", which root.json does not name for the index role"))
      << s.message();
  // The timestamp key cannot stand in for the index key either.
  idx = signIndex(index_, {&ts_key_});
  ts = signTimestamp(*idx, 1, kNow + kDay, {&ts_key_});
  EXPECT_TRUE(contains(verify({*ts, *idx}), "signed by unknown key " + ts_key_.keyId()));
}

TEST_F(IndexTest, RefusesRollbackToAnOlderIndex) {
  auto files = publish(index_);  // version 5
  Status s = verify(files, /*last_seen=*/6);
  EXPECT_EQ(s.message(),
            "rollback: timestamp.json names index version 5, older than version 6 already seen");
  EXPECT_TRUE(verify(files, 5));  // the same version again is fine (nothing changed)
}

TEST_F(IndexTest, RefusesAnExpiredTimestampAsAFreeze) {
  auto files = publish(index_, /*ts_expires=*/kNow - 1);
  Status s = verify(files);
  EXPECT_EQ(s.code(), StatusCode::kUnavailable);
  EXPECT_TRUE(contains(s, "timestamp.json expired at " + std::to_string(kNow - 1)));
  EXPECT_TRUE(contains(s, "frozen metadata"));
}

TEST_F(IndexTest, RefusesAnExpiredIndexAndAnExpiredRoot) {
  index_.expires = kNow - 1;
  EXPECT_TRUE(contains(verify(publish(index_)), "index.json expired at"));
  index_.expires = kNow + kDay;
  EXPECT_TRUE(contains(verify(publish(index_), 0, kNow + 400 * kDay), "root.json expired at"));
}

TEST_F(IndexTest, RefusesATimestampAndIndexThatDisagreeOnTheVersion) {
  auto idx = signIndex(index_, {&index_key_});
  // A timestamp that names the right bytes but claims another version.
  Timestamp ts;
  ts.version = 1;
  ts.expires = kNow + kDay;
  ts.index_version = 7;
  ts.index_sha256 = sha256Hex(*idx);
  ts.index_length = idx->size();
  auto ts_bytes = signEnvelope(ts.toJson(), {&ts_key_});
  Status s = verify({*ts_bytes, *idx});
  EXPECT_EQ(s.message(), "index.json is version 5 but timestamp.json names version 7");
}

TEST_F(IndexTest, RotatesTheRootWithBothOldAndNewSignatures) {
  PrivateKey new_root = newKey();
  Root next = root_;
  next.version = 2;
  next.keys.erase(root_key_.keyId());
  next.keys[new_root.keyId()] = new_root.publicKey();
  next.root = {{new_root.keyId()}, 1};

  auto both = signRoot(next, {&root_key_, &new_root});
  auto updated = updateRoot(trusted_, *both);
  ASSERT_TRUE(updated) << updated.status().message();
  EXPECT_EQ(updated->version, 2u);
  EXPECT_EQ(updated->root.keyids, std::vector<std::string>{new_root.keyId()});

  // Only the new key: an attacker with a fresh key cannot take over.
  auto only_new = updateRoot(trusted_, *signRoot(next, {&new_root}));
  ASSERT_FALSE(only_new);
  EXPECT_TRUE(contains(only_new.status(),
                       "root.json (by the trusted root's keys): signed by "
                       "unknown key " +
                           new_root.keyId()))
      << only_new.status().message();
  // Only the old key: the new keys must prove they are held.
  auto only_old = updateRoot(trusted_, *signRoot(next, {&root_key_}));
  ASSERT_FALSE(only_old);
  EXPECT_TRUE(contains(only_old.status(), "root.json (by its own keys)"));
  // Replaying the current root, or skipping a version, is refused.
  auto replay = updateRoot(trusted_, *signRoot(root_, {&root_key_}));
  EXPECT_TRUE(contains(replay.status(), "is not newer than the trusted version 1 (rollback)"));
  next.version = 3;
  auto skip = updateRoot(trusted_, *signRoot(next, {&root_key_, &new_root}));
  EXPECT_TRUE(contains(skip.status(), "skips versions"));
}

TEST_F(IndexTest, RootThresholdCountsDistinctValidKeys) {
  PrivateKey second = newKey();
  Root two = root_;
  two.keys[second.keyId()] = second.publicKey();
  two.root = {{root_key_.keyId(), second.keyId()}, 2};
  EXPECT_TRUE(Root::loadTrusted(*signRoot(two, {&root_key_, &second})));
  auto one = Root::loadTrusted(*signRoot(two, {&root_key_, &root_key_}));
  ASSERT_FALSE(one);
  EXPECT_TRUE(contains(one.status(),
                       "1 valid signature(s) from the root role; root.json "
                       "requires 2"));
}

TEST_F(IndexTest, PublisherKeyRotationIsVouchedForByTheOldKey) {
  PrivateKey acme2 = newKey();
  auto rotated = rotatePublisherKey("acme", acme_, acme2.publicKey(), kNow - 2 * kDay);
  ASSERT_TRUE(rotated);
  index_.namespaces["acme"].push_back(*rotated);
  PackageRecord rec = index_.packages["acme/hello"]["1.0.0"];
  rec.keyid = acme2.keyId();
  rec.published = kNow - kDay;
  index_.packages["acme/hello"]["1.1.0"] = rec;
  auto verified = verifyIndex(trusted_, 0, kNow, publish(index_).first, publish(index_).second);
  ASSERT_TRUE(verified) << verified.status().message();
  EXPECT_EQ(*verified->signingKey("acme/hello", "1.1.0"), acme2.publicKey());

  // A key the registry adds without the old key's signature is refused: a compromised
  // index key cannot hand a namespace to someone else.
  PrivateKey thief = newKey();
  Index forged = index_;
  PublisherKey injected = firstPublisherKey(thief.publicKey(), kNow - kDay);
  forged.namespaces["acme"].push_back(injected);
  EXPECT_TRUE(contains(verify(publish(forged)), "is not vouched for by an earlier key"));
  // … nor with a signature by a key that is not the one it names.
  injected.signed_by = acme_.keyId();
  injected.rotation_sig = *thief.sign(rotationStatement("acme", thief.publicKey(), acme_.keyId()));
  forged.namespaces["acme"].back() = injected;
  EXPECT_TRUE(contains(verify(publish(forged)),
                       "rotation signature by " + acme_.keyId() + " does not verify"));
}

TEST_F(IndexTest, RevokedKeyRefusesPackagesPublishedFromTheRevocationPointOn) {
  PrivateKey acme2 = newKey();
  index_.namespaces["acme"].push_back(
      *rotatePublisherKey("acme", acme_, acme2.publicKey(), kNow - 4 * kDay));
  // Version 1.0.0 was published 5 days ago with the old key; 1.0.1 two days ago, also
  // with the old key. The key is revoked as of three days ago (compromise suspected).
  PackageRecord later = index_.packages["acme/hello"]["1.0.0"];
  later.published = kNow - 2 * kDay;
  index_.packages["acme/hello"]["1.0.1"] = later;
  index_.namespaces["acme"][0].revoked = Revocation{kNow - 3 * kDay, "laptop stolen"};

  auto verified = verifyIndex(trusted_, 0, kNow, publish(index_).first, publish(index_).second);
  ASSERT_TRUE(verified) << verified.status().message();
  EXPECT_TRUE(verified->signingKey("acme/hello", "1.0.0"));  // before the revocation point
  auto refused = verified->signingKey("acme/hello", "1.0.1");
  ASSERT_FALSE(refused);
  EXPECT_EQ(refused.status().code(), StatusCode::kPermissionDenied);
  EXPECT_TRUE(contains(refused.status(),
                       "revoked from " + std::to_string(kNow - 3 * kDay) + " (laptop stolen)"))
      << refused.status().message();

  // A revoked key cannot vouch for a new key after its revocation point.
  PrivateKey acme3 = newKey();
  index_.namespaces["acme"].push_back(
      *rotatePublisherKey("acme", acme_, acme3.publicKey(), kNow - kDay));
  EXPECT_TRUE(contains(verify(publish(index_)), "after that key was revoked"));
}

TEST_F(IndexTest, UnknownPublisherKeyIsRefused) {
  PrivateKey stranger = newKey();
  index_.packages["acme/hello"]["1.0.0"].keyid = stranger.keyId();
  auto verified = verifyIndex(trusted_, 0, kNow, publish(index_).first, publish(index_).second);
  ASSERT_TRUE(verified);
  auto key = verified->signingKey("acme/hello", "1.0.0");
  EXPECT_TRUE(contains(key.status(), "signed by unknown key " + stranger.keyId()));
}

TEST_F(IndexTest, PackagePublishedBeforeItsKeyWasAddedIsRefused) {
  index_.namespaces["acme"][0].added = kNow - kDay;  // the package is five days old
  auto verified = verifyIndex(trusted_, 0, kNow, publish(index_).first, publish(index_).second);
  ASSERT_TRUE(verified);
  EXPECT_TRUE(contains(verified->signingKey("acme/hello", "1.0.0").status(),
                       "before its key " + acme_.keyId() + " was added"));
}

TEST_F(IndexTest, VerifiesADownloadedPackageAgainstTheIndex) {
  const fs::path good = fs::path(TRELLIS_FIXTURE_DIR) / "good";
  auto bytes = buildPackageBytes(good, acme_);
  ASSERT_TRUE(bytes);
  auto pkg = PackageArchive::fromBytes(*bytes);
  ASSERT_TRUE(pkg);
  auto rec = summarizePackage(*pkg, kNow - kDay);
  ASSERT_TRUE(rec) << rec.status().message();
  EXPECT_EQ(rec->platforms, (std::vector<std::string>{"linux-aarch64", "linux-x86_64"}));
  index_.namespaces["fixture"] = {firstPublisherKey(acme_.publicKey(), kNow - 2 * kDay)};
  index_.packages["fixture/good"]["1.0.0"] = *rec;
  auto verified = verifyIndex(trusted_, 0, kNow, publish(index_).first, publish(index_).second);
  ASSERT_TRUE(verified) << verified.status().message();
  EXPECT_TRUE(verified->verifyPackage("fixture/good", "1.0.0", *pkg));

  // A mirror serving other bytes under that name is caught by the archive hash.
  auto other = PackageArchive::fromBytes(*buildPackageBytes(good, newKey()));
  Status s = verified->verifyPackage("fixture/good", "1.0.0", *other);
  EXPECT_TRUE(contains(s, "the downloaded archive is not the one the index names"));
}

}  // namespace
