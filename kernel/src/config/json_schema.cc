#include "trellis/kernel/config/json_schema.h"

#include <Poco/Dynamic/Var.h>
#include <Poco/Exception.h>
#include <Poco/JSON/Array.h>
#include <Poco/JSON/Object.h>
#include <Poco/JSON/Parser.h>

#include <cmath>
#include <map>
#include <optional>
#include <regex>
#include <set>
#include <string>
#include <utility>
#include <vector>

#include "trellis/kernel/util/json.h"

namespace trellis::kernel::config {

using Poco::Dynamic::Var;
using Poco::JSON::Array;
using Poco::JSON::Object;

namespace {

// Deep enough for any real configuration, shallow enough that recursion stays cheap.
constexpr int kMaxDepth = 32;

enum class Type { kObject, kString, kInteger, kNumber, kBoolean, kArray };

std::optional<Type> parseType(const std::string& s) {
  if (s == "object") return Type::kObject;
  if (s == "string") return Type::kString;
  if (s == "integer") return Type::kInteger;
  if (s == "number") return Type::kNumber;
  if (s == "boolean") return Type::kBoolean;
  if (s == "array") return Type::kArray;
  return std::nullopt;
}

std::string typeNoun(Type t) {
  switch (t) {
    case Type::kObject: return "an object";
    case Type::kString: return "a string";
    case Type::kInteger: return "an integer";
    case Type::kNumber: return "a number";
    case Type::kBoolean: return "a boolean";
    case Type::kArray: return "an array";
  }
  return "a value";
}

bool isObject(const Var& v) {
  return v.type() == typeid(Object::Ptr);
}
bool isArray(const Var& v) {
  return v.type() == typeid(Array::Ptr);
}

std::string describe(const Var& v) {
  if (v.isEmpty()) return "null";
  if (isObject(v)) return "an object";
  if (isArray(v)) return "an array";
  if (v.isString()) return "a string";
  if (v.isBoolean()) return "a boolean";
  if (v.isInteger()) return "an integer";
  if (v.isNumeric()) return "a number";
  return "an unsupported value";
}

bool isNumber(const Var& v) {
  return !v.isString() && !v.isBoolean() && v.isNumeric();
}

// 1.0 is an integer in JSON Schema; Poco parses it as a double.
bool isIntegral(const Var& v) {
  if (v.isInteger() && !v.isBoolean()) return true;
  if (!isNumber(v)) return false;
  double d = v.convert<double>();
  return std::isfinite(d) && std::floor(d) == d;
}

// How many NFA states std::regex would build: repeat counts copy what they repeat, so
// "(a{1000}){1000}" is a million. A run of more than 9 digits overflows libstdc++'s parser.
// Returns nullopt when the pattern may be compiled, else what is wrong with it.
std::optional<std::string> patternProblem(std::string_view pattern) {
  if (pattern.size() > JsonSchema::kMaxPatternLength) {
    return "longer than " + std::to_string(JsonSchema::kMaxPatternLength) + " bytes";
  }
  struct Frame {
    double total = 0;  // states of the items closed so far
    double last = 0;   // states of the latest item, which a count multiplies
  };
  std::vector<Frame> frames(1);
  auto item = [&](double states) {
    frames.back().total += frames.back().last;
    frames.back().last = states;
  };
  for (std::size_t i = pattern.find_first_of("0123456789"); i != std::string_view::npos;) {
    std::size_t end = std::min(pattern.find_first_not_of("0123456789", i), pattern.size());
    if (end - i > 9) return std::string("has a number of more than 9 digits");
    i = pattern.find_first_of("0123456789", end);
  }
  // A repetition of a repetition ("a**", "a+{2}") backtracks exponentially in std::regex
  // (a fuzzer's pattern held a thread for minutes); a lazy marker ("*?") is no repetition.
  bool repeated = false;
  for (std::size_t i = 0; i < pattern.size(); ++i) {
    char c = pattern[i];
    const bool repeat = c == '*' || c == '+' || c == '{' || (c == '?' && !repeated);
    if (repeat && repeated) return std::string("repeats a repetition (such as \"a**\")");
    repeated = repeat;
    if (c == '\\') {
      ++i;
      item(1);
    } else if (c == '[') {
      for (++i; i < pattern.size() && pattern[i] != ']'; ++i) i += pattern[i] == '\\' ? 1 : 0;
      item(1);
    } else if (c == '(') {
      frames.emplace_back();
    } else if (c == ')' && frames.size() > 1) {
      double inner = frames.back().total + frames.back().last;
      frames.pop_back();
      item(inner);
    } else if (c == '{') {
      // {m}, {m,} and {m,n}: the largest count bounds the copies.
      std::size_t close = pattern.find('}', i);
      if (close == std::string_view::npos) continue;  // std::regex reports it
      std::string counts(pattern.substr(i + 1, close - i - 1));
      double copies = 0;
      for (std::size_t at = 0; at < counts.size();) {
        std::size_t stop = counts.find(',', at);
        std::string number = counts.substr(at, stop == std::string::npos ? stop : stop - at);
        if (number.empty()) number = "1";
        if (number.find_first_not_of("0123456789") != std::string::npos) break;
        copies = std::max(copies, std::stod(number) + (stop == counts.size() - 1 ? 1 : 0));
        at = stop == std::string::npos ? counts.size() : stop + 1;
      }
      frames.back().last *= std::max(copies, 1.0);
      i = close;
    } else if (c != '|' && c != '*' && c != '+' && c != '?' && c != '^' && c != '$') {
      item(1);
    }
    double states = 0;
    for (const Frame& f : frames) states += f.total + f.last;
    if (states > JsonSchema::kMaxPatternStates) {
      return "repeats too much (over " + std::to_string(JsonSchema::kMaxPatternStates) +
             " states once its counts are expanded)";
    }
  }
  return std::nullopt;
}

std::string formatNumber(double d) {
  if (std::floor(d) == d && std::fabs(d) < 1e15) return std::to_string(static_cast<long long>(d));
  std::string s = std::to_string(d);
  while (!s.empty() && s.back() == '0') s.pop_back();
  return s;
}

// JSON Pointer escaping (RFC 6901), so a key holding '/' cannot fake a path.
std::string pointerSegment(const std::string& key) {
  std::string out;
  for (char c : key) {
    if (c == '~') {
      out += "~0";
    } else if (c == '/') {
      out += "~1";
    } else {
      out += c;
    }
  }
  return out;
}

std::string at(const std::string& path) {
  return path.empty() ? "/" : path;
}

std::string quoted(const std::string& s) {
  std::string out;
  util::appendJsonString(out, s);
  return out;
}

}  // namespace

struct JsonSchema::Node {
  Type type = Type::kObject;
  std::map<std::string, Node> properties;
  std::vector<std::string> required;
  std::vector<Var> enumeration;  // scalars only
  std::optional<double> minimum, maximum;
  std::optional<std::size_t> min_length, max_length;
  std::optional<std::regex> pattern;
  std::string pattern_text;
  std::unique_ptr<Node> items;
};

namespace {

using Node = JsonSchema::Node;

Status fault(const std::string& path, const std::string& what) {
  return Status::invalid(at(path) + ": " + what);
}

bool scalarEquals(const Var& a, const Var& b) {
  if (a.isString() || b.isString()) {
    return a.isString() && b.isString() && a.extract<std::string>() == b.extract<std::string>();
  }
  if (a.isBoolean() || b.isBoolean()) {
    return a.isBoolean() && b.isBoolean() && a.convert<bool>() == b.convert<bool>();
  }
  return isNumber(a) && isNumber(b) && a.convert<double>() == b.convert<double>();
}

std::string scalarText(const Var& v) {
  if (v.isString()) return quoted(v.extract<std::string>());
  if (v.isBoolean()) return v.convert<bool>() ? "true" : "false";
  return formatNumber(v.convert<double>());
}

Status check(const Node& node, const Var& value, const std::string& path, int depth) {
  if (depth > kMaxDepth) return fault(path, "nested too deeply");
  bool type_ok = false;
  switch (node.type) {
    case Type::kObject: type_ok = isObject(value); break;
    case Type::kArray: type_ok = isArray(value); break;
    case Type::kString: type_ok = value.isString(); break;
    case Type::kBoolean: type_ok = value.isBoolean(); break;
    case Type::kInteger: type_ok = isIntegral(value); break;
    case Type::kNumber: type_ok = isNumber(value); break;
  }
  if (!type_ok) return fault(path, "expected " + typeNoun(node.type) + ", got " + describe(value));

  if (!node.enumeration.empty()) {
    bool found = false;
    for (const Var& e : node.enumeration) found = found || scalarEquals(e, value);
    if (!found) {
      std::string list;
      for (const Var& e : node.enumeration) list += (list.empty() ? "" : ", ") + scalarText(e);
      return fault(path, "must be one of " + list);
    }
  }
  if (node.type == Type::kInteger || node.type == Type::kNumber) {
    double d = value.convert<double>();
    if (node.minimum && d < *node.minimum) {
      return fault(path, "must be >= " + formatNumber(*node.minimum));
    }
    if (node.maximum && d > *node.maximum) {
      return fault(path, "must be <= " + formatNumber(*node.maximum));
    }
  }
  if (node.type == Type::kString) {
    const auto& s = value.extract<std::string>();
    if (node.min_length && s.size() < *node.min_length) {
      return fault(path, "must be at least " + std::to_string(*node.min_length) + " bytes long");
    }
    if (node.max_length && s.size() > *node.max_length) {
      return fault(path, "must be at most " + std::to_string(*node.max_length) + " bytes long");
    }
    if (node.pattern) {
      if (s.size() > JsonSchema::kMaxPatternInput) {
        return fault(path, "too long to match pattern (over " +
                               std::to_string(JsonSchema::kMaxPatternInput) + " bytes)");
      }
      if (!std::regex_search(s, *node.pattern)) {
        return fault(path, "must match pattern " + quoted(node.pattern_text));
      }
    }
  }
  if (node.type == Type::kArray && node.items) {
    auto arr = value.extract<Array::Ptr>();
    for (std::size_t i = 0; i < arr->size(); ++i) {
      Status s = check(*node.items, arr->get(static_cast<unsigned>(i)),
                       path + "/" + std::to_string(i), depth + 1);
      if (!s.isOk()) return s;
    }
  }
  if (node.type == Type::kObject) {
    auto obj = value.extract<Object::Ptr>();
    // Sorted, so the first fault reported does not depend on Poco's key order.
    std::set<std::string> keys;
    for (const auto& [k, v] : *obj) keys.insert(k);
    for (const auto& k : keys) {
      auto it = node.properties.find(k);
      std::string child = path + "/" + pointerSegment(k);
      if (it == node.properties.end()) return fault(child, "unknown key");
      Status s = check(it->second, obj->get(k), child, depth + 1);
      if (!s.isOk()) return s;
    }
    for (const auto& r : node.required) {
      if (!keys.contains(r)) return fault(path + "/" + pointerSegment(r), "required");
    }
  }
  return Status::ok();
}

class SchemaReader {
 public:
  Result<Node> read(const Var& v, const std::string& path, int depth) {
    if (depth > kMaxDepth) return fault(path, "schema nested too deeply");
    if (!isObject(v)) return fault(path, "expected a schema object, got " + describe(v));
    auto obj = v.extract<Object::Ptr>();
    static const std::set<std::string> kKeywords = {
        "type",      "properties", "required", "enum",    "minimum",     "maximum", "minLength",
        "maxLength", "pattern",    "items",    "default", "description", "title"};
    std::set<std::string> keys;
    for (const auto& [k, unused] : *obj) keys.insert(k);
    for (const auto& k : keys) {
      if (!kKeywords.contains(k)) {
        return fault(path + "/" + pointerSegment(k), "unsupported schema keyword");
      }
    }

    Node node;
    if (!obj->has("type")) return fault(path + "/type", "required");
    Var t = obj->get("type");
    std::optional<Type> type = t.isString() ? parseType(t.extract<std::string>()) : std::nullopt;
    if (!type) {
      return fault(path + "/type",
                   "must be one of \"object\", \"string\", \"integer\", \"number\", "
                   "\"boolean\", \"array\"");
    }
    node.type = *type;
    auto only = [&](const char* key, bool allowed, const char* for_what) -> Status {
      if (keys.contains(key) && !allowed) {
        return fault(path + "/" + key, std::string("only applies to ") + for_what);
      }
      return Status::ok();
    };
    bool numeric = node.type == Type::kInteger || node.type == Type::kNumber;
    for (Status s : {only("properties", node.type == Type::kObject, "objects"),
                     only("required", node.type == Type::kObject, "objects"),
                     only("items", node.type == Type::kArray, "arrays"),
                     only("minimum", numeric, "numbers"), only("maximum", numeric, "numbers"),
                     only("minLength", node.type == Type::kString, "strings"),
                     only("maxLength", node.type == Type::kString, "strings"),
                     only("pattern", node.type == Type::kString, "strings")}) {
      if (!s.isOk()) return s;
    }
    for (const char* text_key : {"title", "description"}) {
      if (keys.contains(text_key) && !obj->get(text_key).isString()) {
        return fault(path + "/" + text_key, "expected a string");
      }
    }

    if (keys.contains("properties")) {
      Var p = obj->get("properties");
      if (!isObject(p)) return fault(path + "/properties", "expected an object");
      for (const auto& [k, sub] : *p.extract<Object::Ptr>()) {
        auto child = read(sub, path + "/properties/" + pointerSegment(k), depth + 1);
        if (!child.isOk()) return child.status();
        node.properties.emplace(k, std::move(*child));
      }
    }
    if (keys.contains("required")) {
      Var r = obj->get("required");
      if (!isArray(r)) return fault(path + "/required", "expected an array of strings");
      auto arr = r.extract<Array::Ptr>();
      for (std::size_t i = 0; i < arr->size(); ++i) {
        Var e = arr->get(static_cast<unsigned>(i));
        std::string ep = path + "/required/" + std::to_string(i);
        if (!e.isString()) return fault(ep, "expected a string");
        const auto& name = e.extract<std::string>();
        if (!node.properties.contains(name)) return fault(ep, "names no declared property");
        node.required.push_back(name);
      }
    }
    if (keys.contains("items")) {
      auto items = read(obj->get("items"), path + "/items", depth + 1);
      if (!items.isOk()) return items.status();
      node.items = std::make_unique<Node>(std::move(*items));
    }
    for (const char* bound : {"minimum", "maximum"}) {
      if (!keys.contains(bound)) continue;
      Var b = obj->get(bound);
      if (!isNumber(b)) return fault(path + "/" + bound, "expected a number, got " + describe(b));
      (std::string(bound) == "minimum" ? node.minimum : node.maximum) = b.convert<double>();
    }
    for (const char* bound : {"minLength", "maxLength"}) {
      if (!keys.contains(bound)) continue;
      Var b = obj->get(bound);
      // Beyond 2^53 a double no longer holds every integer, and the cast below would overflow.
      constexpr double kLargestLength = 9007199254740991.0;
      if (!isIntegral(b) || b.convert<double>() < 0 || b.convert<double>() > kLargestLength) {
        return fault(path + "/" + bound, "expected a non-negative integer up to 2^53 - 1");
      }
      (std::string(bound) == "minLength" ? node.min_length : node.max_length) =
          static_cast<std::size_t>(b.convert<double>());
    }
    if (node.minimum && node.maximum && *node.minimum > *node.maximum) {
      return fault(path + "/minimum", "greater than maximum");
    }
    if (node.min_length && node.max_length && *node.min_length > *node.max_length) {
      return fault(path + "/minLength", "greater than maxLength");
    }
    if (keys.contains("pattern")) {
      Var p = obj->get("pattern");
      if (!p.isString()) return fault(path + "/pattern", "expected a string");
      node.pattern_text = p.extract<std::string>();
      if (auto problem = patternProblem(node.pattern_text))
        return fault(path + "/pattern", *problem);
      try {
        node.pattern.emplace(node.pattern_text, std::regex::ECMAScript);
      } catch (const std::regex_error& e) {
        return fault(path + "/pattern", std::string("not a valid regular expression: ") + e.what());
      }
    }
    if (keys.contains("enum")) {
      Var e = obj->get("enum");
      if (!isArray(e)) return fault(path + "/enum", "expected an array");
      auto arr = e.extract<Array::Ptr>();
      if (arr->size() == 0) return fault(path + "/enum", "must not be empty");
      for (std::size_t i = 0; i < arr->size(); ++i) {
        Var v = arr->get(static_cast<unsigned>(i));
        std::string ep = path + "/enum/" + std::to_string(i);
        if (isObject(v) || isArray(v) || v.isEmpty()) return fault(ep, "expected a scalar");
        node.enumeration.push_back(v);
      }
      // Each value must satisfy the rest of the node, or the enum promises what it refuses.
      for (std::size_t i = 0; i < node.enumeration.size(); ++i) {
        Status s = check(node, node.enumeration[i], "", 0);
        if (!s.isOk()) {
          return fault(path + "/enum/" + std::to_string(i),
                       "breaks its own schema (" + s.message() + ")");
        }
      }
    }
    if (keys.contains("default")) {
      Status s = check(node, obj->get("default"), "", 0);
      if (!s.isOk()) {
        return fault(path + "/default", "breaks its own schema (" + s.message() + ")");
      }
    }
    return node;
  }
};

Result<Var> parseJson(std::string_view text, const char* what) {
  try {
    Poco::JSON::Parser parser;
    parser.setDepth(kMaxDepth + 2);
    return parser.parse(std::string(text));
  } catch (const Poco::Exception& e) {
    return Status::invalid(std::string(what) + " is not valid JSON: " + e.message());
  } catch (const std::exception& e) {
    return Status::invalid(std::string(what) + " is not valid JSON: " + e.what());
  }
}

}  // namespace

Result<JsonSchema> JsonSchema::parse(std::string_view schema_json) {
  auto root = parseJson(schema_json, "schema");
  if (!root.isOk()) return root.status();
  auto node = SchemaReader().read(*root, "", 0);
  if (!node.isOk()) return node.status();
  return JsonSchema(std::make_shared<const Node>(std::move(*node)));
}

Status JsonSchema::validate(std::string_view document_json) const {
  auto doc = parseJson(document_json, "document");
  if (!doc.isOk()) return doc.status();
  try {
    return check(*root_, *doc, "", 0);
  } catch (const Poco::Exception& e) {
    return Status::invalid("document: " + e.displayText());
  }
}

}  // namespace trellis::kernel::config
