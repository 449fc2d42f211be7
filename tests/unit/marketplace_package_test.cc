// Plugin packages: build from a real plugin folder, verify, extract; and every way a
// hostile archive is refused with nothing written.
#include <gtest/gtest.h>

#include <filesystem>
#include <random>
#include <vector>

#include "marketplace_zip_writer.h"
#include "support/test_support.h"
#include "trellis/kernel/plugin/manifest.h"
#include "trellis/marketplace/canonical_json.h"
#include "trellis/marketplace/encoding.h"
#include "trellis/marketplace/package.h"
#include "trellis/marketplace/zip.h"

namespace {

using namespace trellis::marketplace;
using trellis::Status;
using trellis::StatusCode;
using trellis::test::RawZipEntry;
using trellis::test::readFile;
using trellis::test::TempDir;
using trellis::test::writeFile;
using trellis::test::writeZip;
namespace fs = std::filesystem;

const fs::path kGood = fs::path(TRELLIS_FIXTURE_DIR) / "good";

class PackageTest : public ::testing::Test {
 protected:
  void SetUp() override {
    auto k = PrivateKey::generate();
    ASSERT_TRUE(k);
    key_.emplace(std::move(*k));
    auto bytes = buildPackageBytes(kGood, *key_);
    ASSERT_TRUE(bytes) << bytes.status().message();
    good_ = *bytes;
  }

  // The good package's entries, to rewrite into hostile variants.
  std::vector<RawZipEntry> goodEntries() const {
    auto zip = ZipReader::open(good_);
    std::vector<RawZipEntry> out;
    for (const auto& e : zip->entries()) out.push_back({e.name, *zip->read(e)});
    return out;
  }

  // Writes `bytes` as a package file and returns its path.
  fs::path save(const std::string& bytes, const std::string& name = "pkg.zip") {
    fs::path p = dir_ / name;
    writeFile(p, bytes);
    return p;
  }

  // Verifying and extracting both refuse; the message contains `expected`, and the
  // folder holds nothing but the archive afterwards.
  void expectRefused(const std::string& bytes, const std::string& expected) {
    fs::path zip = save(bytes);
    Status verified = verifyPackage(zip, {key_->publicKey()});
    EXPECT_FALSE(verified);
    EXPECT_NE(verified.message().find(expected), std::string::npos) << verified.message();
    Status extracted = extractPackage(zip, dir_ / "out", {key_->publicKey()});
    EXPECT_FALSE(extracted);
    EXPECT_NE(extracted.message().find(expected), std::string::npos) << extracted.message();
    std::vector<std::string> left;
    for (const auto& e : fs::directory_iterator(dir_.path())) {
      left.push_back(e.path().filename().string());
    }
    EXPECT_EQ(left, std::vector<std::string>{"pkg.zip"});
  }

  std::optional<PrivateKey> key_;
  std::string good_;
  TempDir dir_;
};

TEST_F(PackageTest, RoundTripsARealPluginBuild) {
  BuiltPackage built;
  fs::path zip = dir_ / "good.zip";
  auto result = buildPackage(kGood, *key_, zip);
  ASSERT_TRUE(result) << result.status().message();
  EXPECT_EQ(result->id, "fixture/good");
  EXPECT_EQ(result->version, "1.0.0");
  EXPECT_EQ(result->files, std::vector<std::string>{"libfixture_good.so"});
  EXPECT_EQ(result->sha256, sha256Hex(readFile(zip)));

  auto info = inspectPackage(zip);
  ASSERT_TRUE(info) << info.status().message();
  EXPECT_EQ(info->signature.keyid, key_->keyId());
  EXPECT_EQ(info->files.at("libfixture_good.so"),
            sha256Hex(readFile(kGood / "libfixture_good.so")));
  EXPECT_EQ(info->entries.size(), 3u);

  ASSERT_TRUE(verifyPackage(zip, {key_->publicKey()}));
  fs::path dest = dir_ / "plugins" / "good";
  fs::create_directories(dest.parent_path());
  ASSERT_TRUE(extractPackage(zip, dest, {key_->publicKey()}));
  EXPECT_EQ(readFile(dest / "libfixture_good.so"), readFile(kGood / "libfixture_good.so"));
  // The kernel accepts the packaged manifest, file hashes included.
  auto manifest = trellis::kernel::plugin::Manifest::load(dest / "trellis-plugin.json");
  ASSERT_TRUE(manifest) << manifest.status().message();
  EXPECT_EQ(manifest->id, "fixture/good");
  EXPECT_EQ(manifest->files.size(), 1u);
  // Only the result is left: no temp folder beside it.
  EXPECT_EQ(std::distance(fs::directory_iterator(dest.parent_path()), fs::directory_iterator()), 1);
}

TEST_F(PackageTest, SameInputGivesSameBytes) {
  auto again = buildPackageBytes(kGood, *key_);
  ASSERT_TRUE(again);
  EXPECT_EQ(*again, good_);
  auto other_key = PrivateKey::generate();
  EXPECT_NE(*buildPackageBytes(kGood, *other_key), good_);
}

TEST_F(PackageTest, BuildRefusesFolderWithoutManifestOrWithMissingEntry) {
  TempDir plugin;
  writeFile(plugin / "lib.so", "x");
  auto none = buildPackageBytes(plugin.path(), *key_);
  ASSERT_FALSE(none);
  EXPECT_NE(none.status().message().find("holds no trellis-plugin.json"), std::string::npos);

  writeFile(plugin / "trellis-plugin.json",
            R"({"schema":1,"id":"acme/x","version":"1.0.0","entry":{"linux-x86_64":"libx.so"}})");
  auto missing = buildPackageBytes(plugin.path(), *key_);
  ASSERT_FALSE(missing);
  EXPECT_NE(missing.status().message().find("names \"libx.so\", which is not in"),
            std::string::npos);

  writeFile(plugin / "trellis-plugin.json",
            R"({"id":"acme/x","version":"1.0.0","runtime":"wasm","entry":{"w":"lib.so"}})");
  EXPECT_NE(buildPackageBytes(plugin.path(), *key_)
                .status()
                .message()
                .find("unknown runtime \"wasm\" (known: native, lua)"),
            std::string::npos);

  writeFile(plugin / "trellis-plugin.json", R"({"id":"Acme","version":"1.0.0"})");
  EXPECT_NE(
      buildPackageBytes(plugin.path(), *key_).status().message().find("not a valid plugin id"),
      std::string::npos);
}

TEST_F(PackageTest, BuildRefusesSymlinksInThePluginFolder) {
  TempDir plugin;
  fs::copy(kGood, plugin.path(), fs::copy_options::recursive);
  fs::create_symlink("/etc/passwd", plugin / "passwd");
  auto r = buildPackageBytes(plugin.path(), *key_);
  ASSERT_FALSE(r);
  EXPECT_NE(r.status().message().find("is a symbolic link"), std::string::npos);
}

TEST_F(PackageTest, PackagesALuaPluginTreeWithoutHiddenFiles) {
  TempDir plugin;
  writeFile(plugin / "trellis-plugin.json",
            R"({"schema":1,"id":"acme/policy","version":"0.3.0","runtime":"lua",
                "entry":{"lua":"main.lua"},"capabilities":["kv"]})");
  writeFile(plugin / "main.lua", "return require_local('lib/util')");
  fs::create_directories(plugin / "lib" / "deep");
  writeFile(plugin / "lib" / "util.lua", "return {}");
  writeFile(plugin / "lib" / "deep" / "data.txt", "x");
  writeFile(plugin / "README.md", "# policy");
  fs::create_directories(plugin / ".git");
  writeFile(plugin / ".git" / "config", "secret remote");
  writeFile(plugin / ".env", "TOKEN=1");

  BuiltPackage built;
  auto bytes = buildPackageBytes(plugin.path(), *key_, &built);
  ASSERT_TRUE(bytes) << bytes.status().message();
  EXPECT_EQ(built.files, (std::vector<std::string>{"README.md", "lib/deep/data.txt", "lib/util.lua",
                                                   "main.lua"}));
  auto pkg = PackageArchive::fromBytes(*bytes);
  ASSERT_TRUE(pkg) << pkg.status().message();
  ASSERT_TRUE(pkg->verify({key_->publicKey()}));
  ASSERT_TRUE(pkg->extractTo(dir_ / "policy"));
  EXPECT_EQ(readFile(dir_ / "policy" / "lib" / "deep" / "data.txt"), "x");
  EXPECT_FALSE(fs::exists(dir_ / "policy" / ".env"));
  auto manifest = trellis::kernel::plugin::Manifest::load(dir_ / "policy" / "trellis-plugin.json");
  ASSERT_TRUE(manifest) << manifest.status().message();
  EXPECT_EQ(manifest->files.size(), 4u);
}

TEST_F(PackageTest, BuildRefusesToWriteThePackageIntoThePluginFolder) {
  TempDir plugin;
  fs::copy(kGood, plugin.path(), fs::copy_options::recursive);
  auto r = buildPackage(plugin.path(), *key_, plugin / "sub" / "x.zip");
  ASSERT_FALSE(r);
  EXPECT_NE(r.status().message().find("is inside the plugin folder"), std::string::npos);
}

TEST_F(PackageTest, RefusesATamperedFile) {
  auto entries = goodEntries();
  for (auto& e : entries) {
    if (e.name == "libfixture_good.so") e.data[100] ^= 0x55;
  }
  expectRefused(writeZip(entries), "file \"libfixture_good.so\" was modified");
  // extractTo checks every file against the manifest on its own too.
  auto pkg = PackageArchive::fromBytes(writeZip(entries));
  ASSERT_TRUE(pkg);
  Status s = pkg->extractTo(dir_ / "out");
  EXPECT_NE(s.message().find("was modified"), std::string::npos) << s.message();
  EXPECT_FALSE(fs::exists(dir_ / "out"));
}

TEST_F(PackageTest, RefusesATamperedManifest) {
  auto entries = goodEntries();
  for (auto& e : entries) {
    if (e.name == "trellis-plugin.json") {
      auto pos = e.data.find("\"version\":\"1.0.0\"");
      ASSERT_NE(pos, std::string::npos);
      e.data.replace(pos, 17, "\"version\":\"9.0.0\"");
    }
  }
  expectRefused(writeZip(entries), "manifest signature is invalid");
}

TEST_F(PackageTest, RefusesAPackageSignedByAnUntrustedKey) {
  auto stranger = PrivateKey::generate();
  Status s = verifyPackage(save(good_), {stranger->publicKey()});
  EXPECT_EQ(s.code(), StatusCode::kPermissionDenied);
  EXPECT_NE(s.message().find("signed by key " + key_->keyId() + ", which is not trusted"),
            std::string::npos)
      << s.message();
  s = extractPackage(dir_ / "pkg.zip", dir_ / "out", {stranger->publicKey()});
  EXPECT_EQ(s.code(), StatusCode::kPermissionDenied);
  EXPECT_FALSE(fs::exists(dir_ / "out"));
}

TEST_F(PackageTest, RefusesASignatureForgedUnderATrustedKeyId) {
  auto attacker = PrivateKey::generate();
  auto entries = goodEntries();
  std::string manifest;
  for (auto& e : entries) {
    if (e.name == "trellis-plugin.json") manifest = e.data;
  }
  auto sig = attacker->sign(manifest);
  for (auto& e : entries) {
    if (e.name == "trellis-plugin.sig") {
      e.data = R"({"keyid":")" + key_->keyId() + R"(","sig":")" + base64Encode(*sig) + R"("})";
    }
  }
  expectRefused(writeZip(entries), "manifest signature is invalid");
}

TEST_F(PackageTest, RefusesAnUnlistedFile) {
  auto entries = goodEntries();
  entries.push_back({"extra.so", "surprise"});
  expectRefused(writeZip(entries),
                "file \"extra.so\" is in the archive but not listed in the manifest's files");
}

TEST_F(PackageTest, RefusesAListedFileThatIsMissing) {
  auto entries = goodEntries();
  std::erase_if(entries, [](const RawZipEntry& e) { return e.name == "libfixture_good.so"; });
  expectRefused(writeZip(entries), "the manifest lists \"libfixture_good.so\" but the archive");
}

TEST_F(PackageTest, RefusesAnUnsignedPackage) {
  auto entries = goodEntries();
  std::erase_if(entries, [](const RawZipEntry& e) { return e.name == "trellis-plugin.sig"; });
  expectRefused(writeZip(entries), "has no trellis-plugin.sig (it is not signed)");
}

TEST_F(PackageTest, RefusesPathsThatEscapeTheFolder) {
  for (auto [name, why] :
       std::vector<std::pair<std::string, std::string>>{{"../evil.so", "contains \"..\""},
                                                        {"lib/../../evil.so", "contains \"..\""},
                                                        {"/etc/evil.so", "is an absolute path"},
                                                        {"C:/evil.so", "drive letter"},
                                                        {"lib\\evil.so", "contains a backslash"},
                                                        {"./evil.so", "not normalized"},
                                                        {"../", "contains \"..\""},
                                                        {"lib//x.so", "not normalized"}}) {
    SCOPED_TRACE(name);
    auto entries = goodEntries();
    entries.push_back({name, "x"});
    expectRefused(writeZip(entries), why);
  }
}

TEST_F(PackageTest, RefusesSymlinkAndSpecialEntries) {
  auto entries = goodEntries();
  entries.push_back({"link.so", "/etc/passwd", false, 0120777});
  expectRefused(writeZip(entries), "entry \"link.so\" is a symbolic link");
  entries.back() = {"fifo", "", false, 0010644};
  expectRefused(writeZip(entries), "entry \"fifo\" is a special file");
}

TEST_F(PackageTest, RefusesFolderEntriesThatClashOrCarryContent) {
  auto entries = goodEntries();
  entries.push_back({"libfixture_good.so/", "", false, 040755});
  expectRefused(writeZip(entries), "\"libfixture_good.so\" is both a file and a folder");
  entries.back() = {"lib/", "hidden bytes"};
  expectRefused(writeZip(entries), "entry \"lib/\" is a folder with content");
}

TEST_F(PackageTest, RefusesDuplicateEntries) {
  auto entries = goodEntries();
  entries.push_back({"libfixture_good.so", "second copy"});
  expectRefused(writeZip(entries), "two entries named \"libfixture_good.so\"");
}

TEST_F(PackageTest, RefusesAZipBombByRatio) {
  auto entries = goodEntries();
  entries.push_back({"zeros.bin", std::string(16 << 20, '\0')});
  expectRefused(writeZip(entries), "compression ratio above 200:1");
}

TEST_F(PackageTest, RefusesEntriesAboveTheSizeCaps) {
  fs::path zip = save(good_);
  ZipLimits entry_cap;
  entry_cap.max_entry_bytes = 1000;
  Status s = extractPackage(zip, dir_ / "out", {key_->publicKey()}, entry_cap);
  EXPECT_NE(s.message().find("bytes uncompressed; the limit is 1000"), std::string::npos)
      << s.message();
  ZipLimits total_cap;
  total_cap.max_total_bytes = 5000;
  s = extractPackage(zip, dir_ / "out", {key_->publicKey()}, total_cap);
  EXPECT_NE(s.message().find("inflates to more than 5000 bytes"), std::string::npos);
  ZipLimits archive_cap;
  archive_cap.max_archive_bytes = 100;
  s = extractPackage(zip, dir_ / "out", {key_->publicKey()}, archive_cap);
  EXPECT_NE(s.message().find("the limit is 100"), std::string::npos) << s.message();
  ZipLimits count_cap;
  count_cap.max_entries = 2;
  s = extractPackage(zip, dir_ / "out", {key_->publicKey()}, count_cap);
  EXPECT_NE(s.message().find("has 3 entries; the limit is 2"), std::string::npos);
  EXPECT_FALSE(fs::exists(dir_ / "out"));
}

TEST_F(PackageTest, RefusesAnEntryThatInflatesBeyondItsDeclaredSize) {
  auto entries = goodEntries();
  for (auto& e : entries) {
    if (e.name == "libfixture_good.so") e.declared_size = 10;
  }
  expectRefused(writeZip(entries), "inflates beyond its declared size");
}

// A reader that trusts local headers (most unzip tools do while streaming) must never see
// other bytes than this one verified: every field the two headers share must agree.
TEST_F(PackageTest, RefusesALocalHeaderThatDisagreesWithTheCentralDirectory) {
  const std::string honest = writeZip(goodEntries());
  ASSERT_TRUE(ZipReader::open(honest));
  auto patched = [&](size_t at, uint32_t value, size_t width) {
    std::string bytes = honest;  // the first entry's local header is at offset 0
    for (size_t i = 0; i < width; ++i) bytes[at + i] = char((value >> (8 * i)) & 0xff);
    return bytes;
  };
  const std::string first = "entry \"" + goodEntries().front().name + "\": the local header";
  expectRefused(patched(6, 0x0008, 2), first + " and the central directory disagree on the flags");
  expectRefused(patched(14, 0, 4), "disagree on the CRC-32 (local 0, central ");
  expectRefused(patched(18, 0, 4), "disagree on the compressed size (local 0, central ");
  expectRefused(patched(22, 7, 4), "disagree on the uncompressed size (local 7, central ");
  // The archive trellis itself writes passes.
  EXPECT_TRUE(ZipReader::open(good_));
}

TEST_F(PackageTest, RefusesGarbageAndTruncatedArchives) {
  expectRefused("this is not a zip file at all", "no end-of-central-directory record");
  expectRefused(good_.substr(0, good_.size() / 2), "not a valid package archive");
}

// Damage anywhere in an archive never crashes the reader, and whatever still verifies
// carries exactly the original content (a flip in a byte nothing depends on, such as a
// header timestamp, may leave the package valid; a flip in content never does). CI runs
// this under ASan/UBSan, which would flag any out-of-bounds read.
TEST_F(PackageTest, SurvivesRandomCorruptionAndTruncation) {
  auto original = goodEntries();
  auto sameContent = [&](const PackageArchive& pkg) {
    auto extracted = dir_ / "check";
    fs::remove_all(extracted);
    if (!pkg.extractTo(extracted)) return false;
    for (const auto& e : original) {
      if (readFile(extracted / e.name) != e.data) return false;
    }
    return true;
  };
  std::mt19937 rng(12345);
  int survivors = 0;
  for (int i = 0; i < 600; ++i) {
    std::string bytes = good_;
    int flips = 1 + static_cast<int>(rng() % 4);
    for (int f = 0; f < flips; ++f) {
      bytes[rng() % bytes.size()] ^= static_cast<char>(1 + rng() % 255);
    }
    auto pkg = PackageArchive::fromBytes(bytes);
    if (pkg && pkg->verify({key_->publicKey()})) {
      ++survivors;
      EXPECT_TRUE(sameContent(*pkg)) << "mutation " << i << " verified with other content";
    }
  }
  for (size_t len = 0; len < good_.size(); len += 7) {
    auto pkg = PackageArchive::fromBytes(good_.substr(0, len));
    EXPECT_FALSE(pkg) << "truncated to " << len << " bytes but opened";
  }
  EXPECT_LT(survivors, 600);  // most damage is refused outright
}

TEST_F(PackageTest, ExtractRefusesAnExistingDestination) {
  fs::path zip = save(good_);
  fs::create_directory(dir_ / "out");
  writeFile(dir_ / "out" / "keep", "mine");
  Status s = extractPackage(zip, dir_ / "out", {key_->publicKey()});
  EXPECT_EQ(s.code(), StatusCode::kConflict);
  EXPECT_EQ(readFile(dir_ / "out" / "keep"), "mine");
}

}  // namespace
