#!/usr/bin/env bash
# no_card_leak.sh: after the end-to-end tests, search everything the local
# stack wrote for the test card numbers and CVCs they used. A card number or
# CVC must never reach a log, a table in clear, Redis or a queue message in
# clear (PCI-DSS 3.3.1, 3.4, 3.5, 10); the vault keeps the number sealed and
# the CVC is thrown away after authorization.
#
# Searched: .local/log/* (daemon, PostgreSQL and Redis logs); a data-only
# pg_dump of the orders database and PostgreSQL's data directory as bytes
# (WAL included, so rows since updated or deleted count too); every key and
# value in Redis, and its AOF/RDB files; every message queued in RabbitMQ,
# read in full from the broker (payload and properties of each ready message
# of every quorum queue, the dead-letter queues included); and RabbitMQ's
# directory (message stores, quorum logs, node log).
#
# Card numbers are looked for as 16 digits, in 4-digit groups split by spaces
# or dashes, and hex-encoded (how bytea prints). Three-digit CVCs occur
# everywhere as plain digits, so a CVC is looked for where one would stand if
# it leaked, whatever its value: after a "cvc"/"cvv" key (JSON, also escaped
# inside a JSON string, key=value, YAML-ish), and in the sealed card record
# "number|cvc|MM|YYYY" (also hex-encoded); the tests' own CVC (737, see
# e2e.h) also next to their expiry ("737 12/2030" and the like).
#
# To be able to fail for real, the test first proves that its matcher finds
# planted numbers and CVCs (and not the harmless texts that mention a CVC),
# that a scan of a planted file reports them masked, and that it searched
# real data: at least one order row, non-empty daemon logs, and as many
# queued messages read as the broker says are ready. A hit names the source
# and its location and shows a number masked (first 6, last 4 digits) and a
# CVC not at all.
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
# The CVC the end-to-end tests send, and the expiry they send with it.
CVCS=(737)
EXP_MONTH=12
EXP_YEAR=2030

fail() {
	printf 'no_card_leak: FAIL: %s\n' "$*" >&2
	exit 1
}
note() { printf 'no_card_leak: %s\n' "$*"; }

[ -d "$LOCAL" ] || fail "$LOCAL does not exist: the local stack never ran (make up)"

work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
patterns=$work/patterns

# One extended regex per number and form, matched case-insensitively.
{
	for c in "${CARDS[@]}"; do
		printf '%s[ -]?%s[ -]?%s[ -]?%s\n' "${c:0:4}" "${c:4:4}" "${c:8:4}" "${c:12:4}"
		for ((i = 0; i < ${#c}; i++)); do printf '3%s' "${c:i:1}"; done
		printf '\n'
	done
	# Any CVC after its key: "cvc":"123", \"cvv\": 123, cvc=1234, cvc2: '123'.
	printf '%s\n' '(cvc|cvv)2?(\\?["'"'"'])?[[:space:]]*[:=][[:space:]]*(\\?["'"'"'])?[0-9]{3,4}([^0-9]|$)'
	# The same hex-encoded: "cvc":"123" is 22 63 76 63 22 3a 22 31 32 33 22.
	printf '%s\n' '6376(63|76)(32)?(22)?(20)*3a(20)*(22)?(3[0-9]){3,4}'
	# Any CVC in the sealed record "number|cvc|MM|YYYY", in clear and hex-encoded.
	printf '%s\n' '\|[0-9]{3,4}\|[0-9]{2}\|[0-9]{4}' '7c(3[0-9]){3,4}7c(3[0-9]){2}7c(3[0-9]){4}'
	# The tests' CVC beside the tests' expiry, however it is joined.
	for v in "${CVCS[@]}"; do
		printf '(^|[^0-9])%s[^0-9]{1,3}0?%s[^0-9]{1,3}(%s)?%s([^0-9]|$)\n' "$v" "$EXP_MONTH" \
			"${EXP_YEAR:0:2}" "${EXP_YEAR:2:2}"
	done
} >"$patterns"

# mask MATCH: what may be shown of a hit (PCI-DSS 3.4.1: first 6, last 4
# digits of a number; nothing of a CVC).
mask() {
	local m=$1 d
	if [[ $m =~ ^(3[0-9]){16}$ ]]; then
		d=$(printf '%s' "$m" | sed 's/3\(.\)/\1/g')
		printf 'card %s******%s (hex-encoded)' "${d:0:6}" "${d:12:4}"
	elif [[ $m =~ ^[0-9]{4}[\ -]?[0-9]{4}[\ -]?[0-9]{4}[\ -]?[0-9]{4}$ ]]; then
		d=${m//[ -]/}
		printf 'card %s******%s' "${d:0:6}" "${d:12:4}"
	elif [[ ${m,,} =~ ^(cvc|cvv) ]]; then
		printf 'CVC after a "%s" key (value not shown)' "${m:0:3}"
	elif [[ ${m,,} =~ ^6376 ]]; then
		printf 'CVC after a cvc/cvv key, hex-encoded (value not shown)'
	elif [[ $m =~ ^\| ]]; then
		printf 'card record |***|**|**** (CVC and expiry not shown)'
	elif [[ ${m,,} =~ ^7c ]]; then
		printf 'card record, hex-encoded (CVC not shown)'
	else
		printf 'a test CVC beside the test expiry (not shown)'
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
	grep -r -a -H -o -i "$mode" -E -f "$patterns" "$@" >"$out" 2>"$work/grep.err" || rc=$?
	# A running server deletes files while they are searched (PostgreSQL's
	# pg_internal.init, a rotated WAL segment): a file gone is not a failure.
	if [ $rc -gt 1 ] && grep -v -q ': No such file or directory$' "$work/grep.err"; then
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
		# file:location:match (no path searched has a colon; a match may).
		file=${line%%:*}
		rest=${line#*:}
		loc=${rest%%:*}
		match=${rest#*:}
		case $file in
		"$work"/orders.sql)
			# The dump's COPY header names the table the line belongs to.
			file="pg_dump, table $(awk -v n="$loc" 'NR <= n && /^COPY / { t = $2 } NR == n { print t; exit }' "$file"),"
			;;
		"$work"/queued/*) file="queued message ${file##*/}," ;;
		"$work"/*) file="${name}," ;;
		*) file=${file#"$ROOT"/} ;;
		esac
		printf '  %s %s %s, %s\n' "$file" \
			"$([ "$mode" = -n ] && echo line || echo byte)" "$loc" "$(mask "$match")" >&2
	done
	[ "$n" -le "$MAX_HITS" ] || printf '  ... and %d more\n' $((n - MAX_HITS)) >&2
}

# 0. The matcher finds every form of a planted number and CVC and leaves
# alone the texts that only mention a CVC; a scan of a file planted with
# them reports every one, and its report shows none of them.
must_find=(
	'x4242424242424242y'
	'pan=5555 5555 5555 4444;'
	'4000-0000-0000-0119'
	'\x34303030303030303030303030303032'
	'{"payment":{"card":{"number":"4111","cvc":"737"}}}'
	'{"msg":"request","body":"{\"cvc\": \"123\",\"exp_month\":1}"}'
	'card cvv=1234 ok'
	'CVC2: 999'
	'record 4111111111111111|123|01|2031'
	'|737|12|2030'
	'\x7c3733377c31327c32303330'
	'\x22637663223a2237333722'
	'card 737 12/2030'
	'737/12/30,'
)
must_pass=(
	'{"error":{"code":"invalid_card","message":"the card'"'"'s CVC is not valid","field":"payment.card.cvc"}}'
	'{"msg":"checkout accepted","latency_ms":737,"status":202}'
	'{"ts":"2030-12-01T07:37:12.000Z","cvc_checked":true}'
	'expires 12|2030, brand visa, last4 4242'
	'port 5737 12 2030'
)
for i in "${!must_find[@]}"; do
	printf '%s\n' "${must_find[$i]}" | grep -q -a -i -E -f "$patterns" ||
		fail "self-test: the matcher misses planted sample $((i + 1))"
done
for i in "${!must_pass[@]}"; do
	if printf '%s\n' "${must_pass[$i]}" | grep -q -a -i -E -f "$patterns"; then
		fail "self-test: the matcher flags harmless text $((i + 1))"
	fi
done
mkdir "$work/plant"
printf '%s\n' "${must_find[@]}" >"$work/plant/log"
scan "a planted file" -n "$work/plant/log" >/dev/null 2>"$work/plant/report"
[ "$leaks" -ge ${#must_find[@]} ] ||
	fail "self-test: a scan of ${#must_find[@]} planted samples reported $leaks"
if grep -q -a -i -E -f "$patterns" "$work/plant/report"; then
	fail "self-test: a report of planted samples shows a number or CVC unmasked"
fi
rm -r "$work/plant"
leaks=0
searched=()

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

# 5. Every message queued in RabbitMQ, read from the broker in full: the
# payload and properties of each ready message of every quorum queue (the
# work queues and their dead-letter queues, where poison messages sit). A
# queue whose count of messages read differs from the count the broker
# reports ready (a consumer took one meanwhile) is read again.
if [ -z "${ORDERS_LOCAL_PORT_OFFSET:-}" ] && [[ ${ORDERS_AMQP_URL:-} =~ @[^:/]+:([0-9]+) ]]; then
	# services.sh finds the stack's node by its port offset.
	export ORDERS_LOCAL_PORT_OFFSET=$((BASH_REMATCH[1] - 5682))
fi
read -r -d '' read_queues <<'ERLANG' || true
Peek = fun Peek(Pid, Pos, Acc) when Pos =< 100000 ->
               case ra:aux_command(Pid, {peek, Pos}) of
                   {ok, {_Header, Msg}} -> Peek(Pid, Pos + 1, [Msg | Acc]);
                   _ -> lists:reverse(Acc)
               end;
           Peek(_, _, Acc) -> lists:reverse(Acc)
       end,
lists:foreach(
  fun(Q) ->
      {resource, _VHost, queue, Name} = amqqueue:get_name(Q),
      case amqqueue:get_type(Q) of
          rabbit_quorum_queue ->
              [{messages_ready, Ready}] = rabbit_amqqueue:info(Q, [messages_ready]),
              Msgs = Peek(amqqueue:get_pid(Q), 1, []),
              io:format("queue ~s ~b ~b~n", [base64:encode(Name), Ready, length(Msgs)]),
              lists:foreach(
                fun(Msg) ->
                    Content = element(4, Msg),
                    Body = iolist_to_binary(lists:reverse(element(6, Content))),
                    Props = io_lib:format("~0tp", [element(3, Content)]),
                    io:format("message ~s ~s~n",
                              [base64:encode(Body),
                               base64:encode(unicode:characters_to_binary(Props))])
                end, Msgs);
          Type ->
              io:format("other ~s ~s~n", [base64:encode(Name), Type])
      end
  end, rabbit_amqqueue:list()),
done.
ERLANG
queued=0
for attempt in 1 2 3; do
	rm -rf "$work/queued"
	mkdir "$work/queued"
	"$ROOT/deploy/local/services.sh" ctl -q eval "$read_queues" >"$work/queues.out" \
		2>"$work/queues.err" || {
		cat "$work/queues.err" "$work/queues.out" >&2
		fail "cannot read the queued messages from RabbitMQ (is the stack up?)"
	}
	queues=0 queued=0 moved=0 qname='' pos=0
	while read -r kind a b c; do
		case $kind in
		queue)
			qname=$(printf '%s' "$a" | base64 -d | tr -c 'A-Za-z0-9._-' '_')
			queues=$((queues + 1)) pos=0
			[ "$b" = "$c" ] || moved=1
			;;
		message)
			pos=$((pos + 1)) queued=$((queued + 1))
			printf '%s' "$a" | base64 -d >"$work/queued/$qname.$pos.body"
			printf '%s' "$b" | base64 -d >"$work/queued/$qname.$pos.properties"
			;;
		other) note "queue $(printf '%s' "$a" | base64 -d) ($b) is searched on disk only" ;;
		done) ;;
		*) fail "unexpected answer from RabbitMQ: ${kind:0:40}" ;;
		esac
	done <"$work/queues.out"
	[ $moved -eq 1 ] || break
	[ "$attempt" -lt 3 ] || fail "queues kept changing while being read"
	sleep 1
done
[ "$queues" -ge 6 ] ||
	fail "read $queues quorum queues from RabbitMQ; the work queues and their .dlq make six"
note "messages queued in RabbitMQ: $queued, in $queues queues"
scan "messages queued in RabbitMQ (dead-letter queues included)" -b "$work/queued"

# 6. RabbitMQ's on-disk state: message stores, quorum queue logs, logs.
[ -d "$LOCAL/rabbitmq/mnesia" ] || fail "no RabbitMQ data in $LOCAL/rabbitmq/mnesia"
scan "RabbitMQ data (.local/rabbitmq)" -b "$LOCAL/rabbitmq"

note "searched: $(printf '%s; ' "${searched[@]}")"
if [ $leaks -gt 0 ]; then
	fail "$leaks occurrence(s) of card numbers or CVCs in the stack's data (listed above, masked)"
fi
note "PASS: no test card number and no CVC in any of them"
