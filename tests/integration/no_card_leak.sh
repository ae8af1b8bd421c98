#!/usr/bin/env bash
# no_card_leak.sh: after the end-to-end tests, search everything the local
# stack wrote for the test card numbers they used. A card number must never
# reach a log, a table in clear, Redis or a queue message in clear
# (PCI-DSS 3.3/3.4/3.5/10); the vault keeps it sealed.
#
# Searched: .local/log/* (daemon, PostgreSQL and Redis logs); a data-only
# pg_dump of the orders database and PostgreSQL's data directory as bytes
# (WAL included, so rows since updated or deleted count too); every key and
# value in Redis, and its AOF/RDB files; RabbitMQ's directory (message
# stores, quorum logs, node log). Each number is looked for as 16 digits,
# in 4-digit groups split by spaces or dashes, and hex-encoded (how bytea
# prints). CVCs are not searched: three digits occur everywhere.
#
# To be able to fail for real, the test first proves that its matcher finds
# a planted number and that it searched real data: at least one order row
# and non-empty daemon logs. A hit names the source and its location and
# shows the number masked (first 6, last 4 digits), never in full.
#
# Run by ctest (ORDERS_SOURCE_DIR = repository root) while the stack is up.
set -euo pipefail

ROOT=${ORDERS_SOURCE_DIR:-$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd -P)}
LOCAL=$ROOT/.local
# The stack's Redis, from ORDERS_REDIS_URL (redis://host:port/db) when set.
REDIS_PORT=6389
if [[ ${ORDERS_REDIS_URL:-} =~ ^redis://[^:/]+:([0-9]+) ]]; then
	REDIS_PORT=${BASH_REMATCH[1]}
fi
MAX_HITS=20

CARDS=(4242424242424242 5555555555554444 4000000000000002 4000000000009995 4000000000000119)

fail() {
	printf 'no_card_leak: FAIL: %s\n' "$*" >&2
	exit 1
}
note() { printf 'no_card_leak: %s\n' "$*"; }

[ -d "$LOCAL" ] || fail "$LOCAL does not exist: the local stack never ran (make up)"

work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
patterns=$work/patterns

# One extended regex per number and form.
for c in "${CARDS[@]}"; do
	printf '%s[ -]?%s[ -]?%s[ -]?%s\n' "${c:0:4}" "${c:4:4}" "${c:8:4}" "${c:12:4}"
	for ((i = 0; i < ${#c}; i++)); do printf '3%s' "${c:i:1}"; done
	printf '\n'
done >"$patterns"

# mask MATCH: what may be shown of a hit (PCI-DSS 3.4.1: first 6, last 4).
mask() {
	local m=$1 d
	if [[ $m =~ ^(3[0-9]){16}$ ]]; then
		d=$(printf '%s' "$m" | sed 's/3\(.\)/\1/g')
		printf '%s******%s (hex-encoded)' "${d:0:6}" "${d:12:4}"
	else
		d=${m//[ -]/}
		printf '%s******%s' "${d:0:6}" "${d:12:4}"
	fi
}

leaks=0
searched=()

# scan NAME MODE PATH...: grep PATHs (MODE -n: text, line numbers; -b:
# binary, byte offsets; directories recursively) and report hits.
scan() {
	local name=$1 mode=$2 out=$work/hits rc=0 n bytes line match rest loc file
	shift 2
	bytes=$(du -scb "$@" 2>/dev/null | tail -n 1 | cut -f1)
	grep -r -a -H -o "$mode" -E -f "$patterns" "$@" >"$out" 2>"$work/grep.err" || rc=$?
	if [ $rc -gt 1 ]; then
		cat "$work/grep.err" >&2
		fail "could not search $name"
	fi
	searched+=("$name: ${bytes:-0} bytes")
	n=$(wc -l <"$out")
	if [ "$n" -eq 0 ]; then
		note "searched $name (${bytes:-0} bytes): clean"
		return 0
	fi
	leaks=$((leaks + n))
	printf 'no_card_leak: LEAK in %s: %d hit(s)\n' "$name" "$n" >&2
	head -n "$MAX_HITS" "$out" | while IFS= read -r line; do
		match=${line##*:}
		rest=${line%:*}
		loc=${rest##*:}
		file=${rest%:*}
		case $file in
		"$work"/orders.sql)
			# The dump's COPY header names the table the line belongs to.
			file="pg_dump, table $(awk -v n="$loc" 'NR <= n && /^COPY / { t = $2 } NR == n { print t; exit }' "$file"),"
			;;
		"$work"/*) file="${name}," ;;
		*) file=${file#"$ROOT"/} ;;
		esac
		printf '  %s %s %s, card %s\n' "$file" \
			"$([ "$mode" = -n ] && echo line || echo byte)" "$loc" "$(mask "$match")" >&2
	done
	[ "$n" -le "$MAX_HITS" ] || printf '  ... and %d more\n' $((n - MAX_HITS)) >&2
}

# 0. The matcher itself finds every form of a planted number.
i=0
for sample in "x4242424242424242y" "pan=5555 5555 5555 4444;" "4000-0000-0000-0119" \
	'\x34303030303030303030303030303032'; do
	i=$((i + 1))
	printf '%s\n' "$sample" | grep -q -a -E -f "$patterns" ||
		fail "self-test: the matcher misses planted sample $i"
done

# 1. Real data to search: without orders or logs a clean result proves
# nothing (the e2e tests did not run, or the stack wrote elsewhere).
dsn=postgresql://orders@127.0.0.1:5442/orders
if [ -r "$LOCAL/env" ]; then
	dsn=$(sed -n 's/^export ORDERS_PG_DSN=//p' "$LOCAL/env" | tail -n 1)
fi
orders=$(psql -X -At -d "$dsn" -c 'SELECT count(*) FROM orders' 2>"$work/psql.err") ||
	{
		cat "$work/psql.err" >&2
		fail "cannot query the orders database (is the stack up?)"
	}
cards=$(psql -X -At -d "$dsn" -c 'SELECT count(*) FROM vault_cards' 2>/dev/null || echo '?')
note "orders in the database: $orders; cards in the vault: $cards"
[ "$orders" -ge 1 ] || fail "no order in the database: nothing was tested (run the e2e tests first)"

shopt -s nullglob
logs=("$LOCAL"/log/*)
daemon_bytes=0
for f in "$LOCAL"/log/orders-*.log; do
	daemon_bytes=$((daemon_bytes + $(stat -c %s "$f")))
done
[ "$daemon_bytes" -gt 0 ] || fail "the daemons' logs (.local/log/orders-*.log) are empty or missing"

# 2. Logs.
scan "logs (.local/log)" -n "${logs[@]}"

# 3. PostgreSQL: what the tables hold now, then every byte on disk.
pg_dump --data-only --no-owner --no-privileges -d "$dsn" -f "$work/orders.sql" 2>"$work/dump.err" ||
	{
		cat "$work/dump.err" >&2
		fail "pg_dump failed"
	}
scan "pg_dump of the orders database" -n "$work/orders.sql"
if [ -d "$LOCAL/pg" ]; then
	scan "PostgreSQL data directory (.local/pg, WAL included)" -b "$LOCAL/pg"
fi

# 4. Redis: every key and value of every database, then its files.
: >"$work/redis.txt"
dbs=$(redis-cli -p "$REDIS_PORT" info keyspace 2>/dev/null | sed -n 's/^db\([0-9]*\):.*/\1/p')
lua='local out = {}
for _, k in ipairs(redis.call("KEYS", "*")) do
  out[#out + 1] = k
  local t = redis.call("TYPE", k).ok
  local vals = {}
  if t == "string" then vals = {redis.call("GET", k)}
  elseif t == "hash" then vals = redis.call("HGETALL", k)
  elseif t == "list" then vals = redis.call("LRANGE", k, 0, -1)
  elseif t == "set" then vals = redis.call("SMEMBERS", k)
  elseif t == "zset" then vals = redis.call("ZRANGE", k, 0, -1)
  elseif t == "stream" then
    for _, e in ipairs(redis.call("XRANGE", k, "-", "+")) do
      for _, v in ipairs(e[2]) do vals[#vals + 1] = v end
    end
  end
  for _, v in ipairs(vals) do out[#out + 1] = v end
end
return out'
redis_keys=0
for db in $dbs; do
	n=$(redis-cli -p "$REDIS_PORT" -n "$db" dbsize)
	redis_keys=$((redis_keys + n))
	redis-cli -p "$REDIS_PORT" -n "$db" --raw eval "$lua" 0 >>"$work/redis.txt" ||
		fail "could not read Redis database $db"
done
if ! redis-cli -p "$REDIS_PORT" ping >/dev/null 2>&1; then
	fail "Redis on port $REDIS_PORT does not answer (is the stack up?)"
fi
note "Redis keys: $redis_keys"
scan "Redis keys and values" -n "$work/redis.txt"
if [ -d "$LOCAL/redis" ]; then
	scan "Redis files (.local/redis: AOF, RDB)" -b "$LOCAL/redis"
fi

# 5. RabbitMQ's on-disk state: message stores, quorum queue logs, logs.
[ -d "$LOCAL/rabbitmq/mnesia" ] || fail "no RabbitMQ data in $LOCAL/rabbitmq/mnesia"
scan "RabbitMQ data (.local/rabbitmq)" -b "$LOCAL/rabbitmq"

note "searched: $(printf '%s; ' "${searched[@]}")"
if [ $leaks -gt 0 ]; then
	fail "$leaks occurrence(s) of test card numbers in the stack's data (listed above, masked)"
fi
note "PASS: no test card number in any of them"
