// The tenant's key-encryption keys on the data plane (metadata only; keys never leave):
//
//   GET  /secrets/v1/keyring         {"data":{"current_version":2,"max_uses":…,"versions":[
//                                      {"version":1,"created_time":"…","uses":256}, …]}}
//   POST /secrets/v1/keyring/rotate  the same, after a new version was added; starts the
//                                    re-wrap job (kek_rewrap.h), shown as "rewrap" until done
//
// "uses" counts the data keys a version may have wrapped (reserved before use, so never
// fewer than were made); at max_uses a version is replaced on its own.
#pragma once

#include "keys/kek_rewrap.h"
#include "keys/keyring.h"
#include "seal/seal.h"
#include "trellis/plugin.hpp"

namespace trellis::secrets {

Status addKeyringRoutes(InitContext& ctx, const Seal& seal, const KekUses& uses,
                        const KekRewrap& rewrap);

}  // namespace trellis::secrets
