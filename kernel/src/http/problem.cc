#include "trellis/kernel/http/problem.h"

#include <boost/beast/http/field.hpp>
#include <boost/beast/http/status.hpp>
#include <cstdint>
#include <string>

namespace trellis::kernel::http {
namespace {

constexpr std::string_view kProblemJson = "application/problem+json";

// Length of the valid UTF-8 sequence starting at s[i], or 0 if it is not valid (overlong
// forms, surrogates and code points above U+10FFFF included), so the output is always JSON.
size_t utf8SequenceLength(std::string_view s, size_t i) {
  auto byte = [&](size_t k) { return static_cast<uint8_t>(s[k]); };
  uint8_t b0 = byte(i);
  size_t len;
  uint32_t cp;
  if (b0 >= 0xC2 && b0 <= 0xDF) {
    len = 2;
    cp = b0 & 0x1F;
  } else if (b0 >= 0xE0 && b0 <= 0xEF) {
    len = 3;
    cp = b0 & 0x0F;
  } else if (b0 >= 0xF0 && b0 <= 0xF4) {
    len = 4;
    cp = b0 & 0x07;
  } else {
    return 0;
  }
  if (i + len > s.size()) return 0;
  for (size_t k = 1; k < len; ++k) {
    if ((byte(i + k) & 0xC0) != 0x80) return 0;
    cp = (cp << 6) | (byte(i + k) & 0x3F);
  }
  if ((len == 3 && cp < 0x800) || (len == 4 && cp < 0x10000) || cp > 0x10FFFF ||
      (cp >= 0xD800 && cp <= 0xDFFF)) {
    return 0;
  }
  return len;
}

const ProblemField* findExtra(const std::vector<ProblemField>& extra, std::string_view name) {
  for (const auto& f : extra) {
    if (f.name == name) return &f;
  }
  return nullptr;
}

void appendMember(std::string& out, std::string_view name, std::string_view value, bool raw) {
  if (out.size() > 1) out += ',';
  appendJsonString(out, name);
  out += ':';
  if (raw) {
    out += value;
  } else {
    appendJsonString(out, value);
  }
}

}  // namespace

void appendJsonString(std::string& out, std::string_view s) {
  static constexpr char kHex[] = "0123456789abcdef";
  out.reserve(out.size() + s.size() + 2);
  out += '"';
  for (size_t i = 0; i < s.size();) {
    auto c = static_cast<unsigned char>(s[i]);
    if (c >= 0x80) {
      // Details often quote client input (paths, headers): never let it break the JSON.
      if (size_t len = utf8SequenceLength(s, i)) {
        out.append(s.substr(i, len));
        i += len;
      } else {
        out += "\\ufffd";
        ++i;
      }
      continue;
    }
    switch (c) {
      case '"': out += "\\\""; break;
      case '\\': out += "\\\\"; break;
      case '\b': out += "\\b"; break;
      case '\f': out += "\\f"; break;
      case '\n': out += "\\n"; break;
      case '\r': out += "\\r"; break;
      case '\t': out += "\\t"; break;
      default:
        if (c < 0x20 || c == 0x7F) {
          out += "\\u00";
          out += kHex[c >> 4];
          out += kHex[c & 0xF];
        } else {
          out += static_cast<char>(c);
        }
    }
    ++i;
  }
  out += '"';
}

Response problem(unsigned status, std::string_view title, std::string_view detail,
                 std::vector<ProblemField> extra, const Request* req) {
  namespace bhttp = boost::beast::http;
  Response res{static_cast<bhttp::status>(status), req ? req->version() : 11};
  res.set(bhttp::field::content_type, kProblemJson);
  res.set(bhttp::field::cache_control, "no-store");
  if (req) res.keep_alive(req->keep_alive());

  // Standard members first, in RFC 9457 order; an extra field of the same name replaces
  // the default (e.g. a specific "type" URI).
  std::string& body = res.body();
  body.reserve(128 + title.size() + detail.size());
  body += '{';
  auto standard = [&](std::string_view name, std::string_view value, bool raw) {
    if (const ProblemField* f = findExtra(extra, name)) {
      appendMember(body, f->name, f->value, f->raw_json);
    } else {
      appendMember(body, name, value, raw);
    }
  };
  standard("type", "about:blank", false);
  standard("title", title, false);
  standard("status", std::to_string(status), true);
  standard("detail", detail, false);
  if (req || findExtra(extra, "instance")) {
    // The path only: query strings may carry credentials.
    std::string_view target = req ? std::string_view(req->target()) : std::string_view();
    standard("instance", target.substr(0, target.find('?')), false);
  }
  for (const auto& f : extra) {
    if (f.name == "type" || f.name == "title" || f.name == "status" || f.name == "detail" ||
        f.name == "instance") {
      continue;
    }
    appendMember(body, f.name, f.value, f.raw_json);
  }
  body += '}';
  res.prepare_payload();
  return res;
}

}  // namespace trellis::kernel::http
