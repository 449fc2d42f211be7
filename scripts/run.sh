#!/usr/bin/env bash
# Builds the release preset and runs trellisd in the foreground.
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
cmake --build --preset release -j "$(nproc)"

# The default config keeps its state under var/. On first start trellisd generates the
# admin token into var/admin.token (mode 0600) and prints it once.
mkdir -p var/data var/log
exec build/release/kernel/trellisd --config "$config" "${extra[@]}"
