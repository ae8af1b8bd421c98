#!/usr/bin/env bash
# down.sh: stop the local stack (`make down`): the daemons first (SIGTERM,
# up to 10 s, then SIGKILL), then RabbitMQ, Redis and PostgreSQL
# (services.sh stop). Fails when any process of this checkout's stack is
# still running afterwards, and lists it. Data under .local/ is kept.
set -euo pipefail

SCRIPT_NAME=down
HERE=$(dirname "${BASH_SOURCE[0]}")
# shellcheck source=lib.sh
. "$HERE/lib.sh"

rc=0
stop_daemons
"$HERE/services.sh" stop || rc=1

left=$(our_processes)
if [ -n "$left" ]; then
	warn "still running after stop:"
	printf '%s\n' "$left" >&2
	exit 1
fi
[ $rc -eq 0 ] || exit $rc
say "stopped; nothing of this checkout's stack runs"
