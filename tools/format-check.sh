#!/usr/bin/env bash
# format-check.sh: every C source and header follows .clang-format. Prints the
# files that do not and exits 1; `clang-format -i FILE` fixes one.
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."

if ! command -v clang-format >/dev/null; then
	echo "format-check: clang-format is not installed (deploy/local/install.sh installs it)" >&2
	exit 1
fi
bad=()
while IFS= read -r f; do
	clang-format --dry-run --Werror "$f" >/dev/null 2>&1 || bad+=("$f")
done < <(git ls-files '*.c' '*.h' 2>/dev/null || find api consumers lib tests -name '*.[ch]')
if [ ${#bad[@]} -gt 0 ]; then
	printf 'format-check: not formatted (clang-format -i): %s\n' "${bad[@]}" >&2
	exit 1
fi
echo "format-check: ${PWD##*/}: all C files formatted"
