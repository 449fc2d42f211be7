// The installer against generated, signed mirror folders: what it installs, and every
// refusal (tampering, keys, replay, freeze, yanked, conflicts, host fit, hostile archives),
// each with a clear message and nothing written to the plugin folder.
#include "cli/install/installer.h"

#include <arpa/inet.h>
#include <gtest/gtest.h>
#include <netinet/in.h>
#include <sys/socket.h>
#include <unistd.h>

#include <atomic>
#include <chrono>
#include <filesystem>
#include <set>
#include <thread>

#include "cli/install/lock_file.h"
#include "cli/install/resolve.h"
#include "cli/install/source.h"
#include "cli/install/transaction.h"
#include "cli/install/trust.h"
#include "marketplace_zip_writer.h"
#include "support/test_mirror.h"
#include "support/test_support.h"
#include "trellis/marketplace/zip.h"

namespace {

namespace fs = std::filesystem;
using namespace trellis::cli::install;
using trellis::Status;
using trellis::StatusCode;
using trellis::test::TempDir;
using trellis::test::TestMirror;

bool has(const Status& s, const std::string& text) {
  return s.message().find(text) != std::string::npos;
}

class InstallerTest : public ::testing::Test {
 protected:
  InstallerTest() : mirror_(tmp_ / "mirror"), host_(thisHost()) {}

  // A plugin folder with a manifest and a stand-in library (never loaded here).
  fs::path plugin(const std::string& id, const std::string& version, const std::string& deps = "{}",
                  const std::string& abi = "", const std::string& platform = "",
                  const std::string& caps = "[]") {
    const fs::path dir = tmp_ / "src" / (packageDirName(id, version));
    fs::create_directories(dir);
    trellis::test::writeFile(dir / "lib.so", "library of " + id + "@" + version);
    trellis::test::writeFile(
        dir / "trellis-plugin.json",
        "{\"schema\":1,\"id\":\"" + id + "\",\"version\":\"" + version +
            "\",\"runtime\":\"native\",\"abi\":" +
            (abi.empty() ? "{\"major\":" + std::to_string(host_.abi_major) + ",\"minor\":0}"
                         : abi) +
            ",\"entry\":{\"" + (platform.empty() ? host_.platform : platform) +
            "\":\"lib.so\"},\"dependencies\":" + deps + ",\"capabilities\":" + caps + "}");
    return dir;
  }

  // verify index -> resolve -> download and verify all -> write: the CLI's order.
  Status install(const std::vector<std::string>& specs, const LockFile& lock = {}) {
    auto src = directorySource(mirror_.dir());
    TrustStore trust(state_);
    std::vector<std::string> notices;
    auto index = trust.refresh(*src, mirror_.now(), std::nullopt, &notices);
    if (!index) return index.status();
    if (Status s = checkPublisherRoots(index->index(), lock); !s) return s;
    std::vector<InstallRequest> requests;
    for (const auto& s : specs) requests.push_back(parseInstallRequest(s).value());
    auto plan = resolveInstall(index->index(), requests, lock, host_, {});
    if (!plan) return plan.status();
    std::vector<FetchedPackage> fetched;
    for (const auto& p : plan->packages) {
      if (p.action == PlannedPackage::Action::kKeep) continue;
      auto pkg = fetchVerified(*src, *index, p.id, p.version, host_);
      if (!pkg) return pkg.status();
      fetched.push_back(std::move(*pkg));
    }
    std::vector<const FetchedPackage*> ptrs;
    for (const auto& f : fetched) ptrs.push_back(&f);
    auto staged = stagePackages(plugins_, ptrs);
    if (!staged) return staged.status();
    auto placed = staged->place();
    if (!placed) return placed.status();
    plan_ = std::move(*plan);
    return Status::ok();
  }

  // Nothing at all in the plugin folder: no package, no temp folder.
  bool pluginDirEmpty() const {
    std::error_code ec;
    return !fs::exists(plugins_, ec) || fs::is_empty(plugins_, ec);
  }

  TempDir tmp_;
  TestMirror mirror_;
  HostFacts host_;
  fs::path plugins_ = tmp_ / "plugins";
  fs::path state_ = tmp_ / "state";
  InstallPlan plan_;
};

TEST_F(InstallerTest, InstallsThePackageAndItsDependencyFromAMirror) {
  mirror_.addPlugin(plugin("acme/db", "1.0.0"));
  mirror_.addPlugin(plugin("acme/db", "1.1.0"));
  mirror_.addPlugin(plugin("acme/db", "2.0.0"));
  mirror_.addPlugin(plugin("acme/hello", "1.2.0", R"({"acme/db":"^1.0.0"})", "", "", R"(["kv"])"));
  mirror_.publish();

  Status s = install({"acme/hello@^1"});
  ASSERT_TRUE(s) << s.message();
  ASSERT_EQ(plan_.packages.size(), 2u);
  EXPECT_EQ(plan_.packages[0].id, "acme/db");  // dependencies first
  EXPECT_EQ(plan_.packages[0].version, "1.1.0");
  EXPECT_EQ(plan_.packages[1].record.capabilities, std::vector<std::string>{"kv"});
  EXPECT_TRUE(fs::exists(plugins_ / "acme.hello@1.2.0" / "lib.so"));
  EXPECT_TRUE(fs::exists(plugins_ / "acme.db@1.1.0" / "trellis-plugin.json"));
  // The root was pinned on first use and the index version remembered.
  EXPECT_TRUE(fs::exists(state_ / "root.json"));
  EXPECT_EQ(trellis::test::readFile(state_ / "last_index_version"), "1\n");
}

TEST_F(InstallerTest, RefusesATamperedArchiveAndWritesNothing) {
  mirror_.addPlugin(plugin("acme/hello", "1.0.0"));
  mirror_.publish();
  std::string bytes = trellis::test::readFile(mirror_.dir() / "packages/acme/hello/1.0.0.zip");
  bytes[bytes.size() / 2] ^= 0x01;
  mirror_.write("packages/acme/hello/1.0.0.zip", bytes);

  Status s = install({"acme/hello"});
  ASSERT_FALSE(s);
  EXPECT_TRUE(has(s, "acme/hello@1.0.0")) << s.message();
  EXPECT_TRUE(has(s, "not the one the index names") || has(s, "refused the archive"))
      << s.message();
  EXPECT_TRUE(pluginDirEmpty());
}

TEST_F(InstallerTest, RefusesALongerDownloadThanTheIndexNames) {
  mirror_.addPlugin(plugin("acme/hello", "1.0.0"));
  mirror_.publish();
  std::string bytes = trellis::test::readFile(mirror_.dir() / "packages/acme/hello/1.0.0.zip");
  mirror_.write("packages/acme/hello/1.0.0.zip", bytes + std::string(4096, 'x'));

  Status s = install({"acme/hello"});
  EXPECT_TRUE(has(s, "larger than the")) << s.message();
  EXPECT_TRUE(pluginDirEmpty());
}

TEST_F(InstallerTest, RefusesAPackageSignedByAKeyTheNamespaceDoesNotHold) {
  auto stranger = trellis::marketplace::PrivateKey::generate().value();
  mirror_.publisher("acme");
  mirror_.addPlugin(plugin("acme/hello", "1.0.0"), &stranger);
  mirror_.publish();

  Status s = install({"acme/hello"});
  ASSERT_FALSE(s);
  EXPECT_TRUE(has(s, stranger.keyId())) << s.message();
  EXPECT_TRUE(pluginDirEmpty());
}

TEST_F(InstallerTest, RefusesAPackagePublishedAfterItsKeyWasRevoked) {
  mirror_.publisher("acme");
  mirror_.addPlugin(plugin("acme/hello", "1.0.0"));
  mirror_.index().namespaces["acme"][0].revoked =
      trellis::marketplace::Revocation{mirror_.now() - 2 * TestMirror::kDay, "laptop stolen"};
  mirror_.publish();

  Status s = install({"acme/hello"});
  ASSERT_FALSE(s);
  EXPECT_TRUE(has(s, "revoked")) << s.message();
  EXPECT_TRUE(pluginDirEmpty());
}

TEST_F(InstallerTest, RefusesAReplayedOlderIndex) {
  mirror_.addPlugin(plugin("acme/hello", "1.0.0"));
  mirror_.index().version = 2;
  mirror_.publish();
  ASSERT_TRUE(install({"acme/hello"}));
  fs::remove_all(plugins_);

  mirror_.index().version = 1;  // a validly signed, older index served again
  mirror_.publish();
  Status s = install({"acme/hello"});
  ASSERT_FALSE(s);
  EXPECT_TRUE(has(s, "rollback")) << s.message();
  EXPECT_TRUE(pluginDirEmpty());
}

TEST_F(InstallerTest, RefusesAnExpiredTimestampAsFrozenMetadata) {
  mirror_.addPlugin(plugin("acme/hello", "1.0.0"));
  mirror_.publish(1, mirror_.now() - 60);

  Status s = install({"acme/hello"});
  ASSERT_FALSE(s);
  EXPECT_TRUE(has(s, "timestamp.json expired")) << s.message();
  EXPECT_TRUE(pluginDirEmpty());
}

TEST_F(InstallerTest, RefusesAnIndexFromAnotherRootThanThePinnedOne) {
  mirror_.addPlugin(plugin("acme/hello", "1.0.0"));
  mirror_.publish();
  ASSERT_TRUE(install({"acme/hello"}));
  fs::remove_all(plugins_);

  TestMirror impostor(tmp_ / "mirror");  // same place, all keys new
  impostor.addPlugin(plugin("acme/hello", "1.0.0"));
  impostor.index().version = 5;
  impostor.publish();
  Status s = install({"acme/hello"});
  ASSERT_FALSE(s);
  EXPECT_TRUE(has(s, "unknown key")) << s.message();
  EXPECT_TRUE(pluginDirEmpty());
}

TEST_F(InstallerTest, NeverChoosesAYankedVersionAnew) {
  mirror_.addPlugin(plugin("acme/hello", "1.0.0"));
  auto& rec = mirror_.addPlugin(plugin("acme/hello", "1.1.0"));
  rec.yanked = true;
  rec.yanked_reason = "corrupts data";
  mirror_.publish();

  ASSERT_TRUE(install({"acme/hello"}));
  EXPECT_EQ(plan_.packages.at(0).version, "1.0.0");
  fs::remove_all(plugins_);

  Status s = install({"acme/hello@1.1.0"});
  ASSERT_FALSE(s);
  EXPECT_TRUE(has(s, "1.1.0 is yanked (corrupts data)")) << s.message();
  EXPECT_TRUE(pluginDirEmpty());
}

TEST_F(InstallerTest, InstallsALockedYankedVersionWithAWarning) {
  auto& rec = mirror_.addPlugin(plugin("acme/hello", "1.1.0"));
  rec.yanked = true;
  mirror_.publish();
  LockFile lock;
  lock.packages["acme/hello"] = {"1.1.0", rec.sha256, rec.keyid, "acme.hello@1.1.0", true, {}, ""};

  Status s = install({"acme/hello"}, lock);
  ASSERT_TRUE(s) << s.message();
  ASSERT_EQ(plan_.warnings.size(), 1u);
  EXPECT_TRUE(plan_.warnings[0].find("yanked") != std::string::npos) << plan_.warnings[0];
}

TEST_F(InstallerTest, RefusesALockedVersionWhoseArchiveChanged) {
  auto& rec = mirror_.addPlugin(plugin("acme/hello", "1.0.0"));
  mirror_.publish();
  LockFile lock;
  lock.packages["acme/hello"] = {
      "1.0.0", std::string(64, 'a'), rec.keyid, "acme.hello@1.0.0", true, {}, ""};
  Status s = install({"acme/hello"}, lock);
  EXPECT_TRUE(has(s, "plugins.lock recorded")) << s.message();
  EXPECT_TRUE(pluginDirEmpty());
}

TEST_F(InstallerTest, RefusesANamespaceWhoseKeyChainNowStartsWithAnotherKey) {
  mirror_.addPlugin(plugin("acme/hello", "1.0.0"));
  mirror_.publish();
  LockFile lock;
  lock.packages["acme/hello"] = {"1.0.0", "", "", "acme.hello@1.0.0", true, {}, ""};
  lock.packages["acme/hello"].publisher_root = publisherRoot(mirror_.index(), "acme/hello");
  ASSERT_TRUE(install({"acme/hello"}, lock));
  fs::remove_all(plugins_);

  // The registry (or a stolen index key) replaces acme's whole chain with a new first key.
  auto thief = trellis::marketplace::PrivateKey::generate().value();
  mirror_.index().namespaces["acme"] = {
      trellis::marketplace::firstPublisherKey(thief.publicKey(), mirror_.now() - 3600)};
  mirror_.index().packages.clear();
  mirror_.addPlugin(plugin("acme/hello", "1.0.1"), &thief);
  mirror_.publish();
  Status s = install({"acme/hello"}, lock);
  ASSERT_FALSE(s);
  EXPECT_TRUE(has(s, "namespace acme of the installed acme/hello had first publisher key"))
      << s.message();
  EXPECT_TRUE(has(s, thief.keyId())) << s.message();
  EXPECT_TRUE(pluginDirEmpty());
}

TEST_F(InstallerTest, RefusesADependencyConflictNamingBothRequirements) {
  mirror_.addPlugin(plugin("acme/db", "1.0.0"));
  mirror_.addPlugin(plugin("acme/db", "2.0.0"));
  mirror_.addPlugin(plugin("acme/a", "1.0.0", R"({"acme/db":"^1.0.0"})"));
  mirror_.addPlugin(plugin("acme/b", "1.0.0", R"({"acme/db":"^2.0.0"})"));
  mirror_.publish();

  Status s = install({"acme/a", "acme/b"});
  ASSERT_FALSE(s);
  EXPECT_TRUE(has(s, "dependency conflict on acme/db")) << s.message();
  EXPECT_TRUE(has(s, "acme/a@1.0.0")) << s.message();
  EXPECT_TRUE(has(s, "acme/b@1.0.0")) << s.message();
  EXPECT_TRUE(pluginDirEmpty());
}

TEST_F(InstallerTest, RefusesAnInstalledPackagesDependencyBeingBroken) {
  mirror_.addPlugin(plugin("acme/db", "1.0.0"));
  mirror_.addPlugin(plugin("acme/db", "2.0.0"));
  mirror_.publish();
  LockFile lock;
  lock.packages["acme/app"] = {"1.0.0", "", "", "acme.app@1.0.0", true, {{"acme/db", "^1.0.0"}},
                               ""};

  Status s = install({"acme/db@2"}, lock);
  ASSERT_FALSE(s);
  EXPECT_TRUE(has(s, "acme/app@1.0.0 (installed)")) << s.message();
  EXPECT_TRUE(pluginDirEmpty());
}

TEST_F(InstallerTest, RefusesAnAbiMismatch) {
  mirror_.addPlugin(plugin("acme/hello", "1.0.0", "{}", R"({"major":2,"minor":0})"));
  mirror_.publish();

  Status s = install({"acme/hello"});
  ASSERT_FALSE(s);
  EXPECT_TRUE(has(s, "needs plugin ABI 2.0, this host speaks")) << s.message();
  EXPECT_TRUE(pluginDirEmpty());
}

TEST_F(InstallerTest, RefusesAPackageWithoutABuildForThisPlatform) {
  mirror_.addPlugin(plugin("acme/hello", "1.0.0", "{}", "", "linux-riscv64"));
  mirror_.publish();

  Status s = install({"acme/hello"});
  ASSERT_FALSE(s);
  EXPECT_TRUE(has(s, "has no build for " + host_.platform + " (has: linux-riscv64)"))
      << s.message();
  EXPECT_TRUE(pluginDirEmpty());
}

TEST_F(InstallerTest, ChecksTheArchivesOwnManifestNotOnlyTheIndexSummary) {
  auto& rec = mirror_.addPlugin(plugin("acme/hello", "1.0.0", "{}", "", "linux-riscv64"));
  rec.platforms = {host_.platform};  // the index summary lies; the signed manifest does not
  mirror_.publish();

  Status s = install({"acme/hello"});
  ASSERT_FALSE(s);
  EXPECT_TRUE(has(s, "cannot run here")) << s.message();
  EXPECT_TRUE(pluginDirEmpty());
}

TEST_F(InstallerTest, RefusesAPackageWhoseSignedManifestAsksForMoreThanTheIndexLists) {
  auto& rec = mirror_.addPlugin(
      plugin("acme/hello", "1.0.0", "{}", "", "", R"(["kv","egress","tenant.keys"])"));
  rec.capabilities = {"kv"};  // what the plan and the install policy would have shown
  mirror_.publish();

  Status s = install({"acme/hello"});
  ASSERT_FALSE(s);
  EXPECT_TRUE(has(s,
                  "acme/hello@1.0.0: the signed manifest asks for capabilities [egress, kv, "
                  "tenant.keys] but the index lists [kv]"))
      << s.message();
  EXPECT_TRUE(pluginDirEmpty());
}

TEST_F(InstallerTest, RefusesAPackageWhoseSignedDependenciesDifferFromTheIndex) {
  mirror_.addPlugin(plugin("acme/db", "1.0.0"));
  mirror_.addPlugin(plugin("acme/db", "2.0.0"));
  auto& rec = mirror_.addPlugin(plugin("acme/hello", "1.0.0", R"({"acme/db":"^2.0.0"})"));
  rec.dependencies = {{"acme/db", "^1.0.0"}};
  mirror_.publish();

  Status s = install({"acme/hello"});
  ASSERT_FALSE(s);
  EXPECT_TRUE(has(s,
                  "the signed manifest names dependencies [acme/db ^2.0.0] but the index "
                  "lists [acme/db ^1.0.0]"))
      << s.message();
  EXPECT_TRUE(pluginDirEmpty());
}

TEST_F(InstallerTest, HashesTheDownloadBeforeTheZipReaderSeesIt) {
  mirror_.addPlugin(plugin("acme/hello", "1.0.0"));
  mirror_.publish();
  const fs::path file = mirror_.dir() / "packages/acme/hello/1.0.0.zip";
  // Same length, not a zip at all: the zip reader would say "no end-of-central-directory".
  mirror_.write("packages/acme/hello/1.0.0.zip",
                std::string(trellis::test::readFile(file).size(), 'Z'));

  Status s = install({"acme/hello"});
  ASSERT_FALSE(s);
  EXPECT_TRUE(has(s,
                  "acme/hello@1.0.0: acme/hello 1.0.0: the downloaded archive is not the one "
                  "the index names (expected sha256 "))
      << s.message();
  EXPECT_FALSE(has(s, "refused the archive")) << s.message();
  EXPECT_TRUE(pluginDirEmpty());
}

// A correctly signed manifest and signature, plus one hostile entry; listed in the index
// with its true hash, so only the archive checks stand between it and the disk.
class HostileArchiveTest : public InstallerTest,
                           public ::testing::WithParamInterface<trellis::test::RawZipEntry> {};

TEST_P(HostileArchiveTest, RefusesAnEntryThatEscapesItsFolder) {
  auto good = trellis::marketplace::buildPackageBytes(plugin("acme/hello", "1.0.0"),
                                                      mirror_.publisher("acme"))
                  .value();
  auto zip = trellis::marketplace::ZipReader::open(good).value();
  std::vector<trellis::test::RawZipEntry> entries;
  for (const auto& e : zip.entries()) entries.emplace_back(e.name, zip.read(e).value());
  entries.push_back(GetParam());
  auto hostile = trellis::test::writeZip(entries);
  trellis::marketplace::PackageRecord rec;
  rec.keyid = mirror_.publisher("acme").keyId();
  rec.published = mirror_.now() - TestMirror::kDay;
  rec.abi = {{host_.abi_major, 0}};
  rec.platforms = {host_.platform};
  mirror_.addRawArchive("acme/hello", "1.0.0", hostile, rec);
  mirror_.publish();

  Status s = install({"acme/hello"});
  ASSERT_FALSE(s);
  EXPECT_TRUE(has(s, "refused the archive")) << s.message();
  EXPECT_TRUE(has(s, GetParam().name)) << s.message();
  EXPECT_TRUE(pluginDirEmpty());
  EXPECT_FALSE(fs::exists(tmp_ / "evil"));
}

INSTANTIATE_TEST_SUITE_P(Entries, HostileArchiveTest,
                         ::testing::Values(trellis::test::RawZipEntry("../evil", "x"),
                                           trellis::test::RawZipEntry("/tmp/evil", "x"),
                                           trellis::test::RawZipEntry("link", "/etc/passwd", false,
                                                                      0120777)));

TEST_F(InstallerTest, WritesNothingWhenALaterPackageCannotBeWritten) {
  mirror_.addPlugin(plugin("acme/db", "1.0.0"));
  mirror_.addPlugin(plugin("acme/hello", "1.0.0", R"({"acme/db":"^1.0.0"})"));
  mirror_.publish();
  fs::create_directories(plugins_ / "acme.hello@1.0.0");  // in the way of the second one

  Status s = install({"acme/hello"});
  ASSERT_FALSE(s);
  EXPECT_EQ(s.code(), StatusCode::kConflict);
  EXPECT_FALSE(fs::exists(plugins_ / "acme.db@1.0.0"));
}

TEST_F(InstallerTest, ExportedMirrorInstallsWithTheSameVerification) {
  mirror_.addPlugin(plugin("acme/hello", "1.0.0"));
  mirror_.publish();
  auto src = directorySource(mirror_.dir());
  TrustStore trust(state_);
  std::vector<std::string> notices;
  MetadataFiles files;
  auto index = trust.refresh(*src, mirror_.now(), std::nullopt, &notices, &files);
  ASSERT_TRUE(index) << index.status().message();
  auto report = exportMirror(*src, *index, files, tmp_ / "airgap");
  ASSERT_TRUE(report) << report.status().message();
  EXPECT_EQ(report->archives, 1u);

  // A second site pins the exported root and installs from the copy.
  auto copy = directorySource(tmp_ / "airgap");
  TrustStore other(tmp_ / "state2");
  auto again = other.refresh(*copy, mirror_.now(), state_ / "root.json", &notices);
  ASSERT_TRUE(again) << again.status().message();
  auto pkg = fetchVerified(*copy, *again, "acme/hello", "1.0.0", host_);
  EXPECT_TRUE(pkg) << pkg.status().message();
  EXPECT_EQ(exportMirror(*src, *index, files, tmp_ / "airgap").status().code(),
            StatusCode::kConflict);
}

// A real loopback HTTP server that answers one request with `fast` at once and then
// `slow`, one byte every `gap`: a mirror that never stalls long enough for a per-read
// timeout but would take minutes in all.
class TricklingServer {
 public:
  TricklingServer(std::string fast, std::string slow, std::chrono::milliseconds gap)
      : listener_(::socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0)) {
    sockaddr_in addr{};
    addr.sin_family = AF_INET;
    addr.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    EXPECT_EQ(::bind(listener_, reinterpret_cast<sockaddr*>(&addr), sizeof addr), 0);
    EXPECT_EQ(::listen(listener_, 4), 0);
    socklen_t len = sizeof addr;
    ::getsockname(listener_, reinterpret_cast<sockaddr*>(&addr), &len);
    port_ = ntohs(addr.sin_port);
    thread_ = std::thread([this, fast = std::move(fast), slow = std::move(slow), gap] {
      int c = ::accept(listener_, nullptr, nullptr);
      if (c < 0) return;
      char buf[4096];
      (void)::recv(c, buf, sizeof buf, 0);
      (void)::send(c, fast.data(), fast.size(), MSG_NOSIGNAL);
      for (size_t i = 0; i < slow.size() && !stop_; ++i) {
        if (::send(c, &slow[i], 1, MSG_NOSIGNAL) != 1) break;
        std::this_thread::sleep_for(gap);
      }
      ::close(c);
    });
  }
  ~TricklingServer() {
    stop_ = true;
    ::shutdown(listener_, SHUT_RDWR);
    thread_.join();
    ::close(listener_);
  }
  std::string url() const { return "http://127.0.0.1:" + std::to_string(port_); }

 private:
  int listener_;
  uint16_t port_ = 0;
  std::atomic<bool> stop_{false};
  std::thread thread_;
};

TEST(HttpSourceTest, ADownloadThatTricklesPastItsOverallDeadlineIsCut) {
  HttpTimeouts timeouts;
  timeouts.total = std::chrono::seconds(1);  // per-read stays 30 s: never reached
  const auto gap = std::chrono::milliseconds(50);
  for (bool slow_headers : {false, true}) {
    const std::string head = "HTTP/1.1 200 OK\r\nContent-Length: 4000\r\n\r\n";
    const std::string body(4000, 'x');
    TricklingServer server(slow_headers ? "" : head, slow_headers ? head + body : body, gap);
    auto src = httpMirrorSource(server.url(), timeouts);
    ASSERT_TRUE(src);
    const auto started = std::chrono::steady_clock::now();
    auto got = (*src)->fetch("index.json", 1 << 20);
    ASSERT_FALSE(got) << "4000 bytes at one per 50 ms should not arrive within 1 s";
    EXPECT_EQ(got.status().code(), StatusCode::kUnavailable);
    EXPECT_TRUE(has(got.status(),
                    "index.json: did not finish within 1 s (the download "
                    "deadline; --download-timeout SECONDS changes it)"))
        << got.status().message();
    // Cut near the deadline, not after the ~200 s the trickle would take (loose: shared CI).
    EXPECT_LT(std::chrono::steady_clock::now() - started, std::chrono::seconds(30));
  }
}

TEST_F(InstallerTest, LockFileRoundTripsAndNamesDependents) {
  LockFile lock;
  lock.packages["acme/db"] = {"1.0.0", std::string(64, 'b'), "k1", "acme.db@1.0.0", false, {}, ""};
  lock.packages["acme/hello"] = {"1.2.0", std::string(64, 'a'),    "k2", "acme.hello@1.2.0",
                                 true,    {{"acme/db", "^1.0.0"}}, ""};
  lock.packages["acme/hello"].publisher_root = "k0";
  ASSERT_TRUE(lock.save(tmp_ / "plugins.lock"));
  auto back = LockFile::load(tmp_ / "plugins.lock");
  ASSERT_TRUE(back) << back.status().message();
  EXPECT_EQ(back->packages.at("acme/hello").dependencies.at("acme/db"), "^1.0.0");
  EXPECT_TRUE(back->packages.at("acme/hello").requested);
  EXPECT_EQ(back->packages.at("acme/hello").publisher_root, "k0");
  EXPECT_EQ(back->dependentsOf("acme/db"), std::vector<std::string>{"acme/hello"});

  trellis::test::writeFile(tmp_ / "bad.lock",
                           R"({"schema":1,"packages":{"acme/x":{"version":"1.0.0","sha256":"",)"
                           R"("keyid":"","dir":"../../etc"}}})");
  auto bad = LockFile::load(tmp_ / "bad.lock");
  ASSERT_FALSE(bad);
  EXPECT_TRUE(has(bad.status(), "names folder \"../../etc\"")) << bad.status().message();

  // A version that would make the folder name climb out is refused too.
  trellis::test::writeFile(tmp_ / "climb.lock",
                           R"({"schema":1,"packages":{"acme/x":{"version":"/../../etc",)"
                           R"("sha256":"","keyid":"","dir":"acme.x@/../../etc"}}})");
  auto climb = LockFile::load(tmp_ / "climb.lock");
  ASSERT_FALSE(climb);
  EXPECT_TRUE(has(climb.status(), "not a semantic version")) << climb.status().message();
}

}  // namespace
