#include "keys/kek_rewrap.h"

#include <Poco/JSON/Parser.h>

#include <sstream>
#include <string>
#include <vector>

namespace trellis::secrets {
namespace {

using Poco::JSON::Object;

constexpr std::string_view kState = "sys/rewrap";
constexpr uint64_t kSealedRetryMs = 30'000;

struct State {
  uint32_t target = 0;       // re-wrap what versions below this wrapped
  std::string phase = "kv";  // "kv", then "transit", then "database"
  std::string after;         // the last storage key done in this phase
  uint64_t rewrapped = 0;    // in this pass
  uint64_t total = 0;        // in all passes
  uint32_t pass = 1;
};

std::string serialize(const State& s) {
  Object::Ptr o = new Object;
  o->set("target_version", s.target);
  o->set("phase", s.phase);
  o->set("after", s.after);
  o->set("rewrapped", s.rewrapped);
  o->set("total", s.total);
  o->set("pass", s.pass);
  std::ostringstream out;
  o->stringify(out);
  return out.str();
}

Result<State> parse(const std::string& text) {
  try {
    Object::Ptr o = Poco::JSON::Parser().parse(text).extract<Object::Ptr>();
    State s;
    s.target = o->getValue<uint32_t>("target_version");
    s.phase = o->getValue<std::string>("phase");
    s.after = o->getValue<std::string>("after");
    s.rewrapped = o->getValue<uint64_t>("rewrapped");
    s.total = o->getValue<uint64_t>("total");
    s.pass = o->getValue<uint32_t>("pass");
    return s;
  } catch (const std::exception&) {
    return Status::internal("the KEK re-wrap progress record is damaged");
  }
}

Status scheduleRun(const Context& ctx, uint64_t delay_ms) {
  return ctx.schedule(Job::once(std::string(KekRewrap::kJobName), delay_ms).durable());
}

}  // namespace

Status KekRewrap::start(const Context& ctx) const {
  auto ring = Keyring::open(ctx, seal_, /*create=*/false);
  if (!ring) return ring.status();
  State s;
  s.target = ring->current().version;
  auto put = ctx.kv().put(kState, serialize(s));
  if (!put) return put.status();
  return scheduleRun(ctx, 0);
}

Status KekRewrap::run(const Context& ctx) const {
  Kv kv = ctx.kv();
  auto entry = kv.get(kState);
  if (!entry) return entry.status().code() == StatusCode::kNotFound ? Status::ok() : entry.status();
  auto state = parse(entry->value);
  if (!state) return state.status();
  // Sealed: nothing can be opened; look again later rather than use up the job's attempts.
  if (seal_.status().sealed) return scheduleRun(ctx, kSealedRetryMs);
  auto ring = Keyring::open(ctx, seal_, /*create=*/false);
  if (!ring) return ring.status();

  const bool in_kv = state->phase == "kv";
  const bool in_transit = state->phase == "transit";
  const std::string_view prefix = in_kv        ? kv::KvEngine::kStoragePrefix
                                  : in_transit ? transit::TransitEngine::kStoragePrefix
                                               : database::DatabaseEngine::kConfigPrefix;
  std::vector<std::string> keys;
  Status listed =
      kv.list(prefix, state->after, kPage, [&](std::string_view k, std::string_view, uint64_t) {
        keys.emplace_back(k);
        return true;
      });
  if (!listed) return listed;
  uint64_t done = 0;
  for (const std::string& key : keys) {
    auto n = in_kv        ? kv_.rewrapOlder(ctx, key, *ring)
             : in_transit ? transit_.rewrapOlder(ctx, key, *ring)
                          : database_.rewrapOlder(ctx, key, *ring);
    if (!n) return n.status();  // the job is retried; records done so far stay done
    done += *n;
  }
  if (done > 0 && rewrapped_metric_) (void)ctx.record(rewrapped_metric_, static_cast<double>(done));
  state->rewrapped += done;
  state->total += done;

  bool finished = false;
  if (keys.size() == kPage) {
    state->after = keys.back();
  } else if (in_kv) {
    state->phase = "transit";
    state->after.clear();
  } else if (in_transit) {
    state->phase = "database";
    state->after.clear();
  } else if (state->rewrapped > 0) {
    // A pass that re-wrapped something may have raced a write under an older version.
    *state = State{state->target, "kv", "", 0, state->total, state->pass + 1};
  } else {
    finished = true;
  }
  if (finished) {
    if (Status s = ring->retireBelow(ctx, seal_, state->target); !s) return s;
    ctx.info("secrets: KEK versions below " + std::to_string(state->target) +
             " retired after re-wrapping " + std::to_string(state->total) + " data keys");
    Status removed = kv.remove(kState, entry->version);
    return removed.code() == StatusCode::kConflict ? Status::ok() : removed;
  }
  // CONFLICT: a rotation started a new pass meanwhile; its own run carries on.
  auto saved = kv.put(kState, serialize(*state), entry->version);
  if (!saved) return saved.status().code() == StatusCode::kConflict ? Status::ok() : saved.status();
  return scheduleRun(ctx, 0);
}

Result<std::optional<Poco::JSON::Object::Ptr>> KekRewrap::progress(const Context& ctx) const {
  auto entry = ctx.kv().get(kState);
  if (!entry) {
    if (entry.status().code() == StatusCode::kNotFound) return std::optional<Object::Ptr>();
    return entry.status();
  }
  auto state = parse(entry->value);
  if (!state) return state.status();
  return std::optional<Object::Ptr>(
      Poco::JSON::Parser().parse(serialize(*state)).extract<Object::Ptr>());
}

}  // namespace trellis::secrets
