#!/usr/bin/env bash
# tls_api.sh: the API over HTTPS, end to end. A second orders-api of the running stack
# serves HTTPS on 8443+offset with the stack's certificate (.local/tls), publishes to
# RabbitMQ over amqps:// and reads PostgreSQL with sslmode=verify-full; the stack's own
# API and daemons stay as they are. The test holds:
#
#   - start-up: a certificate without its key, a missing file and a key that is not the
#     certificate's each stop the API at once with a line naming the file, and no line
#     shows key material;
#   - protocols: TLS 1.2 and 1.3 are accepted, TLS 1.0 and 1.1 refused (by the server: the
#     same client completes a TLS 1.1 handshake with openssl s_server), a CBC cipher suite
#     refused on TLS 1.2; plain HTTP to the HTTPS port gets no HTTP answer;
#   - service: /healthz (the fast path), a header block near the 4 KiB connection pool
#     answered as over plain HTTP, a checkout answered 202 (suspended until the broker's
#     confirm over amqps) and followed to its final status, a replay of it; the API's
#     PostgreSQL sessions are TLS in pg_stat_ssl; orderctl migrate passes the DSN's TLS
#     parameters to psql and masks its secrets when it fails;
#   - memory: the API's resident memory with 1,000 idle TLS connections (orders-tls-idle),
#     reported per connection and held under 64 KiB each;
#   - the RabbitMQ client: a broker that speaks only TLS 1.1 is refused (orderctl);
#   - orders-healthcheck (the image's HEALTHCHECK) passes against this HTTPS API and the
#     stack's plain one, and fails on the wrong scheme, TLS 1.1 or a server that never answers;
#   - SIGTERM stops the instance cleanly.
#
# Run by ctest while the stack is up (make test); stops what it started on every exit.
set -euo pipefail

SCRIPT_NAME=tls_api
HERE=$(dirname "${BASH_SOURCE[0]}")
# shellcheck source=lib/stack.bash
. "$HERE/lib/stack.bash"

CA=$TLS_DIR/ca.pem
HTTPS_PORT=$((8443 + PORT_OFFSET))
SCRATCH_PORT=$((17682 + PORT_OFFSET))
HTTPS=https://127.0.0.1:$HTTPS_PORT
IDLE=${ORDERS_TLS_IDLE:-$BUILD/tests/orders-tls-idle}
ORDERCTL=${ORDERCTL:-$BUILD/tools/orderctl}
N_IDLE=1000
MAX_CONN_BYTES=$((64 * 1024))
API_LOG=$LOG_DIR/orders-api-tls.log
[ -s "$CA" ] || fail_now "no local CA at $CA (services.sh makes it)"
[ -x "$IDLE" ] || fail_now "no orders-tls-idle at $IDLE"
! port_open "$HTTPS_PORT" || fail_now "port $HTTPS_PORT is taken"

api_pid=
server_pid=
idle_pid=
stop_pid() {
	[ -n "$1" ] || return 0
	kill -TERM "$1" 2>/dev/null || return 0
	wait_gone "$1" 15 || kill -KILL "$1" 2>/dev/null || true
}
cleanup() {
	local rc=$?
	stop_pid "$idle_pid"
	stop_pid "$server_pid"
	stop_pid "$api_pid"
	rm -rf "$work"
	exit $rc
}
trap cleanup EXIT

# The stack's environment and this instance's own settings. ASan's quarantine (freed
# memory kept aside to catch use-after-free) would count every handshake's freed
# buffers as resident: a small one keeps the memory figure about the connections.
# shellcheck disable=SC2030,SC2031 # the subshells are meant to keep these
api_env() {
	# shellcheck source=/dev/null
	. "$ENV_FILE"
	export ORDERS_HTTP_PORT=$HTTPS_PORT
	export ORDERS_TLS_CERT_FILE=$TLS_DIR/server.pem ORDERS_TLS_KEY_FILE=$TLS_DIR/server.key
	export ORDERS_AMQP_URL=$ORDERS_LOCAL_AMQPS_URL ORDERS_AMQP_CA_FILE=$CA
	export ORDERS_PG_DSN="${ORDERS_PG_DSN%%\?*}?sslmode=verify-full&sslrootcert=$CA&application_name=orders-api-tls"
	export ASAN_OPTIONS="${ASAN_OPTIONS:+$ASAN_OPTIONS:}quarantine_size_mb=1"
}

# ---------------------------------------------------------------- start-up

# refused WHAT EXPECT VAR=VALUE...: the API started with these settings exits non-zero
# within 30 s and says EXPECT; nothing it prints is key material.
refused() {
	local what=$1 expect=$2 rc=0
	shift 2
	(
		api_env
		for kv in "$@"; do export "${kv?}"; done
		exec timeout 30 "$BUILD/api/orders-api"
	) >"$work/refused.log" 2>&1 || rc=$?
	[ $rc -ne 0 ] && [ $rc -ne 124 ] || fail_now "$what: the API did not stop at once (status $rc)"
	grep -qF -- "$expect" "$work/refused.log" ||
		fail_now "$what: no line says '$expect': $(tail -n 3 "$work/refused.log")"
	! grep -qF -- "$(sed -n 2p "$TLS_DIR/server.key")" "$work/refused.log" ||
		fail_now "$what: key material in the output"
	! grep -q 'PRIVATE KEY' "$work/refused.log" || fail_now "$what: key material in the output"
	note "ok: $what refused: $(grep -F -- "$expect" "$work/refused.log" | head -n 1 | cut -c1-200)"
}
refused "a certificate without its key" "ORDERS_TLS_KEY_FILE must be set together" \
	ORDERS_TLS_KEY_FILE=
refused "a missing certificate file" "cannot read '$work/missing.pem'" \
	ORDERS_TLS_CERT_FILE="$work/missing.pem"
refused "another certificate's key" "does not belong to the certificate" \
	ORDERS_TLS_KEY_FILE="$TLS_DIR/ca.key"

say_t "starting orders-api with HTTPS on $HTTPS_PORT (amqps, verify-full)"
(
	api_env
	cd "$ROOT"
	exec setsid "$BUILD/api/orders-api"
) >"$API_LOG" 2>&1 </dev/null &
api_pid=$!
deadline=$((SECONDS + 60))
until curl -fsS -o /dev/null --max-time 2 --cacert "$CA" "$HTTPS/readyz" 2>/dev/null; do
	pid_alive "$api_pid" || fail_now "the HTTPS API exited: $(tail -n 5 "$API_LOG")"
	[ $SECONDS -lt $deadline ] || fail_now "the HTTPS API is not ready after 60 s"
	sleep 0.5
done
grep -q '"msg":"listening".*"scheme":"https"' "$API_LOG" || fail_now "no 'listening' line with https"
grep -q '"msg":"connected to rabbitmq".*"tls":"TLSv1\.[23]"' "$API_LOG" ||
	fail_now "the publisher is not connected over TLS 1.2+"
say_t "ready; publisher on amqps"

# --------------------------------------------------------------- protocols

# handshake PORT ARGS...: the protocol version openssl s_client agreed, or nothing.
handshake() {
	local port=$1
	shift
	echo | timeout 10 openssl s_client -brief -connect "127.0.0.1:$port" -CAfile "$CA" \
		-verify_return_error "$@" 2>&1 | sed -n 's/^Protocol version: //p' || true
}
for v in 1_2 1_3; do
	got=$(handshake "$HTTPS_PORT" "-tls$v")
	[ "$got" = "TLSv${v/_/.}" ] || fail_now "TLS ${v/_/.} was not accepted (got '${got:-no handshake}')"
	note "ok: TLS ${v/_/.} accepted"
done
# The client must be able to speak the old versions for their refusal to mean anything.
old=(-cipher 'DEFAULT:@SECLEVEL=0')
openssl s_server -quiet -accept "$SCRATCH_PORT" -cert "$TLS_DIR/server.pem" \
	-key "$TLS_DIR/server.key" -tls1_1 "${old[@]}" </dev/null >/dev/null 2>&1 &
server_pid=$!
for _ in $(seq 50); do
	if port_open "$SCRATCH_PORT"; then break; fi
	sleep 0.1
done
got=$(handshake "$SCRATCH_PORT" -tls1_1 "${old[@]}")
[ "$got" = TLSv1.1 ] || fail_now "control: s_client cannot do TLS 1.1 with s_server (got '$got')"
for v in 1 1_1; do
	got=$(handshake "$HTTPS_PORT" "-tls$v" "${old[@]}")
	[ -z "$got" ] || fail_now "TLS ${v/_/.} was accepted ($got)"
	note "ok: TLS ${v/_/.} refused"
done

# orders-healthcheck, the image's HEALTHCHECK: HTTPS to the API when ORDERS_TLS_CERT_FILE
# is set (TLS 1.2 or later, the certificate not verified), plain HTTP otherwise; a 200 is
# 0, anything else 1, also a server that never answers (within its 2 s).
HC=${ORDERS_HEALTHCHECK:-$BUILD/tools/orders-healthcheck}
[ -x "$HC" ] || fail_now "no orders-healthcheck at $HC"
# hc WANT ENV...: orders-healthcheck readyz with exactly these ORDERS_* settings exits WANT.
hc() {
	local want=$1 rc=0
	shift
	env -u ORDERS_TLS_CERT_FILE -u ORDERS_HEALTH_PORT -u ORDERS_METRICS_PORT -u ORDERS_HTTP_PORT \
		"$@" "$HC" readyz >"$work/hc.log" 2>&1 || rc=$?
	[ "$rc" = "$want" ] || fail_now "orders-healthcheck with $* exited $rc, expected $want: $(cat "$work/hc.log")"
}
hc 0 ORDERS_HTTP_PORT="$HTTPS_PORT" ORDERS_TLS_CERT_FILE="$TLS_DIR/server.pem"
hc 0 ORDERS_HTTP_PORT="$HTTP_PORT"
hc 1 ORDERS_HTTP_PORT="$HTTPS_PORT"
hc 1 ORDERS_HTTP_PORT="$HTTP_PORT" ORDERS_TLS_CERT_FILE="$TLS_DIR/server.pem"
hc 1 ORDERS_HEALTH_PORT="$SCRATCH_PORT" ORDERS_TLS_CERT_FILE="$TLS_DIR/server.pem"
grep -q 'tls handshake failed' "$work/hc.log" || fail_now "orders-healthcheck and TLS 1.1: $(cat "$work/hc.log")"
! curl -fsS -o /dev/null --max-time 5 --tls-max 1.1 --cacert "$CA" "$HTTPS/healthz" 2>/dev/null ||
	fail_now "curl --tls-max 1.1 got an answer"
got=$(handshake "$HTTPS_PORT" -tls1_2 -cipher ECDHE-ECDSA-AES128-SHA)
[ -z "$got" ] || fail_now "a CBC cipher suite was accepted on TLS 1.2"
note "ok: a CBC cipher suite refused on TLS 1.2"

# The RabbitMQ client insists on TLS 1.2+ too.
if ORDERS_AMQP_URL="amqps://guest:guest@127.0.0.1:$SCRATCH_PORT/" ORDERS_AMQP_CA_FILE=$CA \
	timeout 30 "$ORDERCTL" queues >"$work/orderctl.out" 2>&1; then
	fail_now "orderctl connected to a TLS 1.1 server"
fi
grep -q 'tls:' "$work/orderctl.out" || fail_now "orderctl failed for another reason: $(cat "$work/orderctl.out")"
note "ok: the RabbitMQ client refuses TLS 1.1: $(head -n 1 "$work/orderctl.out")"
stop_pid "$server_pid"
server_pid=

# A server that completes the handshake and then says nothing (s_server sends what
# comes on its stdin, and nothing comes).
sleep 30 2>/dev/null | openssl s_server -quiet -accept "$SCRATCH_PORT" -cert "$TLS_DIR/server.pem" \
	-key "$TLS_DIR/server.key" >/dev/null 2>&1 &
server_pid=$!
for _ in $(seq 50); do
	if port_open "$SCRATCH_PORT"; then break; fi
	sleep 0.1
done
start_ms=$(date +%s%3N)
hc 1 ORDERS_HEALTH_PORT="$SCRATCH_PORT" ORDERS_TLS_CERT_FILE="$TLS_DIR/server.pem"
took=$(($(date +%s%3N) - start_ms))
grep -q 'no answer within 2 s' "$work/hc.log" && [ "$took" -lt 4000 ] ||
	fail_now "orders-healthcheck and a silent server: $took ms, $(cat "$work/hc.log")"
note "ok: orders-healthcheck: 200 over HTTPS and over HTTP; plain HTTP to HTTPS, HTTPS to HTTP, TLS 1.1 fail, and a silent server after $took ms"
stop_pid "$server_pid"
server_pid=

code=$(curl -s -o /dev/null -w '%{http_code}' --max-time 5 "http://127.0.0.1:$HTTPS_PORT/healthz" || true)
[ "$code" = 000 ] || fail_now "plain HTTP to the HTTPS port got an HTTP answer ($code)"
note "ok: plain HTTP to the HTTPS port gets no answer"

# ----------------------------------------------------------------- service

https() { curl -sS --max-time 30 --cacert "$CA" "$@"; }
body=$(https -D "$work/h" "$HTTPS/healthz")
[ "$body" = '{"status":"ok"}' ] && grep -qi '^X-Request-Id: ' "$work/h" ||
	fail_now "/healthz over HTTPS answered '$body'"
pad=$(head -c 4000 /dev/zero | tr '\0' x)
for size in 3000 4000; do
	a=$(https -o /dev/null -w '%{http_code}' -H "X-Pad: ${pad:0:$size}" \
		-H 'Authorization: Bearer dev-client' "$HTTPS/v1/products/MUG-LOGO" || true)
	b=$(curl -s -o /dev/null -w '%{http_code}' --max-time 30 -H "X-Pad: ${pad:0:$size}" \
		-H 'Authorization: Bearer dev-client' "$API/v1/products/MUG-LOGO" || true)
	[ "$a" = "$b" ] || fail_now "a $size-byte header: HTTPS answered $a, plain HTTP $b"
	note "ok: a $size-byte header answered $a over HTTPS, as over HTTP"
done

sku=TLS-$rid
put_sku "$sku" 5 400 tls
checkout_json "$sku" 737 >"$work/body.json"
post() {
	https -o "$1" -w '%{http_code}' -X POST -H 'Authorization: Bearer dev-client' \
		-H 'Content-Type: application/json' -H "Idempotency-Key: tls-$rid" \
		--data-binary @"$work/body.json" "$HTTPS/v1/checkouts"
}
code=$(post "$work/202.json")
[ "$code" = 202 ] || fail_now "the checkout over HTTPS answered $code: $(cat "$work/202.json")"
order=$(jq -r .order_id "$work/202.json")
code=$(post "$work/replay.json")
[ "$code" = 202 ] && [ "$(jq -r .order_id "$work/replay.json")" = "$order" ] ||
	fail_now "the replay answered $code: $(cat "$work/replay.json")"
deadline=$((SECONDS + 60))
while :; do
	status=$(https -H 'Authorization: Bearer dev-client' "$HTTPS/v1/orders/$order" | jq -r .status)
	case $status in confirmed | rejected | payment_failed | expired) break ;; esac
	[ $SECONDS -lt $deadline ] || fail_now "order $order is still '$status' after 60 s"
	sleep 0.5
done
[ "$status" = confirmed ] || fail_now "order $order ended '$status', not confirmed"
note "ok: checkout over HTTPS: 202, replayed, order $order confirmed"

code=$(https -o /dev/null -w '%{http_code}' -H 'Authorization: Bearer dev-finance' \
	"$HTTPS/v1/order-events?limit=1")
[ "$code" = 200 ] || fail_now "GET /v1/order-events over HTTPS answered $code"
ssl=$(psql_q -c "SELECT string_agg(DISTINCT s.ssl::text || ' ' || coalesce(s.version, ''), ',')
	FROM pg_stat_activity a JOIN pg_stat_ssl s USING (pid)
	WHERE a.application_name = 'orders-api-tls'")
case $ssl in
'true TLSv1.3' | 'true TLSv1.2') note "ok: the API's PostgreSQL sessions (verify-full): $ssl" ;;
*) fail_now "the API's PostgreSQL sessions are '$ssl' in pg_stat_ssl, not TLS" ;;
esac

# The DSN's TLS parameters reach psql through orderctl migrate and tools/migrate.sh, and a
# DSN that fails is shown with its secrets masked.
out=$(ORDERS_PG_DSN="${ORDERS_PG_DSN%%\?*}?sslmode=verify-full&sslrootcert=$CA" "$ORDERCTL" migrate 2>&1) ||
	fail_now "orderctl migrate with sslmode=verify-full failed: $out"
dsn="host=127.0.0.1 port=$PG_PORT user=orders dbname=orders password=pw-$rid"
dsn="$dsn sslpassword='pp $rid' sslmode=verify-full sslrootcert=$work/other.pem"
if out=$(ORDERS_PG_DSN=$dsn "$ORDERCTL" migrate 2>&1); then
	fail_now "orderctl migrate went on without the root certificate"
fi
case $out in
*"$rid"*) fail_now "a secret of the DSN is in migrate's output: $out" ;;
*"password=*** sslpassword=*** sslmode=verify-full"*) ;;
*) fail_now "migrate's output does not show the masked DSN: $out" ;;
esac
note "ok: orderctl migrate passes sslmode=verify-full through, masks the DSN's secrets"

# ------------------------------------------------------------------ memory

rss_kb() { awk '/^VmRSS:/ { print $2 }' "/proc/$api_pid/status"; }
before=$(rss_kb)
"$IDLE" "$HTTPS_PORT" "$N_IDLE" "$CA" 5 >"$work/idle.out" 2>&1 &
idle_pid=$!
deadline=$((SECONDS + 180))
until grep -q '^open ' "$work/idle.out"; do
	pid_alive "$idle_pid" || fail_now "orders-tls-idle failed: $(cat "$work/idle.out")"
	[ $SECONDS -lt $deadline ] || fail_now "$N_IDLE TLS connections not open after 180 s"
	sleep 0.2
done
sleep 1
with=$(rss_kb)
wait "$idle_pid" || fail_now "idle TLS connections were dropped: $(cat "$work/idle.out")"
idle_pid=
per=$(((with - before) * 1024 / N_IDLE))
note "memory: $before kB, $with kB with $N_IDLE idle TLS connections: $per bytes each" \
	"(ASan build; a Release build measured ~16 KB, ~4.7 KB over plain HTTP)"
[ "$per" -lt "$MAX_CONN_BYTES" ] || fail_now "$per bytes per idle TLS connection (limit $MAX_CONN_BYTES)"
[ "$(https "$HTTPS/healthz")" = '{"status":"ok"}' ] || fail_now "/healthz after the idle connections"

# -------------------------------------------------------------------- stop

kill -TERM "$api_pid"
wait_gone "$api_pid" 20 || fail_now "the HTTPS API did not stop within 20 s of SIGTERM"
wait "$api_pid" 2>/dev/null && rc=0 || rc=$?
api_pid=
[ "$rc" = 0 ] || fail_now "the HTTPS API exited with status $rc"
! grep -q '"level":"error"' "$API_LOG" || fail_now "errors in its log: $(grep '"level":"error"' "$API_LOG" | head -n 3)"
say_t "all TLS checks passed"
