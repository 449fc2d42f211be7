#!/usr/bin/env bash
# Builds what the server needs (trellisd, the trellis CLI, the bundled plugins; not the tests
# or benchmarks) with the release preset, runs trellisd in the foreground, and prints the
# first requests to try once it is serving.
#
#   scripts/run.sh                          uses config/trellis.yaml
#   scripts/run.sh --config my.yaml [...]   another config; remaining args go to trellisd
#
# Works from any directory; a relative --config is taken relative to where you ran it.
set -euo pipefail

caller_dir=$PWD
repo=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
cd "$repo"

config=config/trellis.yaml
extra=()
while (($#)); do
  case "$1" in
    --config)
      [[ $# -ge 2 ]] || { echo "run.sh: --config needs a file" >&2; exit 2; }
      config=$2
      [[ "$config" = /* ]] || config="$caller_dir/$config"
      shift 2
      ;;
    --config=*)
      config=${1#--config=}
      [[ "$config" = /* ]] || config="$caller_dir/$config"
      shift
      ;;
    *) extra+=("$1"); shift ;;
  esac
done
[[ -f "$config" ]] || { echo "run.sh: config file not found: $config" >&2; exit 2; }

scripts/deps.sh
cmake --preset release
cmake --build --preset release -j "$(nproc)" --target trellisd trellis trellis_all_plugins

# The default config keeps its state under var/. On first start trellisd generates the
# admin token into var/admin.token (mode 0600) and prints it once.
mkdir -p var/data var/log
ready=var/run.ready
rm -f "$ready"
# Once trellisd has written its ready file (bound ports), say what to try. The watcher
# exits with trellisd (exec keeps this PID).
(
  while [[ ! -s "$ready" ]]; do
    sleep 0.2
    kill -0 $$ 2>/dev/null || exit 0
  done
  port=$(sed -n 's/.*"port":\([0-9]*\).*/\1/p' "$ready")
  cat <<EOT

trellisd is serving. Try, from another terminal:
  curl -H 'Authorization: Bearer demo-key-change-me' http://127.0.0.1:${port}/hello/world
  build/release/kernel/trellis status          # finds the admin API and token by itself

EOT
) &
exec build/release/kernel/trellisd --config "$config" --ready-file "$ready" "${extra[@]}"
