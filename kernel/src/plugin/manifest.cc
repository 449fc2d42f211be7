#include "trellis/kernel/plugin/manifest.h"

#include <Poco/Dynamic/Var.h>
#include <Poco/Exception.h>
#include <Poco/JSON/Array.h>
#include <Poco/JSON/Object.h>
#include <Poco/JSON/ParseHandler.h>
#include <Poco/JSON/Parser.h>

#include <algorithm>
#include <cctype>
#include <fstream>
#include <optional>
#include <set>
#include <sstream>
#include <system_error>
#include <utility>

#include "plugin/internal/quote.h"
#include "trellis/kernel/config/json_schema.h"
#include "trellis/kernel/services/egress_policy.h"

namespace trellis::kernel::plugin {
namespace {

using internal::quoteText;
using Poco::Dynamic::Var;
using Poco::JSON::Array;
using Poco::JSON::Object;

constexpr size_t kMaxManifestBytes = 1024 * 1024;
// Manifests nest two levels deep; the limit only guards the parser's stack.
constexpr size_t kMaxJsonDepth = 32;
constexpr int kSchema = 1;

constexpr std::string_view kKnownFields[] = {
    "schema", "id",       "version",  "description",  "license",      "runtime",
    "abi",    "host",     "entry",    "dependencies", "capabilities", "blocking_routes",
    "files",  "provides", "requires", "egress",       "scope",        "tenant_config"};

template <typename Range>
std::string joined(const Range& items) {
  std::string s;
  for (const auto& item : items) {
    if (!s.empty()) s += ", ";
    s += item;
  }
  return s;
}

// Poco keeps the last of duplicate keys silently; a manifest where "files" or "entry"
// appears twice is ambiguous, so the first duplicate is remembered and refused.
class StrictParseHandler : public Poco::JSON::ParseHandler {
 public:
  void reset() override {
    ParseHandler::reset();
    frames_.clear();
    duplicate_.reset();
  }
  void startObject() override {
    ParseHandler::startObject();
    frames_.push_back({true, childPath(), {}, {}});
  }
  void endObject() override {
    ParseHandler::endObject();
    frames_.pop_back();
  }
  void startArray() override {
    ParseHandler::startArray();
    frames_.push_back({false, childPath(), {}, {}});
  }
  void endArray() override {
    ParseHandler::endArray();
    frames_.pop_back();
  }
  void key(const std::string& k) override {
    ParseHandler::key(k);
    Frame& top = frames_.back();
    if (!top.keys.insert(k).second && !duplicate_) {
      duplicate_ = (top.path.empty() ? "" : top.path + ": ") + "duplicate key " + quoteText(k);
    }
    top.last_key = k;
  }
  const std::optional<std::string>& duplicate() const { return duplicate_; }

 private:
  struct Frame {
    bool object;
    std::string path;
    std::set<std::string> keys;
    std::string last_key;
  };
  std::string childPath() const {
    if (frames_.empty()) return "";
    const Frame& top = frames_.back();
    if (!top.object) return top.path + "[]";
    return top.path.empty() ? top.last_key : top.path + "." + quoteText(top.last_key);
  }
  std::vector<Frame> frames_;
  std::optional<std::string> duplicate_;
};

std::string typeName(const Var& v) {
  if (v.isEmpty()) return "null";
  if (v.type() == typeid(Object::Ptr)) return "an object";
  if (v.type() == typeid(Array::Ptr)) return "an array";
  if (v.isString()) return "a string";
  if (v.isBoolean()) return "a boolean";
  if (v.isInteger()) return "an integer";
  if (v.isNumeric()) return "a number";
  return "an unsupported value";
}

Status fieldError(const std::string& path, const std::string& what) {
  return Status::invalid(path + ": " + what);
}

Status typeError(const std::string& path, std::string_view expected, const Var& got) {
  return fieldError(path, "expected " + std::string(expected) + ", got " + typeName(got));
}

Result<std::string> asString(const Var& v, const std::string& path) {
  if (!v.isString()) return typeError(path, "a string", v);
  return v.extract<std::string>();
}

Result<Object::Ptr> asObject(const Var& v, const std::string& path) {
  if (v.type() != typeid(Object::Ptr)) return typeError(path, "an object", v);
  return v.extract<Object::Ptr>();
}

Result<Array::Ptr> asArray(const Var& v, const std::string& path) {
  if (v.type() != typeid(Array::Ptr)) return typeError(path, "an array", v);
  return v.extract<Array::Ptr>();
}

Result<uint64_t> asUnsigned(const Var& v, const std::string& path) {
  if (!v.isInteger()) return typeError(path, "a non-negative integer", v);
  if (v.isSigned()) {
    auto n = v.convert<Poco::Int64>();
    if (n < 0) return fieldError(path, "expected a non-negative integer, got " + v.toString());
    return static_cast<uint64_t>(n);
  }
  return v.convert<Poco::UInt64>();
}

// Paths inside the package: relative, normalized, never leaving the package folder, and
// spelled one way only (so a files hash cannot cover "./lib.so" while "lib.so" loads).
std::optional<std::string> unsafePathReason(std::string_view p) {
  if (p.empty()) return "it is empty";
  if (p.find('\\') != std::string_view::npos) return "it contains a backslash";
  if (p.front() == '/') return "it is absolute";
  if (p.size() >= 2 && p[1] == ':' && std::isalpha(static_cast<unsigned char>(p[0]))) {
    return "it is absolute";
  }
  for (char c : p) {
    if (static_cast<unsigned char>(c) < 0x20 || c == 0x7f) return "it contains a control character";
  }
  size_t start = 0;
  while (start <= p.size()) {
    size_t slash = p.find('/', start);
    std::string_view part =
        p.substr(start, slash == std::string_view::npos ? std::string_view::npos : slash - start);
    if (part == "..") return "it contains \"..\"";
    if (part.empty() || part == ".") return "it is not normalized (empty or \".\" segment)";
    if (slash == std::string_view::npos) break;
    start = slash + 1;
  }
  return std::nullopt;
}

Status checkSafePath(const std::string& path, const std::string& value) {
  if (auto why = unsafePathReason(value)) {
    return fieldError(path, quoteText(value) + " is not a safe relative path: " + *why);
  }
  return Status::ok();
}

bool isPlatformName(std::string_view s) {
  size_t dash = s.find('-');
  if (dash == 0 || dash == std::string_view::npos || dash + 1 == s.size()) return false;
  auto lower_alnum = [](char c) { return (c >= 'a' && c <= 'z') || (c >= '0' && c <= '9'); };
  for (size_t i = 0; i < s.size(); ++i) {
    if (i == dash) continue;
    if (!lower_alnum(s[i]) && !(i > dash && s[i] == '_')) return false;
  }
  return true;
}

bool isSha256Hex(std::string_view s) {
  return s.size() == 64 && std::all_of(s.begin(), s.end(), [](char c) {
           return (c >= '0' && c <= '9') || (c >= 'a' && c <= 'f');
         });
}

// "METHOD /pattern": an upper-case method token or "*", one space, a path pattern.
std::optional<BlockingRoute> parseBlockingRoute(std::string_view s) {
  size_t space = s.find(' ');
  if (space == std::string_view::npos || space == 0) return std::nullopt;
  std::string_view method = s.substr(0, space), pattern = s.substr(space + 1);
  bool method_ok = method == "*" || std::all_of(method.begin(), method.end(),
                                                [](char c) { return c >= 'A' && c <= 'Z'; });
  if (!method_ok || pattern.empty() || pattern.front() != '/') return std::nullopt;
  for (char c : pattern) {
    if (static_cast<unsigned char>(c) <= 0x20 || c == 0x7f) return std::nullopt;
  }
  return BlockingRoute{std::string(method), std::string(pattern)};
}

bool isIdPart(std::string_view s) {
  if (s.empty() || s.size() > 63) return false;
  auto ok = [](char c, bool first) {
    return (c >= 'a' && c <= 'z') || (c >= '0' && c <= '9') || (!first && c == '-');
  };
  if (!ok(s[0], true)) return false;
  return std::all_of(s.begin() + 1, s.end(), [&](char c) { return ok(c, false); });
}

class ManifestReader {
 public:
  explicit ManifestReader(Object::Ptr root) : root_(std::move(root)) {}

  Result<Manifest> read() {
    for (const auto& [name, value] : *root_) {
      if (std::find(std::begin(kKnownFields), std::end(kKnownFields), name) ==
          std::end(kKnownFields)) {
        return Status::invalid("unknown field " + quoteText(name) +
                               " (known: " + joined(kKnownFields) + ")");
      }
    }
    Manifest m;
    // Order matters: later steps read the runtime and the id.
    using Step = Status (ManifestReader::*)(Manifest&);
    for (Step step :
         {&ManifestReader::readSchema, &ManifestReader::readIdentity, &ManifestReader::readRuntime,
          &ManifestReader::readAbi, &ManifestReader::readHost, &ManifestReader::readEntry,
          &ManifestReader::readDependencies, &ManifestReader::readCapabilities,
          &ManifestReader::readBlockingRoutes, &ManifestReader::readFiles,
          &ManifestReader::readProvides, &ManifestReader::readRequires, &ManifestReader::readEgress,
          &ManifestReader::readScope, &ManifestReader::readTenantConfig}) {
      if (Status s = (this->*step)(m); !s) return s;
    }
    return m;
  }

 private:
  std::optional<Var> field(const std::string& name) const {
    if (!root_->has(name)) return std::nullopt;
    return root_->get(name);
  }

  Status readSchema(Manifest&) {
    std::optional<Var> v = field("schema");
    if (!v) return fieldError("schema", "required but missing (this host reads schema 1)");
    auto n = asUnsigned(*v, "schema");
    if (!n) return n.status();
    if (*n != kSchema) {
      return fieldError("schema",
                        "unsupported schema " + std::to_string(*n) + " (this host reads schema 1)");
    }
    return Status::ok();
  }

  Status readIdentity(Manifest& m) {
    std::optional<Var> id = field("id");
    if (!id) return fieldError("id", "required but missing");
    auto id_text = asString(*id, "id");
    if (!id_text) return id_text.status();
    if (!isValidPluginId(*id_text)) {
      return fieldError("id", quoteText(*id_text) +
                                  " is not a valid plugin id (expected namespace/name, each "
                                  "part [a-z0-9][a-z0-9-]{0,62})");
    }
    m.id = *id_text;

    std::optional<Var> version = field("version");
    if (!version) return fieldError("version", "required but missing");
    auto version_text = asString(*version, "version");
    if (!version_text) return version_text.status();
    auto parsed = Version::parse(*version_text);
    if (!parsed) return fieldError("version", parsed.status().message());
    m.version = *parsed;

    for (auto [name, out] :
         {std::pair{"description", &m.description}, std::pair{"license", &m.license}}) {
      if (std::optional<Var> v = field(name)) {
        auto text = asString(*v, name);
        if (!text) return text.status();
        *out = *text;
      }
    }
    return Status::ok();
  }

  Status readRuntime(Manifest& m) {
    std::optional<Var> v = field("runtime");
    if (!v) return Status::ok();
    auto text = asString(*v, "runtime");
    if (!text) return text.status();
    if (*text != "native" && *text != "lua") {
      return fieldError("runtime", "unknown runtime " + quoteText(*text) + " (known: native, lua)");
    }
    m.runtime = *text;
    return Status::ok();
  }

  Status readAbi(Manifest& m) {
    std::optional<Var> v = field("abi");
    if (m.runtime != "native") {
      if (v) return fieldError("abi", "only native plugins have an ABI (runtime is \"lua\")");
      return Status::ok();
    }
    if (!v)
      return fieldError("abi", "required for native plugins, e.g. {\"major\": 1, \"minor\": 0}");
    auto abi = asObject(*v, "abi");
    if (!abi) return abi.status();
    for (const auto& [name, value] : **abi) {
      if (name != "major" && name != "minor") {
        return fieldError("abi", "unknown field " + quoteText(name) + " (known: major, minor)");
      }
    }
    for (auto [name, out] : {std::pair{"major", &m.abi_major}, std::pair{"minor", &m.abi_minor}}) {
      std::string path = std::string("abi.") + name;
      if (!(*abi)->has(name)) return fieldError(path, "required but missing");
      auto n = asUnsigned((*abi)->get(name), path);
      if (!n) return n.status();
      if (*n > UINT16_MAX) {
        return fieldError(path, std::to_string(*n) + " is out of range (0..65535)");
      }
      *out = static_cast<uint16_t>(*n);
    }
    return Status::ok();
  }

  Status readHost(Manifest& m) {
    std::optional<Var> v = field("host");
    if (!v) return Status::ok();
    auto text = asString(*v, "host");
    if (!text) return text.status();
    auto range = VersionRange::parse(*text);
    if (!range) return fieldError("host", range.status().message());
    m.host = *range;
    return Status::ok();
  }

  Status readEntry(Manifest& m) {
    std::optional<Var> v = field("entry");
    if (!v) {
      return fieldError("entry",
                        m.runtime == "lua"
                            ? "required but missing, e.g. {\"lua\": \"main.lua\"}"
                            : "required but missing, e.g. {\"linux-x86_64\": \"libx.so\"}");
    }
    auto entry = asObject(*v, "entry");
    if (!entry) return entry.status();
    if ((*entry)->size() == 0) return fieldError("entry", "names no file");
    for (const auto& [key, value] : **entry) {
      std::string path = "entry." + quoteText(key);
      if (m.runtime == "lua") {
        if (key != "lua") {
          return fieldError(path, "a lua plugin's entry has the single key \"lua\"");
        }
      } else if (!isPlatformName(key)) {
        return fieldError(path, "not a platform name like \"linux-x86_64\"");
      }
      auto file = asString(value, path);
      if (!file) return file.status();
      if (Status s = checkSafePath(path, *file); !s) return s;
      m.entry[key] = *file;
    }
    return Status::ok();
  }

  Status readDependencies(Manifest& m) {
    std::optional<Var> v = field("dependencies");
    if (!v) return Status::ok();
    auto deps = asObject(*v, "dependencies");
    if (!deps) return deps.status();
    for (const auto& [key, value] : **deps) {
      std::string path = "dependencies." + quoteText(key);
      if (!isValidPluginId(key)) {
        return fieldError(path, "not a valid plugin id (expected namespace/name)");
      }
      if (key == m.id) return fieldError(path, "a plugin cannot depend on itself");
      auto text = asString(value, path);
      if (!text) return text.status();
      auto range = VersionRange::parse(*text);
      if (!range) return fieldError(path, range.status().message());
      m.dependencies.push_back({key, *range});
    }
    return Status::ok();
  }

  Status readCapabilities(Manifest& m) {
    std::optional<Var> v = field("capabilities");
    if (!v) return Status::ok();
    auto caps = asArray(*v, "capabilities");
    if (!caps) return caps.status();
    for (size_t i = 0; i < (*caps)->size(); ++i) {
      std::string path = "capabilities[" + std::to_string(i) + "]";
      auto cap = asString((*caps)->get(static_cast<unsigned>(i)), path);
      if (!cap) return cap.status();
      if (!isKnownCapability(*cap)) {
        return fieldError(path, "unknown capability " + quoteText(*cap) +
                                    " (known: " + joined(kKnownCapabilities) + ", service:<name>)");
      }
      if (m.hasCapability(*cap)) return fieldError(path, "duplicate capability " + quoteText(*cap));
      m.capabilities.push_back(*cap);
    }
    return Status::ok();
  }

  // "provides": [{"name": "secrets", "version": "1.2.0"}]
  Status readProvides(Manifest& m) {
    std::optional<Var> v = field("provides");
    if (!v) return Status::ok();
    auto items = asArray(*v, "provides");
    if (!items) return items.status();
    for (size_t i = 0; i < (*items)->size(); ++i) {
      std::string path = "provides[" + std::to_string(i) + "]";
      auto item = asObject((*items)->get(static_cast<unsigned>(i)), path);
      if (!item) return item.status();
      if (Status s = onlyFields(**item, path, {"name", "version"}); !s) return s;
      auto name = serviceName(**item, path);
      if (!name) return name.status();
      auto text = requiredString(**item, path, "version");
      if (!text) return text.status();
      auto version = Version::parse(*text);
      if (!version) return fieldError(path + ".version", version.status().message());
      for (const auto& seen : m.provides) {
        if (seen.name == *name) return fieldError(path, "service " + quoteText(*name) + " twice");
      }
      m.provides.push_back({*name, *version});
    }
    return Status::ok();
  }

  // "requires": [{"name": "secrets", "range": "^1", "optional": false}]
  Status readRequires(Manifest& m) {
    std::optional<Var> v = field("requires");
    if (!v) return Status::ok();
    auto items = asArray(*v, "requires");
    if (!items) return items.status();
    for (size_t i = 0; i < (*items)->size(); ++i) {
      std::string path = "requires[" + std::to_string(i) + "]";
      auto item = asObject((*items)->get(static_cast<unsigned>(i)), path);
      if (!item) return item.status();
      if (Status s = onlyFields(**item, path, {"name", "range", "optional"}); !s) return s;
      auto name = serviceName(**item, path);
      if (!name) return name.status();
      auto text = requiredString(**item, path, "range");
      if (!text) return text.status();
      auto range = VersionRange::parse(*text);
      if (!range) return fieldError(path + ".range", range.status().message());
      bool optional = false;
      if ((*item)->has("optional")) {
        Var flag = (*item)->get("optional");
        if (!flag.isBoolean()) return fieldError(path + ".optional", "expected true or false");
        optional = flag.extract<bool>();
      }
      for (const auto& seen : m.required_services) {
        if (seen.name == *name) return fieldError(path, "service " + quoteText(*name) + " twice");
      }
      for (const auto& own : m.provides) {
        if (own.name == *name) {
          return fieldError(path, "a plugin cannot require the service it provides");
        }
      }
      m.required_services.push_back({*name, *range, optional});
    }
    return Status::ok();
  }

  static Status onlyFields(const Object& item, const std::string& path,
                           std::initializer_list<std::string_view> known) {
    for (const auto& [name, value] : item) {
      if (std::find(known.begin(), known.end(), name) == known.end()) {
        return fieldError(path,
                          "unknown field " + quoteText(name) + " (known: " + joined(known) + ")");
      }
    }
    return Status::ok();
  }

  static Result<std::string> requiredString(const Object& item, const std::string& path,
                                            const std::string& name) {
    if (!item.has(name)) return fieldError(path, "missing " + quoteText(name));
    return asString(item.get(name), path + "." + name);
  }

  static Result<std::string> serviceName(const Object& item, const std::string& path) {
    auto name = requiredString(item, path, "name");
    if (!name) return name.status();
    if (!isValidServiceName(*name)) {
      return fieldError(path + ".name", quoteText(*name) +
                                            " is not a valid service name (1-64 of a-z 0-9 . -, "
                                            "starting with a letter)");
    }
    return name;
  }

  // "egress": ["https://*.example.com:443", ...]: destinations (egress_policy.h); needs the
  // "egress" capability.
  Status readEgress(Manifest& m) {
    std::optional<Var> v = field("egress");
    if (!v) return Status::ok();
    auto rules = asArray(*v, "egress");
    if (!rules) return rules.status();
    if (!m.hasCapability("egress")) {
      return fieldError("egress", "destinations need the capability \"egress\"");
    }
    for (size_t i = 0; i < (*rules)->size(); ++i) {
      std::string path = "egress[" + std::to_string(i) + "]";
      auto text = asString((*rules)->get(static_cast<unsigned>(i)), path);
      if (!text) return text.status();
      if (auto rule = services::egress::parseRule(*text); !rule) {
        return fieldError(path, rule.status().message());
      }
      m.egress.push_back(*text);
    }
    return Status::ok();
  }

  // The keys a tenant may override, as a schema the kernel checks overrides against. A bad
  // schema refuses the plugin here, so an override is never judged by a broken one.
  Status readTenantConfig(Manifest& m) {
    std::optional<Var> v = field("tenant_config");
    if (!v) return Status::ok();
    auto obj = asObject(*v, "tenant_config");
    if (!obj) return obj.status();
    std::ostringstream text;
    (*obj)->stringify(text);
    auto schema = config::JsonSchema::parse(text.str());
    if (!schema) return fieldError("tenant_config", schema.status().message());
    Var type = (*obj)->get("type");
    if (!type.isString() || type.extract<std::string>() != "object") {
      return fieldError("tenant_config", "/type: must be \"object\" (overrides are objects)");
    }
    m.tenant_config = *schema;
    m.tenant_config_json = text.str();
    return Status::ok();
  }

  // "scope": "tenant" (default) or "system". Asking is not having: a system plugin runs
  // with system powers only once the operator grants it (config or admin API).
  Status readScope(Manifest& m) {
    std::optional<Var> v = field("scope");
    if (!v) return Status::ok();
    auto text = asString(*v, "scope");
    if (!text) return text.status();
    auto scope = parsePluginScope(*text);
    if (!scope) {
      return fieldError("scope", "unknown scope " + quoteText(*text) + " (known: tenant, system)");
    }
    m.scope = *scope;
    return Status::ok();
  }

  Status readBlockingRoutes(Manifest& m) {
    std::optional<Var> v = field("blocking_routes");
    if (!v) return Status::ok();
    auto routes = asArray(*v, "blocking_routes");
    if (!routes) return routes.status();
    for (size_t i = 0; i < (*routes)->size(); ++i) {
      std::string path = "blocking_routes[" + std::to_string(i) + "]";
      auto text = asString((*routes)->get(static_cast<unsigned>(i)), path);
      if (!text) return text.status();
      auto route = parseBlockingRoute(*text);
      if (!route) {
        return fieldError(
            path, quoteText(*text) + " must be \"METHOD /pattern\", e.g. \"GET /hello/{name}\"");
      }
      for (const auto& seen : m.blocking_routes) {
        if (seen.method == route->method && seen.pattern == route->pattern) {
          return fieldError(path, "duplicate route " + quoteText(*text));
        }
      }
      m.blocking_routes.push_back(*route);
    }
    return Status::ok();
  }

  Status readFiles(Manifest& m) {
    std::optional<Var> v = field("files");
    if (!v) return Status::ok();
    auto files = asObject(*v, "files");
    if (!files) return files.status();
    for (const auto& [key, value] : **files) {
      std::string path = "files." + quoteText(key);
      if (auto why = unsafePathReason(key)) {
        return fieldError(path, "not a safe relative path: " + *why);
      }
      auto hash = asString(value, path);
      if (!hash) return hash.status();
      if (!isSha256Hex(*hash)) {
        return fieldError(
            path, "expected 64 lowercase hex characters (SHA-256), got " + quoteText(*hash));
      }
      m.files[key] = *hash;
    }
    return Status::ok();
  }

  Object::Ptr root_;
};

}  // namespace

Result<Manifest> Manifest::parse(std::string_view json) {
  if (json.size() > kMaxManifestBytes) {
    return Status::invalid("manifest is " + std::to_string(json.size()) +
                           " bytes; the limit is 1048576 (1 MiB)");
  }
  // Editors on some systems prepend a UTF-8 byte order mark; JSON parsers may skip it.
  if (json.substr(0, 3) == "\xEF\xBB\xBF") json.remove_prefix(3);
  size_t first = json.find_first_not_of(" \t\r\n");
  if (first == std::string_view::npos) return Status::invalid("manifest is empty");
  if (json[first] != '{') {
    return Status::invalid("manifest must be a JSON object ({...})" +
                           std::string(json[first] == '[' ? ", not an array" : ""));
  }

  Poco::SharedPtr<StrictParseHandler> handler = new StrictParseHandler;
  Var root;
  try {
    Poco::JSON::Parser parser(handler);
    parser.setDepth(kMaxJsonDepth);
    root = parser.parse(std::string(json));
  } catch (const Poco::Exception& e) {
    return Status::invalid("not valid JSON: " + e.message());
  } catch (const std::exception& e) {
    return Status::invalid(std::string("not valid JSON: ") + e.what());
  }
  if (handler->duplicate()) return Status::invalid(*handler->duplicate());
  if (root.type() != typeid(Object::Ptr)) {
    return Status::invalid("manifest must be a JSON object ({...})");
  }
  try {
    return ManifestReader(root.extract<Object::Ptr>()).read();
  } catch (const Poco::Exception& e) {
    // Conversions are checked before they run; this only catches what slipped through.
    return Status::invalid("manifest: " + e.displayText());
  }
}

Result<Manifest> Manifest::load(const std::filesystem::path& file) {
  namespace fs = std::filesystem;
  const std::string name = file.string();
  std::error_code ec;
  fs::file_status st = fs::status(file, ec);
  if (ec || !fs::exists(st)) return Status::notFound(name + ": no such file");
  if (!fs::is_regular_file(st)) return Status::invalid(name + ": not a regular file");
  uintmax_t size = fs::file_size(file, ec);
  if (ec) return Status::invalid(name + ": cannot read: " + ec.message());
  if (size > kMaxManifestBytes) {
    return Status::invalid(name + ": manifest is " + std::to_string(size) +
                           " bytes; the limit is 1048576 (1 MiB)");
  }
  std::ifstream in(file, std::ios::binary);
  if (!in) return Status::invalid(name + ": cannot open for reading");
  std::string text;
  text.resize(static_cast<size_t>(size));
  in.read(text.data(), static_cast<std::streamsize>(size));
  if (in.gcount() != static_cast<std::streamsize>(size)) {
    return Status::invalid(name + ": short read");
  }
  auto m = parse(text);
  if (!m) return Status(m.status().code(), name + ": " + m.status().message());
  return m;
}

bool Manifest::hasCapability(std::string_view cap) const {
  return std::find(capabilities.begin(), capabilities.end(), cap) != capabilities.end();
}

bool Manifest::isBlocking(std::string_view method, std::string_view pattern) const {
  return std::any_of(blocking_routes.begin(), blocking_routes.end(), [&](const BlockingRoute& r) {
    return r.pattern == pattern && (r.method == "*" || r.method == method);
  });
}

Result<std::string> Manifest::entryForThisPlatform() const {
  const std::string platform = runtime == "lua" ? "lua" : currentPlatform();
  auto it = entry.find(platform);
  if (it != entry.end()) return it->second;
  std::vector<std::string> offered;
  for (const auto& [key, file] : entry) offered.push_back(key);
  return Status::notFound(id + " has no entry for " + platform + " (the manifest offers: " +
                          (offered.empty() ? std::string("none") : joined(offered)) + ")");
}

std::optional<PluginScope> parsePluginScope(std::string_view text) {
  if (text == "tenant") return PluginScope::Tenant;
  if (text == "system") return PluginScope::System;
  return std::nullopt;
}

std::string_view pluginScopeName(PluginScope scope) {
  return scope == PluginScope::System ? "system" : "tenant";
}

std::string currentPlatform() {
#if defined(__linux__)
  std::string os = "linux";
#elif defined(__APPLE__)
  std::string os = "macos";
#elif defined(_WIN32)
  std::string os = "windows";
#elif defined(__FreeBSD__)
  std::string os = "freebsd";
#else
  std::string os = "unknown";
#endif
#if defined(__x86_64__) || defined(_M_X64)
  std::string arch = "x86_64";
#elif defined(__aarch64__) || defined(_M_ARM64)
  std::string arch = "aarch64";
#elif defined(__arm__)
  std::string arch = "arm";
#elif defined(__riscv) && __riscv_xlen == 64
  std::string arch = "riscv64";
#elif defined(__powerpc64__) && defined(__LITTLE_ENDIAN__)
  std::string arch = "ppc64le";
#elif defined(__s390x__)
  std::string arch = "s390x";
#elif defined(__i386__) || defined(_M_IX86)
  std::string arch = "x86";
#else
  std::string arch = "unknown";
#endif
  return os + "-" + arch;
}

bool isValidPluginId(std::string_view id) {
  size_t slash = id.find('/');
  if (slash == std::string_view::npos) return false;
  return isIdPart(id.substr(0, slash)) && isIdPart(id.substr(slash + 1));
}

bool isValidEgressGrant(std::string_view rule) {
  return static_cast<bool>(services::egress::parseRule(rule));
}

bool isValidServiceName(std::string_view name) {
  if (name.empty() || name.size() > 64 || name[0] < 'a' || name[0] > 'z') return false;
  for (char c : name) {
    if (!((c >= 'a' && c <= 'z') || (c >= '0' && c <= '9') || c == '.' || c == '-')) return false;
  }
  return true;
}

}  // namespace trellis::kernel::plugin
