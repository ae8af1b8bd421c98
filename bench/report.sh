#!/usr/bin/env bash
# report.sh: the Markdown report of one `make bench` run, from the JSON that
# bench/run.sh wrote: report.sh RESULT.json COMMANDS.txt GATEWAY_MS > RESULT.md
set -euo pipefail

[ $# -eq 3 ] || {
	echo "usage: $0 RESULT.json COMMANDS.txt GATEWAY_MS" >&2
	exit 2
}
json=$1 commands=$2 gateway_ms=$3

jq -r --arg gw "$gateway_ms" '
def r0: if . == null then "n/a" else round end;
def r1: if . == null then "n/a" else . * 10 | round / 10 end;
def r2: if . == null then "n/a" else . * 100 | round / 100 end;
def ok: if . then "**pass**" else "**FAIL**" end;
def num: if . == null then "n/a" else tostring end;
.targets as $t | .runs as $r |
"# Benchmark of \(.date) on \(.host)",
"",
"Commit `\(.commit)`, measured by `make bench` (bench/run.sh) on \(.machine.nproc) cores (\(.machine.cpu)), \(.machine.memory), kernel \(.machine.kernel). Load average (1, 5, 15 min) at the start \(.machine.load_start), at the end \(.machine.load_end): the machine runs other work too, and every process of the stack, the load generators and nginx share its cores, so the figures are noisy.",
"",
"## Targets",
"",
"| # | target | measured | needed | result |",
"|---|---|---|---|---|",
"| 1 | checkouts answered `202` per second at 1,000 connections vs the bare pipelined-confirm publisher | \($t.t1.api_accepted_per_s | r0)/s vs \($t.t1.publisher_msgs_per_s | r0)/s = **\($t.t1.ratio | r2)** | ≥ 0.8 | \($t.t1.pass | ok) |",
"| 2 | `GET /healthz` vs nginx fixed `204`, same wrk command, 1,000 connections | \($t.t2.api_requests_per_s | r0)/s vs \($t.t2.nginx_requests_per_s | r0)/s = **\($t.t2.ratio | r2)** | ≥ 0.9 | \($t.t2.pass | ok) |",
"| 3 | \($t.t3.connections) keep-alive connections, open loop at \($t.t3.rate | r0) checkouts/s (half of 1) | p99 \($t.t3.p99_ms | r1) ms, socket errors \($t.t3.socket_errors), non-2xx \($t.t3.non_2xx), unsent \($t.t3.unsent), API RSS at most \($t.t3.api_rss_max_mib | r1) MiB | p99 < 100 ms, 0, 0, 0, < 64 MiB | \($t.t3.pass | ok) |",
"| 4 | burst of \($t.t4.burst) checkouts | accepted \($t.t4.accepted), final \($t.t4.final), lost \($t.t4.lost | num), duplicated \($t.t4.duplicated); drain \($t.t4.drain_s | r1) s after the burst, \($t.t4.completed_per_s // 0 | r0) completed/s | all accepted and final, 0 lost, 0 duplicated | \($t.t4.pass | ok) |",
"| 5 | payment backlog of \($t.t5.backlog), gateway \($gw) ms: 4 consumers vs 1 | 1: \($t.t5.one_per_s | r1) payments/s, 4: \($t.t5.four_per_s | r1) payments/s = **\($t.t5.ratio | r2)×** | ≥ 3.5× | \($t.t5.pass | ok) |",
"",
(if (.notes | length) > 0 then "Notes on this run:\n\n" + (.notes | map("- " + .) | join("\n")) + "\n" else empty end),
"Orders accepted in 1 and 3 (followed once orders-inventory ran again): \($t.t1_t3_orders.final) of \($t.t1_t3_orders.orders) final, lost \($t.t1_t3_orders.lost | num), duplicated \($t.t1_t3_orders.duplicated)\(if $t.t1_t3_orders.complete then "" else " (following stopped at its time limit while orders still completed: the rest were not final yet)" end).",
"",
"## 1. Durable accept rate",
"",
"orders-inventory was stopped for this and for 3, so that neither side of the ratio shares the cores with a consumer; the checkouts waited in `inventory.reserve`.",
"",
"| | API (orders-bench, closed loop) | bare publisher (orders-bench-publisher) |",
"|---|---|---|",
"| messages | \($r.t1_api.accepted) checkouts in \($r.t1_api.duration_s | r1) s at \($r.t1_api.connections) connections | \($r.t1_publisher.confirmed) of \($r.t1_publisher.size) bytes (mean of \($r.t1_publisher.size_samples) API messages in `\($r.t1_publisher.size_from)`), \($r.t1_publisher.in_flight) in flight at most |",
"| where | exchange `orders`, key `checkout.requested`, quorum queue `inventory.reserve` | exchange `orders`, key `\($r.t1_publisher.routing_key)`, scratch quorum queue `\($r.t1_publisher.queue)` declared with the work queues'"'"' arguments, deleted afterwards |",
"| rate | **\($r.t1_api.accepted_per_s | r0) accepted/s** | **\($r.t1_publisher.msgs_per_s | r0) confirmed/s** |",
"| errors | non-2xx \($r.t1_api.non_2xx), socket errors \($r.t1_api.socket_errors) | failed \($r.t1_publisher.failed) |",
"| latency | p50 \($r.t1_api.latency_ms.p50 | r1) ms, p95 \($r.t1_api.latency_ms.p95 | r1) ms, p99 \($r.t1_api.latency_ms.p99 | r1) ms, max \($r.t1_api.latency_ms.max | r1) ms | |",
"",
"## 2. HTTP overhead",
"",
"| | requests/s | p50 ms | p99 ms | max ms | errors (connect, read, write, status, timeout) |",
"|---|---|---|---|---|---|",
( [["nginx `204`", $r.t2_nginx], ["orders-api `GET /healthz`", $r.t2_api]][] |
  "| \(.[0]) | \(.[1].requests_per_s | r0) | \(.[1].latency_ms.p50 | r2) | \(.[1].latency_ms.p99 | r2) | \(.[1].latency_ms.max | r1) | \(.[1].errors | [.connect, .read, .write, .status, .timeout] | map(tostring) | join(", ")) |"),
"",
"## 3. 10,000 connections, open loop",
"",
"Each checkout was due at a fixed time (rate \($r.t3.rate | r0)/s over \($r.t3.connections) connections opened beforehand); latency counts from that time, so a stall shows in full.",
"",
"| sent | 202 | non-2xx | socket errors | unsent | p50 ms | p95 ms | p99 ms | max ms | service p99 ms | API RSS before / max |",
"|---|---|---|---|---|---|---|---|---|---|---|",
"| \($r.t3.sent) | \($r.t3.accepted) | \($r.t3.non_2xx) | \($r.t3.socket_errors) | \($r.t3.unsent) | \($r.t3.latency_ms.p50 | r1) | \($r.t3.latency_ms.p95 | r1) | \($r.t3.latency_ms.p99 | r1) | \($r.t3.latency_ms.max | r1) | \($r.t3.service_ms.p99 | r1) | \($t.t3.api_rss_before_mib | r1) / \($t.t3.api_rss_max_mib | r1) MiB |",
"",
"## 4. Burst",
"",
"\($r.t4.sent) checkouts at \($r.t4.connections) connections in \($r.t4.duration_s | r1) s (\($r.t4.accepted_per_s | r0) accepted/s, non-2xx \($r.t4.non_2xx), socket errors \($r.t4.socket_errors)), every consumer running. " +
  (if $r.t4.follow then "Followed in PostgreSQL: \($r.t4.follow.final) final (\($r.t4.follow.statuses | to_entries | map("\(.key) \(.value)") | join(", "))), \($r.t4.follow.not_final) not final\(if $r.t4.follow.complete then "" else " when following stopped at its limit" end); the last order was final \($r.t4.follow.drain_s | r1) s after the last checkout was answered, \($r.t4.follow.span_s | r1) s after the first was accepted: **\($r.t4.follow.completed_per_s | r0) completed orders/s**. Orders with two final events: \($r.t4.follow.dup_events); final without an event: \($r.t4.follow.final_without_event)." else "Not followed." end),
"",
"CPU time (user + system, from `/proc/<pid>/stat`) from before the burst until following ended, per final order; PostgreSQL is the postmaster with every backend (live, or ended and reaped), RabbitMQ the `beam.smp` process:",
"",
"| process | CPU s | µs per order |",
"|---|---|---|",
( $t.t4.cpu[] | "| \(.process) | \(.cpu_s | r1) | \(.us_per_order | r0) |" ),
"| all | \($t.t4.cpu | map(.cpu_s) | add | r1) | \($t.t4.cpu | map(.us_per_order) | add | r0) |",
"",
"## 5. Scaling out payment consumers",
"",
"orders-payment stopped; \($t.t5.backlog) checkouts made and reserved, so that `payment.authorize` held their messages; then one consumer (the second time four: the stack'"'"'s and three more) with `ORDERS_GATEWAY_LATENCY_MS=\($gw)`, timed from all of them being ready until every order of the backlog had its payment row. The rate counts every payment they made in that time (messages still queued ahead of the backlog included).",
"",
"| consumers | drain s | payments | payments/s |",
"|---|---|---|---|",
"| 1 | \($t.t5.one_consumer_s | r1) | \($t.t5.one_paid) | \($t.t5.one_per_s | r1) |",
"| 4 | \($t.t5.four_consumers_s | r1) | \($t.t5.four_paid) | \($t.t5.four_per_s | r1) |",
"",
"## Machine and versions",
"",
"| | |",
"|---|---|",
"| cores (nproc) | \(.machine.nproc) |",
"| CPU | \(.machine.cpu) |",
"| memory | \(.machine.memory) |",
"| kernel | \(.machine.kernel) |",
"| RabbitMQ | \(.versions.rabbitmq) |",
"| PostgreSQL | \(.versions.postgresql) |",
"| Redis | \(.versions.redis) |",
"| libmicrohttpd | \(.versions.libmicrohttpd) |",
"| nginx | \(.versions.nginx) |",
"| wrk | \(.versions.wrk) |",
"| commit | `\(.commit)` |",
""
' "$json"

echo "## Commands"
echo
echo "As run by bench/run.sh (from the repository root, with the stack's .local/env exported):"
echo
echo '```sh'
cat "$commands"
echo '```'
