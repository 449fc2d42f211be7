#include "runtime/plugin_instance.h"

#include <Poco/JSON/Array.h>
#include <Poco/JSON/Object.h>
#include <Poco/JSON/Parser.h>
#include <Poco/JSON/Stringifier.h>

#include <sstream>

#include "runtime/system_grants.h"

namespace trellis::kernel::runtime {

bool PluginInstance::isSystemPlugin() const {
  return manifest_.scope == plugin::PluginScope::System && services_.system_grants &&
         services_.system_grants->isGranted(manifest_.id);
}

Result<std::string_view> PluginInstance::config(std::string_view path) {
  std::lock_guard lock(config_mu_);
  if (auto it = config_cache_.find(path); it != config_cache_.end()) {
    return std::string_view(it->second);
  }

  std::string answer;
  try {
    // Parsed inside an array: Poco's parser refuses a bare scalar at the top level, and
    // `config: 12` or `config: "text"` in trellis.yaml is a valid plugin config.
    Poco::Dynamic::Var node = Poco::JSON::Parser()
                                  .parse("[" + config_json_ + "]")
                                  .extract<Poco::JSON::Array::Ptr>()
                                  ->get(0);
    std::string_view rest = path;
    while (!rest.empty()) {
      size_t dot = rest.find('.');
      std::string key(rest.substr(0, dot));
      rest = dot == std::string_view::npos ? std::string_view() : rest.substr(dot + 1);
      if (node.type() != typeid(Poco::JSON::Object::Ptr)) {
        return Status::notFound("config has no \"" + std::string(path) + "\"");
      }
      auto obj = node.extract<Poco::JSON::Object::Ptr>();
      if (!obj->has(key)) return Status::notFound("config has no \"" + std::string(path) + "\"");
      node = obj->get(key);
    }
    if (node.type() == typeid(Poco::JSON::Object::Ptr) ||
        node.type() == typeid(Poco::JSON::Array::Ptr)) {
      std::ostringstream out;
      Poco::JSON::Stringifier::condense(node, out);
      answer = out.str();
    } else if (node.isEmpty()) {
      answer = "null";
    } else {
      answer = node.convert<std::string>();
    }
  } catch (const Poco::Exception& e) {
    return Status::internal("plugin config is not valid JSON: " + e.displayText());
  }
  return std::string_view(
      config_cache_.emplace(std::string(path), std::move(answer)).first->second);
}

}  // namespace trellis::kernel::runtime
