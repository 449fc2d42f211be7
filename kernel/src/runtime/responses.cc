#include "runtime/responses.h"

#include <Poco/JSON/Stringifier.h>

#include <sstream>
#include <string>

#include "trellis/kernel/http/problem.h"

namespace trellis::kernel::runtime {
namespace bhttp = boost::beast::http;

http::Response jsonResponse(const http::Request& req, unsigned status,
                            const Poco::Dynamic::Var& body) {
  std::ostringstream out;
  Poco::JSON::Stringifier::stringify(body, out, 2);
  http::Response res{static_cast<bhttp::status>(status), req.version()};
  res.set(bhttp::field::content_type, "application/json");
  res.set(bhttp::field::cache_control, "no-store");
  res.body() = out.str() + "\n";
  res.keep_alive(req.keep_alive());
  return res;
}

http::Response healthResponse(const http::Request& req, bool ok) {
  http::Response res{ok ? bhttp::status::ok : bhttp::status::service_unavailable, req.version()};
  res.set(bhttp::field::content_type, "application/json");
  res.body() = ok ? R"({"status":"ok"})" : R"({"status":"unavailable"})";
  res.keep_alive(req.keep_alive());
  return res;
}

void setRateLimitHeaders(http::Response& res, uint64_t limit, uint64_t remaining,
                         uint64_t reset_seconds) {
  res.set("RateLimit-Limit", std::to_string(limit));
  res.set("RateLimit-Remaining", std::to_string(remaining));
  res.set("RateLimit-Reset", std::to_string(reset_seconds));
}

unsigned httpStatusFor(trellis_status s) {
  switch (s) {
    case TRELLIS_INVALID: return 400;
    case TRELLIS_NOT_FOUND: return 404;
    case TRELLIS_PERMISSION_DENIED: return 403;
    case TRELLIS_QUOTA_EXCEEDED: return 429;
    case TRELLIS_UNAVAILABLE: return 503;
    case TRELLIS_TIMEOUT: return 504;
    case TRELLIS_CONFLICT: return 409;
    case TRELLIS_UNIMPLEMENTED: return 501;
    default: return 500;
  }
}

std::optional<http::Response> notMatched(const http::Router& router, const http::Request& req,
                                         std::string_view path) {
  if (!router.matchesOtherMethod(req.method_string(), path)) return std::nullopt;
  return http::problem(405, "Method Not Allowed",
                       std::string(req.method_string()) + " is not allowed here", {}, &req);
}

bool respondNotMatched(const http::Router& router, const http::Request& req, std::string_view path,
                       const http::Respond& respond) {
  auto res = notMatched(router, req, path);
  if (res) respond(std::move(*res));
  return res.has_value();
}

http::Response failureResponse(const http::Request& req, const Status& s) {
  const unsigned code = httpStatusFor(s.toC());
  return http::problem(
      code, boost::beast::http::obsolete_reason(static_cast<boost::beast::http::status>(code)),
      s.message(), {}, &req);
}

}  // namespace trellis::kernel::runtime
