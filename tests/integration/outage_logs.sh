#!/usr/bin/env bash
# outage_logs.sh: what the daemons log when a dependency goes away in order.
#
#   1. RabbitMQ closes every client connection (rabbitmqctl
#      close_all_connections: connection.close with 320 CONNECTION_FORCED,
#      what a node's orderly stop sends). Each consumer logs it as a
#      warning ("rabbitmq closed the connection", the broker's code 320 and
#      its text) and consumes again; every daemon is ready again, and no
#      daemon logged an "error" line about it.
#   2. PostgreSQL stops for OUTAGE_PG_S (25) seconds while checkouts come
#      in, so inventory-consumer holds messages. While it is down each
#      consumer says so at most once per 10 s (plus the first line), each
#      line with "warnings_suppressed"; once it is back, a consumer that
#      said it was down says "postgresql reachable again" exactly once,
#      and every order of the outage ends final. No "error" line either.
#
# The EXIT trap starts PostgreSQL again and waits until the stack is ready,
# also when the test fails.
#
# Run by ctest (ORDERS_SOURCE_DIR = repository root, .local/env exported)
# while the stack is up.
set -euo pipefail

# shellcheck disable=SC2034 # read by lib/stack.bash and deploy/local/lib.sh
SCRIPT_NAME=outage_logs
# shellcheck source-path=SCRIPTDIR source=lib/stack.bash
. "$(dirname "${BASH_SOURCE[0]}")/lib/stack.bash"

OUTAGE_PG_S=${OUTAGE_PG_S:-25}
prefix=ol-$rid
CONSUMERS=(orders-inventory orders-payment orders-order orders-cart)

restore() {
	local rc=$?
	trap - EXIT
	restore_stack postgresql rabbitmq || rc=1
	rm -rf "$work"
	exit $rc
}
trap restore EXIT

declare -A mark=()
set_marks() {
	local name
	for name in "${DAEMONS[@]}"; do
		mark[$name]=$(wc -l <"$LOG_DIR/$name.log")
	done
}
# since NAME: NAME's log lines after its mark, as JSON.
since() {
	tail -n +"$((mark[$1] + 1))" "$LOG_DIR/$1.log"
}
# count_since NAME JQ_FILTER: how many of those lines the filter selects.
count_since() {
	since "$1" | jq -R -c "fromjson? | select($2)" | grep -c . || true
}
# no_errors WHAT: no daemon logged an "error" (or a non-JSON) line since its mark.
no_errors() {
	local name bad
	for name in "${DAEMONS[@]}"; do
		bad=$(since "$name" | jq -R -c 'fromjson? // {level: "not-json"}
			| select(.level == "error" or .level == "not-json")' | head -n 3)
		[ -z "$bad" ] || fail_later "$name logged this during $1: $bad"
	done
}

wait_ready 30 || fail_now "the stack is not ready before the test"
put_sku "$prefix-A" 1000 500 "Outage logs"

# ------------------------------------------------- 1. the broker closes

set_marks
say_t "rabbitmq closes every client connection (320 CONNECTION_FORCED)"
rmq_ctl -q close_all_connections "outage_logs: orderly close" >"$work/close.log" 2>&1 ||
	fail_now "rabbitmqctl close_all_connections failed: $(cat "$work/close.log")"
deadline=$((SECONDS + 60))
for name in "${CONSUMERS[@]}"; do
	while [ "$(count_since "$name" '.msg == "consuming"')" -eq 0 ] && [ $SECONDS -lt $deadline ]; do
		sleep 0.5
	done
done
wait_ready 60 || fail_later "the daemons are not ready 60 s after the broker closed their connections"
for name in "${CONSUMERS[@]}"; do
	n=$(count_since "$name" '.level == "warn" and .msg == "rabbitmq closed the connection"
		and .code == 320 and (.reason | test("outage_logs: orderly close"))')
	[ "$n" -ge 1 ] || fail_later "$name did not log the broker's close as a warning with code 320 and its text: $(since "$name" | head -c 600)"
	[ "$(count_since "$name" '.msg == "consuming"')" -ge 1 ] ||
		fail_later "$name did not consume again after the broker closed its connection"
done
no_errors "the broker's orderly close"
note "ok: every consumer logged the close as a warning (code 320) and consumes again"

# ------------------------------------------------ 2. postgresql is away

# A checkout first, so that the API has the product's price in Redis.
curl -s -o /dev/null --max-time 10 -X POST -H 'Authorization: Bearer dev-client' \
	-H 'Content-Type: application/json' -H "Idempotency-Key: $prefix-warm" \
	-d "$(checkout_json "$prefix-A" 123)" "$API/v1/checkouts" || true
set_marks
say_t "stopping postgresql for $OUTAGE_PG_S s"
"$SERVICES_SH" stop postgresql >"$work/pg.log" 2>&1 || fail_now "cannot stop postgresql: $(cat "$work/pg.log")"
down_at=$SECONDS
orders=()
for k in 1 2 3 4 5; do
	code=$(curl -s -o "$work/co.json" -w '%{http_code}' --max-time 10 -X POST \
		-H 'Authorization: Bearer dev-client' -H 'Content-Type: application/json' \
		-H "Idempotency-Key: $prefix-$k" -d "$(checkout_json "$prefix-A" 123)" \
		"$API/v1/checkouts") || code=000
	[ "$code" = 202 ] || fail_now "a checkout while postgresql is down answered $code: $(head -c 300 "$work/co.json")"
	orders+=("$(sed -n 's/.*"order_id": *"\([0-9a-f-]*\)".*/\1/p' "$work/co.json")")
done
while [ $((SECONDS - down_at)) -lt "$OUTAGE_PG_S" ]; do sleep 0.5; done
"$SERVICES_SH" start postgresql >"$work/pg.log" 2>&1 || fail_now "cannot start postgresql: $(cat "$work/pg.log")"
outage_s=$((SECONDS - down_at))
say_t "postgresql is back after $outage_s s"
wait_ready 60 || fail_later "the daemons are not ready 60 s after postgresql came back"

# Every order of the outage ends final (inventory held their messages).
ids=$(printf "'%s'," "${orders[@]}")
deadline=$((SECONDS + 60))
while :; do
	left=$(psql_q -c "SELECT count(*) FROM unnest(ARRAY[${ids%,}]::uuid[]) AS w(id)
		WHERE NOT EXISTS (SELECT 1 FROM orders o WHERE o.order_id = w.id AND o.status IN ($FINAL))")
	if [ "$left" -eq 0 ] || [ $SECONDS -ge $deadline ]; then break; fi
	sleep 0.5
done
[ "$left" -eq 0 ] || fail_later "$left of the ${#orders[@]} orders placed while postgresql was down are not final 60 s after it came back"

# One line per 10 s of outage at most, and the first at once.
limit=$((outage_s / 10 + 2))
for name in "${CONSUMERS[@]}"; do
	down=$(count_since "$name" '.msg | startswith("cannot reach postgresql")')
	recon=$(count_since "$name" '.msg == "cannot reconnect to postgresql"')
	bare=$(count_since "$name" '(.msg | test("^cannot (reach|reconnect to) postgresql")) and (has("warnings_suppressed") | not)')
	again=$(count_since "$name" '.msg == "postgresql reachable again"')
	note "$name: $down 'cannot reach postgresql', $recon 'cannot reconnect', $again 'reachable again'"
	[ "$down" -le "$limit" ] || fail_later "$name logged 'cannot reach postgresql' $down times in a $outage_s s outage (at most $limit)"
	[ "$recon" -le "$limit" ] || fail_later "$name logged 'cannot reconnect to postgresql' $recon times in a $outage_s s outage (at most $limit)"
	if [ "$down" -gt 0 ] && [ "$again" -ne 1 ]; then
		fail_later "$name said postgresql was down but logged 'postgresql reachable again' $again times (expected once)"
	fi
	[ "$bare" -eq 0 ] || fail_later "$name logged $bare postgresql warnings without warnings_suppressed: $(since "$name" | grep 'cannot re' | head -n 2)"
done
held=$(count_since orders-inventory '.msg == "cannot reach postgresql, holding the messages"')
[ "$held" -ge 1 ] || fail_later "orders-inventory never held messages while postgresql was down"
no_errors "the postgresql outage"

say_t "done"
if [ $failures -gt 0 ]; then
	fail_now "$failures check(s) failed (above)"
fi
note "PASS"
