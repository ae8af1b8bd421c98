# shellcheck shell=bash disable=SC2034 # the variables are for the includers
# lib.bash: what the ThreadSanitizer runs (run.sh, api.sh) share: where the
# TSan build is, the options every TSan-built process runs with, and the
# check of its reports. Sourced, never run. Needs ROOT and LOG_DIR
# (deploy/local/lib.sh sets both) and SCRIPT_NAME.
#
# A TSan-built process writes each report to $TSAN_REPORT_DIR/tsan-NAME.<pid>
# (log_path), so that no report is lost to a redirected or discarded
# stderr, and goes on after it (halt_on_error=0) to find the others; one
# with reports exits 66. deploy/local/test.sh looks through the same
# directory once every test has run.

TSAN_BUILD=${ORDERS_TSAN_BUILD_DIR:-$ROOT/build-tsan}
TSAN_REPORT_DIR=${ORDERS_SANITIZER_DIR:-$LOG_DIR/sanitizer}
TSAN_SUPPRESSIONS=$ROOT/tests/tsan/suppressions.txt
TSAN_EXIT=66

# tsan_need FILE...: each is an executable of the TSan build, or fail.
tsan_need() {
	local f
	for f in "$@"; do
		[ -x "$TSAN_BUILD/$f" ] && continue
		printf '%s: FAIL: no %s in the ThreadSanitizer build %s; make test builds it (or: BUILD_DIR=%s CMAKE_ARGS=-DORDERS_TSAN=ON BUILD_TARGETS=tsan_targets deploy/local/build.sh)\n' \
			"$SCRIPT_NAME" "$f" "$TSAN_BUILD" "${TSAN_BUILD#"$ROOT"/}" >&2
		exit 1
	done
}

# tsan_options NAME: TSAN_OPTIONS for the processes of NAME (their reports
# are tsan-NAME.<pid>).
tsan_options() {
	printf 'halt_on_error=0:exitcode=%d:log_path=%s/tsan-%s:suppressions=%s:second_deadlock_stack=1:history_size=4\n' \
		"$TSAN_EXIT" "$TSAN_REPORT_DIR" "$1" "$TSAN_SUPPRESSIONS"
}

# tsan_begin NAME: drop the reports an earlier run of NAME left.
tsan_begin() {
	mkdir -p "$TSAN_REPORT_DIR"
	rm -f "$TSAN_REPORT_DIR/tsan-$1".*
}

# tsan_reports NAME: 0 when the processes of NAME wrote no report; else
# print them (the first lines of each) and return 1.
tsan_reports() {
	local f files=()
	for f in "$TSAN_REPORT_DIR/tsan-$1".*; do
		[ -s "$f" ] && files+=("$f")
	done
	[ ${#files[@]} -gt 0 ] || return 0
	printf '%s: FAIL: %d ThreadSanitizer report file(s):\n' "$SCRIPT_NAME" "${#files[@]}" >&2
	for f in "${files[@]}"; do
		printf '%s: ---- %s (%s)\n' "$SCRIPT_NAME" "${f#"$ROOT"/}" \
			"$(grep -c '^WARNING: ThreadSanitizer' "$f") warning(s)" >&2
		head -n 80 "$f" >&2
	done
	return 1
}
