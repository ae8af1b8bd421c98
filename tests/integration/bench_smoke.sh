#!/usr/bin/env bash
# bench_smoke.sh: the tools of `make bench` still work, with tiny counts and in
# a few seconds, so that they cannot rot between benchmarks. No figure is held
# to a speed (the machine may be busy); the outcomes are:
#
#   1. orders-bench, closed loop: 200 checkouts at 20 connections, a tenth of
#      them repeating an earlier checkout's key and body, each accepted order
#      followed to its final status. Exit status 0; the JSON summary parses;
#      all 200 answered, each 202 or (a repeat while the first is in flight)
#      409; no socket error; every distinct key accepted and its order final;
#      0 lost, 0 duplicated.
#   2. orders-bench, open loop: 200 checkouts at 100/s over 50 connections,
#      their orders written with --ids-out and followed by a second run with
#      --follow-ids. All 200 answered 202; every order final; 0 lost, 0
#      duplicated.
#   3. orders-bench-publisher: 500 messages of 400 bytes, 50 in flight, to a
#      scratch quorum queue of its own: all 500 confirmed, the JSON parses,
#      and the queue is deleted afterwards.
#
# Run by ctest with the stack up; ORDERS_BENCH and ORDERS_BENCH_PUBLISHER name
# the tools (default: the bench/ directory of the build the stack runs).
set -euo pipefail

# shellcheck disable=SC2034 # read by lib/stack.bash and deploy/local/lib.sh
SCRIPT_NAME=bench_smoke
# shellcheck source-path=SCRIPTDIR source=lib/stack.bash
. "$(dirname "${BASH_SOURCE[0]}")/lib/stack.bash"

BENCH=${ORDERS_BENCH:-$BUILD/bench/orders-bench}
PUBLISHER=${ORDERS_BENCH_PUBLISHER:-$BUILD/bench/orders-bench-publisher}
if [ ! -x "$BENCH" ] || [ ! -x "$PUBLISHER" ]; then
	fail_now "no orders-bench or orders-bench-publisher (set ORDERS_BENCH, ORDERS_BENCH_PUBLISHER)"
fi
prefix=bs-$rid
trap 'rm -rf "$work"' EXIT

wait_ready 30 || fail_now "the stack is not ready before the test"
put_sku "$prefix-A" 1000000 700 Smoke
put_sku "$prefix-B" 1000000 900 Smoke

# expect FILE WHAT JQ: JQ (a boolean over the JSON summary in FILE) holds.
expect() {
	local verdict
	verdict=$(jq -e "$3" "$1" 2>&1) || {
		fail_later "$2: not so in $(basename "$1") ($verdict): $(jq -c . "$1" 2>/dev/null | head -c 2000)"
		return 0
	}
	note "ok: $2"
}

note "1. closed loop, repeated keys, followed"
rc=0
"$BENCH" -n 200 -c 20 -R 0.1 -s "$prefix-A,$prefix-B" -k "$prefix-c" -f 60 -M 120 \
	-j "$work/closed.json" >"$work/closed.log" 2>&1 || rc=$?
[ $rc -eq 0 ] || fail_later "orders-bench (closed loop) exited with $rc: $(tail -n 5 "$work/closed.log")"
expect "$work/closed.json" "the closed loop's summary" '.tool == "orders-bench" and .mode == "closed"'
expect "$work/closed.json" "all 200 answered, without a socket error" \
	'.sent == 200 and .answered == 200 and .socket_errors == 0 and .unsent == 0'
expect "$work/closed.json" "some keys repeated, each answered 202 or 409" \
	'.unique_keys < 200 and ((.status | keys) - ["202", "409"] | length) == 0'
expect "$work/closed.json" "every key accepted, its order final" \
	'.accepted_keys == .unique_keys and .follow.orders == .unique_keys and .follow.final == .unique_keys'
expect "$work/closed.json" "0 lost, 0 duplicated" \
	'.lost == 0 and .duplicated == 0 and .dup_answers == 0 and .follow.complete'

note "2. open loop, followed from its ids file"
rc=0
"$BENCH" -n 200 -r 100 -c 50 -s "$prefix-A,$prefix-B" -k "$prefix-o" -i "$work/open.ids" \
	-j "$work/open.json" >"$work/open.log" 2>&1 || rc=$?
[ $rc -eq 0 ] || fail_later "orders-bench (open loop) exited with $rc: $(tail -n 5 "$work/open.log")"
expect "$work/open.json" "the open loop's 200 checkouts all accepted" \
	'.mode == "open" and .rate == 100 and .accepted == 200 and .non_2xx == 0 and .socket_errors == 0'
expect "$work/open.json" "latency counted for every request" '.latency_ms.count == 200'
[ "$(wc -l <"$work/open.ids")" = 200 ] || fail_later "the ids file holds $(wc -l <"$work/open.ids") lines, not 200"
rc=0
"$BENCH" -F "$work/open.ids" -f 60 -M 120 -j "$work/follow.json" >"$work/follow.log" 2>&1 || rc=$?
[ $rc -eq 0 ] || fail_later "orders-bench --follow-ids exited with $rc: $(tail -n 5 "$work/follow.log")"
expect "$work/follow.json" "every order of the ids file final, 0 lost, 0 duplicated" \
	'.follow.orders == 200 and .follow.final == 200 and .lost == 0 and .duplicated == 0'

note "3. the bare publisher"
queue=bench.smoke-$rid
rc=0
"$PUBLISHER" -n 500 -s 400 -w 50 -q "$queue" -j "$work/pub.json" >"$work/pub.log" 2>&1 || rc=$?
[ $rc -eq 0 ] || fail_later "orders-bench-publisher exited with $rc: $(tail -n 5 "$work/pub.log")"
expect "$work/pub.json" "500 messages confirmed" \
	'.confirmed == 500 and .failed == 0 and .size == 400 and .queue == "'"$queue"'"'
if "$SERVICES_SH" ctl -q list_queues name 2>/dev/null | grep -qx "$queue"; then
	fail_later "the scratch queue $queue is still there"
else
	note "ok: the scratch queue is gone"
fi

[ "$failures" -eq 0 ] || fail_now "$failures check(s) failed"
note "passed"
