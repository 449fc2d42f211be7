// The lease sweeper: DatabaseEngine's durable job that revokes expired leases, and the
// plan of its next run ("sys/lease-sweep", the time in ms, changed with compare-and-set so
// that an earlier expiry always moves the run earlier).
#include <algorithm>
#include <charconv>
#include <vector>

#include "audit/audit.h"
#include "database/database_engine.h"
#include "database/records.h"

namespace trellis::secrets::database {
namespace {

constexpr std::string_view kSweepState = "sys/lease-sweep";
constexpr uint32_t kSweepPage = 64;
constexpr uint64_t kSealedRetryMs = 30'000;
constexpr uint64_t kFailedRetryMs = 30'000;

}  // namespace

Status DatabaseEngine::scheduleSweep(const Context& ctx, uint64_t at_ms) const {
  Kv kv = ctx.kv();
  const uint64_t now = ctx.nowUnixMs();
  for (int attempt = 0; attempt < 8; ++attempt) {
    auto entry = kv.get(kSweepState);
    if (!entry && entry.status().code() != StatusCode::kNotFound) return entry.status();
    if (entry) {
      uint64_t next = 0;
      const std::string& v = entry->value;
      std::from_chars(v.data(), v.data() + v.size(), next);
      // A later run is planned, or one is due now (it will plan the next itself).
      if (next <= at_ms && next > now) return Status::ok();
    }
    auto put = kv.put(kSweepState, std::to_string(at_ms), entry ? entry->version : Kv::kAbsent);
    if (put) {
      return ctx.schedule(
          Job::once(std::string(kSweepJob), at_ms > now ? at_ms - now : 0).durable());
    }
    if (put.status().code() != StatusCode::kConflict) return put.status();
  }
  return Status::unavailable("the lease sweeper's schedule changed concurrently too often");
}

Status DatabaseEngine::sweep(const Context& ctx) const {
  Kv kv = ctx.kv();
  const uint64_t now = ctx.nowUnixMs();
  if (seal_.status().sealed) {
    return ctx.schedule(Job::once(std::string(kSweepJob), kSealedRetryMs).durable());
  }
  auto state = kv.get(kSweepState);
  uint64_t earliest = UINT64_MAX;
  uint64_t revoked = 0;
  bool failed = false;
  bool more = false;
  std::string after;
  while (true) {
    std::vector<std::pair<Lease, uint64_t>> page;
    Status bad = Status::ok();
    size_t visited = 0;
    Status s = kv.list(kLeasePrefix, after, kSweepPage,
                       [&](std::string_view k, std::string_view v, uint64_t version) {
                         after = std::string(k);
                         ++visited;
                         auto l = parseLease(k.substr(kLeasePrefix.size()), v);
                         if (!l) {
                           bad = l.status();
                           return true;  // a damaged record is logged, not fatal to the rest
                         }
                         page.emplace_back(std::move(*l), version);
                         return true;
                       });
    if (!s) return s;
    if (!bad) ctx.error("secrets: lease sweeper: " + bad.message());
    for (const auto& [lease, version] : page) {
      if (lease.expire_ms > now) {
        earliest = std::min(earliest, lease.expire_ms);
        continue;
      }
      if (revoked >= kSweepPage) {  // enough for one run: continue in the next
        more = true;
        continue;
      }
      if (Status r = revokeLease(ctx, lease, version); !r) {
        ctx.warn("secrets: lease sweeper could not revoke " + lease.id + ": " + r.message());
        failed = true;
        continue;
      }
      ++revoked;
      auditOperation(ctx, seal_, "secret.lease.expire", "lease", lease.id);
    }
    if (visited < kSweepPage) break;
  }
  if (revoked > 0) {
    if (expired_metric_) (void)ctx.record(expired_metric_, static_cast<double>(revoked));
    ctx.info("secrets: lease sweeper dropped " + std::to_string(revoked) + " expired roles");
  }
  uint64_t next = earliest;
  if (more) next = now;
  if (failed) next = std::min(next, now + kFailedRetryMs);
  if (next == UINT64_MAX) {
    // Nothing left: forget the schedule (a new lease plans the next run). CONFLICT: a new
    // lease planned one meanwhile.
    if (state) (void)kv.remove(kSweepState, state->version);
    return Status::ok();
  }
  auto put = kv.put(kSweepState, std::to_string(next), state ? state->version : Kv::kAbsent);
  if (!put && put.status().code() != StatusCode::kConflict) return put.status();
  if (!put) return scheduleSweep(ctx, next);  // an issue planned meanwhile: keep the earlier
  return ctx.schedule(Job::once(std::string(kSweepJob), next > now ? next - now : 0).durable());
}

}  // namespace trellis::secrets::database
