// The host side of shared rate quotas: admits from tokens leased to this host and keeps
// each busy tenant's lease topped up from a background thread, so the request path only
// touches atomics. See rate_leases.h for the protocol and the overshoot bound.
#pragma once

#include <atomic>
#include <chrono>
#include <condition_variable>
#include <cstdint>
#include <functional>
#include <map>
#include <memory>
#include <mutex>
#include <string>
#include <thread>

#include "trellis/status.hpp"
#include "trellis/tenants/rate_leases.h"

namespace trellis::tenants::internal {

// A tenant's tokens on this host. The balance goes negative while the host admits on
// credit; leases top it up, give-backs drain it.
struct LeasedTokens {
  explicit LeasedTokens(std::string id) : tenant(std::move(id)) {}
  const std::string tenant;
  std::atomic<int64_t> balance{0};
  std::atomic<uint64_t> rate{0};
  std::atomic<uint64_t> burst{0};
  std::atomic<int64_t> last_use_ns{0};  // steady clock
  std::atomic<bool> wanted{false};      // queued for the leaser
  // Requests refused since the last lease: demand the next lease also asks for, so clients
  // that come back after a refusal find tokens waiting here rather than in the database.
  std::atomic<uint64_t> refused{0};
};

class RateLeaser {
 public:
  using Clock = std::chrono::steady_clock;
  RateLeaser(std::shared_ptr<RateLeaseStore> store, std::function<void(const Status&)> on_health);
  ~RateLeaser();
  RateLeaser(const RateLeaser&) = delete;
  RateLeaser& operator=(const RateLeaser&) = delete;

  // False while the store is unreachable: admission then uses the local bucket.
  bool healthy() const { return healthy_.load(std::memory_order_relaxed); }

  // Takes one token (or one of credit) for the tenant; false when both are used up. Asks
  // the leaser for more once the balance falls to half a block.
  bool take(const std::shared_ptr<LeasedTokens>& tokens, uint64_t rate, uint64_t burst,
            Clock::time_point now);
  // Queues the tenant for a lease without taking a token: while unhealthy, this keeps
  // probing the store with the tenants in use so health comes back on its own.
  void requestLease(const std::shared_ptr<LeasedTokens>& tokens, uint64_t rate, uint64_t burst,
                    Clock::time_point now);

 private:
  void want(const std::shared_ptr<LeasedTokens>& tokens);
  void run();
  // One pass over the tenants this host serves: lease for the low, give back for the idle.
  void serviceAll();
  void reportHealth(const Status& s);

  const std::shared_ptr<RateLeaseStore> store_;
  const std::function<void(const Status&)> on_health_;
  std::atomic<bool> healthy_{true};
  std::mutex mu_;  // guards active_, wake_, stop_
  std::condition_variable cv_;
  std::map<std::string, std::shared_ptr<LeasedTokens>> active_;
  bool wake_ = false;
  bool stop_ = false;
  std::thread thread_;  // last: starts after everything it uses
};

}  // namespace trellis::tenants::internal
