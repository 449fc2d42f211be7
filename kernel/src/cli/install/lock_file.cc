#include "cli/install/lock_file.h"

#include <Poco/JSON/Array.h>
#include <Poco/JSON/Object.h>
#include <Poco/JSON/Stringifier.h>

#include <fstream>
#include <iterator>
#include <sstream>

#include "trellis/kernel/plugin/manifest.h"
#include "trellis/kernel/util/file.h"
#include "trellis/marketplace/canonical_json.h"

namespace trellis::cli::install {
namespace fs = std::filesystem;
using Poco::JSON::Object;

namespace {
constexpr uint64_t kMaxLockBytes = 4 << 20;

std::string str(const Object::Ptr& o, const std::string& key) {
  if (!o->has(key) || !o->get(key).isString()) {
    throw std::invalid_argument("\"" + key + "\" must be a string");
  }
  return o->getValue<std::string>(key);
}
}  // namespace

std::string packageDirName(const std::string& id, const std::string& version) {
  std::string dir = id;
  dir[dir.find('/')] = '.';
  return dir + "@" + version;
}

bool isPackageDirName(const std::string& dir) {
  const size_t at = dir.find('@'), dot = dir.find('.');
  if (at == std::string::npos || dot == std::string::npos || dot > at) return false;
  std::string id = dir.substr(0, at);
  id[dot] = '/';
  const std::string version = dir.substr(at + 1);
  return kernel::plugin::isValidPluginId(id) && kernel::plugin::Version::parse(version) &&
         packageDirName(id, version) == dir;
}

Result<LockFile> LockFile::load(const fs::path& file) {
  std::error_code ec;
  if (!fs::exists(file, ec)) return LockFile{};
  std::ifstream in(file, std::ios::binary);
  std::string text((std::istreambuf_iterator<char>(in)), std::istreambuf_iterator<char>());
  if (text.size() > kMaxLockBytes) return Status::invalid(file.string() + " is too large");
  auto parsed = marketplace::parseJsonStrict(text);
  if (!parsed) return Status::invalid(file.string() + ": " + parsed.status().message());
  LockFile lock;
  try {
    auto root = parsed->extract<Object::Ptr>();
    if (!root->has("schema") || root->getValue<int>("schema") != 1) {
      return Status::invalid(file.string() + ": unsupported schema (expected 1)");
    }
    auto packages = root->getObject("packages");
    if (!packages) return Status::invalid(file.string() + ": \"packages\" must be an object");
    for (const auto& id : packages->getNames()) {
      if (!kernel::plugin::isValidPluginId(id)) {
        return Status::invalid(file.string() + ": \"" + id + "\" is not a plugin id");
      }
      auto p = packages->getObject(id);
      if (!p) return Status::invalid(file.string() + ": \"" + id + "\" must be an object");
      LockedPackage lp;
      lp.version = str(p, "version");
      lp.sha256 = str(p, "sha256");
      lp.keyid = str(p, "keyid");
      lp.dir = str(p, "dir");
      if (!kernel::plugin::Version::parse(lp.version)) {
        return Status::invalid(file.string() + ": \"" + id + "\" has version \"" + lp.version +
                               "\", which is not a semantic version");
      }
      if (lp.dir != packageDirName(id, lp.version)) {
        return Status::invalid(file.string() + ": \"" + id + "\" names folder \"" + lp.dir +
                               "\", expected \"" + packageDirName(id, lp.version) + "\"");
      }
      lp.requested = p->has("requested") && p->getValue<bool>("requested");
      lp.publisher_root = p->optValue<std::string>("publisher_root", "");
      if (auto deps = p->getObject("dependencies")) {
        for (const auto& d : deps->getNames()) lp.dependencies[d] = deps->getValue<std::string>(d);
      }
      lock.packages[id] = std::move(lp);
    }
    if (auto pending = root->getArray("pending")) {
      for (size_t i = 0; i < pending->size(); ++i) {
        const std::string dir = pending->getElement<std::string>(static_cast<unsigned>(i));
        if (!isPackageDirName(dir)) {
          return Status::invalid(file.string() + ": pending \"" + dir +
                                 "\" is not a package folder name");
        }
        lock.pending.push_back(dir);
      }
    }
  } catch (const std::exception& e) {
    return Status::invalid(file.string() + ": " + e.what());
  }
  return lock;
}

Status LockFile::save(const fs::path& file) const {
  Object::Ptr packages = new Object;
  for (const auto& [id, p] : this->packages) {
    Object::Ptr o = new Object;
    o->set("version", p.version);
    o->set("sha256", p.sha256);
    o->set("keyid", p.keyid);
    if (!p.publisher_root.empty()) o->set("publisher_root", p.publisher_root);
    o->set("dir", p.dir);
    o->set("requested", p.requested);
    Object::Ptr deps = new Object;
    for (const auto& [d, range] : p.dependencies) deps->set(d, range);
    o->set("dependencies", deps);
    packages->set(id, o);
  }
  Object root;
  root.set("schema", 1);
  root.set("packages", packages);
  if (!pending.empty()) {
    Poco::JSON::Array::Ptr list = new Poco::JSON::Array;
    for (const auto& dir : pending) list->add(dir);
    root.set("pending", list);
  }
  std::ostringstream out;
  root.stringify(out, 2);
  out << "\n";
  return kernel::util::writeFileAtomically(file, out.str(), 0644);
}

std::string publisherRoot(const marketplace::Index& index, const std::string& id) {
  auto ns = index.namespaces.find(id.substr(0, id.find('/')));
  return ns == index.namespaces.end() || ns->second.empty() ? "" : ns->second.front().keyid;
}

Status checkPublisherRoots(const marketplace::Index& index, const LockFile& lock) {
  for (const auto& [id, p] : lock.packages) {
    if (p.publisher_root.empty()) continue;
    const std::string now = publisherRoot(index, id);
    if (now != p.publisher_root) {
      return Status::permissionDenied(
          "namespace " + id.substr(0, id.find('/')) + " of the installed " + id +
          " had first publisher key " + p.publisher_root + " but the index now starts its chain " +
          (now.empty() ? "nowhere" : "with " + now) +
          ": the namespace was handed to another key; refusing (if this is intended, remove " + id +
          " and install it again)");
    }
  }
  return Status::ok();
}

std::vector<std::string> LockFile::dependentsOf(const std::string& id) const {
  std::vector<std::string> out;
  for (const auto& [other, p] : packages) {
    if (p.dependencies.count(id)) out.push_back(other);
  }
  return out;
}

}  // namespace trellis::cli::install
