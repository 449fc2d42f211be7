#include "lua/internal/budget_clock.h"

#include <fstream>
#include <string>

#if defined(__x86_64__)
#include <x86intrin.h>
#endif

namespace trellis::kernel::lua::budget_clock {
namespace {

using Steady = std::chrono::steady_clock;

struct Rate {
  bool tsc = false;
  double per_us = 1000.0;  // ticks per microsecond (steady_clock counts nanoseconds)
};

Rate measure() {
  Rate r;
#if defined(__x86_64__)
  std::ifstream in("/sys/devices/system/clocksource/clocksource0/current_clocksource");
  std::string source;
  if (!(in >> source) || source != "tsc") return r;
  const auto t0 = Steady::now();
  const uint64_t c0 = __rdtsc();
  auto t1 = t0;
  while (t1 - t0 < std::chrono::milliseconds(2)) t1 = Steady::now();
  const uint64_t c1 = __rdtsc();
  const double us = std::chrono::duration<double, std::micro>(t1 - t0).count();
  if (c1 > c0) {
    r.tsc = true;
    r.per_us = static_cast<double>(c1 - c0) / us;
  }
#endif
  return r;
}

const Rate& rate() {
  static const Rate r = measure();
  return r;
}

}  // namespace

Ticks now() {
#if defined(__x86_64__)
  if (rate().tsc) return static_cast<Ticks>(__rdtsc());
#endif
  return Steady::now().time_since_epoch().count();
}

Ticks fromMicros(std::chrono::microseconds d) {
  return static_cast<Ticks>(static_cast<double>(d.count()) * rate().per_us);
}

std::chrono::microseconds toMicros(Ticks t) {
  return std::chrono::microseconds(static_cast<int64_t>(static_cast<double>(t) / rate().per_us));
}

}  // namespace trellis::kernel::lua::budget_clock
