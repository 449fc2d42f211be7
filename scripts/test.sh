#!/usr/bin/env bash
# Installs dependencies (PostgreSQL server included), then configures, builds and tests each
# CMake preset, then runs every fuzz harness briefly.
#
#   scripts/test.sh                 presets debug and asan, then fuzz (what CI runs)
#   scripts/test.sh release tsan    any presets from CMakePresets.json
#   scripts/test.sh fuzz            the fuzz step alone: scripts/fuzz.sh builds the `fuzz`
#                                   preset and runs each harness FUZZ_SECONDS (default 30)
#                                   under ASan + UBSan, two at a time
#
# Env: TEST_JOBS (parallel ctest jobs, default 2; tests use port 0 and their own temp
# dirs, so integration tests may run side by side), CTEST_ARGS (extra ctest arguments,
# e.g. CTEST_ARGS="-L unit").
# Keeps going after a failing preset so one run shows every failure; exits non-zero if any
# step failed. The last line is the summary.
set -euo pipefail

repo=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
cd "$repo"

presets=("$@")
((${#presets[@]})) || presets=(debug asan fuzz)
jobs=${TEST_JOBS:-2}
read -r -a ctest_extra <<<"${CTEST_ARGS:-}"

# Sanitizer reports must fail the test that triggered them (UBSan only warns by default).
export ASAN_OPTIONS=${ASAN_OPTIONS:-detect_leaks=1}
export UBSAN_OPTIONS=${UBSAN_OPTIONS:-print_stacktrace=1:halt_on_error=1}
export TSAN_OPTIONS=${TSAN_OPTIONS:-halt_on_error=1:second_deadlock_stack=1}

# --postgres: integration tests start their own PostgreSQL server on loopback
# (tests/support/postgres_server.h) and fail, not skip, when it is missing.
scripts/deps.sh --postgres

# The debug, asan and fuzz builds take about 10 GB together; a full disk fails a link
# somewhere in the middle with a message that does not say why.
free_gb=$(($(df --output=avail -k "$repo" | tail -1) / 1024 / 1024))
if ((free_gb < 12)); then
  echo "test.sh: warning: ${free_gb} GB free under $repo; the builds need about 10 GB" >&2
fi

results=()
failed=0
if scripts/check-format.sh; then
  results+=("format: passed")
else
  results+=("format: FAILED")
  failed=1
fi
for p in "${presets[@]}"; do
  start=$SECONDS
  step=""
  if [[ "$p" == fuzz ]]; then
    echo "==> [fuzz] build and run each harness"
    if scripts/fuzz.sh -t "${FUZZ_SECONDS:-30}" -j 2; then
      results+=("fuzz: passed ($((SECONDS - start))s)")
    else
      results+=("fuzz: FAILED ($((SECONDS - start))s; inputs in build/fuzz/findings/)")
      failed=1
    fi
    continue
  fi
  echo "==> [$p] configure"
  if ! cmake --preset "$p"; then
    step=configure
  else
    echo "==> [$p] build"
    if ! cmake --build --preset "$p" -j "$(nproc)"; then
      step=build
    else
      echo "==> [$p] test"
      if ! ctest --preset "$p" --output-on-failure --no-tests=error -j "$jobs" \
        "${ctest_extra[@]}"; then
        step=tests
      fi
    fi
  fi
  took="$((SECONDS - start))s, build/$p $(du -sh "build/$p" 2>/dev/null | cut -f1)"
  if [[ -z "$step" ]]; then
    results+=("$p: passed ($took)")
  else
    results+=("$p: FAILED at $step ($took)")
    failed=1
  fi
done

echo
echo "==> summary"
printf '    %s\n' "${results[@]}"
if ((failed)); then
  echo "test.sh: FAILED (${presets[*]})"
  exit 1
fi
echo "test.sh: ALL PASSED (${presets[*]})"
