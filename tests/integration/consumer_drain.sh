#!/usr/bin/env bash
# consumer_drain.sh: a consumer stopped with SIGTERM finishes the deliveries
# it already has instead of handing them back. On a quorum queue a message
# handed back counts against its delivery limit, and KEDA scales consumers
# in often: ten scale-ins must not dead-letter a good order.
#
# orders-inventory is stopped while CHECKOUTS (300) checkouts queue up,
# then started with one message per transaction (so that it is slow and
# its prefetch of 100 is full) and sent SIGTERM after a few messages. It
# must log that it finished the deliveries in hand (some, and all the
# broker had sent), exit 0, and after a normal start the rest of the queue
# must arrive without a single redelivery (orders_message_redeliveries_total
# stays 0), every order reaching a final status.
#
# Run by ctest while the stack is up; leaves orders-inventory running with
# the stack's settings.
set -euo pipefail

# shellcheck disable=SC2034 # read by lib/stack.bash
SCRIPT_NAME=consumer_drain
HERE=$(dirname "${BASH_SOURCE[0]}")
# shellcheck source=lib/stack.bash
. "$HERE/lib/stack.bash"

CHECKOUTS=${DRAIN_CHECKOUTS:-300}
prefix=drain-$rid
log=$LOG_DIR/orders-inventory.log

cleanup() {
	local rc=$?
	stop_loadgen
	unset ORDERS_CONSUMER_BATCH
	restore_stack || rc=1
	rm -rf "$work"
	exit $rc
}
trap cleanup EXIT

sku=DRAIN-$rid
put_sku "$sku" 100000 100 drain
"$DAEMON_SH" stop orders-inventory >/dev/null
say_t "orders-inventory stopped; $CHECKOUTS checkouts queue up"
run_loadgen b -n "$CHECKOUTS" -c 16 -s "$sku" -q 1 -l 0 -m 4242424242424242:1 -d 60
wait_loadgen
[ "$LG_RC" = 0 ] || fail_now "not every checkout got a 202 (orders-loadgen exit $LG_RC): $(tail -n 3 "$work/b.log")"

# A start moves the old log aside: the new one has this run's lines only.
ORDERS_CONSUMER_BATCH=1 "$DAEMON_SH" start orders-inventory >/dev/null
deadline=$((SECONDS + 30))
while n=$(processed_in "$log" 0) && [ "$n" -lt 5 ]; do
	[ $SECONDS -lt $deadline ] || fail_now "orders-inventory processed $n message(s) in 30 s"
	sleep 0.05
done
at=$(wc -l <"$log")
say_t "SIGTERM to orders-inventory after $n message(s)"
"$DAEMON_SH" stop orders-inventory >/dev/null
unset ORDERS_CONSUMER_BATCH

line=$(tail -n +"$((at + 1))" "$log" | grep '"msg":"finished the deliveries in hand"' | tail -n 1)
[ -n "$line" ] || fail_now "orders-inventory did not say it finished the deliveries in hand: $(tail -n 3 "$log")"
drained=$(jq -r .messages <<<"$line")
complete=$(jq -r .complete <<<"$line")
note "after the signal it finished $drained more message(s) (complete: $complete)"
[ "$drained" -gt 0 ] || fail_now "it finished no delivery after the signal: its prefetch was empty, the test proves nothing"
[ "$complete" = 1 ] || fail_now "it stopped before the broker's cancel-ok"
tail -n 1 "$log" | grep -q '"msg":"stopped"' || fail_now "the last line is not \"stopped\": $(tail -n 1 "$log")"

"$DAEMON_SH" start orders-inventory >/dev/null
say_t "orders-inventory started again"
deadline=$((SECONDS + 90))
while :; do
	left=$(psql_q -c "SELECT count(*) FROM orders o JOIN order_lines l USING (order_id)
		WHERE l.sku = '$sku' AND o.status NOT IN ($FINAL)")
	total=$(psql_q -c "SELECT count(*) FROM order_lines WHERE sku = '$sku'")
	[ "$total" = "$CHECKOUTS" ] && [ "$left" = 0 ] && break
	[ $SECONDS -lt $deadline ] || fail_now "after 90 s: $total of $CHECKOUTS orders, $left not final"
	sleep 0.5
done
note "ok: all $CHECKOUTS orders are final"

metrics=$(curl -s --max-time 10 "http://127.0.0.1:${DAEMON_METRICS_PORT[orders-inventory]}/metrics")
redelivered=$(awk '/^orders_message_redeliveries_total\{/ { n += $2 } END { print n + 0 }' <<<"$metrics")
[ "$redelivered" = 0 ] || fail_now "the restarted orders-inventory got $redelivered redelivered message(s): the stopped one handed them back"
note "ok: no message was handed back"
