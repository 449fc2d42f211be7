#include "rate_leaser.h"

#include <algorithm>
#include <vector>

namespace trellis::tenants::internal {
namespace {

using namespace std::chrono_literals;

// How often the leaser retries a tenant whose shared bucket was empty, and how long a
// tenant must be quiet on this host before its unused tokens go back: longer than the
// data plane holds a refused request (1 s), so tokens leased for clients coming back from
// a refusal are still here when they do.
constexpr auto kRetryInterval = 50ms;
constexpr auto kIdleBeforeGiveBack = 2s;

int64_t toNs(RateLeaser::Clock::time_point t) {
  return std::chrono::duration_cast<std::chrono::nanoseconds>(t.time_since_epoch()).count();
}

}  // namespace

RateLeaser::RateLeaser(std::shared_ptr<RateLeaseStore> store,
                       std::function<void(const Status&)> on_health)
    : store_(std::move(store)), on_health_(std::move(on_health)), thread_([this] { run(); }) {}

RateLeaser::~RateLeaser() {
  {
    std::lock_guard lock(mu_);
    stop_ = true;
  }
  cv_.notify_all();
  thread_.join();
}

void RateLeaser::requestLease(const std::shared_ptr<LeasedTokens>& tokens, uint64_t rate,
                              uint64_t burst, Clock::time_point now) {
  tokens->rate.store(rate, std::memory_order_relaxed);
  tokens->burst.store(burst, std::memory_order_relaxed);
  tokens->last_use_ns.store(toNs(now), std::memory_order_relaxed);
  want(tokens);
}

bool RateLeaser::take(const std::shared_ptr<LeasedTokens>& tokens, uint64_t rate, uint64_t burst,
                      Clock::time_point now) {
  tokens->rate.store(rate, std::memory_order_relaxed);
  tokens->burst.store(burst, std::memory_order_relaxed);
  tokens->last_use_ns.store(toNs(now), std::memory_order_relaxed);
  const auto block = static_cast<int64_t>(leaseBlock(rate, burst));
  const int64_t credit = static_cast<int64_t>(leaseCredit(rate, burst));
  int64_t balance = tokens->balance.load(std::memory_order_relaxed);
  do {
    if (balance <= -credit) {
      tokens->refused.fetch_add(1, std::memory_order_relaxed);
      want(tokens);
      return false;
    }
  } while (!tokens->balance.compare_exchange_weak(balance, balance - 1, std::memory_order_relaxed));
  if (balance - 1 <= block / 2) want(tokens);
  return true;
}

void RateLeaser::want(const std::shared_ptr<LeasedTokens>& tokens) {
  if (tokens->wanted.exchange(true, std::memory_order_relaxed)) return;  // already queued
  {
    std::lock_guard lock(mu_);
    active_[tokens->tenant] = tokens;
    wake_ = true;
  }
  cv_.notify_one();
}

void RateLeaser::run() {
  std::unique_lock lock(mu_);
  while (!stop_) {
    cv_.wait_for(lock, kRetryInterval, [this] { return stop_ || wake_; });
    if (stop_) break;
    wake_ = false;
    lock.unlock();
    serviceAll();
    lock.lock();
  }
}

void RateLeaser::serviceAll() {
  std::vector<std::shared_ptr<LeasedTokens>> tenants;
  {
    std::lock_guard lock(mu_);
    for (const auto& [id, tokens] : active_) tenants.push_back(tokens);
  }
  const int64_t now = toNs(Clock::now());
  for (const auto& t : tenants) {
    const uint64_t rate = t->rate.load(std::memory_order_relaxed);
    const uint64_t burst = t->burst.load(std::memory_order_relaxed);
    const auto block = static_cast<int64_t>(leaseBlock(rate, burst));
    const int64_t balance = t->balance.load(std::memory_order_relaxed);
    const bool idle = now - t->last_use_ns.load(std::memory_order_relaxed) >
                      std::chrono::nanoseconds(kIdleBeforeGiveBack).count();
    const bool refusals = t->refused.load(std::memory_order_relaxed) > 0;
    if (!idle && t->wanted.load(std::memory_order_relaxed) && (balance < block || refusals)) {
      // A block, plus the credit to repay, plus what was refused meanwhile (at most a burst).
      const uint64_t demand = std::min(t->refused.exchange(0, std::memory_order_relaxed), burst);
      const uint64_t want = static_cast<uint64_t>(std::max<int64_t>(block - balance, 0)) + demand;
      auto granted = store_->lease(t->tenant, rate, burst, want);
      if (!granted) {
        t->refused.fetch_add(demand, std::memory_order_relaxed);
        reportHealth(granted.status());
        continue;
      }
      reportHealth(Status::ok());
      t->balance.fetch_add(static_cast<int64_t>(*granted), std::memory_order_relaxed);
      if (*granted < want) {
        // The shared bucket ran short: what is still missing is asked for again at the next
        // tick, so tokens gather here while refused clients wait to retry.
        t->refused.fetch_add(std::min(demand, want - *granted), std::memory_order_relaxed);
      } else {
        t->wanted.store(false, std::memory_order_relaxed);
      }
    } else if (idle) {
      if (balance > 0) {
        Status s = store_->giveBack(t->tenant, rate, burst, static_cast<uint64_t>(balance));
        reportHealth(s);
        if (!s) continue;
        t->balance.fetch_sub(balance, std::memory_order_relaxed);
      }
      // Quiet and square: stop tracking until its next request. A debt (negative balance)
      // stays on the tokens object and is repaid by the next lease.
      std::lock_guard lock(mu_);
      t->wanted.store(false, std::memory_order_relaxed);
      active_.erase(t->tenant);
    }
  }
}

void RateLeaser::reportHealth(const Status& s) {
  if (healthy_.exchange(s.isOk(), std::memory_order_relaxed) != s.isOk() && on_health_) {
    on_health_(s);
  }
}

}  // namespace trellis::tenants::internal
