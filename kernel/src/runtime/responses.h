// Response builders shared by the data plane, the admin plane and the tenant admin API.
#pragma once

#include <Poco/Dynamic/Var.h>

#include <cstdint>
#include <optional>
#include <string_view>

#include "trellis/kernel/http/message.h"
#include "trellis/kernel/http/router.h"
#include "trellis/plugin.h"
#include "trellis/status.hpp"

namespace trellis::kernel::runtime {

// `body` as indented JSON, with Cache-Control: no-store (admin answers are never cached).
http::Response jsonResponse(const http::Request& req, unsigned status,
                            const Poco::Dynamic::Var& body);

// /healthz and /readyz: 200 {"status":"ok"} or 503 {"status":"unavailable"}.
http::Response healthResponse(const http::Request& req, bool ok);

// RateLimit-Limit/-Remaining/-Reset, as the IETF RateLimit header fields define them.
void setRateLimitHeaders(http::Response& res, uint64_t limit, uint64_t remaining,
                         uint64_t reset_seconds);

// For an admin API module whose router did not match `path`: a 405 problem if the path
// is one of its own with another method, else nullopt (another module's path).
std::optional<http::Response> notMatched(const http::Router& router, const http::Request& req,
                                         std::string_view path);

// The same for a module that answers through `respond`: true if the 405 was sent (the path
// is ours), false if the path belongs to another module.
bool respondNotMatched(const http::Router& router, const http::Request& req, std::string_view path,
                       const http::Respond& respond);

// The HTTP status for a failure status (a plugin's, or a registry's).
unsigned httpStatusFor(trellis_status s);

// An admin API failure as problem+json: the status's HTTP code and its message.
http::Response failureResponse(const http::Request& req, const Status& s);

}  // namespace trellis::kernel::runtime
