// HTTP helpers of the registry API: RFC 9457 problem responses, JSON replies and request
// bodies. Statuses from the catalogue map to HTTP as docs/marketplace.md states: INVALID
// (a package or key that fails verification) 422, PERMISSION_DENIED 403, NOT_FOUND 404,
// CONFLICT 409, UNAVAILABLE/TIMEOUT/QUOTA_EXCEEDED 503; anything else stays an error of
// ours (the host answers 500 and logs the message, which is never sent).
#pragma once

#include <Poco/JSON/Object.h>

#include <optional>
#include <string>
#include <string_view>

#include "trellis/plugin.hpp"
#include "trellis/status.hpp"

namespace trellis::registry {

Status problem(Response& res, int code, std::string_view detail);
Status answerFailure(Response& res, const Status& failure);
Status replyJson(Response& res, int code, const Poco::JSON::Object::Ptr& body);

// The request body as a JSON object (at most 64 KiB); nullopt after answering 400.
std::optional<Poco::JSON::Object::Ptr> jsonBody(const Request& req, Response& res,
                                                Status& answered);

// A string member; nullopt if absent or not a string.
std::optional<std::string> stringMember(const Poco::JSON::Object& o, const std::string& name);

// [a-z0-9][a-z0-9-]{0,62}: one part of a plugin id.
bool isIdPart(std::string_view s);

}  // namespace trellis::registry
