#!/usr/bin/env bash
# run.sh: `make bench`. Brings the local stack up from an optimised build
# without sanitizers (deploy/local/up.sh, default settings), takes every
# measurement of issue 6's five targets in one go with a progress line per
# step, computes each target's ratio within the same run, and writes
#   bench/results/<date>-<host>.md    the report: figures, pass/fail per target,
#                                     machine, versions, the exact commands
#   bench/results/<date>-<host>.json  every tool's own JSON summary, and the targets
# then takes the stack down again (BENCH_KEEP_UP=1 leaves it running).
#
# The steps, in order (each bounded in count and time; ~10-20 minutes in all):
#   T2  wrk against nginx serving a fixed 204 (bench/nginx.conf), then the same
#       wrk command against orders-api's GET /healthz.
#   T1  checkouts, closed loop at 1,000 connections, for BENCH_T1_SECONDS, with
#       orders-inventory stopped; then orders-bench-publisher: the same number
#       of messages in flight at most (1,000), the mean size of the API's own
#       messages then waiting in inventory.reserve, into a scratch quorum queue
#       declared with the work queues' arguments (bench.publisher).
#   T3  10,000 connections offering half of T1's accept rate, open loop, for
#       BENCH_T3_SECONDS, orders-inventory still stopped (as in T1); the API's
#       resident memory sampled from /proc every 0.2 s.
#       Then orders-inventory starts, and every order T1 and T3 accepted is
#       followed to its final status (lost and duplicated orders counted) for
#       up to BENCH_FOLLOW_MAX_S; what the consumers have not done by then is
#       purged from the work queues (and said in the report), so that T5 and
#       T4 start from empty queues and the run stays bounded.
#   T5  orders-payment stopped, a backlog of BENCH_T5_BACKLOG payment.authorize
#       messages made through checkouts, drained by one payment consumer with
#       ORDERS_GATEWAY_LATENCY_MS=100; again with four; the drain rates compared.
#   T4  a burst of BENCH_BURST checkouts at 1,000 connections with every
#       consumer running, each order followed to its final status; CPU time of
#       every process of the stack from /proc/<pid>/stat before and after.
#       What is still queued then is purged, and the run's keys are deleted
#       from Redis: the stack is left without a backlog or a few hundred
#       thousand idempotency keys for the next `make test` or `make up`.
#
# Knobs (environment): ORDERS_LOCAL_PORT_OFFSET (the stack's ports, see
# README), BENCH_BUILD_DIR (build-bench, a Release build of its own), BENCH_HTTP_SECONDS (10), BENCH_T1_SECONDS
# (10), BENCH_PUB_COUNT (100000), BENCH_T3_SECONDS (20), BENCH_T3_CONNS (10000),
# BENCH_T5_BACKLOG (600), BENCH_BURST (100000), BENCH_FOLLOW_MAX_S (120),
# BENCH_DRAIN_MAX_S (360), BENCH_OUT (bench/results), BENCH_KEEP_UP (0).
# Every other ORDERS_* variable is cleared: the stack runs with its defaults, but for
# ORDERS_HTTP_PER_IP_CONNECTION_LIMIT=0 (every client is on this machine's one address).
set -euo pipefail

for v in $(compgen -e); do
	case $v in
	ORDERS_LOCAL_PORT_OFFSET) ;;
	ORDERS_*) unset "$v" ;;
	esac
done
# T3 opens 10,000 connections from one address, as a load balancer's node would.
export ORDERS_HTTP_PER_IP_CONNECTION_LIMIT=0
# shellcheck disable=SC2034 # lib.sh's say/warn/die prefix
SCRIPT_NAME=bench
HERE=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd -P)
# shellcheck source-path=SCRIPTDIR source=../deploy/local/lib.sh
. "$HERE/../deploy/local/lib.sh"
# shellcheck source-path=SCRIPTDIR source=lib.sh
. "$HERE/lib.sh"

BUILD=${BENCH_BUILD_DIR:-build-bench}
case $BUILD in /*) ;; *) BUILD=$ROOT/$BUILD ;; esac
HTTP_S=${BENCH_HTTP_SECONDS:-10}
HTTP_CONNS=1000
T1_S=${BENCH_T1_SECONDS:-10}
T1_CONNS=1000
PUB_COUNT=${BENCH_PUB_COUNT:-100000}
PUB_IN_FLIGHT=$T1_CONNS
T3_S=${BENCH_T3_SECONDS:-20}
T3_CONNS=${BENCH_T3_CONNS:-10000}
T5_BACKLOG=${BENCH_T5_BACKLOG:-600}
T5_LATENCY_MS=100
BURST=${BENCH_BURST:-100000}
BURST_CONNS=1000
FOLLOW_MAX_S=${BENCH_FOLLOW_MAX_S:-120}
DRAIN_MAX_S=${BENCH_DRAIN_MAX_S:-360}
OUT=${BENCH_OUT:-$ROOT/bench/results}
NGINX_PORT=$((18080 + PORT_OFFSET))
BENCH=$BUILD/bench/orders-bench
PUBLISHER=$BUILD/bench/orders-bench-publisher
ORDERCTL=$BUILD/tools/orderctl
DAEMON_SH=$ROOT/deploy/local/daemon.sh
SKUS=$(printf 'BENCH-%02d,' $(seq 1 16))
SKUS=${SKUS%,}
STEPS=11
step_no=0
started=$SECONDS
rid=$(date +%s)
work=$LOCAL/bench
nginx_dir=$work/nginx
declare -a CMDS=() NOTES=()
declare -A X_PID=()

clock() { printf '%02d:%02d' $(((SECONDS - started) / 60)) $(((SECONDS - started) % 60)); }
step() {
	step_no=$((step_no + 1))
	printf '\nbench: [%d/%d %s] %s\n' "$step_no" "$STEPS" "$(clock)" "$*"
}
# cmd ARGS...: run and remember the command for the report, quoted where needed.
cmd() {
	local w line=
	for w in "$@"; do
		case $w in
		*[[:space:]]*) line+=" '$w'" ;;
		*) line+=" $w" ;;
		esac
	done
	CMDS+=("${line# }")
	"$@"
}
jqr() { jq -r "$@"; }

# -------------------------------------------------------------------- clean-up

nginx_stop() {
	local pid
	pid=$(pidfile_pid "$nginx_dir/nginx.pid")
	if [ -n "$pid" ] && pid_alive "$pid" nginx; then
		kill -QUIT "$pid" 2>/dev/null || true
		wait_gone "$pid" 10 || kill -KILL "$pid" 2>/dev/null || true
	fi
	rm -f "$nginx_dir/nginx.pid"
}

extras_stop() {
	local name
	for name in "${!X_PID[@]}"; do
		kill -TERM "${X_PID[$name]}" 2>/dev/null || true
	done
	for name in "${!X_PID[@]}"; do
		wait_gone "${X_PID[$name]}" 10 || kill -KILL "${X_PID[$name]}" 2>/dev/null || true
		wait "${X_PID[$name]}" 2>/dev/null || true
		unset "X_PID[$name]"
	done
}

finish() {
	local rc=$?
	trap - EXIT
	[ -z "${sampler:-}" ] || kill "$sampler" 2>/dev/null || true
	nginx_stop
	extras_stop
	# Stopped half-way: the backlog the run made is not left to the next user.
	if [ $rc -ne 0 ] && [ -n "${ORDERS_AMQP_URL:-}" ]; then
		purge_work_queues "after a failed run" 2>/dev/null || true
		forget_redis_keys "$work" 2>/dev/null || true
	fi
	if [ "${BENCH_KEEP_UP:-0}" = 1 ]; then
		say "BENCH_KEEP_UP=1: the stack stays up ('make down' stops it)"
	else
		"$ROOT/deploy/local/down.sh" >/dev/null || rc=1
	fi
	exit $rc
}
trap finish EXIT
trap 'exit 130' INT
trap 'exit 143' TERM

# ------------------------------------------------------------------- helpers

# ids_array FILE: the order ids of an --ids-out file as a PostgreSQL array literal.
ids_array() { printf "'{%s}'::uuid[]" "$(cut -f2 "$1" | paste -sd,)"; }

# count_where FILE CONDITION: orders of FILE (or rows of another table keyed
# by order_id) that meet CONDITION, e.g. "status = 'reserved'".
count_orders() { psql_q -f - <<<"SELECT count(*) FROM orders WHERE order_id = ANY($(ids_array "$1")) AND $2"; }
count_payments() { psql_q -f - <<<"SELECT count(*) FROM payments WHERE order_id = ANY($(ids_array "$1"))"; }

# wait_queues_empty SECONDS: the work queues hold nothing ready.
wait_queues_empty() {
	local deadline=$((SECONDS + $1)) total
	while :; do
		total=$("$ORDERCTL" queues | awk '$1 !~ /^#|QUEUE|dlq/ { s += $2 } END { print s + 0 }')
		[ "$total" -ne 0 ] || return 0
		[ $SECONDS -lt $deadline ] || return 1
		sleep 1
	done
}

# purge_work_queues WHY: drop every ready message of the three order queues
# (not cart.persist), and say so in the report.
purge_work_queues() {
	local q n total=0
	for q in inventory.reserve payment.authorize order.finalize; do
		n=$(queue_ready "$q")
		[ "${n:-0}" -gt 0 ] || continue
		"$ROOT/deploy/local/services.sh" ctl -q purge_queue "$q" >/dev/null
		total=$((total + n))
	done
	warn "purged $total message(s) from the work queues: $1"
	NOTES+=("$total message(s) were purged from the work queues $1.")
}

# cpu_snapshot: "name ticks" for each process of the stack.
cpu_snapshot() {
	local name
	for name in "${DAEMONS[@]}"; do
		printf '%s %s\n' "$name" "$(ticks "$(daemon_pid "$name")")"
	done
	printf 'rabbitmq %s\n' "$(ticks "$(pidfile_pid "$LOCAL/rabbitmq/rabbit.pid")")"
	printf 'postgresql %s\n' "$(postgres_ticks)"
	printf 'redis %s\n' "$(ticks "$(pidfile_pid "$LOCAL/redis/redis.pid")")"
}

# start_extra_payment NAME: one more orders-payment beside the stack's, on a
# free ops port of this stack's block, with the T5 gateway latency.
start_extra_payment() {
	local name=$1 port=$2 log=$LOG_DIR/orders-$1.log
	(
		# shellcheck source=/dev/null
		. "$ENV_FILE"
		cd "$ROOT"
		ORDERS_METRICS_PORT=$port ORDERS_GATEWAY_LATENCY_MS=$T5_LATENCY_MS \
			exec "$BUILD/consumers/orders-payment"
	) >>"$log" 2>&1 </dev/null &
	X_PID[$name]=$!
	X_PORT[$name]=$port
}
declare -A X_PORT=()

# t5_backlog TAG: orders-payment stopped, T5_BACKLOG checkouts made, and
# waited for until each is reserved (its payment.authorize message waits).
t5_backlog() {
	local tag=$1 deadline n
	cmd "$BENCH" -n "$T5_BACKLOG" -c 100 -s "$SKUS" -k "b5$tag-$rid" -i "$work/t5$tag.ids" \
		-j "$work/t5$tag-send.json" >"$work/t5$tag-send.log" 2>&1 || [ $? -eq 3 ]
	deadline=$((SECONDS + 300))
	while :; do
		n=$(count_orders "$work/t5$tag.ids" "status = 'reserved'")
		[ "$n" -lt "$(wc -l <"$work/t5$tag.ids")" ] || break
		[ $SECONDS -lt $deadline ] || {
			NOTES+=("T5 was not measured: only $n of the backlog's orders were reserved after 300 s.")
			return 1
		}
		sleep 1
	done
	say "T5: $n orders reserved; payment.authorize holds $(queue_ready payment.authorize) ready"
}

# t5_drain TAG NCONSUMERS: start them, and time from all of them being ready
# until every order of the backlog has its payment row. The rate counts every
# payment they made (also for older messages that were still queued ahead of
# the backlog). Leaves "seconds payments" in work/t5TAG.drain.
t5_drain() {
	local tag=$1 k=$2 n total launch t0 t1 i port name deadline paid
	total=$(wc -l <"$work/t5$tag.ids")
	launch=$(date +%s.%N)
	ORDERS_GATEWAY_LATENCY_MS=$T5_LATENCY_MS "$DAEMON_SH" start orders-payment >/dev/null &
	local dpid=$!
	port=$((9101 + PORT_OFFSET * 10 + 5))
	for ((i = 2; i <= k; i++)); do
		start_extra_payment "payment-bench$i" "$port"
		port=$((port + 1))
	done
	wait "$dpid"
	for name in "${!X_PORT[@]}"; do
		until http_ok "http://127.0.0.1:${X_PORT[$name]}/readyz"; do
			pid_alive "${X_PID[$name]}" || {
				NOTES+=("T5 was not measured: $name exited at start.")
				return 1
			}
			sleep 0.1
		done
	done
	t0=$(date +%s.%N)
	deadline=$((SECONDS + 600))
	while :; do
		n=$(count_payments "$work/t5$tag.ids")
		[ "$n" -lt "$total" ] || break
		if [ $SECONDS -ge $deadline ]; then
			NOTES+=("T5 was not measured: $n of $total orders paid after 600 s with $k consumer(s).")
			"$DAEMON_SH" stop orders-payment >/dev/null
			extras_stop
			return 1
		fi
		sleep 0.2
	done
	t1=$(date +%s.%N)
	paid=$(psql_q -c "SELECT count(*) FROM payments WHERE created_at >= to_timestamp($launch)")
	awk -v a="$t0" -v b="$t1" -v p="$paid" 'BEGIN { printf "%.3f %d\n", b - a, p }' >"$work/t5$tag.drain"
	"$DAEMON_SH" stop orders-payment >/dev/null
	extras_stop
	X_PORT=()
	say "T5: $k consumer(s) made $paid payments in $(cut -d' ' -f1 "$work/t5$tag.drain") s"
}

# ------------------------------------------------------------------- the run

mkdir -p "$OUT"
rm -rf "$work"
mkdir -p "$work" "$nginx_dir/tmp"
load_start=$(cut -d' ' -f1-3 /proc/loadavg)

step "packages (nginx, wrk) and a release build; the stack up"
missing=()
for p in nginx wrk; do
	dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q 'install ok installed' || missing+=("$p")
done
if [ ${#missing[@]} -gt 0 ]; then
	is_root || die "missing packages: ${missing[*]}; run as root or install them"
	# Like install.sh: the package must not start a system-wide nginx.
	own_policy=0
	if [ ! -e /usr/sbin/policy-rc.d ]; then
		printf '#!/bin/sh\nexit 101\n' >/usr/sbin/policy-rc.d
		chmod 755 /usr/sbin/policy-rc.d
		own_policy=1
	fi
	DEBIAN_FRONTEND=noninteractive apt-get install -y -q --no-install-recommends "${missing[@]}"
	[ $own_policy -eq 0 ] || rm -f /usr/sbin/policy-rc.d
fi
ulimit -n "$(ulimit -Hn)"
say "building into ${BUILD#"$ROOT"/} (log: ${work#"$ROOT"/}/build.log)"
CMDS+=("ulimit -n $(ulimit -n)")
if ! cmd env BUILD_DIR="$BUILD" CMAKE_ARGS="-DCMAKE_BUILD_TYPE=Release -DORDERS_ASAN=OFF -DORDERS_TSAN=OFF" \
	"$ROOT/deploy/local/build.sh" >"$work/build.log" 2>&1; then
	tail -n 30 "$work/build.log" >&2
	die "the build failed"
fi
cmd env SKIP_BUILD=1 BUILD_DIR="$BUILD" "$ROOT/deploy/local/up.sh"
set -a
# shellcheck source=/dev/null
. "$ENV_FILE"
set +a
API_URL=http://127.0.0.1:$HTTP_PORT
stock_products "$SKUS" Bench
wait_queues_empty 60 || purge_work_queues "at the start (left by an earlier run?)"

step "T2: wrk -c $HTTP_CONNS against nginx (fixed 204) on port $NGINX_PORT"
! port_open "$NGINX_PORT" || die "port $NGINX_PORT (nginx) is taken"
sed -e "s#@PORT@#$NGINX_PORT#g" -e "s#@DIR@#$nginx_dir#g" "$ROOT/bench/nginx.conf" >"$nginx_dir/nginx.conf"
cmd nginx -p "$nginx_dir" -e "$nginx_dir/error.log" -c "$nginx_dir/nginx.conf"
WRK=(wrk -t2 "-c$HTTP_CONNS" "-d${HTTP_S}s" --latency -s "$ROOT/bench/wrk/report.lua")
cmd "${WRK[@]}" "http://127.0.0.1:$NGINX_PORT/healthz" >"$work/t2-nginx.txt"
nginx_stop
sed -n 's/^JSON //p' "$work/t2-nginx.txt" >"$work/t2-nginx.json"
say "nginx: $(jqr .requests_per_s "$work/t2-nginx.json") requests/s"

step "T2: the same wrk command against orders-api GET /healthz"
cmd "${WRK[@]}" "$API_URL/healthz" >"$work/t2-api.txt"
sed -n 's/^JSON //p' "$work/t2-api.txt" >"$work/t2-api.json"
say "orders-api: $(jqr .requests_per_s "$work/t2-api.json") requests/s"

step "T1: checkouts, closed loop, $T1_CONNS connections, ${T1_S} s, orders-inventory stopped"
"$DAEMON_SH" stop orders-inventory >/dev/null
# Exit status 3 (a duplicate or a lost order) is a figure for the report, not a failure.
cmd "$BENCH" -n 1000000 -d "$T1_S" -c "$T1_CONNS" -s "$SKUS" -k "b1-$rid" -i "$work/t1.ids" \
	-j "$work/t1.json" || [ $? -eq 3 ]

step "T1: orders-bench-publisher, $PUB_IN_FLIGHT in flight, the API's message size"
cmd "$PUBLISHER" -n "$PUB_COUNT" -w "$PUB_IN_FLIGHT" -S inventory.reserve -j "$work/pub.json"

t3_rate=$(jq -r '.accepted_per_s / 2 | floor' "$work/t1.json")
[ "$t3_rate" -ge 1 ] || t3_rate=1
t3_count=$((t3_rate * T3_S))
step "T3: $T3_CONNS connections, open loop at $t3_rate/s (half of T1) for ${T3_S} s"
api_pid=$(daemon_pid orders-api)
(
	while kill -0 "$api_pid" 2>/dev/null; do
		awk '/^VmRSS:/ { print $2 }' "/proc/$api_pid/status"
		sleep 0.2
	done
) >"$work/t3-rss.txt" 2>/dev/null &
sampler=$!
rss_before=$(awk '/^VmRSS:/ { print $2 }' "/proc/$api_pid/status")
cmd "$BENCH" -n "$t3_count" -r "$t3_rate" -c "$T3_CONNS" -s "$SKUS" -k "b3-$rid" \
	-i "$work/t3.ids" -j "$work/t3.json" || [ $? -eq 3 ]
kill "$sampler" 2>/dev/null || true
wait "$sampler" 2>/dev/null || true
sampler=
rss_max_kib=$(sort -n "$work/t3-rss.txt" | tail -n 1)

step "T1+T3: orders-inventory started; every accepted order followed to its final status"
"$DAEMON_SH" start orders-inventory >/dev/null
cmd "$BENCH" -F "$work/t1.ids" -F "$work/t3.ids" -f 60 -M "$FOLLOW_MAX_S" \
	-j "$work/t13-follow.json" || [ $? -eq 3 ]
wait_queues_empty 10 || purge_work_queues "after following the orders of 1 and 3 for ${FOLLOW_MAX_S} s, before 5"

step "T5: a backlog of $T5_BACKLOG payment.authorize messages, one payment consumer, gateway ${T5_LATENCY_MS} ms"
"$DAEMON_SH" stop orders-payment >/dev/null
t5_ok=false
if t5_backlog one && t5_drain one 1; then
	step "T5: the same backlog again, four payment consumers"
	t5_backlog four && t5_drain four 4 && t5_ok=true
else
	step "T5: (skipped, the first half was not measured)"
fi
"$DAEMON_SH" start orders-payment >/dev/null
wait_queues_empty 60 || purge_work_queues "after 5, before 4"

step "T4: a burst of $BURST checkouts at $BURST_CONNS connections, every consumer running"
cpu_snapshot >"$work/cpu-before.txt"
cmd "$BENCH" -n "$BURST" -c "$BURST_CONNS" -s "$SKUS" -k "b4-$rid" -f 120 -M "$DRAIN_MAX_S" \
	-i "$work/t4.ids" -j "$work/t4.json" || [ $? -eq 3 ]
cpu_snapshot >"$work/cpu-after.txt"

step "the report"
# What 4 left unfinished is the bench's own: the stack must not hand it to the
# next `make test` or `make up` (their orders would wait behind it).
wait_queues_empty 5 || purge_work_queues "at the end, so that the stack is left without a backlog"
forget_redis_keys "$work"
load_end=$(cut -d' ' -f1-3 /proc/loadavg)
host=$(hostname -s)
day=$(date +%Y-%m-%d)
base=$OUT/$day-$host
clk=$(getconf CLK_TCK)
t4_final=$(jqr '.follow.final // 0' "$work/t4.json")
join -j1 <(sort "$work/cpu-before.txt") <(sort "$work/cpu-after.txt") |
	awk -v clk="$clk" -v n="$t4_final" '{ printf "{\"process\":\"%s\",\"cpu_s\":%.3f,\"us_per_order\":%.1f}\n", $1, ($3 - $2) / clk, (n > 0 ? ($3 - $2) / clk * 1e6 / n : 0) }' |
	jq -s . >"$work/t4-cpu.json"

commit=$(git -C "$ROOT" rev-parse --short=12 HEAD)
[ -z "$(git -C "$ROOT" status --porcelain --untracked-files=no)" ] || commit="$commit (with local changes)"
jq -n \
	--arg date "$(date -u +%Y-%m-%dT%H:%M:%SZ)" --arg host "$host" --arg commit "$commit" \
	--arg nproc "$(nproc)" --arg mem "$(awk '/MemTotal/ { printf "%.1f GiB", $2 / 1048576 }' /proc/meminfo)" \
	--arg kernel "$(uname -r)" --arg cpu_model "$(awk -F': ' '/model name/ { print $2; exit }' /proc/cpuinfo)" \
	--arg load_start "$load_start" --arg load_end "$load_end" \
	--arg v_rabbitmq "$(dpkg-query -W -f='${Version}' rabbitmq-server)" \
	--arg v_postgresql "$(psql_q -c 'SHOW server_version')" \
	--arg v_redis "$(redis-server --version | sed -n 's/.*v=\([^ ]*\).*/\1/p')" \
	--arg v_mhd "$(pkg-config --modversion libmicrohttpd)" \
	--arg v_nginx "$(nginx -v 2>&1 | sed 's/.*nginx\///')" \
	--arg v_wrk "$(dpkg-query -W -f='${Version}' wrk)" \
	--argjson t5_ok "$t5_ok" \
	--argjson t5_one "$(cut -d' ' -f1 "$work/t5one.drain" 2>/dev/null || echo null)" \
	--argjson t5_one_paid "$(cut -d' ' -f2 "$work/t5one.drain" 2>/dev/null || echo null)" \
	--argjson t5_four "$(cut -d' ' -f1 "$work/t5four.drain" 2>/dev/null || echo null)" \
	--argjson t5_four_paid "$(cut -d' ' -f2 "$work/t5four.drain" 2>/dev/null || echo null)" \
	--argjson notes "$(printf '%s\n' "${NOTES[@]}" | jq -R . | jq -s 'map(select(. != ""))')" \
	--argjson t5_n "$T5_BACKLOG" --argjson burst "$BURST" \
	--argjson rss_max_kib "${rss_max_kib:-0}" --argjson rss_before_kib "${rss_before:-0}" \
	--slurpfile nginx "$work/t2-nginx.json" --slurpfile api "$work/t2-api.json" \
	--slurpfile t1 "$work/t1.json" --slurpfile pub "$work/pub.json" \
	--slurpfile t3 "$work/t3.json" --slurpfile t13 "$work/t13-follow.json" \
	--slurpfile t4 "$work/t4.json" --slurpfile cpu "$work/t4-cpu.json" \
	--slurpfile t5one <(cat "$work/t5one-send.json" 2>/dev/null || echo null) \
	--slurpfile t5four <(cat "$work/t5four-send.json" 2>/dev/null || echo null) \
	'{
	  date: $date, host: $host, commit: $commit, notes: $notes,
	  machine: {nproc: $nproc, memory: $mem, kernel: $kernel, cpu: $cpu_model,
	            load_start: $load_start, load_end: $load_end},
	  versions: {rabbitmq: $v_rabbitmq, postgresql: $v_postgresql, redis: $v_redis,
	             libmicrohttpd: $v_mhd, nginx: $v_nginx, wrk: $v_wrk},
	  targets: {
	    t1: {api_accepted_per_s: $t1[0].accepted_per_s, publisher_msgs_per_s: $pub[0].msgs_per_s,
	         ratio: ($t1[0].accepted_per_s / $pub[0].msgs_per_s), need: 0.8,
	         pass: ($t1[0].accepted_per_s >= 0.8 * $pub[0].msgs_per_s)},
	    t2: {api_requests_per_s: $api[0].requests_per_s, nginx_requests_per_s: $nginx[0].requests_per_s,
	         ratio: ($api[0].requests_per_s / $nginx[0].requests_per_s), need: 0.9,
	         pass: ($api[0].requests_per_s >= 0.9 * $nginx[0].requests_per_s)},
	    t3: {rate: $t3[0].rate, connections: $t3[0].connections, p99_ms: $t3[0].latency_ms.p99,
	         socket_errors: $t3[0].socket_errors, non_2xx: $t3[0].non_2xx, unsent: $t3[0].unsent,
	         api_rss_max_mib: ($rss_max_kib / 1024), api_rss_before_mib: ($rss_before_kib / 1024),
	         pass: ($t3[0].latency_ms.p99 < 100 and $t3[0].socket_errors == 0 and
	                $t3[0].non_2xx == 0 and $t3[0].unsent == 0 and $rss_max_kib < 65536)},
	    t1_t3_orders: {orders: $t13[0].follow.orders, final: $t13[0].follow.final,
	         lost: $t13[0].lost, duplicated: $t13[0].duplicated, complete: $t13[0].follow.complete},
	    t4: {burst: $burst, accepted: $t4[0].accepted, final: ($t4[0].follow.final // 0),
	         not_final: ($t4[0].follow.not_final // null), lost: $t4[0].lost,
	         duplicated: $t4[0].duplicated, drain_s: ($t4[0].follow.drain_s // null),
	         completed_per_s: ($t4[0].follow.completed_per_s // null),
	         accepted_per_s: $t4[0].accepted_per_s, cpu: $cpu[0],
	         pass: ($t4[0].accepted == $burst and ($t4[0].follow.final // 0) == $burst and
	                $t4[0].lost == 0 and $t4[0].duplicated == 0)},
	    t5: (if $t5_ok then
	         {backlog: $t5_n, one_consumer_s: $t5_one, four_consumers_s: $t5_four,
	          one_paid: $t5_one_paid, four_paid: $t5_four_paid,
	          one_per_s: ($t5_one_paid / $t5_one), four_per_s: ($t5_four_paid / $t5_four),
	          ratio: (($t5_four_paid / $t5_four) / ($t5_one_paid / $t5_one)), need: 3.5,
	          pass: (($t5_four_paid / $t5_four) >= 3.5 * ($t5_one_paid / $t5_one))}
	       else {backlog: $t5_n, ratio: null, need: 3.5, pass: false} end)
	  },
	  runs: {t2_nginx: $nginx[0], t2_api: $api[0], t1_api: $t1[0], t1_publisher: $pub[0],
	         t3: $t3[0], t1_t3_follow: $t13[0], t5_one_backlog: $t5one[0],
	         t5_four_backlog: $t5four[0], t4: $t4[0]}
	}' >"$base.json"
# The exact commands, in the order they ran (paths relative to the repository).
printf '%s\n' "${CMDS[@]}" | sed "s#$ROOT/##g" >"$work/commands.txt"
"$ROOT/bench/report.sh" "$base.json" "$work/commands.txt" "$T5_LATENCY_MS" >"$base.md"
say "wrote ${base#"$ROOT"/}.md and .json in $(clock)"
jq -r '.targets | to_entries[] | select(.value.pass != null) | "bench: \(.key): \(if .value.pass then "pass" else "FAIL" end)"' "$base.json"
