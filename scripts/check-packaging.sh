#!/usr/bin/env bash
# Checks what operators install: the systemd unit and the container recipe.
#
#   scripts/check-packaging.sh [BUILD_DIR]       (default build/debug; needs trellisd built)
#
# 1. config/systemd/trellisd.service passes `systemd-analyze verify` with ExecStart pointing
#    at the built trellisd; any warning (an unknown or misspelt directive) fails.
# 2. The unit keeps its hardening (DynamicUser, ProtectSystem=strict, NoNewPrivileges, …) and
#    Type=notify (trellisd sends READY=1 itself; tests/integration/systemd_notify_test.cc).
# 3. config/systemd/trellis.yaml, the config the unit and the container use, passes
#    `trellisd --check` (with its /var paths moved under a temp folder).
# 4. With a container engine whose daemon answers, config/container/Containerfile is built
#    and the container must answer /healthz; otherwise this step says it was skipped.
set -euo pipefail

repo=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
build=$(cd "${1:-$repo/build/debug}" && pwd)
trellisd=$build/kernel/trellisd
[[ -x "$trellisd" ]] || { echo "check-packaging: build trellisd first ($trellisd)" >&2; exit 2; }
tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT
unit=$repo/config/systemd/trellisd.service
fail=0

# 1. systemd-analyze verify
if command -v systemd-analyze >/dev/null; then
  sed "s|/usr/bin/trellisd|$trellisd|g" "$unit" >"$tmp/trellisd.service"
  if ! out=$(systemd-analyze verify "$tmp/trellisd.service" 2>&1) || [[ -n "$out" ]]; then
    echo "check-packaging: systemd-analyze verify complained:" >&2
    echo "$out" >&2
    fail=1
  else
    echo "check-packaging: systemd-analyze verify: clean"
  fi
else
  echo "check-packaging: systemd-analyze not installed; unit syntax not verified"
fi

# 2. hardening that must not be dropped
for directive in Type=notify DynamicUser=yes ProtectSystem=strict NoNewPrivileges=yes \
  ProtectHome=yes PrivateTmp=yes PrivateDevices=yes CapabilityBoundingSet= \
  RestrictAddressFamilies= SystemCallFilter=@system-service StateDirectory=trellis; do
  grep -q "^$directive" "$unit" || { echo "check-packaging: $unit lacks $directive" >&2; fail=1; }
done

# 3. the packaged config is valid
sed -e "s|/var/lib/trellis|$tmp/state|g" -e "s|/var/log/trellis|$tmp/log|g" \
  -e "s|/usr/lib/trellis/plugins|$build/plugins|g" \
  "$repo/config/systemd/trellis.yaml" >"$tmp/trellis.yaml"
mkdir -p "$tmp/state/plugins" "$tmp/log"
if "$trellisd" --check --config "$tmp/trellis.yaml"; then :; else fail=1; fi

# 4. the container, where an engine can build it
engine=""
for e in podman docker; do
  if command -v "$e" >/dev/null && timeout 10 "$e" info >/dev/null 2>&1; then engine=$e; break; fi
done
if [[ -z "$engine" ]]; then
  echo "check-packaging: no container engine with a running daemon; Containerfile NOT built"
else
  tag=trellis-packaging-check:$$
  "$engine" build -f "$repo/config/container/Containerfile" -t "$tag" "$repo"
  cid=$("$engine" run -d -p 127.0.0.1::8080 "$tag")
  port=$("$engine" port "$cid" 8080 | head -1 | sed 's/.*://')
  ok=0
  for _ in $(seq 1 60); do
    if curl -fsS "http://127.0.0.1:$port/healthz" >/dev/null 2>&1; then ok=1; break; fi
    sleep 1
  done
  "$engine" rm -f "$cid" >/dev/null
  "$engine" rmi "$tag" >/dev/null || true
  if ((ok)); then echo "check-packaging: container answered /healthz"; else
    echo "check-packaging: the container did not answer /healthz within 60 s" >&2
    fail=1
  fi
fi

exit $fail
