// trellis/secrets: the plugin object. It owns the seal and wires the operator's admin
// routes, the tenants' data-plane routes and the secrets.v1 service to it; each of those
// lives in its own module.
#include <charconv>

#include "database/database_engine.h"
#include "database/database_routes.h"
#include "keys/kek_rewrap.h"
#include "keys/keyring.h"
#include "keys/keyring_routes.h"
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
    if (Status s = configureKekUses(ctx); !s) return s;
    if (Status s = addSealRoutes(ctx, seal_); !s) return s;
    if (Status s = addKeyringRoutes(ctx, seal_, kek_uses_, rewrap_); !s) return s;
    auto rewrapped = ctx.counter("kek_rewrapped_total",
                                 "Data keys re-wrapped under a newer KEK after a rotation");
    if (!rewrapped) return rewrapped.status();
    rewrap_.setMetric(*rewrapped);
    auto expired = ctx.counter("database_leases_expired_total",
                               "Database credentials the lease sweeper revoked at expiry");
    if (!expired) return expired.status();
    database_.setExpiredMetric(*expired);
    Status jobs = ctx.onJob([this](Context& c, std::string_view name, std::string_view) {
      if (name == KekRewrap::kJobName) return rewrap_.run(c);
      if (name == database::DatabaseEngine::kSweepJob) return database_.sweep(c);
      return Status::notFound("no job " + std::string(name));
    });
    if (!jobs) return jobs;
    if (Status s = kv::addKvRoutes(ctx, seal_, kv_); !s) return s;
    if (Status s = transit::addTransitRoutes(ctx, seal_, transit_); !s) return s;
    if (Status s = database::addDatabaseRoutes(ctx, seal_, database_); !s) return s;
    if (Status s = provideSecretsService(ctx, seal_, kv_, transit_); !s) return s;
    ctx.info("secrets: started sealed; unseal it with the operator's shares");
    return Status::ok();
  }
  void stop(Context&) override { seal_.seal(); }

 private:
  // Config `kek_max_uses`: data keys one KEK version wraps before it is replaced (default
  // 2^30, well below the 2^32 random-nonce limit of AES-GCM; tests set it low).
  Status configureKekUses(InitContext& ctx) {
    auto v = ctx.config("kek_max_uses");
    if (!v || v->empty()) return Status::ok();
    uint64_t n = 0;
    auto [end, ec] = std::from_chars(v->data(), v->data() + v->size(), n);
    if (ec != std::errc() || end != v->data() + v->size() || n == 0 ||
        n > KekUses::kDefaultMaxUses) {
      return Status::invalid("config kek_max_uses must be a whole number from 1 to " +
                             std::to_string(KekUses::kDefaultMaxUses) + ", not \"" +
                             std::string(*v) + "\"");
    }
    kek_uses_.setMaxUses(n);
    return Status::ok();
  }

  Seal seal_;
  KekUses kek_uses_;
  kv::KvEngine kv_{seal_, kek_uses_};
  transit::TransitEngine transit_{seal_, kek_uses_};
  database::DatabaseEngine database_{seal_, kek_uses_};
  KekRewrap rewrap_{seal_, kv_, transit_, database_};
};

}  // namespace trellis::secrets

TRELLIS_PLUGIN(trellis::secrets::SecretsPlugin, "trellis/secrets", "0.1.0")
