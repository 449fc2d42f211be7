#!/usr/bin/env bash
# A third party's view: install the SDK, build sdk/examples/greeter-c out of tree with
# find_package(Trellis) alone, drop it into a plugin directory and call its route on a
# real trellisd.
# Usage: sdk_out_of_tree_test.sh BUILD_DIR SOURCE_DIR
set -euo pipefail
build=${1:?build dir}; src=${2:?source dir}
work=$(mktemp -d); pid=
cleanup() { [ -n "$pid" ] && kill "$pid" 2>/dev/null && wait "$pid" 2>/dev/null; rm -rf "$work"; }
trap cleanup EXIT

cmake --install "$build" --prefix "$work/prefix" >/dev/null
cmake -S "$src/sdk/examples/greeter-c" -B "$work/greeter" -G Ninja \
      -DCMAKE_PREFIX_PATH="$work/prefix" >/dev/null
cmake --build "$work/greeter" >/dev/null
test -f "$work/greeter/plugins/acme-greeter/libacme_greeter.so"
test -f "$work/greeter/plugins/acme-greeter/trellis-plugin.json"

cat > "$work/trellis.yaml" <<YAML
server: {listen: "127.0.0.1:0", threads: 1}
admin: {listen: "127.0.0.1:0", token_file: "$work/admin.token"}
storage: {data_dir: "$work/data"}
log: {level: warn, access_log: "off"}
plugins:
  dirs: ["$work/greeter/plugins"]
  enabled: [{id: acme/greeter}]
tenants:
  - {id: initech, plugins: [acme/greeter], keys: [{key: initech-key}]}
YAML
"$work/prefix/bin/trellisd" --config "$work/trellis.yaml" --ready-file "$work/ready.json" \
  >"$work/log" 2>&1 &
pid=$!
for _ in $(seq 200); do [ -s "$work/ready.json" ] && break; sleep 0.05; done
port=$(sed -E 's/.*"port":([0-9]+).*/\1/' "$work/ready.json")
body=$(curl -sf -H 'Authorization: Bearer initech-key' "http://127.0.0.1:$port/greeter")
if [ "$body" != "hello, initech" ]; then
  echo "FAIL: expected 'hello, initech', got '$body'"; cat "$work/log"; exit 1
fi
echo "OK: out-of-tree C plugin built against the installed SDK and served: $body"
