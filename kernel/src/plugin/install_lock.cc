#include "trellis/kernel/plugin/install_lock.h"

#include <Poco/Exception.h>
#include <Poco/JSON/Array.h>
#include <Poco/JSON/Object.h>
#include <Poco/JSON/Parser.h>

#include <fstream>
#include <iterator>

namespace trellis::kernel::plugin {
namespace fs = std::filesystem;

std::optional<std::string> InstallLock::refusal(const std::string& id,
                                                const std::string& folder) const {
  if (auto it = locked.find(id); it != locked.end()) {
    if (it->second == folder) return std::nullopt;
    return std::string(kInstallLockFile) + " installs " + id + " from " + it->second;
  }
  if (pending.count(folder)) {
    return "an unfinished install left it (" + std::string(kInstallLockFile) +
           " lists it as pending); the next trellis plugin install, upgrade or remove deletes it";
  }
  return std::nullopt;
}

Result<InstallLock> readInstallLock(const fs::path& dir) {
  const fs::path file = dir / kInstallLockFile;
  std::error_code ec;
  if (!fs::exists(file, ec)) return InstallLock{};
  std::ifstream in(file, std::ios::binary);
  std::string text((std::istreambuf_iterator<char>(in)), std::istreambuf_iterator<char>());
  if (!in.good() && !in.eof()) return Status::invalid(file.string() + ": cannot read it");
  InstallLock lock;
  try {
    auto root = Poco::JSON::Parser().parse(text).extract<Poco::JSON::Object::Ptr>();
    auto packages = root->getObject("packages");
    if (!packages) return Status::invalid(file.string() + ": \"packages\" must be an object");
    for (const auto& id : packages->getNames()) {
      auto p = packages->getObject(id);
      if (!p || !p->has("dir")) {
        return Status::invalid(file.string() + ": \"" + id + "\" names no folder");
      }
      lock.locked[id] = p->getValue<std::string>("dir");
    }
    if (auto pending = root->getArray("pending")) {
      for (size_t i = 0; i < pending->size(); ++i) {
        lock.pending.insert(pending->getElement<std::string>(static_cast<unsigned>(i)));
      }
    }
  } catch (const Poco::Exception& e) {
    return Status::invalid(file.string() + ": " + e.displayText());
  } catch (const std::exception& e) {
    return Status::invalid(file.string() + ": " + e.what());
  }
  return lock;
}

}  // namespace trellis::kernel::plugin
