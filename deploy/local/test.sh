#!/usr/bin/env bash
# test.sh: `make test`. Builds into build-test with AddressSanitizer,
# UBSan and -Werror, and the programs of the tsan/* tests into build-tsan with
# ThreadSanitizer, brings the stack up from the first build (up.sh), runs every
# ctest test (unit, integration and tsan labels), and always takes the stack
# down again (down.sh), even when something failed. Exits with ctest's status,
# or non-zero when the stack did not come up or down cleanly, or when any
# process wrote a sanitizer report (leaks show up at exit): every report goes
# to a file of its own in .local/log/sanitizer/ (log_path).
#
#   BUILD_DIR (default build-test), CMAKE_ARGS (default the sanitizer
#   options above), TSAN_BUILD_DIR (default build-tsan), TSAN_CMAKE_ARGS,
#   CTEST_ARGS (extra ctest arguments, e.g. "-R e2e").
#
# The test stack's reservations last ORDERS_RESERVATION_TTL_S=10 seconds
# (not the default 900), so that it_expiry can watch an unpaid order expire,
# and order-consumer finishes stranded orders after ORDERS_FINALIZE_GRACE_S=3
# seconds (not 60), so that it_sweep does not wait long. Besides the three
# documented dev keys it has dev-limited, a client key limited to 20
# requests a second, for it_ratelimit. `make up` and `make run` keep the
# defaults.
set -euo pipefail

SCRIPT_NAME='test'
HERE=$(dirname "${BASH_SOURCE[0]}")
# shellcheck source=lib.sh
. "$HERE/lib.sh"

export BUILD_DIR=${BUILD_DIR:-build-test}
export CMAKE_ARGS=${CMAKE_ARGS:--DORDERS_ASAN=ON -DORDERS_WERROR=ON}
TSAN_BUILD_DIR=${TSAN_BUILD_DIR:-build-tsan}
TSAN_CMAKE_ARGS=${TSAN_CMAKE_ARGS:--DORDERS_TSAN=ON -DORDERS_WERROR=ON}
# Every sanitizer report of every process (daemons, tests, tools, also one
# whose stderr a test discards or whose exit status it expects to be 1)
# lands in a file of its own here, which is looked through at the end.
export ORDERS_SANITIZER_DIR=$LOG_DIR/sanitizer
export ASAN_OPTIONS=${ASAN_OPTIONS:-detect_leaks=1}:log_path=$ORDERS_SANITIZER_DIR/asan
export UBSAN_OPTIONS=${UBSAN_OPTIONS:-print_stacktrace=1:halt_on_error=1}:log_path=$ORDERS_SANITIZER_DIR/ubsan
# up.sh passes it on to the daemons; the tests read it too.
export ORDERS_RESERVATION_TTL_S=10
export ORDERS_FINALIZE_GRACE_S=3
export ORDERS_API_KEYS=dev-client:client,dev-finance:finance,dev-admin:admin,dev-limited:client:20
case $BUILD_DIR in
/*) build_dir=$BUILD_DIR ;;
*) build_dir=$ROOT/$BUILD_DIR ;;
esac
case $TSAN_BUILD_DIR in
/*) export ORDERS_TSAN_BUILD_DIR=$TSAN_BUILD_DIR ;;
*) export ORDERS_TSAN_BUILD_DIR=$ROOT/$TSAN_BUILD_DIR ;;
esac
rm -rf "$ORDERS_SANITIZER_DIR"
mkdir -p "$ORDERS_SANITIZER_DIR"

down_done=0
take_down() {
	[ $down_done -eq 0 ] || return 0
	down_done=1
	trap '' INT TERM
	"$HERE/down.sh"
}
trap 'take_down || true' EXIT
trap 'exit 130' INT
trap 'exit 143' TERM

# The programs the tsan/* tests run, with ThreadSanitizer (tests/CMakeLists.txt).
if ! BUILD_DIR=$ORDERS_TSAN_BUILD_DIR CMAKE_ARGS=$TSAN_CMAKE_ARGS BUILD_TARGETS=tsan_targets \
	"$HERE/build.sh"; then
	warn "the ThreadSanitizer build failed; no test ran"
	exit 1
fi
if ! "$HERE/up.sh"; then
	warn "the stack did not come up; no test ran"
	exit 1
fi

# The integration tests find the stack through these too.
set -a
# shellcheck source=/dev/null
. "$ENV_FILE"
set +a
read -r -a ctest_extra <<<"${CTEST_ARGS:-}"
rc=0
ctest --test-dir "$build_dir" --output-on-failure --no-tests=error "${ctest_extra[@]}" || rc=$?

if ! take_down; then
	warn "the stack did not stop cleanly"
	[ $rc -ne 0 ] || rc=1
fi

# Sanitizer reports are failures too, from any process and whatever its
# exit status (a leak is only reported at exit, after SIGTERM): the report
# files, and a daemon log (also one rotated to .prev) that holds one all the
# same (a sanitizer option set to write to stderr).
mapfile -t reports < <(
	find "$ORDERS_SANITIZER_DIR" -type f -size +0 2>/dev/null | sort
	grep -l -E 'ERROR: (AddressSanitizer|LeakSanitizer)|runtime error:|WARNING: ThreadSanitizer' \
		"$LOG_DIR"/orders-*.log "$LOG_DIR"/orders-*.log.prev 2>/dev/null || true
)
if [ ${#reports[@]} -gt 0 ]; then
	for f in "${reports[@]}"; do
		warn "sanitizer report in ${f#"$ROOT"/}:"
		grep -m 3 -E 'ERROR: |SUMMARY: |runtime error:' "$f" | cut -c 1-300 >&2 || true
	done
	[ $rc -ne 0 ] || rc=1
fi

if [ $rc -eq 0 ]; then
	say "all tests passed"
else
	warn "failed (status $rc)"
fi
exit $rc
