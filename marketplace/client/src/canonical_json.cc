#include "trellis/marketplace/canonical_json.h"

#include <Poco/Exception.h>
#include <Poco/JSON/Array.h>
#include <Poco/JSON/Object.h>
#include <Poco/JSON/ParseHandler.h>
#include <Poco/JSON/Parser.h>

#include <algorithm>
#include <set>
#include <vector>

namespace trellis::marketplace {
namespace {

using Poco::Dynamic::Var;
using Poco::JSON::Array;
using Poco::JSON::Object;

constexpr int kMaxDepth = 64;

// Remembers the first duplicate key; Poco's own handler would silently keep the last.
class StrictHandler : public Poco::JSON::ParseHandler {
 public:
  void reset() override {
    ParseHandler::reset();
    keys_.clear();
    duplicate_.clear();
  }
  void startObject() override {
    ParseHandler::startObject();
    keys_.emplace_back();
  }
  void endObject() override {
    ParseHandler::endObject();
    keys_.pop_back();
  }
  void key(const std::string& k) override {
    ParseHandler::key(k);
    if (!keys_.empty() && !keys_.back().insert(k).second && duplicate_.empty()) {
      duplicate_ = k.empty() ? std::string("\"\"") : k;
    }
  }
  const std::string& duplicate() const { return duplicate_; }

 private:
  std::vector<std::set<std::string>> keys_;
  std::string duplicate_;
};

// Length of the valid UTF-8 sequence at s[i], or 0 if it is not one (overlong forms,
// surrogates and code points above U+10FFFF are invalid).
size_t utf8SequenceLength(std::string_view s, size_t i) {
  auto byte = [&](size_t k) { return static_cast<unsigned char>(s[k]); };
  unsigned char c = byte(i);
  if (c < 0x80) return 1;
  size_t len;
  uint32_t cp;
  if ((c & 0xe0) == 0xc0) {
    len = 2, cp = c & 0x1f;
  } else if ((c & 0xf0) == 0xe0) {
    len = 3, cp = c & 0x0f;
  } else if ((c & 0xf8) == 0xf0) {
    len = 4, cp = c & 0x07;
  } else {
    return 0;
  }
  if (i + len > s.size()) return 0;
  for (size_t k = 1; k < len; ++k) {
    if ((byte(i + k) & 0xc0) != 0x80) return 0;
    cp = (cp << 6) | (byte(i + k) & 0x3f);
  }
  static constexpr uint32_t kMin[] = {0, 0, 0x80, 0x800, 0x10000};
  if (cp < kMin[len] || cp > 0x10ffff || (cp >= 0xd800 && cp <= 0xdfff)) return 0;
  return len;
}

class Writer {
 public:
  Status write(const Var& v, const std::string& path) {
    if (v.isEmpty()) {
      out_ += "null";
    } else if (v.type() == typeid(Object::Ptr)) {
      const Object::Ptr& o = v.extract<Object::Ptr>();
      if (o.isNull()) return fail(path, "null object pointer");
      return writeObject(*o, path);
    } else if (v.type() == typeid(Object)) {
      return writeObject(v.extract<Object>(), path);
    } else if (v.type() == typeid(Array::Ptr)) {
      const Array::Ptr& a = v.extract<Array::Ptr>();
      if (a.isNull()) return fail(path, "null array pointer");
      return writeArray(*a, path);
    } else if (v.type() == typeid(Array)) {
      return writeArray(v.extract<Array>(), path);
    } else if (v.isBoolean()) {
      out_ += v.extract<bool>() ? "true" : "false";
    } else if (v.isString()) {
      return writeString(v.extract<std::string>(), path);
    } else if (v.isInteger()) {
      out_ += v.isSigned() ? std::to_string(v.convert<Poco::Int64>())
                           : std::to_string(v.convert<Poco::UInt64>());
    } else if (v.isNumeric()) {
      return fail(path, "floating-point numbers are not allowed in signed JSON (use integers)");
    } else {
      return fail(path, "unsupported value type");
    }
    return Status::ok();
  }

  std::string take() { return std::move(out_); }

 private:
  static Status fail(const std::string& path, const std::string& what) {
    return Status::invalid((path.empty() ? std::string("(top level)") : path) + ": " + what);
  }

  Status writeObject(const Object& o, const std::string& path) {
    std::vector<std::string> names;
    for (const auto& member : o) names.push_back(member.first);
    std::sort(names.begin(), names.end());  // char_traits<char> compares as unsigned bytes
    out_ += '{';
    bool first = true;
    for (const auto& name : names) {
      if (!first) out_ += ',';
      first = false;
      std::string child = path.empty() ? name : path + "." + name;
      if (Status s = writeString(name, child); !s) return s;
      out_ += ':';
      if (Status s = write(o.get(name), child); !s) return s;
    }
    out_ += '}';
    return Status::ok();
  }

  Status writeArray(const Array& a, const std::string& path) {
    out_ += '[';
    for (size_t i = 0; i < a.size(); ++i) {
      if (i) out_ += ',';
      if (Status s = write(a.get(static_cast<unsigned>(i)), path + "[" + std::to_string(i) + "]");
          !s) {
        return s;
      }
    }
    out_ += ']';
    return Status::ok();
  }

  Status writeString(std::string_view s, const std::string& path) {
    static constexpr char kHex[] = "0123456789abcdef";
    out_ += '"';
    for (size_t i = 0; i < s.size();) {
      unsigned char c = static_cast<unsigned char>(s[i]);
      size_t len = utf8SequenceLength(s, i);
      if (len == 0) {
        return fail(path, "string is not valid UTF-8 (byte " + std::to_string(i) + ")");
      }
      if (c == '"') {
        out_ += "\\\"";
      } else if (c == '\\') {
        out_ += "\\\\";
      } else if (c < 0x20) {
        switch (c) {
          case '\b': out_ += "\\b"; break;
          case '\f': out_ += "\\f"; break;
          case '\n': out_ += "\\n"; break;
          case '\r': out_ += "\\r"; break;
          case '\t': out_ += "\\t"; break;
          default:
            out_ += "\\u00";
            out_ += kHex[c >> 4];
            out_ += kHex[c & 0xf];
        }
      } else {
        out_.append(s.substr(i, len));
      }
      i += len;
    }
    out_ += '"';
    return Status::ok();
  }

  std::string out_;
};

}  // namespace

Result<Var> parseJsonStrict(std::string_view text, size_t max_bytes) {
  if (text.size() > max_bytes) {
    return Status::invalid("JSON document is " + std::to_string(text.size()) +
                           " bytes; the limit is " + std::to_string(max_bytes));
  }
  Poco::SharedPtr<StrictHandler> handler = new StrictHandler;
  Var root;
  try {
    Poco::JSON::Parser parser(handler);
    parser.setDepth(kMaxDepth);
    root = parser.parse(std::string(text));
  } catch (const Poco::Exception& e) {
    return Status::invalid("not valid JSON: " + e.message());
  } catch (const std::exception& e) {
    return Status::invalid(std::string("not valid JSON: ") + e.what());
  }
  if (!handler->duplicate().empty()) {
    return Status::invalid("not valid JSON: duplicate key \"" + handler->duplicate() + "\"");
  }
  return root;
}

Result<std::string> canonicalJson(const Var& value) {
  Writer w;
  try {
    if (Status s = w.write(value, ""); !s) return s;
  } catch (const Poco::Exception& e) {
    return Status::invalid("cannot canonicalize JSON: " + e.displayText());
  }
  return w.take();
}

Result<std::string> canonicalizeJsonText(std::string_view text) {
  auto value = parseJsonStrict(text);
  if (!value) return value.status();
  return canonicalJson(*value);
}

}  // namespace trellis::marketplace
