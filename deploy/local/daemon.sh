#!/usr/bin/env bash
# daemon.sh: start, stop, kill or restart ONE daemon of the stack that
# `make up` started, with the same build and settings. For fault tests and
# for trying things by hand:
#
#   deploy/local/daemon.sh kill orders-payment     # SIGKILL, no clean-up
#   deploy/local/daemon.sh start orders-payment    # waits until it is ready
#   deploy/local/daemon.sh restart orders-api      # SIGTERM, then start
#   deploy/local/daemon.sh stop orders-order       # SIGTERM, waits up to 25 s
set -euo pipefail

HERE=$(dirname "${BASH_SOURCE[0]}")
# shellcheck source=lib.sh
. "$HERE/lib.sh"

usage() {
	echo "usage: $0 {start|stop|kill|restart} {${DAEMONS[*]}}" >&2
	exit 2
}
[ $# -eq 2 ] || usage
action=$1 name=$2
[ -n "${DAEMON_PATH[$name]:-}" ] || usage
[ -f "$ENV_FILE" ] && [ -f "$RUN_DIR/build-dir" ] || die "the stack is not up (make up)"
build_dir=$(cat "$RUN_DIR/build-dir")

do_stop() {
	local sig=$1 pid
	pid=$(daemon_pid "$name")
	[ -n "$pid" ] || return 0
	kill "-$sig" "$pid" 2>/dev/null || true
	# A consumer finishes the deliveries in hand first (up to 15 s).
	if ! wait_gone "$pid" 25; then
		warn "$name (pid $pid) did not stop within 25 s of SIG$sig; sending SIGKILL"
		kill -KILL "$pid" 2>/dev/null || true
		wait_gone "$pid" 5 || die "$name (pid $pid) survived SIGKILL"
	fi
	rm -f "$RUN_DIR/$name.pid"
	say "$name (pid $pid) stopped by SIG$sig"
}

do_start() {
	local deadline
	[ -z "$(daemon_pid "$name")" ] || die "$name is already running"
	start_daemon "$name" "$build_dir"
	deadline=$((SECONDS + 30))
	until http_ok "$(ready_url "$name")"; do
		pid_alive "$STARTED_PID" || die "$name exited during start-up (see .local/log/$name.log)"
		[ $SECONDS -lt $deadline ] || die "$name not ready after 30 s"
		sleep 0.2
	done
	say "$name ready"
}

case $action in
start) do_start ;;
stop) do_stop TERM ;;
kill) do_stop KILL ;;
restart)
	do_stop TERM
	do_start
	;;
*) usage ;;
esac
