// trellis/secrets: the plugin object. It owns the seal and wires the operator's admin
// routes, the tenants' data-plane routes and the secrets.v1 service to it; each of those
// lives in its own module.
#include "kv/kv_engine.h"
#include "kv/kv_routes.h"
#include "seal/seal.h"
#include "seal/seal_routes.h"
#include "service/secrets_service.h"
#include "transit/transit_engine.h"
#include "transit/transit_routes.h"
#include "trellis/plugin.hpp"

namespace trellis::secrets {

class SecretsPlugin : public Plugin {
 public:
  Status init(InitContext& ctx) override {
    if (Status s = addSealRoutes(ctx, seal_); !s) return s;
    if (Status s = kv::addKvRoutes(ctx, seal_, kv_); !s) return s;
    if (Status s = transit::addTransitRoutes(ctx, seal_, transit_); !s) return s;
    if (Status s = provideSecretsService(ctx, seal_, kv_, transit_); !s) return s;
    ctx.info("secrets: started sealed; unseal it with the operator's shares");
    return Status::ok();
  }
  void stop(Context&) override { seal_.seal(); }

 private:
  Seal seal_;
  kv::KvEngine kv_{seal_};
  transit::TransitEngine transit_{seal_};
};

}  // namespace trellis::secrets

TRELLIS_PLUGIN(trellis::secrets::SecretsPlugin, "trellis/secrets", "0.1.0")
