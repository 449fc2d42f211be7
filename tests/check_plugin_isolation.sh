#!/usr/bin/env bash
# Proves plugins link nothing of the host: no plugin may need a Trellis library, and the
# only undefined symbols allowed are those of the C/C++ runtime (glibc, libstdc++, libgcc).
# Usage: check_plugin_isolation.sh DIR   (every *.so below DIR is checked)
set -euo pipefail
dir=${1:?usage: check_plugin_isolation.sh DIR}
found=0; bad=0
while IFS= read -r so; do
  found=$((found + 1))
  needed=$(readelf -d "$so" | awk '/NEEDED/ {gsub(/[\[\]]/, "", $5); print $5}')
  for lib in $needed; do
    case "$lib" in
      libc.so.*|libm.so.*|libstdc++.so.*|libgcc_s.so.*|ld-linux*|libpthread.so.*|libdl.so.*) ;;
      *) echo "FAIL $so needs $lib"; bad=$((bad + 1)) ;;
    esac
  done
  # Undefined symbols must come from the runtime's versioned symbols (GLIBC_*, GLIBCXX_*,
  # CXXABI_*, GCC_*) or be weak; anything else would have to come from the host.
  while read -r sym; do
    echo "FAIL $so has undefined symbol $sym"; bad=$((bad + 1))
  done < <(nm -D --undefined-only "$so" | awk '$1 != "w" && $1 != "v" {print $NF}' |
           grep -vE '@(GLIBC|GLIBCXX|CXXABI|GCC)_' || true)
  exported=$(nm -D --defined-only "$so" | awk '$2 ~ /[TDBR]/ {print $3}')
  if [ "$exported" != "trellis_plugin_entry" ]; then
    echo "FAIL $so exports more than trellis_plugin_entry: $(echo $exported | tr '\n' ' ')"
    bad=$((bad + 1))
  fi
done < <(find "$dir" -name '*.so' | sort)
[ "$found" -gt 0 ] || { echo "FAIL no plugin found under $dir"; exit 1; }
[ "$bad" -eq 0 ] || exit 1
echo "OK: $found plugin(s) link nothing of the host"
