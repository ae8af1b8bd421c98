# shellcheck shell=bash disable=SC2034 # used by the scripts that source this
# extra.bash: daemons a stack-level shell test runs besides (or instead of)
# the stack's own, from the stack's build: more consumers on the shared
# queues (race_consumers.sh), or a whole set pointed at another broker
# (broker_failover.sh). Sourced after stack.bash, never run.
#
# Each one has a name (e.g. inventory-race1): X_PID, X_KIND, X_PORT and
# X_LOG hold its pid (empty once stopped), kind, the port its /readyz is on
# and its log, .local/log/orders-<name>.log (test.sh looks through
# .local/log/orders-*.log for sanitizer reports). X_NAMES lists them in
# the order they started.

declare -A X_PID=() X_KIND=() X_PORT=() X_LOG=()
X_NAMES=()

# free_port FROM: the first port from FROM on, within this stack's block of
# ten ops ports, that nothing listens on and no extra daemon took.
free_port() {
	local p=$1 last=$((9101 + PORT_OFFSET * 10 + 9)) name taken
	while [ "$p" -le "$last" ]; do
		taken=0
		for name in "${X_NAMES[@]}"; do
			[ "${X_PORT[$name]}" != "$p" ] || taken=1
		done
		if [ $taken -eq 0 ] && ! port_open "$p"; then
			printf '%s\n' "$p"
			return 0
		fi
		p=$((p + 1))
	done
	return 1
}

# start_extra NAME KIND [PORT [VAR=VALUE...]]: one more orders-KIND (api,
# inventory, payment, order or cart) with .local/env, then the environment
# this test got (ORDERS_RESERVATION_TTL_S, ASAN_OPTIONS, ...), then the
# VAR=VALUE words given. A consumer serves its ops routes on PORT (default:
# a free one of this stack's block), the API everything on PORT (default:
# the stack's HTTP port). A child of this shell, so that `wait` gives its
# exit status.
start_extra() {
	local name=$1 kind=$2 port=${3:-} log
	shift $(($# < 3 ? $# : 3))
	if [ -z "$port" ] && [ "$kind" = api ]; then
		port=$HTTP_PORT
	elif [ -z "$port" ]; then
		port=$(free_port $((9101 + PORT_OFFSET * 10 + 5))) || fail_now "no free ops port for $name"
	fi
	log=$LOG_DIR/orders-$name.log
	if [ -s "$log" ]; then
		mv -f "$log" "$log.prev"
	fi
	(
		# shellcheck source=/dev/null
		. "$ENV_FILE"
		cd "$ROOT"
		if [ "$kind" = api ]; then
			export ORDERS_HTTP_PORT=$port
		else
			export ORDERS_METRICS_PORT=$port
		fi
		exec env "$@" "$BUILD/${DAEMON_PATH[orders-$kind]}"
	) >>"$log" 2>&1 </dev/null &
	X_PID[$name]=$!
	X_KIND[$name]=$kind
	X_PORT[$name]=$port
	X_LOG[$name]=$log
	X_NAMES+=("$name")
	say_t "started orders-$kind as $name (pid $!, port $port, log ${log#"$ROOT"/})"
}

# wait_extras_ready SECONDS: every extra daemon still meant to run is
# ready (for a consumer: PostgreSQL, publisher and consumer connected).
wait_extras_ready() {
	local deadline=$((SECONDS + $1)) name waiting
	while :; do
		waiting=()
		for name in "${X_NAMES[@]}"; do
			[ -n "${X_PID[$name]}" ] || continue
			pid_alive "${X_PID[$name]}" ||
				fail_now "$name exited during start-up: $(tail -n 5 "${X_LOG[$name]}")"
			http_ok "http://127.0.0.1:${X_PORT[$name]}/readyz" || waiting+=("$name")
		done
		[ ${#waiting[@]} -gt 0 ] || return 0
		[ $SECONDS -lt $deadline ] || fail_now "not ready after $1 s: ${waiting[*]}"
		sleep 0.3
	done
}

# stop_extra NAME SIG: signal it, wait up to 10 s, then SIGKILL; reap it
# and leave its exit status in STOP_RC. Not in a subshell: only this shell
# can wait for it.
stop_extra() {
	local name=$1 sig=$2 pid=${X_PID[$1]} rc=0
	STOP_RC=
	[ -n "$pid" ] || return 0
	kill "-$sig" "$pid" 2>/dev/null || true
	if ! wait_gone "$pid" 10; then
		printf '%s: %s (pid %s) still runs 10 s after SIG%s; sending SIGKILL\n' \
			"$SCRIPT_NAME" "$name" "$pid" "$sig" >&2
		kill -KILL "$pid" 2>/dev/null || true
		wait_gone "$pid" 5 || true
	fi
	wait "$pid" 2>/dev/null || rc=$?
	X_PID[$name]=
	STOP_RC=$rc
}

# stop_extras: SIGTERM every extra daemon still running (for the EXIT trap).
stop_extras() {
	local name
	for name in "${X_NAMES[@]}"; do
		if [ -n "${X_PID[$name]}" ]; then
			note "restore: stopping $name (pid ${X_PID[$name]})"
			stop_extra "$name" TERM
		fi
	done
}
