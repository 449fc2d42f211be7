-- wrk script used by bench/run.sh: after the run, print one machine-readable line
--   BENCH_RESULT rps=<float> p50_us=<int> p99_us=<int> mean_us=<float> max_us=<int>
--                requests=<int> duration_us=<int> non2xx=<int> socket_errors=<int>
-- Latencies are in microseconds. non2xx counts responses with status >= 400 (wrk's
-- "status" errors); socket_errors sums connect, read, write and timeout errors.
done = function(summary, latency, requests)
  local e = summary.errors
  local seconds = summary.duration / 1e6
  io.write(string.format(
    "BENCH_RESULT rps=%.1f p50_us=%d p99_us=%d mean_us=%.1f max_us=%d requests=%d "
      .. "duration_us=%d non2xx=%d socket_errors=%d\n",
    summary.requests / seconds, latency:percentile(50), latency:percentile(99),
    latency.mean, latency.max, summary.requests, summary.duration, e.status,
    e.connect + e.read + e.write + e.timeout))
end
