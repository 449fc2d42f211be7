#include "trellis/kernel/http/problem.h"

#include <boost/beast/http/field.hpp>
#include <boost/beast/http/status.hpp>
#include <cstdint>
#include <string>

#include "trellis/kernel/util/json.h"

namespace trellis::kernel::http {
namespace {

constexpr std::string_view kProblemJson = "application/problem+json";

const ProblemField* findExtra(const std::vector<ProblemField>& extra, std::string_view name) {
  for (const auto& f : extra) {
    if (f.name == name) return &f;
  }
  return nullptr;
}

void appendMember(std::string& out, std::string_view name, std::string_view value, bool raw) {
  if (out.size() > 1) out += ',';
  util::appendJsonString(out, name);
  out += ':';
  if (raw) {
    out += value;
  } else {
    util::appendJsonString(out, value);
  }
}

}  // namespace

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
