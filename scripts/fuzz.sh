#!/usr/bin/env bash
# Builds the libFuzzer harnesses (CMake preset `fuzz`: clang, ASan + UBSan, in build/fuzz)
# and runs each one for a bounded time from its seed corpus (tests/fuzz/corpus/<name>).
#
#   scripts/fuzz.sh                  every harness, 60 s each, one at a time
#   scripts/fuzz.sh -t 30 -j 2       30 s each, two side by side (what CI runs)
#   scripts/fuzz.sh semver zip       only these harnesses
#   scripts/fuzz.sh --no-build ...   run what build/fuzz already holds
#
# Env: FUZZ_SECONDS and FUZZ_JOBS (defaults for -t and -j), FUZZ_ARGS (extra libFuzzer
# flags, e.g. FUZZ_ARGS="-max_len=65536").
# Inputs that reach new code are kept in build/fuzz/corpus/<name>, not in the tree. A crash,
# sanitizer report or failed property leaves build/fuzz/findings/<name>/crash-* and fails
# the run; docs/fuzzing.md says how to reproduce one and turn it into a regression test.
set -euo pipefail

repo=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
cd "$repo"
usage() { sed -n '2,15s/^# \{0,1\}//p' "$0"; }

seconds=${FUZZ_SECONDS:-60}
jobs=${FUZZ_JOBS:-1}
build=1
names=()
while (($#)); do
  case "$1" in
    -t) seconds=$2; shift 2 ;;
    -j) jobs=$2; shift 2 ;;
    --no-build) build=0; shift ;;
    -h | --help) usage; exit 0 ;;
    -*) echo "fuzz.sh: unknown option '$1'" >&2; usage >&2; exit 2 ;;
    *) names+=("$1"); shift ;;
  esac
done
read -r -a extra <<<"${FUZZ_ARGS:-}"
# A harness's seeds: tests/fuzz/corpus/<name>, or a plugin's own test/fuzz/corpus/<name>.
corpus_of() {
  local dir
  for dir in tests/fuzz/corpus/"$1" plugins/*/test/fuzz/corpus/"$1"; do
    [[ -d "$dir" ]] && { echo "$dir"; return; }
  done
}
((${#names[@]})) || mapfile -t names < <(ls tests/fuzz/corpus plugins/*/test/fuzz/corpus 2>/dev/null |
  grep -v -e '^$' -e ':$')

out=build/fuzz
if ((build)); then
  cmake --preset fuzz >/dev/null
  cmake --build --preset fuzz -j "$(nproc)"
fi

# Leaks and UBSan reports are findings too (UBSan only warns by default).
export ASAN_OPTIONS=${ASAN_OPTIONS:-detect_leaks=1}
export UBSAN_OPTIONS=${UBSAN_OPTIONS:-print_stacktrace=1:halt_on_error=1}
# Reports name files and lines (Debian's llvm-14 ships the symbolizer under this name only).
if [[ -z "${ASAN_SYMBOLIZER_PATH:-}" && -x /usr/lib/llvm-14/bin/llvm-symbolizer ]]; then
  export ASAN_SYMBOLIZER_PATH=/usr/lib/llvm-14/bin/llvm-symbolizer
fi

# run <name>: one harness for $seconds; its log in build/fuzz/logs/<name>.log.
run() {
  local name=$1 bin=$out/tests/fuzz/fuzz_$1
  local dict=tests/fuzz/dict/$name.dict flags=()
  case "$name" in
    manifest | canonical_json | lua_json | signed_metadata | json_schema | json_object) dict=tests/fuzz/dict/json.dict ;;
  esac
  [[ -f "$dict" ]] && flags+=("-dict=$dict")
  mkdir -p "$out/corpus/$name" "$out/findings/$name" "$out/logs"
  local rc=0
  "$bin" -max_total_time="$seconds" -timeout=10 -rss_limit_mb=2048 -print_final_stats=1 \
    -artifact_prefix="$out/findings/$name/" "${flags[@]}" "${extra[@]}" \
    "$out/corpus/$name" "$(corpus_of "$name")" >"$out/logs/$name.log" 2>&1 || rc=$?
  echo "$rc" >"$out/logs/$name.rc"
}

declare -A pid_of=()
failed=()
finish() {  # finish <name>: waits for it and reports
  local name=$1 log=$out/logs/$1.log runs
  wait "${pid_of[$name]}" 2>/dev/null || true
  if [[ "$(cat "$out/logs/$name.rc" 2>/dev/null)" == 0 ]]; then
    runs=$(sed -n 's/^stat::number_of_executed_units: *//p' "$log")
    echo "fuzz.sh: $name passed (${runs:-?} inputs in ${seconds}s)"
  else
    failed+=("$name")
    echo "fuzz.sh: $name FAILED; log: $log" >&2
    grep -E -A40 'ERROR: |property failed|runtime error' "$log" | head -60 >&2 || tail -40 "$log" >&2
  fi
  unset "pid_of[$name]"
}

for name in "${names[@]}"; do
  [[ -x "$out/tests/fuzz/fuzz_$name" ]] || { echo "fuzz.sh: no harness '$name'" >&2; exit 2; }
  while ((${#pid_of[@]} >= jobs)); do
    wait -n || true
    for n in "${!pid_of[@]}"; do kill -0 "${pid_of[$n]}" 2>/dev/null || finish "$n"; done
  done
  rm -f "$out/logs/$name.rc"
  run "$name" &
  pid_of[$name]=$!
done
for n in "${!pid_of[@]}"; do finish "$n"; done

if ((${#failed[@]})); then
  echo "fuzz.sh: FAILED: ${failed[*]} (inputs in $out/findings/<name>/)" >&2
  exit 1
fi
echo "fuzz.sh: all ${#names[@]} harnesses passed (${seconds}s each)"
