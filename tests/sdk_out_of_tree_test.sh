#!/usr/bin/env bash
# A third party's view: install the SDK, build sdk/examples/greeter-c and lay out
# sdk/examples/greeter-lua out of tree with find_package(Trellis) alone, drop them into
# plugin directories and call their routes on a real trellisd.
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
cmake -S "$src/sdk/examples/greeter-lua" -B "$work/greeter-lua" -G Ninja \
      -DCMAKE_PREFIX_PATH="$work/prefix" >/dev/null
cmake --build "$work/greeter-lua" >/dev/null
test -f "$work/greeter-lua/plugins/acme-greeter-lua/main.lua"
test -f "$work/greeter-lua/plugins/acme-greeter-lua/trellis-plugin.json"

cat > "$work/trellis.yaml" <<YAML
server: {listen: "127.0.0.1:0", threads: 1}
admin: {listen: "127.0.0.1:0", token_file: "$work/admin.token"}
storage: {data_dir: "$work/data"}
log: {level: warn, access_log: "off"}
plugins:
  dirs: ["$work/greeter/plugins", "$work/greeter-lua/plugins"]
  enabled: [{id: acme/greeter}, {id: acme/greeter-lua}]
tenants:
  - {id: initech, plugins: [acme/greeter, acme/greeter-lua], keys: [{key: initech-key}]}
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
lua=$(curl -sf -H 'Authorization: Bearer initech-key' "http://127.0.0.1:$port/greeter-lua/bob")
case "$lua" in
  *'"greeting":"Hello, bob"'*) ;;
  *) echo "FAIL: expected a greeting for bob from greeter-lua, got '$lua'"; cat "$work/log"; exit 1 ;;
esac
echo "OK: out-of-tree C and Lua plugins built against the installed SDK and served: $body; $lua"
