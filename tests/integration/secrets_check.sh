#!/usr/bin/env bash
# secrets_check.sh: no secret reaches a log line or /metrics, unmasked or at all, and
# production refuses the development keys.
#
#   1. An extra orders-api on the running stack, ORDERS_ENV=production, log level
#      debug, every secret distinctive: a plain client key, a finance key configured as
#      its digest (the token and the digest are both secrets), an admin key, the order-id
#      key (and the body-hash key the API derives from it), a PostgreSQL password in a
#      keyword DSN written "password = x". It serves good keys, refuses near misses of
#      them, the digest sent as a token, a checkout with a bad card; then /metrics is
#      read and it is stopped.
#   2. Each of the five daemons with distinctive secrets (also the seal secret, vault
#      and fingerprint keys, and passwords in the PostgreSQL and RabbitMQ URLs) pointed
#      at services that are not there, and at the stack's Redis with a user and password
#      it refuses: a few seconds of failing connections, its /metrics, SIGTERM.
#   3. Redis URLs lib/cache cannot take apart (a password with a bad %-escape, user
#      info without a ':') and PostgreSQL DSNs libpq cannot parse (libpq's own
#      complaint would quote them): the daemon refuses to start and does not repeat them.
#   4. ORDERS_ENV=production with each development API key, plain and as its digest,
#      or a development crypto key: the daemon refuses to start, naming it.
#
# Everything each daemon wrote (stdout and stderr) and every /metrics page is searched
# for every secret, hex ones in either case; the configuration line must be there with
# the masks, so that the search is known to look at real output.
#
# Run by ctest (ORDERS_SOURCE_DIR = repository root, .local/env exported) while the
# stack is up.
set -euo pipefail
# shellcheck disable=SC2034 # read by lib/stack.bash and deploy/local/lib.sh
SCRIPT_NAME=secrets_check
# shellcheck source-path=SCRIPTDIR source=lib/stack.bash
. "$(dirname "${BASH_SOURCE[0]}")/lib/stack.bash"

pids=()
cleanup() {
	local pid
	for pid in "${pids[@]}"; do
		kill -KILL "$pid" 2>/dev/null || true
	done
	rm -rf "$work"
}
trap cleanup EXIT

rnd() { head -c 12 /dev/urandom | od -An -tx1 | tr -d ' \n'; }
hex64() { head -c 32 /dev/urandom | od -An -tx1 | tr -d ' \n'; }
free_port() {
	python3 -c 'import socket; s = socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])'
}
# A port nothing listens on (taken from the kernel, then let go).
DEAD_PORT=$(free_port)

# ------------------------------------------------------------- the secrets

declare -A secret=()
secret[client_key]=sk_plain_$(rnd)
secret[finance_token]=sk_hashed_$(rnd)
secret[finance_digest]=$(printf %s "${secret[finance_token]}" | b2sum -l 256 | cut -c1-64)
secret[admin_key]=sk_admin_$(rnd)
secret[order_id_key]=$(hex64)
# The key the API derives from the order-id key for the idempotency records' body hashes.
secret[body_hash_key]=$(python3 -c 'import hashlib, sys
print(hashlib.blake2b(b"orders idempotency body hash", digest_size=32,
      key=bytes.fromhex(sys.argv[1])).hexdigest())' "${secret[order_id_key]}")
secret[seal_secret_key]=$(hex64)
secret[vault_key]=$(hex64)
secret[fingerprint_key]=$(hex64)
secret[pg_password]=pgpw_$(rnd)
secret[pg_password_url]=pgurl_$(rnd)
secret[amqp_password]=amqppw_$(rnd)
secret[redis_password]=redispw_$(rnd)
secret[pg_password_bad_dsn]=pgbad_$(rnd)
# Near misses sent as bearer tokens: a refused token must not be logged either.
secret[near_miss]=${secret[client_key]}x
secret[near_miss_admin]=${secret[admin_key]%?}
seal_public=$(hex64)
api_keys="${secret[client_key]}:client,blake2b256.${secret[finance_digest]}:finance,${secret[admin_key]}:admin"

# search NAME FILE...: fail for every secret found in the files (hex ones in any case).
search() {
	local what=$1 name hits
	shift
	for name in "${!secret[@]}"; do
		hits=$(grep -l -i -F -- "${secret[$name]}" "$@" 2>/dev/null || true)
		if [ -n "$hits" ]; then
			fail_later "$what: the $name is in ${hits//$'\n'/ }"
		fi
	done
}

# The search must find what it looks for, or its silence means nothing.
printf 'planted %s here\n' "${secret[vault_key]^^}" >"$work/planted"
search planted "$work/planted" 2>/dev/null
[ "$failures" -eq 1 ] || fail_now "the search does not find a secret planted in a file"
failures=0

# start NAME BINARY ENV...: the daemon in the background with the stack's
# environment plus ENV, its output in $work/NAME.log; its pid in STARTED.
start() {
	local name=$1 bin=$2
	shift 2
	env "$@" "$BUILD/$bin" >"$LOG_DIR/orders-secrets-$name.log" 2>&1 &
	STARTED=$!
	pids+=("$STARTED")
}

# stop PID: SIGTERM, up to 15 s, then SIGKILL.
stop() {
	kill -TERM "$1" 2>/dev/null || true
	if ! wait_gone "$1" 15; then
		fail_later "pid $1 ignored SIGTERM"
		kill -KILL "$1" 2>/dev/null || true
	fi
	wait "$1" 2>/dev/null || true
}

# ---------------------------------------------- 1. a working API in production

port=$(free_port)
start api-production api/orders-api ORDERS_ENV=production ORDERS_LOG_LEVEL=debug \
	ORDERS_HTTP_PORT="$port" ORDERS_API_KEYS="$api_keys" \
	ORDERS_ORDER_ID_KEY="${secret[order_id_key]}" ORDERS_SEAL_PUBLIC_KEY="$seal_public" \
	ORDERS_PG_DSN="host=127.0.0.1 port=$PG_PORT dbname=orders user=orders password = ${secret[pg_password]}"
api_pid=$STARTED
deadline=$((SECONDS + 60))
until http_ok "http://127.0.0.1:$port/readyz"; do
	pid_alive "$api_pid" || fail_now "orders-api in production exited: $(tail -n 5 "$LOG_DIR/orders-secrets-api-production.log")"
	[ $SECONDS -lt $deadline ] || fail_now "orders-api in production not ready after 60 s"
	sleep 0.2
done
base=http://127.0.0.1:$port
# code AUTH-TOKEN METHOD PATH [BODY]: the status.
code() {
	local args=(-s -o "$work/out" -w '%{http_code}' --max-time 15 -X "$2" -H "Authorization: Bearer $1")
	[ -z "${4:-}" ] || args+=(-H 'Content-Type: application/json' -H "Idempotency-Key: secrets-$rid" -d "$4")
	curl "${args[@]}" "$base$3" || echo 000
}
expect_code() {
	local got
	got=$(code "$2" "$3" "$4" "${5:-}")
	[ "$got" = "$1" ] || fail_later "$3 $4 answered $got, want $1: $(head -c 300 "$work/out")"
}
expect_code 200 "${secret[client_key]}" GET /v1/products/MUG-LOGO
expect_code 200 "${secret[finance_token]}" GET '/v1/order-events?limit=1'
expect_code 201 "${secret[admin_key]}" PUT "/v1/products/SECRETS-$rid" \
	'{"name":"Secrets","price_cents":100,"currency":"USD","stock":1}'
expect_code 401 "${secret[near_miss]}" GET /v1/products/MUG-LOGO
expect_code 401 "${secret[near_miss_admin]}" GET /v1/products/MUG-LOGO
expect_code 401 "${secret[finance_digest]}" GET '/v1/order-events?limit=1'
expect_code 401 "blake2b256.${secret[finance_digest]}" GET '/v1/order-events?limit=1'
expect_code 422 "${secret[client_key]}" POST /v1/checkouts \
	"$(checkout_json "SECRETS-$rid" 123 | sed 's/4242424242424242/4242424242424241/')"
curl -fsS --max-time 15 "$base/metrics" >"$work/api-production.prom" ||
	fail_later "GET /metrics of orders-api in production failed"
stop "$api_pid"
log=$LOG_DIR/orders-secrets-api-production.log
grep -q '"msg":"configuration"' "$log" || fail_later "orders-api printed no configuration line"
grep -q '"ORDERS_PG_DSN":"host=127.0.0.1 port=[0-9]* dbname=orders user=orders password = \*\*\*"' "$log" ||
	fail_later "the configuration line does not show the DSN masked: $(grep -o '"ORDERS_PG_DSN":"[^"]*"' "$log")"
grep -q '"ORDERS_API_KEYS":"\*\*\*"' "$log" || fail_later "the configuration line does not mask the API keys"
search "orders-api in production" "$log" "$work/api-production.prom"
note "1. orders-api in production: $(wc -l <"$log") log lines and $(wc -l <"$work/api-production.prom") metrics lines searched"

# ------------------------------------ 2. every daemon, services out of reach

for name in "${DAEMONS[@]}"; do
	port=$(free_port)
	start "$name" "${DAEMON_PATH[$name]}" ORDERS_ENV=production ORDERS_LOG_LEVEL=debug \
		ORDERS_HTTP_PORT="$port" ORDERS_METRICS_PORT="$port" ORDERS_API_KEYS="$api_keys" \
		ORDERS_ORDER_ID_KEY="${secret[order_id_key]}" ORDERS_SEAL_PUBLIC_KEY="$seal_public" \
		ORDERS_SEAL_SECRET_KEY="${secret[seal_secret_key]}" ORDERS_VAULT_KEY="${secret[vault_key]}" \
		ORDERS_FINGERPRINT_KEY="${secret[fingerprint_key]}" \
		ORDERS_PG_DSN="postgresql://orders:${secret[pg_password_url]}@127.0.0.1:$DEAD_PORT/orders" \
		ORDERS_AMQP_URL="amqp://svc:${secret[amqp_password]}@127.0.0.1:$DEAD_PORT/" \
		ORDERS_REDIS_URL="redis://orders:${secret[redis_password]}@127.0.0.1:$REDIS_PORT/0"
	pid=$STARTED
	sleep 3
	prom=$work/$name.prom
	: >"$prom"
	if pid_alive "$pid"; then
		curl -sS --max-time 10 "http://127.0.0.1:$port/metrics" >"$prom" 2>/dev/null || true
	fi
	stop "$pid"
	log=$LOG_DIR/orders-secrets-$name.log
	grep -q '"msg":"configuration"' "$log" || fail_later "$name printed no configuration line"
	grep -q "\"ORDERS_AMQP_URL\":\"amqp://svc:\*\*\*@127.0.0.1:$DEAD_PORT/\"" "$log" ||
		fail_later "$name: the configuration line does not show the AMQP URL masked"
	grep -q "\"ORDERS_REDIS_URL\":\"redis://orders:\*\*\*@127.0.0.1:$REDIS_PORT/0\"" "$log" ||
		fail_later "$name: the configuration line does not show the Redis URL masked"
	search "$name without its services" "$log" "$prom"
	note "2. $name without its services: $(wc -l <"$log") log lines and $(wc -l <"$prom") metrics lines searched"
done
# The API and the cart consumer use Redis: its refusal was logged (and searched).
for name in orders-api orders-cart; do
	grep -q '"msg":"redis refused the password","reason":"WRONGPASS' "$LOG_DIR/orders-secrets-$name.log" ||
		fail_later "$name: no warning that redis refused the password"
done

# ------------------------------------------- 3. refused at start, not repeated

refused() {
	local name=$1
	shift
	start "$name" api/orders-api ORDERS_HTTP_PORT="$(free_port)" "$@"
	if ! wait_gone "$STARTED" 30; then
		fail_later "$name: orders-api did not refuse to start"
		kill -KILL "$STARTED" 2>/dev/null || true
	fi
	wait "$STARTED" 2>/dev/null && fail_later "$name: orders-api exited with status 0"
	search "$name" "$LOG_DIR/orders-secrets-$name.log"
}
refused redis-bad-escape ORDERS_REDIS_URL="rediss://:${secret[redis_password]}%zz@127.0.0.1:$REDIS_PORT/0"
refused redis-no-colon ORDERS_REDIS_URL="redis://${secret[redis_password]}@127.0.0.1:$REDIS_PORT/0"
grep -q "ORDERS_REDIS_URL has user info without a ':'" "$LOG_DIR/orders-secrets-redis-no-colon.log" ||
	fail_later "a Redis URL without ':' in its user info was not refused by name"
refused bad-dsn-words ORDERS_PG_DSN="host=127.0.0.1 password=x ${secret[pg_password_bad_dsn]}"
refused bad-dsn-escape ORDERS_PG_DSN="postgresql://u:${secret[pg_password_bad_dsn]}%zz@127.0.0.1/orders"
grep -q 'ORDERS_PG_DSN does not parse' "$LOG_DIR/orders-secrets-bad-dsn-words.log" ||
	fail_later "an unparsable DSN was not refused by name"
note "3. unparsable Redis URLs and DSNs: refused at start, not repeated"

# ---------------------------------------- 4. production refuses the dev keys

# prod_refuses WHAT WANT ENV...: orders-api in production with ENV refuses to start,
# saying WANT.
prod_refuses() {
	local what=$1 want=$2 out
	shift 2
	out=$(env ORDERS_ENV=production ORDERS_HTTP_PORT="$(free_port)" ORDERS_API_KEYS="$api_keys" \
		ORDERS_ORDER_ID_KEY="${secret[order_id_key]}" ORDERS_SEAL_PUBLIC_KEY="$seal_public" "$@" \
		timeout 30 "$BUILD/api/orders-api" 2>&1) &&
		fail_later "production started with $what"
	case $out in
	*"$want"*) ;;
	*) fail_later "production with $what: '$out' does not say '$want'" ;;
	esac
}
n=0
for key in dev-client dev-finance dev-admin dev-limited; do
	digest=$(printf %s "$key" | b2sum -l 256 | cut -c1-64)
	want="must not contain the development key '$key'"
	prod_refuses "$key" "$want" ORDERS_API_KEYS="${secret[client_key]}:client,$key:admin"
	prod_refuses "$key as its digest" "$want" ORDERS_API_KEYS="blake2b256.$digest:finance"
	prod_refuses "$key as its upper-case digest" "$want" \
		ORDERS_API_KEYS="${secret[client_key]}:client,blake2b256.${digest^^}:client:10"
	n=$((n + 3))
done
prod_refuses "the dev order-id key" "ORDERS_ORDER_ID_KEY must be set to a key of its own" \
	ORDERS_ORDER_ID_KEY=
prod_refuses "the dev seal public key" "ORDERS_SEAL_PUBLIC_KEY must be set to a key of its own" \
	ORDERS_SEAL_PUBLIC_KEY=
out=$(env ORDERS_ENV=production ORDERS_SEAL_SECRET_KEY="${secret[seal_secret_key]}" \
	ORDERS_FINGERPRINT_KEY="${secret[fingerprint_key]}" ORDERS_METRICS_PORT="$(free_port)" \
	timeout 30 "$BUILD/${DAEMON_PATH[orders-payment]}" 2>&1) &&
	fail_later "orders-payment started in production with the dev vault key"
case $out in
*"ORDERS_VAULT_KEY must be set to a key of its own"*) ;;
*) fail_later "orders-payment with the dev vault key: '$out'" ;;
esac
note "4. production refused $n dev API key settings (plain, digest, upper-case digest) and dev crypto keys"

if [ "$failures" -gt 0 ]; then
	printf '%s: FAIL: %d problem(s)\n' "$SCRIPT_NAME" "$failures" >&2
	exit 1
fi
note "ok: ${#secret[@]} distinctive secrets found nowhere in the logs and metrics of 9 daemon runs"
