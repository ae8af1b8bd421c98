#!/usr/bin/env bash
# api.sh: the API's and the consumers' threads under ThreadSanitizer, with
# real load. Beside the test stack it starts an orders-api and the four
# consumers of the TSan build (ports of their own, the same PostgreSQL,
# RabbitMQ and Redis; logs .local/log/orders-*-tsan.log), and then:
#
#   1. mixed load, all at once: orders-bench (keep-alive connections, a
#      fifth of the checkouts repeating an earlier key), two orders-loadgen
#      sending the same keys and bodies at the same time (each key replayed
#      concurrently), orders-mixload (carts, checkouts from carts, orders,
#      products written and read, the finance routes, a rate-limited key,
#      refusals, the ops routes), and /metrics and /readyz scrapes of every
#      TSan daemon. Every answer is the contract's; both loadgens got the
#      same order per key.
#   2. it_ratelimit (TSan build) against the TSan API, its second instance
#      a TSan API too: two instances leasing one key's quota.
#   3. checkouts while the API's RabbitMQ connection and its Redis
#      connections are cut (rabbitmqctl close_connection, CLIENT KILL): the
#      publisher fails what it had in flight and reconnects, the pools and
#      the settler reconnect; then while RabbitMQ blocks every publisher
#      (memory watermark 0) and Redis refuses writes (maxmemory 1): the
#      settler holds the confirmed checkouts until Redis takes them, the
#      rate limiter fails open. Every checkout gets its 202 in the end.
#   4. SIGTERM to the API while checkouts are in flight, /metrics is
#      scraped and Redis refuses the confirmed ones' records (the settler
#      holds them when it is stopped): it exits 0 within 30 s. Then SIGTERM
#      to the consumers, each of which processed messages of the load
#      beside the stack's (orders-inventory's to its ops server's thread,
#      not its main one): each exits 0 too.
#
# Passes when every step's outcome holds and no TSan-built process wrote a
# report (tests/tsan/lib.bash: log_path, halt_on_error=0, exit status 66).
# Run by ctest with the stack up; ORDERS_TSAN_BUILD_DIR names the TSan build
# (default build-tsan), ORDERS_LOADGEN, ORDERS_BENCH and ORDERS_MIXLOAD the
# load tools (default: the build the stack runs).
set -euo pipefail
export LC_ALL=C

# shellcheck disable=SC2034 # read by lib/stack.bash and deploy/local/lib.sh
SCRIPT_NAME=tsan_api
# shellcheck source-path=SCRIPTDIR source=../integration/lib/stack.bash
. "$(dirname "${BASH_SOURCE[0]}")/../integration/lib/stack.bash"
# shellcheck source-path=SCRIPTDIR source=lib.bash
. "$(dirname "${BASH_SOURCE[0]}")/lib.bash"

CONSUMERS=(inventory payment order cart)
tsan_need api/orders-api tests/it_ratelimit "${CONSUMERS[@]/#/consumers/orders-}"
BENCH=${ORDERS_BENCH:-$BUILD/bench/orders-bench}
MIXLOAD=${ORDERS_MIXLOAD:-$BUILD/tests/orders-mixload}
[ -x "$BENCH" ] || fail_now "no orders-bench at $BENCH (set ORDERS_BENCH)"
[ -x "$MIXLOAD" ] || fail_now "no orders-mixload at $MIXLOAD (set ORDERS_MIXLOAD)"
prefix=ts-$rid

# ---------------------------------------------------------------- processes

declare -A daemon_pid=() daemon_port=()
bg_pids=()

# stop_pid PID SECONDS: SIGTERM, then SIGKILL after SECONDS.
stop_pid() {
	kill -TERM "$1" 2>/dev/null || return 0
	wait_gone "$1" "$2" || kill -KILL "$1" 2>/dev/null || true
}

# RabbitMQ's memory watermark and Redis' memory limits, as the stack had
# them; step 3 blocks every publisher (watermark 0) and makes Redis refuse
# writes (maxmemory 1, noeviction) for a few seconds.
redis() { redis-cli -h 127.0.0.1 -p "$REDIS_PORT" "$@"; }
watermark=$("$SERVICES_SH" ctl -q eval 'vm_memory_monitor:get_vm_memory_high_watermark().') ||
	fail_now "cannot read RabbitMQ's memory high watermark"
maxmemory=$(redis config get maxmemory | sed -n 2p)
policy=$(redis config get maxmemory-policy | sed -n 2p)
if [ -z "$maxmemory" ] || [ -z "$policy" ]; then
	fail_now "cannot read Redis' maxmemory settings"
fi
blocked=0
refusing=0
block_publishers() {
	blocked=1
	"$SERVICES_SH" ctl -q set_vm_memory_high_watermark 0 >/dev/null
}
unblock_publishers() {
	[ $blocked -eq 1 ] || return 0
	"$SERVICES_SH" ctl -q set_vm_memory_high_watermark "$watermark" >/dev/null && blocked=0
}
refuse_writes() {
	refusing=1
	redis config set maxmemory-policy noeviction >/dev/null && redis config set maxmemory 1 >/dev/null
}
take_writes() {
	[ $refusing -eq 1 ] || return 0
	redis config set maxmemory "$maxmemory" >/dev/null &&
		redis config set maxmemory-policy "$policy" >/dev/null && refusing=0
}

cleanup() {
	local rc=$? pid
	trap - EXIT
	for pid in "${bg_pids[@]}"; do
		kill "$pid" 2>/dev/null || true
	done
	for pid in "${daemon_pid[@]}"; do
		stop_pid "$pid" 20
	done
	wait 2>/dev/null || true
	take_writes || rc=1
	unblock_publishers || rc=1
	rm -rf "$work"
	exit $rc
}
trap cleanup EXIT

# free_port: FREE_PORT, a port on 127.0.0.1 that nothing listens on and that
# this script has not handed out yet.
declare -A used_port=()
free_port() {
	local p tries
	for tries in $(seq 1 100); do
		p=$((20000 + (RANDOM + tries) % 10000))
		if [ -z "${used_port[$p]:-}" ] && ! port_open "$p"; then
			used_port[$p]=1
			FREE_PORT=$p
			return 0
		fi
	done
	fail_now "no free port found"
}

# start NAME BINARY [VAR=VALUE...]: a TSan daemon on a free port (its HTTP or
# ops port), in its own session, with the stack's environment and VARs and
# the TSan options of its report group (api or consumers); ready within 60 s.
start() {
	local name=$1 bin=$2 group=consumers port_var=ORDERS_METRICS_PORT log deadline
	shift 2
	if [ "$name" = orders-api ]; then
		group=api
		port_var=ORDERS_HTTP_PORT
	fi
	free_port
	log=$LOG_DIR/$name-tsan.log
	env "$@" "$port_var=$FREE_PORT" TSAN_OPTIONS="$(tsan_options "$group")" \
		setsid "$TSAN_BUILD/$bin" >"$log" 2>&1 </dev/null &
	daemon_pid[$name]=$!
	daemon_port[$name]=$FREE_PORT
	deadline=$((SECONDS + 60))
	until http_ok "http://127.0.0.1:$FREE_PORT/readyz"; do
		pid_alive "${daemon_pid[$name]}" ||
			fail_now "$name exited during start-up: $(tail -n 5 "$log")"
		[ $SECONDS -lt $deadline ] || fail_now "$name not ready after 60 s: $(tail -n 5 "$log")"
		sleep 0.3
	done
	say_t "$name (TSan) ready on port $FREE_PORT, pid ${daemon_pid[$name]}"
}

# thread_kill PID COMM: SIGTERM to PID's thread named COMM (tgkill), not to
# the process (which the kernel hands to a thread of its choice).
thread_kill() {
	local t tid=
	for t in /proc/"$1"/task/*; do
		[ "$(cat "$t/comm" 2>/dev/null)" != "$2" ] || tid=${t##*/}
	done
	[ -n "$tid" ] &&
		perl -e 'require "syscall.ph"; syscall(&SYS_tgkill, $ARGV[0] + 0, $ARGV[1] + 0, 15) == 0 or die "tgkill: $!\n"' \
			"$1" "$tid"
}

# stop NAME [THREAD]: SIGTERM (to its thread named THREAD, if given); it
# must exit 0 within 30 s (66: TSan reports).
stop() {
	local pid=${daemon_pid[$1]} rc=0
	if [ -z "${2:-}" ]; then
		kill -TERM "$pid"
	elif ! thread_kill "$pid" "$2"; then
		fail_later "$1 has no thread '$2' to signal"
		kill -TERM "$pid"
	fi
	if ! wait_gone "$pid" 30; then
		kill -KILL "$pid" 2>/dev/null || true
		fail_later "$1 did not stop within 30 s of SIGTERM"
	fi
	wait "$pid" || rc=$?
	unset "daemon_pid[$1]" "daemon_port[$1]"
	if [ $rc -eq 0 ]; then
		note "ok: $1 stopped on SIGTERM, exit status 0"
	else
		fail_later "$1 exited with status $rc after SIGTERM ($TSAN_EXIT: ThreadSanitizer reports)"
	fi
}

# local_ports PID PORT: the local ports of PID's TCP connections to PORT.
local_ports() {
	local inodes hex
	inodes=" $(find "/proc/$1/fd" -lname 'socket:*' -printf '%l\n' 2>/dev/null |
		tr -dc '0-9\n' | tr '\n' ' ') "
	awk -v want="$(printf '%04X' "$2")" -v inodes="$inodes" \
		'NR > 1 { split($2, l, ":"); split($3, r, ":");
			if (r[2] == want && index(inodes, " " $10 " ")) print l[2] }' /proc/net/tcp |
		while read -r hex; do
			printf '%d\n' "0x$hex"
		done
}

# scrape SECONDS OUT: GET every TSan daemon's /metrics and /readyz over and
# over for SECONDS; a line in OUT for each answer that was not 200.
scrape() {
	local end=$((SECONDS + $1)) name path code
	while [ $SECONDS -lt "$end" ]; do
		for name in "${!daemon_port[@]}"; do
			for path in metrics readyz; do
				code=$(curl -s -o /dev/null -w '%{http_code}' --max-time 10 \
					"http://127.0.0.1:${daemon_port[$name]}/$path") || code=000
				[ "$code" = 200 ] || printf '%s /%s: %s\n' "$name" "$path" "$code" >>"$2"
			done
		done
	done
}

# requests_served: the TSan API's orders_http_requests_total, all series summed.
requests_served() {
	curl -s --max-time 10 "http://127.0.0.1:$API_PORT/metrics" |
		awk '/^orders_http_requests_total\{/ { n += $2 } END { printf "%d\n", n }'
}

# background CMD...: run CMD in the background (stopped by the EXIT trap).
background() {
	"$@" &
	bg_pids+=($!)
	BG_PID=$!
}

# exit_of PID: wait for it; its exit status in RC.
exit_of() {
	RC=0
	wait "$1" || RC=$?
}

# ------------------------------------------------------------------- setup

tsan_begin api
tsan_begin consumers
wait_ready 30 || fail_now "the stack is not ready before the test"
put_sku "$prefix-A" 1000000 700 TSan
put_sku "$prefix-B" 1000000 900 TSan
sku_list=$prefix-A,$prefix-B

for c in "${CONSUMERS[@]}"; do
	start "orders-$c" "consumers/orders-$c"
done
# Four MHD threads rather than two: more of them at once in every handler.
start orders-api api/orders-api ORDERS_HTTP_THREADS=4
API_PORT=${daemon_port[orders-api]}
API_PID=${daemon_pid[orders-api]}

# ------------------------------------------------------------ 1. mixed load

say_t "1. mixed load on the TSan API"
background env ORDERS_HTTP_PORT="$API_PORT" "$BENCH" -n 600 -c 32 -R 0.2 -s "$sku_list" \
	-k "$prefix-bench" -j "$work/bench.json" >"$work/bench.log" 2>&1
bench_pid=$BG_PID
twin_pid=()
for twin in 1 2; do
	background env ORDERS_HTTP_PORT="$API_PORT" "$LOADGEN" -n 150 -c 12 -s "$sku_list" -S 7 \
		-k "$prefix-twin" -o "$work/twin$twin.tsv" >"$work/twin$twin.log" 2>&1
	twin_pid[twin]=$BG_PID
done
background env ORDERS_HTTP_PORT="$API_PORT" "$MIXLOAD" -d 15 -c 6 -s "$sku_list" \
	-k "$prefix-mix" >"$work/mix.log" 2>&1
mix_pid=$BG_PID
background scrape 15 "$work/scrape.txt"
scrape_pid=$BG_PID

exit_of "$bench_pid"
[ "$RC" = 0 ] || fail_later "orders-bench exited with $RC: $(tail -n 5 "$work/bench.log")"
if jq -e '.sent == 600 and .answered == 600 and .socket_errors == 0 and
	((.status | keys) - ["202", "409"] | length) == 0 and .accepted_keys == .unique_keys' \
	"$work/bench.json" >/dev/null 2>&1; then
	note "ok: orders-bench: 600 answered, each 202 or (a repeat in flight) 409, every key accepted"
else
	fail_later "orders-bench: $(jq -c '{sent, answered, socket_errors, status, unique_keys, accepted_keys}' "$work/bench.json" 2>&1)"
fi
for twin in 1 2; do
	exit_of "${twin_pid[twin]}"
	[ "$RC" = 0 ] || fail_later "orders-loadgen $twin exited with $RC: $(tail -n 3 "$work/twin$twin.log")"
done
# Both sent every key: each got one order, the same for both.
differ=$(join -t $'\t' -o 1.3,2.3 <(cut -f1,2,3 "$work/twin1.tsv" | sort -t $'\t' -k1,1) \
	<(cut -f1,2,3 "$work/twin2.tsv" | sort -t $'\t' -k1,1) | awk -F '\t' '$1 != $2 || $1 == "-"' | wc -l)
paired=$(join -t $'\t' <(sort -t $'\t' -k1,1 "$work/twin1.tsv") <(sort -t $'\t' -k1,1 "$work/twin2.tsv") | wc -l)
if [ "$paired" = 150 ] && [ "$differ" = 0 ]; then
	note "ok: two loadgens sent the same 150 keys at once; each key got one order, the same for both"
else
	fail_later "the twin loadgens: $paired keys paired (expected 150), $differ with different or no orders"
fi
exit_of "$mix_pid"
[ "$RC" = 0 ] || fail_later "orders-mixload exited with $RC: $(tail -n 12 "$work/mix.log")"
sed 's/^/    /' "$work/mix.log"
wait "$scrape_pid" || true
if [ -s "$work/scrape.txt" ]; then
	fail_later "scrapes not answered 200: $(sort "$work/scrape.txt" | uniq -c | head -n 10 | tr '\n' ';')"
else
	note "ok: every /metrics and /readyz scrape of the TSan daemons answered 200"
fi

# ----------------------------------------------------- 2. two instances, one limit

say_t "2. it_ratelimit against the TSan API and a second TSan API"
rc=0
ORDERS_HTTP_PORT=$API_PORT ORDERS_API_BIN=$TSAN_BUILD/api/orders-api \
	ORDERS_API_LOG=orders-api-ratelimit-tsan.log TSAN_OPTIONS=$(tsan_options api) \
	"$TSAN_BUILD/tests/it_ratelimit" >"$work/ratelimit.log" 2>&1 || rc=$?
if [ $rc -eq 0 ]; then
	grep '^it_ratelimit:' "$work/ratelimit.log" | sed 's/^/    /' || true
	note "ok: it_ratelimit passed"
else
	fail_later "it_ratelimit exited with $rc: $(tail -n 20 "$work/ratelimit.log")"
fi

# ------------------------------------------ 3. connections cut, services stalled

say_t "3. checkouts while the API's connections are cut, publishers blocked, Redis full"
connects_before=$(grep -c '"connected to rabbitmq"' "$LOG_DIR/orders-api-tsan.log" || true)
# The broker's name for the publisher's connection, found before the load.
amqp_ports=$(local_ports "$API_PID" "$AMQP_PORT" | tr '\n' ' ')
"$SERVICES_SH" ctl -q list_connections --no-table-headers pid peer_port >"$work/conns.txt" 2>&1 ||
	fail_later "cannot list RabbitMQ's connections: $(cat "$work/conns.txt")"
conns=()
for p in $amqp_ports; do
	conns+=("$(awk -v p="$p" '$2 == p { print $1 }' "$work/conns.txt")")
done
[ -n "${conns[*]}" ] || fail_later "no RabbitMQ connection of the TSan API to cut (its ports: '$amqp_ports')"
api_lines=$(wc -l <"$LOG_DIR/orders-api-tsan.log")
background env ORDERS_HTTP_PORT="$API_PORT" "$LOADGEN" -n 900 -r 60 -c 16 -d 90 -s "$sku_list" \
	-k "$prefix-cut" -o "$work/cut.tsv" >"$work/cut.log" 2>&1
cut_pid=$BG_PID
sleep 2
for conn in "${conns[@]}"; do
	"$SERVICES_SH" ctl -q close_connection "$conn" "tsan test: cut the publisher" >/dev/null 2>&1 ||
		fail_later "cannot close RabbitMQ connection $conn"
done
redis_ports=$(local_ports "$API_PID" "$REDIS_PORT" | tr '\n' ' ')
[ -n "$redis_ports" ] || fail_later "the TSan API has no connection to Redis to cut"
for p in $redis_ports; do
	redis-cli -p "$REDIS_PORT" CLIENT KILL ADDR "127.0.0.1:$p" >/dev/null 2>&1 || true
done
note "cut the RabbitMQ connection from port(s) $amqp_ports and the Redis ones from $redis_ports"
# Checkouts pile up in the publisher; once it may publish again, the
# settler cannot record the confirmed ones and holds them, retrying, until
# Redis takes writes again.
block_publishers
sleep 1
refuse_writes
unblock_publishers
sleep 2
take_writes
note "publishers blocked for a while, then Redis refused writes for some 2 s"
exit_of "$cut_pid"
[ "$RC" = 0 ] || fail_later "orders-loadgen through the cuts exited with $RC: $(tail -n 3 "$work/cut.log")"
tail -n 1 "$work/cut.log" | sed 's/^/    /'
connects_after=$(grep -c '"connected to rabbitmq"' "$LOG_DIR/orders-api-tsan.log" || true)
if [ "$connects_after" -gt "$connects_before" ]; then
	note "ok: the publisher lost its connection and connected again; all 900 checkouts accepted"
else
	fail_later "the TSan API's publisher did not reconnect (connects: $connects_before, then $connects_after)"
fi
held=$(tail -n +"$((api_lines + 1))" "$LOG_DIR/orders-api-tsan.log" |
	grep -c '"cannot record confirmed checkouts in redis' || true)
if [ "$held" -gt 0 ]; then
	note "ok: the settler held confirmed checkouts while Redis refused writes"
else
	fail_later "the settler never held a confirmed checkout while Redis refused writes"
fi

# ------------------------------------------------------ 4. SIGTERM under load

say_t "4. SIGTERM to the TSan API with checkouts in flight, Redis refusing their records"
background env ORDERS_HTTP_PORT="$API_PORT" "$LOADGEN" -n 5000 -c 32 -d 5 -t 5000 -s "$sku_list" \
	-k "$prefix-term" -o "$work/term.tsv" >"$work/term.log" 2>&1
term_pid=$BG_PID
background scrape 30 "$work/scrape_term.txt"
term_scrape_pid=$BG_PID
accepted_before=$(grep -c '"checkout accepted"' "$LOG_DIR/orders-api-tsan.log" || true)
deadline=$((SECONDS + 20))
while [ $(($(grep -c '"checkout accepted"' "$LOG_DIR/orders-api-tsan.log" || true) - accepted_before)) -lt 100 ] &&
	[ $SECONDS -lt $deadline ]; do
	sleep 0.2
done
served=$(requests_served)
# Confirmed checkouts wait in the settler when the signal comes; stopping
# answers them (without a 202) while the HTTP daemon still runs.
refuse_writes
stop orders-api
take_writes
kill "$term_pid" "$term_scrape_pid" 2>/dev/null || true
accepted=$(($(grep -c '"checkout accepted"' "$LOG_DIR/orders-api-tsan.log" || true) - accepted_before))
note "the TSan API accepted $accepted checkouts in step 4; it had answered $served requests before SIGTERM"
[ "$accepted" -ge 100 ] || fail_later "only $accepted checkouts were accepted before SIGTERM"
grep -q '"shutting down"' "$LOG_DIR/orders-api-tsan.log" || fail_later "the TSan API did not log its shutdown"
# Each TSan consumer did work: the load reached them beside the stack's.
for c in "${CONSUMERS[@]}"; do
	n=$(curl -s --max-time 10 "http://127.0.0.1:${daemon_port[orders-$c]}/metrics" |
		awk '/^orders_messages_total\{.*outcome="processed"\}/ { n += $2 } END { printf "%d\n", n }')
	if [ "$n" -gt 0 ]; then
		note "ok: the TSan orders-$c processed $n messages"
	else
		fail_later "the TSan orders-$c processed no message"
	fi
done
# One takes the signal on its ops server's thread (libmicrohttpd names it).
stop orders-inventory MHD-single
for c in payment order cart; do
	stop "orders-$c"
done

# --------------------------------------------------------------- reports

tsan_reports api || failures=$((failures + 1))
tsan_reports consumers || failures=$((failures + 1))
[ "$failures" -eq 0 ] || fail_now "$failures check(s) failed"
note "passed: no ThreadSanitizer report from the API ($served requests) or the consumers"
