// The operator's side of the seal, on the admin port (the plugin is a system plugin):
//
//   POST /v1/x/trellis/secrets/init    {"shares":5,"threshold":3}  role admin
//   POST /v1/x/trellis/secrets/unseal  {"key":"tss1-…"} | {"reset":true}  role operator
//   POST /v1/x/trellis/secrets/seal                                  role operator
//   GET  /v1/x/trellis/secrets/status                                role operator
//
// The share travels as "key" because the kernel's audit stream redacts members named so.
//
// The tenant routes of the other engines answer 503 while sealed, before they look at their
// input: they register through unsealedOnly() / unsealedMember().
#pragma once

#include <memory>
#include <utility>

#include "seal/seal.h"
#include "trellis/plugin.hpp"

namespace trellis::secrets {

Status addSealRoutes(InitContext& ctx, Seal& seal);

// `h`, or 503 with kSealedMessage while `seal` is sealed. `seal` outlives the handler.
Handler unsealedOnly(const Seal& seal, Handler h);

// A const member of a route group shared by its handlers, behind unsealedOnly().
template <typename Routes>
Handler unsealedMember(const Seal& seal, std::shared_ptr<const Routes> routes,
                       Status (Routes::*fn)(Context&, const Request&, Response&) const) {
  return unsealedOnly(seal,
                      [routes = std::move(routes), fn](Context& c, const Request& q, Response& r) {
                        return ((*routes).*fn)(c, q, r);
                      });
}

}  // namespace trellis::secrets
