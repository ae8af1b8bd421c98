#!/usr/bin/env bash
# run.sh: the whole local stack in the foreground (`make run`): everything
# up.sh does, then the daemons' logs are followed here. Ctrl-C (or SIGTERM)
# stops it all through down.sh. A daemon that exits is reported once.
set -euo pipefail

SCRIPT_NAME=run
HERE=$(dirname "${BASH_SOURCE[0]}")
# shellcheck source=lib.sh
. "$HERE/lib.sh"

tail_pid=
stopping=0
finish() {
	local rc=$1
	[ $stopping -eq 0 ] || return 0
	stopping=1
	# A second Ctrl-C must not cut the shutdown short.
	trap '' INT TERM
	if [ -n "$tail_pid" ]; then
		kill "$tail_pid" 2>/dev/null || true
		wait "$tail_pid" 2>/dev/null || true
	fi
	echo
	say "stopping the stack"
	"$HERE/down.sh" || rc=1
	exit "$rc"
}
trap 'finish 0' INT TERM

if ! "$HERE/up.sh"; then
	warn "start-up failed; stopping what did start"
	finish 1
fi

logs=()
for name in "${DAEMONS[@]}"; do
	logs+=("$LOG_DIR/$name.log")
done
say "following the logs; Ctrl-C stops everything"
tail -n +1 -F "${logs[@]}" &
tail_pid=$!

declare -A gone=()
while :; do
	sleep 1
	for name in "${DAEMONS[@]}"; do
		if [ -z "${gone[$name]:-}" ] && [ -z "$(daemon_pid "$name")" ]; then
			gone[$name]=1
			warn "$name is no longer running (see .local/log/$name.log)"
		fi
	done
done
