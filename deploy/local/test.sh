#!/usr/bin/env bash
# test.sh: `make test`. Builds into build-test with AddressSanitizer,
# UBSan and -Werror, brings the stack up from that build (up.sh), runs every
# ctest test (unit and integration labels), and always takes the stack down
# again (down.sh), even when something failed. Exits with ctest's status,
# or non-zero when the stack did not come up or down cleanly, or when a
# daemon's log holds a sanitizer report (leaks show up at exit).
#
#   BUILD_DIR (default build-test), CMAKE_ARGS (default the sanitizer
#   options above), CTEST_ARGS (extra ctest arguments, e.g. "-R e2e").
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
export ASAN_OPTIONS=${ASAN_OPTIONS:-detect_leaks=1}
export UBSAN_OPTIONS=${UBSAN_OPTIONS:-print_stacktrace=1:halt_on_error=1}
# up.sh passes it on to the daemons; the tests read it too.
export ORDERS_RESERVATION_TTL_S=10
export ORDERS_FINALIZE_GRACE_S=3
export ORDERS_API_KEYS=dev-client:client,dev-finance:finance,dev-admin:admin,dev-limited:client:20
case $BUILD_DIR in
/*) build_dir=$BUILD_DIR ;;
*) build_dir=$ROOT/$BUILD_DIR ;;
esac

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

# Sanitizer reports from the daemons (a leak is only reported at exit,
# after SIGTERM) are failures too.
reports=$(grep -l -E 'ERROR: (AddressSanitizer|LeakSanitizer)|runtime error:' \
	"$LOG_DIR"/orders-*.log 2>/dev/null || true)
if [ -n "$reports" ]; then
	warn "sanitizer reports in: ${reports//$'\n'/ }"
	[ $rc -ne 0 ] || rc=1
fi

if [ $rc -eq 0 ]; then
	say "all tests passed"
else
	warn "failed (status $rc)"
fi
exit $rc
