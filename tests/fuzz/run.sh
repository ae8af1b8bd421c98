#!/usr/bin/env bash
# run.sh: the libFuzzer targets of tests/fuzz (fuzz_<name>.c), built with
# Debian's clang into build-fuzz/ (CMake ORDERS_FUZZ=ON: libFuzzer, ASan and
# UBSan in every object). ctest runs `build` and then `run NAME` for each
# target (label fuzz, part of `make test`); `make fuzz` runs `all`.
#
#   run.sh build             configure and build build-fuzz/
#   run.sh run NAME          fuzz NAME for FUZZ_SECONDS seconds (default 10)
#   run.sh all               build, then fuzz every target in turn for
#                            FUZZ_SECONDS each (default 300); exits non-zero
#                            when any of them found something
#   run.sh repro NAME FILE   run NAME once on FILE (a saved crash)
#
# A run starts from the seeds in tests/fuzz/NAME/ and the corpus earlier
# runs grew in fuzz-out/corpus/NAME/ (new inputs go there), with
# tests/fuzz/NAME.dict when there is one. An input that crashes, leaks,
# hits undefined behaviour or breaks an invariant (FUZZ_CHECK) is saved as
# fuzz-out/crashes/NAME/crash-<sha1> (or leak-, timeout-, oom-); fuzz-out/
# is ignored by git. FUZZ_OUT overrides fuzz-out/, FUZZ_BUILD build-fuzz/.
set -euo pipefail

here=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
root=$(cd "$here/../.." && pwd)
build=${FUZZ_BUILD:-$root/build-fuzz}
out=${FUZZ_OUT:-$root/fuzz-out}

say() { printf 'fuzz: %s\n' "$*" >&2; }

targets() {
	local f
	for f in "$here"/fuzz_*.c; do
		f=${f##*/fuzz_}
		printf '%s\n' "${f%.c}"
	done
}

build() {
	if ! command -v clang >/dev/null; then
		say "clang is not installed (deploy/local/install.sh installs it)"
		exit 1
	fi
	unset MAKEFLAGS MFLAGS MAKELEVEL
	cmake -S "$root" -B "$build" -DCMAKE_C_COMPILER=clang -DORDERS_FUZZ=ON \
		-DCMAKE_BUILD_TYPE=RelWithDebInfo >/dev/null
	cmake --build "$build" -j "${JOBS:-2}"
}

# The JSON bodies may be up to 64 KiB; 16 KiB holds a checkout of 100 lines.
max_len() {
	case $1 in
	checkout | cart | product) echo 16384 ;;
	*) echo 4096 ;;
	esac
}

run() {
	local name=$1 secs=$2 bin=$build/tests/fuzz/fuzz_$1
	local args=()
	[ -x "$bin" ] || {
		say "no $bin: run '$0 build' first"
		exit 1
	}
	mkdir -p "$out/corpus/$name" "$out/crashes/$name"
	[ -f "$here/$name.dict" ] && args+=("-dict=$here/$name.dict")
	say "$name for ${secs}s"
	# Leaks count (LeakSanitizer at the end of each input); UBSan aborts.
	ASAN_OPTIONS=${ASAN_OPTIONS:-detect_leaks=1} \
		UBSAN_OPTIONS=${UBSAN_OPTIONS:-print_stacktrace=1:halt_on_error=1} \
		"$bin" -max_total_time="$secs" -max_len="$(max_len "$name")" -timeout=10 \
		-rss_limit_mb=2048 -print_final_stats=1 \
		-artifact_prefix="$out/crashes/$name/" "${args[@]}" \
		"$out/corpus/$name" "$here/$name"
}

case ${1:-} in
build) build ;;
run)
	[ -n "${2:-}" ] || {
		say "usage: $0 run NAME"
		exit 2
	}
	run "$2" "${FUZZ_SECONDS:-10}"
	;;
all)
	build
	failed=()
	for t in $(targets); do
		run "$t" "${FUZZ_SECONDS:-300}" || failed+=("$t")
	done
	if [ ${#failed[@]} -gt 0 ]; then
		say "found something: ${failed[*]} (inputs in $out/crashes/)"
		exit 1
	fi
	say "every target ran clean"
	;;
repro)
	[ -n "${2:-}" ] && [ -n "${3:-}" ] || {
		say "usage: $0 repro NAME FILE"
		exit 2
	}
	"$build/tests/fuzz/fuzz_$2" "$3"
	;;
*)
	sed -n '2,20s/^# \{0,1\}//p' "$0" >&2
	exit 2
	;;
esac
