#!/usr/bin/env bash
# services.sh {start|stop|status}: the project's own PostgreSQL 15, RabbitMQ
# 3.10 and Redis 7, on 127.0.0.1 only, with all their state under .local/ of
# this checkout. They never touch the machine's system instances.
#
#   PostgreSQL  127.0.0.1:5442   data .local/pg, socket dir .local/pg-run,
#               trust auth, role and database "orders", TLS (ssl = on)
#   RabbitMQ    127.0.0.1:5682   node orders@localhost, dist port 25682,
#               its own epmd on 127.0.0.1:24682, Prometheus on
#               127.0.0.1:15682, state .local/rabbitmq; AMQP over TLS
#               (amqps://) on 127.0.0.1:16682
#   Redis       127.0.0.1:6389   state .local/redis, AOF on
#   Logs        .local/log/postgres.log, .local/log/redis.log,
#               .local/rabbitmq/log/
#   TLS         .local/tls: a throwaway CA (ca.pem, ca.key) and the servers'
#               certificate (server.pem, server.key: localhost and
#               127.0.0.1), made at the first start, for tests only
# ORDERS_LOCAL_PORT_OFFSET (default 0) adds to every port (see lib.sh).
#
# As root (a fresh Debian 12 box or CI) each server runs as its package's
# user (postgres, rabbitmq, redis): PostgreSQL refuses to run as root and
# Debian's RabbitMQ expects its own user and that user's Erlang cookie. As
# anybody else they run as the invoking user. start is idempotent; stop waits
# until every process is gone, including the epmd that start launched.
# `services.sh ctl ARGS` runs rabbitmqctl against the node (it needs the
# node's user and private epmd port), e.g. `services.sh ctl list_queues`.
#
# `services.sh start cluster` starts a three-node RabbitMQ cluster beside
# all that, for the broker failover test (ports and names in lib.sh; state
# in .local/rabbitmq-cluster, thrown away at every cluster start), and
# `stop cluster` stops it; `start|stop|status rabbitmq-K` acts on its node K
# alone and `services.sh ctl rabbitmq-K ARGS` runs rabbitmqctl against it.
# `stop` without a service named stops the cluster's nodes too.
set -euo pipefail

SCRIPT_NAME=services
# shellcheck source=lib.sh
. "$(dirname "${BASH_SOURCE[0]}")/lib.sh"

PG_BIN=/usr/lib/postgresql/15/bin
PG_DATA=$LOCAL/pg
PG_RUN=$LOCAL/pg-run
PG_LOG=$LOG_DIR/postgres.log
PG_READY=$LOCAL/pg.initialized

RMQ_LIB=/usr/lib/rabbitmq/bin
RMQ_START_TIMEOUT=${RMQ_START_TIMEOUT:-120}
# The node the RabbitMQ functions below act on: the stack's, unless
# rmq_select named one of the cluster's.
RMQ_LABEL=rabbitmq
RMQ_DIR=$LOCAL/rabbitmq
EPMD_PID_FILE=$RMQ_DIR/epmd.pid

# rmq_paths: the files of the node in RMQ_DIR.
rmq_paths() {
	# Inside mnesia/, so that removing that directory removes the marker too.
	RMQ_BOOTED=$RMQ_DIR/mnesia/.orders-booted
	RMQ_PID_FILE=$RMQ_DIR/rabbit.pid
	RMQ_LAUNCHER_PID_FILE=$RMQ_DIR/launcher.pid
}
rmq_paths

# rmq_select K: act on node K of the cluster (lib.sh) instead: its name,
# ports and state, no Prometheus plugin, no TLS listener (the stack node's
# holds its port), the cluster's epmd. Run it in a subshell, so that the
# stack node's settings are there again afterwards.
rmq_select() {
	RMQ_LABEL=rabbitmq-$1
	RMQ_NODE=$(cluster_node "$1")
	AMQP_PORT=$((CLUSTER_AMQP_BASE + $1 - 1))
	AMQPS_PORT=
	RABBIT_DIST_PORT=$((CLUSTER_DIST_BASE + $1 - 1))
	RABBIT_PROM_PORT=
	EPMD_PORT=$CLUSTER_EPMD_PORT
	EPMD_PID_FILE=$CLUSTER_DIR/epmd.pid
	RMQ_DIR=$CLUSTER_DIR/$1
	rmq_paths
}

REDIS_DIR=$LOCAL/redis
REDIS_PID_FILE=$REDIS_DIR/redis.pid
REDIS_LOG=$LOG_DIR/redis.log

if is_root; then
	PG_USER=postgres
	RMQ_USER=rabbitmq
	REDIS_USER=redis
	for u in $PG_USER $RMQ_USER $REDIS_USER; do
		getent passwd "$u" >/dev/null ||
			die "user '$u' does not exist; run deploy/local/install.sh first"
	done
else
	PG_USER=$(id -un)
	RMQ_USER=$PG_USER
	REDIS_USER=$PG_USER
fi

# as USER CMD...: run CMD as USER with that user's HOME (RabbitMQ finds its
# Erlang cookie there), from /, so that a working directory the user cannot
# enter does not matter.
as() {
	(as_exec "$@")
}

# as_exec USER CMD...: the same, replacing the current (sub)shell. For
# `as_exec ... &`: setpriv, env and setsid all exec, so $! is CMD's pid.
as_exec() {
	local user=$1
	shift
	cd /
	# The lock services.sh holds must not live on in the servers.
	exec 9>&-
	if [ "$user" = "$(id -un)" ]; then
		exec "$@"
	fi
	local home gid
	home=$(getent passwd "$user" | cut -d: -f6)
	gid=$(id -g "$user")
	exec setpriv --reuid="$user" --regid="$gid" --init-groups -- \
		env HOME="$home" USER="$user" LOGNAME="$user" "$@"
}

# own USER PATH...: make PATH belong to USER (root only).
own() {
	local user=$1
	shift
	is_root || return 0
	chown -R "$user:$(id -g "$user")" "$@"
}

# check_reachable USER: USER can reach .local/. Directories inside the
# checkout get o+x when needed; a parent outside it (e.g. /root, mode 700)
# is not ours to change, so that is a clear error instead.
check_reachable() {
	local user=$1 dir='' part parts=()
	[ "$user" != "$(id -un)" ] || return 0
	as "$user" test -x "$LOCAL" && return 0
	# From / down: the first directory the user cannot enter is the one
	# that blocks the path.
	IFS=/ read -r -a parts <<<"${LOCAL#/}"
	for part in "${parts[@]}"; do
		dir=$dir/$part
		as "$user" test -x "$dir" && continue
		case $dir in
		"$ROOT" | "$ROOT"/*)
			say "chmod o+x $dir (the '$user' user must reach .local/)"
			chmod o+x "$dir"
			;;
		*)
			die "user '$user' cannot enter $dir, so it cannot reach $LOCAL; run 'chmod o+x $dir' or clone the repository under a directory everyone can enter (e.g. /tmp or /srv)"
			;;
		esac
	done
	as "$user" test -x "$LOCAL" || die "user '$user' cannot reach $LOCAL"
}

# require_port_free NAME PORT: fail with a clear message when another
# program (the system's server, another checkout's stack) holds PORT.
require_port_free() {
	if port_open "$2"; then
		local who
		who=$(ss -Hltnp "sport = :$2" 2>/dev/null | grep -o 'users:(([^)]*' | head -1 || true)
		die "$1: port $2 is already in use by another process (${who#users:((}); stop it (another checkout's stack? run 'make down' there) and retry"
	fi
}

# ----------------------------------------------------------------------- TLS

# tls_make: the local CA and the certificate PostgreSQL and RabbitMQ serve,
# made once (and again when one expires within a day). They protect nothing
# but the tests' connections on loopback; the CA's key stays beside them so
# that tests can issue certificates of their own.
tls_make() {
	local ext
	if [ -s "$TLS_DIR/server.pem" ] && [ -s "$TLS_DIR/ca.key" ] &&
		openssl x509 -checkend 86400 -noout -in "$TLS_DIR/ca.pem" >/dev/null 2>&1 &&
		openssl x509 -checkend 86400 -noout -in "$TLS_DIR/server.pem" >/dev/null 2>&1; then
		return 0
	fi
	command -v openssl >/dev/null || die "openssl not found; run deploy/local/install.sh"
	say "tls: making a local CA and server certificate in ${TLS_DIR#"$ROOT"/}"
	rm -rf "$TLS_DIR"
	mkdir -p "$TLS_DIR"
	chmod 755 "$TLS_DIR"
	ext=$TLS_DIR/server.ext
	(
		umask 077
		openssl req -x509 -new -newkey ec -pkeyopt ec_paramgen_curve:P-256 -nodes \
			-keyout "$TLS_DIR/ca.key" -out "$TLS_DIR/ca.pem" -days 3650 \
			-subj "/CN=orders local test CA" \
			-addext basicConstraints=critical,CA:TRUE \
			-addext keyUsage=critical,keyCertSign,cRLSign
		openssl req -new -newkey ec -pkeyopt ec_paramgen_curve:P-256 -nodes \
			-keyout "$TLS_DIR/server.key" -out "$TLS_DIR/server.csr" -subj "/CN=localhost"
		printf '%s\n' 'basicConstraints=critical,CA:FALSE' \
			'keyUsage=critical,digitalSignature,keyEncipherment' \
			'extendedKeyUsage=serverAuth' 'subjectAltName=DNS:localhost,IP:127.0.0.1' >"$ext"
		openssl x509 -req -in "$TLS_DIR/server.csr" -CA "$TLS_DIR/ca.pem" \
			-CAkey "$TLS_DIR/ca.key" -CAcreateserial -out "$TLS_DIR/server.pem" \
			-days 825 -extfile "$ext"
	) >"$LOG_DIR/tls.log" 2>&1 || {
		cat "$LOG_DIR/tls.log" >&2
		die "tls: openssl failed (see $LOG_DIR/tls.log)"
	}
	rm -f "$TLS_DIR/server.csr" "$ext"
	chmod 644 "$TLS_DIR/ca.pem" "$TLS_DIR/server.pem"
}

# tls_install USER DIR: copies of the server's certificate and key and of
# the CA in DIR, readable by USER only (PostgreSQL refuses a key that others
# may read).
tls_install() {
	local user=$1 dir=$2 f
	mkdir -p "$dir"
	for f in ca.pem server.pem server.key; do
		install -m 600 "$TLS_DIR/$f" "$dir/$f"
	done
	own "$user" "$dir"
}

# ---------------------------------------------------------------- PostgreSQL

pg_pid() {
	local pid
	pid=$(pidfile_pid "$PG_DATA/postmaster.pid")
	if [ -n "$pid" ] && pid_alive "$pid" postgres; then
		printf '%s\n' "$pid"
	fi
	return 0
}

# shellcheck disable=SC2120 # arguments are optional
pg_psql() {
	as "$PG_USER" "$PG_BIN/psql" -X -q -v ON_ERROR_STOP=1 -h "$PG_RUN" \
		-p "$PG_PORT" -U postgres -d postgres "$@"
}

pg_write_conf() {
	# Rewritten at every start, so a moved checkout gets its new paths.
	cat >"$PG_DATA/orders-local.conf" <<EOF
# Written by deploy/local/services.sh at every start; edits are lost.
listen_addresses = '127.0.0.1'
port = $PG_PORT
unix_socket_directories = '$PG_RUN'
unix_socket_permissions = 0700
max_connections = 200
shared_buffers = 128MB
logging_collector = off
log_line_prefix = '%m [%p] %q%u@%d '
log_timezone = 'UTC'
timezone = 'UTC'
ssl = on
ssl_cert_file = 'tls/server.pem'
ssl_key_file = 'tls/server.key'
ssl_min_protocol_version = 'TLSv1.2'
EOF
	own "$PG_USER" "$PG_DATA/orders-local.conf"
	tls_install "$PG_USER" "$PG_DATA/tls"
}

pg_start() {
	local pid
	pid=$(pg_pid)
	if [ -n "$pid" ]; then
		say "postgresql: already running (pid $pid)"
		return 0
	fi
	require_port_free postgresql "$PG_PORT"
	check_reachable "$PG_USER"
	mkdir -p "$PG_RUN"
	chmod 700 "$PG_RUN"
	own "$PG_USER" "$PG_RUN"
	touch "$PG_LOG"
	own "$PG_USER" "$PG_LOG"

	[ -s "$PG_DATA/PG_VERSION" ] || rm -f "$PG_READY"
	if [ ! -e "$PG_READY" ]; then
		# No marker: never initialised, or initdb was interrupted. Nothing
		# in such a directory is worth keeping.
		rm -rf "$PG_DATA"
		mkdir -p "$PG_DATA"
		chmod 700 "$PG_DATA"
		own "$PG_USER" "$PG_DATA"
		say "postgresql: initdb $PG_DATA"
		as "$PG_USER" "$PG_BIN/initdb" -D "$PG_DATA" -U postgres \
			--auth-local=trust --auth-host=trust --no-locale -E UTF8 \
			>"$LOG_DIR/initdb.log" 2>&1 ||
			{
				tail -n 20 "$LOG_DIR/initdb.log" >&2
				die "postgresql: initdb failed (see $LOG_DIR/initdb.log)"
			}
		printf "\ninclude = 'orders-local.conf'\n" >>"$PG_DATA/postgresql.conf"
		touch "$PG_READY"
	fi
	pg_write_conf

	say "postgresql: starting on 127.0.0.1:$PG_PORT"
	# setsid: the postmaster gets its own session, so Ctrl-C in the
	# terminal of `make run` reaches run.sh (which stops everything in
	# order), not the database directly.
	if ! as "$PG_USER" setsid "$PG_BIN/pg_ctl" -D "$PG_DATA" -l "$PG_LOG" \
		-w -t 60 start >/dev/null; then
		tail -n 20 "$PG_LOG" >&2
		die "postgresql: did not start (see $PG_LOG)"
	fi
	pg_psql <<'EOF'
SELECT 'CREATE ROLE orders LOGIN'
 WHERE NOT EXISTS (SELECT FROM pg_roles WHERE rolname = 'orders') \gexec
SELECT 'CREATE DATABASE orders OWNER orders'
 WHERE NOT EXISTS (SELECT FROM pg_database WHERE datname = 'orders') \gexec
EOF
	say "postgresql: running (pid $(pg_pid))"
}

pg_stop() {
	local pid
	pid=$(pg_pid)
	if [ -z "$pid" ]; then
		say "postgresql: not running"
		return 0
	fi
	say "postgresql: stopping (pid $pid)"
	if ! as "$PG_USER" "$PG_BIN/pg_ctl" -D "$PG_DATA" -m fast -w -t 60 stop >/dev/null; then
		warn "postgresql: fast shutdown failed; sending SIGQUIT (immediate shutdown)"
		kill -QUIT "$pid" 2>/dev/null || true
	fi
	wait_gone "$pid" 30 || {
		warn "postgresql: pid $pid still running; sending SIGKILL"
		kill -KILL "$pid" 2>/dev/null || true
		wait_gone "$pid" 5 || true
	}
}

pg_status() {
	local pid
	pid=$(pg_pid)
	if [ -n "$pid" ]; then
		printf 'postgresql: running  pid %-7s 127.0.0.1:%s  %s\n' "$pid" "$PG_PORT" "$PG_DATA"
	else
		printf 'postgresql: stopped\n'
		return 1
	fi
}

# ------------------------------------------------------------------ RabbitMQ

rmq_env() {
	export RABBITMQ_NODENAME=$RMQ_NODE
	export RABBITMQ_USE_LONGNAME=false
	export RABBITMQ_NODE_PORT=$AMQP_PORT
	export RABBITMQ_DIST_PORT=$RABBIT_DIST_PORT
	export RABBITMQ_MNESIA_BASE=$RMQ_DIR/mnesia
	export RABBITMQ_LOG_BASE=$RMQ_DIR/log
	export RABBITMQ_CONFIG_FILE=$RMQ_DIR/rabbitmq.conf
	export RABBITMQ_ADVANCED_CONFIG_FILE=$RMQ_DIR/advanced.config
	export RABBITMQ_ENABLED_PLUGINS_FILE=$RMQ_DIR/enabled_plugins
	export RABBITMQ_PID_FILE=$RMQ_PID_FILE
	# Our own (empty) env file instead of /etc/rabbitmq/rabbitmq-env.conf,
	# which configures the system's node, not this one.
	export RABBITMQ_CONF_ENV_FILE=$RMQ_DIR/rabbitmq-env.conf
	# Distribution on loopback only. The node and the CLI find each other
	# through a private epmd (port EPMD_PORT, loopback), started here.
	export RABBITMQ_SERVER_ADDITIONAL_ERL_ARGS="-kernel inet_dist_use_interface {127,0,0,1}"
	export ERL_EPMD_ADDRESS=127.0.0.1
	export ERL_EPMD_PORT=$EPMD_PORT
	export ERL_CRASH_DUMP=$RMQ_DIR/log/erl_crash.dump
}

rmqctl() {
	as "$RMQ_USER" "$RMQ_LIB/rabbitmqctl" -n "$RMQ_NODE" "$@"
}

rmq_pid() {
	local pid
	pid=$(pidfile_pid "$RMQ_PID_FILE")
	if [ -n "$pid" ] && pid_alive "$pid" beam.smp; then
		printf '%s\n' "$pid"
	fi
	return 0
}

rmq_write_conf() {
	mkdir -p "$RMQ_DIR/log" "$RMQ_DIR/mnesia"
	cat >"$RMQ_DIR/rabbitmq.conf" <<EOF
# Written by deploy/local/services.sh at every start; edits are lost.
listeners.tcp.1 = 127.0.0.1:$AMQP_PORT
loopback_users.guest = true
log.console = false
log.file.level = info
EOF
	if [ -n "$AMQPS_PORT" ]; then
		cat >>"$RMQ_DIR/rabbitmq.conf" <<EOF
listeners.ssl.1 = 127.0.0.1:$AMQPS_PORT
ssl_options.cacertfile = $RMQ_DIR/tls/ca.pem
ssl_options.certfile = $RMQ_DIR/tls/server.pem
ssl_options.keyfile = $RMQ_DIR/tls/server.key
ssl_options.verify = verify_peer
ssl_options.fail_if_no_peer_cert = false
ssl_options.versions.1 = tlsv1.3
ssl_options.versions.2 = tlsv1.2
EOF
	fi
	if [ -n "$RABBIT_PROM_PORT" ]; then
		printf 'prometheus.tcp.ip = 127.0.0.1\nprometheus.tcp.port = %s\n' "$RABBIT_PROM_PORT" \
			>>"$RMQ_DIR/rabbitmq.conf"
		printf '[rabbitmq_prometheus].\n' >"$RMQ_DIR/enabled_plugins"
	else
		printf '[].\n' >"$RMQ_DIR/enabled_plugins"
	fi
	# Quorum queues refresh the message counts list_queues and the
	# Prometheus plugin show on a tick, every 5 s by default: a count read
	# just after a change can be that old. 1 s keeps the tests' before and
	# after readings (and a developer's) close to the truth.
	printf '[{rabbit, [{quorum_tick_interval, 1000}]}].\n' >"$RMQ_DIR/advanced.config"
	: >"$RMQ_DIR/rabbitmq-env.conf"
	tls_install "$RMQ_USER" "$RMQ_DIR/tls"
	# Everything the node reads or writes belongs to its user; a file left
	# by root here is what makes Debian's node fail half-way through boot.
	own "$RMQ_USER" "$RMQ_DIR"
}

# epmd_start: make sure an epmd runs. When none does, start one here (as
# the node's user, on loopback) and remember its pid, so that stop can end
# it; one that already runs belongs to somebody else and is left alone.
epmd_start() {
	local pid
	pid=$(pidfile_pid "$EPMD_PID_FILE")
	if [ -n "$pid" ] && pid_alive "$pid" epmd && port_open "$EPMD_PORT"; then
		return 0
	fi
	rm -f "$EPMD_PID_FILE"
	if port_open "$EPMD_PORT"; then
		say "epmd: using the one already running on port $EPMD_PORT (not ours; left alone on stop)"
		return 0
	fi
	as_exec "$RMQ_USER" setsid epmd -port "$EPMD_PORT" \
		>"$RMQ_DIR/log/epmd.log" 2>&1 </dev/null &
	pid=$!
	printf '%s\n' "$pid" >"$EPMD_PID_FILE"
	local deadline=$((SECONDS + 10))
	until port_open "$EPMD_PORT"; do
		pid_alive "$pid" || die "epmd: exited at start (see $RMQ_DIR/log/epmd.log)"
		[ $SECONDS -lt $deadline ] || die "epmd: not listening on port $EPMD_PORT after 10 s"
		sleep 0.1
	done
}

epmd_stop() {
	local pid names
	pid=$(pidfile_pid "$EPMD_PID_FILE")
	if [ -z "$pid" ] || ! pid_alive "$pid" epmd; then
		rm -f "$EPMD_PID_FILE"
		return 0
	fi
	# Another node may have registered with our epmd meanwhile; killing it
	# would make that node unreachable for its tools.
	names=$(epmd -port "$EPMD_PORT" -names 2>/dev/null | grep '^name ' | grep -v '^name orders at' || true)
	if [ -n "$names" ]; then
		# The cluster's other nodes: the last one to stop ends it.
		[ "$RMQ_LABEL" = rabbitmq ] || return 0
		warn "epmd: pid $pid still serves other nodes ($(printf '%s' "$names" | tr '\n' ' ')); left running"
		return 0
	fi
	say "epmd: stopping (pid $pid)"
	kill -TERM "$pid" 2>/dev/null || true
	wait_gone "$pid" 5 || kill -KILL "$pid" 2>/dev/null || true
	wait_gone "$pid" 5 || warn "epmd: pid $pid survived SIGKILL"
	rm -f "$EPMD_PID_FILE"
}

rmq_fail() {
	warn "$RMQ_LABEL: $1"
	local f
	for f in "$RMQ_DIR/log/startup.log" "$RMQ_DIR/log/$RMQ_NODE.log"; do
		if [ -s "$f" ]; then
			warn "---- last lines of $f"
			tail -n 25 "$f" >&2
		fi
	done
	exit 1
}

# rmq_launch: start the node in the background; 1 when it already runs.
# rmq_await then waits for its boot, so that nodes can boot side by side.
rmq_launch() {
	local pid
	rmq_env
	pid=$(rmq_pid)
	if [ -n "$pid" ]; then
		if rmqctl -q await_startup --timeout 30 >/dev/null 2>&1; then
			say "$RMQ_LABEL: already running (pid $pid)"
			return 1
		fi
		rmq_fail "pid $pid runs but node $RMQ_NODE does not answer; run '$0 stop $RMQ_LABEL' and retry"
	fi
	rm -f "$RMQ_PID_FILE"
	require_port_free rabbitmq "$AMQP_PORT"
	require_port_free "rabbitmq distribution" "$RABBIT_DIST_PORT"
	check_reachable "$RMQ_USER"
	if [ -d "$RMQ_DIR/mnesia" ] && [ ! -e "$RMQ_BOOTED" ]; then
		# The node never finished a boot with this directory (first boot
		# died, e.g. on a permission error): its half-written schema
		# would make this boot fail too, and it holds no messages.
		say "$RMQ_LABEL: discarding $RMQ_DIR/mnesia left by a boot that never completed"
		rm -rf "$RMQ_DIR/mnesia"
	fi
	[ -z "$AMQPS_PORT" ] || require_port_free "rabbitmq tls" "$AMQPS_PORT"
	rmq_write_conf
	epmd_start

	say "$RMQ_LABEL: starting node $RMQ_NODE on 127.0.0.1:$AMQP_PORT"
	as_exec "$RMQ_USER" setsid "$RMQ_LIB/rabbitmq-server" \
		>"$RMQ_DIR/log/startup.log" 2>&1 </dev/null &
	pid=$!
	# Debian's rabbitmq-server is a shell that stays the VM's parent; it
	# exits once the VM has.
	printf '%s\n' "$pid" >"$RMQ_LAUNCHER_PID_FILE"
}

rmq_await() {
	local pid deadline=$((SECONDS + RMQ_START_TIMEOUT))
	rmq_env
	pid=$(pidfile_pid "$RMQ_LAUNCHER_PID_FILE")
	# The node writes its pid file early in boot; await_startup then waits
	# for the boot to finish. Both can take a while on a slow CI machine.
	until [ -s "$RMQ_PID_FILE" ]; do
		pid_alive "$pid" || rmq_fail "the node exited during boot"
		[ $SECONDS -lt $deadline ] || rmq_fail "no pid file after ${RMQ_START_TIMEOUT} s"
		sleep 0.2
	done
	while ! rmqctl -q await_startup --timeout 10 >/dev/null 2>&1; do
		pid_alive "$pid" || rmq_fail "the node exited during boot"
		[ $SECONDS -lt $deadline ] || rmq_fail "not booted after ${RMQ_START_TIMEOUT} s"
		sleep 1
	done
	touch "$RMQ_BOOTED"
	say "$RMQ_LABEL: running (pid $(rmq_pid))"
}

rmq_start() {
	rmq_launch || return 0
	rmq_await
}

rmq_stop() {
	local pid launcher
	pid=$(rmq_pid)
	launcher=$(pidfile_pid "$RMQ_LAUNCHER_PID_FILE")
	if [ -z "$pid" ] && [ -n "$launcher" ] && pid_alive "$launcher"; then
		# Interrupted during boot, before the node wrote its pid file.
		pid=$(pgrep -P "$launcher" -x beam.smp | head -n 1 || true)
	fi
	if [ -z "$pid" ]; then
		say "$RMQ_LABEL: not running"
	else
		# SIGTERM makes the Erlang VM run init:stop(), RabbitMQ's orderly
		# shutdown; no CLI needed (the CLI can itself start an epmd).
		say "$RMQ_LABEL: stopping (pid $pid)"
		kill -TERM "$pid" 2>/dev/null || true
		if ! wait_gone "$pid" 60; then
			warn "$RMQ_LABEL: pid $pid still running 60 s after SIGTERM; sending SIGKILL"
			kill -KILL "$pid" 2>/dev/null || true
			wait_gone "$pid" 10 || warn "$RMQ_LABEL: pid $pid survived SIGKILL"
		fi
	fi
	if [ -n "$launcher" ] && pid_alive "$launcher"; then
		wait_gone "$launcher" 10 || kill -TERM "$launcher" 2>/dev/null || true
	fi
	rm -f "$RMQ_PID_FILE" "$RMQ_LAUNCHER_PID_FILE"
	epmd_stop
}

rmq_status() {
	local pid
	pid=$(rmq_pid)
	if [ -n "$pid" ] && port_open "$AMQP_PORT"; then
		printf '%-11s running  pid %-7s 127.0.0.1:%s  node %s\n' "$RMQ_LABEL:" "$pid" "$AMQP_PORT" "$RMQ_NODE"
	elif [ -n "$pid" ]; then
		printf '%-11s booting  pid %-7s (port %s not open yet)\n' "$RMQ_LABEL:" "$pid" "$AMQP_PORT"
		return 1
	elif pid=$(pidfile_pid "$RMQ_LAUNCHER_PID_FILE") && [ -n "$pid" ] && pid_alive "$pid"; then
		printf '%-11s booting  launcher pid %s (no node pid yet)\n' "$RMQ_LABEL:" "$pid"
		return 1
	else
		printf '%-11s stopped\n' "$RMQ_LABEL:"
		return 1
	fi
	pid=$(pidfile_pid "$EPMD_PID_FILE")
	if [ -n "$pid" ] && pid_alive "$pid" epmd; then
		printf 'epmd:       running  pid %-7s (started by us)\n' "$pid"
	fi
}

# ------------------------------------------------- the failover test's cluster

# in_node K CMD...: CMD with the RabbitMQ functions on the cluster's node K.
in_node() {
	local k=$1
	shift
	(
		rmq_select "$k"
		"$@"
	)
}

# cluster_start: a fresh three-node cluster. An earlier one's state is
# thrown away: it held test traffic only, and nodes of a cluster started
# again in another order than they stopped wait for each other at boot.
# The nodes boot side by side; then nodes 2 and 3 join node 1.
cluster_start() {
	local k running=0 first
	first=$(cluster_node 1)
	for k in $(seq "$CLUSTER_SIZE"); do
		[ -z "$(in_node "$k" rmq_pid)" ] || running=$((running + 1))
	done
	if [ $running -eq "$CLUSTER_SIZE" ]; then
		say "cluster: already running"
		return 0
	fi
	[ $running -eq 0 ] ||
		die "cluster: $running of its $CLUSTER_SIZE nodes run; run '$0 stop cluster' first"
	rm -rf "$CLUSTER_DIR"
	mkdir -p "$CLUSTER_DIR"
	for k in $(seq "$CLUSTER_SIZE"); do
		in_node "$k" rmq_launch
	done
	for k in $(seq "$CLUSTER_SIZE"); do
		in_node "$k" rmq_await
	done
	for k in $(seq 2 "$CLUSTER_SIZE"); do
		say "cluster: $(cluster_node "$k") joins $first"
		in_node "$k" cluster_join "$first"
	done
	say "cluster: running, AMQP ports $CLUSTER_AMQP_BASE-$((CLUSTER_AMQP_BASE + CLUSTER_SIZE - 1))"
}

# cluster_join NODE: the selected node leaves its own cluster for NODE's.
cluster_join() {
	local out
	rmq_env
	# The CLI logs noise on stderr while the node changes clusters.
	if ! out=$({ rmqctl -q stop_app && rmqctl -q join_cluster "$1" && rmqctl -q start_app; } 2>&1); then
		printf '%s\n' "$out" >&2
		rmq_fail "cannot join $1"
	fi
}

cluster_stop() {
	local k rc=0
	for ((k = CLUSTER_SIZE; k >= 1; k--)); do
		in_node "$k" rmq_stop || rc=1
	done
	return $rc
}

cluster_status() {
	local k rc=0
	for k in $(seq "$CLUSTER_SIZE"); do
		in_node "$k" rmq_status || rc=1
	done
	return $rc
}

# --------------------------------------------------------------------- Redis

redis_pid() {
	local pid
	pid=$(pidfile_pid "$REDIS_PID_FILE")
	if [ -n "$pid" ] && pid_alive "$pid" redis-server; then
		printf '%s\n' "$pid"
	fi
	return 0
}

redis_start() {
	local pid
	pid=$(redis_pid)
	if [ -n "$pid" ]; then
		say "redis: already running (pid $pid)"
		return 0
	fi
	rm -f "$REDIS_PID_FILE"
	require_port_free redis "$REDIS_PORT"
	check_reachable "$REDIS_USER"
	mkdir -p "$REDIS_DIR"
	cat >"$REDIS_DIR/redis.conf" <<EOF
# Written by deploy/local/services.sh at every start; edits are lost.
bind 127.0.0.1
protected-mode yes
port $REDIS_PORT
daemonize yes
pidfile $REDIS_PID_FILE
logfile $REDIS_LOG
dir $REDIS_DIR
# A cache, but the idempotency keys are worth keeping across a restart.
appendonly yes
appendfsync everysec
EOF
	touch "$REDIS_LOG"
	own "$REDIS_USER" "$REDIS_DIR" "$REDIS_LOG"
	say "redis: starting on 127.0.0.1:$REDIS_PORT"
	# daemonize makes redis call setsid itself.
	as "$REDIS_USER" redis-server "$REDIS_DIR/redis.conf" ||
		die "redis: did not start (see $REDIS_LOG)"
	local deadline=$((SECONDS + 30)) reply
	while :; do
		reply=$(redis-cli -h 127.0.0.1 -p "$REDIS_PORT" ping 2>/dev/null || true)
		[ "$reply" != PONG ] || break
		if [ $SECONDS -ge $deadline ]; then
			tail -n 20 "$REDIS_LOG" >&2
			die "redis: no PONG after 30 s (see $REDIS_LOG)"
		fi
		sleep 0.2
	done
	say "redis: running (pid $(redis_pid))"
}

redis_stop() {
	local pid
	pid=$(redis_pid)
	if [ -z "$pid" ]; then
		say "redis: not running"
		rm -f "$REDIS_PID_FILE"
		return 0
	fi
	# SIGTERM: redis flushes the AOF and exits.
	say "redis: stopping (pid $pid)"
	kill -TERM "$pid" 2>/dev/null || true
	if ! wait_gone "$pid" 30; then
		warn "redis: pid $pid still running 30 s after SIGTERM; sending SIGKILL"
		kill -KILL "$pid" 2>/dev/null || true
		wait_gone "$pid" 5 || warn "redis: pid $pid survived SIGKILL"
	fi
	rm -f "$REDIS_PID_FILE"
}

redis_status() {
	local pid
	pid=$(redis_pid)
	if [ -n "$pid" ]; then
		printf 'redis:      running  pid %-7s 127.0.0.1:%s  %s\n' "$pid" "$REDIS_PORT" "$REDIS_DIR"
	else
		printf 'redis:      stopped\n'
		return 1
	fi
}

# ---------------------------------------------------------------------- main

usage() {
	echo "usage: $0 {start|stop|status|restart} [postgresql|rabbitmq|redis|cluster|rabbitmq-{1..$CLUSTER_SIZE}]..." >&2
	echo "   or: $0 ctl [rabbitmq-{1..$CLUSTER_SIZE}] RABBITMQCTL-ARGS..." >&2
	exit 2
}

# member SERVICE: K when SERVICE is rabbitmq-K, a node of the cluster.
member() {
	case $1 in
	rabbitmq-*) [[ ${1#rabbitmq-} =~ ^[1-9]$ ]] && [ "${1#rabbitmq-}" -le "$CLUSTER_SIZE" ] &&
		printf '%s\n' "${1#rabbitmq-}" ;;
	*) return 1 ;;
	esac
}

[ $# -ge 1 ] || usage
if [ "$1" = ctl ]; then
	# rabbitmqctl for our node, e.g. `services.sh ctl list_queues`: it
	# needs the node's user, cookie and private epmd port.
	shift
	if [ $# -gt 0 ] && k=$(member "$1"); then
		shift
		rmq_select "$k"
	fi
	rmq_env
	rmqctl "$@"
	exit
fi
action=$1
shift
# No service named: all three, started in dependency order, stopped in
# reverse; stop also stops the cluster when a pid file says it may run.
services=("$@")
if [ ${#services[@]} -eq 0 ]; then
	services=(postgresql redis rabbitmq)
	if [ "$action" = stop ] && { compgen -G "$CLUSTER_DIR/*.pid" || compgen -G "$CLUSTER_DIR/*/*.pid"; } >/dev/null; then
		services+=(cluster)
	fi
fi
for svc in "${services[@]}"; do
	case $svc in
	postgresql | rabbitmq | redis | cluster) ;;
	*) member "$svc" >/dev/null || usage ;;
	esac
done
# act ACTION SERVICE: e.g. rmq_start, or in_node 2 rmq_start for rabbitmq-2.
act() {
	local k
	case $2 in
	postgresql) "pg_$1" ;;
	rabbitmq) "rmq_$1" ;;
	redis) "redis_$1" ;;
	cluster) "cluster_$1" ;;
	*)
		k=$(member "$2")
		in_node "$k" "rmq_$1"
		;;
	esac
}

mkdir -p "$LOCAL" "$LOG_DIR"
chmod 755 "$LOCAL" "$LOG_DIR"
# One start or stop at a time per checkout (status needs no lock).
if [ "$action" != status ]; then
	exec 9>"$LOCAL/.services.lock"
	flock -w 300 9 || die "another services.sh has held $LOCAL/.services.lock for 5 minutes"
fi

start_all() {
	local svc
	tls_make
	for svc in "${services[@]}"; do
		act start "$svc"
	done
}
stop_all() {
	local i rc=0
	for ((i = ${#services[@]} - 1; i >= 0; i--)); do
		act stop "${services[i]}" || rc=1
	done
	return $rc
}

case $action in
start)
	start_all
	;;
stop)
	stop_all
	;;
restart)
	stop_all
	start_all
	;;
status)
	rc=0
	for svc in "${services[@]}"; do
		act status "$svc" || rc=3
	done
	exit $rc
	;;
*)
	usage
	;;
esac
