#!/usr/bin/env bash
# broker_failover.sh: the API and the consumers on a three-node RabbitMQ
# cluster, and the node they use stopped in the middle of a burst.
#
#   1. `services.sh start cluster`: three nodes on loopback beside the
#      stack's own single node (names, ports and state in deploy/local/
#      lib.sh; nodes 2 and 3 join node 1). The stack's five daemons stop
#      and the same five start from its build, on its ports, with
#      ORDERS_AMQP_URL naming the three nodes, node 1 first. They declare
#      the topology when they connect: the four work queues and their
#      .dlq are quorum queues with a member on every node (checked).
#   2. A burst of FAILOVER_CHECKOUTS (1200) checkouts at FAILOVER_RATE
#      (40/s) over four SKUs, two of which sell out. FAILOVER_STOP_AT (8)
#      seconds in, the node that leads most work queues is stopped (its
#      orderly shutdown, SIGTERM): node 1, as every daemon connected there
#      first and declared the queues through it.
#   3. Then:
#      (a) every checkout got a 202 in the end (orders-loadgen retries a
#          503 with the same Idempotency-Key and body until it gets one),
#          every 202 names an order that ends confirmed, rejected or
#          payment_failed (none expired), no two the same, each with one
#          finance event; no order for a key that got no 202;
#      (b) per SKU: initial stock = stock + committed reservations,
#          reserved = held = 0, stock >= 0;
#      (c) the failover happened: the stop came while the burst ran,
#          checkouts were accepted after it, every daemon's publisher and
#          every consumer's queue connection connected again, to a
#          surviving node, and every queue has a leader on one, with two
#          of its three members online; the consumers logged the node's
#          orderly close (320 CONNECTION_FORCED) as a warning, and no daemon
#          logged an error since the burst began;
#      (d) nothing was dead-lettered and the work queues drained.
#   It prints the node stopped, what it held, how long the stop took, the
#   503 window (the first to the last 503 the client saw), and the counts.
#
# The EXIT trap, also when the test fails, stops the test's daemons and the
# cluster and starts the stack's own daemons again on the stack's node:
# the tests after this one find the stack as it was. The cluster's logs
# stay in .local/rabbitmq-cluster/ until the next cluster start.
#
# Run by ctest (ORDERS_SOURCE_DIR = repository root, .local/env exported)
# while the stack is up; ORDERS_LOADGEN names the orders-loadgen binary
# (default: the tests/ directory of the build the stack runs).
set -euo pipefail

# shellcheck disable=SC2034 # read by lib/stack.bash and deploy/local/lib.sh
SCRIPT_NAME=broker_failover
# shellcheck source-path=SCRIPTDIR source=lib/stack.bash
. "$(dirname "${BASH_SOURCE[0]}")/lib/stack.bash"
# shellcheck source-path=SCRIPTDIR source=lib/extra.bash
. "$(dirname "${BASH_SOURCE[0]}")/lib/extra.bash"

CHECKOUTS=${FAILOVER_CHECKOUTS:-1200}
RATE=${FAILOVER_RATE:-40}
STOP_AT=${FAILOVER_STOP_AT:-8}
DRAIN_S=${FAILOVER_DRAIN_S:-120}
prefix=bf-$rid

# The cluster's nodes: AMQP ports and names, node 1 first.
cluster_ports=() cluster_names=()
for k in $(seq "$CLUSTER_SIZE"); do
	cluster_ports+=($((CLUSTER_AMQP_BASE + k - 1)))
	cluster_names+=("$(cluster_node "$k")")
done
amqp_urls=
for port in "${cluster_ports[@]}"; do
	amqp_urls+=${amqp_urls:+,}amqp://guest:guest@127.0.0.1:$port/
done
# rabbitmqctl asks a node that stays up: the last one.
RMQ_CTL_NODE=rabbitmq-$CLUSTER_SIZE

# ---------------------------------------------------------------- recovery

# restore: whatever happened, stop what this test started and leave the
# stack as the next test expects it.
restore() {
	local rc=$?
	trap - EXIT
	stop_loadgen
	stop_extras
	"$SERVICES_SH" stop cluster || rc=1
	restore_stack || rc=1
	rm -rf "$work"
	exit $rc
}
trap restore EXIT

# ------------------------------------------------------------------- setup

wait_ready 30 || fail_now "the stack is not ready before the test"
say_t "starting the cluster: ${cluster_names[*]} on ports ${cluster_ports[*]}"
"$SERVICES_SH" start cluster
say_t "the cluster runs"

say_t "moving the daemons to the cluster"
for name in "${DAEMONS[@]}"; do
	"$DAEMON_SH" stop "$name" >/dev/null
done
# The stack's own ports, so that wait_ready and the loadgen find them.
# Reservations live long enough here that a slow failover cannot expire
# an order: every one must end confirmed, rejected or payment_failed.
for name in "${DAEMONS[@]}"; do
	start_extra "${name#orders-}-failover" "${name#orders-}" "${DAEMON_METRICS_PORT[$name]:-}" \
		ORDERS_AMQP_URL="$amqp_urls" ORDERS_RESERVATION_TTL_S=300
done
wait_extras_ready 60
say_t "the daemons are ready on the cluster"

# queue_table: each work queue and .dlq as name, type, leader, how many
# members it has and how many of them are online; the full listing is
# printed.
queue_table() {
	local out
	out=$(rmq_ctl -q list_queues --no-table-headers name type leader members online 2>&1) ||
		fail_now "cannot list the cluster's queues: $out"
	out=$(awk -F '\t' '$1 ~ /^(inventory\.reserve|payment\.authorize|order\.finalize|cart\.persist)(\.dlq)?$/' <<<"$out")
	printf '%s\n' "$out" | sed 's/^/broker_failover:   /' >&2
	# The members and the online ones are lists: [a@localhost, b@localhost].
	awk -F '\t' '{ print $1, $2, $3, gsub(/@/, "@", $4), gsub(/@/, "@", $5) }' <<<"$out"
}
queues=$(queue_table)
[ "$(grep -c . <<<"$queues")" -eq 8 ] || fail_now "expected the 4 work queues and their .dlq on the cluster"
while read -r qname qtype _ members online; do
	[ "$qtype" = quorum ] || fail_now "queue $qname is $qtype, not quorum"
	if [ "$members" -ne "$CLUSTER_SIZE" ] || [ "$online" -ne "$CLUSTER_SIZE" ]; then
		fail_now "queue $qname has $members members, $online online; expected one on each of the $CLUSTER_SIZE nodes"
	fi
done <<<"$queues"
note "ok: 8 quorum queues, each with a member on all $CLUSTER_SIZE nodes"

# Two SKUs that sell out (so 'rejected' happens), two that never do.
put_skus "Broker failover" S1:200:1 S2:15:1 L1:1000000:4 L2:1000000:4
dlq_before=$(dlq_counts)

# The node that leads most work queues; the first of the list on a tie.
victim=1 most=-1
for k in $(seq "$CLUSTER_SIZE"); do
	n=$(awk -v n="${cluster_names[k - 1]}" '$1 !~ /\.dlq$/ && $3 == n' <<<"$queues" | grep -c . || true)
	if [ "$n" -gt "$most" ]; then victim=$k most=$n; fi
done
victim_node=${cluster_names[victim - 1]}
victim_port=${cluster_ports[victim - 1]}
leads=$(awk -v n="$victim_node" '$3 == n' <<<"$queues" | grep -c . || true)
conns=$(rmq_ctl -q list_connections --no-table-headers port 2>/dev/null | grep -c "^$victim_port\$" || true)
note "$victim_node leads $most of 4 work queues ($leads of all 8 queues) and holds $conns client connections"
[ "$conns" -gt 0 ] || fail_later "no client connection on $victim_node: stopping it fails nobody over"
declare -A mark=()
for name in "${X_NAMES[@]}"; do
	mark[$name]=$(wc -l <"${X_LOG[$name]}")
done

# --------------------------------------------------------------- the burst

run_loadgen lg -n "$CHECKOUTS" -c 32 -r "$RATE" -s "$LOADGEN_SKUS"
burst_start=$SECONDS
say_t "orders-loadgen started (pid $lg_pid): $CHECKOUTS checkouts, 32 threads, $RATE/s"
while [ $((SECONDS - burst_start)) -lt "$STOP_AT" ]; do sleep 0.2; done
kill -0 "$lg_pid" 2>/dev/null || fail_later "the burst was over before the stop (raise FAILOVER_CHECKOUTS)"
say_t "stopping rabbitmq-$victim ($victim_node)"
stop_from_ms=$(date +%s%3N)
"$SERVICES_SH" stop "rabbitmq-$victim" >"$work/stop.log" 2>&1 ||
	fail_now "cannot stop rabbitmq-$victim: $(cat "$work/stop.log")"
stop_to_ms=$(date +%s%3N)
say_t "$victim_node is down"

say_t "waiting for orders-loadgen"
wait_loadgen
burst_s=$((SECONDS - burst_start))
cat "$work/lg.log"
[ -s "$work/lg.tsv" ] || fail_now "orders-loadgen wrote no results (exit $LG_RC)"
[ "$LG_RC" -eq 0 ] || [ "$LG_RC" -eq 3 ] || fail_now "orders-loadgen failed (exit $LG_RC; its output is above)"
say_t "orders-loadgen finished (exit $LG_RC) after $burst_s s"

# ------------------------------------------------------------------ checks

preamble() { run_preamble 1 "$work/lg.tsv"; }
read -r n_rows n_202 n_503 n_with503 first503 last503 n_after < <(q "SELECT count(*),
	count(*) FILTER (WHERE status = 202), coalesce(sum(n503), 0), count(*) FILTER (WHERE n503 > 0),
	coalesce(min(nullif(first503_ms, 0)), 0), coalesce(max(last503_ms), 0),
	count(*) FILTER (WHERE status = 202 AND accepted_ms > $stop_to_ms) FROM lg" | tr '|' ' ')
[ "$n_rows" -eq "$CHECKOUTS" ] || fail_now "loadgen wrote $n_rows result lines, expected $CHECKOUTS"

say_t "waiting up to ${DRAIN_S} s for every order to be final"
wait_final "$DRAIN_S"
say_t "all orders final $FINAL_AFTER_S s after the burst"
q "SELECT status, count(*) FROM run GROUP BY 1 ORDER BY 1" | sed 's/^/broker_failover:   /'

# (a) One final order per 202, nothing else.
check "every checkout got a 202 in the end" \
	"SELECT key, status, n503 FROM lg WHERE status <> 202 ORDER BY key"
check_orders
check "every order ended confirmed, rejected or payment_failed" \
	"SELECT idempotency_key, order_id, status FROM run
	 WHERE status NOT IN ('confirmed', 'rejected', 'payment_failed')"
check "no order for a key that never got a 202" \
	"SELECT r.idempotency_key, r.order_id, r.status FROM run r
	 WHERE r.order_id NOT IN (SELECT order_id FROM lg WHERE status = 202 AND order_id IS NOT NULL)"
read -r sold_out < <(q "SELECT count(*) FROM run WHERE status = 'rejected'")
[ "$sold_out" -gt 0 ] || fail_later "no order was rejected: the small SKUs never sold out"

# (b) Stock.
check_stock

# (c) The failover. Each daemon's log after the mark: its publisher, and a
# consumer's queue connection, connected again, to another node.
[ "$n_after" -gt 0 ] || fail_later "no checkout was accepted after $victim_node stopped"
reconnected=()
for name in "${X_NAMES[@]}"; do
	roles=publisher
	[ "${X_KIND[$name]}" = api ] || roles+=" consumer"
	for role in $roles; do
		port=$(tail -n +"$((mark[$name] + 1))" "${X_LOG[$name]}" |
			jq -R -r --arg r "$role" 'fromjson? | select(.msg == "connected to rabbitmq" and .role == $r) | .port' |
			tail -n 1)
		if [ -z "$port" ]; then
			fail_later "$name: its $role did not connect again after $victim_node stopped"
		elif [ "$port" = "$victim_port" ]; then
			fail_later "$name: its $role connected again to the stopped node's port $port"
		else
			reconnected+=("$name/$role:$port")
		fi
	done
done
note "connected again: ${reconnected[*]}"
# The node's orderly stop closed its connections with 320 CONNECTION_FORCED:
# the consumers note it as a warning with the broker's code and text, and
# no daemon logged an error (nor a line that is not JSON) since the mark.
closed=0
for name in "${X_NAMES[@]}"; do
	log_after=$(tail -n +"$((mark[$name] + 1))" "${X_LOG[$name]}")
	n=$(jq -R -c 'fromjson? | select(.msg == "rabbitmq closed the connection" and .level == "warn"
		and .code == 320 and (.reason | length) > 0)' <<<"$log_after" | grep -c . || true)
	closed=$((closed + n))
	bad=$(jq -R -c 'fromjson? // {level: "not-json"} | select(.level == "error" or .level == "not-json")' \
		<<<"$log_after" | head -n 3)
	[ -z "$bad" ] || fail_later "$name logged this after $victim_node stopped: $bad"
done
[ "$closed" -gt 0 ] || fail_later "no consumer logged the node's orderly close (a warning with code 320)"
note "ok: $closed consumer connection(s) closed by the broker, logged as warnings; no error line"
after=$(queue_table)
while read -r qname _ leader members online; do
	case $leader in
	"$victim_node" | '') fail_later "queue $qname has no leader on a surviving node ('$leader')" ;;
	esac
	if [ "$members" -ne "$CLUSTER_SIZE" ] || [ "$online" -ne $((CLUSTER_SIZE - 1)) ]; then
		fail_later "queue $qname has $members members, $online online; expected $CLUSTER_SIZE and $((CLUSTER_SIZE - 1))"
	fi
done <<<"$after"
note "ok: every queue has its leader on a surviving node, $((CLUSTER_SIZE - 1)) of $CLUSTER_SIZE members online"

# (d) The queues: nothing dead-lettered, everything consumed.
check_queues 30 1

# secs MS: MS milliseconds as seconds with one decimal.
secs() { printf '%d.%d s' $(($1 / 1000)) $((($1 % 1000) / 100)); }
window=none
if [ "$first503" -gt 0 ]; then
	window="$(secs $((last503 - first503))), from $(secs $((first503 - stop_from_ms)))"
	window+=" to $(secs $((last503 - stop_from_ms))) after the stop began"
fi
note "figures: stopped $victim_node (it led $most of 4 work queues, held $conns connections)" \
	"in $(secs $((stop_to_ms - stop_from_ms))); 503 window: $window;" \
	"$n_with503 checkouts saw $n_503 503s, all retried to a 202; $n_202 of $CHECKOUTS accepted," \
	"$n_after after the stop; burst $burst_s s, all final $FINAL_AFTER_S s after it;" \
	"test $((SECONDS - t0)) s so far"
if [ $failures -gt 0 ]; then
	fail_now "$failures check(s) failed (above)"
fi
note "PASS"
