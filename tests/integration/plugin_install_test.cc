// Installing from the marketplace into a running trellisd, as an admin does it with the CLI:
// publish -> search -> install -> the new plugin serves without a restart; an upgrade
// whose on_init fails leaves the old version serving; a good upgrade swaps in place;
// remove refuses while a dependent is installed.
#include <Poco/File.h>
#include <Poco/Net/HTTPRequestHandler.h>
#include <Poco/Net/HTTPRequestHandlerFactory.h>
#include <Poco/Net/HTTPServer.h>
#include <Poco/Net/HTTPServerRequest.h>
#include <Poco/Net/HTTPServerResponse.h>
#include <Poco/Net/ServerSocket.h>
#include <gtest/gtest.h>

#include <algorithm>
#include <filesystem>
#include <fstream>
#include <memory>
#include <string>
#include <utility>
#include <vector>

#include "support/test_mirror.h"
#include "support/test_support.h"

namespace {

using trellis::test::runCommand;
using trellis::test::TempDir;
using trellis::test::TestMirror;
using trellis::test::TrellisdProcess;
namespace fs = std::filesystem;

// A web server over a mirror folder. As a registry it speaks the registry's HTTP API
// (docs/marketplace.md): everything under /registry/v1, archives at
// …/versions/<version>/download, and the registry tenant's key required; otherwise it is a
// plain static mirror.
class MirrorFiles : public Poco::Net::HTTPRequestHandler {
 public:
  MirrorFiles(fs::path root, bool registry) : root_(std::move(root)), registry_(registry) {}
  void handleRequest(Poco::Net::HTTPServerRequest& req,
                     Poco::Net::HTTPServerResponse& res) override {
    std::string path = req.getURI().substr(1);
    if (registry_) {
      const std::string api = "registry/v1/";
      if (req.get("Authorization", "") != "Bearer registry-key") {
        res.setStatusAndReason(Poco::Net::HTTPResponse::HTTP_UNAUTHORIZED);
        res.send() << "a valid tenant key is required";
        return;
      }
      path = path.rfind(api, 0) == 0 ? path.substr(api.size()) : "";
      const std::string suffix = "/download";
      auto versions = path.find("/versions/");
      if (path.rfind("packages/", 0) == 0 && versions != std::string::npos &&
          path.size() > suffix.size() &&
          path.compare(path.size() - suffix.size(), suffix.size(), suffix) == 0) {
        const size_t from = versions + 10;
        path = path.substr(0, versions) + "/" +
               path.substr(from, path.size() - suffix.size() - from) + ".zip";
      }
    }
    const fs::path file = root_ / path;
    std::error_code ec;
    if (path.empty() || path.find("..") != std::string::npos || !fs::is_regular_file(file, ec)) {
      res.setStatusAndReason(Poco::Net::HTTPResponse::HTTP_NOT_FOUND);
      res.send() << "not found";
      return;
    }
    std::ifstream in(file, std::ios::binary);
    std::string body((std::istreambuf_iterator<char>(in)), std::istreambuf_iterator<char>());
    res.setContentLength(static_cast<std::streamsize>(body.size()));
    res.send() << body;
  }

 private:
  fs::path root_;
  bool registry_;
};

class MirrorServer {
 public:
  MirrorServer(fs::path root, bool registry) : socket_(Poco::Net::SocketAddress("127.0.0.1", 0)) {
    struct Factory : Poco::Net::HTTPRequestHandlerFactory {
      Factory(fs::path r, bool reg) : root(std::move(r)), registry(reg) {}
      Poco::Net::HTTPRequestHandler* createRequestHandler(
          const Poco::Net::HTTPServerRequest&) override {
        return new MirrorFiles(root, registry);
      }
      fs::path root;
      bool registry;
    };
    server_ = std::make_unique<Poco::Net::HTTPServer>(new Factory(std::move(root), registry),
                                                      socket_, new Poco::Net::HTTPServerParams);
    server_->start();
  }
  ~MirrorServer() { server_->stopAll(true); }
  std::string url() const { return "http://127.0.0.1:" + std::to_string(socket_.address().port()); }

 private:
  Poco::Net::ServerSocket socket_;
  std::unique_ptr<Poco::Net::HTTPServer> server_;
};

struct CliRun {
  int rc = -1;
  std::string out;  // stdout and stderr
};

fs::path fixture(const std::string& name) {
  return fs::path(TRELLIS_FIXTURE_DIR) / name;
}

class PluginInstallTest : public ::testing::Test {
 protected:
  void SetUp() override {
    trellisd_ = std::make_unique<TrellisdProcess>(
        "server:\n"
        "  listen: 127.0.0.1:0\n"
        "  threads: 2\n"
        "  drain_timeout_ms: 5000\n"
        "admin:\n"
        "  listen: 127.0.0.1:0\n"
        "  token_file: @DIR@/admin.token\n"
        "storage:\n"
        "  data_dir: @DATA@\n"
        "log:\n"
        "  level: debug\n"
        "  access_log: \"off\"\n"
        "plugins:\n"
        "  dirs: [@DIR@/plugins]\n"
        "  enabled:\n"
        "    - id: fixture/good\n"
        "    - id: fixture/needs-good\n"
        "tenants:\n"
        "  - id: acme\n"
        "    plugins: [fixture/good, fixture/needs-good]\n"
        "    keys: [{key: acme-key}]\n");
    ASSERT_TRUE(trellisd_->start()) << trellisd_->log();
  }

  // The CLI against this trellisd; the plugin folder and trust store come from its config.
  CliRun trellis(const std::string& args) {
    CliRun r;
    r.out = runCommand(std::string(TRELLIS_CLI_PATH) +
                           " --admin http://127.0.0.1:" + std::to_string(trellisd_->adminPort()) +
                           " --token " + trellisd_->adminToken() + " " + args + " 2>&1",
                       &r.rc);
    return r;
  }
  std::string target() const { return " --config " + trellisd_->configFile().string(); }

  trellis::test::HttpReply get(const std::string& path) {
    return trellis::test::request(trellisd_->port(), "GET", path,
                                  {{"Authorization", "Bearer acme-key"}});
  }

  fs::path pluginDir() const { return trellisd_->dir() / "plugins"; }

  TempDir tmp_;
  TestMirror mirror_{tmp_ / "mirror"};
  std::unique_ptr<TrellisdProcess> trellisd_;
};

TEST_F(PluginInstallTest, InstalledPluginServesWithoutRestartAndUpgradesInPlace) {
  mirror_.addPlugin(fixture("good"));
  mirror_.publish();
  MirrorServer registry(mirror_.dir(), true);
  trellis::test::writeFile(tmp_ / "registry.key", "registry-key\n");
  const std::string from =
      " --registry " + registry.url() + " --registry-key-file " + (tmp_ / "registry.key").string();
  EXPECT_EQ(get("/fixture/good").status, 404);

  CliRun anonymous = trellis("plugin search good --registry " + registry.url() + target());
  EXPECT_EQ(anonymous.rc, 1);
  EXPECT_NE(anonymous.out.find("the registry refused the key (401)"), std::string::npos)
      << anonymous.out;

  CliRun search = trellis("plugin search good" + from + target());
  ASSERT_EQ(search.rc, 0) << search.out;
  EXPECT_NE(search.out.find("trust on first use"), std::string::npos) << search.out;
  EXPECT_NE(search.out.find("fixture/good"), std::string::npos) << search.out;

  CliRun install = trellis("plugin install fixture/good@^1 --yes" + from + target());
  ASSERT_EQ(install.rc, 0) << install.out << trellisd_->log();
  EXPECT_NE(install.out.find("installed fixture/good@1.0.0"), std::string::npos) << install.out;
  EXPECT_NE(install.out.find("(active)"), std::string::npos) << install.out;
  auto v1 = get("/fixture/good");
  EXPECT_EQ(v1.status, 200);
  EXPECT_EQ(v1.body, "good");

  // 3.0.0's on_init fails: the upgrade is refused and 1.0.0 keeps serving.
  mirror_.addPlugin(fixture("good-v2"));
  mirror_.addPlugin(fixture("good-v3-init-fails"));
  mirror_.index().version = 2;
  mirror_.publish();
  CliRun bad = trellis("plugin upgrade fixture/good --yes" + from + target());
  EXPECT_EQ(bad.rc, 1) << bad.out;
  EXPECT_NE(bad.out.find("this version refuses to start"), std::string::npos) << bad.out;
  EXPECT_NE(bad.out.find("the installed version keeps serving"), std::string::npos) << bad.out;
  EXPECT_EQ(get("/fixture/good").body, "good");
  EXPECT_FALSE(fs::exists(pluginDir() / "fixture.good@3.0.0"));
  EXPECT_NE(trellis::test::readFile(pluginDir() / "plugins.lock").find("\"1.0.0\""),
            std::string::npos);

  // Once 3.0.0 is yanked the newest fitting version is 2.0.0, which swaps in place.
  mirror_.index().packages["fixture/good"]["3.0.0"].yanked = true;
  mirror_.index().version = 3;
  mirror_.publish();
  CliRun good = trellis("plugin upgrade fixture/good --yes" + from + target());
  ASSERT_EQ(good.rc, 0) << good.out << trellisd_->log();
  EXPECT_NE(good.out.find("upgrade  fixture/good 1.0.0 -> 2.0.0"), std::string::npos) << good.out;
  auto v2 = get("/fixture/good");
  EXPECT_EQ(v2.status, 200);
  EXPECT_EQ(v2.body, "good v2");
  EXPECT_FALSE(fs::exists(pluginDir() / "fixture.good@1.0.0"));
  EXPECT_TRUE(trellisd_->running());
}

TEST_F(PluginInstallTest, RemoveRefusesWhileADependentIsInstalled) {
  mirror_.addPlugin(fixture("good"));
  mirror_.addPlugin(fixture("needs-good"));
  mirror_.publish();
  const std::string from = " --from " + mirror_.dir().string();

  CliRun install = trellis("plugin install fixture/needs-good --yes" + from + target());
  ASSERT_EQ(install.rc, 0) << install.out << trellisd_->log();
  EXPECT_EQ(get("/fixture/needs-good").body, "good");
  EXPECT_EQ(get("/fixture/good").status, 200);

  CliRun refused = trellis("plugin remove fixture/good --yes" + target());
  EXPECT_EQ(refused.rc, 1);
  EXPECT_NE(refused.out.find("cannot remove fixture/good: installed plugins depend on it: "
                             "fixture/needs-good@1.0.0"),
            std::string::npos)
      << refused.out;
  EXPECT_TRUE(fs::exists(pluginDir() / "fixture.good@1.0.0"));
  EXPECT_EQ(get("/fixture/good").status, 200);

  CliRun dependent = trellis("plugin remove fixture/needs-good --yes" + target());
  ASSERT_EQ(dependent.rc, 0) << dependent.out;
  EXPECT_EQ(get("/fixture/needs-good").status, 404);
  CliRun removed = trellis("plugin remove fixture/good --yes" + target());
  ASSERT_EQ(removed.rc, 0) << removed.out;
  EXPECT_EQ(get("/fixture/good").status, 404);
  EXPECT_FALSE(fs::exists(pluginDir() / "fixture.good@1.0.0"));
}

TEST_F(PluginInstallTest, RefusedArchiveLeavesThePluginFolderUntouched) {
  mirror_.addPlugin(fixture("good"));
  mirror_.publish();
  std::string zip = trellis::test::readFile(mirror_.dir() / "packages/fixture/good/1.0.0.zip");
  zip[zip.size() / 3] ^= 0x20;
  mirror_.write("packages/fixture/good/1.0.0.zip", zip);

  MirrorServer mirror(mirror_.dir(), false);
  CliRun install = trellis("plugin install fixture/good --yes --from " + mirror.url() + target());
  EXPECT_EQ(install.rc, 1);
  EXPECT_NE(install.out.find("nothing was installed"), std::string::npos) << install.out;
  std::error_code ec;
  EXPECT_TRUE(!fs::exists(pluginDir(), ec) || fs::is_empty(pluginDir(), ec));
  EXPECT_EQ(get("/fixture/good").status, 404);
}

TEST_F(PluginInstallTest, OfflineInstallWaitsForActivateAndTheLockReproducesIt) {
  mirror_.addPlugin(fixture("good"));
  mirror_.addPlugin(fixture("good-v2"));
  mirror_.publish();
  const std::string from = " --from " + mirror_.dir().string();

  CliRun offline = trellis("plugin install fixture/good@^1 --yes --offline" + from + target());
  ASSERT_EQ(offline.rc, 0) << offline.out;
  EXPECT_NE(offline.out.find("restart it or run trellis plugin activate"), std::string::npos)
      << offline.out;
  EXPECT_EQ(get("/fixture/good").status, 404);
  CliRun activate = trellis("plugin activate fixture/good");
  ASSERT_EQ(activate.rc, 0) << activate.out;
  EXPECT_NE(activate.out.find("fixture/good@1.0.0 is active"), std::string::npos) << activate.out;
  EXPECT_EQ(get("/fixture/good").body, "good");

  // Another host with the same lock gets 1.0.0, although 2.0.0 is the newest.
  const fs::path other = tmp_ / "other-plugins";
  CliRun again = trellis("plugin install --yes --offline" + from + " --plugin-dir " +
                         other.string() + " --lock " + (pluginDir() / "plugins.lock").string() +
                         " --state-dir " + (tmp_ / "other-state").string());
  ASSERT_EQ(again.rc, 0) << again.out;
  EXPECT_TRUE(fs::exists(other / "fixture.good@1.0.0" / "libfixture_good.so"));
  EXPECT_FALSE(fs::exists(other / "fixture.good@2.0.0"));
}

// Crash and full-disk tests run the CLI offline against a mirror folder, then look at what
// a freshly started trellisd serves from the plugin folder: the version plugins.lock names.
class InstallAtomicityTest : public ::testing::Test {
 protected:
  void SetUp() override {
    mirror_.addPlugin(fixture("good"));
    mirror_.addPlugin(fixture("good-v2"));
    mirror_.publish();
  }

  CliRun cli(const fs::path& plugins, const std::string& args, const std::string& hook = "") {
    CliRun r;
    r.out = runCommand(
        (hook.empty() ? "" : "TRELLIS_TEST_INSTALL_HOOK=" + hook + " ") +
            std::string(TRELLIS_CLI_PATH) + " plugin " + args + " --yes --offline --plugin-dir " +
            plugins.string() +
            (args.rfind("remove", 0) == 0 ? ""  // remove needs no source
                                          : " --from " + mirror_.dir().string() + " --state-dir " +
                                                (tmp_ / "state").string()) +
            " 2>&1",
        &r.rc);
    return r;
  }

  // What a trellisd started now serves at /fixture/good from `plugins`.
  std::string served(const fs::path& plugins) {
    TrellisdProcess host(
        "server: {listen: 127.0.0.1:0, threads: 1}\n"
        "admin: {listen: 127.0.0.1:0, token_file: @DIR@/admin.token}\n"
        "storage: {data_dir: @DATA@}\n"
        "log: {level: info, access_log: \"off\"}\n"
        "plugins:\n  dirs: [" +
        plugins.string() +
        "]\n  enabled: [{id: fixture/good}]\n"
        "tenants:\n  - {id: acme, plugins: [fixture/good], keys: [{key: acme-key}]}\n");
    if (!host.start()) return "<trellisd did not start: " + host.log() + ">";
    auto reply = trellis::test::request(host.port(), "GET", "/fixture/good",
                                        {{"Authorization", "Bearer acme-key"}});
    last_log_ = host.log();
    return reply.status == 200 ? reply.body : std::to_string(reply.status);
  }
  std::string last_log_;  // of the last served() trellisd, for failure messages

  static std::vector<std::string> listing(const fs::path& dir) {
    std::vector<std::string> names;
    for (const auto& e : fs::directory_iterator(dir)) names.push_back(e.path().filename());
    std::sort(names.begin(), names.end());
    return names;
  }

  TempDir tmp_;
  TestMirror mirror_{tmp_ / "mirror"};
};

TEST_F(InstallAtomicityTest,
       KillNineAtEveryStepOfAnUpgradeServesTheLockedVersionAndARetryFinishes) {
  // Before the commit the old version is installed, from it on the new one.
  const std::vector<std::pair<std::string, std::string>> steps = {
      {"staged", "good"},    {"pending", "good"},      {"placed", "good"},
      {"activated", "good"}, {"committed", "good v2"}, {"tidied", "good v2"}};
  for (const auto& [step, expected] : steps) {
    SCOPED_TRACE("killed at " + step);
    const fs::path plugins = tmp_ / ("plugins-" + step);
    CliRun first = cli(plugins, "install fixture/good@^1");
    ASSERT_EQ(first.rc, 0) << first.out;

    CliRun killed = cli(plugins, "upgrade fixture/good", step + ":kill");
    EXPECT_NE(killed.rc, 0) << killed.out;
    EXPECT_NE(killed.rc, 1) << "it failed instead of being killed: " << killed.out;
    EXPECT_EQ(served(plugins), expected) << last_log_;

    CliRun retry = cli(plugins, "upgrade fixture/good");
    ASSERT_EQ(retry.rc, 0) << retry.out;
    EXPECT_EQ(listing(plugins), (std::vector<std::string>{"fixture.good@2.0.0", "plugins.lock"}));
    const std::string lock = trellis::test::readFile(plugins / "plugins.lock");
    EXPECT_NE(lock.find("\"version\": \"2.0.0\""), std::string::npos) << lock;
    EXPECT_EQ(lock.find("pending"), std::string::npos) << lock;
    EXPECT_EQ(served(plugins), "good v2");
  }
}

TEST_F(InstallAtomicityTest, KillNineDuringAFirstInstallOrARemoveLeavesNothingServedHalfway) {
  const fs::path plugins = tmp_ / "plugins";
  CliRun killed = cli(plugins, "install fixture/good@^1", "placed:kill");
  EXPECT_NE(killed.rc, 0) << killed.out;
  EXPECT_NE(killed.rc, 1) << "it failed instead of being killed: " << killed.out;
  // The folder is complete and enabled in trellis.yaml, but it was never committed.
  EXPECT_TRUE(fs::exists(plugins / "fixture.good@1.0.0" / "trellis-plugin.json"));
  EXPECT_EQ(served(plugins), "404") << last_log_;
  CliRun install = cli(plugins, "install fixture/good@^1");
  ASSERT_EQ(install.rc, 0) << install.out;
  EXPECT_NE(install.out.find("removed a folder of fixture/good that an interrupted run left"),
            std::string::npos)
      << install.out;
  EXPECT_EQ(served(plugins), "good");

  CliRun removing = cli(plugins, "remove fixture/good", "remove-committed:kill");
  EXPECT_NE(removing.rc, 0) << removing.out;
  EXPECT_NE(removing.rc, 1) << "it failed instead of being killed: " << removing.out;
  // The folder is still there, but no longer installed.
  EXPECT_EQ(served(plugins), "404") << last_log_;
  CliRun again = cli(plugins, "install fixture/good@^1");
  ASSERT_EQ(again.rc, 0) << again.out;
  EXPECT_EQ(listing(plugins), (std::vector<std::string>{"fixture.good@1.0.0", "plugins.lock"}));
  EXPECT_EQ(served(plugins), "good");
}

// A full disk and a read-only file system at the commit, on a real tmpfs mounted in a
// private mount namespace (unshare), so nothing outside the test sees it.
TEST_F(InstallAtomicityTest, ALockThatCannotBeWrittenRollsTheInstallBackAndARetryWorks) {
  int rc = -1;
  runCommand("unshare -rm true 2>&1", &rc);
  if (rc != 0) GTEST_SKIP() << "cannot create a mount namespace here (unshare -rm)";
  mirror_.addPlugin(fixture("good-v3-init-fails"));  // offline: never started, only installed
  mirror_.index().version = 2;
  mirror_.publish();
  const fs::path script = tmp_ / "full-disk.sh";
  trellis::test::writeFile(script, R"SH(set -euo pipefail
cli=$1 mirror=$2 w=$3 trellisd=$4
p=$w/plugins
mkdir -p "$p" && mount -t tmpfs -o size=4m tmpfs "$p"
fail() { echo "FAIL: $*"; ls -A "$p"; cat "$p/plugins.lock" 2>/dev/null; exit 1; }
run() { "$cli" plugin "$@" --yes --offline --from "$mirror" --plugin-dir "$p" --state-dir "$w/state"; }
listing() { ls -A "$p" | sort | tr '
' ' '; }
stopped_at() {  # runs the CLI until it stops itself at step $1; its pid in $pid
  ( export TRELLIS_TEST_INSTALL_HOOK=$1:stop; shift; exec "$cli" plugin "$@" --yes --offline       --from "$mirror" --plugin-dir "$p" --state-dir "$w/state" ) >"$w/out" 2>&1 &
  pid=$!
  for _ in $(seq 500); do grep -q '^State:.*stopped' /proc/$pid/status 2>/dev/null && return; sleep 0.02; done
  fail "the CLI never reached step $1"
}
serves() {  # what trellisd serves from $p
  cat >"$w/t.yaml" <<YAML
server: {listen: "127.0.0.1:0", threads: 1}
admin: {listen: "127.0.0.1:0", token_file: "$w/admin.token"}
storage: {data_dir: "$w/data"}
log: {level: warn, access_log: "off"}
plugins: {dirs: ["$p"], enabled: [{id: fixture/good}]}
tenants: [{id: acme, plugins: [fixture/good], keys: [{key: acme-key}]}]
YAML
  rm -f "$w/ready.json"
  "$trellisd" --config "$w/t.yaml" --ready-file "$w/ready.json" >"$w/trellisd.log" 2>&1 & local t=$!
  for _ in $(seq 400); do [ -s "$w/ready.json" ] && break; sleep 0.05; done
  local port; port=$(sed -E 's/.*"port":([0-9]+).*/\1/' "$w/ready.json")
  curl -sS -H 'Authorization: Bearer acme-key' "http://127.0.0.1:$port/fixture/good" \
    2>"$w/curl.log" || cat "$w/ready.json" "$w/curl.log" >>"$w/trellisd.log"
  kill $t; wait $t || true
}

run install 'fixture/good@^1' >/dev/null

# 1. The disk fills up just before the commit.
stopped_at activated upgrade fixture/good@2.0.0
cat /dev/zero >"$p/filler" 2>/dev/null || true
kill -CONT $pid; rc=0; wait $pid || rc=$?
[ $rc = 1 ] || fail "expected exit 1, got $rc: $(cat $w/out)"
grep -q "plugins.lock: .*No space left on device; rolled back, nothing was installed" "$w/out" ||
  fail "no rollback message: $(cat $w/out)"
[ "$(listing)" = "filler fixture.good@1.0.0 plugins.lock " ] || fail "left behind: $(listing)"
grep -q '"version": "1.0.0"' "$p/plugins.lock" || fail "the lock changed"
rm "$p/filler"
got=$(serves); [ "$got" = "good" ] ||
  fail "trellisd serves '$got', not 1.0.0, after the rollback: $(cat "$w/trellisd.log")"
run upgrade fixture/good@2.0.0 >"$w/out" 2>&1 || fail "retry after freeing space: $(cat $w/out)"
[ "$(listing)" = "fixture.good@2.0.0 plugins.lock " ] || fail "after the retry: $(listing)"
[ "$(serves)" = "good v2" ] || fail "trellisd does not serve 2.0.0 after the retry"

# 2. The file system turns read-only just before the commit: nothing can be rolled back
# on disk, but the lock still names 2.0.0, so that is what serves.
stopped_at activated upgrade fixture/good@3.0.0
mount -o remount,ro "$p"
kill -CONT $pid; rc=0; wait $pid || rc=$?
[ $rc = 1 ] || fail "expected exit 1, got $rc: $(cat $w/out)"
grep -q "plugins.lock: .*Read-only file system; rolled back, nothing was installed" "$w/out" ||
  fail "no rollback message: $(cat $w/out)"
grep -q '"version": "2.0.0"' "$p/plugins.lock" || fail "the lock changed"
[ "$(serves)" = "good v2" ] || fail "trellisd does not serve 2.0.0 from a read-only folder"
mount -o remount,rw "$p"
run upgrade fixture/good@3.0.0 >"$w/out" 2>&1 || fail "retry once writable: $(cat $w/out)"
grep -q "removed a folder of fixture/good that an interrupted run left" "$w/out" ||
  fail "the retry did not tidy up: $(cat $w/out)"
[ "$(listing)" = "fixture.good@3.0.0 plugins.lock " ] || fail "after the retry: $(listing)"
echo OK
)SH");
  CliRun r;
  r.out = runCommand("unshare -rm bash " + script.string() + " " + TRELLIS_CLI_PATH + " " +
                         mirror_.dir().string() + " " + tmp_.path().string() + " " + TRELLISD_PATH +
                         " 2>&1",
                     &r.rc);
  EXPECT_EQ(r.rc, 0) << r.out;
  EXPECT_NE(r.out.find("OK"), std::string::npos) << r.out;
}

}  // namespace
