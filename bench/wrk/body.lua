-- wrk script for bench/run.sh --scenario isolated, large-body pass: POST BENCH_ISOLATED_BODY_KB
-- KiB (default 256) to trellis/echo-c's /echo/bench, which answers it back inside a JSON
-- document. Prints the same BENCH_RESULT line as report.lua.
dofile("bench/wrk/report.lua")

wrk.method = "POST"
wrk.headers["Content-Type"] = "application/octet-stream"
wrk.body = string.rep("a", 1024 * tonumber(os.getenv("BENCH_ISOLATED_BODY_KB") or "256"))
