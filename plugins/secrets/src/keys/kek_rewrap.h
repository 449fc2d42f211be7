// The job that moves a tenant's stored secrets and transit keys off older KEK versions
// after a rotation, so those versions can be retired. A durable job, one page of records
// per run, resumable: its position lives in the tenant's KV store ("sys/rewrap"), so a
// restart or another host continues where it stopped. A pass walks every KV secret and
// transit key and re-wraps what an older version wrapped (and every database connection's
// password); a pass that found nothing to re-wrap retires the versions below the one it started
// under (a pass that did re-wrap is followed by another, which catches writes that raced the
// first).
//
//   rewrap.start(ctx);                 // after POST /secrets/v1/keyring/rotate
//   ctx.onJob(... rewrap.run(ctx) ...)  // runs under kJobName
#pragma once

#include <Poco/JSON/Object.h>

#include <optional>
#include <string_view>

#include "database/database_engine.h"
#include "keys/keyring.h"
#include "kv/kv_engine.h"
#include "seal/seal.h"
#include "transit/transit_engine.h"
#include "trellis/plugin.hpp"

namespace trellis::secrets {

class KekRewrap {
 public:
  static constexpr std::string_view kJobName = "kek-rewrap";
  static constexpr uint32_t kPage = 64;

  KekRewrap(const Seal& seal, const kv::KvEngine& kv, const transit::TransitEngine& transit,
            const database::DatabaseEngine& database)
      : seal_(seal), kv_(kv), transit_(transit), database_(database) {}
  void setMetric(trellis_metric_id rewrapped) { rewrapped_metric_ = rewrapped; }

  // Starts a pass for the calling tenant towards its current KEK (replacing one under way).
  Status start(const Context& ctx) const;
  // One run of the job: a page of records; schedules the next run until done.
  Status run(const Context& ctx) const;
  // The pass under way, for GET /secrets/v1/keyring: {"target_version","phase","after",
  // "rewrapped","pass"}; nullopt when none is.
  Result<std::optional<Poco::JSON::Object::Ptr>> progress(const Context& ctx) const;

 private:
  const Seal& seal_;
  const kv::KvEngine& kv_;
  const transit::TransitEngine& transit_;
  const database::DatabaseEngine& database_;
  trellis_metric_id rewrapped_metric_ = 0;
};

}  // namespace trellis::secrets
