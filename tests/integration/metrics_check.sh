#!/usr/bin/env bash
# metrics_check.sh: every daemon's /metrics is clean Prometheus text and holds
# what operators rely on, with sane values.
#
#   1. Traffic: a product is created, a checkout goes through to its final
#      status, a cart is created, read, changed and deleted, an unknown
#      route is asked for.
#   2. GET /metrics from the API and from every consumer's ops port; each
#      must pass `promtool check metrics` without a single complaint (it
#      lints too: HELP on every family, _total on counters only, base
#      units).
#   3. The families the README's metrics table promises, each with its type,
#      and values that fit the traffic: checkouts accepted and confirm
#      latencies counted, requests labelled with route patterns (never an
#      id; unknown paths as "unmatched"), every consumer's processed count,
#      processing time and batch sizes, the ready and consumer counts of all
#      eight queues (each work queue and its <queue>.dlq) with a consumer on
#      every work queue, the build, start time, memory and CPU of each process.
#   4. RabbitMQ's own exporter (the one source of the unacknowledged count,
#      which AMQP does not give the daemons) shows it for all eight queues.
#
# Run by ctest (ORDERS_SOURCE_DIR = repository root, .local/env exported)
# while the stack is up. Needs promtool (Debian package prometheus).
set -euo pipefail

# shellcheck disable=SC2034 # read by lib/stack.bash and deploy/local/lib.sh
SCRIPT_NAME=metrics_check
# shellcheck source-path=SCRIPTDIR source=lib/stack.bash
. "$(dirname "${BASH_SOURCE[0]}")/lib/stack.bash"
trap 'rm -rf "$work"' EXIT

PROMTOOL=${PROMTOOL:-promtool}
command -v "$PROMTOOL" >/dev/null ||
	fail_now "no promtool (Debian package prometheus; deploy/local/install.sh installs it)"
# How long the consumers may take to process the traffic.
SETTLE_S=${METRICS_SETTLE_S:-90}

QUEUES=(inventory.reserve payment.authorize order.finalize cart.persist)
STAT_QUEUES=("${QUEUES[@]}" inventory.reserve.dlq payment.authorize.dlq order.finalize.dlq
	cart.persist.dlq)
CONSUMERS=(inventory payment order cart)

# ---------------------------------------------------------------- helpers

# api METHOD PATH [BODY [HEADER...]]: the status code; the body in $work/out.
api() {
	local method=$1 path=$2 body=${3:-} args=()
	shift $(($# < 3 ? $# : 3))
	for h in "$@"; do args+=(-H "$h"); done
	[ -z "$body" ] || args+=(-H 'Content-Type: application/json' -d "$body")
	curl -s -o "$work/out" -w '%{http_code}' --max-time 15 -X "$method" \
		-H 'Authorization: Bearer dev-client' "${args[@]}" "$API$path" || echo 000
}

# json_field NAME: a top-level string member of $work/out.
json_field() {
	sed -n "s/.*\"$1\":\"\\([^\"]*\\)\".*/\\1/p" "$work/out" | head -n 1
}

# scrape URL FILE: GET URL into FILE, failing the test when it does not answer.
scrape() {
	curl -fsS --max-time 10 -o "$2" "$1" || fail_now "GET $1 failed"
}

# value FILE SERIES: the value of the sample SERIES (name and labels exactly
# as rendered), or nothing.
value() {
	awk -v k="$2" 'index($0, k " ") == 1 { print $NF; exit }' "$1"
}

# expect WHAT FILE SERIES AWK-CONDITION: the sample exists and its value v
# fits the condition (e.g. "v >= 1").
expect() {
	local v
	v=$(value "$2" "$3")
	if [ -z "$v" ]; then
		fail_later "$1: no sample $3"
	elif ! awk -v v="$v" "BEGIN { exit !($4) }"; then
		fail_later "$1: $3 is $v, expected $4"
	fi
}

# expect_types WHAT FILE NAME:TYPE...: each family is declared with its type and HELP.
expect_types() {
	local what=$1 file=$2 nt
	shift 2
	for nt in "$@"; do
		grep -qx "# TYPE ${nt%%:*} ${nt#*:}" "$file" || fail_later "$what: no family ${nt%%:*} of type ${nt#*:}"
		grep -q "^# HELP ${nt%%:*} ." "$file" || fail_later "$what: ${nt%%:*} has no HELP"
	done
}

# lint WHAT FILE: promtool has nothing to say about it.
lint() {
	local out rc=0
	out=$("$PROMTOOL" check metrics <"$2" 2>&1) || rc=$?
	if [ $rc -ne 0 ] || [ -n "$out" ]; then
		fail_later "$1: promtool check metrics (status $rc):"
		printf '%s\n' "$out" | head -n 30 | sed 's/^/    /' >&2
	fi
}

# common WHAT FILE: what every process shows.
common() {
	local now
	now=$(date +%s)
	expect_types "$1" "$2" orders_queue_messages_ready:gauge orders_queue_consumers:gauge \
		orders_build_info:gauge process_start_time_seconds:gauge \
		process_resident_memory_bytes:gauge process_cpu_seconds_total:counter
	for q in "${STAT_QUEUES[@]}"; do
		expect "$1" "$2" "orders_queue_messages_ready{queue=\"$q\"}" 'v >= 0'
		expect "$1" "$2" "orders_queue_consumers{queue=\"$q\"}" 'v >= 0'
	done
	for q in "${QUEUES[@]}"; do
		expect "$1" "$2" "orders_queue_consumers{queue=\"$q\"}" 'v >= 1'
	done
	grep -Eq '^orders_build_info\{version="[^"]+"\} 1$' "$2" ||
		fail_later "$1: no orders_build_info{version=\"...\"} 1"
	expect "$1" "$2" process_start_time_seconds "v > 1600000000 && v <= $now + 5"
	expect "$1" "$2" process_resident_memory_bytes 'v >= 1048576'
	expect "$1" "$2" process_cpu_seconds_total 'v > 0'
}

# ---------------------------------------------------------------- traffic

sku=MC-$rid
put_sku "$sku" 10 250 metrics
code=$(api POST /v1/checkouts "$(checkout_json "$sku" 123)" "Idempotency-Key: mc-$rid")
[ "$code" = 202 ] || fail_now "POST /v1/checkouts answered $code: $(cat "$work/out")"
order_id=$(json_field order_id)
[ -n "$order_id" ] || fail_now "no order_id in $(cat "$work/out")"
deadline=$((SECONDS + SETTLE_S))
while :; do
	code=$(api GET "/v1/orders/$order_id")
	[ "$code" = 200 ] || fail_now "GET /v1/orders/$order_id answered $code"
	status=$(json_field status)
	case $status in confirmed | rejected | payment_failed | expired) break ;; esac
	[ $SECONDS -lt $deadline ] || fail_now "order $order_id still '$status' after $SETTLE_S s"
	sleep 0.5
done
note "order $order_id is $status"

code=$(api POST /v1/carts "{\"customer_id\":\"mc-$rid\",\"currency\":\"USD\",\"items\":[{\"sku\":\"$sku\",\"quantity\":1}]}")
[ "$code" = 201 ] || fail_now "POST /v1/carts answered $code: $(cat "$work/out")"
cart_id=$(json_field cart_id)
[ -n "$cart_id" ] || fail_now "no cart_id in $(cat "$work/out")"
code=$(api GET "/v1/carts/$cart_id")
[ "$code" = 200 ] || fail_now "GET /v1/carts/$cart_id answered $code"
code=$(api PUT "/v1/carts/$cart_id" "{\"items\":[{\"sku\":\"$sku\",\"quantity\":2}]}")
[ "$code" = 200 ] || fail_now "PUT /v1/carts/$cart_id answered $code: $(cat "$work/out")"
code=$(api DELETE "/v1/carts/$cart_id")
[ "$code" = 204 ] || fail_now "DELETE /v1/carts/$cart_id answered $code"
code=$(api GET "/v1/no-such-route/$rid")
[ "$code" = 404 ] || fail_now "GET /v1/no-such-route answered $code"

# -------------------------------------------------------------- consumers

# Every consumer has processed something of the traffic by now, or soon (the
# cart consumer gets the cart's changes a moment after they were answered).
for c in "${CONSUMERS[@]}"; do
	url=http://127.0.0.1:${DAEMON_METRICS_PORT[orders-$c]}/metrics
	file=$work/$c.prom
	while :; do
		scrape "$url" "$file"
		v=$(value "$file" "orders_messages_total{consumer=\"$c\",outcome=\"processed\"}")
		[ "${v:-0}" = 0 ] || break
		[ $SECONDS -lt $deadline ] || break
		sleep 1
	done
	lint "orders-$c" "$file"
	expect_types "orders-$c" "$file" orders_messages_total:counter \
		orders_message_processing_seconds:histogram orders_message_redeliveries_total:counter \
		orders_messages_dead_lettered_total:counter orders_consumer_batch_size:histogram
	common "orders-$c" "$file"
	expect "orders-$c" "$file" "orders_messages_total{consumer=\"$c\",outcome=\"processed\"}" 'v >= 1'
	for outcome in replayed poison retried; do
		expect "orders-$c" "$file" "orders_messages_total{consumer=\"$c\",outcome=\"$outcome\"}" 'v >= 0'
	done
	expect "orders-$c" "$file" "orders_message_processing_seconds_count{consumer=\"$c\"}" 'v >= 1'
	expect "orders-$c" "$file" "orders_message_processing_seconds_bucket{consumer=\"$c\",le=\"+Inf\"}" 'v >= 1'
	expect "orders-$c" "$file" "orders_consumer_batch_size_count{consumer=\"$c\"}" 'v >= 1'
	expect "orders-$c" "$file" "orders_message_redeliveries_total{consumer=\"$c\"}" 'v >= 0'
	for reason in rejected delivery_limit; do
		expect "orders-$c" "$file" "orders_messages_dead_lettered_total{consumer=\"$c\",reason=\"$reason\"}" 'v >= 0'
	done
	note "orders-$c: /metrics checked"
done

# -------------------------------------------------------------------- API

file=$work/api.prom
scrape "$API/metrics" "$file"
lint orders-api "$file"
expect_types orders-api "$file" orders_http_requests_total:counter \
	orders_http_request_duration_seconds:histogram orders_checkouts_accepted_total:counter \
	orders_publish_confirm_seconds:histogram
common orders-api "$file"
expect orders-api "$file" orders_checkouts_accepted_total 'v >= 1'
expect orders-api "$file" orders_publish_confirm_seconds_count 'v >= 1'
for rs in '/v1/products/{sku}:201' '/v1/checkouts:202' '/v1/orders/{order_id}:200' \
	'/v1/carts:201' '/v1/carts/{cart_id}:200' '/v1/carts/{cart_id}:204' 'unmatched:404'; do
	labels="route=\"${rs%:*}\",status=\"${rs##*:}\""
	expect orders-api "$file" "orders_http_requests_total{$labels}" 'v >= 1'
	expect orders-api "$file" "orders_http_request_duration_seconds_count{$labels}" 'v >= 1'
done
# Route labels are patterns: path segments of lower-case words and {params}.
bad=$(grep -o 'route="[^"]*"' "$file" | sort -u |
	grep -Ev '^route="(unmatched|(/([a-z0-9-]+|\{[a-z_]+\}))+)"$' || true)
[ -z "$bad" ] || fail_later "orders-api: route labels that are no route pattern: $bad"
# No id of this run's traffic may have become a label anywhere.
for f in "$work"/*.prom; do
	for id in "$order_id" "$cart_id" "$sku" "$rid"; do
		! grep -qF "$id" "$f" || fail_later "$(basename "$f" .prom): /metrics holds the id $id"
	done
done
note "orders-api: /metrics checked"

# ---------------------------------------------------------------- RabbitMQ

file=$work/rabbitmq.txt
scrape "http://127.0.0.1:$RABBIT_PROM_PORT/metrics/detailed?family=queue_coarse_metrics" "$file"
for q in "${STAT_QUEUES[@]}"; do
	expect rabbitmq "$file" "rabbitmq_detailed_queue_messages_unacked{vhost=\"/\",queue=\"$q\"}" 'v >= 0'
done

[ "$failures" -eq 0 ] || fail_now "$failures check(s) failed"
note "ok: every /metrics is clean and complete"
