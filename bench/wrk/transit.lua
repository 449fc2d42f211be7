-- wrk script for bench/run.sh --scenario transit: POST /secrets/v1/transit/encrypt/bench
-- with {"plaintext": <1 KiB, base64>} (BENCH_TRANSIT_PLAINTEXT, made by run.sh). Prints
-- the same BENCH_RESULT line as report.lua.
dofile("bench/wrk/report.lua")

wrk.method = "POST"
wrk.headers["Content-Type"] = "application/json"
wrk.body = '{"plaintext":"' .. (os.getenv("BENCH_TRANSIT_PLAINTEXT") or "") .. '"}'
