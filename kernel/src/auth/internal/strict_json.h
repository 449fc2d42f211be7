// A JSON object parsed the way a signature check needs it: duplicate members refused (Poco
// keeps the last silently, so two readers could see two documents), nesting bounded.
#pragma once

#include <Poco/JSON/Object.h>

#include <string_view>

#include "trellis/status.hpp"

namespace trellis::kernel::auth::internal {

// INVALID "<what> is not valid JSON: ..." / "<what> is not a JSON object" /
// "<what> has a duplicate member" (the name is not repeated: a token's content stays out of
// logs).
Result<Poco::JSON::Object::Ptr> parseJsonObject(std::string_view text, std::string_view what);

}  // namespace trellis::kernel::auth::internal
