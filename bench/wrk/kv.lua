-- wrk script for bench/run.sh --scenario kv: GET /hello/<name> with a fresh name per
-- request drawn from BENCH_KV_KEYS names (default 100000, so concurrent requests rarely
-- share a key), or always the one name BENCH_KV_HOT when that is set (contention on one
-- key). Prints the same BENCH_RESULT line as report.lua.
dofile("bench/wrk/report.lua")

local keys = tonumber(os.getenv("BENCH_KV_KEYS") or "100000") or 100000
local hot = os.getenv("BENCH_KV_HOT")
if hot == "" then hot = nil end

local threads = 0
setup = function(thread)
  threads = threads + 1
  thread:set("seed", threads)
end

init = function(args)
  -- Each thread draws its own sequence (wrk gives every thread a fresh Lua state).
  math.randomseed(os.time() * 1000 + (seed or 0))
end

request = function()
  return wrk.format("GET", "/hello/" .. (hot or ("u" .. math.random(1, keys))))
end
