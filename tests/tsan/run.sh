#!/usr/bin/env bash
# run.sh NAME PROGRAM [ARGS...]: run one program of the ThreadSanitizer build
# (PROGRAM relative to it, e.g. tests/it_mq) under the options of lib.bash.
# Passes when it exits 0 and wrote no TSan report. The unit tests of the
# modules with threads and the integration tests of lib/mq's publisher, the
# Redis and PostgreSQL pools run so (tests/CMakeLists.txt, tsan/*); the
# integration tests read the stack's settings from the environment or
# .local/env, like the others.
set -euo pipefail

SCRIPT_NAME=tsan_run
# shellcheck source-path=SCRIPTDIR source=../../deploy/local/lib.sh
. "$(dirname "${BASH_SOURCE[0]}")/../../deploy/local/lib.sh"
# shellcheck source-path=SCRIPTDIR source=lib.bash
. "$(dirname "${BASH_SOURCE[0]}")/lib.bash"

[ $# -ge 2 ] || die "usage: $0 NAME PROGRAM [ARGS...]"
name=$1 program=$2
shift 2
tsan_need "$program"
if [ -z "${ORDERS_PG_DSN:-}" ] && [ -r "$ENV_FILE" ]; then
	set -a
	# shellcheck source=/dev/null
	. "$ENV_FILE"
	set +a
fi

tsan_begin "$name"
rc=0
TSAN_OPTIONS=$(tsan_options "$name") "$TSAN_BUILD/$program" "$@" || rc=$?
if ! tsan_reports "$name"; then
	exit 1
fi
if [ $rc -ne 0 ]; then
	warn "FAIL: $program exited with $rc"
	exit 1
fi
say "$program passed under ThreadSanitizer, no report"
