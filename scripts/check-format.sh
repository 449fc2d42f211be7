#!/usr/bin/env bash
# Fails if any tracked C/C++ file differs from .clang-format. Fix with:
#   git ls-files '*.c' '*.cc' '*.h' '*.hpp' | xargs clang-format -i
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."
bad=()
while IFS= read -r f; do
  [[ -f "$f" ]] || continue # deleted in the working tree, not yet committed
  clang-format --dry-run -Werror "$f" >/dev/null 2>&1 || bad+=("$f")
done < <(git ls-files '*.c' '*.cc' '*.h' '*.hpp')
if ((${#bad[@]})); then
  printf 'check-format: %s differs from .clang-format\n' "${bad[@]}" >&2
  exit 1
fi
echo "check-format: all C/C++ files formatted"
