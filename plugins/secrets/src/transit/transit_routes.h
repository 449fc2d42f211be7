// Transit on the data plane, for the calling tenant, after Vault's transit engine:
//
//   POST|GET|DELETE /secrets/v1/transit/keys/{name}       create, read policy, delete
//   POST /secrets/v1/transit/keys/{name}/rotate | /config
//   {"min_decryption_version","deletion_allowed"} POST
//   /secrets/v1/transit/encrypt|decrypt|rewrap/{name} one item, or "batch_input":[…] POST
//   /secrets/v1/transit/datakey/plaintext|wrapped/{name}
//
// Plaintexts travel base64-encoded; keys are never exported. 503 while sealed.
#pragma once

#include "seal/seal.h"
#include "transit/transit_engine.h"
#include "trellis/plugin.hpp"

namespace trellis::secrets::transit {

Status addTransitRoutes(InitContext& ctx, const Seal& seal, const TransitEngine& engine);

}  // namespace trellis::secrets::transit
