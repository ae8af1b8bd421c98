#!/usr/bin/env bash
# fault_burst.sh: a burst of checkouts (orders-loadgen) while every part of
# the stack fails in turn: a RabbitMQ outage, kill -9 of each consumer (then
# started again), a PostgreSQL restart. Afterwards:
#
#   (a) every checkout got a 202 in the end (the client retries the same
#       Idempotency-Key and body on 503/409/errors), and every 202'd order
#       id exists exactly once with a final status; no other order was made
#       for this run's keys (the probes below included);
#   (b) exactly one finance event per order, of the type of its status;
#   (c) the gateway ledger holds exactly one live approved authorization
#       per confirmed order (the same one payments recorded) and none for
#       any other order; decline cards never confirm, approve cards never
#       fail payment;
#   (d) for every test SKU: initial stock = stock + committed reservations,
#       reserved = held reservations = 0, stock >= 0; reservations agree
#       with the order statuses;
#   (e) while RabbitMQ is down the API answers 503 to probe checkouts, never
#       202, /readyz says 503, and no loadgen checkout got a 202 either;
#   (f) right after the faults, GET /v1/orders answers 200 with the status
#       the database holds.
#
# Also: no message was dead-lettered, the work queues drained, and at the
# end every daemon runs and is ready (the tests after this one need the
# stack; the EXIT trap restarts whatever this script stopped, also when it
# fails). Sizes are environment-tunable: FAULT_CHECKOUTS (3000),
# FAULT_RATE (40 checkouts/s), FAULT_CONCURRENCY (32), FAULT_DRAIN_S (180).
#
# Run by ctest (ORDERS_SOURCE_DIR = repository root, .local/env exported)
# while the stack is up; ORDERS_LOADGEN names the orders-loadgen binary
# (default: the tests/ directory of the build the stack runs).
set -euo pipefail

# shellcheck disable=SC2034 # read by lib/stack.bash and deploy/local/lib.sh
SCRIPT_NAME=fault_burst
# shellcheck source-path=SCRIPTDIR source=lib/stack.bash
. "$(dirname "${BASH_SOURCE[0]}")/lib/stack.bash"

CHECKOUTS=${FAULT_CHECKOUTS:-3000}
RATE=${FAULT_RATE:-40}
CONCURRENCY=${FAULT_CONCURRENCY:-32}
DRAIN_S=${FAULT_DRAIN_S:-180}
prefix=fb-$rid

# ---------------------------------------------------------------- recovery

# restore: whatever happened, leave the stack as the next test expects it.
restore() {
	local rc=$?
	trap - EXIT
	stop_loadgen
	restore_stack postgresql rabbitmq || rc=1
	rm -rf "$work"
	exit $rc
}
trap restore EXIT

# ------------------------------------------------------------------- setup

wait_ready 30 || fail_now "the stack is not ready before the test"

# Two SKUs that sell out (so 'rejected' happens: S2 at once, S1 about half
# way through the burst, under the faults), two that never do.
put_skus "Fault burst" S1:300:1 S2:15:1 L1:1000000:4 L2:1000000:4

dlq_before=$(dlq_counts)
[ -n "$dlq_before" ] || fail_now "RabbitMQ lists no dead-letter queue (.dlq)"

# --------------------------------------------------------------- the burst

run_loadgen lg -n "$CHECKOUTS" -c "$CONCURRENCY" -r "$RATE" -s "$LOADGEN_SKUS"
burst_start=$SECONDS
say_t "orders-loadgen started (pid $lg_pid): $CHECKOUTS checkouts, $CONCURRENCY threads, $RATE/s"

late_faults=()
# at T: wait until T seconds into the burst; note a fault that comes after it.
at() {
	local t=$1
	while [ $((SECONDS - burst_start)) -lt "$t" ]; do sleep 0.2; done
}
during_burst() {
	kill -0 "$lg_pid" 2>/dev/null || late_faults+=("$1")
}

# What the work queues hold: queue=ready+unacknowledged ...
queue_depths() {
	"$SERVICES_SH" ctl -q list_queues name messages_ready messages_unacknowledged 2>/dev/null |
		awk '$1 ~ /^(inventory\.reserve|payment\.authorize|order\.finalize)$/ { printf "%s=%s+%s ", $1, $2, $3 }'
}

kill_and_start() {
	local name=$1
	during_burst "kill -9 $name"
	say_t "kill -9 $name (queued: $(queue_depths))"
	"$DAEMON_SH" kill "$name"
	"$DAEMON_SH" start "$name"
	say_t "$name is back"
}

# RabbitMQ first: the checkouts held back by the outage come in at once
# afterwards, so the consumers killed next die with full prefetch buffers
# and transactions in flight, and PostgreSQL restarts under that load too.
at 3
during_burst "rabbitmq outage"
say_t "stopping rabbitmq"
"$SERVICES_SH" stop rabbitmq
# The node is gone: from a second on, no confirm can be on its way.
outage_from_ms=$(($(date +%s%3N) + 1000))
say_t "rabbitmq is down; probing the API"
sleep 1
probe_body=$(checkout_json "$prefix-L1" 123)
probe_codes=()
for k in 1 2 3 4 5; do
	code=$(curl -s -o "$work/probe$k.json" -w '%{http_code}' --max-time 30 -X POST \
		-H 'Authorization: Bearer dev-client' -H 'Content-Type: application/json' \
		-H "Idempotency-Key: $prefix-probe-$k" -d "$probe_body" "$API/v1/checkouts") || code=000
	probe_codes+=("$code")
	sleep 0.3
done
readyz_down=$(curl -s -o /dev/null -w '%{http_code}' --max-time 5 "$API/readyz") || readyz_down=000
say_t "probes answered ${probe_codes[*]}; /readyz answered $readyz_down"
outage_to_ms=$(date +%s%3N)
say_t "starting rabbitmq"
"$SERVICES_SH" start rabbitmq
say_t "rabbitmq is back"
wait_ready 90 || fail_now "the daemons did not reconnect within 90 s of RabbitMQ's return"
say_t "every daemon is ready again"

back=$((SECONDS - burst_start))
at $((back + 1))
kill_and_start orders-inventory
at $((back + 5))
kill_and_start orders-payment
at $((back + 9))
kill_and_start orders-order
at $((back + 13))
during_burst "postgresql restart"
say_t "restarting postgresql"
"$SERVICES_SH" restart postgresql
say_t "postgresql is back"

say_t "waiting for orders-loadgen"
wait_loadgen
lg_rc=$LG_RC
burst_end=$SECONDS
cat "$work/lg.log"
[ -s "$work/lg.tsv" ] || fail_now "orders-loadgen wrote no results (exit $lg_rc)"
say_t "orders-loadgen finished (exit $lg_rc) after $((burst_end - burst_start)) s"
# 3 means some checkout never got its 202: the checks below name them.
[ "$lg_rc" -eq 0 ] || [ "$lg_rc" -eq 3 ] ||
	fail_now "orders-loadgen failed (exit $lg_rc; its output is above)"

# ------------------------------------------------------------------ checks

# The loadgen's results and the initial stock, as temporary tables.
preamble() { run_preamble 1 "$work/lg.tsv"; }
read -r n_rows n_202 n_ids n_503 < <(q "SELECT count(*), count(*) FILTER (WHERE status = 202),
	count(DISTINCT order_id) FILTER (WHERE status = 202), coalesce(sum(n503), 0) FROM lg" | tr '|' ' ')
note "loadgen: $n_rows checkouts, $n_202 answered 202, $n_ids distinct order ids, $n_503 503s retried"
[ "$n_rows" -eq "$CHECKOUTS" ] || fail_now "loadgen wrote $n_rows result lines, expected $CHECKOUTS"

# Everything the 202s promised reaches a final status.
say_t "waiting up to ${DRAIN_S} s for every order to be final"
wait_final "$DRAIN_S"
drain_s=$FINAL_AFTER_S
say_t "all orders final $drain_s s after the burst"
q "SELECT status, count(*) FROM run GROUP BY 1 ORDER BY 1" | sed 's/^/fault_burst:   /'

# (a) One final order per 202, nothing else.
check "every checkout got a 202 in the end" \
	"SELECT key, status, n503 FROM lg WHERE status <> 202 ORDER BY key"
check "every 202'd order exists with a final status" \
	"SELECT l.key, l.order_id, coalesce(o.status, 'MISSING') FROM lg l LEFT JOIN orders o USING (order_id)
	 WHERE l.status = 202 AND (o.order_id IS NULL OR o.status NOT IN ($FINAL)) ORDER BY l.key"
# (b) The finance feed, too.
check_orders
check "no order for a key that never got a 202 (probes included)" \
	"SELECT r.idempotency_key, r.order_id, r.status FROM run r
	 WHERE r.order_id NOT IN (SELECT order_id FROM lg WHERE status = 202 AND order_id IS NOT NULL)"
check "no other order touched the test SKUs" \
	"SELECT DISTINCT ol.order_id FROM order_lines ol JOIN init USING (sku)
	 WHERE ol.order_id NOT IN (SELECT order_id FROM run)"
[ "$n_ids" -eq "$n_202" ] || {
	failures=$((failures + 1))
	printf 'fault_burst: FAIL: %s 202s but %s distinct order ids\n' "$n_202" "$n_ids" >&2
}

# (c) Payments and the gateway's ledger.
check "each confirmed order has exactly one live approved authorization" \
	"SELECT r.order_id, count(g.*) FROM run r LEFT JOIN gateway_charges g
	   ON g.idempotency_key = r.order_id::text AND g.approved AND g.voided_at IS NULL
	 WHERE r.status = 'confirmed' GROUP BY 1 HAVING count(g.*) <> 1"
check "no live approved authorization for an order that is not confirmed" \
	"SELECT r.order_id, r.status, g.authorization_id FROM run r JOIN gateway_charges g
	   ON g.idempotency_key = r.order_id::text
	 WHERE g.approved AND g.voided_at IS NULL AND r.status <> 'confirmed'"
check "each confirmed order has an authorized payment with the ledger's authorization" \
	"SELECT r.order_id, p.authorized, p.authorization_id, g.authorization_id FROM run r
	 LEFT JOIN payments p USING (order_id)
	 LEFT JOIN gateway_charges g ON g.idempotency_key = r.order_id::text
	 WHERE r.status = 'confirmed' AND (p.order_id IS NULL OR NOT p.authorized
	   OR p.authorization_id IS DISTINCT FROM g.authorization_id)"
check "each payment_failed order has a declined payment with the same reason" \
	"SELECT r.order_id, r.failure_reason, p.authorized, p.decline_code FROM run r
	 LEFT JOIN payments p USING (order_id)
	 WHERE r.status = 'payment_failed' AND (p.order_id IS NULL OR p.authorized
	   OR p.decline_code IS DISTINCT FROM r.failure_reason)"
check "outcomes match the cards (declines never confirm, approvals never fail payment)" \
	"SELECT l.key, l.last4, r.status, r.failure_reason FROM lg l JOIN run r USING (order_id)
	 WHERE (l.last4 = '0002' AND NOT (r.status IN ('rejected', 'expired')
	          OR (r.status = 'payment_failed' AND r.failure_reason = 'card_declined')))
	    OR (l.last4 = '9995' AND NOT (r.status IN ('rejected', 'expired')
	          OR (r.status = 'payment_failed' AND r.failure_reason = 'insufficient_funds')))
	    OR (l.last4 IN ('4242', '4444', '0119') AND r.status NOT IN ('confirmed', 'rejected', 'expired'))"

# (d) Stock.
check_stock
check "reservations agree with the status (committed iff confirmed, none when rejected)" \
	"SELECT r.order_id, r.status, string_agg(v.sku || ':' || v.state, ',') FROM run r
	 LEFT JOIN reservations v USING (order_id) GROUP BY 1, 2
	 HAVING (r.status = 'confirmed' AND (count(v.*) = 0 OR bool_or(v.state <> 'committed')))
	     OR (r.status = 'rejected' AND count(v.*) > 0)
	     OR (r.status IN ('payment_failed', 'expired') AND bool_or(v.state <> 'released'))"
check "each reservation holds its order's quantity of that SKU" \
	"SELECT v.order_id, v.sku, v.quantity, sum(ol.quantity) FROM reservations v
	 JOIN run r USING (order_id) JOIN order_lines ol ON ol.order_id = v.order_id AND ol.sku = v.sku
	 GROUP BY 1, 2, 3 HAVING v.quantity <> sum(ol.quantity)"
read -r sold_out < <(q "SELECT count(*) FROM run WHERE status = 'rejected'")
[ "$sold_out" -gt 0 ] || {
	failures=$((failures + 1))
	printf 'fault_burst: FAIL: no order was rejected: the small SKUs never sold out, so the test proved less than it should\n' >&2
}

# (e) The outage.
for k in "${!probe_codes[@]}"; do
	if [ "${probe_codes[k]}" != 503 ]; then
		failures=$((failures + 1))
		printf 'fault_burst: FAIL: probe checkout %d during the RabbitMQ outage answered %s, expected 503: %s\n' \
			$((k + 1)) "${probe_codes[k]}" "$(cat "$work/probe$((k + 1)).json" 2>/dev/null)" >&2
	fi
done
if [ "$readyz_down" != 503 ]; then
	failures=$((failures + 1))
	printf 'fault_burst: FAIL: /readyz answered %s during the RabbitMQ outage, expected 503\n' "$readyz_down" >&2
fi
check "no loadgen checkout got a 202 while RabbitMQ was down" \
	"SELECT key, order_id, accepted_ms FROM lg WHERE status = 202
	 AND accepted_ms BETWEEN $outage_from_ms AND $outage_to_ms"

# (f) The API's database routes work at once after the restart (no stale
# pooled connection answers 503), and show what the database holds.
api_bad=0
while IFS='|' read -r id status; do
	code=$(curl -s -o "$work/order.json" -w '%{http_code}' --max-time 10 \
		-H 'Authorization: Bearer dev-client' "$API/v1/orders/$id") || code=000
	got=$(sed -n 's/.*"status": *"\([a-z_]*\)".*/\1/p' "$work/order.json")
	if [ "$code" != 200 ] || [ "$got" != "$status" ]; then
		api_bad=$((api_bad + 1))
		printf 'fault_burst: FAIL: GET /v1/orders/%s answered %s with status "%s", the database says "%s": %s\n' \
			"$id" "$code" "$got" "$status" "$(head -c 300 "$work/order.json")" >&2
	fi
done < <(q "SELECT r.order_id, r.status FROM run r ORDER BY r.order_id LIMIT 20" | sed 's/ | /|/')
if [ $api_bad -gt 0 ]; then
	failures=$((failures + 1))
else
	note "ok: GET /v1/orders agrees with the database for 20 orders"
fi

# The queues: nothing dead-lettered, everything consumed.
check_queues 30 1

if [ ${#late_faults[@]} -gt 0 ]; then
	failures=$((failures + 1))
	printf 'fault_burst: FAIL: the burst was over before: %s (raise FAULT_CHECKOUTS or lower FAULT_RATE)\n' \
		"${late_faults[*]}" >&2
fi

note "figures: $CHECKOUTS checkouts, $n_202 accepted (202), $n_503 503s retried by the client," \
	"burst $((burst_end - burst_start)) s, drained $drain_s s after it"
if [ $failures -gt 0 ]; then
	fail_now "$failures check(s) failed (above)"
fi
note "PASS"
