# shellcheck shell=bash
# lib.sh: helpers the benchmark scripts share (bench/run.sh, bench/drain.sh).
# Sourced after deploy/local/lib.sh (LOCAL, REDIS_PORT, pidfile_pid), with
# .local/env loaded, ORDERCTL set to the orderctl binary and API_URL to the API.

psql_q() { psql -X -q -At -v ON_ERROR_STOP=1 -d "$ORDERS_PG_DSN" "$@"; }

# queue_ready QUEUE: ready messages of a work queue (orderctl, an AMQP passive declare).
queue_ready() { "$ORDERCTL" queues | awk -v q="$1" '$1 == q { print $2 }'; }

# stock_products LIST LABEL: create or update every SKU of the
# comma-separated LIST at $API_URL, named "LABEL SKU", USD 15.00, with a
# stock no run can exhaust.
stock_products() {
	local sku code
	for sku in ${1//,/ }; do
		code=$(curl -s -o /dev/null -w '%{http_code}' -X PUT -H 'Authorization: Bearer dev-admin' \
			-H 'Content-Type: application/json' \
			-d "{\"name\":\"$2 $sku\",\"price_cents\":1500,\"currency\":\"USD\",\"stock\":1000000000}" \
			"$API_URL/v1/products/$sku")
		case $code in 200 | 201) ;; *) die "PUT /v1/products/$sku answered $code" ;; esac
	done
}

# forget_redis_keys DIR: drop the idempotency keys and pending-order
# snapshots of the orders every DIR/*.ids file lists (an --ids-out file of
# orders-bench) from Redis (kept for days otherwise: a few hundred thousand
# keys make the next test's FLUSHALL slow). The client id is "key_" and the
# first 12 hex digits of the API key's BLAKE2b-256 digest (README, API keys).
forget_redis_keys() {
	local client f
	client=key_$(printf %s dev-client | b2sum -l 256 | cut -c1-12)
	for f in "$1"/*.ids; do
		[ -s "$f" ] || continue
		awk -v c="$client" '{ print "idem:" c ":" $1; print "order:" $2 }' "$f"
	done | xargs -r -n 500 redis-cli -h 127.0.0.1 -p "$REDIS_PORT" UNLINK >/dev/null
}

# ticks PID: utime+stime of a process in clock ticks (and of its reaped
# children with ALL=1: a postgres backend that ended counts in the postmaster).
ticks() {
	local stat rest
	stat=$(cat "/proc/$1/stat" 2>/dev/null) || {
		echo 0
		return
	}
	rest=${stat##*) }
	# shellcheck disable=SC2086 # split the fields on purpose
	set -- $rest
	if [ "${ALL:-0}" = 1 ]; then echo $((${12} + ${13} + ${14} + ${15})); else echo $((${12} + ${13})); fi
}

# postgres_ticks: the postmaster with its reaped children, and every live child.
postgres_ticks() {
	local pm sum pid
	pm=$(pidfile_pid "$LOCAL/pg/postmaster.pid")
	sum=$(ALL=1 ticks "$pm")
	for pid in $(pgrep -P "$pm" || true); do
		sum=$((sum + $(ticks "$pid")))
	done
	echo "$sum"
}
