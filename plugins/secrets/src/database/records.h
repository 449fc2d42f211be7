// The stored forms of the database engine's records, as JSON in the tenant's KV: a
// connection (its password as an envelope), a role, a lease. Parsing a damaged record is
// INTERNAL (never shown to the client as is).
//
//   auto cfg = parseConfig("main", entry->value);
//   auto plain = envelope::open(ring, cfg->password, passwordAad(ctx.tenant(), "main"));
#pragma once

#include <string>
#include <string_view>

#include "database/database_engine.h"
#include "keys/envelope.h"
#include "trellis/status.hpp"

namespace trellis::secrets::database {

struct StoredConfig {
  ConnectionView view;
  envelope::Envelope password;
};

// The associated data binding a connection password to its tenant and connection name.
std::string passwordAad(std::string_view tenant, std::string_view name);

std::string serialize(const StoredConfig& c);
Result<StoredConfig> parseConfig(std::string_view name, const std::string& text);
std::string serialize(const RoleConfig& r);
Result<RoleConfig> parseRole(std::string_view name, const std::string& text);
std::string serialize(const Lease& l);
Result<Lease> parseLease(std::string_view id, std::string_view text);

}  // namespace trellis::secrets::database
