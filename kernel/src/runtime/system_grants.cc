#include "runtime/system_grants.h"

#include <Poco/JSON/Array.h>
#include <Poco/JSON/Object.h>
#include <Poco/JSON/Parser.h>

#include <fstream>
#include <sstream>

#include "trellis/kernel/plugin/manifest.h"
#include "trellis/kernel/util/file.h"

namespace trellis::kernel::runtime {
namespace fs = std::filesystem;

std::string_view grantSourceName(SystemGrants::Source s) {
  return s == SystemGrants::Source::kConfig ? "config" : "admin-api";
}

SystemGrants::SystemGrants(const std::vector<config::PluginEntry>& enabled) {
  for (const auto& e : enabled) {
    if (e.system) grants_[e.id] = Source::kConfig;
  }
}

Result<std::unique_ptr<SystemGrants>> SystemGrants::open(
    fs::path file, const std::vector<config::PluginEntry>& enabled) {
  auto grants = std::make_unique<SystemGrants>(enabled);
  grants->file_ = std::move(file);
  std::error_code ec;
  if (!fs::exists(grants->file_, ec)) return grants;
  std::ifstream in(grants->file_, std::ios::binary);
  std::stringstream text;
  text << in.rdbuf();
  const std::string where = grants->file_.string();
  // {"system": ["acme/audit", …]}: anything else means the file was edited or damaged, and
  // guessing which plugins hold system powers is not an option.
  try {
    Poco::JSON::Parser parser;
    auto root = parser.parse(text.str()).extract<Poco::JSON::Object::Ptr>();
    if (root->size() != 1 || !root->has("system")) {
      return Status::invalid(where + ": expected {\"system\": [plugin ids]}");
    }
    auto ids = root->getArray("system");
    if (!ids) return Status::invalid(where + ": \"system\" must be an array of plugin ids");
    for (size_t i = 0; i < ids->size(); ++i) {
      auto v = ids->get(static_cast<unsigned>(i));
      if (!v.isString() || !plugin::isValidPluginId(v.extract<std::string>())) {
        return Status::invalid(where + ": system[" + std::to_string(i) +
                               "] is not a plugin id (namespace/name)");
      }
      grants->grants_.try_emplace(v.extract<std::string>(), Source::kAdminApi);
    }
  } catch (const Poco::Exception& e) {
    return Status::invalid(where + ": not valid JSON: " + e.displayText());
  }
  return grants;
}

bool SystemGrants::isGranted(std::string_view plugin) const {
  std::shared_lock lock(mu_);
  return grants_.find(plugin) != grants_.end();
}

std::vector<SystemGrants::Grant> SystemGrants::list() const {
  std::shared_lock lock(mu_);
  std::vector<Grant> out;
  for (const auto& [id, source] : grants_) out.push_back({id, source});
  return out;
}

Status SystemGrants::persistLocked() const {
  Poco::JSON::Array::Ptr ids = new Poco::JSON::Array;
  for (const auto& [id, source] : grants_) {
    if (source == Source::kAdminApi) ids->add(id);
  }
  Poco::JSON::Object root;
  root.set("system", ids);
  std::ostringstream out;
  root.stringify(out);
  out << "\n";
  return util::writeFileAtomically(file_, out.str(), 0600);
}

Result<bool> SystemGrants::grant(const std::string& plugin) {
  if (!plugin::isValidPluginId(plugin)) {
    return Status::invalid("\"" + plugin + "\" is not a plugin id (namespace/name)");
  }
  std::unique_lock lock(mu_);
  if (grants_.count(plugin)) return false;
  if (file_.empty()) return Status::unavailable("system grants are not persisted on this host");
  grants_[plugin] = Source::kAdminApi;
  if (Status s = persistLocked(); !s) {
    grants_.erase(plugin);  // not durable, so not granted
    return s;
  }
  return true;
}

Result<bool> SystemGrants::revoke(const std::string& plugin) {
  std::unique_lock lock(mu_);
  auto it = grants_.find(plugin);
  if (it == grants_.end()) return false;
  if (it->second == Source::kConfig) {
    return Status::conflict(plugin +
                            " is granted system scope in trellis.yaml (system: true); remove it "
                            "there and restart");
  }
  grants_.erase(it);
  if (Status s = persistLocked(); !s) {
    grants_[plugin] = Source::kAdminApi;
    return s;
  }
  return true;
}

}  // namespace trellis::kernel::runtime
