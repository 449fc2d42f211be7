#include "trellis/tenants/admission.h"

#include <openssl/rand.h>

#include <algorithm>
#include <array>
#include <atomic>
#include <functional>
#include <mutex>
#include <stdexcept>
#include <unordered_map>
#include <utility>

#include "rate_leaser.h"

namespace trellis::tenants {
namespace {

using Clock = Admission::Clock;

constexpr uint64_t kNanosPerSecond = 1'000'000'000;
// Tokens are kept in fixed point, one token = 1e9 units, so a rate of r tokens per second
// adds exactly r units per nanosecond: fractional refills are exact and never drift.
constexpr uint64_t kUnitsPerToken = 1'000'000'000;
// Caps rate and burst so that every product below stays far from 2^64; a billion requests
// per second per tenant is "unlimited" for any single host.
constexpr uint64_t kMaxTokens = 1'000'000'000;
// Retry-After for a tenant whose rate quota is 0: nothing will ever be admitted, but a
// client still deserves a back-off hint rather than 0 ("retry now").
constexpr uint64_t kNeverRefillsResetSeconds = 60;

uint64_t ceilDiv(uint64_t a, uint64_t b) {
  return a / b + (a % b != 0 ? 1 : 0);
}

// The rate quota in the bucket's units, derived from Quotas on every request so that a plan
// change applies to the next request without resetting the tenant's bucket.
struct RateConfig {
  uint64_t per_second = 0;      // tokens per second = units per nanosecond
  uint64_t capacity_units = 0;  // burst, in units

  static RateConfig from(const Quotas& q) {
    RateConfig c;
    c.per_second = std::min(*q.requests_per_second, kMaxTokens);
    uint64_t burst = std::min(q.burst.value_or(c.per_second), kMaxTokens);
    // A positive rate with burst 0 could never admit anything; the registry refuses
    // burst < rate, so this only guards against a hand-built Quotas.
    if (c.per_second > 0) burst = std::max<uint64_t>(burst, 1);
    if (c.per_second == 0) burst = 0;
    c.capacity_units = burst * kUnitsPerToken;
    return c;
  }
  uint64_t capacityTokens() const { return capacity_units / kUnitsPerToken; }
};

// A token bucket that knows nothing about where its tokens come from: refill() is the
// local-clock source (rate tokens per second, continuously). When several hosts share a
// quota, a lease source will instead deposit() the blocks of tokens PostgreSQL grants this
// host, and take()/report() stay as they are.
class TokenBucket {
 public:
  TokenBucket(const RateConfig& rate, Clock::time_point now)
      : units_(rate.capacity_units), refilled_at_(now) {}

  void refill(const RateConfig& rate, Clock::time_point now) {
    units_ = std::min(units_, rate.capacity_units);  // the burst may have shrunk
    // Threads read the clock before taking the shard lock, so `now` may be slightly older
    // than the last refill; time never runs backwards for the bucket.
    if (now <= refilled_at_) return;
    const auto elapsed_ns = static_cast<uint64_t>(
        std::chrono::duration_cast<std::chrono::nanoseconds>(now - refilled_at_).count());
    refilled_at_ = now;
    if (rate.per_second == 0) return;
    const uint64_t missing = rate.capacity_units - units_;
    // Compare before multiplying: a bucket idle for days would overflow elapsed * rate.
    if (elapsed_ns >= ceilDiv(missing, rate.per_second)) {
      units_ = rate.capacity_units;
    } else {
      deposit(elapsed_ns * rate.per_second, rate);
    }
  }

  void deposit(uint64_t units, const RateConfig& rate) {
    units_ = units >= rate.capacity_units - units_ ? rate.capacity_units : units_ + units;
  }

  bool take() {
    if (units_ < kUnitsPerToken) return false;
    units_ -= kUnitsPerToken;
    return true;
  }

  // RateLimit-* as the IETF draft means them: Reset is when the quota is available again —
  // the next whole token while the bucket is empty, otherwise when it is full again.
  RateLimitState report(const RateConfig& rate) const {
    RateLimitState s;
    s.limit = rate.capacityTokens();
    s.remaining = units_ / kUnitsPerToken;
    if (rate.per_second == 0) {
      s.reset_seconds = kNeverRefillsResetSeconds;
    } else if (s.remaining == 0) {
      const uint64_t ns = ceilDiv(kUnitsPerToken - units_, rate.per_second);
      s.reset_seconds = std::max<uint64_t>(1, ceilDiv(ns, kNanosPerSecond));
    } else {
      const uint64_t ns = ceilDiv(rate.capacity_units - units_, rate.per_second);
      s.reset_seconds = ceilDiv(ns, kNanosPerSecond);
    }
    return s;
  }

 private:
  uint64_t units_;
  Clock::time_point refilled_at_;
};

struct TenantState {
  // Tickets give their slot back from any thread without the shard lock; increments
  // happen only under the lock, so check-then-increment cannot overshoot the limit.
  std::atomic<uint64_t> in_flight{0};
  // Guarded by the shard mutex.
  uint64_t admitted = 0;
  uint64_t rejected = 0;
  std::optional<TokenBucket> bucket;  // created when the tenant first has a rate quota
  // With shared rates: the tenant's tokens leased to this host (created on first use).
  std::shared_ptr<internal::LeasedTokens> leased;
};

struct StringHash {
  using is_transparent = void;  // lets find() take a string_view without building a string
  size_t operator()(std::string_view s) const { return std::hash<std::string_view>{}(s); }
};

// Own cache line per shard: two cores serving different tenants must not false-share.
struct alignas(64) Shard {
  std::mutex mu;
  std::unordered_map<std::string, std::shared_ptr<TenantState>, StringHash, std::equal_to<>>
      tenants;
};

void releaseSlot(std::shared_ptr<void>& slot) {
  if (!slot) return;
  static_cast<TenantState*>(slot.get())->in_flight.fetch_sub(1, std::memory_order_relaxed);
  slot.reset();
}

enum class Verdict { kAdmitted, kBodyTooLarge, kTooManyConcurrent, kRateExceeded };

Rejection makeRejection(Verdict verdict, const Quotas& q, const RateLimitState* rate) {
  Rejection r;
  switch (verdict) {
    case Verdict::kBodyTooLarge:
      r.http_status = 413;
      r.quota = "max_body_bytes";
      r.limit = *q.max_body_bytes;
      break;
    case Verdict::kTooManyConcurrent:
      r.quota = "max_concurrent";
      r.limit = *q.max_concurrent;
      r.reset_seconds = 1;  // slots free as soon as requests finish; no schedule to report
      break;
    case Verdict::kRateExceeded:
      r.quota = "requests_per_second";
      r.limit = rate->limit;
      r.reset_seconds = rate->reset_seconds;
      break;
    case Verdict::kAdmitted: break;
  }
  r.decision_id = newDecisionId();
  return r;
}

struct Decision {
  Verdict verdict = Verdict::kAdmitted;
  std::shared_ptr<void> slot;  // the tenant's state, when admitted
  std::optional<RateLimitState> rate;
};

// Takes one rate token if `consume` (else only looks), from this host's lease when rates
// are shared and the lease store answers, else from the local bucket; `report` describes
// what is left. A request refused for another quota still gets the RateLimit-* headers.
bool takeRateToken(TenantState& state, std::string_view tenant, const RateConfig& rate,
                   Clock::time_point now, internal::RateLeaser* leaser, bool consume,
                   std::optional<RateLimitState>& report) {
  if (leaser && rate.per_second > 0) {
    if (!state.leased) state.leased = std::make_shared<internal::LeasedTokens>(std::string(tenant));
    if (leaser->healthy()) {
      bool taken =
          consume && leaser->take(state.leased, rate.per_second, rate.capacityTokens(), now);
      const int64_t balance = state.leased->balance.load(std::memory_order_relaxed);
      report = RateLimitState{rate.capacityTokens(),
                              static_cast<uint64_t>(std::max<int64_t>(balance, 0)), 1};
      return taken;
    }
    leaser->requestLease(state.leased, rate.per_second, rate.capacityTokens(), now);
  }
  if (state.bucket) {
    state.bucket->refill(rate, now);
  } else {
    state.bucket.emplace(rate, now);
  }
  bool taken = consume && state.bucket->take();
  report = state.bucket->report(rate);
  return taken;
}

// The part of admit() that runs under the shard lock.
Decision decide(Shard& shard, std::string_view tenant, const Quotas& quotas, uint64_t body_bytes,
                Clock::time_point now, internal::RateLeaser* leaser) {
  Decision d;
  std::lock_guard lock(shard.mu);
  auto it = shard.tenants.find(tenant);
  if (it == shard.tenants.end()) {
    it = shard.tenants.emplace(std::string(tenant), std::make_shared<TenantState>()).first;
  }
  const std::shared_ptr<TenantState>& state = it->second;

  if (quotas.max_body_bytes && body_bytes > *quotas.max_body_bytes) {
    d.verdict = Verdict::kBodyTooLarge;
  } else if (quotas.max_concurrent &&
             state->in_flight.load(std::memory_order_relaxed) >= *quotas.max_concurrent) {
    d.verdict = Verdict::kTooManyConcurrent;
  }
  if (quotas.requests_per_second) {
    const bool consume = d.verdict == Verdict::kAdmitted;
    const RateConfig rate = RateConfig::from(quotas);
    if (!takeRateToken(*state, tenant, rate, now, leaser, consume, d.rate) && consume) {
      d.verdict = Verdict::kRateExceeded;
    }
  }

  if (d.verdict == Verdict::kAdmitted) {
    ++state->admitted;
    state->in_flight.fetch_add(1, std::memory_order_relaxed);
    d.slot = state;  // shares ownership: a forget() meanwhile cannot free the slot
  } else {
    ++state->rejected;
  }
  return d;
}

}  // namespace

Ticket::Ticket(Ticket&& other) noexcept
    : slot_(std::move(other.slot_)),
      rejection_(std::exchange(other.rejection_, std::nullopt)),
      rate_(std::exchange(other.rate_, std::nullopt)) {}

Ticket& Ticket::operator=(Ticket&& other) noexcept {
  if (this != &other) {
    releaseSlot(slot_);
    slot_ = std::move(other.slot_);
    rejection_ = std::exchange(other.rejection_, std::nullopt);
    rate_ = std::exchange(other.rate_, std::nullopt);
  }
  return *this;
}

Ticket::~Ticket() {
  releaseSlot(slot_);
}

struct Admission::Impl {
  static constexpr size_t kShards = 64;
  std::array<Shard, kShards> shards;
  // Set once by shareRates() before traffic; destroyed (thread stopped) before the shards.
  std::unique_ptr<internal::RateLeaser> leaser;

  Shard& shardFor(std::string_view tenant) { return shards[StringHash{}(tenant) % kShards]; }
};

Admission::Admission() : impl_(std::make_unique<Impl>()) {}
Admission::~Admission() = default;

Ticket Admission::admit(std::string_view tenant, const Quotas& quotas, uint64_t body_bytes) {
  return admit(tenant, quotas, body_bytes,
               quotas.requests_per_second ? Clock::now() : Clock::time_point{});
}

Ticket Admission::admit(std::string_view tenant, const Quotas& quotas, uint64_t body_bytes,
                        Clock::time_point now) {
  Ticket ticket;
  Decision d =
      decide(impl_->shardFor(tenant), tenant, quotas, body_bytes, now, impl_->leaser.get());
  ticket.slot_ = std::move(d.slot);
  ticket.rate_ = d.rate;
  // Formatting the rejection allocates; it happens outside the lock.
  if (d.verdict != Verdict::kAdmitted) {
    ticket.rejection_ = makeRejection(d.verdict, quotas, d.rate ? &*d.rate : nullptr);
  }
  return ticket;
}

Admission::Usage Admission::usage(std::string_view tenant) const {
  Shard& shard = impl_->shardFor(tenant);
  std::lock_guard lock(shard.mu);
  auto it = shard.tenants.find(tenant);
  if (it == shard.tenants.end()) return {};
  const TenantState& s = *it->second;
  return {s.in_flight.load(std::memory_order_relaxed), s.admitted, s.rejected};
}

std::vector<std::pair<std::string, Admission::Usage>> Admission::allUsage() const {
  std::vector<std::pair<std::string, Usage>> out;
  for (Shard& shard : impl_->shards) {
    std::lock_guard lock(shard.mu);
    for (const auto& [tenant, state] : shard.tenants) {
      out.push_back(
          {tenant,
           {state->in_flight.load(std::memory_order_relaxed), state->admitted, state->rejected}});
    }
  }
  return out;
}

void Admission::shareRates(std::shared_ptr<RateLeaseStore> leases,
                           std::function<void(const Status&)> on_health) {
  impl_->leaser = std::make_unique<internal::RateLeaser>(std::move(leases), std::move(on_health));
}

void Admission::forget(std::string_view tenant) {
  Shard& shard = impl_->shardFor(tenant);
  std::shared_ptr<TenantState> dropped;  // freed after unlocking
  std::lock_guard lock(shard.mu);
  auto it = shard.tenants.find(tenant);
  if (it == shard.tenants.end()) return;
  dropped = std::move(it->second);
  shard.tenants.erase(it);
}

std::string randomHexId(size_t bytes) {
  // One RAND_bytes call serves many ids; OpenSSL's CSPRNG, so an id says nothing of the ids
  // made before it. Fails only without an entropy source, where no such id can be made.
  thread_local std::array<unsigned char, 512> pool;
  thread_local size_t used = pool.size();
  if (bytes > pool.size()) throw std::invalid_argument("randomHexId: at most 512 bytes");
  if (pool.size() - used < bytes) {
    if (RAND_bytes(pool.data(), static_cast<int>(pool.size())) != 1) {
      throw std::runtime_error("no randomness for an id (OpenSSL RAND_bytes failed)");
    }
    used = 0;
  }
  static constexpr char kHex[] = "0123456789abcdef";
  std::string id(bytes * 2, '0');
  for (size_t i = 0; i < bytes; ++i) {
    unsigned char b = pool[used + i];
    id[2 * i] = kHex[b >> 4];
    id[2 * i + 1] = kHex[b & 15];
  }
  used += bytes;
  return id;
}

// 64 random bits: a counter, even behind a public bijection, would let a tenant tell how
// many decisions were made for others between two of its own.
std::string newDecisionId() {
  return randomHexId(8);
}

}  // namespace trellis::tenants
