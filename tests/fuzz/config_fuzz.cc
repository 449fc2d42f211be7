// trellis.yaml (kernel/src/config/config.cc): operator-written, but a typo must still get a
// message, never a crash or an exception of another type. Properties of a configuration the
// loader accepts: every plugin's `config:` became one JSON value that the kernel's config
// reader parses (plugins read it through host->config_get), tenants enable only enabled plugins,
// and paths are absolute. The same bytes as a state file (`trellis config apply`): each
// tenant's overrides are one JSON object, for plugins it enables.
#include <Poco/JSON/Array.h>
#include <Poco/JSON/Parser.h>

#include <cstddef>
#include <cstdint>
#include <exception>
#include <set>
#include <string>

#include "fuzz_check.h"
#include "trellis/kernel/config/config.h"

using trellis::kernel::config::Config;
using trellis::kernel::config::ConfigError;
using trellis::kernel::config::StateFile;

namespace {

// One JSON value, read as PluginInstance::config (kernel/src/runtime/plugin_instance.cc)
// reads it: inside an array, so a scalar config parses too.
bool isOneJsonValue(const std::string& text) {
  try {
    auto list = Poco::JSON::Parser().parse("[" + text + "]").extract<Poco::JSON::Array::Ptr>();
    return list->size() == 1;
  } catch (const std::exception&) {
    return false;
  } catch (const Poco::Exception&) {
    return false;
  }
}

void checkConfig(const Config& cfg) {
  std::set<std::string> enabled;
  for (const auto& p : cfg.plugins) {
    FUZZ_CHECK(isOneJsonValue(p.config_json),
               "plugin " + p.id + " config is not JSON: " + p.config_json);
    enabled.insert(p.id);
  }
  for (const auto& t : cfg.tenants) {
    for (const auto& p : t.plugins) {
      FUZZ_CHECK(enabled.count(p), "tenant " + t.id + " enables " + p + ", not in plugins");
    }
  }
  FUZZ_CHECK(cfg.data_dir.is_absolute(), "relative data_dir " + cfg.data_dir.string());
  for (const auto& dir : cfg.plugin_dirs) {
    FUZZ_CHECK(dir.is_absolute(), "relative plugin dir " + dir.string());
  }
}

void checkState(const StateFile& state) {
  for (const auto& t : state.tenants) {
    for (const auto& [plugin, json] : t.plugin_config) {
      FUZZ_CHECK(t.plugins.count(plugin), "tenant " + t.id + " configures " + plugin);
      FUZZ_CHECK(isOneJsonValue(json) && json.front() == '{',
                 "overrides of " + plugin + " are not a JSON object: " + json);
    }
  }
}

}  // namespace

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  std::string yaml(reinterpret_cast<const char*>(data), size);
  try {
    checkConfig(Config::parse(yaml, "/etc/trellis"));
  } catch (const ConfigError& e) {
    FUZZ_CHECK(*e.what() != '\0', "a ConfigError without a message");
  }
  try {
    checkState(StateFile::parse(yaml));
  } catch (const ConfigError& e) {
    FUZZ_CHECK(*e.what() != '\0', "a ConfigError without a message");
  }
  // Any other exception escapes: libFuzzer reports it as a crash, as trellisd would die.
  return 0;
}
