#!/usr/bin/env bash
# A new plugin author's path, literally: take section 1 of docs/plugin-guide.md (its
# CMakeLists.txt, trellis-plugin.json and greeter.c blocks and its build command), build it
# against an installed SDK, serve it from a real trellisd and call /greeter. Then break the
# manifest the two ways trellisd would refuse (ABI, id) and expect the build to say so.
# Usage: plugin_guide_example_test.sh BUILD_DIR SOURCE_DIR
set -euo pipefail
build=${1:?build dir}; src=${2:?source dir}
work=$(mktemp -d); pid=
cleanup() { [ -n "$pid" ] && kill "$pid" 2>/dev/null && wait "$pid" 2>/dev/null; rm -rf "$work"; }
trap cleanup EXIT
fail() { echo "FAIL: $*"; exit 1; }

# Section 1 only: from its heading to the next one.
awk '/^## 1\./{on=1; next} /^## 2\./{on=0} on' "$src/docs/plugin-guide.md" >"$work/section.md"
mkdir "$work/greeter"
# Each "`NAME`:" line followed by a fenced block is a file of the example.
awk -v dir="$work/greeter" '
  /^`[^`]+`:$/ { name = substr($0, 2, length($0) - 3); want = 1; next }
  want && /^```/ { inside = 1; want = 0; file = dir "/" name; printf "" > file; next }
  inside && /^```$/ { inside = 0; close(file); next }
  inside { print >> file }' "$work/section.md"
for f in CMakeLists.txt trellis-plugin.json greeter.c; do
  [ -s "$work/greeter/$f" ] || fail "docs/plugin-guide.md section 1 has no $f block"
done
build_cmd=$(grep -m1 '^cmake -S \. -B build' "$work/section.md") ||
  fail "docs/plugin-guide.md section 1 has no 'cmake -S . -B build' command"

# The SDK where the guide installs it ($HOME/trellis-sdk), from this build.
export HOME="$work/home"
cmake --install "$build" --prefix "$HOME/trellis-sdk" >/dev/null
(cd "$work/greeter" && eval "$build_cmd") >"$work/build.log" 2>&1 ||
  { cat "$work/build.log"; fail "the guide's example does not build as written"; }
out="$work/greeter/build/plugins/acme-greeter"
[ -f "$out/libacme_greeter.so" ] && [ -f "$out/trellis-plugin.json" ] ||
  fail "no plugin folder at $out"

cat >"$work/trellis.yaml" <<YAML
server: {listen: "127.0.0.1:0", threads: 1}
admin: {listen: "127.0.0.1:0", token_file: "$work/admin.token"}
storage: {data_dir: "$work/data"}
log: {level: warn, access_log: "off"}
plugins:
  dirs: ["$work/greeter/build/plugins"]
  enabled: [{id: acme/greeter}]
tenants:
  - {id: demo, plugins: [acme/greeter], keys: [{key: demo-key}]}
YAML
"$HOME/trellis-sdk/bin/trellisd" --config "$work/trellis.yaml" --ready-file "$work/ready.json" \
  >"$work/log" 2>&1 &
pid=$!
for _ in $(seq 200); do [ -s "$work/ready.json" ] && break; sleep 0.05; done
[ -s "$work/ready.json" ] || { cat "$work/log"; fail "trellisd did not start"; }
port=$(sed -E 's/.*"port":([0-9]+).*/\1/' "$work/ready.json")
body=$(curl -s -H 'Authorization: Bearer demo-key' "http://127.0.0.1:$port/greeter")
[ "$body" = "hello, demo" ] || { cat "$work/log"; fail "expected 'hello, demo', got '$body'"; }
kill "$pid"; wait "$pid" 2>/dev/null || true; pid=

# trellis_add_plugin() refuses at build time what trellisd would refuse at load time.
abi_major=$(sed -nE 's/^#define TRELLIS_ABI_MAJOR ([0-9]+).*/\1/p' "$src/sdk/include/trellis/plugin.h")
abi_minor=$(sed -nE 's/^#define TRELLIS_ABI_MINOR ([0-9]+).*/\1/p' "$src/sdk/include/trellis/plugin.h")
manifest="$work/greeter/trellis-plugin.json"
cp "$manifest" "$work/manifest.good"
expect_build_error() {
  if (cd "$work/greeter" && cmake --build build) >"$work/build.log" 2>&1; then
    fail "the build accepted a manifest that disagrees with the code ($1)"
  fi
  # CMake wraps long messages: compare with the line breaks and indentation folded away.
  tr -s ' \n' '  ' <"$work/build.log" | grep -qF "$1" ||
    { cat "$work/build.log"; fail "no '$1' in the build output"; }
}
sed -i -E "s/\"minor\": *$abi_minor/\"minor\": $((abi_minor + 7))/" "$manifest"
expect_build_error "the manifest says ABI $abi_major.$((abi_minor + 7)) but the code is compiled against ABI $abi_major.$abi_minor"
[ ! -f "$out/libacme_greeter.so" ] || fail "a refused library was left for the next build"
cp "$work/manifest.good" "$manifest"
sed -i 's#"acme/greeter"#"acme/other"#' "$manifest"
expect_build_error "the manifest says id \"acme/other\" but the code's descriptor says \"acme/greeter\""
cp "$work/manifest.good" "$manifest"
(cd "$work/greeter" && cmake --build build) >"$work/build.log" 2>&1 ||
  { cat "$work/build.log"; fail "the fixed manifest does not build again"; }
echo "OK: docs/plugin-guide.md section 1 builds, loads and serves '$body'; mismatches fail the build"
