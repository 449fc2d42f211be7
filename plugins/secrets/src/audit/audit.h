// Audit records for secret operations. The name a tenant gave (a path, a key name) is
// HMAC'd under a per-tenant key derived from the root key, so the audit stream can tell
// operations on one secret apart from another without learning its name; values never
// reach it.
//
//   auditOperation(ctx, seal, "secret.kv.write", "kv", path);
//   // Hot paths derive the resource once and keep it with what it names (it is stale once
//   // the store is sealed, like the open key it is kept with):
//   std::string resource = auditResource(ctx, seal, "transit", name);
//   auditEmit(ctx, "secret.transit.encrypt", resource, R"({"items":1})");
#pragma once

#include <string>
#include <string_view>

#include "seal/seal.h"
#include "trellis/plugin.hpp"

namespace trellis::secrets {

// Emits `action` ("secret.kv.write") on `engine`/HMAC(name) with `details_json` (a JSON
// object without secrets, or ""). Best effort: a refused record is logged, not fatal.
void auditOperation(const Context& ctx, const Seal& seal, std::string_view action,
                    std::string_view engine, std::string_view name,
                    std::string_view details_json = "");

// The resource an audit record names for `name` of `engine`:
// "<engine>/hmac-sha256:<hex>", or "<engine>/(sealed)" while sealed.
std::string auditResource(const Context& ctx, const Seal& seal, std::string_view engine,
                          std::string_view name);

// Emits a record on a resource made by auditResource. Best effort, like auditOperation.
void auditEmit(const Context& ctx, std::string_view action, std::string_view resource,
               std::string_view details_json = "");

}  // namespace trellis::secrets
