// The tenant's SQL templates (Vault's creation/revocation/renew statements) filled with the
// values the plugin generates. A placeholder is quoted for where it stands: inside "…" it
// becomes an identifier's body with `"` doubled, inside '…' a literal's body with `'`
// doubled, and bare it becomes a whole quoted identifier ({{name}}) or literal (the
// others). The values never hold NUL, and the generated ones are drawn from a restricted
// alphabet besides, so no value can end its quote and add SQL.
//
//   auto sql = fillTemplate("CREATE ROLE \"{{name}}\" LOGIN PASSWORD '{{password}}' "
//                           "VALID UNTIL '{{expiration}}';",
//                           {.name = user, .password = pw, .expiration = until});
#pragma once

#include <cstdint>
#include <string>
#include <string_view>

#include "trellis/status.hpp"

namespace trellis::secrets::database {

struct TemplateValues {
  std::string_view name;
  std::string_view password;
  std::string_view expiration;
};

// INVALID for an unknown {{placeholder}}, an unclosed one, or a value holding NUL.
Result<std::string> fillTemplate(std::string_view sql, const TemplateValues& values);

// A role name "v-<tenant>-<role>-<random>": lower-case letters, digits, '_' and '-', at
// most 63 bytes (PostgreSQL's NAMEDATALEN - 1).
std::string generateUsername(std::string_view tenant, std::string_view role);
// 36 characters from [A-Za-z0-9-], with each class present.
std::string generatePassword();
// PostgreSQL's timestamptz input, in UTC: "2026-12-06 07:45:16+00".
std::string pgTimestamp(uint64_t unix_ms);

}  // namespace trellis::secrets::database
