#!/usr/bin/env bash
# up.sh: the whole local stack, in the background (`make up`).
#
#   1. install missing packages and build (build.sh; BUILD_DIR, CMAKE_ARGS;
#      SKIP_BUILD=1 skips this step and runs what BUILD_DIR holds)
#   2. start PostgreSQL, RabbitMQ and Redis (services.sh start)
#   3. migrate and seed the demo catalog (tools/migrate.sh --seed)
#   4. write .local/env, the connection settings for tools and tests
#   5. start orders-api and the four consumers with that environment
#      (logs .local/log/<daemon>.log, pids .local/run/<daemon>.pid);
#      daemons already running are restarted, so they run the new build
#   6. wait up to 30 s until the API's /readyz and every consumer's
#      /healthz answer 200; otherwise print the logs' tails and fail
#
# Variables already in the environment (ORDERS_LOG_LEVEL, ASAN_OPTIONS, ...)
# reach the daemons too. `make down` (down.sh) stops everything.
set -euo pipefail

SCRIPT_NAME=up
HERE=$(dirname "${BASH_SOURCE[0]}")
# shellcheck source=lib.sh
. "$HERE/lib.sh"

READY_TIMEOUT=${READY_TIMEOUT:-30}
build_dir=${BUILD_DIR:-build}
case $build_dir in
/*) ;;
*) build_dir=$ROOT/$build_dir ;;
esac
export BUILD_DIR=$build_dir

if [ "${SKIP_BUILD:-0}" = 1 ]; then
	say "SKIP_BUILD=1: using what is in $build_dir"
else
	"$HERE/build.sh"
fi
"$HERE/services.sh" start

# Plain TCP: PostgreSQL has ssl = on for the TLS tests, and libpq's default
# (sslmode=prefer) would put every local session on TLS, which costs PostgreSQL
# CPU in `make bench`. Tests that want TLS say sslmode=verify-full themselves.
pg_dsn="postgresql://orders@127.0.0.1:$PG_PORT/orders?sslmode=disable"
ORDERS_PG_DSN=$pg_dsn "$ROOT/tools/migrate.sh" --seed

mkdir -p "$RUN_DIR" "$LOG_DIR"
tmp=$(mktemp "$LOCAL/env.XXXXXX")
cat >"$tmp" <<ENV
# Written by deploy/local/up.sh: the local stack's connection settings.
# Use with: . .local/env
export ORDERS_ENV=development
export ORDERS_PG_DSN=$pg_dsn
export ORDERS_AMQP_URL=amqp://guest:guest@127.0.0.1:$AMQP_PORT/
export ORDERS_REDIS_URL=redis://127.0.0.1:$REDIS_PORT/0
export ORDERS_HTTP_PORT=$HTTP_PORT
# For the TLS tests: the local CA and RabbitMQ's TLS listener (the daemons use neither).
export ORDERS_LOCAL_TLS_DIR=$TLS_DIR
export ORDERS_LOCAL_AMQPS_URL=amqps://guest:guest@127.0.0.1:$AMQPS_PORT/
ENV
chmod 644 "$tmp"
mv -f "$tmp" "$ENV_FILE"
say "wrote $ENV_FILE"

for name in "${DAEMONS[@]}"; do
	[ -x "$build_dir/${DAEMON_PATH[$name]}" ] ||
		die "$build_dir/${DAEMON_PATH[$name]} was not built"
done
stop_daemons

# daemon.sh restarts single daemons from the same build.
printf '%s\n' "$build_dir" >"$RUN_DIR/build-dir"
declare -A started=()
for name in "${DAEMONS[@]}"; do
	start_daemon "$name" "$build_dir"
	started[$name]=$STARTED_PID
done

show_logs() {
	local name
	for name in "${DAEMONS[@]}"; do
		printf '%s: ---- last lines of .local/log/%s.log\n' "$SCRIPT_NAME" "$name" >&2
		tail -n 30 "$LOG_DIR/$name.log" >&2 2>/dev/null || true
	done
}

deadline=$((SECONDS + READY_TIMEOUT))
declare -A ready=()
while :; do
	waiting=()
	for name in "${DAEMONS[@]}"; do
		[ -z "${ready[$name]:-}" ] || continue
		# Just started: the pid may not have exec'd the daemon yet.
		if ! pid_alive "${started[$name]}"; then
			show_logs
			die "$name exited during start-up (see .local/log/$name.log); 'make down' stops the rest"
		fi
		if http_ok "$(ready_url "$name")"; then
			ready[$name]=1
		else
			waiting+=("$name")
		fi
	done
	[ ${#waiting[@]} -gt 0 ] || break
	if [ $SECONDS -ge $deadline ]; then
		show_logs
		urls=()
		for name in "${waiting[@]}"; do urls+=("$(ready_url "$name")"); done
		die "not ready after ${READY_TIMEOUT} s: ${waiting[*]} (${urls[*]} did not answer 200); 'make down' stops the stack"
	fi
	sleep 0.5
done
say "ready: API http://127.0.0.1:$HTTP_PORT, consumers' ops ports ${DAEMON_METRICS_PORT[orders-inventory]}-${DAEMON_METRICS_PORT[orders-cart]}; settings in .local/env"
