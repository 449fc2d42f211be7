// The secrets.v1 service other plugins call (manifest "requires" secrets.v1 and the
// capability "service:secrets.v1", which the operator may narrow per tenant). Every call
// acts for the caller's tenant, is audited with the caller's id, and answers UNAVAILABLE
// while sealed. Requests and answers are JSON objects:
//
//   read     {"ref":"secret://db/creds#password"}        -> {"value":"…","version":3}
//   encrypt  {"key":"orders","plaintext":"<base64>"}      -> {"ciphertext":"trellis:v1:…"}
//   decrypt  {"key":"orders","ciphertext":"trellis:v1:…"} -> {"plaintext":"<base64>"}
//   datakey  {"key":"orders","mode":"plaintext"|"wrapped"} -> {"ciphertext", "plaintext"?}
//   hmac     {"key":"orders","input":"<base64>"}          -> {"hmac":"trellis:v1:…"}
//   ensure_key {"key":"orders"}                -> {"created":bool,"latest_version":1}
//   status   {}                                -> {"sealed":bool} (also while sealed, no tenant)
#pragma once

#include "kv/kv_engine.h"
#include "seal/seal.h"
#include "transit/transit_engine.h"
#include "trellis/plugin.hpp"

namespace trellis::secrets {

inline constexpr std::string_view kServiceName = "secrets.v1";

Status provideSecretsService(InitContext& ctx, const Seal& seal, const kv::KvEngine& kv,
                             const transit::TransitEngine& transit);

}  // namespace trellis::secrets
