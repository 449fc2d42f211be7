// Audit records for secret operations. The name a tenant gave (a path, a key name) is
// HMAC'd under a per-tenant key derived from the root key, so the audit stream can tell
// operations on one secret apart from another without learning its name; values never
// reach it.
#pragma once

#include <string_view>

#include "seal/seal.h"
#include "trellis/plugin.hpp"

namespace trellis::secrets {

// Emits `action` ("secret.kv.write") on `engine`/HMAC(name) with `details_json` (a JSON
// object without secrets, or ""). Best effort: a refused record is logged, not fatal.
void auditOperation(const Context& ctx, const Seal& seal, std::string_view action,
                    std::string_view engine, std::string_view name,
                    std::string_view details_json = "");

}  // namespace trellis::secrets
