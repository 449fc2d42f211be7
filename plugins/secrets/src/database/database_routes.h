// The tenants' routes of dynamic database credentials, Vault's paths under /secrets/v1/:
//
//   POST|GET|DELETE database/config/<name>   connection (password write-only)
//   POST|GET|DELETE database/roles/<name>    creation/revocation/renew statements, TTLs
//   GET             database/creds/<role>    new credentials and their lease
//   POST            sys/leases/lookup|renew|revoke  {"lease_id", "increment"}
//   POST            sys/leases/revoke-prefix/<prefix>
//
// All are blocking routes (they talk to the database) and answer 503 while sealed.
#pragma once

#include "database/database_engine.h"
#include "seal/seal.h"
#include "trellis/plugin.hpp"

namespace trellis::secrets::database {

Status addDatabaseRoutes(InitContext& ctx, const Seal& seal, const DatabaseEngine& engine);

}  // namespace trellis::secrets::database
