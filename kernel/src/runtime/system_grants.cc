#include "runtime/system_grants.h"

#include <Poco/JSON/Array.h>
#include <Poco/JSON/Object.h>
#include <Poco/JSON/Parser.h>
#include <spdlog/spdlog.h>

#include <sstream>

#include "trellis/kernel/plugin/manifest.h"

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

Result<SystemGrants::Ids> SystemGrants::parse(const std::optional<std::string>& text,
                                              const std::string& where) {
  Ids ids;
  if (!text) return ids;
  // {"system": ["acme/audit", …]}: anything else means the document was edited or damaged,
  // and guessing which plugins hold system powers is not an option.
  try {
    auto root = Poco::JSON::Parser().parse(*text).extract<Poco::JSON::Object::Ptr>();
    if (root->size() != 1 || !root->has("system")) {
      return Status::invalid(where + ": expected {\"system\": [plugin ids]}");
    }
    auto list = root->getArray("system");
    if (!list) return Status::invalid(where + ": \"system\" must be an array of plugin ids");
    for (size_t i = 0; i < list->size(); ++i) {
      auto v = list->get(static_cast<unsigned>(i));
      if (!v.isString() || !plugin::isValidPluginId(v.extract<std::string>())) {
        return Status::invalid(where + ": system[" + std::to_string(i) +
                               "] is not a plugin id (namespace/name)");
      }
      ids.insert(v.extract<std::string>());
    }
  } catch (const Poco::Exception& e) {
    return Status::invalid(where + ": not valid JSON: " + e.displayText());
  }
  return ids;
}

std::string SystemGrants::serialize(const Ids& ids) {
  Poco::JSON::Array::Ptr list = new Poco::JSON::Array;
  for (const auto& id : ids) list->add(id);
  Poco::JSON::Object root;
  root.set("system", list);
  std::ostringstream out;
  root.stringify(out);
  out << "\n";
  return out.str();
}

Result<std::unique_ptr<SystemGrants>> SystemGrants::open(
    std::unique_ptr<admin::SharedDocument> doc, const std::vector<config::PluginEntry>& enabled) {
  auto grants = std::make_unique<SystemGrants>(enabled);
  auto now = doc->read();
  if (!now) return now.status();
  auto ids = parse(now->text, doc->where());
  if (!ids) return ids.status();
  grants->adopt(*ids, now->version);
  grants->doc_ = std::move(doc);
  grants->doc_->watch(now->version,
                      [self = grants.get()](const admin::SharedDocument::Snapshot& s) {
                        auto ids = parse(s.text, self->doc_->where());
                        if (!ids) {  // keep the grants last read
                          spdlog::error("system grants: {}", ids.status().message());
                          return;
                        }
                        self->adopt(*ids, s.version);
                      });
  return grants;
}

void SystemGrants::adopt(const Ids& ids, int64_t version) {
  std::unique_lock lock(mu_);
  if (version <= version_) return;  // a poll that read before this host's own write
  std::erase_if(grants_, [](const auto& g) { return g.second == Source::kAdminApi; });
  for (const auto& id : ids) grants_.try_emplace(id, Source::kAdminApi);
  version_ = version;
}

Status SystemGrants::edit(const std::function<Status(Ids&)>& change) {
  if (!doc_) return Status::unavailable("system grants are not persisted on this host");
  Ids written;
  auto done = doc_->update([&](const std::optional<std::string>& text) -> Result<std::string> {
    auto ids = parse(text, doc_->where());
    if (!ids) return ids.status();
    if (Status s = change(*ids); !s) return s;
    written = *ids;
    return serialize(*ids);
  });
  if (!done) return done.status();  // not durable, so not changed
  adopt(written, done->version);
  return Status::ok();
}

Result<size_t> SystemGrants::importFile(const fs::path& legacy) {
  std::error_code ec;
  if (!fs::exists(legacy, ec)) return size_t{0};
  auto old = admin::SharedDocument::file(legacy)->read();
  if (!old) return old.status();
  auto from = parse(old->text, legacy.string());
  if (!from) return from.status();
  size_t added = 0;
  Status s = edit([&](Ids& ids) {
    added = 0;
    for (const auto& id : *from) added += ids.insert(id).second ? 1 : 0;
    return Status::ok();
  });
  if (!s) return s;
  fs::rename(legacy, fs::path(legacy) += ".imported", ec);
  if (ec) return Status::unavailable("cannot rename " + legacy.string() + ": " + ec.message());
  return added;
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

Result<bool> SystemGrants::grant(const std::string& plugin) {
  if (!plugin::isValidPluginId(plugin)) {
    return Status::invalid("\"" + plugin + "\" is not a plugin id (namespace/name)");
  }
  if (isGranted(plugin)) return false;
  bool added = false;
  Status s = edit([&](Ids& ids) {
    added = ids.insert(plugin).second;
    return Status::ok();
  });
  if (!s) return s;
  return added;
}

Result<bool> SystemGrants::revoke(const std::string& plugin) {
  {
    std::shared_lock lock(mu_);
    auto it = grants_.find(plugin);
    if (it == grants_.end()) return false;
    if (it->second == Source::kConfig) {
      return Status::conflict(plugin +
                              " is granted system scope in trellis.yaml (system: true); remove "
                              "it there and restart");
    }
  }
  bool removed = false;
  Status s = edit([&](Ids& ids) {
    removed = ids.erase(plugin) > 0;
    return Status::ok();
  });
  if (!s) return s;
  return removed;
}

}  // namespace trellis::kernel::runtime
