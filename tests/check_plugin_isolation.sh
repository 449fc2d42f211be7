#!/usr/bin/env bash
# Proves plugins link nothing of the host. A plugin may need only:
#   - the C/C++ runtime (glibc, libstdc++, libgcc);
#   - OpenSSL's libcrypto/libssl and Poco's libPoco* (third-party libraries the marketplace
#     client uses; the registry plugin verifies and signs with it).
# Never a Trellis library. Every undefined symbol must be a versioned runtime symbol, weak,
# or defined by one of the plugin's allow-listed libraries; anything else would have to come
# from the host (trellisd) at load time. Only trellis_plugin_entry may be exported.
# Usage: check_plugin_isolation.sh DIR   (every *.so below DIR is checked)
set -euo pipefail
dir=${1:?usage: check_plugin_isolation.sh DIR}
found=0; bad=0
while IFS= read -r so; do
  found=$((found + 1))
  needed=$(readelf -d "$so" | awk '/NEEDED/ {gsub(/[\[\]]/, "", $5); print $5}')
  third_party=()
  for lib in $needed; do
    case "$lib" in
      libc.so.*|libm.so.*|libstdc++.so.*|libgcc_s.so.*|ld-linux*|libpthread.so.*|libdl.so.*) ;;
      libcrypto.so.*|libssl.so.*|libPoco*.so.*) third_party+=("$lib") ;;
      *) echo "FAIL $so needs $lib"; bad=$((bad + 1)) ;;
    esac
  done
  # Symbols the allow-listed third-party libraries define (resolved as the loader would).
  provided=$(mktemp)
  for lib in "${third_party[@]}"; do
    path=$(ldd "$so" | awk -v l="$lib" '$1 == l {print $3}')
    if [ -z "$path" ] || [ ! -f "$path" ]; then
      echo "FAIL $so needs $lib, which cannot be found"; bad=$((bad + 1)); continue
    fi
    nm -D --defined-only "$path" | awk '{print $NF}' | sed 's/@.*//' >> "$provided"
  done
  sort -u -o "$provided" "$provided"
  # Undefined symbols must come from the runtime's versioned symbols (GLIBC_*, GLIBCXX_*,
  # CXXABI_*, GCC_*), be weak, or be defined by an allow-listed library.
  while read -r sym; do
    if ! grep -qxF "${sym%%@*}" "$provided"; then
      echo "FAIL $so has undefined symbol $sym"; bad=$((bad + 1))
    fi
  done < <(nm -D --undefined-only "$so" | awk '$1 != "w" && $1 != "v" {print $NF}' |
           grep -vE '@(GLIBC|GLIBCXX|CXXABI|GCC)_' || true)
  rm -f "$provided"
  # Belt and braces: no symbol of the kernel or tenants modules, even a resolvable one.
  if nm -DC "$so" | grep -qE 'trellis::(kernel|tenants)::'; then
    echo "FAIL $so references trellis::kernel or trellis::tenants"; bad=$((bad + 1))
  fi
  exported=$(nm -D --defined-only "$so" | awk '$2 ~ /[TDBR]/ {print $3}')
  if [ "$exported" != "trellis_plugin_entry" ]; then
    echo "FAIL $so exports more than trellis_plugin_entry: $(echo $exported | tr '\n' ' ')"
    bad=$((bad + 1))
  fi
done < <(find "$dir" -name '*.so' | sort)
[ "$found" -gt 0 ] || { echo "FAIL no plugin found under $dir"; exit 1; }
[ "$bad" -eq 0 ] || exit 1
echo "OK: $found plugin(s) link nothing of the host"
