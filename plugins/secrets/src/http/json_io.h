// Reading request bodies and writing answers: JSON through Poco, refusals as RFC 9457
// problems whose detail names what was wrong (and never holds a secret value).
#pragma once

#include <Poco/JSON/Object.h>

#include <optional>
#include <string>
#include <string_view>

#include "trellis/plugin.hpp"

namespace trellis::secrets::http {

using Poco::JSON::Object;

// The body as a JSON object; "" counts as {}. INVALID naming the problem otherwise.
Result<Object::Ptr> parseObject(std::string_view body);

// An optional unsigned integer member: nullopt if absent, INVALID if not a whole number
// in [0, max].
Result<std::optional<uint64_t>> optionalUint(const Object::Ptr& o, const std::string& name,
                                             uint64_t max);
// An optional boolean member.
Result<std::optional<bool>> optionalBool(const Object::Ptr& o, const std::string& name);

std::string stringify(const Object::Ptr& o);
Status sendJson(Response& res, int code, const Object::Ptr& o);

// Answers a failed Status: its message as the problem detail and the status's HTTP code
// (INVALID 400, NOT_FOUND 404, CONFLICT 409, UNAVAILABLE 503, …). Only for Statuses whose
// message was written for the client; internal failures go through internalError.
Status sendProblem(Response& res, const Status& s);
// Logs `s` for the operator and answers 500 with a generic detail.
Status internalError(Context& ctx, Response& res, const Status& s);
// A failed engine call: INTERNAL through internalError (logged, not shown), anything else
// through sendProblem (its message was written for the client).
Status answerFailure(Context& ctx, Response& res, const Status& s);

}  // namespace trellis::secrets::http
