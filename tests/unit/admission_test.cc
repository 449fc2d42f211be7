#include "trellis/tenants/admission.h"

#include <gtest/gtest.h>

#include <algorithm>
#include <atomic>
#include <chrono>
#include <cstdlib>
#include <new>
#include <set>
#include <string>
#include <thread>
#include <utility>
#include <vector>

// Counts heap allocations so a test can prove the admit path allocates nothing.
namespace {
std::atomic<size_t> g_allocations{0};
}  // namespace

void* operator new(std::size_t n) {
  g_allocations.fetch_add(1, std::memory_order_relaxed);
  if (void* p = std::malloc(n == 0 ? 1 : n)) return p;  // NOLINT(cppcoreguidelines-owning-memory)
  throw std::bad_alloc();
}
void operator delete(void* p) noexcept {
  std::free(p);  // NOLINT(cppcoreguidelines-owning-memory)
}
void operator delete(void* p, std::size_t) noexcept {
  std::free(p);  // NOLINT(cppcoreguidelines-owning-memory)
}

namespace trellis::tenants {
namespace {

using std::chrono::milliseconds;
using std::chrono::seconds;

const Admission::Clock::time_point kT0 = Admission::Clock::time_point{} + std::chrono::hours(1);

Quotas rate(uint64_t per_second, std::optional<uint64_t> burst = std::nullopt) {
  Quotas q;
  q.requests_per_second = per_second;
  q.burst = burst;
  return q;
}

Quotas concurrent(uint64_t n) {
  Quotas q;
  q.max_concurrent = n;
  return q;
}

bool isHex16(const std::string& s) {
  return s.size() == 16 && std::all_of(s.begin(), s.end(), [](char c) {
           return (c >= '0' && c <= '9') || (c >= 'a' && c <= 'f');
         });
}

TEST(AdmissionTest, UnlimitedTenantIsAlwaysAdmittedAndCounted) {
  Admission a;
  std::vector<Ticket> held;
  for (int i = 0; i < 1000; ++i) {
    Ticket t = a.admit("free-for-all", Quotas{}, 1u << 30, kT0);
    EXPECT_TRUE(t.admitted());
    EXPECT_FALSE(t.rateLimit().has_value());
    held.push_back(std::move(t));
  }
  auto u = a.usage("free-for-all");
  EXPECT_EQ(u.in_flight, 1000u);
  EXPECT_EQ(u.admitted, 1000u);
  EXPECT_EQ(u.rejected, 0u);
  held.clear();
  EXPECT_EQ(a.usage("free-for-all").in_flight, 0u);
}

TEST(AdmissionTest, BodyOverLimitIsRejectedWith413) {
  Admission a;
  Quotas q;
  q.max_body_bytes = 1024;
  EXPECT_TRUE(a.admit("acme", q, 1024, kT0).admitted());

  Ticket t = a.admit("acme", q, 1025, kT0);
  ASSERT_FALSE(t.admitted());
  const Rejection& r = t.rejection();
  EXPECT_EQ(r.http_status, 413u);
  EXPECT_EQ(r.quota, "max_body_bytes");
  EXPECT_EQ(r.limit, 1024u);
  EXPECT_EQ(r.remaining, 0u);
  EXPECT_EQ(r.reset_seconds, 0u);
  EXPECT_TRUE(isHex16(r.decision_id)) << r.decision_id;
}

TEST(AdmissionTest, BodyIsCheckedBeforeConcurrencyAndRate) {
  Admission a;
  Quotas q = rate(1);
  q.max_concurrent = 1;
  q.max_body_bytes = 10;
  Ticket held = a.admit("acme", q, 0, kT0);  // takes the slot and the only token
  ASSERT_TRUE(held.admitted());
  Ticket t = a.admit("acme", q, 11, kT0);
  ASSERT_FALSE(t.admitted());
  EXPECT_EQ(t.rejection().quota, "max_body_bytes");
  Ticket c = a.admit("acme", q, 0, kT0);
  ASSERT_FALSE(c.admitted());
  EXPECT_EQ(c.rejection().quota, "max_concurrent");
}

TEST(AdmissionTest, ConcurrencyRejectsBeyondLimitUntilASlotIsReleased) {
  Admission a;
  const Quotas q = concurrent(3);
  std::vector<Ticket> held;
  for (int i = 0; i < 3; ++i) {
    held.push_back(a.admit("acme", q, 0, kT0));
    ASSERT_TRUE(held.back().admitted());
  }
  Ticket t = a.admit("acme", q, 0, kT0);
  ASSERT_FALSE(t.admitted());
  EXPECT_EQ(t.rejection().http_status, 429u);
  EXPECT_EQ(t.rejection().quota, "max_concurrent");
  EXPECT_EQ(t.rejection().limit, 3u);
  EXPECT_EQ(t.rejection().remaining, 0u);
  EXPECT_EQ(t.rejection().reset_seconds, 1u);
  EXPECT_FALSE(t.rateLimit().has_value());

  held.pop_back();
  EXPECT_TRUE(a.admit("acme", q, 0, kT0).admitted());
  EXPECT_EQ(a.usage("acme").in_flight, 2u);
}

TEST(AdmissionTest, MovedTicketsReleaseTheirSlotExactlyOnce) {
  Admission a;
  const Quotas q = concurrent(2);
  {
    Ticket first = a.admit("acme", q, 0, kT0);
    Ticket moved(std::move(first));
    EXPECT_EQ(a.usage("acme").in_flight, 1u);

    Ticket second = a.admit("acme", q, 0, kT0);
    EXPECT_EQ(a.usage("acme").in_flight, 2u);
    // Assigning over a held ticket gives its slot back and takes the other's.
    second = std::move(moved);
    EXPECT_EQ(a.usage("acme").in_flight, 1u);

    std::vector<Ticket> v;
    v.push_back(std::move(second));
    v.reserve(100);  // relocates the ticket
    EXPECT_EQ(a.usage("acme").in_flight, 1u);
    Ticket empty;
    empty = std::move(v.front());
    v.clear();
    EXPECT_EQ(a.usage("acme").in_flight, 1u);
  }
  EXPECT_EQ(a.usage("acme").in_flight, 0u);
  EXPECT_TRUE(a.admit("acme", q, 0, kT0).admitted());
}

TEST(AdmissionTest, RateAdmitsTheBurstAtOnceThenRejects) {
  Admission a;
  const Quotas q = rate(2, 5);
  for (uint64_t i = 0; i < 5; ++i) {
    Ticket t = a.admit("acme", q, 0, kT0);
    ASSERT_TRUE(t.admitted()) << i;
    ASSERT_TRUE(t.rateLimit());
    EXPECT_EQ(t.rateLimit()->limit, 5u);
    EXPECT_EQ(t.rateLimit()->remaining, 4 - i);
  }
  Ticket t = a.admit("acme", q, 0, kT0);
  ASSERT_FALSE(t.admitted());
  const Rejection& r = t.rejection();
  EXPECT_EQ(r.http_status, 429u);
  EXPECT_EQ(r.quota, "requests_per_second");
  EXPECT_EQ(r.limit, 5u);
  EXPECT_EQ(r.remaining, 0u);
  EXPECT_EQ(r.reset_seconds, 1u);  // the next token comes in 0.5 s, rounded up
  ASSERT_TRUE(t.rateLimit());
  EXPECT_EQ(t.rateLimit()->remaining, 0u);
  EXPECT_EQ(t.rateLimit()->reset_seconds, 1u);
}

TEST(AdmissionTest, RateLimitHeadersOnAdmittedRequestsCountUntilFull) {
  Admission a;
  const Quotas q = rate(2, 10);
  Ticket t = a.admit("acme", q, 0, kT0);
  ASSERT_TRUE(t.rateLimit());
  EXPECT_EQ(t.rateLimit()->remaining, 9u);
  EXPECT_EQ(t.rateLimit()->reset_seconds, 1u);  // one token missing at 2/s: 0.5 s
  for (int i = 0; i < 4; ++i) t = a.admit("acme", q, 0, kT0);
  EXPECT_EQ(t.rateLimit()->remaining, 5u);
  EXPECT_EQ(t.rateLimit()->reset_seconds, 3u);  // five missing at 2/s: 2.5 s
  for (int i = 0; i < 5; ++i) t = a.admit("acme", q, 0, kT0);
  EXPECT_EQ(t.rateLimit()->remaining, 0u);
  EXPECT_EQ(t.rateLimit()->reset_seconds, 1u);  // empty: until the next token, not until full
}

TEST(AdmissionTest, RateRefillsContinuouslyIncludingFractions) {
  Admission a;
  const Quotas q = rate(10);
  for (int i = 0; i < 10; ++i) ASSERT_TRUE(a.admit("acme", q, 0, kT0).admitted());
  EXPECT_FALSE(a.admit("acme", q, 0, kT0).admitted());

  // Half a token is not a token ...
  EXPECT_FALSE(a.admit("acme", q, 0, kT0 + milliseconds(50)).admitted());
  // ... but two halves are.
  EXPECT_TRUE(a.admit("acme", q, 0, kT0 + milliseconds(100)).admitted());
  EXPECT_FALSE(a.admit("acme", q, 0, kT0 + milliseconds(100)).admitted());

  // 0.35 s later: 3.5 tokens.
  for (int i = 0; i < 3; ++i) {
    EXPECT_TRUE(a.admit("acme", q, 0, kT0 + milliseconds(450)).admitted()) << i;
  }
  EXPECT_FALSE(a.admit("acme", q, 0, kT0 + milliseconds(450)).admitted());
  // The leftover half token counts toward the next one.
  EXPECT_TRUE(a.admit("acme", q, 0, kT0 + milliseconds(500)).admitted());

  // Idle for a long time: the bucket is full, not overfull.
  const auto later = kT0 + std::chrono::hours(24 * 365);
  for (int i = 0; i < 10; ++i) ASSERT_TRUE(a.admit("acme", q, 0, later).admitted());
  EXPECT_FALSE(a.admit("acme", q, 0, later).admitted());
}

TEST(AdmissionTest, ClockReadingsOutOfOrderAddNoTokens) {
  Admission a;
  const Quotas q = rate(1);
  ASSERT_TRUE(a.admit("acme", q, 0, kT0 + seconds(10)).admitted());
  EXPECT_FALSE(a.admit("acme", q, 0, kT0).admitted());
  EXPECT_FALSE(a.admit("acme", q, 0, kT0 + seconds(10)).admitted());
  EXPECT_TRUE(a.admit("acme", q, 0, kT0 + seconds(11)).admitted());
}

TEST(AdmissionTest, BurstDefaultsToRate) {
  Admission a;
  const Quotas q = rate(7);
  Ticket t = a.admit("acme", q, 0, kT0);
  ASSERT_TRUE(t.rateLimit());
  EXPECT_EQ(t.rateLimit()->limit, 7u);
  for (int i = 0; i < 6; ++i) ASSERT_TRUE(a.admit("acme", q, 0, kT0).admitted());
  EXPECT_FALSE(a.admit("acme", q, 0, kT0).admitted());
}

TEST(AdmissionTest, ShrinkingTheBurstTakesEffectOnTheNextRequest) {
  Admission a;
  ASSERT_TRUE(a.admit("acme", rate(10, 100), 0, kT0).admitted());
  Ticket t = a.admit("acme", rate(10, 3), 0, kT0);
  ASSERT_TRUE(t.admitted());
  EXPECT_EQ(t.rateLimit()->limit, 3u);
  EXPECT_EQ(t.rateLimit()->remaining, 2u);
}

TEST(AdmissionTest, RateZeroAdmitsNothing) {
  Admission a;
  Ticket t = a.admit("acme", rate(0), 0, kT0);
  ASSERT_FALSE(t.admitted());
  EXPECT_EQ(t.rejection().quota, "requests_per_second");
  EXPECT_EQ(t.rejection().limit, 0u);
  EXPECT_GE(t.rejection().reset_seconds, 1u);
  EXPECT_FALSE(a.admit("acme", rate(0), 0, kT0 + std::chrono::hours(1)).admitted());
}

TEST(AdmissionTest, RejectionConsumesNothing) {
  Admission a;
  Quotas q = rate(1, 2);
  q.max_concurrent = 1;
  q.max_body_bytes = 100;

  // A 413 takes neither a token nor a slot.
  EXPECT_FALSE(a.admit("acme", q, 101, kT0).admitted());
  Ticket held = a.admit("acme", q, 0, kT0);
  ASSERT_TRUE(held.admitted());
  EXPECT_EQ(held.rateLimit()->remaining, 1u);

  // A concurrency rejection takes no token.
  for (int i = 0; i < 5; ++i) {
    Ticket t = a.admit("acme", q, 0, kT0);
    ASSERT_FALSE(t.admitted());
    EXPECT_EQ(t.rejection().quota, "max_concurrent");
    ASSERT_TRUE(t.rateLimit());
    EXPECT_EQ(t.rateLimit()->remaining, 1u);
  }
  held = Ticket();
  Ticket second = a.admit("acme", q, 0, kT0);
  ASSERT_TRUE(second.admitted());
  second = Ticket();

  // A rate rejection takes no slot: once a token is back, the request gets in.
  for (int i = 0; i < 5; ++i) {
    Ticket t = a.admit("acme", q, 0, kT0);
    ASSERT_FALSE(t.admitted());
    EXPECT_EQ(t.rejection().quota, "requests_per_second");
  }
  EXPECT_EQ(a.usage("acme").in_flight, 0u);
  EXPECT_TRUE(a.admit("acme", q, 0, kT0 + seconds(1)).admitted());
}

TEST(AdmissionTest, TenantsAreIndependent) {
  Admission a;
  const Quotas q = rate(1);
  Quotas c = concurrent(1);
  ASSERT_TRUE(a.admit("acme", q, 0, kT0).admitted());
  EXPECT_FALSE(a.admit("acme", q, 0, kT0).admitted());
  EXPECT_TRUE(a.admit("globex", q, 0, kT0).admitted());

  Ticket held = a.admit("acme-c", c, 0, kT0);
  ASSERT_TRUE(held.admitted());
  EXPECT_TRUE(a.admit("globex-c", c, 0, kT0).admitted());
  EXPECT_EQ(a.usage("globex").admitted, 1u);
  EXPECT_EQ(a.usage("globex").rejected, 0u);
}

TEST(AdmissionTest, ForgetDropsStateAndALaterAdmitStartsAfresh) {
  Admission a;
  Quotas q = rate(1);
  q.max_concurrent = 1;
  Ticket held = a.admit("acme", q, 0, kT0);
  ASSERT_TRUE(held.admitted());
  EXPECT_FALSE(a.admit("acme", q, 0, kT0).admitted());

  a.forget("acme");
  EXPECT_EQ(a.usage("acme").admitted, 0u);
  EXPECT_EQ(a.usage("acme").rejected, 0u);
  a.forget("acme");  // twice, or for an unknown tenant, is harmless
  a.forget("nobody");

  Ticket fresh = a.admit("acme", q, 0, kT0);
  EXPECT_TRUE(fresh.admitted());
  EXPECT_EQ(a.usage("acme").in_flight, 1u);
  // The ticket from before forget() releases into the old state, not the new one.
  held = Ticket();
  EXPECT_EQ(a.usage("acme").in_flight, 1u);
}

TEST(AdmissionTest, UsageCountsAdmittedRejectedAndInFlight) {
  Admission a;
  EXPECT_EQ(a.usage("acme").admitted, 0u);
  Quotas q = concurrent(2);
  q.max_body_bytes = 10;
  Ticket t1 = a.admit("acme", q, 0, kT0);
  Ticket t2 = a.admit("acme", q, 0, kT0);
  (void)a.admit("acme", q, 0, kT0);
  (void)a.admit("acme", q, 11, kT0);
  auto u = a.usage("acme");
  EXPECT_EQ(u.in_flight, 2u);
  EXPECT_EQ(u.admitted, 2u);
  EXPECT_EQ(u.rejected, 2u);
  t1 = Ticket();
  u = a.usage("acme");
  EXPECT_EQ(u.in_flight, 1u);
  EXPECT_EQ(u.admitted, 2u);
}

TEST(AdmissionTest, AdmitWithoutATimeReadsTheClockForRateQuotas) {
  Admission a;
  Quotas q = rate(1000, 5);
  q.max_concurrent = 1;
  Ticket t = a.admit("acme", q, 0);
  ASSERT_TRUE(t.admitted());
  ASSERT_TRUE(t.rateLimit());
  EXPECT_EQ(t.rateLimit()->limit, 5u);
  Ticket c = a.admit("acme", q, 0);
  ASSERT_FALSE(c.admitted());
  EXPECT_EQ(c.rejection().quota, "max_concurrent");
  EXPECT_TRUE(a.admit("free", Quotas{}, 0).admitted());
}

TEST(AdmissionTest, AdmittedRequestsDoNotAllocate) {
  Admission a;
  Quotas limited = rate(1000, 1000);
  limited.max_concurrent = 100;
  limited.max_body_bytes = 1 << 20;
  // The first request of each tenant creates its state.
  ASSERT_TRUE(a.admit("acme", limited, 0, kT0).admitted());
  ASSERT_TRUE(a.admit("unlimited", Quotas{}, 0, kT0).admitted());

  const size_t before = g_allocations.load();
  auto now = kT0;
  for (int i = 0; i < 1000; ++i) {
    now += milliseconds(1);
    Ticket t = a.admit("acme", limited, 100, now);
    Ticket u = a.admit("unlimited", Quotas{}, 100, now);
    if (!t.admitted() || !u.admitted()) FAIL() << "request " << i << " rejected";
  }
  EXPECT_EQ(g_allocations.load() - before, 0u);

  // The counter is live: a rejection formats strings.
  const size_t before_rejection = g_allocations.load();
  EXPECT_FALSE(a.admit("acme", limited, 2 << 20, now).admitted());
  EXPECT_GT(g_allocations.load() - before_rejection, 0u);
}

TEST(AdmissionTest, DecisionIdsAreUniqueAcrossThreads) {
  constexpr int kThreads = 8;
  constexpr int kPerThread = 20000;
  std::vector<std::vector<std::string>> ids(kThreads);
  std::vector<std::thread> threads;
  threads.reserve(kThreads);
  for (int i = 0; i < kThreads; ++i) {
    threads.emplace_back([&ids, i] {
      ids[i].reserve(kPerThread);
      for (int j = 0; j < kPerThread; ++j) ids[i].push_back(newDecisionId());
    });
  }
  for (auto& t : threads) t.join();
  std::set<std::string> all;
  for (const auto& v : ids) {
    for (const auto& id : v) {
      ASSERT_TRUE(isHex16(id)) << id;
      all.insert(id);
    }
  }
  EXPECT_EQ(all.size(), size_t{kThreads} * kPerThread);
}

// Decision ids reach tenants in 429 bodies. They used to be a counter run through
// splitmix64's finalizer, a public bijection: undoing it on two of a tenant's own ids told how
// many decisions were made for others in between. Random ids tell nothing.
TEST(AdmissionTest, DecisionIdsAreNotACounterBehindAPublicBijection) {
  auto unmix = [](uint64_t x) {  // the inverse of splitmix64's finalizer
    x ^= (x >> 31) ^ (x >> 62);
    x *= 0x319642b2d24d8ec3ULL;
    x ^= (x >> 27) ^ (x >> 54);
    x *= 0x96de1b173f119089ULL;
    x ^= (x >> 30) ^ (x >> 60);
    return x;
  };
  uint64_t previous = unmix(std::stoull(newDecisionId(), nullptr, 16));
  int consecutive = 0;
  for (int i = 0; i < 100; ++i) {
    uint64_t current = unmix(std::stoull(newDecisionId(), nullptr, 16));
    consecutive += current - previous == 1;
    previous = current;
  }
  EXPECT_EQ(consecutive, 0);
}

TEST(AdmissionTest, ConcurrentAdmitsKeepCountsConsistent) {
  constexpr int kThreads = 8;
  constexpr int kPerThread = 20000;
  constexpr uint64_t kMaxConcurrent = 3;
  Admission a;
  Quotas shared = rate(1000, 50);
  shared.max_concurrent = kMaxConcurrent;
  const Quotas own = concurrent(1);

  std::atomic<uint64_t> holding{0};
  std::atomic<uint64_t> worst{0};
  std::vector<std::thread> threads;
  threads.reserve(kThreads);
  for (int i = 0; i < kThreads; ++i) {
    threads.emplace_back([&, i] {
      const std::string mine = "tenant-" + std::to_string(i);
      auto now = kT0;
      for (int j = 0; j < kPerThread; ++j) {
        now += std::chrono::microseconds(100);
        Ticket t = a.admit("shared", shared, 0, now);
        if (t.admitted()) {
          // Counted after admission and before release, so never above the real in-flight.
          const uint64_t h = holding.fetch_add(1) + 1;
          uint64_t w = worst.load();
          while (h > w && !worst.compare_exchange_weak(w, h)) {
          }
          Ticket moved = std::move(t);
          holding.fetch_sub(1);
        }
        Ticket m = a.admit(mine, own, 0, now);
        EXPECT_TRUE(m.admitted());
      }
    });
  }
  for (auto& t : threads) t.join();

  const auto u = a.usage("shared");
  EXPECT_EQ(u.in_flight, 0u);
  EXPECT_EQ(u.admitted + u.rejected, uint64_t{kThreads} * kPerThread);
  EXPECT_GT(u.admitted, 0u);
  EXPECT_LE(worst.load(), kMaxConcurrent);
  for (int i = 0; i < kThreads; ++i) {
    const auto mine = a.usage("tenant-" + std::to_string(i));
    EXPECT_EQ(mine.in_flight, 0u);
    EXPECT_EQ(mine.admitted, uint64_t{kPerThread});
  }
}

}  // namespace
}  // namespace trellis::tenants
