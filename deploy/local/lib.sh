# shellcheck shell=bash disable=SC2034 # the variables are for the includers
# lib.sh: helpers shared by the local-stack scripts (services.sh, up.sh,
# down.sh, run.sh, build.sh, test.sh). Sourced, never run: it sets ROOT from
# its own location, so every script works in any clone of the repository.

ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd -P)
LOCAL=$ROOT/.local
LOG_DIR=$LOCAL/log
RUN_DIR=$LOCAL/run
ENV_FILE=$LOCAL/env
# The local stack's throwaway CA and server certificate (services.sh makes them).
TLS_DIR=$LOCAL/tls

# ORDERS_LOCAL_PORT_OFFSET shifts every port below (and the RabbitMQ node
# name) so that a second checkout can run its own stack beside this one.
# Each family of ports lies at least 240 from every other, so any two
# offsets from 0 to 239 give stacks that share no port (offset 240 would
# put PostgreSQL on offset 0's AMQP port).
PORT_OFFSET=${ORDERS_LOCAL_PORT_OFFSET:-0}
case $PORT_OFFSET in
'' | *[!0-9]*) echo "ORDERS_LOCAL_PORT_OFFSET must be a number from 0 to 239" >&2 && exit 1 ;;
esac
[ "$PORT_OFFSET" -le 239 ] || { echo "ORDERS_LOCAL_PORT_OFFSET must be a number from 0 to 239" >&2 && exit 1; }
PG_PORT=$((5442 + PORT_OFFSET))
AMQP_PORT=$((5682 + PORT_OFFSET))
# RabbitMQ's TLS listener (amqps://), beside the plain one.
AMQPS_PORT=$((16682 + PORT_OFFSET))
RABBIT_DIST_PORT=$((25682 + PORT_OFFSET))
RABBIT_PROM_PORT=$((15682 + PORT_OFFSET))
REDIS_PORT=$((6389 + PORT_OFFSET))
HTTP_PORT=$((8080 + PORT_OFFSET))
# RabbitMQ's node registers with an epmd of its own on this port, not the
# machine's shared one on 4369, so no other node can come to depend on it.
EPMD_PORT=$((24682 + PORT_OFFSET))
if [ "$PORT_OFFSET" -eq 0 ]; then RMQ_NODE=orders@localhost; else RMQ_NODE=orders$PORT_OFFSET@localhost; fi

# The tests start servers of their own beside the stack on ports of other
# families: tls_api.sh an HTTPS API on 8443+N and openssl s_server on
# 17682+N, it_cache_tls Redis with TLS on 18682+N and plain on 19682+N.

# A three-node RabbitMQ cluster beside that node, for the broker failover
# test (tests/integration/broker_failover.sh; `services.sh start cluster`):
# node K (1-3) is ${RMQ_NODE%@*}-cK@localhost, AMQP port
# CLUSTER_AMQP_BASE+K-1, distribution port CLUSTER_DIST_BASE+K-1, state in
# .local/rabbitmq-cluster/K, all three on an epmd of their own on
# CLUSTER_EPMD_PORT. Three ports a stack, below the kernel's ephemeral
# ports, where no other family of ports of any offset lies.
CLUSTER_SIZE=3
CLUSTER_AMQP_BASE=$((20682 + 3 * PORT_OFFSET))
CLUSTER_DIST_BASE=$((26682 + 3 * PORT_OFFSET))
CLUSTER_EPMD_PORT=$((29682 + PORT_OFFSET))
CLUSTER_DIR=$LOCAL/rabbitmq-cluster
# cluster_node K: the name of the cluster's node K.
cluster_node() { printf '%s-c%s@localhost\n' "${RMQ_NODE%@*}" "$1"; }

# The five daemons, where the build puts them, and the ops port each one
# serves /healthz on (the API serves it on the HTTP port).
DAEMONS=(orders-api orders-inventory orders-payment orders-order orders-cart)
declare -A DAEMON_PATH=(
	[orders-api]=api/orders-api
	[orders-inventory]=consumers/orders-inventory
	[orders-payment]=consumers/orders-payment
	[orders-order]=consumers/orders-order
	[orders-cart]=consumers/orders-cart
)
declare -A DAEMON_METRICS_PORT=(
	[orders-inventory]=$((9101 + PORT_OFFSET * 10))
	[orders-payment]=$((9102 + PORT_OFFSET * 10))
	[orders-order]=$((9103 + PORT_OFFSET * 10))
	[orders-cart]=$((9104 + PORT_OFFSET * 10))
)

SCRIPT_NAME=${SCRIPT_NAME:-$(basename "$0" .sh)}

say() { printf '%s: %s\n' "$SCRIPT_NAME" "$*"; }
warn() { printf '%s: %s\n' "$SCRIPT_NAME" "$*" >&2; }
die() {
	printf '%s: %s\n' "$SCRIPT_NAME" "$*" >&2
	exit 1
}

is_root() { [ "$(id -u)" -eq 0 ]; }

# Paths end up in postgresql.conf, redis.conf, rabbitmq.conf, Makefiles and
# unquoted psql meta-commands; refusing odd characters once here is simpler
# than quoting them correctly for five different parsers.
case $ROOT in
*[[:space:]\'\"\\\$\`]*)
	die "the repository path '$ROOT' contains a space, quote, backslash, \$ or backquote; clone it somewhere else"
	;;
esac

# pid_alive PID [NAME]: PID is a live (not zombie) process, and when NAME is
# given its command name is NAME (compared on the kernel's 15 characters).
pid_alive() {
	local pid=${1:-} want=${2:-} stat comm
	[[ $pid =~ ^[0-9]+$ ]] || return 1
	stat=$(cat "/proc/$pid/stat" 2>/dev/null) || return 1
	stat=${stat##*) }
	[ "${stat%% *}" != Z ] || return 1
	[ -n "$want" ] || return 0
	comm=$(cat "/proc/$pid/comm" 2>/dev/null) || return 1
	[ "$comm" = "${want:0:15}" ]
}

# pidfile_pid FILE: the pid on the first line of FILE, or nothing.
pidfile_pid() {
	local line=
	[ -r "$1" ] && IFS= read -r line 2>/dev/null <"$1"
	[[ $line =~ ^[0-9]+$ ]] && printf '%s\n' "$line"
	return 0
}

# wait_gone PID SECONDS: wait until PID has exited; 1 on timeout.
wait_gone() {
	local pid=$1 deadline=$((SECONDS + $2))
	while pid_alive "$pid"; do
		[ $SECONDS -lt $deadline ] || return 1
		sleep 0.2
	done
	return 0
}

# port_open PORT: something accepts TCP connections on 127.0.0.1:PORT.
port_open() {
	timeout 2 bash -c "exec 3<>/dev/tcp/127.0.0.1/$1" 2>/dev/null
}

# http_ok URL: URL answers 2xx within two seconds.
http_ok() {
	curl -fsS -o /dev/null --max-time 2 "$1" 2>/dev/null
}

# daemon_pid NAME: pid of our running daemon NAME, or nothing. The process
# must still be NAME (an argument ending in /NAME, which also holds for a
# script run by an interpreter), not a later process that got the same pid.
daemon_pid() {
	local pid arg args=()
	pid=$(pidfile_pid "$RUN_DIR/$1.pid")
	if [ -n "$pid" ] && pid_alive "$pid"; then
		mapfile -d '' args 2>/dev/null <"/proc/$pid/cmdline" || return 0
		for arg in "${args[@]:0:3}"; do
			if [ "${arg##*/}" = "$1" ]; then
				printf '%s\n' "$pid"
				return 0
			fi
		done
	fi
	return 0
}

# start_daemon NAME BUILD_DIR: start one daemon in its own session (so that Ctrl-C
# in the terminal of `make run` reaches run.sh, which stops things in
# order), with .local/env and its ops port. The subshell execs setsid,
# which execs the daemon: $! is the daemon's pid, left in STARTED_PID.
start_daemon() {
	local name=$1 build_dir=$2 log=$LOG_DIR/$1.log port=${DAEMON_METRICS_PORT[$1]:-}
	# One previous run is kept beside the new log.
	if [ -s "$log" ]; then
		mv -f "$log" "$log.prev"
	fi
	(
		# shellcheck source=/dev/null
		. "$ENV_FILE"
		if [ -n "$port" ]; then
			export ORDERS_METRICS_PORT=$port
		fi
		cd "$ROOT"
		exec setsid "$build_dir/${DAEMON_PATH[$name]}"
	) >>"$log" 2>&1 </dev/null &
	STARTED_PID=$!
	printf '%s\n' "$!" >"$RUN_DIR/$name.pid"
	say "started $name (pid $!, log ${log#"$ROOT"/})"
}

# ready_url NAME: the URL that answers 200 once NAME is ready.
ready_url() {
	if [ "$1" = orders-api ]; then
		printf 'http://127.0.0.1:%s/readyz\n' "$HTTP_PORT"
	else
		printf 'http://127.0.0.1:%s/healthz\n' "${DAEMON_METRICS_PORT[$1]}"
	fi
}

# stop_daemons: SIGTERM every daemon of ours, wait up to 10 s for all of
# them, then SIGKILL what is left. Pid files are removed.
stop_daemons() {
	local name pid pids=() deadline
	for name in "${DAEMONS[@]}"; do
		pid=$(daemon_pid "$name")
		if [ -n "$pid" ]; then
			say "stopping $name (pid $pid)"
			kill -TERM "$pid" 2>/dev/null || true
			pids+=("$pid:$name")
		fi
	done
	# A consumer finishes the deliveries in hand first (up to 15 s).
	deadline=$((SECONDS + 25))
	for entry in "${pids[@]}"; do
		pid=${entry%%:*}
		name=${entry#*:}
		while pid_alive "$pid" && [ $SECONDS -lt $deadline ]; do
			sleep 0.2
		done
		if pid_alive "$pid"; then
			warn "$name (pid $pid) did not stop within 25 s of SIGTERM; sending SIGKILL"
			kill -KILL "$pid" 2>/dev/null || true
			wait_gone "$pid" 5 || warn "$name (pid $pid) survived SIGKILL"
		fi
	done
	for name in "${DAEMONS[@]}"; do
		rm -f "$RUN_DIR/$name.pid"
	done
}

# our_processes: "pid command" for every live process that belongs to this
# checkout's stack: anything whose command line names .local/ or a build
# directory of ours, the pids our pid files name, and their descendants
# (postgres backends and erl_child_setup have rewritten command lines).
our_processes() {
	local -A set=() parent=() mine=()
	local seeds=() args=() pid f cmd line rest
	# Parent links of every process: builtins only, no fork per process.
	for f in /proc/[0-9]*/stat; do
		pid=${f#/proc/}
		pid=${pid%/stat}
		IFS= read -r line 2>/dev/null <"$f" || continue
		rest=${line##*) }
		rest=${rest#* }
		parent[$pid]=${rest%% *}
	done
	# The caller and its ancestors (a make or shell whose command line
	# happens to name .local/) are not part of the stack.
	pid=$BASHPID
	while [ -n "$pid" ] && [ "$pid" != 0 ] && [ -z "${mine[$pid]:-}" ]; do
		mine[$pid]=1
		pid=${parent[$pid]:-}
	done
	for f in "$LOCAL/pg/postmaster.pid" "$LOCAL/rabbitmq/rabbit.pid" \
		"$LOCAL/rabbitmq/epmd.pid" "$LOCAL/rabbitmq/launcher.pid" "$LOCAL/redis/redis.pid" "$RUN_DIR"/*.pid \
		"$CLUSTER_DIR"/epmd.pid "$CLUSTER_DIR"/*/rabbit.pid "$CLUSTER_DIR"/*/launcher.pid; do
		pid=$(pidfile_pid "$f")
		[ -n "$pid" ] && pid_alive "$pid" && seeds+=("$pid")
	done
	for pid in "${!parent[@]}"; do
		[ -z "${mine[$pid]:-}" ] || continue
		mapfile -d '' args 2>/dev/null <"/proc/$pid/cmdline" || continue
		cmd="${args[*]:-}"
		case $cmd in
		*"$LOCAL/"* | *"$ROOT/build"*/api/orders-* | *"$ROOT/build"*/consumers/orders-*)
			seeds+=("$pid")
			;;
		esac
	done
	[ ${#seeds[@]} -gt 0 ] || return 0
	for pid in "${seeds[@]}"; do set[$pid]=1; done
	local changed=1
	while [ $changed -eq 1 ]; do
		changed=0
		for pid in "${!parent[@]}"; do
			if [ -z "${set[$pid]:-}" ] && [ -n "${set[${parent[$pid]}]:-}" ]; then
				set[$pid]=1
				changed=1
			fi
		done
	done
	for pid in "${!set[@]}"; do
		[ -z "${mine[$pid]:-}" ] || continue
		pid_alive "$pid" || continue
		mapfile -d '' args 2>/dev/null <"/proc/$pid/cmdline" || continue
		cmd="${args[*]:-}"
		printf '%s %s\n' "$pid" "${cmd:0:120}"
	done | sort -n
}
