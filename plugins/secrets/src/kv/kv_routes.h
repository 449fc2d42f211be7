// KV v2 on the data plane, for the calling tenant, with Vault's paths under /secrets/v1/kv:
//
//   GET|POST|PUT|DELETE  /secrets/v1/kv/data/{path}      read (?version=N), write, soft delete
//   POST  /secrets/v1/kv/delete|undelete|destroy/{path}   {"versions":[1,2]}
//   GET|POST|DELETE      /secrets/v1/kv/metadata/{path}   metadata; ?list=true lists a folder
//   GET   /secrets/v1/kv/metadata?list=true               the top folder
//
// While sealed every route answers 503 problem+json before looking at its input.
#pragma once

#include "kv/kv_engine.h"
#include "seal/seal.h"
#include "trellis/plugin.hpp"

namespace trellis::secrets::kv {

Status addKvRoutes(InitContext& ctx, const Seal& seal, const KvEngine& engine);

}  // namespace trellis::secrets::kv
