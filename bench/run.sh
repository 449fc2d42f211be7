#!/usr/bin/env bash
# Benchmarks trellisd against a peer (nginx + lua-nginx-module doing the same per-request
# work) on loopback, interleaved in one run so both see the same machine. See README.md.
#
#   bench/run.sh                    install deps, build release, measure both
#   bench/run.sh --only peer        measure only one side (trellisd | peer)
#   bench/run.sh --no-build         use the existing build/release
#   bench/run.sh --scenario noisy-neighbour
#                                   one trellisd, tenant `noisy` floods far past its rate
#                                   limit while tenant `steady` sends a fixed light load:
#                                   steady's latency alone vs during the flood
#   bench/run.sh --scenario policy  the main scenario on two trellisd, one without and one
#                                   with an on_request policy (bench/policy/bench.lua):
#                                   throughput ratio and CPU us per request of each
#   bench/run.sh --scenario isolated
#                                   the same route (trellis/echo-c, BENCH_TARGET) on two
#                                   trellisd, one loading the plugin in process and one with
#                                   isolation: process (a sandboxed trellis-worker); prints
#                                   the throughput ratio (32 connections) and the added p50
#                                   (1 connection); then the same
#                                   with a large body: POST BENCH_ISOLATED_BODY_KB KiB
#                                   (default 256; 0 skips it) to /echo/bench
#   bench/run.sh --scenario crashloop
#                                   one trellisd: BENCH_TARGET (trellis/echo-c) at 32
#                                   connections alone, then while a second client keeps
#                                   calling fixture/crashy's /crashy/segv in a worker that
#                                   crashes on every call, so that it is in its crash-loop
#                                   state; prints p50/p99/throughput of both, the p99 ratio,
#                                   the healthy client's errors and the crashing client's 502s
#   bench/run.sh --scenario usage   the main scenario on two trellisd, one without and one
#                                   with a usage-stream subscriber (tests/fixtures/usage-sub,
#                                   a system plugin appending every record to a file):
#                                   throughput ratio (target >= 95%) and CPU us per request
#   bench/run.sh --scenario kv      durable writes: GET /hello/{name} (a KV read and a
#                                   compare-and-set write, group-committed) against nginx +
#                                   Lua sending INCR to redis-server (appendfsync always);
#                                   then both on one hot key, with trellisd's CAS conflict rate
#   bench/run.sh --scenario transit one trellisd with trellis/secrets unsealed: /ping against
#                                   a transit encrypt of 1 KiB (POST /secrets/v1/transit/
#                                   encrypt/bench), interleaved; ratio (target >= 70%) and
#                                   CPU us per request of each
#   bench/run.sh --scenario tls     the main scenario with both sides on TLS: trellisd's data
#                                   plane and nginx + Lua with the same certificate (EC P-256,
#                                   made with `openssl req` in the temp dir) and the same suite
#                                   (TLS 1.3 TLS_AES_128_GCM_SHA256), kept-alive connections;
#                                   then a handshake-heavy run, a new connection per request
#                                   (wrk -H 'Connection: close'); ratios of both
#
# Env knobs (defaults in brackets):
#   BENCH_TARGET [/ping]            request path; trellisd serves it from trellis/echo-c
#   BENCH_DURATION [10]            seconds per measured wrk run
#   BENCH_WARMUP [2]               seconds of unmeasured load before each run (0 = none)
#   BENCH_ROUNDS [2]               rounds; each runs every connection count on both servers
#   BENCH_CONNECTIONS ["32 512"]   wrk connection counts
#   BENCH_WRK_THREADS [2]          wrk threads
#   BENCH_SERVER_THREADS [2]       trellisd threads and nginx worker processes
#   BENCH_BUILD_DIR [build/release] the build whose trellisd and plugins are measured
#   BENCH_PIN [0]                  1: each server on CPU 0 with one thread/worker and wrk on
#                                  CPU 1, so latency is not the load generator's contention
# Noisy-neighbour scenario only (wrk runs with one thread each; BENCH_CONNECTIONS and
# BENCH_WRK_THREADS do not apply):
#   BENCH_NN_STEADY_CONNECTIONS [4]   steady's connections (a light, fixed load)
#   BENCH_NN_STEADY_DELAY_MS [1]      pause per steady connection between requests
#   BENCH_NN_FLOOD_CONNECTIONS [64]   noisy's connections (as fast as wrk can send)
#   BENCH_NN_RATE [100]               noisy's plan: requests_per_second and burst
#   BENCH_NN_FLOOD_NICE [0]           nice level of the flood's wrk (19: it yields the CPU)
#
# Crash-loop scenario only:
#   BENCH_CL_CONNECTIONS [2]        the crashing client's connections (wrk -t1)
#   BENCH_CL_DELAY_MS [5]           its pause per connection between a response and the next
#
# KV scenario only:
#   BENCH_KV_KEYS [100000]         names the requests draw from (u1 .. uN)
#   BENCH_KV_BLOCKING_THREADS [128] trellisd server.blocking_threads: how many /hello calls
#                                  can wait for a commit at once, so the largest batch
#   BENCH_KV_BASELINE_RPS [780]    trellisd's figure at 32 connections before group commit
#                                  (this scenario on commit 73dbcbb, same VM; README.md)
#
# TLS scenario only:
#   BENCH_TLS_CLOSE_CONNECTIONS [32] connections of the handshake-heavy run
#
# Prints a table and writes build/bench/results.json (noisy-neighbour: writes
# build/bench/noisy-neighbour.json instead; kv: build/bench/kv.json; tls: build/bench/tls.json;
# crashloop: build/bench/crashloop.json).
# Slow numbers never fail the run; the exit status is non-zero only when a server could not
# be built, started or checked.
set -euo pipefail

TARGET=${BENCH_TARGET:-/ping}
DURATION=${BENCH_DURATION:-10}
WARMUP=${BENCH_WARMUP:-2}
ROUNDS=${BENCH_ROUNDS:-2}
CONNECTIONS=${BENCH_CONNECTIONS:-32 512}
WRK_THREADS=${BENCH_WRK_THREADS:-2}
SERVER_THREADS=${BENCH_SERVER_THREADS:-2}
server_pin=()
wrk_pin=()
if [[ ${BENCH_PIN:-0} == 1 ]]; then
  SERVER_THREADS=1
  WRK_THREADS=1
  server_pin=(taskset -c 0)
  wrk_pin=(taskset -c 1)
fi
KEY=bench-key
TENANT=bench

usage() { sed -n '2,79s/^# \{0,1\}//p' "$0"; }
die() { echo "bench: $*" >&2; exit 2; }
log() { echo "bench: $*" >&2; }

only=both
build=1
scenario=compare
while (($#)); do
  case "$1" in
    --only)
      [[ "${2:-}" == trellisd || "${2:-}" == peer ]] || die "--only takes trellisd or peer"
      only=$2
      shift 2
      ;;
    --no-build) build=0; shift ;;
    --scenario)
      [[ "${2:-}" =~ ^(compare|noisy-neighbour|policy|usage|kv|isolated|crashloop|transit|tls)$ ]] ||
        die "--scenario takes compare, noisy-neighbour, policy, usage, kv, isolated, crashloop, transit or tls"
      scenario=$2
      shift 2
      ;;
    -h | --help) usage; exit 0 ;;
    *) die "unknown argument '$1' (see --help)" ;;
  esac
done

# in_range NAME VALUE MIN MAX: dies unless VALUE is an integer in [MIN, MAX].
in_range() {
  if ! [[ "$2" =~ ^[0-9]+$ ]] || (($2 < $3 || $2 > $4)); then
    die "$1 must be an integer in $3..$4, got '$2'"
  fi
}
in_range BENCH_DURATION "$DURATION" 1 300
in_range BENCH_WARMUP "$WARMUP" 0 60
in_range BENCH_ROUNDS "$ROUNDS" 1 20
in_range BENCH_WRK_THREADS "$WRK_THREADS" 1 64
export BENCH_ISOLATED_BODY_KB=${BENCH_ISOLATED_BODY_KB:-256}  # read by bench/wrk/body.lua
ISOLATED_BODY_KB=$BENCH_ISOLATED_BODY_KB
in_range BENCH_ISOLATED_BODY_KB "$ISOLATED_BODY_KB" 0 1000
in_range BENCH_SERVER_THREADS "$SERVER_THREADS" 1 256
read -r -a conns <<<"$CONNECTIONS"
((${#conns[@]})) || die "BENCH_CONNECTIONS is empty"
for c in "${conns[@]}"; do in_range BENCH_CONNECTIONS "$c" 1 10000; done
[[ "$TARGET" == /* ]] || die "BENCH_TARGET must start with /"

NN_STEADY_CONNS=${BENCH_NN_STEADY_CONNECTIONS:-4}
NN_FLOOD_CONNS=${BENCH_NN_FLOOD_CONNECTIONS:-64}
NN_RATE=${BENCH_NN_RATE:-100}
NN_DELAY_MS=${BENCH_NN_STEADY_DELAY_MS:-1}
NN_FLOOD_NICE=${BENCH_NN_FLOOD_NICE:-0}
NOISY_KEY=noisy-key
if [[ $scenario == noisy-neighbour ]]; then
  [[ $only != peer ]] || die "--scenario noisy-neighbour measures trellisd only"
  only=trellisd
  in_range BENCH_NN_STEADY_CONNECTIONS "$NN_STEADY_CONNS" 1 1000
  in_range BENCH_NN_FLOOD_CONNECTIONS "$NN_FLOOD_CONNS" 1 10000
  in_range BENCH_NN_RATE "$NN_RATE" 1 1000000
  in_range BENCH_NN_STEADY_DELAY_MS "$NN_DELAY_MS" 0 1000
  in_range BENCH_NN_FLOOD_NICE "$NN_FLOOD_NICE" 0 19
  conns=("$NN_STEADY_CONNS" "$NN_FLOOD_CONNS") # for the open-file limit check below
  KEY=steady-key
  TENANT=steady
fi

WRK_SCRIPT=bench/wrk/report.lua
PEER_CONF=bench/nginx/nginx.conf.in
RESULTS=build/bench/results.json
KV_KEYS=${BENCH_KV_KEYS:-100000}
KV_THREADS=${BENCH_KV_BLOCKING_THREADS:-128}
KV_BASELINE=${BENCH_KV_BASELINE_RPS:-780}
if [[ $scenario == kv ]]; then
  in_range BENCH_KV_KEYS "$KV_KEYS" 1 100000000
  in_range BENCH_KV_BLOCKING_THREADS "$KV_THREADS" 1 4096
  in_range BENCH_KV_BASELINE_RPS "$KV_BASELINE" 1 100000000
  export BENCH_KV_KEYS=$KV_KEYS
  TARGET=/hello/bench-check
  WRK_SCRIPT=bench/wrk/kv.lua
  PEER_CONF=bench/nginx/kv.conf.in
  RESULTS=build/bench/kv.json
fi

# Both sides serve HTTPS; the certificate is made once the temp dir exists.
SCHEME=http
curl_tls=()
wrk_extra=()
TLS_CLOSE_CONNS=${BENCH_TLS_CLOSE_CONNECTIONS:-32}
if [[ $scenario == tls ]]; then
  in_range BENCH_TLS_CLOSE_CONNECTIONS "$TLS_CLOSE_CONNS" 1 10000
  command -v openssl >/dev/null || die "--scenario tls needs openssl"
  SCHEME=https
  RESULTS=build/bench/tls.json
fi

if [[ $scenario == policy || $scenario == usage || $scenario == transit ]]; then
  [[ $only != peer ]] || die "--scenario $scenario measures trellisd only"
  only=trellisd
fi

if [[ $scenario == isolated ]]; then
  [[ $only != peer ]] || die "--scenario isolated measures trellisd only"
  only=trellisd
  [[ -n "${BENCH_CONNECTIONS:-}" ]] || conns=(1 32)
fi

CL_CONNS=${BENCH_CL_CONNECTIONS:-2}
CL_DELAY_MS=${BENCH_CL_DELAY_MS:-5}
if [[ $scenario == crashloop ]]; then
  [[ $only != peer ]] || die "--scenario crashloop measures trellisd only"
  only=trellisd
  in_range BENCH_CL_CONNECTIONS "$CL_CONNS" 1 1000
  in_range BENCH_CL_DELAY_MS "$CL_DELAY_MS" 0 1000
  [[ -n "${BENCH_CONNECTIONS:-}" ]] || conns=(32)
  ((${#conns[@]} == 1)) || die "--scenario crashloop takes one connection count (BENCH_CONNECTIONS)"
fi

servers=()
[[ $only == peer ]] || servers+=(trellisd)
[[ $only == trellisd ]] || servers+=(peer)
# The policy scenario's second trellisd: the same, plus bench/policy/bench.lua.
[[ $scenario != policy ]] || servers+=(policy)
# The isolated scenario's second trellisd: trellis/echo-c in a worker process.
[[ $scenario != isolated ]] || servers+=(isolated)
# The usage scenario's second trellisd: the same, plus one usage-stream subscriber.
[[ $scenario != usage ]] || servers+=(usage)
# The transit scenario's second target, on the same trellisd (started with trellis/secrets).
[[ $scenario != transit ]] || servers+=(transit)
# Per measured server: its path and wrk script, when not $TARGET and $WRK_SCRIPT.
declare -A target_of=() script_of=()

repo=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
cd "$repo"

scripts/deps.sh --bench
if [[ $only != peer ]] && ((build)); then
  cmake --preset release
  cmake --build --preset release -j "$(nproc)" --target trellisd trellis trellis_all_plugins
  [[ $scenario != usage ]] || cmake --build --preset release --target fixture_usage_sub
  [[ $scenario != crashloop ]] || cmake --build --preset release --target fixture_crashy
fi
BUILD=$repo/${BENCH_BUILD_DIR:-build/release}

# 512 connections need as many descriptors in wrk and in each server.
hard=$(ulimit -Hn)
[[ $hard == unlimited ]] && hard=65536
ulimit -n "$hard" 2>/dev/null || true
for c in "${conns[@]}"; do
  (($(ulimit -n) > c + 64)) || log "warning: open-file limit $(ulimit -n) is tight for $c connections"
done

# ---------------------------------------------------------------- processes and cleanup
tmp=$(mktemp -d "${TMPDIR:-/tmp}/trellis-bench.XXXXXX")
pids=()
wrk_pid=""
flood_pid=""

stop_pid() {
  local pid=$1 i
  kill -TERM "$pid" 2>/dev/null || return 0
  for ((i = 0; i < 50; i++)); do
    kill -0 "$pid" 2>/dev/null || break
    sleep 0.1
  done
  kill -KILL "$pid" 2>/dev/null || true
  wait "$pid" 2>/dev/null || true
}

# shellcheck disable=SC2317  # cleanup and on_signal run from traps
cleanup() {
  local pid
  [[ -z "$wrk_pid" ]] || stop_pid "$wrk_pid"
  [[ -z "$flood_pid" ]] || stop_pid "$flood_pid"
  for pid in "${pids[@]}"; do stop_pid "$pid"; done
  rm -rf "$tmp"
}
# shellcheck disable=SC2317
on_signal() {
  log "interrupted"
  exit 130
}
trap cleanup EXIT
trap on_signal INT TERM

# tls: one certificate for both servers (SANs for the name and the address curl and wrk dial).
tls_dir=$tmp/tls
if [[ $scenario == tls ]]; then
  mkdir -p "$tls_dir"
  openssl req -x509 -newkey ec -pkeyopt ec_paramgen_curve:P-256 -nodes -days 2 \
    -subj /CN=localhost -addext "subjectAltName=DNS:localhost,IP:127.0.0.1" \
    -keyout "$tls_dir/key.pem" -out "$tls_dir/cert.pem" 2>"$tls_dir/openssl.log" ||
    { cat "$tls_dir/openssl.log" >&2; die "openssl req could not make the bench certificate"; }
  curl_tls=(--cacert "$tls_dir/cert.pem")
fi

declare -A port=() server_pid=() admin_port_of=()
status=0

# HTTP status of GET $TARGET on $1 with optional extra curl args.
http_code() {
  local p=$1
  shift
  curl -s -o /dev/null -m 5 -w '%{http_code}' "${curl_tls[@]}" "$@" "$SCHEME://127.0.0.1:$p$TARGET" ||
    true
}

# start_trellisd [NAME]: NAME (default trellisd) names its directory, port and pid.
start_trellisd() {
  local name=${1:-trellisd}
  local dir=$tmp/$name bin=$BUILD/kernel/trellisd i pid
  [[ -x "$bin" ]] || { log "trellisd: $bin not built"; return 1; }
  [[ -d "$BUILD/plugins" ]] || { log "trellisd: no plugins built"; return 1; }
  mkdir -p "$dir/data"
  local key_hash tenants_yaml
  key_hash=$(printf %s "$KEY" | sha256sum | cut -d' ' -f1)
  local subscriber_yaml=""
  if [[ $name == usage ]]; then
    [[ -f "$BUILD/fixtures/usage-sub/trellis-plugin.json" ]] ||
      { log "usage: $BUILD/fixtures/usage-sub not built (target fixture_usage_sub)"; return 1; }
    subscriber_yaml="    - id: fixture/usage-sub
      system: true
      config: {out: \"$dir/records.jsonl\", pause: \"$dir/pause\", cursors: \"$dir/cursors.txt\"}"
  fi
  local secrets_yaml="" tenant_plugins="trellis/echo-c, trellis/hello"
  local crashy_yaml=""
  if [[ $scenario == crashloop ]]; then
    [[ -f "$BUILD/fixtures/crashy/trellis-plugin.json" ]] ||
      { log "crashloop: $BUILD/fixtures/crashy not built (target fixture_crashy)"; return 1; }
    crashy_yaml="    - id: fixture/crashy
      isolation: process"
    tenant_plugins+=", fixture/crashy"
  fi
  if [[ $scenario == transit ]]; then
    secrets_yaml="    - id: trellis/secrets
      system: true"
    tenant_plugins+=", trellis/secrets"
  fi
  tenants_yaml="tenants:
  - id: $TENANT
    plugins: [$tenant_plugins]
    keys: [{sha256: \"$key_hash\"}]"
  if [[ $scenario == noisy-neighbour ]]; then
    # steady is on the implicit, unlimited plan "default"; noisy on a tight rate plan.
    tenants_yaml="plans:
  - name: bench-tight
    quotas: {requests_per_second: $NN_RATE, burst: $NN_RATE}
$tenants_yaml
  - id: noisy
    plan: bench-tight
    plugins: [trellis/echo-c, trellis/hello]
    keys: [{sha256: \"$(printf %s "$NOISY_KEY" | sha256sum | cut -d' ' -f1)\"}]"
  fi
  local tls_yaml=""
  if [[ $scenario == tls ]]; then
    tls_yaml="  tls:
    certificates: [{cert: \"$tls_dir/cert.pem\", key: \"$tls_dir/key.pem\"}]
    ciphersuites: TLS_AES_128_GCM_SHA256"
  fi
  cat >"$dir/trellis.yaml" <<YAML
# Generated by bench/run.sh.
server:
  listen: "127.0.0.1:0"
  threads: $SERVER_THREADS
$([[ $scenario != kv ]] || echo "  blocking_threads: $KV_THREADS")
$tls_yaml
admin:
  listen: "127.0.0.1:0"
  token_file: "$dir/admin.token"
storage:
  data_dir: "$dir/data"
log:
  level: warn
  access_log: "off"
plugins:
  dirs: ["$BUILD/plugins", "$BUILD/fixtures"]
  enabled:
    - id: trellis/echo-c
$([[ $name != isolated ]] || echo "      isolation: process")
    - id: trellis/hello
      config: {greeting: "Hello"}
$subscriber_yaml
$secrets_yaml
$crashy_yaml
$tenants_yaml
YAML
  "${server_pin[@]}" "$bin" --config "$dir/trellis.yaml" --ready-file "$dir/ready.json" >"$dir/trellisd.log" 2>&1 &
  pid=$!
  pids+=("$pid")
  server_pid[$name]=$pid
  for ((i = 0; i < 300; i++)); do
    if ! kill -0 "$pid" 2>/dev/null; then
      log "trellisd exited during start-up; last log lines:"
      tail -n 20 "$dir/trellisd.log" >&2
      return 1
    fi
    if grep -q '}' "$dir/ready.json" 2>/dev/null; then break; fi
    sleep 0.1
  done
  port[$name]=$(sed -n 's/.*"port"[[:space:]]*:[[:space:]]*\([0-9][0-9]*\).*/\1/p' \
    "$dir/ready.json" 2>/dev/null)
  [[ -n "${port[$name]}" ]] || { log "$name: no port in ready file after 30 s"; return 1; }
  log "$name pid $pid on 127.0.0.1:${port[$name]}"
  local admin_port out
  admin_port=$(sed -n 's/.*"admin_port"[[:space:]]*:[[:space:]]*\([0-9][0-9]*\).*/\1/p' \
    "$dir/ready.json")
  admin_port_of[$name]=$admin_port
  local cli=("$BUILD/kernel/trellis" --admin "http://127.0.0.1:$admin_port" --token-file "$dir/admin.token")
  if [[ $scenario == transit ]]; then
    unseal_transit "$name" "${cli[@]}" || return 1
  fi
  [[ $name == policy ]] || return 0
  if ! out=$("${cli[@]}" policy apply "$repo/bench/policy/bench.lua" 2>&1); then
    log "policy: could not apply bench/policy/bench.lua: $out"
    return 1
  fi
  log "policy: $out"
}

# unseal_transit NAME CLI...: init trellis/secrets with two shares, unseal with both, make the
# transit key "bench", and register the pseudo-server "transit": the same process and port
# as NAME, measured on the encrypt route.
unseal_transit() {
  local name=$1 out share code
  shift
  out=$("$@" secrets init --shares 2 --threshold 2 2>&1) || { log "transit: init failed: $out"; return 1; }
  for share in $(grep -o 'tss1-[A-Za-z0-9-]*' <<<"$out"); do
    out=$("$@" secrets unseal <<<"$share" 2>&1) || { log "transit: unseal failed: $out"; return 1; }
  done
  [[ $out == unsealed* ]] || { log "transit: still sealed after every share: $out"; return 1; }
  code=$(curl -s -o /dev/null -w '%{http_code}' -m 5 -X POST -H "Authorization: Bearer $KEY" \
    "http://127.0.0.1:${port[$name]}/secrets/v1/transit/keys/bench")
  [[ $code == 200 ]] || { log "transit: creating the key answered $code"; return 1; }
  BENCH_TRANSIT_PLAINTEXT=$(head -c 1024 /dev/urandom | base64 -w 0)
  export BENCH_TRANSIT_PLAINTEXT
  port[transit]=${port[$name]}
  server_pid[transit]=${server_pid[$name]}
  target_of[transit]=/secrets/v1/transit/encrypt/bench
  script_of[transit]=bench/wrk/transit.lua
  log "transit: unsealed; key bench made; 1 KiB plaintexts"
}

nginx_modules_dir() {
  local d
  for d in "$(nginx -V 2>&1 | sed -n 's/.*--modules-path=\([^ ]*\).*/\1/p')" \
    /usr/lib/nginx/modules /usr/share/nginx/modules; do
    if [[ -n "$d" && -f "$d/ngx_http_lua_module.so" && -f "$d/ndk_http_module.so" ]]; then
      echo "$d"
      return 0
    fi
  done
  return 1
}

# free_port: a random loopback port nothing listens on yet.
free_port() {
  local p attempt
  for ((attempt = 0; attempt < 50; attempt++)); do
    p=$((20000 + RANDOM % 40000))
    if ! (exec 3<>"/dev/tcp/127.0.0.1/$p") 2>/dev/null; then
      echo "$p"
      return 0
    fi
  done
  return 1
}

# The kv peer's store: Debian's redis-server, durable like trellisd's KV (append-only
# file, fsync'd before every answer), no RDB snapshots, in its own directory.
redis_port=""
start_redis() {
  local dir=$tmp/redis i pid
  command -v redis-server >/dev/null || { log "peer: redis-server not installed"; return 1; }
  mkdir -p "$dir"
  redis_port=$(free_port) || { log "peer: no free port for redis"; return 1; }
  "${server_pin[@]}" redis-server --bind 127.0.0.1 --port "$redis_port" --dir "$dir" \
    --appendonly yes --appendfsync always --save "" --daemonize no \
    --logfile "$dir/redis.log" --maxclients 10000 &
  pid=$!
  pids+=("$pid")
  for ((i = 0; i < 50; i++)); do
    [[ $(redis-cli -p "$redis_port" ping 2>/dev/null) == PONG ]] && break
    sleep 0.1
  done
  if [[ $(redis-cli -p "$redis_port" config get appendfsync 2>/dev/null | tail -n 1) != always ]]; then
    log "peer: redis-server did not start with appendfsync always; its log:"
    cat "$dir/redis.log" >&2
    return 1
  fi
  log "peer store (redis-server $(redis-server --version | sed 's/.*v=\([^ ]*\).*/\1/'), appendfsync always) pid $pid on 127.0.0.1:$redis_port"
}

start_peer() {
  local dir=$tmp/nginx modules p attempt i pid
  modules=$(nginx_modules_dir) || { log "peer: ngx_http_lua_module.so not found"; return 1; }
  if [[ $scenario == kv ]]; then start_redis || return 1; fi
  mkdir -p "$dir/tmp"
  # nginx.conf.in includes tls.conf in its server block: TLS directives, or nothing.
  local listen_ssl=""
  : >"$dir/tls.conf"
  if [[ $scenario == tls ]]; then
    listen_ssl=" ssl"
    cat >"$dir/tls.conf" <<NGINX
ssl_certificate $tls_dir/cert.pem;
ssl_certificate_key $tls_dir/key.pem;
ssl_protocols TLSv1.3;
ssl_conf_command Ciphersuites TLS_AES_128_GCM_SHA256;
NGINX
  fi
  for ((attempt = 0; attempt < 10; attempt++)); do
    p=$((20000 + RANDOM % 40000))
    # Skip ports something already listens on.
    if (exec 3<>"/dev/tcp/127.0.0.1/$p") 2>/dev/null; then continue; fi
    sed -e "s#@MODULES_DIR@#$modules#g" -e "s#@PREFIX@#$dir#g" -e "s#@PORT@#$p#g" \
      -e "s#@WORKERS@#$SERVER_THREADS#g" -e "s#@KEY@#$KEY#g" -e "s#@TENANT@#$TENANT#g" \
      -e "s#@REDIS_PORT@#$redis_port#g" -e "s#@LISTEN_SSL@#$listen_ssl#g" "$PEER_CONF" \
      >"$dir/nginx.conf"
    : >"$dir/error.log"
    "${server_pin[@]}" nginx -p "$dir/" -c "$dir/nginx.conf" -e "$dir/error.log" >"$dir/stdout.log" 2>&1 &
    pid=$!
    pids+=("$pid")
    for ((i = 0; i < 50; i++)); do
      kill -0 "$pid" 2>/dev/null || break
      [[ $(http_code "$p") == 401 ]] && break
      sleep 0.1
    done
    if kill -0 "$pid" 2>/dev/null && [[ $(http_code "$p") == 401 ]]; then
      port[peer]=$p
      server_pid[peer]=$pid
      log "peer (nginx $(nginx -v 2>&1 | sed 's#.*/##')) pid $pid on 127.0.0.1:$p"
      return 0
    fi
    stop_pid "$pid"
    if ! grep -q 'Address already in use' "$dir/error.log" "$dir/stdout.log"; then
      log "peer: nginx did not start; its log:"
      cat "$dir/error.log" "$dir/stdout.log" >&2
      return 1
    fi
  done
  log "peer: no free port found"
  return 1
}

# Both servers must refuse a missing key and serve the bench tenant before we time them.
check_server() {
  local s=$1 p=${port[$1]} ok anon
  if [[ $s == transit ]]; then
    ok=$(curl -s -o /dev/null -m 5 -w '%{http_code}' -H "Authorization: Bearer $KEY" \
      -d "{\"plaintext\":\"$BENCH_TRANSIT_PLAINTEXT\"}" "http://127.0.0.1:$p${target_of[transit]}")
    [[ $ok == 200 ]] && return 0
    log "transit: the encrypt route answered $ok, not 200: not measuring it"
    return 1
  fi
  ok=$(http_code "$p" -H "Authorization: Bearer $KEY")
  anon=$(http_code "$p")
  if [[ $ok != 200 ]]; then
    log "$s: GET $TARGET with the bench key answered $ok, not 200: not measuring it"
    return 1
  fi
  [[ $anon == 401 ]] || log "warning: $s: GET $TARGET without a key answered $anon, not 401"
  return 0
}

active=()
for s in "${servers[@]}"; do
  case $s in
    trellisd) start_trellisd && started=1 || started=0 ;;
    policy) start_trellisd policy && started=1 || started=0 ;;
    isolated) start_trellisd isolated && started=1 || started=0 ;;
    usage) start_trellisd usage && started=1 || started=0 ;;
    transit) [[ -n "${port[transit]:-}" ]] && started=1 || started=0 ;;
    peer) start_peer && started=1 || started=0 ;;
  esac
  if ((started)) && check_server "$s"; then
    active+=("$s")
  else
    status=1
  fi
done
((${#active[@]})) || { log "no server to measure"; exit 1; }

# ---------------------------------------------------------------- measuring
declare -A rps=() p50=() p99=() cpu=() bad=()
runs_json=()

# wrk_run SERVER CONNECTIONS SECONDS OUTFILE
wrk_run() {
  local t=$WRK_THREADS
  ((t <= $2)) || t=$2
  # In the background, so a signal to this script is handled at once, not after wrk ends.
  "${wrk_pin[@]}" wrk -t "$t" -c "$2" -d "$3s" --latency -s "${script_of[$1]:-$WRK_SCRIPT}" \
    -H "Authorization: Bearer $KEY" "${wrk_extra[@]}" \
    "$SCHEME://127.0.0.1:${port[$1]}${target_of[$1]:-$TARGET}" >"$4" 2>&1 &
  wrk_pid=$!
  wait "$wrk_pid" || true
  wrk_pid=""
}

# tree_ticks PID: user + system CPU clock ticks of PID and its children (nginx's workers).
tree_ticks() {
  local p sum=0 t
  for p in "$1" $(ps -o pid= --ppid "$1" 2>/dev/null); do
    t=$(awk '{ print $14 + $15 }' "/proc/$p/stat" 2>/dev/null) && sum=$((sum + t))
  done
  echo "$sum"
}

# field NAME LINE: value of NAME=... in a BENCH_RESULT line.
field() { sed -n "s/.* $1=\([^ ]*\).*/\1/p" <<<"$2"; }
or_na() { if [[ -n "$1" ]]; then echo "$1"; else echo n/a; fi; }
json_num() { if [[ -n "$1" ]]; then echo "$1"; else echo null; fi; }

# ---------------------------------------------------------------- noisy-neighbour scenario
# wrk_start VAR KEY CONNECTIONS SECONDS OUTFILE SCRIPT: one-thread wrk with KEY and the Lua
# SCRIPT against trellisd in the background; its pid goes into the variable VAR (wrk_pid or
# flood_pid, which cleanup stops).
wrk_start() {
  BENCH_STEADY_DELAY_MS=$NN_DELAY_MS "${wrk_pin[@]}" nice -n "${NICE:-0}" wrk -t 1 -c "$3" -d "$4s" --latency \
    -s "$6" -H "Authorization: Bearer $2" "http://127.0.0.1:${port[trellisd]}$TARGET" \
    >"$5" 2>&1 &
  printf -v "$1" %s "$!"
}
# wrk_wait VAR: waits for the wrk whose pid is in VAR, then clears VAR.
wrk_wait() {
  wait "${!1}" || true
  printf -v "$1" %s ""
}
# steady_run SECONDS OUTFILE: steady's fixed light load (wrk/steady.lua paces each
# connection), in the foreground.
steady_run() {
  wrk_start wrk_pid "$KEY" "$NN_STEADY_CONNS" "$1" "$2" bench/wrk/steady.lua
  wrk_wait wrk_pid
}

# Mean of the arguments with one decimal; "" if there are none.
mean() { (($#)) && printf '%s\n' "$@" | awk '{ s += $1 } END { printf "%.1f", s / NR }'; return 0; }
max_of() { (($#)) && printf '%s\n' "$@" | sort -n | tail -n 1; return 0; }
pct_change() { awk -v a="$1" -v b="$2" 'BEGIN { if (a > 0) printf "%+.1f", (b - a) * 100 / a }'; }

noisy_neighbour() {
  local r phase out line k order lead non2xx sockerr requests secs
  declare -A nrps=() np50=() np99=() nbad=()
  local -a runs=() flood_rps=() flood_ok_rps=() flood_share=() flood_runs=()

  # The noisy key must work too (its first request is within the burst).
  local code
  code=$(http_code "${port[trellisd]}" -H "Authorization: Bearer $NOISY_KEY")
  [[ $code == 200 ]] || { log "noisy tenant: GET $TARGET answered $code, not 200"; return 1; }

  # The flood starts `lead` seconds before steady's measured run (steady warms up meanwhile)
  # and ends about a second after it, so the whole measured run is under flood.
  lead=$WARMUP
  ((lead >= 1)) || lead=1
  log "noisy-neighbour: steady ${NN_STEADY_CONNS} connections alone and during a flood by noisy" \
    "(${NN_FLOOD_CONNS} connections, limit ${NN_RATE}/s); $ROUNDS round(s) of ${DURATION}s:" \
    "about $((ROUNDS * (2 * DURATION + WARMUP + lead + 3)))s"

  for ((r = 1; r <= ROUNDS; r++)); do
    order=(alone flood)
    # Alternate which phase goes first so drift does not favour one.
    ((r % 2)) || order=(flood alone)
    for phase in "${order[@]}"; do
      out=$tmp/steady-$phase-$r.txt
      if [[ $phase == alone ]]; then
        ((WARMUP == 0)) || steady_run "$WARMUP" "$tmp/warmup.txt"
        steady_run "$DURATION" "$out"
      else
        NICE=$NN_FLOOD_NICE wrk_start flood_pid "$NOISY_KEY" "$NN_FLOOD_CONNS" $((lead + DURATION + 1)) \
          "$tmp/flood-$r.txt" bench/wrk/report.lua
        if ((WARMUP)); then steady_run "$WARMUP" "$tmp/warmup.txt"; else sleep "$lead"; fi
        steady_run "$DURATION" "$out"
        wrk_wait flood_pid
        sleep 1 # let the flood's connections close before the next phase
        line=$(grep '^BENCH_RESULT ' "$tmp/flood-$r.txt" || true)
        if [[ -n "$line" ]]; then
          requests=$(field requests "$line")
          non2xx=$(field non2xx "$line")
          secs=$(awk -v d="$(field duration_us "$line")" 'BEGIN { printf "%.3f", d / 1e6 }')
          flood_rps+=("$(field rps "$line")")
          flood_ok_rps+=("$(awk -v n="$requests" -v e="$non2xx" -v s="$secs" \
            'BEGIN { printf "%.1f", (n - e) / s }')")
          flood_share+=("$(awk -v n="$requests" -v e="$non2xx" \
            'BEGIN { if (n > 0) printf "%.2f", e * 100 / n; else print 0 }')")
          printf 'round %d  noisy  flood  c=%-4d %10.0f req/s  admitted %7.1f req/s  non2xx %d of %d (%s%%)  socket errors %d\n' \
            "$r" "$NN_FLOOD_CONNS" "${flood_rps[-1]}" "${flood_ok_rps[-1]}" "$non2xx" \
            "$requests" "${flood_share[-1]}" "$(field socket_errors "$line")"
          flood_runs+=("$(printf '{"round": %d, "connections": %d, "rps": %s, "admitted_rps": %s, "requests": %s, "non2xx": %s, "non2xx_pct": %s, "socket_errors": %s}' \
            "$r" "$NN_FLOOD_CONNS" "${flood_rps[-1]}" "${flood_ok_rps[-1]}" "$requests" \
            "$non2xx" "${flood_share[-1]}" "$(field socket_errors "$line")")")
        else
          log "round $r: the flood's wrk gave no result:"
          cat "$tmp/flood-$r.txt" >&2
        fi
      fi
      line=$(grep '^BENCH_RESULT ' "$out" || true)
      if [[ -z "$line" ]]; then
        log "round $r, steady $phase: wrk gave no result:"
        cat "$out" >&2
        continue
      fi
      k=$phase,$r
      nrps[$k]=$(field rps "$line")
      np50[$k]=$(field p50_us "$line")
      np99[$k]=$(field p99_us "$line")
      non2xx=$(field non2xx "$line")
      sockerr=$(field socket_errors "$line")
      if ((non2xx > 0 || sockerr > 0)); then nbad[$phase]=1; fi
      printf 'round %d  steady %-6s c=%-4d %10.0f req/s  p50 %6d us  p99 %6d us  non2xx %d  socket errors %d\n' \
        "$r" "$phase" "$NN_STEADY_CONNS" "${nrps[$k]}" "${np50[$k]}" "${np99[$k]}" "$non2xx" \
        "$sockerr"
      runs+=("$(printf '{"round": %d, "phase": "%s", "connections": %d, "rps": %s, "p50_us": %s, "p99_us": %s, "requests": %s, "non2xx": %s, "socket_errors": %s}' \
        "$r" "$phase" "$NN_STEADY_CONNS" "${nrps[$k]}" "${np50[$k]}" "${np99[$k]}" \
        "$(field requests "$line")" "$non2xx" "$sockerr")")
    done
  done

  # Per phase: mean over the rounds of rps, p50 and p99, and the worst round's p99.
  local -A s_rps=() s_p50=() s_p99=() s_worst=()
  local -a v_rps v_p50 v_p99
  for phase in alone flood; do
    v_rps=() v_p50=() v_p99=()
    for ((r = 1; r <= ROUNDS; r++)); do
      [[ -n "${nrps[$phase,$r]:-}" ]] || continue
      v_rps+=("${nrps[$phase,$r]}")
      v_p50+=("${np50[$phase,$r]}")
      v_p99+=("${np99[$phase,$r]}")
    done
    s_rps[$phase]=$(mean "${v_rps[@]}")
    s_p50[$phase]=$(mean "${v_p50[@]}")
    s_p99[$phase]=$(mean "${v_p99[@]}")
    s_worst[$phase]=$(max_of "${v_p99[@]}")
  done
  local increase="" verdict="n/a" f_rps f_ok f_share
  if [[ -n "${s_p99[alone]}" && -n "${s_p99[flood]}" ]]; then
    increase=$(pct_change "${s_p99[alone]}" "${s_p99[flood]}")
    verdict=$(awk -v i="$increase" 'BEGIN { print ((i + 0 < 20) ? "met" : "not met") }')
  fi
  f_rps=$(mean "${flood_rps[@]}")
  f_ok=$(mean "${flood_ok_rps[@]}")
  f_share=$(mean "${flood_share[@]}")

  echo
  echo "Noisy neighbour: one trellisd ($SERVER_THREADS thread(s)), GET $TARGET. Tenant steady"
  echo "(unlimited plan) sends on $NN_STEADY_CONNS connections alone, then while tenant noisy"
  echo "(${NN_RATE} req/s, burst ${NN_RATE}) floods on $NN_FLOOD_CONNS; wrk -t1 each, ${DURATION}s x $ROUNDS"
  echo "round(s); rps, p50 and p99 = mean over rounds, worst = the worst round's p99."
  if ((${#server_pin[@]})); then
    echo "Pinned: trellisd on CPU 0 (one thread), both wrk on CPU 1."
  else
    echo "trellisd and both wrk share every core: the flood's CPU cost is part of the result."
  fi
  printf '%-14s %12s %12s %12s %12s\n' steady rps "p50" "p99" "worst p99"
  for phase in alone flood; do
    printf '%-14s %12s %12s %12s %12s\n' "$phase${nbad[$phase]:+*}" "$(or_na "${s_rps[$phase]}")" \
      "$(or_na "${s_p50[$phase]:+${s_p50[$phase]} us}")" \
      "$(or_na "${s_p99[$phase]:+${s_p99[$phase]} us}")" \
      "$(or_na "${s_worst[$phase]:+${s_worst[$phase]} us}")"
  done
  echo
  printf 'noisy during the flood: %s req/s sent, %s req/s admitted, %s%% refused (non-2xx, 429)\n' \
    "$(or_na "$f_rps")" "$(or_na "$f_ok")" "$(or_na "$f_share")"
  [[ -z "${nbad[*]}" ]] ||
    echo "* steady had error responses or socket errors; see the per-round lines"
  echo "steady p99 during the flood vs alone: $(or_na "${increase:+$increase%}")"
  echo "Target: steady's p99 rises by less than 20% under the flood: $verdict"
  echo "Benchmarks are informational: slow numbers never fail this script."

  mkdir -p build/bench
  local IFS=,
  {
    printf '{\n'
    printf '  "scenario": "noisy-neighbour",\n'
    printf '  "date": "%s",\n' "$(date -u +%Y-%m-%dT%H:%M:%SZ)"
    printf '  "commit": "%s",\n' "$(git -C "$repo" rev-parse --short HEAD 2>/dev/null || echo unknown)"
    printf '  "host": {"cpus": %d, "kernel": "%s"},\n' "$(nproc)" "$(uname -r)"
    printf '  "target": "%s", "duration_s": %d, "warmup_s": %d, "rounds": %d,\n' \
      "$TARGET" "$DURATION" "$WARMUP" "$ROUNDS"
    printf '  "server_threads": %d, "pinned": %s,\n' "$SERVER_THREADS" \
      "$( ((${#server_pin[@]})) && echo true || echo false)"
    printf '  "steady_connections": %d, "flood_connections": %d, "noisy_rps_limit": %d, "noisy_burst": %d,\n' \
      "$NN_STEADY_CONNS" "$NN_FLOOD_CONNS" "$NN_RATE" "$NN_RATE"
    printf '  "summary": {"alone": {"rps": %s, "p50_us": %s, "p99_us": %s, "worst_p99_us": %s},\n' \
      "$(json_num "${s_rps[alone]}")" "$(json_num "${s_p50[alone]}")" \
      "$(json_num "${s_p99[alone]}")" "$(json_num "${s_worst[alone]}")"
    printf '              "flood": {"rps": %s, "p50_us": %s, "p99_us": %s, "worst_p99_us": %s},\n' \
      "$(json_num "${s_rps[flood]}")" "$(json_num "${s_p50[flood]}")" \
      "$(json_num "${s_p99[flood]}")" "$(json_num "${s_worst[flood]}")"
    printf '              "p99_increase_pct": %s, "target_pct": 20, "target_met": %s,\n' \
      "$(json_num "$increase")" \
      "$(case $verdict in met) echo true ;; "not met") echo false ;; *) echo null ;; esac)"
    printf '              "noisy_rps": %s, "noisy_admitted_rps": %s, "noisy_non2xx_pct": %s},\n' \
      "$(json_num "$f_rps")" "$(json_num "$f_ok")" "$(json_num "$f_share")"
    printf '  "steady_runs": [%s],\n' "${runs[*]}"
    printf '  "flood_runs": [%s]\n' "${flood_runs[*]}"
    printf '}\n'
  } >build/bench/noisy-neighbour.json
  log "results written to build/bench/noisy-neighbour.json"
}

# ---------------------------------------------------------------- policy scenario
# cpu_ticks PID: the user + system CPU time PID has used, in clock ticks.
cpu_ticks() { awk '{ print $14 + $15 }' "/proc/$1/stat"; }

overhead() {
  local second=$1
  local r c s out line k t0 t1 hz requests non2xx sockerr
  local -a order runs=() summary=() v_rps v_cpu
  declare -A prps=() pcpu=() pbad=()
  hz=$(getconf CLK_TCK)
  local what
  case $second in
    policy) what="trellisd without and with an on_request policy" ;;
    usage) what="trellisd without and with a usage subscriber" ;;
    transit) what="$TARGET against a transit encrypt of 1 KiB on one trellisd" ;;
  esac
  log "$second: $what at ${conns[*]} connections," \
    "$ROUNDS round(s) of ${DURATION}s (+${WARMUP}s warm-up) each:" \
    "about $((ROUNDS * ${#conns[@]} * 2 * (DURATION + WARMUP)))s"
  for ((r = 1; r <= ROUNDS; r++)); do
    order=(trellisd "$second")
    ((r % 2)) || order=("$second" trellisd)
    for c in "${conns[@]}"; do
      for s in "${order[@]}"; do
        out=$tmp/wrk-$s-$c-$r.txt
        ((WARMUP == 0)) || wrk_run "$s" "$c" "$WARMUP" "$tmp/warmup.txt"
        t0=$(cpu_ticks "${server_pid[$s]}")
        wrk_run "$s" "$c" "$DURATION" "$out"
        t1=$(cpu_ticks "${server_pid[$s]}")
        line=$(grep '^BENCH_RESULT ' "$out" || true)
        if [[ -z "$line" ]]; then
          log "round $r, $s, $c connections: wrk gave no result:"
          cat "$out" >&2
          continue
        fi
        k=$s,$c,$r
        requests=$(field requests "$line")
        prps[$k]=$(field rps "$line")
        pcpu[$k]=$(awk -v t=$((t1 - t0)) -v hz="$hz" -v n="$requests" \
          'BEGIN { if (n > 0) printf "%.3f", t * 1e6 / hz / n }')
        non2xx=$(field non2xx "$line")
        sockerr=$(field socket_errors "$line")
        if ((non2xx > 0 || sockerr > 0)); then pbad[$s,$c]=1; fi
        printf 'round %d  %-8s c=%-4d %10.0f req/s  cpu %7.3f us/req  non2xx %d  socket errors %d\n' \
          "$r" "$s" "$c" "${prps[$k]}" "${pcpu[$k]:-0}" "$non2xx" "$sockerr"
        runs+=("$(printf '{"round": %d, "server": "%s", "connections": %d, "rps": %s, "cpu_us_per_request": %s, "requests": %s, "non2xx": %s, "socket_errors": %s}' \
          "$r" "$s" "$c" "${prps[$k]}" "$(json_num "${pcpu[$k]}")" "$requests" "$non2xx" "$sockerr")")
      done
    done
  done

  echo
  if [[ $second == policy ]]; then
    echo "Policy overhead: trellisd ($TARGET via trellis/echo-c) without a policy and with"
    echo "bench/policy/bench.lua (on_request: a header check and a CIDR match). wrk -t$WRK_THREADS,"
  elif [[ $second == usage ]]; then
    echo "Usage-stream overhead: trellisd ($TARGET via trellis/echo-c) without and with one"
    echo "usage subscriber (fixture/usage-sub: every record appended to a file). wrk -t$WRK_THREADS,"
  else
    echo "Transit: $TARGET (trellis/echo-c) and POST ${target_of[transit]} (trellis/secrets:"
    echo "AES-256-GCM of 1 KiB, base64 in JSON) on the same trellisd. wrk -t$WRK_THREADS,"
  fi
  echo "${DURATION}s x $ROUNDS round(s); means over rounds. CPU = the server's user+system time"
  echo "(/proc/<pid>/stat) per request served."
  printf '%-11s %13s %13s %8s %13s %13s %13s\n' connections "rps plain" "rps $second" ratio \
    "cpu us plain" "cpu us $second" "overhead us"
  local verdict="n/a" m_rps_t m_rps_p m_cpu_t m_cpu_p ratio overhead
  for c in "${conns[@]}"; do
    for s in trellisd "$second"; do
      v_rps=() v_cpu=()
      for ((r = 1; r <= ROUNDS; r++)); do
        [[ -z "${prps[$s,$c,$r]:-}" ]] || v_rps+=("${prps[$s,$c,$r]}")
        [[ -z "${pcpu[$s,$c,$r]:-}" ]] || v_cpu+=("${pcpu[$s,$c,$r]}")
      done
      local side=p
      [[ $s == trellisd ]] && side=t
      printf -v "m_rps_$side" %s "$(mean "${v_rps[@]}")"
      printf -v "m_cpu_$side" %s "$(printf '%s\n' "${v_cpu[@]}" | awk 'NF { s += $1; n++ } END { if (n) printf "%.3f", s / n }')"
    done
    ratio=$(awk -v a="$m_rps_p" -v b="$m_rps_t" 'BEGIN { if (b > 0) printf "%.3f", a / b }')
    overhead=$(awk -v a="$m_cpu_p" -v b="$m_cpu_t" 'BEGIN { if (a != "" && b != "") printf "%.3f", a - b }')
    printf '%-11s %13s %13s %8s %13s %13s %13s\n' "$c${pbad[trellisd,$c]:+*}${pbad[$second,$c]:+*}" \
      "$(or_na "$m_rps_t")" "$(or_na "$m_rps_p")" "$(or_na "$ratio")" "$(or_na "$m_cpu_t")" \
      "$(or_na "$m_cpu_p")" "$(or_na "$overhead")"
    summary+=("$(printf '{"connections": %d, "rps_plain": %s, "rps_%s": %s, "ratio": %s, "cpu_us_plain": %s, "cpu_us_%s": %s, "overhead_cpu_us": %s}' \
      "$c" "$(json_num "$m_rps_t")" "$second" "$(json_num "$m_rps_p")" "$(json_num "$ratio")" \
      "$(json_num "$m_cpu_t")" "$second" "$(json_num "$m_cpu_p")" "$(json_num "$overhead")")")
    if [[ $c == "${conns[0]}" && -n "$ratio" && -n "$overhead" ]]; then
      if [[ $second == policy ]]; then
        verdict=$(awk -v r="$ratio" -v o="$overhead" \
          'BEGIN { print ((o < 2.0 && r >= 0.90) ? "met" : "not met") }')
      else
        verdict=$(awk -v r="$ratio" -v t="$([[ $second == transit ]] && echo 0.70 || echo 0.95)" \
          'BEGIN { print ((r >= t) ? "met" : "not met") }')
      fi
    fi
  done
  echo
  if [[ $second == policy ]]; then
    echo "Target at ${conns[0]} connections: overhead < 2 us CPU per request and >= 90% of the"
    echo "plain throughput: $verdict"
  elif [[ $second == usage ]]; then
    echo "Target at ${conns[0]} connections: >= 95% of the throughput without a subscriber: $verdict"
    echo "Records the subscriber received: $(wc -l <"$tmp/usage/records.jsonl" 2>/dev/null || echo 0)"
  else
    echo "Target at ${conns[0]} connections: transit >= 70% of $TARGET's throughput: $verdict"
  fi
  echo "Benchmarks are informational: slow numbers never fail this script."
  mkdir -p build/bench
  local IFS=,
  {
    printf '{\n'
    printf '  "scenario": "%s",\n' "$second"
    printf '  "date": "%s",\n' "$(date -u +%Y-%m-%dT%H:%M:%SZ)"
    printf '  "commit": "%s",\n' "$(git -C "$repo" rev-parse --short HEAD 2>/dev/null || echo unknown)"
    printf '  "host": {"cpus": %d, "kernel": "%s"},\n' "$(nproc)" "$(uname -r)"
    printf '  "target": "%s", "duration_s": %d, "warmup_s": %d, "rounds": %d,\n' \
      "$TARGET" "$DURATION" "$WARMUP" "$ROUNDS"
    printf '  "wrk_threads": %d, "server_threads": %d,\n' "$WRK_THREADS" "$SERVER_THREADS"
    printf '  "summary": [%s],\n' "${summary[*]}"
    printf '  "runs": [%s]\n' "${runs[*]}"
    printf '}\n'
  } >"build/bench/$second.json"
  log "results written to build/bench/$second.json"
}

# ---------------------------------------------------------------- isolated scenario
# isolation_overhead [body]: without an argument, $TARGET; with `body`, POST
# BENCH_ISOLATED_BODY_KB KiB to /echo/bench (bench/wrk/body.lua).
isolation_overhead() {
  local r c s out line k variant=${1:-} what=$TARGET json=build/bench/isolated.json
  local -a order runs=() summary=() v_rps v_p50
  declare -A irps=() ip50=() ip99=() ibad=()
  if [[ $variant == body ]]; then
    what="POST /echo/bench with $ISOLATED_BODY_KB KiB"
    json=build/bench/isolated-body.json
    for s in trellisd isolated; do
      target_of[$s]=/echo/bench
      script_of[$s]=bench/wrk/body.lua
    done
  fi
  log "isolated: trellis/echo-c in process and in a worker at ${conns[*]} connections," \
    "$what, $ROUNDS round(s) of ${DURATION}s (+${WARMUP}s warm-up) each"
  for ((r = 1; r <= ROUNDS; r++)); do
    order=(trellisd isolated)
    ((r % 2)) || order=(isolated trellisd)
    for c in "${conns[@]}"; do
      for s in "${order[@]}"; do
        out=$tmp/wrk-$s-$c-$r.txt
        ((WARMUP == 0)) || wrk_run "$s" "$c" "$WARMUP" "$tmp/warmup.txt"
        wrk_run "$s" "$c" "$DURATION" "$out"
        line=$(grep '^BENCH_RESULT ' "$out" || true)
        if [[ -z "$line" ]]; then
          log "round $r, $s, $c connections: wrk gave no result:"
          cat "$out" >&2
          continue
        fi
        k=$s,$c,$r
        irps[$k]=$(field rps "$line")
        ip50[$k]=$(field p50_us "$line")
        ip99[$k]=$(field p99_us "$line")
        if (($(field non2xx "$line") > 0 || $(field socket_errors "$line") > 0)); then
          ibad[$s,$c]=1
        fi
        printf 'round %d  %-8s c=%-4d %10.0f req/s  p50 %6d us  p99 %6d us  non2xx %d\n' \
          "$r" "$s" "$c" "${irps[$k]}" "${ip50[$k]}" "${ip99[$k]}" "$(field non2xx "$line")"
        runs+=("$(printf '{"round": %d, "server": "%s", "connections": %d, "rps": %s, "p50_us": %s, "p99_us": %s}' \
          "$r" "$s" "$c" "${irps[$k]}" "${ip50[$k]}" "${ip99[$k]}")")
      done
    done
  done
  echo
  echo "Isolation overhead: $what served by trellis/echo-c in process (plain) and in a"
  echo "sandboxed worker process (worker), same run. wrk -t$WRK_THREADS, ${DURATION}s x $ROUNDS"
  echo "round(s); means over rounds. * = non-2xx answers or socket errors in a run."
  printf '%-11s %11s %11s %7s %10s %10s %11s\n' connections "rps plain" "rps worker" ratio \
    "p50 plain" "p50 worker" "p50 added"
  local throughput="n/a" latency="n/a" m_rps_t m_rps_i m_p50_t m_p50_i ratio added
  for c in "${conns[@]}"; do
    for s in trellisd isolated; do
      v_rps=() v_p50=()
      for ((r = 1; r <= ROUNDS; r++)); do
        [[ -z "${irps[$s,$c,$r]:-}" ]] || v_rps+=("${irps[$s,$c,$r]}")
        [[ -z "${ip50[$s,$c,$r]:-}" ]] || v_p50+=("${ip50[$s,$c,$r]}")
      done
      printf -v "m_rps_${s:0:1}" %s "$(mean "${v_rps[@]}")"
      printf -v "m_p50_${s:0:1}" %s "$(mean "${v_p50[@]}")"
    done
    ratio=$(awk -v a="$m_rps_i" -v b="$m_rps_t" 'BEGIN { if (b > 0) printf "%.3f", a / b }')
    added=$(awk -v a="$m_p50_i" -v b="$m_p50_t" 'BEGIN { if (a != "" && b != "") printf "%.1f", a - b }')
    printf '%-11s %11s %11s %7s %10s %10s %11s\n' "$c${ibad[trellisd,$c]:+*}${ibad[isolated,$c]:+*}" \
      "$(or_na "$m_rps_t")" "$(or_na "$m_rps_i")" "$(or_na "$ratio")" "$(or_na "$m_p50_t")" \
      "$(or_na "$m_p50_i")" "$(or_na "$added")"
    summary+=("$(printf '{"connections": %d, "rps_in_process": %s, "rps_worker": %s, "ratio": %s, "p50_us_in_process": %s, "p50_us_worker": %s, "p50_added_us": %s}' \
      "$c" "$(json_num "$m_rps_t")" "$(json_num "$m_rps_i")" "$(json_num "$ratio")" \
      "$(json_num "$m_p50_t")" "$(json_num "$m_p50_i")" "$(json_num "$added")")")
    if [[ $c == 32 && -n "$ratio" ]]; then
      throughput=$(awk -v r="$ratio" 'BEGIN { print (r >= 0.60 ? "met" : "not met") }')
    fi
    if [[ $c == 1 && -n "$added" ]]; then
      latency=$(awk -v a="$added" 'BEGIN { print (a <= 30 ? "met" : "not met") }')
    fi
  done
  echo
  [[ $variant == body ]] ||
    echo "Targets: >= 60% of in-process throughput at 32 connections: $throughput;" \
      "<= 30 us added p50 (read at 1 connection: at 32 both servers are saturated and p50 is" \
      "queueing, 32 / throughput): $latency"
  echo "Benchmarks are informational: slow numbers never fail this script."
  mkdir -p build/bench
  local IFS=,
  {
    printf '{\n  "scenario": "isolated%s",\n' "${variant:+-$variant}"
    printf '  "date": "%s",\n' "$(date -u +%Y-%m-%dT%H:%M:%SZ)"
    printf '  "commit": "%s",\n' "$(git -C "$repo" rev-parse --short HEAD 2>/dev/null || echo unknown)"
    printf '  "host": {"cpus": %d, "kernel": "%s", "loadavg": "%s"},\n' "$(nproc)" "$(uname -r)" \
      "$(cut -d' ' -f1-3 /proc/loadavg)"
    printf '  "target": "%s", "duration_s": %d, "rounds": %d,\n' "$what" "$DURATION" "$ROUNDS"
    printf '  "summary": [%s],\n' "${summary[*]}"
    printf '  "runs": [%s]\n}\n' "${runs[*]}"
  } >"$json"
  log "results written to $json"
}

# ---------------------------------------------------------------- crash-loop scenario
# crashy_worker: fixture/crashy's shared worker as the admin API reports it (one JSON line).
crashy_worker() {
  curl -s -m 5 -H "Authorization: Bearer $(cat "$tmp/trellisd/admin.token")" \
    "http://127.0.0.1:${admin_port_of[trellisd]}/v1/plugins" |
    jq -c '.plugins[] | select(.id == "fixture/crashy") | .workers[]? | select(.tenant == "*")'
}

crashloop() {
  local r phase c=${conns[0]} out line k crash_out cline state i reached
  local -a runs=() crash_runs=() v_rps v_p50 v_p99
  declare -A crps=() cp50=() cp99=() cerr=() ccpu=()
  local hz t0 t1
  hz=$(getconf CLK_TCK)
  command -v jq >/dev/null || { log "crashloop: needs jq to read the admin API"; return 1; }
  local code
  code=$(curl -s -o /dev/null -m 5 -w '%{http_code}' -H "Authorization: Bearer $KEY" \
    "http://127.0.0.1:${port[trellisd]}/crashy/ok")
  [[ $code == 200 ]] || { log "crashloop: GET /crashy/ok answered $code, not 200"; return 1; }
  local load_before load_after
  load_before=$(cut -d' ' -f1-3 /proc/loadavg)
  log "crashloop: $TARGET at $c connections alone, then while $CL_CONNS connection(s) call" \
    "/crashy/segv (every ${CL_DELAY_MS} ms each) in a crash-looping worker; $ROUNDS round(s) of" \
    "${DURATION}s (+${WARMUP}s warm-up); load average $load_before"

  for ((r = 1; r <= ROUNDS; r++)); do
    for phase in alone crashloop; do
      out=$tmp/healthy-$phase-$r.txt
      if [[ $phase == crashloop ]]; then
        crash_out=$tmp/crash-$r.txt
        # Stopped with SIGINT (wrk then reports) after the healthy run; the duration is a cap.
        BENCH_STEADY_DELAY_MS=$CL_DELAY_MS "${wrk_pin[@]}" wrk -t 1 -c "$CL_CONNS" \
          -d "$((60 + WARMUP + DURATION + 10))s" \
          --latency -s bench/wrk/crash.lua -H "Authorization: Bearer $KEY" \
          "http://127.0.0.1:${port[trellisd]}/crashy/segv" >"$crash_out" 2>&1 &
        flood_pid=$!
        # Measure only once the worker is in its crash-loop state (5 failures in a row; the
        # backoff doubles from 0.5 s, so about 4 s after the first crash).
        reached=0
        for ((i = 0; i < 240; i++)); do
          state=$(crashy_worker | jq -r '.state' 2>/dev/null || true)
          if [[ $state == crashlooping ]]; then reached=1; break; fi
          sleep 0.25
        done
        ((reached)) || log "round $r: fixture/crashy did not reach crashlooping in 60 s (state '$state')"
      fi
      ((WARMUP == 0)) || wrk_run trellisd "$c" "$WARMUP" "$tmp/warmup.txt"
      t0=$(cpu_ticks "${server_pid[trellisd]}")
      wrk_run trellisd "$c" "$DURATION" "$out"
      t1=$(cpu_ticks "${server_pid[trellisd]}")
      if [[ $phase == crashloop ]]; then
        state=$(crashy_worker)
        kill -INT "$flood_pid" 2>/dev/null || true
        wrk_wait flood_pid
        line=$(grep '^BENCH_RESULT ' "$crash_out" || true)
        cline=$(grep '^BENCH_CRASH ' "$crash_out" || true)
        if [[ -n "$line" && -n "$cline" ]]; then
          printf 'round %d  crashing client  c=%-4d %8s requests  502 %s  504 %s  2xx %s  other %s  socket errors %s\n' \
            "$r" "$CL_CONNS" "$(field requests "$line")" "$(field status_502 "$cline")" \
            "$(field status_504 "$cline")" "$(field status_2xx "$cline")" \
            "$(field status_other "$cline")" "$(field socket_errors "$line")"
          printf 'round %d  fixture/crashy worker after the run: %s\n' "$r" "${state:-n/a}"
          crash_runs+=("$(printf '{"round": %d, "connections": %d, "requests": %s, "status_502": %s, "status_504": %s, "status_2xx": %s, "status_other": %s, "socket_errors": %s, "crashlooping_before_measuring": %s, "worker_after": %s}' \
            "$r" "$CL_CONNS" "$(field requests "$line")" "$(field status_502 "$cline")" \
            "$(field status_504 "$cline")" "$(field status_2xx "$cline")" \
            "$(field status_other "$cline")" "$(field socket_errors "$line")" \
            "$( ((reached)) && echo true || echo false)" "${state:-null}")")
        else
          log "round $r: the crashing client's wrk gave no result:"
          cat "$crash_out" >&2
        fi
      fi
      line=$(grep '^BENCH_RESULT ' "$out" || true)
      if [[ -z "$line" ]]; then
        log "round $r, healthy $phase: wrk gave no result:"
        cat "$out" >&2
        continue
      fi
      k=$phase,$r
      crps[$k]=$(field rps "$line")
      cp50[$k]=$(field p50_us "$line")
      cp99[$k]=$(field p99_us "$line")
      cerr[$phase]=$((${cerr[$phase]:-0} + $(field non2xx "$line") + $(field socket_errors "$line")))
      # trellisd's CPU per healthy request (in the crash loop it includes the kernel's work
      # on the crashing client's requests; the worker processes are not trellisd's).
      ccpu[$k]=$(awk -v t=$((t1 - t0)) -v hz="$hz" -v n="$(field requests "$line")" \
        'BEGIN { if (n > 0) printf "%.3f", t * 1e6 / hz / n }')
      printf 'round %d  healthy %-9s c=%-4d %10.0f req/s  p50 %6d us  p99 %6d us  cpu %7.3f us/req  non2xx %d  socket errors %d\n' \
        "$r" "$phase" "$c" "${crps[$k]}" "${cp50[$k]}" "${cp99[$k]}" "${ccpu[$k]:-0}" \
        "$(field non2xx "$line")" "$(field socket_errors "$line")"
      runs+=("$(printf '{"round": %d, "phase": "%s", "connections": %d, "rps": %s, "p50_us": %s, "p99_us": %s, "cpu_us_per_request": %s, "requests": %s, "non2xx": %s, "socket_errors": %s}' \
        "$r" "$phase" "$c" "${crps[$k]}" "${cp50[$k]}" "${cp99[$k]}" "$(json_num "${ccpu[$k]}")" \
        "$(field requests "$line")" "$(field non2xx "$line")" "$(field socket_errors "$line")")")
    done
  done
  load_after=$(cut -d' ' -f1-3 /proc/loadavg)

  local -A m_rps=() m_p50=() m_p99=() m_cpu=()
  local -a v_cpu
  for phase in alone crashloop; do
    v_rps=() v_p50=() v_p99=() v_cpu=()
    for ((r = 1; r <= ROUNDS; r++)); do
      [[ -n "${crps[$phase,$r]:-}" ]] || continue
      v_rps+=("${crps[$phase,$r]}")
      v_p50+=("${cp50[$phase,$r]}")
      v_p99+=("${cp99[$phase,$r]}")
      [[ -z "${ccpu[$phase,$r]:-}" ]] || v_cpu+=("${ccpu[$phase,$r]}")
    done
    m_rps[$phase]=$(mean "${v_rps[@]}")
    m_p50[$phase]=$(mean "${v_p50[@]}")
    m_p99[$phase]=$(mean "${v_p99[@]}")
    m_cpu[$phase]=$(printf '%s\n' "${v_cpu[@]}" | awk 'NF { s += $1; n++ } END { if (n) printf "%.3f", s / n }')
  done
  local ratio="" increase="" verdict="n/a" errors=$((${cerr[alone]:-0} + ${cerr[crashloop]:-0}))
  if [[ -n "${m_p99[alone]}" && -n "${m_p99[crashloop]}" ]]; then
    ratio=$(awk -v a="${m_p99[alone]}" -v b="${m_p99[crashloop]}" 'BEGIN { if (a > 0) printf "%.3f", b / a }')
    increase=$(pct_change "${m_p99[alone]}" "${m_p99[crashloop]}")
    verdict=$(awk -v i="$increase" -v e="${cerr[crashloop]:-0}" \
      'BEGIN { print ((i + 0 < 20 && e == 0) ? "met" : "not met") }')
  fi
  local total_502=0 total_requests=0 one
  for one in "${crash_runs[@]}"; do
    total_502=$((total_502 + $(jq '.status_502' <<<"$one")))
    total_requests=$((total_requests + $(jq '.requests' <<<"$one")))
  done

  echo
  echo "Crash loop: one trellisd ($SERVER_THREADS thread(s)). The healthy client (wrk -t$WRK_THREADS,"
  echo "$c connections) calls $TARGET (trellis/echo-c, in process) alone, then while a second"
  echo "client ($CL_CONNS connection(s), ${CL_DELAY_MS} ms pause) calls /crashy/segv of fixture/crashy in"
  echo "a worker process that crashes on every call and is in its crash-loop state (backoff;"
  echo "its calls are answered 502 at once while it waits). ${DURATION}s x $ROUNDS round(s); means over rounds."
  echo "cpu = trellisd's user+system time per healthy request (/proc/<pid>/stat)."
  printf '%-10s %12s %12s %12s %14s %14s\n' healthy rps p50 p99 "cpu us/req" "errors (sum)"
  for phase in alone crashloop; do
    printf '%-10s %12s %12s %12s %14s %14s\n' "$phase" "$(or_na "${m_rps[$phase]}")" \
      "$(or_na "${m_p50[$phase]:+${m_p50[$phase]} us}")" \
      "$(or_na "${m_p99[$phase]:+${m_p99[$phase]} us}")" "$(or_na "${m_cpu[$phase]}")" \
      "${cerr[$phase]:-0}"
  done
  echo
  echo "healthy p99 during the crash loop / alone: $(or_na "$ratio") ($(or_na "${increase:+$increase%}"))"
  echo "errors the healthy client saw: $errors (non-2xx + socket errors, both phases)"
  echo "the crashing client: $total_502 answers 502 of $total_requests requests"
  echo "load average: $load_before at the start, $load_after at the end ($(nproc) CPUs)"
  echo "Target: no errors for the healthy client and its p99 up by less than 20%: $verdict"
  echo "Benchmarks are informational: slow numbers never fail this script."
  mkdir -p build/bench
  local IFS=,
  {
    printf '{\n  "scenario": "crashloop",\n'
    printf '  "date": "%s",\n' "$(date -u +%Y-%m-%dT%H:%M:%SZ)"
    printf '  "commit": "%s",\n' "$(git -C "$repo" rev-parse --short HEAD 2>/dev/null || echo unknown)"
    printf '  "host": {"cpus": %d, "kernel": "%s", "loadavg_start": "%s", "loadavg_end": "%s"},\n' \
      "$(nproc)" "$(uname -r)" "$load_before" "$load_after"
    printf '  "target": "%s", "connections": %d, "duration_s": %d, "warmup_s": %d, "rounds": %d,\n' \
      "$TARGET" "$c" "$DURATION" "$WARMUP" "$ROUNDS"
    printf '  "crash_client": {"connections": %d, "delay_ms": %d, "requests": %d, "status_502": %d},\n' \
      "$CL_CONNS" "$CL_DELAY_MS" "$total_requests" "$total_502"
    printf '  "summary": {"alone": {"rps": %s, "p50_us": %s, "p99_us": %s, "cpu_us_per_request": %s, "errors": %d},\n' \
      "$(json_num "${m_rps[alone]}")" "$(json_num "${m_p50[alone]}")" \
      "$(json_num "${m_p99[alone]}")" "$(json_num "${m_cpu[alone]}")" "${cerr[alone]:-0}"
    printf '              "crashloop": {"rps": %s, "p50_us": %s, "p99_us": %s, "cpu_us_per_request": %s, "errors": %d},\n' \
      "$(json_num "${m_rps[crashloop]}")" "$(json_num "${m_p50[crashloop]}")" \
      "$(json_num "${m_p99[crashloop]}")" "$(json_num "${m_cpu[crashloop]}")" "${cerr[crashloop]:-0}"
    printf '              "p99_ratio": %s, "p99_increase_pct": %s, "target_pct": 20, "target_met": %s},\n' \
      "$(json_num "$ratio")" "$(json_num "$increase")" \
      "$(case $verdict in met) echo true ;; "not met") echo false ;; *) echo null ;; esac)"
    printf '  "healthy_runs": [%s],\n' "${runs[*]}"
    printf '  "crash_runs": [%s]\n}\n' "${crash_runs[*]}"
  } >build/bench/crashloop.json
  log "results written to build/bench/crashloop.json"
}

if [[ $scenario == crashloop ]]; then
  crashloop || status=1
  exit "$status"
fi

if [[ $scenario == isolated ]]; then
  isolation_overhead || status=1
  if ((ISOLATED_BODY_KB > 0)); then isolation_overhead body || status=1; fi
  exit "$status"
fi

if [[ $scenario == policy || $scenario == usage || $scenario == transit ]]; then
  overhead "$scenario" || status=1
  exit "$status"
fi

if [[ $scenario == noisy-neighbour ]]; then
  noisy_neighbour || status=1
  exit "$status"
fi

total=$((ROUNDS * ${#conns[@]} * ${#active[@]} * (DURATION + WARMUP)))
log "measuring ${active[*]} at ${conns[*]} connections, $ROUNDS round(s) of ${DURATION}s" \
  "(+${WARMUP}s warm-up) each: about ${total}s"

for ((r = 1; r <= ROUNDS; r++)); do
  order=("${active[@]}")
  # Alternate who goes first so slow drift (heat, other load) does not favour one side.
  if ((r % 2 == 0 && ${#active[@]} == 2)); then order=("${active[1]}" "${active[0]}"); fi
  for c in "${conns[@]}"; do
    for s in "${order[@]}"; do
      out=$tmp/wrk-$s-$c-$r.txt
      ((WARMUP == 0)) || wrk_run "$s" "$c" "$WARMUP" "$tmp/warmup.txt"
      t0=$(tree_ticks "${server_pid[$s]}")
      wrk_run "$s" "$c" "$DURATION" "$out"
      t1=$(tree_ticks "${server_pid[$s]}")
      line=$(grep '^BENCH_RESULT ' "$out" || true)
      if [[ -z "$line" ]]; then
        log "round $r, $s, $c connections: wrk gave no result:"
        cat "$out" >&2
        continue
      fi
      k=$s,$c,$r
      rps[$k]=$(field rps "$line")
      p50[$k]=$(field p50_us "$line")
      p99[$k]=$(field p99_us "$line")
      non2xx=$(field non2xx "$line")
      sockerr=$(field socket_errors "$line")
      if ((non2xx > 0 || sockerr > 0)); then bad[$s,$c]=1; fi
      # The server's own CPU per request: unlike req/s, barely moved by other load.
      cpu[$k]=$(awk -v t=$((t1 - t0)) -v hz="$(getconf CLK_TCK)" -v n="$(field requests "$line")" \
        'BEGIN { if (n > 0) printf "%.2f", t * 1e6 / hz / n }')
      printf 'round %d  %-8s c=%-4d %10.0f req/s  p50 %6d us  p99 %6d us  cpu %6s us/req  non2xx %d  socket errors %d\n' \
        "$r" "$s" "$c" "${rps[$k]}" "${p50[$k]}" "${p99[$k]}" "${cpu[$k]:-n/a}" "$non2xx" "$sockerr"
      runs_json+=("$(printf '{"round": %d, "server": "%s", "connections": %d, "rps": %s, "p50_us": %s, "p99_us": %s, "cpu_us_per_request": %s, "requests": %s, "non2xx": %s, "socket_errors": %s}' \
        "$r" "$s" "$c" "${rps[$k]}" "${p50[$k]}" "${p99[$k]}" "$(json_num "${cpu[$k]}")" \
        "$(field requests "$line")" "$non2xx" "$sockerr")")
    done
  done
done

# ---------------------------------------------------------------- summary
# mean_rps SERVER C / worst_p99 SERVER C over the rounds that produced a result; "" if none.
mean_rps() {
  local r sum=0 n=0
  for ((r = 1; r <= ROUNDS; r++)); do
    [[ -n "${rps[$1,$2,$r]:-}" ]] || continue
    sum=$(awk -v a="$sum" -v b="${rps[$1,$2,$r]}" 'BEGIN { printf "%.1f", a + b }')
    n=$((n + 1))
  done
  ((n)) && awk -v s="$sum" -v n="$n" 'BEGIN { printf "%.1f", s / n }'
  return 0
}
# mean_cpu SERVER C: its CPU us per request, mean over the rounds; "" if none.
mean_cpu() {
  local r v=()
  for ((r = 1; r <= ROUNDS; r++)); do [[ -z "${cpu[$1,$2,$r]:-}" ]] || v+=("${cpu[$1,$2,$r]}"); done
  ((${#v[@]})) && printf '%s\n' "${v[@]}" | awk '{ s += $1 } END { printf "%.2f", s / NR }'
  return 0
}
worst_p99() {
  local r worst=""
  for ((r = 1; r <= ROUNDS; r++)); do
    [[ -n "${p99[$1,$2,$r]:-}" ]] || continue
    if [[ -z "$worst" ]] || ((p99[$1,$2,$r] > worst)); then worst=${p99[$1,$2,$r]}; fi
  done
  echo "$worst"
}

echo
if [[ $scenario == kv ]]; then
  echo "trellisd (GET /hello/{name} via trellis/hello: a KV read and a compare-and-set write,"
  echo "group-committed to SQLite with synchronous=FULL) vs peer (nginx + Lua: the same bearer"
  echo "check and tenant counter, then INCR on redis-server with appendonly yes, appendfsync"
  echo "always). Names u1..u$KV_KEYS at random. Loopback, wrk -t$WRK_THREADS,"
elif [[ $scenario == tls ]]; then
  echo "trellisd over TLS ($TARGET via trellis/echo-c, tenant key resolution) vs peer (nginx + Lua,"
  echo "the same work) over TLS: one certificate (EC P-256), TLS 1.3 TLS_AES_128_GCM_SHA256,"
  echo "kept-alive connections. Loopback, wrk -t$WRK_THREADS,"
else
  echo "trellisd ($TARGET via trellis/echo-c, tenant key resolution) vs peer (nginx + Lua:"
  echo "bearer allow-list, per-tenant per-second counter, 2-byte body). Loopback, wrk -t$WRK_THREADS,"
fi
echo "${DURATION}s x $ROUNDS round(s); rps and cpu = mean over rounds, p99 = worst round; cpu ="
echo "the server's user+system time (nginx: master and workers) per request, load: $(cut -d' ' -f1-3 /proc/loadavg)."
if ((${#server_pin[@]})); then
  echo "Pinned: servers on CPU 0 (one thread/worker), wrk on CPU 1."
else
  echo "Servers ($SERVER_THREADS threads/workers) and wrk share every core."
fi
printf '%-11s %14s %14s %14s %14s %14s %14s %14s\n' connections "trellisd rps" "peer rps" \
  "trellisd/peer" "trellisd p99" "peer p99" "trellisd cpu" "peer cpu"
summary_json=()
notes=()
for c in "${conns[@]}"; do
  t_rps=$(mean_rps trellisd "$c")
  n_rps=$(mean_rps peer "$c")
  t_p99=$(worst_p99 trellisd "$c")
  n_p99=$(worst_p99 peer "$c")
  ratio=""
  if [[ -n "$t_rps" && -n "$n_rps" ]]; then
    ratio=$(awk -v a="$t_rps" -v b="$n_rps" 'BEGIN { if (b > 0) printf "%.2f", a / b }')
  fi
  mark=""
  for s in trellisd peer; do
    if [[ -n "${bad[$s,$c]:-}" ]]; then
      mark="*"
      notes+=("* c=$c: $s had error responses or socket errors; see the per-round lines")
    fi
  done
  t_cpu=$(mean_cpu trellisd "$c")
  n_cpu=$(mean_cpu peer "$c")
  printf '%-11s %14s %14s %14s %14s %14s %14s %14s\n' "$c$mark" "$(or_na "$t_rps")" \
    "$(or_na "$n_rps")" "$(or_na "$ratio")" "$(or_na "${t_p99:+$t_p99 us}")" \
    "$(or_na "${n_p99:+$n_p99 us}")" "$(or_na "${t_cpu:+$t_cpu us/req}")" \
    "$(or_na "${n_cpu:+$n_cpu us/req}")"
  summary_json+=("$(printf '{"connections": %d, "trellisd_rps": %s, "peer_rps": %s, "ratio": %s, "trellisd_p99_us": %s, "peer_p99_us": %s, "trellisd_cpu_us_per_request": %s, "peer_cpu_us_per_request": %s}' \
    "$c" "$(json_num "$t_rps")" "$(json_num "$n_rps")" "$(json_num "$ratio")" \
    "$(json_num "$t_p99")" "$(json_num "$n_p99")" "$(json_num "$t_cpu")" "$(json_num "$n_cpu")")")
  if [[ $scenario == kv && -n "$t_rps" ]]; then
    gain=$(awk -v a="$t_rps" -v b="$KV_BASELINE" 'BEGIN { printf "%.1f", a / b }')
    verdict=$(awk -v r="${ratio:-0}" -v g="$gain" \
      'BEGIN { print ((r >= 1.0 && g >= 10) ? "met" : "not met") }')
    notes+=("c=$c: trellisd ${gain}x its $KV_BASELINE req/s before group commit; trellisd/peer ${ratio:-n/a}: target $verdict")
  elif [[ $scenario == tls && $c == 32 && -n "$ratio" ]]; then
    verdict=$(awk -v r="$ratio" 'BEGIN { print ((r >= 1.0) ? "met" : "not met") }')
    notes+=("target at 32 connections: trellisd/peer >= 1.0 over TLS: $verdict")
  elif [[ $c == 32 && -n "$ratio" ]]; then
    verdict=$(awk -v r="$ratio" -v p="$t_p99" \
      'BEGIN { print ((r >= 1.0 && p <= 1000) ? "met" : "not met") }')
    notes+=("target at 32 connections: trellisd/peer >= 1.0 and trellisd p99 <= 1 ms: $verdict")
  fi
done
echo
((${#notes[@]})) && printf '%s\n' "${notes[@]}"
if [[ $scenario == kv ]]; then
  echo "Target: trellisd/peer >= 1.0 and trellisd >= 10x $KV_BASELINE req/s (before group commit)."
elif [[ $scenario == tls ]]; then
  echo "Target: ratio trellisd/peer >= 1.0 at 32 connections."
else
  echo "Target: ratio trellisd/peer >= 1.0 at 32 connections, with trellisd p99 <= 1 ms."
fi

# ---------------------------------------------------------------- kv: one hot key
# metric_sum NAME: the sum of trellisd's /metrics samples of NAME (0 if none).
metric_sum() {
  local admin token
  admin=$(sed -n 's/.*"admin_port"[[:space:]]*:[[:space:]]*\([0-9][0-9]*\).*/\1/p' \
    "$tmp/trellisd/ready.json")
  token=$(cat "$tmp/trellisd/admin.token")
  curl -s -m 5 -H "Authorization: Bearer $token" "http://127.0.0.1:$admin/metrics" |
    awk -v n="$1" '$1 == n || index($1, n "{") == 1 { s += $NF } END { printf "%d", s }'
}

contention_json=()
if [[ $scenario == kv ]]; then
  c=${conns[0]}
  echo
  echo "Contention: every request on the one name \"hot\", $c connections, ${DURATION}s. The peer's"
  echo "INCR cannot conflict; trellisd's compare-and-set retries (up to 16 times) when another"
  echo "request's write to the key committed between its read and its write."
  printf '%-9s %12s %10s %12s %12s %16s\n' server rps "non-2xx" "writes" "conflicts" "conflict rate"
  for s in "${active[@]}"; do
    out=$tmp/wrk-hot-$s.txt
    if [[ $s == trellisd ]]; then
      g0=$(metric_sum trellis_plugin_hello_greetings_total)
      k0=$(metric_sum trellis_plugin_hello_cas_conflicts_total)
    fi
    BENCH_KV_HOT=hot wrk_run "$s" "$c" "$DURATION" "$out"
    line=$(grep '^BENCH_RESULT ' "$out" || true)
    [[ -n "$line" ]] || { log "hot key, $s: wrk gave no result:"; cat "$out" >&2; continue; }
    writes=n/a conflicts=n/a rate=n/a
    if [[ $s == trellisd ]]; then
      writes=$(($(metric_sum trellis_plugin_hello_greetings_total) - g0))
      conflicts=$(($(metric_sum trellis_plugin_hello_cas_conflicts_total) - k0))
      rate=$(awk -v k="$conflicts" -v w="$writes" \
        'BEGIN { if (k + w > 0) printf "%.1f%%", k * 100 / (k + w); else print "n/a" }')
    fi
    printf '%-9s %12s %10s %12s %12s %16s\n' "$s" "$(field rps "$line")" \
      "$(field non2xx "$line")" "$writes" "$conflicts" "$rate"
    contention_json+=("$(printf '{"server": "%s", "connections": %d, "rps": %s, "non2xx": %s, "writes": "%s", "conflicts": "%s", "conflict_rate": "%s"}' \
      "$s" "$c" "$(field rps "$line")" "$(field non2xx "$line")" "$writes" "$conflicts" "$rate")")
  done
  echo "conflict rate = conflicting compare-and-set attempts / all attempts (trellisd metrics)."
  echo "Load average at the end: $(cut -d' ' -f1-3 /proc/loadavg)"
fi

# ---------------------------------------------------------------- tls: handshake-heavy
# A new connection, so a full handshake (no resumption: wrk keeps no sessions), per request.
handshake_json=()
if [[ $scenario == tls ]]; then
  c=$TLS_CLOSE_CONNS
  echo
  echo "Handshake-heavy: a new TLS connection per request (wrk -H 'Connection: close'),"
  echo "$c connections, ${DURATION}s x $ROUNDS round(s); rps = mean over rounds."
  declare -A hrps=()
  for ((r = 1; r <= ROUNDS; r++)); do
    order=("${active[@]}")
    if ((r % 2 == 0 && ${#active[@]} == 2)); then order=("${active[1]}" "${active[0]}"); fi
    for s in "${order[@]}"; do
      out=$tmp/wrk-close-$s-$r.txt
      wrk_extra=(-H "Connection: close")
      ((WARMUP == 0)) || wrk_run "$s" "$c" "$WARMUP" "$tmp/warmup.txt"
      wrk_run "$s" "$c" "$DURATION" "$out"
      wrk_extra=()
      line=$(grep '^BENCH_RESULT ' "$out" || true)
      [[ -n "$line" ]] || { log "handshakes, round $r, $s: wrk gave no result:"; cat "$out" >&2; continue; }
      hrps[$s,$r]=$(field rps "$line")
      printf 'round %d  %-8s c=%-4d %10.0f req/s  p50 %6d us  p99 %6d us  non2xx %d  socket errors %d\n' \
        "$r" "$s" "$c" "${hrps[$s,$r]}" "$(field p50_us "$line")" "$(field p99_us "$line")" \
        "$(field non2xx "$line")" "$(field socket_errors "$line")"
      handshake_json+=("$(printf '{"round": %d, "server": "%s", "connections": %d, "rps": %s, "p50_us": %s, "p99_us": %s, "non2xx": %s, "socket_errors": %s}' \
        "$r" "$s" "$c" "${hrps[$s,$r]}" "$(field p50_us "$line")" "$(field p99_us "$line")" \
        "$(field non2xx "$line")" "$(field socket_errors "$line")")")
    done
  done
  declare -A hmean=()
  for s in trellisd peer; do
    v=()
    for ((r = 1; r <= ROUNDS; r++)); do [[ -z "${hrps[$s,$r]:-}" ]] || v+=("${hrps[$s,$r]}"); done
    hmean[$s]=$(mean "${v[@]}")
  done
  hratio=$(awk -v a="${hmean[trellisd]}" -v b="${hmean[peer]}" \
    'BEGIN { if (a != "" && b > 0) printf "%.2f", a / b }')
  printf '%-11s %14s %14s %14s\n' connections "trellisd rps" "peer rps" "trellisd/peer"
  printf '%-11s %14s %14s %14s\n' "$c" "$(or_na "${hmean[trellisd]}")" "$(or_na "${hmean[peer]}")" \
    "$(or_na "$hratio")"
  handshake_json+=("$(printf '{"summary": true, "connections": %d, "trellisd_rps": %s, "peer_rps": %s, "ratio": %s}' \
    "$c" "$(json_num "${hmean[trellisd]}")" "$(json_num "${hmean[peer]}")" "$(json_num "$hratio")")")
fi
echo "Benchmarks are informational: slow numbers never fail this script."

mkdir -p build/bench
join() {
  local IFS=,
  echo "$*"
}
{
  printf '{\n'
  printf '  "date": "%s",\n' "$(date -u +%Y-%m-%dT%H:%M:%SZ)"
  printf '  "commit": "%s",\n' "$(git -C "$repo" rev-parse --short HEAD 2>/dev/null || echo unknown)"
  printf '  "host": {"cpus": %d, "kernel": "%s"},\n' "$(nproc)" "$(uname -r)"
  printf '  "target": "%s", "duration_s": %d, "warmup_s": %d, "rounds": %d,\n' \
    "$TARGET" "$DURATION" "$WARMUP" "$ROUNDS"
  printf '  "wrk_threads": %d, "server_threads": %d,\n' "$WRK_THREADS" "$SERVER_THREADS"
  printf '  "peer": "nginx %s + lua-nginx-module%s",\n' "$(nginx -v 2>&1 | sed 's#.*/##')" \
    "$([[ $scenario != kv ]] || echo " + redis-server (appendfsync always)")"
  if [[ $scenario == kv ]]; then
    printf '  "scenario": "kv", "keys": %d, "blocking_threads": %d, "baseline_rps": %d,\n' \
      "$KV_KEYS" "$KV_THREADS" "$KV_BASELINE"
    printf '  "contention": [%s],\n' "$(join "${contention_json[@]}")"
  fi
  if [[ $scenario == tls ]]; then
    printf '  "scenario": "tls", "tls": "TLSv1.3 TLS_AES_128_GCM_SHA256, EC P-256",\n'
    printf '  "handshake_heavy": [%s],\n' "$(join "${handshake_json[@]}")"
  fi
  printf '  "summary": [%s],\n' "$(join "${summary_json[@]}")"
  printf '  "runs": [%s]\n' "$(join "${runs_json[@]}")"
  printf '}\n'
} >"$RESULTS"
log "results written to $RESULTS"
exit "$status"
