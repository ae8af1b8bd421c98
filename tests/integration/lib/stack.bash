# shellcheck shell=bash disable=SC2034,SC2154 # used and set by the scripts that source this
# stack.bash: what the stack-level shell tests (fault_burst.sh,
# race_consumers.sh) share: the environment of the running stack, logging,
# psql and curl wrappers, waiting for readiness, restoring the stack,
# orders-loadgen and the SQL checks. Sourced, never run: ctest registers
# tests/integration/*.sh only, and this file is neither .sh nor there.
#
# The script sets SCRIPT_NAME (its messages' prefix) before sourcing this
# and, before it runs q or check, defines preamble (the SQL that sets up
# its temporary tables). Sourcing it checks that the stack is up and sets
# ROOT, API, BUILD, LOADGEN, work (a temporary directory), rid, lg_pid,
# t0 and failures.

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

# restore_stack SERVICE...: start those services and every daemon that is
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

# checkout_json SKU CVC: a checkout body of one SKU with an approving card.
checkout_json() {
	printf '{"items":[{"sku":"%s","quantity":1}],"currency":"USD","customer":{"id":"probe","email":"probe@example.com"},"shipping_address":{"name":"Probe","line1":"1 Main St","city":"Springfield","postal_code":"12345","country":"US"},"payment":{"card":{"number":"4242424242424242","exp_month":12,"exp_year":2030,"cvc":"%s"}}}' "$1" "$2"
}

# Dead-lettered messages so far (other tests may park poison on purpose).
dlq_counts() {
	local out
	out=$("$SERVICES_SH" ctl -q list_queues name messages 2>&1) ||
		fail_now "cannot list RabbitMQ's queues: $out"
	printf '%s\n' "$out" | awk '$1 ~ /\.dlq$/ { print $1 "=" $2 }' | sort | tr '\n' ' '
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

# check_queues SECONDS STEP: nothing was dead-lettered since dlq_before,
# and the work queues empty within SECONDS (looked at every STEP s).
check_queues() {
	local deadline dlq_after depth
	dlq_after=$(dlq_counts)
	[ "$dlq_after" = "$dlq_before" ] ||
		fail_later "messages were dead-lettered: before ${dlq_before:-none}, after ${dlq_after:-none}"
	deadline=$((SECONDS + $1))
	while :; do
		depth=$("$SERVICES_SH" ctl -q list_queues name messages 2>/dev/null |
			awk '$1 ~ /^(inventory\.reserve|payment\.authorize|order\.finalize|cart\.persist)$/ { n += $2 } END { print n + 0 }')
		[ "$depth" != 0 ] || break
		if [ $SECONDS -ge $deadline ]; then
			fail_later "$depth message(s) still in the work queues with every order final"
			"$SERVICES_SH" ctl -q list_queues name messages_ready messages_unacknowledged consumers >&2 || true
			break
		fi
		sleep "$2"
	done
}
