#include "trellis/kernel/config/config_merge.h"

#include <Poco/Dynamic/Var.h>
#include <Poco/Exception.h>
#include <Poco/JSON/Array.h>
#include <Poco/JSON/Object.h>
#include <Poco/JSON/Parser.h>
#include <Poco/JSON/Stringifier.h>

#include <sstream>

namespace trellis::kernel::config {

using Poco::Dynamic::Var;
using Poco::JSON::Object;

namespace {

constexpr int kMaxDepth = 64;

bool isObject(const Var& v) {
  return v.type() == typeid(Object::Ptr);
}

// Parsed inside an array: Poco refuses a bare scalar at the top level, and `config: 12`
// is a valid plugin config.
Var parseAny(std::string_view json) {
  if (json.find_first_not_of(" \t\r\n") == std::string_view::npos) return Var();
  Poco::JSON::Parser parser;
  parser.setDepth(kMaxDepth);
  return parser.parse("[" + std::string(json) + "]").extract<Poco::JSON::Array::Ptr>()->get(0);
}

// Builds a new tree: the parsed base is not shared, but copying keeps the function pure.
Var merge(const Var& base, const Var& over) {
  if (!isObject(base) || !isObject(over)) return over;
  Object::Ptr out = new Object(*base.extract<Object::Ptr>());
  for (const auto& [key, value] : *over.extract<Object::Ptr>()) {
    out->set(key, out->has(key) ? merge(out->get(key), value) : value);
  }
  return out;
}

}  // namespace

Result<std::string> configValue(std::string_view json, std::string_view path) {
  Var node;
  try {
    node = parseAny(json);
  } catch (const Poco::Exception& e) {
    return Status::invalid("plugin config is not valid JSON: " + e.displayText());
  }
  std::string_view rest = path;
  while (!rest.empty()) {
    const size_t dot = rest.find('.');
    const std::string key(rest.substr(0, dot));
    rest = dot == std::string_view::npos ? std::string_view() : rest.substr(dot + 1);
    if (!isObject(node) || !node.extract<Object::Ptr>()->has(key)) {
      return Status::notFound("config has no \"" + std::string(path) + "\"");
    }
    node = node.extract<Object::Ptr>()->get(key);
  }
  if (isObject(node) || node.type() == typeid(Poco::JSON::Array::Ptr)) {
    std::ostringstream out;
    Poco::JSON::Stringifier::condense(node, out);
    return out.str();
  }
  if (node.isEmpty()) return std::string("null");
  return node.convert<std::string>();
}

Result<std::string> mergeConfig(std::string_view base_json, std::string_view override_json) {
  Var base, over;
  try {
    base = parseAny(base_json);
  } catch (const Poco::Exception& e) {
    return Status::invalid("plugin config is not valid JSON: " + e.displayText());
  }
  try {
    over = parseAny(override_json);
  } catch (const Poco::Exception& e) {
    return Status::invalid("override is not valid JSON: " + e.displayText());
  }
  if (!isObject(over)) return Status::invalid("override must be a JSON object");
  std::ostringstream out;
  Poco::JSON::Stringifier::condense(merge(base, over), out);
  return out.str();
}

}  // namespace trellis::kernel::config
