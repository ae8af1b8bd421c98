#!/usr/bin/env bash
# migrate.sh [--seed]: apply migrations/NNNN_*.sql to the database in
# ORDERS_PG_DSN (default postgresql://orders@127.0.0.1:5442/orders), in order.
#
# Each file runs in its own transaction together with its row in
# schema_migrations (version = the NNNN number, applied_at, checksum =
# sha256 of the file), so a file is either applied and recorded or not at
# all. Applied files are skipped: re-running is a no-op. A session advisory
# lock serialises concurrent runners; the second one waits, then finds
# everything applied. An applied file whose content changed is refused:
# write a new migration instead of editing an old one.
#
# A migration therefore must not contain BEGIN/COMMIT, nor statements that
# cannot run inside a transaction (CREATE INDEX CONCURRENTLY, VACUUM).
#
# --seed also runs migrations/seed.sql (which must be idempotent) in one
# transaction after the migrations. ORDERS_MIGRATIONS_DIR overrides where
# the files are (default: ../migrations, else migrations/ beside this file).
set -euo pipefail

HERE=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd -P)
# In the repository the files are in ../migrations; in the container image
# (Dockerfile) they sit beside this script.
if [ -n "${ORDERS_MIGRATIONS_DIR:-}" ]; then
	MIGRATIONS=$ORDERS_MIGRATIONS_DIR
elif [ -d "$HERE/../migrations" ]; then
	MIGRATIONS=$(cd "$HERE/../migrations" && pwd -P)
else
	MIGRATIONS=$HERE/migrations
fi
DSN=${ORDERS_PG_DSN:-postgresql://orders@127.0.0.1:5442/orders}
# Any constant works as long as every runner uses the same one.
LOCK_KEY=7263542019

die() {
	printf 'migrate: %s\n' "$*" >&2
	exit 1
}

# mask_dsn DSN: DSN fit to print: a URL's password, and the values of password and
# sslpassword parameters (URL query or keyword=value, quoted or not), as ***.
mask_dsn() {
	local q="'"
	printf '%s' "$1" | sed -E \
		-e 's#^([A-Za-z][A-Za-z0-9+.-]*://[^:/@]*):.*@#\1:***@#' \
		-e "s#((^|[[:space:]?&])(ssl)?password[[:space:]]*=[[:space:]]*)(${q}([^${q}\\\\]|\\\\.)*${q}|[^[:space:]&]*)#\\1***#g"
}

seed=0
for arg in "$@"; do
	case $arg in
	--seed) seed=1 ;;
	-h | --help)
		sed -n '2,18p' "$0" | sed 's/^# \{0,1\}//'
		exit 0
		;;
	*) die "unknown argument '$arg' (usage: $0 [--seed])" ;;
	esac
done

command -v psql >/dev/null || die "psql not found; run deploy/local/install.sh"
[ -d "$MIGRATIONS" ] || die "no migrations directory at $MIGRATIONS"

# psql's \i takes the path unquoted-safe only without these characters.
case $MIGRATIONS in
*[[:space:]\'\"\\]*) die "the migrations path '$MIGRATIONS' contains a space, quote or backslash" ;;
esac

shopt -s nullglob
files=()
declare -A seen=()
for f in "$MIGRATIONS"/[0-9][0-9][0-9][0-9]_*.sql; do
	name=$(basename "$f")
	[[ $name =~ ^([0-9]{4})_[A-Za-z0-9_]+\.sql$ ]] ||
		die "$name: a migration is named NNNN_words.sql (letters, digits, underscores)"
	version=${BASH_REMATCH[1]}
	[ -z "${seen[$version]:-}" ] ||
		die "$name and ${seen[$version]} share the version number $version"
	seen[$version]=$name
	if grep -Eiq '^[[:space:]]*(BEGIN|COMMIT|ROLLBACK|START[[:space:]]+TRANSACTION)[[:space:]]*;' "$f"; then
		die "$name controls transactions itself; the runner wraps each file in one"
	fi
	files+=("$f")
done
[ ${#files[@]} -gt 0 ] || die "no NNNN_*.sql files in $MIGRATIONS"
if [ $seed -eq 1 ] && [ ! -f "$MIGRATIONS/seed.sql" ]; then
	die "--seed given but $MIGRATIONS/seed.sql does not exist"
fi

# One psql session runs a generated script: take the lock, then for every
# file decide with \if whether it is applied (checking its checksum) or
# apply it. Deciding inside the locked session is what makes concurrent runs
# safe; ON_ERROR_STOP turns the first error into a rolled-back transaction
# and a non-zero exit.
script=$(mktemp)
trap 'rm -f "$script"' EXIT
{
	cat <<EOF
\\set ON_ERROR_STOP on
\\set QUIET on
SET client_min_messages = warning;
SET lock_timeout = 0;
SELECT pg_advisory_lock($LOCK_KEY);
CREATE TABLE IF NOT EXISTS schema_migrations (
    version     text PRIMARY KEY,
    applied_at  timestamptz NOT NULL DEFAULT now(),
    checksum    text NOT NULL
);
\\set applied_now 0
EOF
	for f in "${files[@]}"; do
		name=$(basename "$f")
		version=${name%%_*}
		sum=$(sha256sum "$f" | cut -d' ' -f1)
		cat <<EOF
SELECT count(*) > 0 AS is_applied, coalesce(max(checksum), '') AS old_sum
  FROM schema_migrations WHERE version = '$version' \\gset
\\if :is_applied
SELECT :'old_sum' <> '$sum' AS changed \\gset
\\if :changed
\\echo 'migrate: $name was changed after it was applied (recorded sha256 ':old_sum', file now $sum); restore the applied version and put the change into a new migration'
DO \$\$ BEGIN RAISE EXCEPTION 'migration $name changed after it was applied'; END \$\$;
\\endif
\\else
\\echo 'migrate: applying $name'
BEGIN;
\\i $f
INSERT INTO schema_migrations (version, checksum) VALUES ('$version', '$sum');
COMMIT;
SELECT :applied_now + 1 AS applied_now \\gset
\\endif
EOF
	done
	cat <<'EOF'
SELECT count(*) AS total, :applied_now > 0 AS any_applied FROM schema_migrations \gset
\if :any_applied
\echo migrate: applied :applied_now migration(s), :total in total
\else
\echo migrate: up to date, :total migration(s) applied
\endif
EOF
	if [ $seed -eq 1 ]; then
		cat <<EOF
\\echo 'migrate: seeding from seed.sql'
BEGIN;
\\i $MIGRATIONS/seed.sql
COMMIT;
EOF
	fi
	printf 'SELECT pg_advisory_unlock(%s) \\gset\n' "$LOCK_KEY"
} >"$script"

# A failure inside a file is reported by psql with the file name and line.
rc=0
psql -X -q -d "$DSN" -f "$script" -o /dev/null || rc=$?
case $rc in
0) ;;
2)
	# The DSN may carry a password: never print it.
	die "cannot connect to the database ($(mask_dsn "$DSN")); is it running? (deploy/local/services.sh start)"
	;;
*) die "stopped by the error above; its transaction was rolled back" ;;
esac
