#!/usr/bin/env bash
# orderctl.sh: the operators' tool (tools/orderctl) against the running stack.
#
#   1. usage: no command, an unknown command or queue, a bad number, and a
#      drop without --message-id exit 2; help exits 0.
#   2. queues: all 8 queues (4 work queues and their .dlq), each work queue
#      with a consumer; --json and the text table agree.
#   3. a poison message (undecodable, with a message_id) published with
#      checkout.requested is parked in inventory.reserve.dlq; dlq list shows
#      it (reason, original routing key, size, no order id, never its body)
#      twice, so it was left there; dlq drop removes it.
#   4. a backlog: orders-inventory stopped, CHECKOUTS (5) checkouts wait in
#      inventory.reserve with no consumer; queues shows ready >= 5, 0
#      consumers and KEDA's count ceil(ready / target) within --min/--max.
#   5. a good parked message: one of those checkouts is dead-lettered as a
#      consumer would (orders-dlq-helper park: basic.reject, no requeue), and
#      a second copy of it parked beside it (what a replay that died between
#      the confirm and the ack leaves). With orders-inventory back, the other
#      orders are confirmed and the parked one stays unprocessed. dlq replay
#      --max 1 makes it confirmed, with one inbox row per consumer; replaying
#      the copy is harmless: inventory-consumer replays its recorded outcome
#      (its "replayed" counter goes up), the order keeps one inbox row per
#      consumer, one payment and one finance event, and the .dlq no longer
#      has the message.
#   6. events tail prints the finance events of these orders in seq order
#      (text and --json); --follow prints a new order's event as it comes.
#   7. migrate runs tools/migrate.sh: up to date.
#
# The EXIT trap drops what this test parked, stops the follower and leaves
# every daemon running and ready, also when the test fails. Run by ctest
# (ORDERS_SOURCE_DIR, ORDERCTL, ORDERS_DLQ_HELPER set) while the stack is up.
set -euo pipefail

# shellcheck disable=SC2034 # read by lib/stack.bash and deploy/local/lib.sh
SCRIPT_NAME=orderctl
# shellcheck source-path=SCRIPTDIR source=lib/stack.bash
. "$(dirname "${BASH_SOURCE[0]}")/lib/stack.bash"

CTL=${ORDERCTL:-$BUILD/tools/orderctl}
HELPER=${ORDERS_DLQ_HELPER:-$BUILD/tests/orders-dlq-helper}
CHECKOUTS=5
FINAL_S=${ORDERCTL_FINAL_S:-90}
prefix=oc-$rid
[ -x "$CTL" ] || fail_now "no orderctl at $CTL (build it, or set ORDERCTL)"
[ -x "$HELPER" ] || fail_now "no orders-dlq-helper at $HELPER (build the tests, or set ORDERS_DLQ_HELPER)"
command -v jq >/dev/null || fail_now "jq is missing (deploy/local/install.sh)"

planted=()
follow_pid=
cleanup() {
	local rc=$? id
	if [ -n "$follow_pid" ]; then kill "$follow_pid" 2>/dev/null || true; fi
	for id in "${planted[@]}"; do
		"$CTL" dlq drop inventory.reserve --message-id "$id" >/dev/null 2>&1 || true
	done
	restore_stack || rc=1
	rm -rf "$work"
	exit $rc
}
trap cleanup EXIT

# ctl WANT_RC NAME ARGS...: run orderctl, output in $work/NAME.out and .err;
# fail unless it exits WANT_RC.
ctl() {
	local want=$1 name=$2 rc=0
	shift 2
	"$CTL" "$@" >"$work/$name.out" 2>"$work/$name.err" || rc=$?
	if [ "$rc" != "$want" ]; then
		sed 's/^/    /' "$work/$name.out" "$work/$name.err" >&2
		fail_now "orderctl $* exited $rc, expected $want"
	fi
}

expect() { # expect WHAT ACTUAL WANTED
	[ "$2" = "$3" ] || fail_now "$1: got '$2', expected '$3'"
	note "ok: $1 ($2)"
}

status_of() { psql_q -c "SELECT status FROM orders WHERE order_id = '$1'"; }

# wait_status ID STATUS SECONDS
wait_status() {
	local deadline=$((SECONDS + $3)) s
	while :; do
		s=$(status_of "$1")
		[ "$s" != "$2" ] || return 0
		[ $SECONDS -lt $deadline ] || fail_now "order $1 is '${s:-absent}' after $3 s, expected $2"
		sleep 0.5
	done
}

# parked ID: how many copies of message ID inventory.reserve.dlq holds.
parked() {
	local rc=0
	"$CTL" dlq list inventory.reserve --json --message-id "$1" >"$work/parked.json" 2>/dev/null || rc=$?
	case $rc in
	0) jq '.messages | length' "$work/parked.json" ;;
	1) echo 0 ;;
	*) fail_now "orderctl dlq list exited $rc" ;;
	esac
}

replayed_count() {
	curl -s --max-time 5 "http://127.0.0.1:${DAEMON_METRICS_PORT[orders-inventory]}/metrics" |
		awk '/^orders_messages_total\{consumer="inventory",outcome="replayed"\}/ { n = $2 } END { print n + 0 }'
}

checkout() { # checkout KEY: POST a one-unit checkout of $sku; prints the order id
	local code
	code=$(curl -s -o "$work/checkout.json" -w '%{http_code}' --max-time 30 -X POST \
		-H 'Authorization: Bearer dev-client' -H 'Content-Type: application/json' \
		-H "Idempotency-Key: $1" -d "$(checkout_json "$sku" 123)" "$API/v1/checkouts") || code=000
	[ "$code" = 202 ] || fail_now "checkout $1 answered $code: $(cat "$work/checkout.json")"
	jq -r .order_id "$work/checkout.json"
}

# ------------------------------------------------------------------ 1. usage
ctl 2 none
ctl 2 unknown frobnicate
ctl 2 badqueue dlq list no.such.queue
ctl 2 badnum queues --target 0
ctl 2 nodrop dlq drop inventory.reserve
ctl 0 help help
grep -q 'dlq replay QUEUE' "$work/help.out" || fail_now "help does not describe dlq replay"
note "ok: usage errors exit 2, help exits 0"

# ----------------------------------------------------------------- 2. queues
ctl 0 queues queues --json
expect "queues listed" "$(jq -c '[.queues[].queue]' "$work/queues.out")" \
	'["inventory.reserve","inventory.reserve.dlq","payment.authorize","payment.authorize.dlq","order.finalize","order.finalize.dlq","cart.persist","cart.persist.dlq"]'
expect "work queues without a consumer" \
	"$(jq '[.queues[] | select(.dead_letter | not) | select(.consumers < 1)] | length' "$work/queues.out")" 0
expect "the KEDA defaults" "$(jq -c '[.target, .min, .max]' "$work/queues.out")" '[100,1,20]'
ctl 0 queues_text queues
expect "text rows" "$(grep -cE '^(inventory\.reserve|payment\.authorize|order\.finalize|cart\.persist)(\.dlq)? ' "$work/queues_text.out")" 8
grep -q "KEDA" "$work/queues_text.out" || fail_now "the text table does not explain what it counts"
seq0=$(psql_q -c "SELECT coalesce(max(seq), 0) FROM order_events")

# ----------------------------------------------------------------- 3. poison
poison_id=$prefix-poison
marker=$prefix-poison-body
planted+=("$poison_id")
# Field 1, length-delimited, claiming 4 GiB: no protobuf message.
printf '\x0a\xff\xff\xff\xff\x0f%s' "$marker" | "$HELPER" publish checkout.requested "$poison_id" ||
	fail_now "cannot publish the poison message"
deadline=$((SECONDS + 60))
while [ "$(parked "$poison_id")" != 1 ]; do
	[ $SECONDS -lt $deadline ] || fail_now "the poison message was not parked in inventory.reserve.dlq within 60 s"
	sleep 0.5
done
expect "poison as listed" \
	"$(jq -c '.messages[0] | [.original_routing_key, .reason, .dead_lettered_from, .order_id, .size]' "$work/parked.json")" \
	"[\"checkout.requested\",\"rejected\",\"inventory.reserve\",null,$((6 + ${#marker}))]"
ctl 0 list_text dlq list inventory.reserve
grep -q "^$poison_id .*checkout.requested .*rejected" "$work/list_text.out" ||
	fail_now "dlq list does not show the poison message: $(cat "$work/list_text.out")"
if grep -q "$marker" "$work/list_text.out" "$work/parked.json"; then
	fail_now "dlq list printed a message body"
fi
expect "poison still parked after two listings" "$(parked "$poison_id")" 1
ctl 0 drop dlq drop inventory.reserve --message-id "$poison_id"
grep -q "1 dropped" "$work/drop.out" || fail_now "dlq drop did not report it: $(cat "$work/drop.out")"
expect "poison parked after the drop" "$(parked "$poison_id")" 0

# ---------------------------------------------------------------- 4. backlog
sku=OC-$rid
put_sku "$sku" 100 250 orderctl
"$DAEMON_SH" stop orders-inventory
orders=()
for k in $(seq 1 $CHECKOUTS); do
	orders+=("$(checkout "$prefix-$k")")
done
say_t "$CHECKOUTS checkouts accepted with orders-inventory stopped"
ctl 0 backlog queues --json --target 2
ready=$(jq '.queues[] | select(.queue == "inventory.reserve") | .ready' "$work/backlog.out")
[ "$ready" -ge $CHECKOUTS ] || fail_now "inventory.reserve has $ready ready messages, expected at least $CHECKOUTS"
expect "inventory.reserve consumers" \
	"$(jq '.queues[] | select(.queue == "inventory.reserve") | .consumers' "$work/backlog.out")" 0
want=$(((ready + 1) / 2))
[ $want -le 20 ] || want=20
expect "KEDA replicas for $ready ready, target 2" \
	"$(jq '.queues[] | select(.queue == "inventory.reserve") | .desired_replicas' "$work/backlog.out")" "$want"
ctl 0 backlog_max queues --json --target 2 --max 2
expect "KEDA replicas with --max 2" \
	"$(jq '.queues[] | select(.queue == "inventory.reserve") | .desired_replicas' "$work/backlog_max.out")" 2
ctl 0 backlog_text queues --target 2 --min 0
expect "text row of inventory.reserve" \
	"$(awk '$1 == "inventory.reserve" { print $3, $4 }' "$work/backlog_text.out")" "0 $want"

# ------------------------------------------------------ 5. a good parked one
order1=${orders[0]}
mid=$("$HELPER" park inventory.reserve "$order1") || fail_now "cannot park order $order1's checkout"
[ -n "$mid" ] || fail_now "the parked message has no message_id"
planted+=("$mid")
expect "parked copies of $mid" "$(parked "$mid")" 1
expect "the parked checkout as listed" \
	"$(jq -c '.messages[0] | [.order_id, .original_routing_key, .reason, .death_count]' "$work/parked.json")" \
	"[\"$order1\",\"checkout.requested\",\"rejected\",1]"
"$HELPER" copy inventory.reserve "$mid" || fail_now "cannot copy the parked message"
expect "parked copies after the copy" "$(parked "$mid")" 2

"$DAEMON_SH" start orders-inventory
for id in "${orders[@]:1}"; do wait_status "$id" confirmed "$FINAL_S"; done
say_t "the other $((CHECKOUTS - 1)) orders are confirmed"
expect "the parked order in the database" "$(status_of "$order1")" ""
expect "inbox rows of the parked message" \
	"$(psql_q -c "SELECT count(*) FROM inbox WHERE message_id = '$mid'")" 0

ctl 0 replay1 dlq replay inventory.reserve --message-id "$mid" --max 1
grep -q "1 replayed, 0 skipped, 0 failed" "$work/replay1.out" ||
	fail_now "dlq replay did not report one replayed: $(cat "$work/replay1.out")"
wait_status "$order1" confirmed "$FINAL_S"
say_t "the replayed order is confirmed"
expect "copies left after one replay" "$(parked "$mid")" 1

before=$(replayed_count)
ctl 0 replay2 dlq replay inventory.reserve --message-id "$mid" --json
expect "second replay" "$(jq -c '[.replayed, .skipped, .failed]' "$work/replay2.out")" '[1,0,0]'
deadline=$((SECONDS + FINAL_S))
while [ "$(replayed_count)" -le "$before" ]; do
	[ $SECONDS -lt $deadline ] || fail_now "orders-inventory did not see the second copy within $FINAL_S s"
	sleep 0.5
done
sleep 2 # the outcome it published again travels on through payment and order
expect "copies left after the second replay" "$(parked "$mid")" 0
expect "inventory inbox rows of $mid" \
	"$(psql_q -c "SELECT count(*) FROM inbox WHERE consumer = 'inventory' AND message_id = '$mid'")" 1
expect "inbox rows of order $order1 by consumer" \
	"$(psql_q -c "SELECT string_agg(consumer || '=' || n, ' ' ORDER BY consumer) FROM (SELECT consumer, count(*) AS n FROM inbox WHERE order_id = '$order1' GROUP BY consumer) c")" \
	"inventory=1 order=1 payment=1"
expect "payments of order $order1" "$(psql_q -c "SELECT count(*) FROM payments WHERE order_id = '$order1'")" 1
expect "finance events of order $order1" \
	"$(psql_q -c "SELECT count(*) FROM order_events WHERE order_id = '$order1'")" 1
expect "order $order1 after the duplicate" "$(status_of "$order1")" confirmed

# ----------------------------------------------------------------- 6. events
ctl 0 events events tail --after "$seq0"
for id in "${orders[@]}"; do
	grep -qE "^[0-9]+ +order\.confirmed +$id +USD +250 " "$work/events.out" ||
		fail_now "events tail does not show order $id: $(cat "$work/events.out")"
done
ctl 0 events_json events tail --after "$seq0" --json
expect "events tail --json for these orders" \
	"$(jq -s --argjson ids "$(printf '%s\n' "${orders[@]}" | jq -R . | jq -s .)" \
		'[.[] | select(.order_id as $o | $ids | index($o))] | length' "$work/events_json.out")" $CHECKOUTS
expect "seq order" "$(jq -s '[.[].seq] == ([.[].seq] | sort) and (.[0].seq > '"$seq0"')' "$work/events_json.out")" true
last=$(jq -s '.[-1].seq' "$work/events_json.out")
"$CTL" events tail --after "$last" --follow --interval-ms 200 >"$work/follow.out" 2>"$work/follow.err" &
follow_pid=$!
late=$(checkout "$prefix-late")
deadline=$((SECONDS + FINAL_S))
until grep -q "$late" "$work/follow.out"; do
	kill -0 "$follow_pid" 2>/dev/null || fail_now "events tail --follow exited: $(cat "$work/follow.err")"
	[ $SECONDS -lt $deadline ] || fail_now "events tail --follow did not print order $late within $FINAL_S s"
	sleep 0.5
done
kill "$follow_pid" 2>/dev/null || true
wait "$follow_pid" 2>/dev/null || true
follow_pid=
note "ok: events tail --follow printed order $late"

# ---------------------------------------------------------------- 7. migrate
ctl 0 migrate migrate
grep -q "up to date" "$work/migrate.out" || fail_now "migrate said: $(cat "$work/migrate.out" "$work/migrate.err")"
note "ok: migrate"

say_t "PASS"
