// Test helper: a signed mirror folder (root.json, timestamp.json, index.json, archives) made
// with marketplace/client's own signing functions, so installer tests run against exactly
// what a registry or `trellis mirror export` serves, and can then tamper with it.
//
//   TestMirror m(dir / "mirror");
//   m.addPlugin(pluginFolder("acme/hello", "1.0.0"), "acme");
//   m.publish();
//   auto src = install::directorySource(m.dir());
#pragma once

#include <filesystem>
#include <fstream>
#include <map>
#include <string>

#include "trellis/marketplace/encoding.h"
#include "trellis/marketplace/index.h"
#include "trellis/marketplace/package.h"

namespace trellis::test {

class TestMirror {
 public:
  static constexpr marketplace::UnixSeconds kDay = 86'400;

  explicit TestMirror(std::filesystem::path dir, marketplace::UnixSeconds now = 0)
      : dir_(std::move(dir)),
        now_(now ? now : static_cast<marketplace::UnixSeconds>(std::time(nullptr))),
        root_key_(marketplace::PrivateKey::generate().value()),
        ts_key_(marketplace::PrivateKey::generate().value()),
        index_key_(marketplace::PrivateKey::generate().value()) {
    root_.version = 1;
    root_.expires = now_ + 365 * kDay;
    for (const auto* k : {&root_key_, &ts_key_, &index_key_})
      root_.keys[k->keyId()] = k->publicKey();
    root_.root = {{root_key_.keyId()}, 1};
    root_.timestamp = {{ts_key_.keyId()}, 1};
    root_.index = {{index_key_.keyId()}, 1};
    index_.version = 1;
    index_.expires = now_ + 30 * kDay;
  }

  const std::filesystem::path& dir() const { return dir_; }
  marketplace::UnixSeconds now() const { return now_; }
  marketplace::Index& index() { return index_; }
  marketplace::Root& root() { return root_; }

  // The namespace's publisher key, registered (first key) on first use.
  const marketplace::PrivateKey& publisher(const std::string& ns) {
    auto it = publishers_.find(ns);
    if (it == publishers_.end()) {
      it = publishers_.emplace(ns, marketplace::PrivateKey::generate().value()).first;
      index_.namespaces[ns].push_back(
          marketplace::firstPublisherKey(it->second.publicKey(), now_ - 10 * kDay));
    }
    return it->second;
  }

  // Packages `plugin_dir` with the namespace's key (or `key`) and lists it in the index.
  marketplace::PackageRecord& addPlugin(const std::filesystem::path& plugin_dir,
                                        const marketplace::PrivateKey* key = nullptr) {
    marketplace::BuiltPackage built;
    std::string ns;
    {
      std::ifstream in(plugin_dir / "trellis-plugin.json");
      std::string text((std::istreambuf_iterator<char>(in)), std::istreambuf_iterator<char>());
      auto id_at = text.find("\"id\"");
      auto q1 = text.find('"', text.find(':', id_at) + 1);
      ns = text.substr(q1 + 1, text.find('/', q1) - q1 - 1);
    }
    const auto& signer = key ? *key : publisher(ns);
    auto bytes = marketplace::buildPackageBytes(plugin_dir, signer, &built).value();
    return addArchive(built.id, built.version, bytes);
  }

  // Lists `bytes` as id@version (summary read from the archive) and stores the archive.
  marketplace::PackageRecord& addArchive(const std::string& id, const std::string& version,
                                         const std::string& bytes) {
    auto pkg = marketplace::PackageArchive::fromBytes(bytes).value();
    auto rec = marketplace::summarizePackage(pkg, now_ - kDay).value();
    archives_[id + "@" + version] = bytes;
    return index_.packages[id][version] = rec;
  }

  // Lists a record for archive bytes the package reader may refuse (hostile zips).
  marketplace::PackageRecord& addRawArchive(const std::string& id, const std::string& version,
                                            const std::string& bytes,
                                            marketplace::PackageRecord rec) {
    rec.sha256 = marketplace::sha256Hex(bytes);
    rec.length = bytes.size();
    archives_[id + "@" + version] = bytes;
    return index_.packages[id][version] = rec;
  }

  std::string& archive(const std::string& id, const std::string& version) {
    return archives_.at(id + "@" + version);
  }

  // Writes the folder: metadata signed now (timestamp valid for a day) and every archive.
  void publish(uint64_t ts_version = 1, marketplace::UnixSeconds ts_expires = 0) {
    std::filesystem::remove_all(dir_);
    std::filesystem::create_directories(dir_);
    write("root.json", marketplace::signRoot(root_, {&root_key_}).value());
    auto index_bytes = marketplace::signIndex(index_, {&index_key_}).value();
    write("index.json", index_bytes);
    write("timestamp.json",
          marketplace::signTimestamp(index_bytes, ts_version, ts_expires ? ts_expires : now_ + kDay,
                                     {&ts_key_})
              .value());
    for (const auto& [key, bytes] : archives_) {
      auto at = key.find('@');
      write("packages/" + key.substr(0, at) + "/" + key.substr(at + 1) + ".zip", bytes);
    }
  }

  void write(const std::string& rel, const std::string& bytes) const {
    auto file = dir_ / rel;
    std::filesystem::create_directories(file.parent_path());
    std::ofstream(file, std::ios::binary | std::ios::trunc) << bytes;
  }

 private:
  std::filesystem::path dir_;
  marketplace::UnixSeconds now_;
  marketplace::PrivateKey root_key_, ts_key_, index_key_;
  std::map<std::string, marketplace::PrivateKey> publishers_;
  marketplace::Root root_;
  marketplace::Index index_;
  std::map<std::string, std::string> archives_;
};

}  // namespace trellis::test
