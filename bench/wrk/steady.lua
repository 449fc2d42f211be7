-- wrk script for the steady tenant of bench/run.sh --scenario noisy-neighbour: a fixed,
-- light load instead of wrk's usual "as fast as possible". Each connection waits
-- BENCH_STEADY_DELAY_MS milliseconds (default 1) after a response before it sends the next
-- request, so the rate is about connections * 1000 / (delay + latency) per second whatever
-- else loads the server. The wait is not part of the measured latency. Prints the same
-- BENCH_RESULT line as report.lua.
dofile("bench/wrk/report.lua")

local delay_ms = tonumber(os.getenv("BENCH_STEADY_DELAY_MS") or "1") or 1

delay = function()
  return delay_ms
end
