// The marketplace registry (marketplace/registry) on a real trellisd: what publishers,
// installers and mirrors observe through its HTTP API, what it refuses (with nothing
// stored), and that its signed metadata verifies with the client's own checks.
#include <Poco/JSON/Array.h>
#include <Poco/JSON/Object.h>
#include <Poco/JSON/Parser.h>
#include <Poco/JSON/Stringifier.h>
#include <gmock/gmock.h>
#include <gtest/gtest.h>

#include <algorithm>
#include <chrono>
#include <filesystem>
#include <fstream>
#include <random>
#include <sstream>
#include <thread>

#include "support/test_support.h"
#include "trellis/marketplace/encoding.h"
#include "trellis/marketplace/index.h"
#include "trellis/marketplace/package.h"
#include "unit/marketplace_zip_writer.h"

namespace trellis::test {
namespace {

namespace fs = std::filesystem;
namespace mk = trellis::marketplace;
using Poco::JSON::Object;
using ::testing::HasSubstr;
using ::testing::Not;

constexpr const char* kAdminToken = "registry-admin-token-for-tests";
constexpr const char* kClientKey = "acme-key";  // the registry tenant is acme

Object::Ptr json(const std::string& body) {
  return Poco::JSON::Parser().parse(body).extract<Object::Ptr>();
}

std::string stringify(const Object::Ptr& o) {
  std::ostringstream out;
  Poco::JSON::Stringifier::condense(o, out);
  return out.str();
}

int64_t nowSeconds() {
  return std::chrono::duration_cast<std::chrono::seconds>(
             std::chrono::system_clock::now().time_since_epoch())
      .count();
}

mk::PrivateKey writeKey(const fs::path& file) {
  auto key = mk::PrivateKey::generate();
  EXPECT_TRUE(key.isOk());
  EXPECT_TRUE(key->writePem(file).isOk());
  return std::move(*key);
}

class RegistryTest : public ::testing::Test {
 protected:
  void SetUp() override { start(8u << 20); }

  // Starts trellisd with the registry; `edit` may change the plugin's config lines.
  void start(uint64_t max_package_bytes, const std::function<void(std::string&)>& edit = nullptr) {
    keys_ = dir_ / ("keys-" + std::to_string(counter_++));
    fs::create_directories(keys_);
    root_ = std::make_unique<mk::PrivateKey>(writeKey(keys_ / "root.pem"));
    writeKey(keys_ / "timestamp.pem");
    writeKey(keys_ / "index.pem");
    std::string plugins =
        "    - id: trellis/registry\n"
        "      config:\n"
        "        tenant: acme\n"
        "        admin_token_sha256: \"" +
        mk::sha256Hex(kAdminToken) +
        "\"\n"
        "        root_keys: [" +
        (keys_ / "root.pem").string() +
        "]\n"
        "        root_expires: " +
        std::to_string(nowSeconds() + 365 * 86400) +
        "\n"
        "        timestamp_key: " +
        (keys_ / "timestamp.pem").string() +
        "\n"
        "        index_key: " +
        (keys_ / "index.pem").string() +
        "\n"
        "        max_package_bytes: " +
        std::to_string(max_package_bytes) + "\n";
    if (edit) edit(plugins);
    std::string config = defaultTestConfig(plugins);
    // Uploads are larger than the default 1 MiB request body.
    const std::string threads = "  threads: 2\n";
    config.insert(config.find(threads) + threads.size(), "  max_body_bytes: 16777216\n");
    server_ = std::make_unique<TrellisdProcess>(config);
    ASSERT_TRUE(server_->start()) << server_->log();
  }

  HttpReply call(const std::string& method, const std::string& path, const std::string& token = "",
                 const std::string& body = "", const std::string& tenant_key = kClientKey) {
    std::map<std::string, std::string> headers = {{"Authorization", "Bearer " + tenant_key}};
    if (!token.empty()) headers["X-Registry-Token"] = token;
    return request(server_->port(), method, "/registry/v1" + path, headers, body);
  }

  // Registers `key` as the first key of `ns` and returns a publish token for it.
  std::string bootstrap(const std::string& ns, const mk::PrivateKey& key) {
    auto reg = call("POST", "/namespaces/" + ns + "/keys", kAdminToken,
                    "{\"public\":\"" + key.publicKey().base64() + "\"}");
    EXPECT_EQ(reg.status, 201) << reg.body;
    return token(ns);
  }

  std::string token(const std::string& ns, int ttl = 3600) {
    auto created = call("POST", "/tokens", kAdminToken,
                        "{\"namespace\":\"" + ns + "\",\"ttl_seconds\":" + std::to_string(ttl) +
                            ",\"description\":\"CI\"}");
    EXPECT_EQ(created.status, 201) << created.body;
    return json(created.body)->getValue<std::string>("token");
  }

  // A package of the good fixture plugin as `id`@`version`; `edit` changes the manifest.
  std::string package(const std::string& id, const std::string& version, const mk::PrivateKey& key,
                      const std::function<void(Object&)>& edit = nullptr,
                      uint64_t extra_random_bytes = 0) {
    const fs::path dir =
        work_ / (id.substr(id.find('/') + 1) + "-" + version + "-" + std::to_string(counter_++));
    fs::create_directories(dir);
    const fs::path good = fs::path(TRELLIS_FIXTURE_DIR) / "good";
    fs::copy_file(good / "libfixture_good.so", dir / "libfixture_good.so");
    Object::Ptr manifest = json(readFile(good / "trellis-plugin.json"));
    manifest->set("id", id);
    manifest->set("version", version);
    if (edit) edit(*manifest);
    writeFile(dir / "trellis-plugin.json", stringify(manifest));
    if (extra_random_bytes > 0) {
      std::mt19937_64 rng(42);
      std::string noise(extra_random_bytes, '\0');
      for (char& c : noise) c = static_cast<char>(rng());
      writeFile(dir / "noise.bin", noise);
    }
    auto bytes = mk::buildPackageBytes(dir, key);
    EXPECT_TRUE(bytes.isOk()) << bytes.status().message();
    return *bytes;
  }

  HttpReply publish(const std::string& archive, const std::string& token,
                    const std::string& query = "") {
    return call("POST", "/packages" + query, token, archive);
  }

  // timestamp.json + index.json as a client fetches them, checked from the pinned root.
  trellis::Result<mk::VerifiedIndex> verifiedIndex(uint64_t last_seen = 0) {
    auto root = mk::Root::loadTrusted(call("GET", "/root.json").body);
    if (!root) return root.status();
    auto ts = call("GET", "/timestamp.json");
    auto index = call("GET", "/index.json");
    return mk::verifyIndex(*root, last_seen, nowSeconds(), ts.body, index.body);
  }

  void expectNothingStored(const std::string& id) {
    EXPECT_EQ(call("GET", "/packages/" + id + "/versions").status, 404);
    EXPECT_EQ(json(call("GET", "/packages").body)->getArray("packages")->size(), 0u);
  }

  TempDir dir_;
  fs::path keys_;
  fs::path work_ = dir_ / "work";
  int counter_ = 0;
  std::unique_ptr<mk::PrivateKey> root_;
  std::unique_ptr<TrellisdProcess> server_;
};

TEST_F(RegistryTest, PublishedPackageIsListedSearchableAndDownloadsByteForByte) {
  auto acme = mk::PrivateKey::generate().value();
  const std::string token = bootstrap("acme", acme);
  const std::string archive = package("acme/hello", "1.2.0", acme, [](Object& m) {
    m.set("description", "Greets people politely");
  });

  auto published = publish(archive, token, "?tags=greeting,demo");
  ASSERT_EQ(published.status, 201) << published.body;
  auto v = json(published.body);
  EXPECT_EQ(v->getValue<std::string>("id"), "acme/hello");
  EXPECT_EQ(v->getValue<std::string>("sha256"), mk::sha256Hex(archive));
  EXPECT_EQ(v->getValue<std::string>("keyid"), acme.keyId());
  EXPECT_GE(v->getValue<int>("index_version"), 2);

  auto versions = call("GET", "/packages/acme/hello/versions");
  ASSERT_EQ(versions.status, 200) << versions.body;
  EXPECT_EQ(
      json(versions.body)->getArray("versions")->getObject(0)->getValue<std::string>("version"),
      "1.2.0");

  auto info = json(call("GET", "/packages/acme/hello").body);
  EXPECT_EQ(info->getValue<std::string>("latest"), "1.2.0");
  EXPECT_EQ(info->getValue<std::string>("description"), "Greets people politely");

  EXPECT_EQ(json(call("GET", "/packages?q=POLITE").body)->getArray("packages")->size(), 1u);
  EXPECT_EQ(json(call("GET", "/packages?q=hello&tag=greeting").body)->getArray("packages")->size(),
            1u);
  EXPECT_EQ(json(call("GET", "/packages?tag=storage").body)->getArray("packages")->size(), 0u);
  EXPECT_EQ(json(call("GET", "/packages?q=nothing-like-it").body)->getArray("packages")->size(),
            0u);

  auto download = call("GET", "/packages/acme/hello/versions/1.2.0/download");
  ASSERT_EQ(download.status, 200);
  EXPECT_EQ(download.body, archive);
  EXPECT_EQ(download.header("content-type"), "application/zip");
  EXPECT_EQ(download.header("x-checksum-sha256"), mk::sha256Hex(archive));
  ASSERT_EQ(call("GET", "/packages/acme/hello/versions/1.2.0/download").status, 200);
  EXPECT_EQ(
      json(call("GET", "/packages/acme/hello/versions/1.2.0").body)->getValue<int>("downloads"), 2);

  // An installer trusting only root.json accepts the index and the downloaded archive.
  auto index = verifiedIndex();
  ASSERT_TRUE(index.isOk()) << index.status().message();
  auto pkg = mk::PackageArchive::fromBytes(download.body);
  ASSERT_TRUE(pkg.isOk());
  EXPECT_TRUE(index->verifyPackage("acme/hello", "1.2.0", *pkg).isOk());
  EXPECT_EQ(index->index().namespaces.at("acme").front().keyid, acme.keyId());

  // The timestamp expires within the configured day: a frozen mirror is detected.
  auto root = mk::Root::loadTrusted(call("GET", "/root.json").body);
  ASSERT_TRUE(root.isOk());
  auto ts = json(call("GET", "/timestamp.json").body)->getObject("signed");
  EXPECT_GT(ts->getValue<int64_t>("expires"), nowSeconds());
  EXPECT_LE(ts->getValue<int64_t>("expires"), nowSeconds() + 86400);
  auto frozen =
      mk::verifyIndex(*root, 0, nowSeconds() + 2 * 86400, call("GET", "/timestamp.json").body,
                      call("GET", "/index.json").body);
  EXPECT_THAT(frozen.status().message(), HasSubstr("frozen metadata"));
}

TEST_F(RegistryTest, PublishRefusesBadTokensAndStoresNothing) {
  auto acme = mk::PrivateKey::generate().value();
  bootstrap("acme", acme);
  auto other = mk::PrivateKey::generate().value();
  const std::string globex_token = bootstrap("globex", other);
  const std::string archive = package("acme/hello", "1.0.0", acme);

  auto none = publish(archive, "");
  EXPECT_EQ(none.status, 401);
  EXPECT_THAT(none.body, HasSubstr("X-Registry-Token"));

  auto unknown = publish(archive, "trp_made-up");
  EXPECT_EQ(unknown.status, 403);
  EXPECT_THAT(unknown.body, HasSubstr("unknown or revoked registry token"));

  auto wrong_ns = publish(archive, globex_token);
  EXPECT_EQ(wrong_ns.status, 403);
  EXPECT_THAT(wrong_ns.body, HasSubstr("for namespace \\\"globex\\\", not \\\"acme\\\""));

  const std::string short_lived = token("acme", 1);
  std::this_thread::sleep_for(std::chrono::milliseconds(2100));  // outlive a 1 s token
  auto expired = publish(archive, short_lived);
  EXPECT_EQ(expired.status, 403);
  EXPECT_THAT(expired.body, HasSubstr("expired at"));

  const std::string revoked = token("acme");
  auto listed = call("GET", "/tokens", kAdminToken);
  ASSERT_EQ(listed.status, 200);
  EXPECT_THAT(listed.body, Not(HasSubstr(revoked)));  // shown once, never listed
  const std::string id = mk::sha256Hex(revoked).substr(0, 16);
  EXPECT_EQ(call("DELETE", "/tokens/" + id, kAdminToken).status, 204);
  EXPECT_EQ(publish(archive, revoked).status, 403);

  // A publish token cannot mint tokens.
  EXPECT_EQ(
      call("POST", "/tokens", globex_token, "{\"namespace\":\"acme\",\"ttl_seconds\":60}").status,
      403);
  expectNothingStored("acme/hello");
  EXPECT_THAT(server_->log(), Not(HasSubstr(revoked)));
  EXPECT_THAT(server_->log(), Not(HasSubstr(kAdminToken)));
}

TEST_F(RegistryTest, PublishRefusesPackagesThatFailVerification) {
  auto acme = mk::PrivateKey::generate().value();
  const std::string token = bootstrap("acme", acme);

  // Files changed after signing: the manifest's hash no longer matches.
  {
    auto zip = mk::ZipReader::open(package("acme/hello", "1.0.0", acme)).value();
    std::vector<RawZipEntry> entries;
    for (const auto& e : zip.entries()) {
      std::string data = zip.read(e).value();
      if (e.name == "libfixture_good.so") data[data.size() / 2] ^= 0x55;
      entries.emplace_back(e.name, data);
    }
    auto tampered = publish(writeZip(entries), token);
    EXPECT_EQ(tampered.status, 422);
    EXPECT_THAT(tampered.body, HasSubstr("libfixture_good.so"));
  }

  auto stranger = mk::PrivateKey::generate().value();
  auto unregistered = publish(package("acme/hello", "1.0.0", stranger), token);
  EXPECT_EQ(unregistered.status, 422);
  EXPECT_THAT(unregistered.body, HasSubstr("which is not registered for namespace"));

  auto bad_manifest =
      publish(package("acme/hello", "1.0.0", acme, [](Object& m) { m.set("abi", "one"); }), token);
  EXPECT_EQ(bad_manifest.status, 422);
  EXPECT_THAT(bad_manifest.body, HasSubstr("abi"));

  auto bad_semver = publish(package("acme/hello", "1.0", acme), token);
  EXPECT_EQ(bad_semver.status, 422);
  EXPECT_THAT(bad_semver.body, HasSubstr("is not a semantic version"));

  auto bad_abi = publish(package("acme/hello", "1.0.0", acme,
                                 [](Object& m) {
                                   Object::Ptr abi = new Object;
                                   abi->set("major", 2);
                                   abi->set("minor", 0);
                                   m.set("abi", abi);
                                 }),
                         token);
  EXPECT_EQ(bad_abi.status, 422);
  EXPECT_THAT(bad_abi.body, HasSubstr("abi major 2 is not supported"));

  // An entry that would escape the extraction folder.
  {
    auto zip = mk::ZipReader::open(package("acme/hello", "1.0.0", acme)).value();
    std::vector<RawZipEntry> entries;
    for (const auto& e : zip.entries()) entries.emplace_back(e.name, zip.read(e).value());
    entries.emplace_back("../escape.so", "boom");
    auto escape = publish(writeZip(entries), token);
    EXPECT_EQ(escape.status, 422);
    EXPECT_THAT(escape.body, HasSubstr("escape.so"));
  }

  auto not_zip = publish("definitely not a zip", token);
  EXPECT_EQ(not_zip.status, 422);
  EXPECT_THAT(not_zip.body, HasSubstr("not a valid package"));

  expectNothingStored("acme/hello");
}

TEST_F(RegistryTest, DryRunRunsEveryCheckAndStoresNothing) {
  auto acme = mk::PrivateKey::generate().value();
  const std::string token = bootstrap("acme", acme);
  const auto index_before = verifiedIndex();
  ASSERT_TRUE(index_before.isOk()) << index_before.status().message();

  const std::string archive = package("acme/hello", "1.0.0", acme);
  auto dry = publish(archive, token, "?dry_run=true&tags=demo");
  ASSERT_EQ(dry.status, 200) << dry.body;
  auto v = json(dry.body);
  EXPECT_TRUE(v->getValue<bool>("dry_run"));
  EXPECT_EQ(v->getValue<std::string>("sha256"), mk::sha256Hex(archive));
  EXPECT_FALSE(v->has("index_version"));
  expectNothingStored("acme/hello");
  auto index_after = verifiedIndex();
  ASSERT_TRUE(index_after.isOk()) << index_after.status().message();
  EXPECT_EQ(index_after->index().version, index_before->index().version);

  // The checks are the real ones: an unregistered key and a bad token are refused.
  auto stranger = mk::PrivateKey::generate().value();
  auto refused = publish(package("acme/hello", "1.0.0", stranger), token, "?dry_run=1");
  EXPECT_EQ(refused.status, 422);
  EXPECT_THAT(refused.body, HasSubstr("which is not registered for namespace"));
  EXPECT_EQ(publish(archive, "wrong-token", "?dry_run=1").status, 403);
  EXPECT_EQ(publish(archive, token, "?dry_run=maybe").status, 400);

  // After the real publish, a dry run of the same version is the same conflict.
  ASSERT_EQ(publish(archive, token).status, 201);
  EXPECT_EQ(publish(archive, token, "?dry_run=1").status, 409);
}

TEST_F(RegistryTest, PublishRefusesOversizedUploads) {
  server_.reset();
  start(256 * 1024);
  auto acme = mk::PrivateKey::generate().value();
  const std::string token = bootstrap("acme", acme);
  auto big = publish(package("acme/hello", "1.0.0", acme, nullptr, 512 * 1024), token);
  EXPECT_EQ(big.status, 413);
  EXPECT_THAT(big.body, HasSubstr("accepts at most 262144"));
  expectNothingStored("acme/hello");
}

TEST_F(RegistryTest, PublishRefusesPackagesThatInflatePastTheCap) {
  server_.reset();
  start(8u << 20, [](std::string& plugins) { plugins += "        max_unpacked_bytes: 1048576\n"; });
  auto acme = mk::PrivateKey::generate().value();
  const std::string token = bootstrap("acme", acme);
  // Files that add up to 2 MiB once inflated, in an upload well under the 8 MiB cap.
  auto inflates = publish(package("acme/hello", "1.0.0", acme, nullptr, 2u << 20), token);
  EXPECT_EQ(inflates.status, 422);
  EXPECT_THAT(inflates.body, HasSubstr("not a valid package"));
  EXPECT_THAT(inflates.body, HasSubstr("1048576")) << inflates.body;
  expectNothingStored("acme/hello");
}

TEST_F(RegistryTest, ArchivesLargerThanOneKvValueAreChunkedAndServedWhole) {
  auto acme = mk::PrivateKey::generate().value();
  const std::string token = bootstrap("acme", acme);
  // Incompressible, so the archive is about 3 MiB: six chunks of 512 KiB.
  const std::string archive = package("acme/big", "1.0.0", acme, nullptr, 3u << 20);
  ASSERT_GT(archive.size(), 3u << 20);
  ASSERT_EQ(publish(archive, token).status, 201);
  auto download = call("GET", "/packages/acme/big/versions/1.0.0/download");
  ASSERT_EQ(download.status, 200);
  EXPECT_EQ(download.body.size(), archive.size());
  EXPECT_TRUE(download.body == archive);
}

TEST_F(RegistryTest, VersionsAreImmutableAndConfusableNamesRefused) {
  auto acme = mk::PrivateKey::generate().value();
  const std::string token = bootstrap("acme", acme);
  auto globex = mk::PrivateKey::generate().value();
  const std::string globex_token = bootstrap("globex", globex);
  ASSERT_EQ(publish(package("acme/hello", "1.0.0", acme), token).status, 201);

  // Same id@version, different bytes: refused, and the original is what is served.
  const std::string original = call("GET", "/packages/acme/hello/versions/1.0.0/download").body;
  auto again = publish(
      package("acme/hello", "1.0.0", acme, [](Object& m) { m.set("description", "changed"); }),
      token);
  EXPECT_EQ(again.status, 409);
  EXPECT_THAT(again.body, HasSubstr("already published; published versions are immutable"));
  EXPECT_EQ(call("GET", "/packages/acme/hello/versions/1.0.0/download").body, original);

  auto build_only = publish(package("acme/hello", "1.0.0+rebuild", acme), token);
  EXPECT_EQ(build_only.status, 409);
  EXPECT_THAT(build_only.body, HasSubstr("only in build metadata"));

  auto lookalike = publish(package("acme/he11o", "1.0.0", acme), token);
  EXPECT_EQ(lookalike.status, 409);
  EXPECT_THAT(lookalike.body, HasSubstr("too close to the existing package acme/hello"));

  auto lookalike_ns = call("POST", "/namespaces/acrne/keys", kAdminToken,
                           "{\"public\":\"" + globex.publicKey().base64() + "\"}");
  EXPECT_EQ(lookalike_ns.status, 409);
  EXPECT_THAT(lookalike_ns.body, HasSubstr("too close to the existing namespace \\\"acme\\\""));

  // Another namespace may reuse a name, and a publisher's own names may be close.
  EXPECT_EQ(publish(package("globex/hello", "1.0.0", globex), globex_token).status, 201);
  EXPECT_EQ(publish(package("globex/helloo", "1.0.0", globex), globex_token).status, 201);
  // One edit away from acme/hello, from another namespace: refused.
  auto acme2 = mk::PrivateKey::generate().value();
  const std::string acme2_token = bootstrap("acme2", acme2);
  auto squat = publish(package("acme2/hello", "1.0.0", acme2), acme2_token);
  EXPECT_EQ(squat.status, 409);
  EXPECT_THAT(squat.body, HasSubstr("too close to the existing package acme/hello"));

  EXPECT_EQ(call("GET", "/packages/acme/he11o/versions").status, 404);
  EXPECT_EQ(publish(package("acme/hello", "1.1.0", acme), token).status, 201);
}

TEST_F(RegistryTest, ConcurrentPublishesOfOneVersionLeaveExactlyOneWinner) {
  auto acme = mk::PrivateKey::generate().value();
  const std::string token = bootstrap("acme", acme);
  std::vector<std::string> archives;
  for (int i = 0; i < 4; ++i) {
    archives.push_back(package("acme/race", "1.0.0", acme, [i](Object& m) {
      m.set("description", "contender " + std::to_string(i));
    }));
  }
  std::vector<int> statuses(archives.size());
  std::vector<std::thread> threads;
  for (size_t i = 0; i < archives.size(); ++i) {
    threads.emplace_back([&, i] { statuses[i] = publish(archives[i], token).status; });
  }
  for (auto& t : threads) t.join();
  EXPECT_EQ(std::count(statuses.begin(), statuses.end(), 201), 1);
  EXPECT_EQ(std::count(statuses.begin(), statuses.end(), 409), 3);
  const size_t winner = std::find(statuses.begin(), statuses.end(), 201) - statuses.begin();
  EXPECT_EQ(call("GET", "/packages/acme/race/versions/1.0.0/download").body, archives[winner]);
  auto index = verifiedIndex();
  ASSERT_TRUE(index.isOk()) << index.status().message();
  EXPECT_EQ(index->find("acme/race", "1.0.0").value().sha256, mk::sha256Hex(archives[winner]));
}

TEST_F(RegistryTest, KeyRotationAndRevocationGovernWhoMayPublish) {
  auto old_key = mk::PrivateKey::generate().value();
  const std::string token = bootstrap("acme", old_key);
  ASSERT_EQ(publish(package("acme/hello", "1.0.0", old_key), token).status, 201);

  // A second first key is refused: later keys must be vouched for by an existing one.
  auto stranger = mk::PrivateKey::generate().value();
  auto hijack = call("POST", "/namespaces/acme/keys", kAdminToken,
                     "{\"public\":\"" + stranger.publicKey().base64() + "\"}");
  EXPECT_EQ(hijack.status, 409);

  auto new_key = mk::PrivateKey::generate().value();
  auto forged = call("POST", "/namespaces/acme/keys", token,
                     "{\"public\":\"" + new_key.publicKey().base64() + "\",\"signed_by\":\"" +
                         old_key.keyId() + "\",\"rotation_sig\":\"" +
                         mk::base64Encode(stranger.sign("not the statement").value()) + "\"}");
  EXPECT_EQ(forged.status, 422);
  EXPECT_THAT(forged.body, HasSubstr("rotation_sig"));

  auto statement = mk::rotationStatement("acme", new_key.publicKey(), old_key.keyId());
  auto rotated = call("POST", "/namespaces/acme/keys", token,
                      "{\"public\":\"" + new_key.publicKey().base64() + "\",\"signed_by\":\"" +
                          old_key.keyId() + "\",\"rotation_sig\":\"" +
                          mk::base64Encode(old_key.sign(statement).value()) + "\"}");
  ASSERT_EQ(rotated.status, 201) << rotated.body;
  ASSERT_EQ(publish(package("acme/hello", "1.1.0", new_key), token).status, 201);

  auto revoke = call("POST", "/namespaces/acme/keys/" + old_key.keyId() + "/revoke", token,
                     "{\"reason\":\"laptop stolen\"}");
  ASSERT_EQ(revoke.status, 200) << revoke.body;
  auto refused = publish(package("acme/hello", "1.2.0", old_key), token);
  EXPECT_EQ(refused.status, 422);
  EXPECT_THAT(refused.body, HasSubstr("which was revoked at"));
  EXPECT_THAT(refused.body, HasSubstr("laptop stolen"));
  EXPECT_EQ(call("GET", "/packages/acme/hello/versions/1.2.0").status, 404);

  // The index carries the chain and the revocation, and still verifies; 1.0.0 (published
  // before the revocation) stays installable.
  auto index = verifiedIndex();
  ASSERT_TRUE(index.isOk()) << index.status().message();
  const auto& keys = index->index().namespaces.at("acme");
  ASSERT_EQ(keys.size(), 2u);
  ASSERT_TRUE(keys[0].revoked.has_value());
  EXPECT_EQ(keys[0].revoked->reason, "laptop stolen");
  EXPECT_EQ(keys[1].signed_by, old_key.keyId());
  EXPECT_TRUE(index->signingKey("acme/hello", "1.0.0").isOk());
}

TEST_F(RegistryTest, YanksShowInTheIndexAndEveryChangeRaisesItsVersion) {
  auto acme = mk::PrivateKey::generate().value();
  const std::string token = bootstrap("acme", acme);
  auto first = verifiedIndex();
  ASSERT_TRUE(first.isOk()) << first.status().message();

  ASSERT_EQ(publish(package("acme/hello", "1.0.0", acme), token).status, 201);
  auto after_publish = verifiedIndex(first->version());
  ASSERT_TRUE(after_publish.isOk()) << after_publish.status().message();
  EXPECT_GT(after_publish->version(), first->version());

  auto no_reason = call("POST", "/packages/acme/hello/versions/1.0.0/yank", token, "{}");
  EXPECT_EQ(no_reason.status, 400);
  auto yank = call("POST", "/packages/acme/hello/versions/1.0.0/yank", token,
                   "{\"reason\":\"CVE-2026-1234\"}");
  ASSERT_EQ(yank.status, 200) << yank.body;
  auto yanked = verifiedIndex(after_publish->version());
  ASSERT_TRUE(yanked.isOk()) << yanked.status().message();
  EXPECT_GT(yanked->version(), after_publish->version());
  auto rec = yanked->find("acme/hello", "1.0.0").value();
  EXPECT_TRUE(rec.yanked);
  EXPECT_EQ(rec.yanked_reason, "CVE-2026-1234");
  EXPECT_EQ(
      call("POST", "/packages/acme/hello/versions/1.0.0/yank", token, "{\"reason\":\"again\"}")
          .status,
      409);
  // Yanked versions still download: an exact pin keeps working.
  EXPECT_EQ(call("GET", "/packages/acme/hello/versions/1.0.0/download").status, 200);

  auto unyank = call("POST", "/packages/acme/hello/versions/1.0.0/unyank", token,
                     "{\"reason\":\"false alarm\"}");
  ASSERT_EQ(unyank.status, 200) << unyank.body;
  auto restored = verifiedIndex(yanked->version());
  ASSERT_TRUE(restored.isOk()) << restored.status().message();
  EXPECT_GT(restored->version(), yanked->version());
  EXPECT_FALSE(restored->find("acme/hello", "1.0.0").value().yanked);

  // A client that saw the newer index refuses to go back to an older one.
  auto rollback = verifiedIndex(restored->version() + 1);
  EXPECT_THAT(rollback.status().message(), HasSubstr("rollback"));
}

TEST_F(RegistryTest, MisconfiguredRegistryIsRefusedNamingTheField) {
  server_.reset();
  start(1u << 20, [&](std::string& plugins) {
    plugins += "        chunk_size: 1024\n";  // a typo of chunk_bytes
  });
  auto plugins = json(request(server_->adminPort(), "GET", "/v1/plugins",
                              {{"Authorization", "Bearer " + server_->adminToken()}})
                          .body)
                     ->getArray("plugins");
  std::string error;
  for (size_t i = 0; i < plugins->size(); ++i) {
    auto p = plugins->getObject(static_cast<unsigned>(i));
    if (p->getValue<std::string>("id") == "trellis/registry") {
      EXPECT_EQ(p->getValue<std::string>("state"), "failed");
      error = p->optValue<std::string>("error", "");
    }
  }
  EXPECT_THAT(error, HasSubstr("chunk_size is not a known setting"));
  EXPECT_NE(call("GET", "/packages").status, 200);

  // A private key that others can read is refused, as ssh does.
  server_.reset();
  start(1u << 20, [&](std::string&) {
    fs::permissions(keys_ / "timestamp.pem", fs::perms::group_read | fs::perms::others_read,
                    fs::perm_options::add);
  });
  EXPECT_THAT(server_->log(), HasSubstr("timestamp_key"));
  EXPECT_THAT(server_->log(), Not(HasSubstr("PRIVATE KEY")));
}

TEST_F(RegistryTest, OnlyTheRegistryTenantSeesTheCatalogue) {
  auto other = call("GET", "/packages", "", "", "globex-key");
  EXPECT_EQ(other.status, 403);
  EXPECT_THAT(other.body, HasSubstr("this registry serves tenant \\\"acme\\\""));
  EXPECT_EQ(call("GET", "/packages").status, 200);
}

}  // namespace
}  // namespace trellis::test
