/* events.c: orderctl events tail: the finance events of order_events in seq order, optionally
 * followed. */
#include <jansson.h>
#include <libpq-fe.h>
#include <limits.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "db.h"
#include "err.h"
#include "orderctl.h"

#define EVENTS_PAGE 500
#define EVENTS_PAGE_STR "500"
/*
 * seq comes from a sequence when the row is inserted, but the row becomes
 * visible when its transaction commits: a smaller seq can appear after a
 * larger one. Following, each hole below the highest seq shown is watched
 * for this long (a rolled-back insert leaves a hole for good), at most
 * GAP_MAX holes and GAP_JUMP_MAX per jump (a bigger jump is history: rows
 * long deleted or a sequence moved on, not transactions in flight).
 */
#define GAP_WAIT_MS 10000
#define GAP_MAX 512
#define GAP_JUMP_MAX 64
#define GAP_SQL_MAX (GAP_MAX * 21 + 8)

#define COLUMNS                                                                                    \
	"SELECT seq, type, order_id, currency, total_cents, "                                      \
	"to_char(occurred_at AT TIME ZONE 'UTC', 'YYYY-MM-DD\"T\"HH24:MI:SS.MS\"Z\"') "            \
	"FROM order_events "

struct gap {
	long long seq;
	int64_t since_ms;
};

struct tail {
	struct db *db;
	long long after; /* the highest seq shown */
	int json, follow;
	long interval_ms;
	struct gap gaps[GAP_MAX];
	size_t ngaps;
};

static int64_t now_ms(void)
{
	struct timespec ts;

	clock_gettime(CLOCK_MONOTONIC, &ts);
	return (int64_t)ts.tv_sec * 1000 + ts.tv_nsec / 1000000;
}

static void sleep_ms(long ms)
{
	struct timespec ts = {ms / 1000, (ms % 1000) * 1000000L};

	while (nanosleep(&ts, &ts) != 0)
		;
}

static void print_event(const struct tail *t, PGresult *res, int row)
{
	char type[64], order[64], currency[8], at[40];
	long long seq = strtoll(PQgetvalue(res, row, 0), NULL, 10);
	long long total = strtoll(PQgetvalue(res, row, 4), NULL, 10);

	ctl_printable(PQgetvalue(res, row, 1), type, sizeof(type));
	ctl_printable(PQgetvalue(res, row, 2), order, sizeof(order));
	ctl_printable(PQgetvalue(res, row, 3), currency, sizeof(currency));
	ctl_printable(PQgetvalue(res, row, 5), at, sizeof(at));
	if (t->json) {
		json_t *o = json_pack("{sI,ss,ss,ss,sI,ss}", "seq", (json_int_t)seq, "type", type,
		                      "order_id", order, "currency", currency, "total_cents",
		                      (json_int_t)total, "occurred_at", at);

		if (o) {
			json_dumpf(o, stdout, JSON_COMPACT);
			fputc('\n', stdout);
			json_decref(o);
		}
		return;
	}
	printf("%-10lld %-22s %-36s %-8s %12lld %s\n", seq, type, order, currency, total, at);
}

static int gap_take(struct tail *t, long long seq)
{
	for (size_t i = 0; i < t->ngaps; i++) {
		if (t->gaps[i].seq == seq) {
			t->gaps[i] = t->gaps[--t->ngaps];
			return 1;
		}
	}
	return 0;
}

static void gaps_note(struct tail *t, long long from, long long to)
{
	int64_t now = now_ms();

	if (!t->follow || to - from + 1 > GAP_JUMP_MAX)
		return;
	for (long long s = from; s <= to && t->ngaps < GAP_MAX; s++) {
		t->gaps[t->ngaps].seq = s;
		t->gaps[t->ngaps].since_ms = now;
		t->ngaps++;
	}
}

static void gaps_expire(struct tail *t)
{
	int64_t now = now_ms();

	for (size_t i = 0; i < t->ngaps;) {
		if (now - t->gaps[i].since_ms > GAP_WAIT_MS)
			t->gaps[i] = t->gaps[--t->ngaps];
		else
			i++;
	}
}

/* fill_gaps - show the rows that have appeared in the holes being watched. */
static int fill_gaps(struct tail *t)
{
	char list[GAP_SQL_MAX];
	const char *params[1] = {list};
	PGresult *res = NULL;
	size_t n = 0;
	int rc;

	gaps_expire(t);
	if (!t->ngaps)
		return ERR_OK;
	list[n++] = '{';
	for (size_t i = 0; i < t->ngaps; i++)
		n += (size_t)snprintf(list + n, sizeof(list) - n, "%s%lld", i ? "," : "",
		                      t->gaps[i].seq);
	snprintf(list + n, sizeof(list) - n, "}");
	rc = db_exec(t->db, COLUMNS "WHERE seq = ANY($1::bigint[]) ORDER BY seq", 1, params, &res);
	if (rc)
		return rc;
	for (int row = 0; row < PQntuples(res); row++) {
		if (gap_take(t, strtoll(PQgetvalue(res, row, 0), NULL, 10)))
			print_event(t, res, row);
	}
	PQclear(res);
	return ERR_OK;
}

/* next_page - show the rows after the highest seq shown; *rows says how many came. */
static int next_page(struct tail *t, int *rows)
{
	char after[24];
	const char *params[1] = {after};
	PGresult *res = NULL;
	int rc;

	snprintf(after, sizeof(after), "%lld", t->after);
	rc = db_exec(t->db, COLUMNS "WHERE seq > $1 ORDER BY seq LIMIT " EVENTS_PAGE_STR, 1, params,
	             &res);
	if (rc)
		return rc;
	*rows = PQntuples(res);
	for (int row = 0; row < *rows; row++) {
		long long seq = strtoll(PQgetvalue(res, row, 0), NULL, 10);

		gaps_note(t, t->after + 1, seq - 1);
		print_event(t, res, row);
		t->after = seq;
	}
	PQclear(res);
	return ERR_OK;
}

static int run(struct tail *t)
{
	int warned = 0;

	if (!t->json)
		printf("%-10s %-22s %-36s %-8s %12s %s\n", "SEQ", "TYPE", "ORDER_ID", "CURRENCY",
		       "TOTAL_CENTS", "OCCURRED_AT");
	for (;;) {
		int rows = 0, rc = fill_gaps(t);

		if (rc == ERR_OK)
			rc = next_page(t, &rows);
		if (fflush(stdout) != 0)
			return ctl_fail("cannot write the output");
		if (rc && !t->follow)
			return ctl_fail("cannot read order_events: %s", err_str(rc));
		if (rc && !warned)
			ctl_fail("cannot read order_events (%s); trying again every %ld ms",
			         err_str(rc), t->interval_ms);
		warned = rc != ERR_OK;
		if (rc == ERR_OK && rows == EVENTS_PAGE)
			continue;
		if (!t->follow)
			return CTL_OK;
		sleep_ms(t->interval_ms);
	}
}

int ctl_events(struct ctl *c, int argc, char **argv)
{
	static struct tail t;
	long after = 0;
	int rc;

	if (argc < 2 || strcmp(argv[1], "tail") != 0)
		return ctl_usage("events needs an action: tail");
	memset(&t, 0, sizeof(t));
	t.interval_ms = 1000;
	for (int i = 2; i < argc; i++) {
		rc = CTL_OK;
		if (!strcmp(argv[i], "--json"))
			t.json = 1;
		else if (!strcmp(argv[i], "--follow"))
			t.follow = 1;
		else if (!strcmp(argv[i], "--after"))
			rc = ctl_long_arg(argc, argv, &i, 0, LONG_MAX, &after);
		else if (!strcmp(argv[i], "--interval-ms"))
			rc = ctl_long_arg(argc, argv, &i, 50, 3600000, &t.interval_ms);
		else
			return ctl_usage("events tail: unknown argument '%s'", argv[i]);
		if (rc)
			return rc;
	}
	t.after = after;
	t.db = db_new(c->cfg.pg_dsn);
	if (!t.db)
		return ctl_fail("cannot connect to postgresql (ORDERS_PG_DSN)");
	rc = run(&t);
	db_free(t.db);
	return rc;
}
