#include "cli/output.h"

#include <Poco/JSON/Array.h>
#include <Poco/JSON/Parser.h>
#include <Poco/JSON/Stringifier.h>
#include <yaml-cpp/yaml.h>

#include <cstdio>
#include <ctime>
#include <iostream>
#include <sstream>

#include "cli/admin_client.h"

namespace trellis::cli {
namespace {

Output& current() {
  static Output out;
  return out;
}

void emit(YAML::Emitter& y, const Poco::Dynamic::Var& v) {
  if (v.isEmpty()) {
    y << YAML::Null;
  } else if (v.type() == typeid(Poco::JSON::Object::Ptr)) {
    auto o = v.extract<Poco::JSON::Object::Ptr>();
    y << YAML::BeginMap;
    for (const auto& name : o->getNames()) {
      y << YAML::Key << name << YAML::Value;
      emit(y, o->get(name));
    }
    y << YAML::EndMap;
  } else if (v.type() == typeid(Poco::JSON::Array::Ptr)) {
    auto a = v.extract<Poco::JSON::Array::Ptr>();
    y << YAML::BeginSeq;
    for (size_t i = 0; i < a->size(); ++i) emit(y, a->get(static_cast<unsigned>(i)));
    y << YAML::EndSeq;
  } else if (v.isBoolean()) {
    y << v.convert<bool>();
  } else if (v.isString()) {
    // Quoted, so "true", "1.0" or "null" stay strings when read back.
    y << YAML::DoubleQuoted << v.convert<std::string>();
  } else {
    y << v.toString();
  }
}

}  // namespace

OutputFormat Output::kind() const {
  if (json_flag || format == "json") return OutputFormat::kJson;
  if (format == "yaml") return OutputFormat::kYaml;
  return OutputFormat::kTable;
}

std::string utcTime(int64_t unix_ms) {
  time_t t = static_cast<time_t>(unix_ms / 1000);
  struct tm tm {};
  gmtime_r(&t, &tm);
  char text[32];
  std::strftime(text, sizeof text, "%Y-%m-%dT%H:%M:%SZ", &tm);
  return text;
}

std::string jsonToYaml(const std::string& json_body) {
  Poco::Dynamic::Var parsed = Poco::JSON::Parser().parse(json_body);
  YAML::Emitter y;
  emit(y, parsed);
  return std::string(y.c_str()) + "\n";
}

void Output::print(const std::string& json_body, void (*human)(const std::string&)) const {
  switch (kind()) {
    case OutputFormat::kJson:
      std::cout << json_body;
      if (json_body.empty() || json_body.back() != '\n') std::cout << "\n";
      return;
    case OutputFormat::kYaml: try { std::cout << jsonToYaml(json_body);
      } catch (const Poco::Exception& e) {
        AdminClient::die("the answer is not JSON, so it cannot be shown as YAML: " +
                         e.displayText());
      }
      return;
    case OutputFormat::kTable: human(json_body); return;
  }
}

void Output::print(const Poco::JSON::Object::Ptr& o, void (*human)(const std::string&)) const {
  std::ostringstream text;
  Poco::JSON::Stringifier::condense(o, text);
  print(text.str(), human);
}

const Output& currentOutput() {
  return current();
}

void setCurrentOutput(const Output& out) {
  current() = out;
}

void printStructured(const std::string& json_body) {
  Output out = current();
  if (!out.structured()) out.format = "json";
  out.print(json_body, nullptr);
}

}  // namespace trellis::cli
