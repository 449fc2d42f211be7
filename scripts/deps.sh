#!/usr/bin/env bash
# Installs the Debian 12 packages Trellis needs to build, test, fuzz (clang-14, its libFuzzer
# and sanitizer runtimes, llvm-symbolizer for readable reports) and (optionally) benchmark.
# Idempotent: asks dpkg first and touches apt only when something is missing.
#
#   scripts/deps.sh              build + test dependencies (nginx: the differential framing
#                                test; rsyslog: the audit plugin's syslog forwarding)
#   scripts/deps.sh --bench      + nginx's Lua module, wrk and redis-server (bench/run.sh)
#   scripts/deps.sh --postgres   + a local PostgreSQL server (PostgreSQL integration tests)
#
# Runs apt-get as root directly, otherwise through sudo. Nothing is downloaded outside apt.
set -euo pipefail

usage() { sed -n '2,9s/^# \{0,1\}//p' "$0"; }

packages=(
  build-essential cmake ninja-build pkg-config binutils curl ca-certificates
  libboost-dev libboost-system-dev libpoco-dev libsoci-dev libsqlite3-dev libpq-dev
  libssl-dev libspdlog-dev libfmt-dev liblua5.4-dev libyaml-cpp-dev libcli11-dev
  libgtest-dev libgmock-dev libbenchmark-dev clang-format nginx rsyslog rsyslog-gnutls
  clang-14 libclang-rt-14-dev llvm-14 libseccomp-dev libjemalloc-dev
)
for arg in "$@"; do
  case "$arg" in
    # On Debian 12 the `nginx` package is the server itself (nginx-light only adds the echo
    # module); libnginx-mod-http-lua brings libnginx-mod-http-ndk and lua-resty-core.
    # redis-server (+ redis-cli from redis-tools) is the store of the kv scenario's peer.
    --bench) packages+=(libnginx-mod-http-lua wrk redis-server redis-tools) ;;
    --postgres) packages+=(postgresql) ;;
    -h | --help) usage; exit 0 ;;
    *) echo "deps.sh: unknown option '$arg'" >&2; usage >&2; exit 2 ;;
  esac
done

missing=()
for p in "${packages[@]}"; do
  status=$(dpkg-query -W -f='${db:Status-Status}' "$p" 2>/dev/null || true)
  [[ "$status" == installed ]] || missing+=("$p")
done

if ((${#missing[@]} == 0)); then
  echo "deps.sh: all ${#packages[@]} packages present"
  exit 0
fi

echo "deps.sh: installing ${missing[*]}"
if ((EUID == 0)); then
  sudo=()
elif command -v sudo >/dev/null 2>&1; then
  sudo=(sudo)
else
  echo "deps.sh: need root or sudo to install: ${missing[*]}" >&2
  exit 1
fi
export DEBIAN_FRONTEND=noninteractive
"${sudo[@]}" env DEBIAN_FRONTEND=noninteractive apt-get update -q
"${sudo[@]}" env DEBIAN_FRONTEND=noninteractive \
  apt-get install -y -q --no-install-recommends "${missing[@]}"
