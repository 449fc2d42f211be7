// RFC 9457 problem details: every error Trellis sends is `application/problem+json`.
//
//   auto res = problem(req, 404, "Not Found", "no route for GET /nope");
//   res.set("X-Extra", "1");
#pragma once

#include <string>
#include <string_view>
#include <utility>
#include <vector>

#include "trellis/kernel/http/message.h"

namespace trellis::kernel::http {

// Extra members of the problem object; values are emitted as JSON strings unless
// `raw_json` is set.
struct ProblemField {
  std::string name;
  std::string value;
  bool raw_json = false;
};

// Builds a complete response: status, Content-Type, body {"type","title","status","detail",
// "instance", ...extra}. `type` defaults to "about:blank". Keep-alive and HTTP version
// follow `req` when given.
Response problem(unsigned status, std::string_view title, std::string_view detail,
                 std::vector<ProblemField> extra = {}, const Request* req = nullptr);

}  // namespace trellis::kernel::http
