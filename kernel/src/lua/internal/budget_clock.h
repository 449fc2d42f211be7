// The clock sandbox calls meter wall time with. Every call reads it at least twice, and
// under a hypervisor clock_gettime costs about 30 ns where reading the TSC costs about 10.
// Where the kernel itself keeps time with the TSC (clocksource "tsc": invariant and in step
// across CPUs), the budget clock reads the TSC and converts with a rate measured once
// against steady_clock (a 2 ms spin on first use); elsewhere it is steady_clock.
#pragma once

#include <chrono>
#include <cstdint>

namespace trellis::kernel::lua::budget_clock {

using Ticks = int64_t;

Ticks now();
Ticks fromMicros(std::chrono::microseconds d);
std::chrono::microseconds toMicros(Ticks t);

}  // namespace trellis::kernel::lua::budget_clock
