#!/usr/bin/env bash
# drain.sh: how fast two builds of the consumers drain the same kind of
# backlog, on the running local stack (make up), taking turns so that the
# machine's drift and other load fall on both alike:
#
#   bench/drain.sh OLD_BUILD NEW_BUILD
#
# OLD_BUILD and NEW_BUILD are build directories (consumers/orders-* in each;
# make them Release builds, e.g. of two commits). The stack's own consumers
# are stopped for the run and started again at the end. Each run (the builds
# alternate ABBA: old new new old old new ...) makes a fresh backlog and
# drains it with one consumer of one build at a time, nothing else running:
#
#   1. DRAIN_N checkouts (orders-bench, closed loop, half of them two lines,
#      SKUs DRAIN-A..D with ample stock) into inventory.reserve, then
#      orders-inventory drains them (batch ORDERS_CONSUMER_BATCH, default 50)
#      into payment.authorize, orders-payment (its default batch of 1) into
#      order.finalize, and orders-order finishes them;
#   2. DRAIN_CARTS carts (POST /v1/carts) into cart.persist, drained by
#      orders-cart.
#
# A drain's time runs from the consumer's "consuming" log line to its last
# "message processed" line; PostgreSQL's CPU time (every postgres process,
# from /proc) from just before the consumer starts to just after it stopped.
# Prints one line per drain and, per consumer, the new build's rate over the
# old one's in each pair of runs (1-2, 3-4, ...: next to each other in time)
# with their median, and PostgreSQL's CPU time a message, new over old, over
# all runs. Knobs: DRAIN_N (4000), DRAIN_CARTS (2000), DRAIN_RUNS (6, a
# multiple of 2), DRAIN_MAX_S (600 per drain), DRAIN_OUT (.local/drain: the
# logs, and drains.tsv: run, build, consumer, messages, seconds, ticks).
set -euo pipefail

# shellcheck disable=SC2034 # lib.sh's say/warn/die prefix
SCRIPT_NAME=drain
HERE=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd -P)
# shellcheck source-path=SCRIPTDIR source=../deploy/local/lib.sh
. "$HERE/../deploy/local/lib.sh"
# shellcheck source-path=SCRIPTDIR source=lib.sh
. "$HERE/lib.sh"

[ $# -eq 2 ] || die "usage: $0 OLD_BUILD NEW_BUILD"
declare -A BUILDS=([old]=$(cd "$1" && pwd -P) [new]=$(cd "$2" && pwd -P))
N=${DRAIN_N:-4000}
CARTS=${DRAIN_CARTS:-2000}
RUNS=${DRAIN_RUNS:-6}
MAX_S=${DRAIN_MAX_S:-600}
OUT=${DRAIN_OUT:-$LOCAL/drain}
CONSUMERS=(inventory payment order cart)
SKUS=DRAIN-A,DRAIN-B,DRAIN-C,DRAIN-D
BENCH=${BUILDS[new]}/bench/orders-bench
ORDERCTL=${BUILDS[new]}/tools/orderctl
DAEMON_SH=$ROOT/deploy/local/daemon.sh
rid=$(date +%s)

[ -f "$ENV_FILE" ] || die "the stack is not up (make up)"
set -a
# shellcheck source=/dev/null
. "$ENV_FILE"
set +a
for b in old new; do
	for c in "${CONSUMERS[@]}"; do
		[ -x "${BUILDS[$b]}/consumers/orders-$c" ] || die "no ${BUILDS[$b]}/consumers/orders-$c"
	done
done
{ [ -x "$BENCH" ] && [ -x "$ORDERCTL" ]; } || die "no bench/orders-bench or tools/orderctl in $2"
rm -rf "$OUT"
mkdir -p "$OUT"
API_URL=http://127.0.0.1:$HTTP_PORT

finish() {
	local rc=$? c
	trap - EXIT
	[ -z "${pid:-}" ] || kill -TERM "$pid" 2>/dev/null || true
	forget_redis_keys "$OUT" 2>/dev/null || true
	for c in "${CONSUMERS[@]}"; do
		[ -n "$(daemon_pid "orders-$c")" ] || "$DAEMON_SH" start "orders-$c" >/dev/null || rc=1
	done
	exit $rc
}
trap finish EXIT
trap 'exit 130' INT
trap 'exit 143' TERM

# processed PORT NAME: the consumer's orders_messages_total{outcome="processed"}.
processed() {
	curl -s "http://127.0.0.1:$1/metrics" |
		awk -v c="$2" '$1 == "orders_messages_total{consumer=\"" c "\",outcome=\"processed\"}" { print $2 + 0; f = 1 } END { if (!f) print 0 }'
}

# log_span LOG: seconds from the "consuming" line to the last "message processed" one.
log_span() {
	jq -rR 'fromjson? | select(.msg == "consuming" or .msg == "message processed") | .ts' "$1" |
		sed -n '1p;$p' | xargs -n1 date +%s.%N -d | paste -sd' ' |
		awk '{ printf "%.3f\n", $2 - $1 }'
}

# drain RUN BUILD NAME COUNT: start NAME of BUILD, wait until it has
# processed COUNT messages, stop it; one line to stdout and to the TSV.
drain() {
	local run=$1 build=$2 name=$3 count=$4 port log pg0 pg1 deadline s
	port=${DAEMON_METRICS_PORT[orders-$name]}
	log=$OUT/run$run-$build-$name.log
	pg0=$(postgres_ticks)
	(
		cd "$ROOT"
		ORDERS_METRICS_PORT=$port ORDERS_FINALIZE_GRACE_S=3600 \
			exec "${BUILDS[$build]}/consumers/orders-$name"
	) >"$log" 2>&1 </dev/null &
	pid=$!
	deadline=$((SECONDS + MAX_S))
	until [ "$(processed "$port" "$name")" -ge "$count" ]; do
		pid_alive "$pid" || die "orders-$name ($build) exited (see $log)"
		[ $SECONDS -lt $deadline ] || die "orders-$name ($build) did not process $count messages in ${MAX_S} s"
		sleep 0.2
	done
	kill -TERM "$pid"
	wait "$pid" || true
	pid=
	# Its sessions' backends end and are reaped (their time moves to the postmaster).
	sleep 1
	pg1=$(postgres_ticks)
	s=$(log_span "$log")
	printf '%s\t%s\t%s\t%s\t%s\t%s\n' "$run" "$build" "$name" "$count" "$s" "$((pg1 - pg0))" >>"$OUT/drains.tsv"
	awk -v r="$run" -v b="$build" -v c="$name" -v n="$count" -v s="$s" -v t="$((pg1 - pg0))" \
		-v hz="$(getconf CLK_TCK)" 'BEGIN { printf "drain: run %d %-3s %-9s %5d messages in %7.3f s = %7.1f/s, postgresql %.2f ms CPU a message\n", r, b, c, n, s, n / s, t * 1000 / hz / n }'
}

# backlog_checkouts RUN: DRAIN_N checkouts waiting in inventory.reserve; their count.
backlog_checkouts() {
	local ids=$OUT/run$1.ids n
	"$BENCH" -n "$N" -c 50 -s "$SKUS" -l 50 -k "drain-$rid-$1" -i "$ids" \
		-j "$OUT/run$1-bench.json" >"$OUT/run$1-bench.log" 2>&1 || die "orders-bench failed (see $OUT/run$1-bench.log)"
	n=$(wc -l <"$ids")
	[ "$(queue_ready inventory.reserve)" -ge "$n" ] || die "inventory.reserve holds fewer than the $n accepted checkouts"
	echo "$n"
}

# backlog_carts RUN: DRAIN_CARTS new carts, each a change waiting in cart.persist.
backlog_carts() {
	local cfg=$OUT/run$1-carts.curl i body ok
	body='{"customer_id":"drain","currency":"USD","items":[{"sku":"DRAIN-A","quantity":1}]}'
	body=$(jq -Rn --arg b "$body" '$b')
	# One transfer each, "next" between them; most options are per transfer.
	for ((i = 0; i < CARTS; i++)); do
		[ "$i" -eq 0 ] || echo next
		printf 'url = "%s/v1/carts"\nsilent\nheader = "Authorization: Bearer dev-client"\n' "$API_URL"
		printf 'header = "Content-Type: application/json"\ndata = %s\noutput = "/dev/null"\n' "$body"
		printf 'write-out = "%%{http_code}\\n"\n'
	done >"$cfg"
	ok=$(curl -s --parallel --parallel-max 16 -K "$cfg" 2>/dev/null | grep -c '^201$' || true)
	[ "$ok" -eq "$CARTS" ] || die "only $ok of $CARTS carts were created"
	echo "$ok"
}

say "stopping the stack's consumers; runs: $RUNS, $N checkouts and $CARTS carts each; logs in ${OUT#"$ROOT"/}"
for c in "${CONSUMERS[@]}"; do
	"$DAEMON_SH" stop "orders-$c" >/dev/null
done
stock_products "$SKUS" Drain
for q in inventory.reserve payment.authorize order.finalize cart.persist; do
	[ "$(queue_ready "$q")" = 0 ] || die "$q is not empty: drain it first"
done

for ((run = 1; run <= RUNS; run++)); do
	# ABBA: old new new old old new ...
	case $(((run - 1) % 4)) in 0 | 3) build=old ;; *) build=new ;; esac
	n=$(backlog_checkouts "$run")
	drain "$run" "$build" inventory "$n"
	drain "$run" "$build" payment "$n"
	drain "$run" "$build" order "$n"
	n=$(backlog_carts "$run")
	drain "$run" "$build" cart "$n"
done

say "new over old: each pair of runs (1-2, 3-4, ...) and their median; PostgreSQL CPU a message over all runs"
awk -F'\t' '
	{ p = int(($1 + 1) / 2); r[$3, p, $2] = $4 / $5; m[$3, $2] += $4; t[$3, $2] += $6; if (p > np) np = p }
	END {
		split("inventory payment order cart", cs, " ")
		for (i = 1; i <= 4; i++) {
			c = cs[i]; line = ""; k = 0
			for (p = 1; p <= np; p++) {
				if (!((c, p, "old") in r) || !((c, p, "new") in r))
					continue
				q[++k] = r[c, p, "new"] / r[c, p, "old"]
				line = line sprintf(" %.2f", q[k])
			}
			for (a = 1; a <= k; a++)
				for (b = a + 1; b <= k; b++)
					if (q[b] < q[a]) { x = q[a]; q[a] = q[b]; q[b] = x }
			med = k % 2 ? q[(k + 1) / 2] : (q[k / 2] + q[k / 2 + 1]) / 2
			printf "drain: %-9s rate new/old per pair:%s; median %.2fx; postgresql CPU a message %.2fx\n",
				c, line, med, (t[c, "new"] / m[c, "new"]) / (t[c, "old"] / m[c, "old"])
		}
	}' "$OUT/drains.tsv"
