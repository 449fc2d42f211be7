// Data-plane access as audit records, taken from the kernel's usage stream. The operator
// names, per tenant, the routes whose every request is recorded in that tenant's log
// (config "access"); the plugin subscribes to the usage stream only when it is set.
//
//   config: {access: {acme: ["GET /secrets/v1/kv/data/*", "/billing/*"], globex: ["*"]}}
//
// A rule is "*" (every request), or a route pattern as the plugin registered it
// ("/secrets/v1/kv/data/{path...}"), optionally after a method, and optionally ending in
// "*" to match every pattern that starts with what precedes it.
#pragma once

#include <map>
#include <optional>
#include <string>
#include <string_view>
#include <vector>

#include "trellis/status.hpp"

namespace trellis::audit {

class AccessRules {
 public:
  // `json` is the config value: an object of tenant → list of rules. INVALID names the
  // tenant or rule at fault.
  static Result<AccessRules> parse(std::string_view json);

  bool empty() const { return rules_.empty(); }
  bool matches(std::string_view tenant, std::string_view method, std::string_view route) const;

 private:
  struct Rule {
    std::string method;  // "" = any
    std::string route;   // "" with prefix = any
    bool prefix = false;
  };
  std::map<std::string, std::vector<Rule>, std::less<>> rules_;
};

// The audit record ("data.access", for audit.v1's sink) of one usage-stream line, or
// nullopt when it is not a request the rules select. INVALID for a line that is not a
// usage record.
Result<std::optional<std::string>> accessRecord(const AccessRules& rules,
                                                std::string_view usage_line);

}  // namespace trellis::audit
