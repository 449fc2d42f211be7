#include "http.h"

#include "trellis/marketplace/canonical_json.h"

namespace trellis::registry {
namespace {

constexpr size_t kMaxJsonBody = size_t{64} << 10;

std::string_view title(int code) {
  switch (code) {
    case 400: return "Bad Request";
    case 401: return "Unauthorized";
    case 403: return "Forbidden";
    case 404: return "Not Found";
    case 409: return "Conflict";
    case 413: return "Content Too Large";
    case 422: return "Unprocessable Content";
    case 503: return "Service Unavailable";
    default: return "Error";
  }
}

}  // namespace

Status problem(Response& res, int code, std::string_view detail) {
  Poco::JSON::Object::Ptr o = new Poco::JSON::Object;
  o->set("type", "about:blank");
  o->set("title", std::string(title(code)));
  o->set("status", code);
  o->set("detail", std::string(detail));
  auto text = marketplace::canonicalJson(o);
  if (!text) return text.status();
  if (auto s = res.status(code); !s) return s;
  if (auto s = res.header("Content-Type", "application/problem+json"); !s) return s;
  return res.body(*text);
}

Status answerFailure(Response& res, const Status& failure) {
  switch (failure.code()) {
    case StatusCode::kInvalid: return problem(res, 422, failure.message());
    case StatusCode::kPermissionDenied: return problem(res, 403, failure.message());
    case StatusCode::kNotFound: return problem(res, 404, failure.message());
    case StatusCode::kConflict: return problem(res, 409, failure.message());
    case StatusCode::kUnavailable:
    case StatusCode::kTimeout:
    case StatusCode::kQuotaExceeded: return problem(res, 503, failure.message());
    default: return failure;
  }
}

Status replyJson(Response& res, int code, const Poco::JSON::Object::Ptr& body) {
  auto text = marketplace::canonicalJson(body);
  if (!text) return text.status();
  return res.json(code, *text);
}

std::optional<Poco::JSON::Object::Ptr> jsonBody(const Request& req, Response& res,
                                                Status& answered) {
  auto parsed = marketplace::parseJsonStrict(req.body(), kMaxJsonBody);
  if (!parsed || parsed->type() != typeid(Poco::JSON::Object::Ptr)) {
    answered = problem(res, 400,
                       "the request body must be a JSON object" +
                           (parsed ? std::string() : ": " + parsed.status().message()));
    return std::nullopt;
  }
  return parsed->extract<Poco::JSON::Object::Ptr>();
}

std::optional<std::string> stringMember(const Poco::JSON::Object& o, const std::string& name) {
  if (!o.has(name)) return std::nullopt;
  Poco::Dynamic::Var v = o.get(name);
  if (!v.isString()) return std::nullopt;
  return v.extract<std::string>();
}

bool isIdPart(std::string_view s) {
  if (s.empty() || s.size() > 63) return false;
  for (size_t i = 0; i < s.size(); ++i) {
    char c = s[i];
    if (!((c >= 'a' && c <= 'z') || (c >= '0' && c <= '9') || (i > 0 && c == '-'))) return false;
  }
  return true;
}

}  // namespace trellis::registry
