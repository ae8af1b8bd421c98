# shellcheck shell=bash disable=SC2034,SC2154 # used and set by the scripts that source this
# stack.bash: what the stack-level shell tests (fault_burst.sh,
# race_consumers.sh, broker_failover.sh) share: the environment of the
# running stack, logging, psql and curl wrappers, waiting for readiness,
# restoring the stack, orders-loadgen and the SQL checks. Sourced, never
# run: ctest registers tests/integration/*.sh only, and this file is
# neither .sh nor there.
#
# The script sets SCRIPT_NAME (its messages' prefix) before sourcing this
# and, before it runs q or check, defines preamble (the SQL that sets up
# its temporary tables, usually through run_preamble). Sourcing it checks
# that the stack is up and sets ROOT, API, BUILD, LOADGEN, work (a
# temporary directory), rid, lg_pid, t0 and failures. RMQ_CTL_NODE names
# the RabbitMQ node rmq_ctl asks (default: the stack's; rabbitmq-K for a
# node of the failover test's cluster).

ROOT=${ORDERS_SOURCE_DIR:-$(cd "$(dirname "${BASH_SOURCE[0]}")/../../.." && pwd -P)}
LOCAL_ENV=$ROOT/.local/env
if [ -z "${ORDERS_PG_DSN:-}" ] && [ -r "$LOCAL_ENV" ]; then
	# shellcheck source=/dev/null
	. "$LOCAL_ENV"
fi
# The stack's ports follow from its HTTP port; the scripts need the offset.
if [ -n "${ORDERS_HTTP_PORT:-}" ]; then
	export ORDERS_LOCAL_PORT_OFFSET=$((ORDERS_HTTP_PORT - 8080))
fi
# shellcheck source-path=SCRIPTDIR source=../../../deploy/local/lib.sh
. "$ROOT/deploy/local/lib.sh"

API=http://127.0.0.1:$HTTP_PORT
DAEMON_SH=$ROOT/deploy/local/daemon.sh
SERVICES_SH=$ROOT/deploy/local/services.sh
FINAL="'confirmed','rejected','payment_failed','expired'"

fail_now() {
	printf '%s: FAIL: %s\n' "$SCRIPT_NAME" "$*" >&2
	exit 1
}
note() { printf '%s: %s\n' "$SCRIPT_NAME" "$*"; }

[ -n "${ORDERS_PG_DSN:-}" ] || fail_now "ORDERS_PG_DSN is not set and $LOCAL_ENV is missing (make up)"
[ -r "$RUN_DIR/build-dir" ] || fail_now "the stack is not up (no $RUN_DIR/build-dir)"
BUILD=$(cat "$RUN_DIR/build-dir")
LOADGEN=${ORDERS_LOADGEN:-$BUILD/tests/orders-loadgen}
[ -x "$LOADGEN" ] || fail_now "no orders-loadgen at $LOADGEN (build the tests, or set ORDERS_LOADGEN)"

work=$(mktemp -d)
rid=$(date +%s)-$$
lg_pid=
t0=$SECONDS

elapsed() { printf '%3ds' $((SECONDS - t0)); }
say_t() { note "$(elapsed) $*"; }

# processed_in LOG LINE: how many messages a consumer logged as processed in
# LOG after its line LINE.
processed_in() {
	tail -n +"$(($2 + 1))" "$1" | grep -c '"msg":"message processed"' || true
}

psql_q() {
	psql -X -q -At -v ON_ERROR_STOP=1 -d "$ORDERS_PG_DSN" "$@"
}

# ---------------------------------------------------------------- recovery

consumer_ready_url() {
	printf 'http://127.0.0.1:%s/readyz\n' "${DAEMON_METRICS_PORT[$1]}"
}

# wait_ready SECONDS: the API's and every stack consumer's /readyz answer 200.
wait_ready() {
	local deadline=$((SECONDS + $1)) name url waiting
	while :; do
		waiting=()
		for name in "${DAEMONS[@]}"; do
			if [ "$name" = orders-api ]; then url=$API/readyz; else url=$(consumer_ready_url "$name"); fi
			http_ok "$url" || waiting+=("$name")
		done
		[ ${#waiting[@]} -gt 0 ] || return 0
		if [ $SECONDS -ge $deadline ]; then
			printf '%s: not ready after %d s: %s\n' "$SCRIPT_NAME" "$1" "${waiting[*]}" >&2
			return 1
		fi
		sleep 0.5
	done
}

# stop_loadgen: stop an orders-loadgen still running (for the EXIT trap).
stop_loadgen() {
	if [ -n "$lg_pid" ] && kill -0 "$lg_pid" 2>/dev/null; then
		kill "$lg_pid" 2>/dev/null || true
		wait "$lg_pid" 2>/dev/null || true
	fi
}

# shellcheck disable=SC2120 # arguments are optional
# restore_stack [SERVICE...]: start those services and every daemon that is
# not running, and wait until the stack is ready. Goes on after a failure;
# returns 1 if anything failed.
restore_stack() {
	local rc=0 svc name
	for svc in "$@"; do
		if ! "$SERVICES_SH" status "$svc" >/dev/null 2>&1; then
			note "restore: starting $svc"
			"$SERVICES_SH" start "$svc" || rc=1
		fi
	done
	for name in "${DAEMONS[@]}"; do
		if [ -z "$(daemon_pid "$name")" ]; then
			note "restore: $name is not running; starting it"
			"$DAEMON_SH" start "$name" || rc=1
		fi
	done
	if ! wait_ready 60; then
		printf '%s: FAIL: the stack is not healthy after the test\n' "$SCRIPT_NAME" >&2
		rc=1
	fi
	return $rc
}

# ------------------------------------------------------------------- setup

declare -A initial=()
skus=()
# put_sku SKU STOCK PRICE LABEL: create the product (named "LABEL SKU")
# and note its initial stock.
put_sku() {
	local body code
	body=$(printf '{"name":"%s %s","price_cents":%d,"currency":"USD","stock":%d}' "$4" "$1" "$3" "$2")
	code=$(curl -s -o "$work/put.json" -w '%{http_code}' --max-time 10 -X PUT \
		-H 'Authorization: Bearer dev-admin' -H 'Content-Type: application/json' \
		-d "$body" "$API/v1/products/$1") || code=000
	[ "$code" = 201 ] || fail_now "PUT /v1/products/$1 answered $code: $(cat "$work/put.json" 2>/dev/null)"
	initial[$1]=$(psql_q -c "SELECT stock FROM products WHERE sku = '$1'")
	[ "${initial[$1]}" = "$2" ] || fail_now "SKU $1: stock in the database is '${initial[$1]}', expected $2"
	skus+=("$1")
}

# put_skus LABEL NAME:STOCK:WEIGHT...: put_sku $prefix-NAME with STOCK for
# each, priced 5.00, 7.50, 10.00, ...; LOADGEN_SKUS is orders-loadgen's -s
# argument for them, each bought by its WEIGHT.
put_skus() {
	local label=$1 i=0 spec name stock weight stocks=()
	shift
	LOADGEN_SKUS=
	for spec in "$@"; do
		IFS=: read -r name stock weight <<<"$spec"
		put_sku "$prefix-$name" "$stock" $((500 + 250 * i)) "$label"
		LOADGEN_SKUS+=${LOADGEN_SKUS:+,}$prefix-$name:$weight
		stocks+=("$stock")
		i=$((i + 1))
	done
	note "SKUs ${skus[*]} with stock ${stocks[*]}"
}

# checkout_json SKU CVC: a checkout body of one SKU with an approving card.
checkout_json() {
	printf '{"items":[{"sku":"%s","quantity":1}],"currency":"USD","customer":{"id":"probe","email":"probe@example.com"},"shipping_address":{"name":"Probe","line1":"1 Main St","city":"Springfield","postal_code":"12345","country":"US"},"payment":{"card":{"number":"4242424242424242","exp_month":12,"exp_year":2030,"cvc":"%s"}}}' "$1" "$2"
}

# rmq_ctl ARGS...: rabbitmqctl against the stack's node, or RMQ_CTL_NODE.
RMQ_CTL_NODE=
rmq_ctl() {
	"$SERVICES_SH" ctl ${RMQ_CTL_NODE:+"$RMQ_CTL_NODE"} "$@"
}

# Dead-lettered messages so far (other tests may park poison on purpose).
dlq_counts() {
	local out now last='' tries=0
	# A quorum queue's count is refreshed on a tick (1 s in the local
	# stack), so one reading can still show what an earlier test left a
	# moment ago: read until two readings a tick and a half apart agree.
	while :; do
		out=$(rmq_ctl -q list_queues name messages 2>&1) ||
			fail_now "cannot list RabbitMQ's queues: $out"
		now=$(printf '%s\n' "$out" | awk '$1 ~ /\.dlq$/ { print $1 "=" $2 }' | sort | tr '\n' ' ')
		if [ "$now" = "$last" ] || [ $tries -ge 10 ]; then
			printf '%s\n' "$now"
			return 0
		fi
		last=$now tries=$((tries + 1))
		sleep 1.5
	done
}

# ---------------------------------------------------------- orders-loadgen

# run_loadgen TAG ARGS...: orders-loadgen in the background, with keys
# $prefix-TAG-..., results in $work/TAG.tsv and its output in $work/TAG.log.
run_loadgen() {
	local tag=$1
	shift
	"$LOADGEN" -k "$prefix-$tag" -o "$work/$tag.tsv" "$@" >"$work/$tag.log" 2>&1 &
	lg_pid=$!
}

# wait_loadgen: wait for it; its exit status in LG_RC.
wait_loadgen() {
	LG_RC=0
	wait "$lg_pid" || LG_RC=$?
	lg_pid=
}

# ------------------------------------------------------------------ checks

# run_preamble [BURST FILE]...: SQL for the temporary tables the checks
# read: lg, every checkout of the orders-loadgen runs given (BURST, a
# number, then the columns of its result FILE; a missing or empty FILE
# adds none), init (sku, initial) from put_sku, and the view run, the
# orders made for this test's Idempotency-Keys ($prefix-...).
run_preamble() {
	local sku
	printf 'CREATE TEMP TABLE lg (burst int, key text, status int, order_id uuid, n503 int,
		last4 text, accepted_ms bigint, first503_ms bigint, last503_ms bigint);\n'
	printf 'CREATE TEMP TABLE lg_in (LIKE lg); ALTER TABLE lg_in DROP COLUMN burst;\n'
	while [ $# -ge 2 ]; do
		if [ -s "$2" ]; then
			printf "\\\\copy lg_in FROM '%s' WITH (FORMAT text, NULL '-')\n" "$2"
			printf 'INSERT INTO lg SELECT %d, * FROM lg_in; TRUNCATE lg_in;\n' "$1"
		fi
		shift 2
	done
	printf 'CREATE TEMP TABLE init (sku text PRIMARY KEY, initial bigint);\n'
	for sku in "${skus[@]}"; do
		printf "INSERT INTO init VALUES ('%s', %s);\n" "$sku" "${initial[$sku]}"
	done
	printf "CREATE TEMP VIEW run AS SELECT o.* FROM orders o WHERE starts_with(o.idempotency_key, '%s-');\n" "$prefix"
}

q() {
	{
		preamble
		printf '%s\n' "$1"
	} | psql_q -F ' | '
}

failures=0
# check WHAT SQL [HINT]: SQL lists what is wrong, one row each; no row is a pass.
check() {
	local what=$1 out n
	out=$(q "$2") || fail_now "query for '$what' failed"
	if [ -z "$out" ]; then
		note "ok: $what"
		return 0
	fi
	failures=$((failures + 1))
	n=$(printf '%s\n' "$out" | wc -l)
	printf '%s: FAIL: %s: %d row(s)%s\n' "$SCRIPT_NAME" "$what" "$n" "${3:+ ($3)}" >&2
	printf '%s\n' "$out" | head -n 20 | sed 's/^/    /' >&2
	[ "$n" -le 20 ] || printf '    ... and %d more\n' $((n - 20)) >&2
}
fail_later() {
	failures=$((failures + 1))
	printf '%s: FAIL: %s\n' "$SCRIPT_NAME" "$*" >&2
}

# wait_final SECONDS [COND]: wait until every order a 202 in lg named (of
# the rows meeting COND on "lg l", e.g. "l.burst = 2") is final; after
# SECONDS, name the first stuck ones and fail the test. FINAL_AFTER_S is
# how long it took.
wait_final() {
	local limit=$1 from=" FROM lg l LEFT JOIN orders o USING (order_id)
		WHERE l.status = 202 AND (${2:-true}) AND (o.order_id IS NULL OR o.status NOT IN ($FINAL))"
	local start=$SECONDS next=$((SECONDS + 10)) left
	while :; do
		left=$(q "SELECT count(*)$from") || left='?'
		[ "$left" != 0 ] || break
		if [ $((SECONDS - start)) -ge "$limit" ]; then
			printf '%s: FAIL: %s order(s) not final %d s after the burst; the first ones:\n' \
				"$SCRIPT_NAME" "$left" "$limit" >&2
			q "SELECT l.key, l.order_id, coalesce(o.status, 'MISSING'), o.updated_at$from
				ORDER BY l.key LIMIT 20" | sed 's/^/    /' >&2
			rmq_ctl -q list_queues name messages_ready messages_unacknowledged consumers >&2 || true
			fail_now "orders stuck"
		fi
		if [ $SECONDS -ge $next ]; then
			say_t "$left order(s) not final yet"
			next=$((SECONDS + 10))
		fi
		sleep 0.5
	done
	FINAL_AFTER_S=$((SECONDS - start))
}

# check_orders [COND [LABEL]]: of the checkouts in lg (those meeting COND on
# "lg l"; LABEL prefixes the checks' names), every 202 names an order id,
# no two the same, each order carries the Idempotency-Key it was made for
# and has exactly one finance event, of its status's type.
# shellcheck disable=SC2120 # arguments are optional
check_orders() {
	local cond=${1:-true} label=${2:+$2: }
	check "${label}every 202 names an order id" \
		"SELECT l.key FROM lg l WHERE l.status = 202 AND l.order_id IS NULL AND ($cond) ORDER BY 1"
	check "${label}no two checkouts got the same order id" \
		"SELECT l.order_id, string_agg(l.key, ',') FROM lg l WHERE l.status = 202 AND ($cond)
		 GROUP BY 1 HAVING count(*) > 1"
	check "${label}each order carries the Idempotency-Key it was made for" \
		"SELECT l.key, o.order_id, o.idempotency_key FROM lg l JOIN orders o USING (order_id)
		 WHERE o.idempotency_key <> l.key AND ($cond)"
	check "${label}exactly one event per order, of its status's type" \
		"SELECT o.order_id, o.status, count(e.seq), string_agg(e.type, ',') FROM lg l
		 JOIN orders o USING (order_id) LEFT JOIN order_events e USING (order_id)
		 WHERE l.status = 202 AND ($cond) GROUP BY 1, 2
		 HAVING count(e.seq) <> 1 OR bool_or(e.type IS DISTINCT FROM 'order.' || o.status)"
}

# check_stock [LABEL]: for every SKU of init, initial stock = stock +
# committed reservations, reserved = held reservations = 0, stock >= 0.
# shellcheck disable=SC2120 # arguments are optional
check_stock() {
	check "${1:+$1: }stock equation per SKU: initial = stock + committed, reserved = held = 0, stock >= 0" \
		"SELECT i.sku, 'initial ' || i.initial, 'stock ' || p.stock, 'committed ' || coalesce(c.q, 0),
		        'reserved ' || p.reserved, 'held ' || coalesce(h.q, 0)
		 FROM init i JOIN products p USING (sku)
		 LEFT JOIN (SELECT sku, sum(quantity) q FROM reservations WHERE state = 'committed' GROUP BY 1) c USING (sku)
		 LEFT JOIN (SELECT sku, sum(quantity) q FROM reservations WHERE state = 'held' GROUP BY 1) h USING (sku)
		 WHERE i.initial <> p.stock + coalesce(c.q, 0) OR p.reserved <> coalesce(h.q, 0)
		    OR p.reserved <> 0 OR p.stock < 0"
}

# check_queues SECONDS STEP: nothing was dead-lettered since dlq_before,
# and the work queues empty within SECONDS (looked at every STEP s).
check_queues() {
	local deadline dlq_after depth
	deadline=$((SECONDS + $1))
	while :; do
		depth=$(rmq_ctl -q list_queues name messages 2>/dev/null |
			awk '$1 ~ /^(inventory\.reserve|payment\.authorize|order\.finalize|cart\.persist)$/ { n += $2 } END { print n + 0 }')
		[ "$depth" != 0 ] || break
		if [ $SECONDS -ge $deadline ]; then
			fail_later "$depth message(s) still in the work queues with every order final"
			rmq_ctl -q list_queues name messages_ready messages_unacknowledged consumers >&2 || true
			break
		fi
		sleep "$2"
	done
	dlq_after=$(dlq_counts)
	[ "$dlq_after" = "$dlq_before" ] ||
		fail_later "messages were dead-lettered: before ${dlq_before:-none}, after ${dlq_after:-none}"
}
