// The operator's side of the seal, on the admin port (the plugin is a system plugin):
//
//   POST /v1/x/trellis/secrets/init    {"shares":5,"threshold":3}  role admin
//   POST /v1/x/trellis/secrets/unseal  {"key":"tss1-…"} | {"reset":true}  role operator
//   POST /v1/x/trellis/secrets/seal                                  role operator
//   GET  /v1/x/trellis/secrets/status                                role operator
//
// The share travels as "key" because the kernel's audit stream redacts members named so.
#pragma once

#include "seal/seal.h"
#include "trellis/plugin.hpp"

namespace trellis::secrets {

Status addSealRoutes(InitContext& ctx, Seal& seal);

}  // namespace trellis::secrets
