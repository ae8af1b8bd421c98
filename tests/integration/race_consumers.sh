#!/usr/bin/env bash
# race_consumers.sh: several replicas of each consumer on the same queues.
# The test starts two extra orders-inventory processes and one extra
# orders-payment and orders-order each (same build, same .local/env, ops
# ports of their own, logs .local/log/orders-<consumer>-race<k>.log) beside
# the stack's own daemons, then:
#
#   1. no oversell: one SKU with stock RACE_STOCK (25), and RACE_CHECKOUTS
#      (300) concurrent single-unit checkouts with an approving card.
#      Exactly RACE_STOCK orders are confirmed, the rest rejected
#      (out_of_stock), none expired; the SKU ends with stock 0, reserved 0,
#      and RACE_STOCK units in committed reservations. Each of the three
#      inventory consumers processed some of the checkouts, and every
#      checkout was processed (not counting replays) exactly once overall.
#   2. graceful SIGTERM: a second burst (RACE_BURST2 = 400 checkouts at
#      RACE_RATE = 40/s over two large-stock SKUs, mixed cards). Once an
#      extra consumer has processed some of the burst, it gets SIGTERM:
#      one extra inventory consumer, then the extra payment consumer, then
#      the extra order consumer. Each exits with status 0 within 10 s, and
#      its log after the signal holds no error or non-JSON line, no message
#      handed back for a retry ("will retry"), and ends with "stopped". The remaining consumers take over: every
#      202'd order ends final, with exactly one finance event of its
#      status's type, each checkout processed exactly once; per SKU,
#      initial stock = stock + committed reservations and reserved = 0.
#   3. Redis restart (services.sh restart redis) during the second burst:
#      within 10 s of Redis being back a fresh checkout gets a 202 and the
#      API's /readyz answers 200; the burst's own checkouts all get their
#      202 in the end (orders-loadgen retries 503s).
#
# Also: nothing was dead-lettered, the work queues drained, and no order
# expired (a 10 s TTL is ample at these sizes; an expiry means the machine
# was too slow, or a stopped consumer held messages back). The EXIT trap
# stops the extra consumers (SIGTERM, then SIGKILL) and leaves the stack's
# own daemons and services running and ready, also when the test fails.
#
# Run by ctest (ORDERS_SOURCE_DIR = repository root, .local/env exported)
# while the stack is up; ORDERS_LOADGEN names the orders-loadgen binary
# (default: the tests/ directory of the build the stack runs).
set -euo pipefail

# shellcheck disable=SC2034 # read by lib/stack.bash and deploy/local/lib.sh
SCRIPT_NAME=race_consumers
# shellcheck source-path=SCRIPTDIR source=lib/stack.bash
. "$(dirname "${BASH_SOURCE[0]}")/lib/stack.bash"
# shellcheck source-path=SCRIPTDIR source=lib/extra.bash
. "$(dirname "${BASH_SOURCE[0]}")/lib/extra.bash"

STOCK=${RACE_STOCK:-25}
CHECKOUTS=${RACE_CHECKOUTS:-300}
BURST2=${RACE_BURST2:-400}
RATE=${RACE_RATE:-40}
DRAIN_S=${RACE_DRAIN_S:-45}
prefix=rc-$rid

# ---------------------------------------------------------------- recovery

# restore: whatever happened, stop what this test started and leave the
# stack as the next test expects it.
restore() {
	local rc=$?
	trap - EXIT
	stop_loadgen
	stop_extras
	restore_stack redis || rc=1
	rm -rf "$work"
	exit $rc
}
trap restore EXIT

# ------------------------------------------------------------------- setup

wait_ready 30 || fail_now "the stack is not ready before the test"

race_sku=$prefix-N
put_sku "$race_sku" "$STOCK" 700 Race
put_sku "$prefix-L1" 1000000 500 Race
put_sku "$prefix-L2" 1000000 900 Race

dlq_before=$(dlq_counts)
[ -n "$dlq_before" ] || fail_now "RabbitMQ lists no dead-letter queue (.dlq)"

start_extra inventory-race1 inventory
start_extra inventory-race2 inventory
start_extra payment-race1 payment
start_extra order-race1 order
wait_extras_ready 30
say_t "the extra consumers are ready"

# ------------------------------------------------------------------ checks

# The loadgen's results (both bursts), the initial stock, and which consumer
# processed which message (seen), as temporary tables.
preamble() {
	run_preamble 1 "$work/b1.tsv" 2 "$work/b2.tsv"
	printf 'CREATE TEMP TABLE seen (consumer text, kind text, line int, order_id text, routing_key text, outcome text);\n'
	if [ -s "$work/seen.tsv" ]; then
		printf "\\\\copy seen FROM '%s' WITH (FORMAT text)\n" "$work/seen.tsv"
	fi
}
# collect_seen: every "message processed" line of every consumer of the
# stack and of this test, as consumer, kind, line number, order id,
# routing key, outcome (tabs) in $work/seen.tsv.
collect_seen() {
	local name kind log
	: >"$work/seen.tsv"
	for kind in inventory payment order; do
		for name in "orders-$kind" "${X_NAMES[@]}"; do
			if [ "$name" = "orders-$kind" ]; then
				log=$LOG_DIR/$name.log
			else
				[ "${X_KIND[$name]}" = "$kind" ] || continue
				log=${X_LOG[$name]}
			fi
			[ -r "$log" ] || continue
			jq -R -r --arg c "$name" --arg k "$kind" \
				'fromjson? | select(.msg == "message processed")
				 | [$c, $k, input_line_number, .order_id, .routing_key, .outcome] | @tsv' \
				"$log" >>"$work/seen.tsv"
		done
	done
}

# finish_loadgen BURST COUNT: wait for it; every checkout must have its 202.
finish_loadgen() {
	local b=$1 count=$2 rc n_rows n_202
	wait_loadgen
	rc=$LG_RC
	sed 's/^/race_consumers:   /' "$work/b$b.log"
	[ -s "$work/b$b.tsv" ] || fail_now "orders-loadgen wrote no results (exit $rc)"
	[ "$rc" -eq 0 ] || [ "$rc" -eq 3 ] || fail_now "orders-loadgen failed (exit $rc; its output is above)"
	read -r n_rows n_202 < <(q "SELECT count(*), count(*) FILTER (WHERE status = 202) FROM lg WHERE burst = $b" | tr '|' ' ')
	[ "$n_rows" -eq "$count" ] || fail_now "burst $b: loadgen wrote $n_rows result lines, expected $count"
	[ "$n_202" -eq "$count" ] ||
		fail_now "burst $b: only $n_202 of $count checkouts got a 202: $(q "SELECT key, status, n503 FROM lg WHERE burst = $b AND status <> 202 LIMIT 5" | tr '\n' ';')"
}

# drain BURST: wait until every 202'd order of the burst is final.
drain() {
	local b=$1
	wait_final "$DRAIN_S" "l.burst = $b"
	say_t "burst $b: all orders final $FINAL_AFTER_S s after the last 202"
	q "SELECT o.status, count(*) FROM lg JOIN orders o USING (order_id) WHERE burst = $b GROUP BY 1 ORDER BY 1" |
		sed 's/^/race_consumers:   /'
}

# common_checks BURST: what holds for every burst.
common_checks() {
	local b=$1 expired
	expired=$(q "SELECT count(*) FROM lg JOIN orders o USING (order_id) WHERE burst = $b AND o.status = 'expired'")
	[ "$expired" = 0 ] ||
		fail_later "burst $b: $expired order(s) expired: their payment came more than ORDERS_RESERVATION_TTL_S (${ORDERS_RESERVATION_TTL_S:-unset} s) after the reservation; at this size that means the machine was far too slow, or a stopped consumer held messages back"
	check_orders "l.burst = $b" "burst $b"
	check "burst $b: each checkout processed exactly once by the inventory consumers together (replays aside)" \
		"SELECT l.key, l.order_id, count(s.*), string_agg(s.consumer || ':' || s.outcome, ',')
		 FROM lg l LEFT JOIN seen s ON s.order_id = l.order_id::text
		   AND s.kind = 'inventory' AND s.routing_key = 'checkout.requested' AND s.outcome <> 'duplicate'
		 WHERE l.burst = $b GROUP BY 1, 2 HAVING count(s.*) <> 1"
	check "burst $b: each order finalized exactly once by the order consumers together (replays aside)" \
		"SELECT l.key, o.order_id, o.status, count(s.*), string_agg(s.consumer || ':' || s.outcome, ',')
		 FROM lg l JOIN orders o USING (order_id) LEFT JOIN seen s ON s.order_id = l.order_id::text
		   AND s.kind = 'order'
		 WHERE l.burst = $b AND o.status <> 'expired' GROUP BY 1, 2, 3 HAVING count(s.*) <> 1"
	check_stock "burst $b"
	check "burst $b: reservations agree with the status (committed iff confirmed, none when rejected)" \
		"SELECT o.order_id, o.status, string_agg(v.sku || ':' || v.state, ',') FROM lg l
		 JOIN orders o USING (order_id) LEFT JOIN reservations v USING (order_id)
		 WHERE l.burst = $b GROUP BY 1, 2
		 HAVING (o.status = 'confirmed' AND (count(v.*) = 0 OR bool_or(v.state <> 'committed')))
		     OR (o.status = 'rejected' AND count(v.*) > 0)
		     OR (o.status IN ('payment_failed', 'expired') AND bool_or(v.state <> 'released'))"
}

# ------------------------------------------------ 1. the race for the stock

say_t "burst 1: $CHECKOUTS single-unit checkouts of $race_sku (stock $STOCK), 32 threads"
run_loadgen b1 -n "$CHECKOUTS" -c 32 -d 30 -s "$race_sku" -q 1 -l 0 -m 4242424242424242:1
finish_loadgen 1 "$CHECKOUTS"
drain 1
collect_seen

read -r n_conf n_rej n_other < <(q "SELECT count(*) FILTER (WHERE o.status = 'confirmed'),
	count(*) FILTER (WHERE o.status = 'rejected' AND o.failure_reason = 'out_of_stock'),
	count(*) FILTER (WHERE o.status NOT IN ('confirmed', 'rejected', 'expired')
	  OR (o.status = 'rejected' AND o.failure_reason IS DISTINCT FROM 'out_of_stock'))
	FROM lg JOIN orders o USING (order_id) WHERE burst = 1" | tr '|' ' ')
if [ "$n_conf" -eq "$STOCK" ] && [ "$n_rej" -eq $((CHECKOUTS - STOCK)) ]; then
	note "ok: burst 1: exactly $STOCK confirmed, $n_rej rejected out of stock"
else
	fail_later "burst 1: $n_conf confirmed and $n_rej rejected (out_of_stock), expected $STOCK and $((CHECKOUTS - STOCK)); $n_other other"
fi
read -r r_stock r_reserved r_committed r_held < <(q "SELECT p.stock, p.reserved,
	(SELECT coalesce(sum(quantity), 0) FROM reservations WHERE sku = p.sku AND state = 'committed'),
	(SELECT coalesce(sum(quantity), 0) FROM reservations WHERE sku = p.sku AND state = 'held')
	FROM products p WHERE p.sku = '$race_sku'" | tr '|' ' ')
if [ "$r_stock" = 0 ] && [ "$r_reserved" = 0 ] && [ "$r_committed" = "$STOCK" ] && [ "$r_held" = 0 ]; then
	note "ok: burst 1: $race_sku has stock 0, reserved 0, $STOCK units committed"
else
	fail_later "burst 1: $race_sku has stock $r_stock, reserved $r_reserved, $r_committed committed, $r_held held; expected 0, 0, $STOCK, 0"
fi
per_consumer=$(q "SELECT c, coalesce(n, 0) FROM unnest(ARRAY['orders-inventory', 'inventory-race1', 'inventory-race2']) c
	LEFT JOIN (SELECT s.consumer c, count(*) n FROM seen s JOIN lg l ON s.order_id = l.order_id::text
	  WHERE l.burst = 1 AND s.kind = 'inventory' AND s.routing_key = 'checkout.requested' GROUP BY 1) x USING (c)
	ORDER BY 1")
note "burst 1: checkouts processed per inventory consumer: $(printf '%s\n' "$per_consumer" | tr -d ' ' | tr '|\n' '= ')"
while IFS='|' read -r c n; do
	c=${c// /} n=${n// /}
	[ "$n" -gt 0 ] || fail_later "burst 1: inventory consumer $c processed none of the checkouts: the race was not across consumers"
done <<<"$per_consumer"
common_checks 1

# --------------------------------- 2 and 3. SIGTERMs and a Redis restart

# log_lines NAME: how many lines NAME's log has; processed_after NAME LINE:
# how many messages NAME processed after that line of its log.
log_lines() { wc -l <"${X_LOG[$1]}"; }
processed_after() { processed_in "${X_LOG[$1]}" "$2"; }

late=()
# sigterm_when_busy NAME MARK: once NAME has processed a few messages since
# line MARK of its log (at most 10 s), SIGTERM it and check how it stopped.
sigterm_when_busy() {
	local name=$1 mark=$2 deadline=$((SECONDS + 10)) n
	while n=$(processed_after "$name" "$mark") && [ "$n" -lt 5 ] && [ $SECONDS -lt $deadline ]; do
		sleep 0.1
	done
	[ "$n" -gt 0 ] || fail_later "$name processed nothing of burst 2 within 10 s"
	kill -0 "$lg_pid" 2>/dev/null || late+=("SIGTERM to $name")
	say_t "SIGTERM to $name (pid ${X_PID[$name]}) after $n message(s) of burst 2"
	sigterm_and_check "$name"
}

# sigterm_and_check NAME: SIGTERM it and check how it stopped.
sigterm_and_check() {
	local name=$1 at rc bad n
	at=$(log_lines "$name")
	stop_extra "$name" TERM
	rc=$STOP_RC
	say_t "$name exited with status $rc"
	[ "$rc" = 0 ] || fail_later "$name exited with status $rc after SIGTERM, expected 0: $(tail -n 5 "${X_LOG[$name]}")"
	# After the signal: no error (nor a sanitizer report), the message in
	# hand finished rather than handed back, "stopping", and "stopped" last.
	# Warnings about the message in hand (a flaky card's gateway retries)
	# are fine.
	bad=$(tail -n +"$((at + 1))" "${X_LOG[$name]}" |
		jq -R -r 'fromjson? // {level: "not-json"}
			| select(.level == "error" or .level == "not-json"
			  or .msg == "cannot process message, will retry"
			  or .msg == "cannot settle delivery, reconnecting") | tostring' | head -n 5)
	[ -z "$bad" ] || fail_later "$name logged this after SIGTERM: $bad"
	n=$(processed_after "$name" "$at")
	note "$name finished $n message(s) after the signal"
	tail -n +"$((at + 1))" "${X_LOG[$name]}" | grep -q '"msg":"stopping"' ||
		fail_later "$name did not log \"stopping\" after SIGTERM"
	tail -n 1 "${X_LOG[$name]}" | grep -q '"msg":"stopped"' ||
		fail_later "the last line of $name's log is not \"stopped\": $(tail -n 1 "${X_LOG[$name]}")"
}

marks=()
for name in inventory-race2 payment-race1 order-race1; do
	marks+=("$(log_lines "$name")")
done
say_t "burst 2: $BURST2 checkouts of ${skus[1]} and ${skus[2]} at $RATE/s, mixed cards"
run_loadgen b2 -n "$BURST2" -c 16 -r "$RATE" -d 30 -s "${skus[1]},${skus[2]}"
burst2_start=$SECONDS
sigterm_when_busy inventory-race2 "${marks[0]}"
sigterm_when_busy payment-race1 "${marks[1]}"
sigterm_when_busy order-race1 "${marks[2]}"

# Redis, at least a few seconds into the burst.
while [ $((SECONDS - burst2_start)) -lt 4 ]; do sleep 0.2; done
kill -0 "$lg_pid" 2>/dev/null || late+=("Redis restart")
say_t "restarting redis"
"$SERVICES_SH" restart redis >"$work/redis.log" 2>&1 || fail_now "cannot restart redis: $(cat "$work/redis.log")"
redis_back=$SECONDS
say_t "redis is back; probing the API"
probe_body=$(checkout_json "${skus[1]}" 737)
probe_code=000 readyz_code=000 k=0
while [ $((SECONDS - redis_back)) -lt 10 ]; do
	k=$((k + 1))
	if [ "$probe_code" != 202 ]; then
		probe_code=$(curl -s -o "$work/probe.json" -w '%{http_code}' --max-time 5 -X POST \
			-H 'Authorization: Bearer dev-client' -H 'Content-Type: application/json' \
			-H "Idempotency-Key: $prefix-probe-$k" -d "$probe_body" "$API/v1/checkouts") || probe_code=000
	fi
	if [ "$readyz_code" != 200 ]; then
		readyz_code=$(curl -s -o /dev/null -w '%{http_code}' --max-time 5 "$API/readyz") || readyz_code=000
	fi
	[ "$probe_code" != 202 ] || [ "$readyz_code" != 200 ] || break
	sleep 0.5
done
if [ "$probe_code" = 202 ] && [ "$readyz_code" = 200 ]; then
	note "ok: checkouts (202) and /readyz (200) work again $((SECONDS - redis_back)) s after Redis came back"
else
	fail_later "10 s after Redis came back a fresh checkout answered $probe_code ($(head -c 200 "$work/probe.json" 2>/dev/null)) and /readyz $readyz_code; expected 202 and 200"
fi
probe_order=$(sed -n 's/.*"order_id": *"\([0-9a-f-]*\)".*/\1/p' "$work/probe.json")

say_t "waiting for orders-loadgen"
finish_loadgen 2 "$BURST2"
drain 2
collect_seen
common_checks 2
if [ -n "$probe_order" ]; then
	check "the probe checkout after the Redis restart ended final" \
		"SELECT order_id, status FROM orders WHERE order_id = '$probe_order' AND status NOT IN ($FINAL)"
fi
check "burst 2: no order for a key that never got a 202" \
	"SELECT r.idempotency_key, r.order_id, r.status FROM run r
	 WHERE starts_with(r.idempotency_key, '$prefix-b2-')
	   AND r.order_id NOT IN (SELECT order_id FROM lg WHERE burst = 2)"
n_503=$(q "SELECT coalesce(sum(n503), 0) FROM lg WHERE burst = 2")
note "burst 2: $n_503 503s retried by the client around the Redis restart"
per=$(q "SELECT consumer, count(*) FROM seen s JOIN lg l ON s.order_id = l.order_id::text
	WHERE l.burst = 2 GROUP BY 1 ORDER BY 1" | tr -d ' ' | tr '|\n' '= ')
note "burst 2: messages processed per consumer: $per"
if [ ${#late[@]} -gt 0 ]; then
	fail_later "burst 2 was over before: ${late[*]} (raise RACE_BURST2 or lower RACE_RATE)"
fi

# The queues: nothing dead-lettered, everything consumed.
check_queues 20 0.5

# The extra consumer still running stops cleanly too, and no extra
# consumer logged an error at any time.
say_t "SIGTERM to inventory-race1 (pid ${X_PID[inventory-race1]}), idle"
sigterm_and_check inventory-race1
for name in "${X_NAMES[@]}"; do
	bad=$(jq -R -r 'fromjson? // {level: "not-json"} | select(.level == "error" or .level == "not-json") | tostring' \
		"${X_LOG[$name]}" | head -n 5)
	[ -z "$bad" ] || fail_later "$name logged: $bad"
done

say_t "done"
if [ $failures -gt 0 ]; then
	fail_now "$failures check(s) failed (above)"
fi
note "PASS"
