-- wrk script for the crashing client of bench/run.sh --scenario crashloop: calls the
-- crashing route with a new body each time (the kernel answers a request that crashed the
-- worker three times with 502 at once, without calling the worker; a new body keeps every
-- call a real crash), pausing BENCH_STEADY_DELAY_MS (default 5) per connection between a
-- response and the next request. Prints report.lua's BENCH_RESULT line, then
--   BENCH_CRASH status_502=<int> status_504=<int> status_2xx=<int> status_other=<int>
dofile("bench/wrk/report.lua")

local delay_ms = tonumber(os.getenv("BENCH_STEADY_DELAY_MS") or "5") or 5
local threads = {}
local report_done = done

setup = function(thread)
  thread:set("id", #threads + 1)
  table.insert(threads, thread)
end

-- Per thread (each wrk thread runs its own copy of this script).
local sent = 0
c502, c504, c2xx, cother = 0, 0, 0, 0

request = function()
  sent = sent + 1
  return wrk.format(nil, nil, nil, "crash " .. tostring(id) .. "-" .. sent)
end

response = function(status)
  if status == 502 then
    c502 = c502 + 1
  elseif status == 504 then
    c504 = c504 + 1
  elseif status >= 200 and status < 300 then
    c2xx = c2xx + 1
  else
    cother = cother + 1
  end
end

delay = function()
  return delay_ms
end

done = function(summary, latency, requests)
  report_done(summary, latency, requests)
  local n = { c502 = 0, c504 = 0, c2xx = 0, cother = 0 }
  for _, t in ipairs(threads) do
    for k in pairs(n) do n[k] = n[k] + (tonumber(t:get(k)) or 0) end
  end
  io.write(string.format("BENCH_CRASH status_502=%d status_504=%d status_2xx=%d status_other=%d\n",
    n.c502, n.c504, n.c2xx, n.cother))
end
