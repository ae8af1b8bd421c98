#!/usr/bin/env bash
# checkout_held.sh: checkouts held between taking their Idempotency-Key and
# their answer, by the broker or by Redis.
#
# 1. A checkout whose message the broker confirms while Redis refuses
#    writes is not answered until Redis takes its records again, and then
#    gets its 202 with the order visible at once (API.md: "right after a
#    202 the order is visible as pending, never 404"). The checkout is held
#    (on an API of its own, with a publish timeout of 120 s) between its
#    first Redis round trip (which takes its key) and the broker's confirm
#    by a RabbitMQ memory alarm (a high watermark of 0 blocks every
#    publisher). Redis is then made to refuse writes (maxmemory 1,
#    noeviction: every write answers OOM), and the alarm is lifted: the
#    confirm arrives, the settler cannot write the pending view and the
#    key's answer, and keeps the request. While it does, the client has no
#    answer. Once Redis takes writes, the client gets the 202,
#    GET /v1/orders/{id} answers 200, a replay gets the same 202, and the
#    order is confirmed.
# 2. A client that gives up while its checkout waits for the broker (the
#    stack's API). The broker does not read, but the message is in the
#    socket already: it may yet be stored, so the API neither answers 503
#    nor gives the key away at the publish timeout (ORDERS_PUBLISH_TIMEOUT_MS).
#    Past it, a retry is told 409 idempotency_key_in_use. Once the broker
#    reads again, the client's retry gets the order's 202 (after 409s with
#    Retry-After while the first is still settling; if the first was still
#    in doubt when the API stopped waiting for it, the key was given back
#    and the retry publishes the same order again), and the key has one
#    order.
#
# Run by ctest while the stack is up; restores the watermark and Redis'
# limits on every exit.
set -euo pipefail

# shellcheck disable=SC2034 # read by lib/stack.bash
SCRIPT_NAME=checkout_held
HERE=$(dirname "${BASH_SOURCE[0]}")
# shellcheck source=lib/stack.bash
. "$HERE/lib/stack.bash"
# shellcheck source=lib/extra.bash
. "$HERE/lib/extra.bash"

redis() { redis-cli -h 127.0.0.1 -p "$REDIS_PORT" "$@"; }
ctl() { "$SERVICES_SH" ctl -q "$@"; }

watermark=$(ctl eval 'vm_memory_monitor:get_vm_memory_high_watermark().') ||
	fail_now "cannot read RabbitMQ's memory high watermark"
maxmemory=$(redis config get maxmemory | sed -n 2p)
policy=$(redis config get maxmemory-policy | sed -n 2p)
[ -n "$maxmemory" ] && [ -n "$policy" ] || fail_now "cannot read Redis' maxmemory settings"
curl_pid=

cleanup() {
	local rc=$?
	[ -z "$curl_pid" ] || kill "$curl_pid" 2>/dev/null || true
	stop_extras
	redis config set maxmemory "$maxmemory" >/dev/null || rc=1
	redis config set maxmemory-policy "$policy" >/dev/null || rc=1
	ctl set_vm_memory_high_watermark "$watermark" >/dev/null || rc=1
	rm -rf "$work"
	exit $rc
}
trap cleanup EXIT

sku=SETTLE-$rid
key=settle-$rid
put_sku "$sku" 5 300 held
checkout_json "$sku" 737 >"$work/body.json"

# Part 1 runs on an API of its own that waits up to 120 s for a confirm:
# rabbitmqctl alone takes seconds on a busy machine, and the stack's API
# would answer 503 after 5 s.
port=$(free_port $((9101 + PORT_OFFSET * 10 + 5))) || fail_now "no free port for a second API"
start_extra api-held api "$port" ORDERS_PUBLISH_TIMEOUT_MS=120000
wait_extras_ready 60
held_api=http://127.0.0.1:$port
log=${X_LOG[api-held]}

# post OUT [KEY [MAX_TIME [URL]]]: POST the checkout body; prints the status.
post() {
	curl -s -o "$1" -w '%{http_code}' --max-time "${3:-150}" -X POST \
		-H 'Authorization: Bearer dev-client' -H 'Content-Type: application/json' \
		-H "Idempotency-Key: ${2:-$key}" --data-binary @"$work/body.json" \
		"${4:-$held_api}/v1/checkouts"
}

say_t "blocking publishers (memory high watermark 0, was $watermark)"
ctl set_vm_memory_high_watermark 0 >/dev/null
sleep 1
post "$work/first.json" >"$work/first.code" &
curl_pid=$!

# The key is taken in the checkout's first round trip, before its publish.
deadline=$((SECONDS + 60))
until redis --scan --pattern "idem:*:$key" | grep -q .; do
	[ $SECONDS -lt $deadline ] || fail_now "the checkout never took its Idempotency-Key"
	sleep 0.1
done
say_t "the checkout took its key and waits for the broker; Redis now refuses writes"
redis config set maxmemory-policy noeviction >/dev/null
redis config set maxmemory 1 >/dev/null
if redis set "settle-probe-$rid" x 2>&1 | grep -q OOM; then
	note "ok: Redis answers writes with OOM"
else
	fail_now "Redis still takes writes with maxmemory 1"
fi
ctl set_vm_memory_high_watermark "$watermark" >/dev/null
say_t "publishers unblocked; the broker confirms"

# The settler keeps the request while Redis refuses its records.
deadline=$((SECONDS + 60))
until grep -q 'cannot record confirmed checkouts in redis' "$log"; do
	[ $SECONDS -lt $deadline ] || fail_now "the API never tried to record the confirmed checkout"
	kill -0 "$curl_pid" 2>/dev/null || fail_now "the checkout was answered ($(cat "$work/first.code")) before Redis took its records"
	sleep 0.2
done
sleep 2
kill -0 "$curl_pid" 2>/dev/null ||
	fail_now "the checkout was answered ($(cat "$work/first.code")) while Redis refused its records"
note "ok: no answer while Redis refuses the records"

redis config set maxmemory "$maxmemory" >/dev/null
redis config set maxmemory-policy "$policy" >/dev/null
say_t "Redis takes writes again"
wait "$curl_pid" || fail_now "curl failed: the connection was closed without an answer"
curl_pid=
code=$(cat "$work/first.code")
[ "$code" = 202 ] || fail_now "the held checkout answered $code: $(cat "$work/first.json")"
order_id=$(sed -n 's/.*"order_id":"\([0-9a-f-]*\)".*/\1/p' "$work/first.json")
[ -n "$order_id" ] || fail_now "no order id in the 202: $(cat "$work/first.json")"
say_t "202 for order $order_id"

code=$(curl -s -o "$work/order.json" -w '%{http_code}' --max-time 10 \
	-H 'Authorization: Bearer dev-client' "$held_api/v1/orders/$order_id")
[ "$code" = 200 ] || fail_now "GET /v1/orders/$order_id right after the 202 answered $code"
note "ok: the order is visible right after the 202"

code=$(post "$work/replay.json")
[ "$code" = 202 ] && cmp -s "$work/first.json" "$work/replay.json" ||
	fail_now "a replay answered $code: $(cat "$work/replay.json")"
note "ok: a replay gets the same 202"

# confirmed_once ORDER_ID KEY: the order ends confirmed within 60 s, and is the key's only one.
confirmed_once() {
	local status n deadline=$((SECONDS + 60))
	while :; do
		status=$(psql_q -c "SELECT status FROM orders WHERE order_id = '$1'")
		[ "$status" = confirmed ] && break
		[ $SECONDS -lt $deadline ] || fail_now "order $1 is '$status' after 60 s, not confirmed"
		sleep 0.5
	done
	n=$(psql_q -c "SELECT count(*) FROM orders WHERE idempotency_key = '$2'")
	[ "$n" = 1 ] || fail_now "$n orders for key $2, not 1"
}
confirmed_once "$order_id" "$key"
note "ok: one order, confirmed"

# ------------------------------------------------ 2. the client gives up
key2=held-gone-$rid
timeout_s=$(((${ORDERS_PUBLISH_TIMEOUT_MS:-5000} + 999) / 1000))
say_t "blocking publishers again; a client gives up on its checkout after 1 s"
ctl set_vm_memory_high_watermark 0 >/dev/null
sleep 1
code=$(post "$work/gone.json" "$key2" 1 "$API") || true
[ "$code" = 000 ] || fail_now "the checkout answered $code while publishers were blocked: $(cat "$work/gone.json")"
# The publish timeout passes after the client has left; the message was sent.
sleep $((timeout_s + 1))
code=$(post "$work/early.json" "$key2" 10 "$API") || true
[ "$code" = 409 ] ||
	fail_now "a retry past the publish timeout of a sent checkout answered $code, not 409: $(cat "$work/early.json")"
note "ok: past the publish timeout the sent checkout still holds its key (409)"
ctl set_vm_memory_high_watermark "$watermark" >/dev/null
say_t "publishers unblocked"
deadline=$((SECONDS + 30))
while :; do
	code=$(post "$work/retry.json" "$key2" 30 "$API") || true
	[ "$code" = 409 ] || break
	[ $SECONDS -lt $deadline ] || break
	sleep 1
done
[ "$code" = 202 ] ||
	fail_now "the retry after the client gave up answered $code, not 202: $(cat "$work/retry.json")"
confirmed_once "$(sed -n 's/.*"order_id":"\([0-9a-f-]*\)".*/\1/p' "$work/retry.json")" "$key2"
note "ok: the retry gets the order's 202; one order for the key, confirmed"
