#include "core/canonical_json.h"

#include <Poco/JSON/Array.h>
#include <Poco/JSON/Object.h>
#include <Poco/JSON/Parser.h>

#include <charconv>
#include <cmath>
#include <map>

#include "core/json_reader.h"

namespace trellis::audit {

void appendJsonString(std::string& out, std::string_view s) {
  static constexpr char kDigits[] = "0123456789abcdef";
  out += '"';
  for (unsigned char c : s) {
    if (c == '"' || c == '\\') {
      out += '\\';
      out += static_cast<char>(c);
    } else if (c < 0x20) {
      out += "\\u00";
      out += kDigits[c >> 4];
      out += kDigits[c & 15];
    } else {
      out += static_cast<char>(c);
    }
  }
  out += '"';
}

void appendCanonical(std::string& out, const Poco::Dynamic::Var& v) {
  if (v.isEmpty()) {
    out += "null";
  } else if (v.type() == typeid(Poco::JSON::Object::Ptr)) {
    auto obj = v.extract<Poco::JSON::Object::Ptr>();
    std::map<std::string, Poco::Dynamic::Var> sorted;
    for (const auto& [k, val] : *obj) sorted.emplace(k, val);
    out += '{';
    bool first = true;
    for (const auto& [k, val] : sorted) {
      if (!first) out += ',';
      first = false;
      appendJsonString(out, k);
      out += ':';
      appendCanonical(out, val);
    }
    out += '}';
  } else if (v.type() == typeid(Poco::JSON::Array::Ptr)) {
    auto arr = v.extract<Poco::JSON::Array::Ptr>();
    out += '[';
    for (size_t i = 0; i < arr->size(); ++i) {
      if (i) out += ',';
      appendCanonical(out, arr->get(static_cast<unsigned>(i)));
    }
    out += ']';
  } else if (v.isBoolean()) {
    out += v.convert<bool>() ? "true" : "false";
  } else if (v.isString()) {
    appendJsonString(out, v.extract<std::string>());
  } else if (v.isInteger()) {
    out +=
        v.isSigned() ? std::to_string(v.convert<int64_t>()) : std::to_string(v.convert<uint64_t>());
  } else if (v.isNumeric()) {
    const double d = v.convert<double>();
    if (!std::isfinite(d)) {
      out += "null";
      return;
    }
    char buf[32];
    auto r = std::to_chars(buf, buf + sizeof buf, d);  // shortest round-trip form
    out.append(buf, r.ptr);
  } else {
    appendJsonString(out, v.convert<std::string>());
  }
}

Result<std::string> canonicalJson(std::string_view json) {
  JsonReader r(json);
  r.skipSpace();
  std::string out;
  if (r.peek() != '{' && r.peek() != '[') {
    // Poco's parser takes only an object or an array as a document.
    if (r.value(nullptr, nullptr) != JsonKind::kInvalid || r.deferred()) {
      return canonicalJsonReference(json);
    }
    return Status::invalid("not JSON: " + r.error());
  }
  if (r.value(&out, nullptr) != JsonKind::kInvalid) {
    if (r.atEnd()) return out;
    if (r.peek() == '\xff') return canonicalJsonReference(json);  // see record.cc
    r.fail("more after the document's end");
  }
  if (r.deferred()) return canonicalJsonReference(json);
  return Status::invalid("not JSON: " + r.error());
}

Result<std::string> canonicalJsonReference(std::string_view json) {
  try {
    Poco::JSON::Parser parser;
    Poco::Dynamic::Var v = parser.parse(std::string(json));
    std::string out;
    appendCanonical(out, v);
    return out;
  } catch (const Poco::Exception& e) {
    return Status::invalid("not JSON: " + e.displayText());
  }
}

}  // namespace trellis::audit
