#include "keys/keyring_routes.h"

#include <Poco/JSON/Array.h>

#include <memory>

#include "audit/audit.h"
#include "http/json_io.h"
#include "http/times.h"
#include "seal/seal_routes.h"

namespace trellis::secrets {
namespace {

using Poco::JSON::Array;
using Poco::JSON::Object;

class Routes {
 public:
  Routes(const Seal& seal, const KekUses& uses, const KekRewrap& rewrap)
      : seal_(seal), uses_(uses), rewrap_(rewrap) {}

  Status read(Context& ctx, const Request&, Response& res) const {
    auto ring = Keyring::open(ctx, seal_, /*create=*/false);
    if (!ring) return http::answerFailure(ctx, res, ring.status());
    return answer(ctx, res, *ring);
  }

  Status rotate(Context& ctx, const Request&, Response& res) const {
    auto ring = Keyring::open(ctx, seal_, /*create=*/true);
    if (!ring) return http::answerFailure(ctx, res, ring.status());
    if (Status s = ring->rotate(ctx, seal_); !s) return http::answerFailure(ctx, res, s);
    auditOperation(ctx, seal_, "secret.keyring.rotate", "keyring", "kek",
                   "{\"version\":" + std::to_string(ring->current().version) + "}");
    if (Status s = rewrap_.start(ctx); !s) return http::answerFailure(ctx, res, s);
    return answer(ctx, res, *ring);
  }

 private:
  Status answer(Context& ctx, Response& res, const Keyring& ring) const {
    Array::Ptr versions = new Array;
    for (const Kek& k : ring.keys()) {
      Object::Ptr v = new Object;
      v->set("version", k.version);
      v->set("created_time", http::rfc3339(k.created_ms));
      v->set("uses", k.uses);
      versions->add(v);
    }
    Object::Ptr data = new Object;
    data->set("current_version", ring.current().version);
    data->set("max_uses", uses_.maxUses());
    data->set("versions", versions);
    auto progress = rewrap_.progress(ctx);
    if (!progress) return http::answerFailure(ctx, res, progress.status());
    if (*progress) data->set("rewrap", **progress);
    Object::Ptr wrap = new Object;
    wrap->set("data", data);
    return http::sendJson(res, 200, wrap);
  }

  const Seal& seal_;
  const KekUses& uses_;
  const KekRewrap& rewrap_;
};

}  // namespace

Status addKeyringRoutes(InitContext& ctx, const Seal& seal, const KekUses& uses,
                        const KekRewrap& rewrap) {
  auto routes = std::make_shared<const Routes>(seal, uses, rewrap);
  Status s = ctx.route("GET", "/secrets/v1/keyring", unsealedMember(seal, routes, &Routes::read));
  if (s) {
    s = ctx.route("POST", "/secrets/v1/keyring/rotate",
                  unsealedMember(seal, routes, &Routes::rotate));
  }
  return s;
}

}  // namespace trellis::secrets
