/* follow.c: orders-bench's following of accepted orders to their final status, in PostgreSQL. */
#include "follow.h"
#include "util.h"

#include <errno.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include <libpq-fe.h>

/* Ids per query: a 185 KB array literal, well under any limit, few round trips. */
#define CHUNK 5000
#define POLL_S 0.5
/* Between polls only new final events are read; every order still pending is
 * looked up this often too, so that one without an event is seen as well. */
#define FULL_EVERY_S 15.0
#define EVENTS_LIMIT 20000
#define MAX_ORDERS 20000000L

const char *const follow_status_names[FOLLOW_STATUSES] = {"confirmed", "rejected", "payment_failed",
                                                          "expired"};

static const char final_sql[] =
    "SELECT order_id::text, status, client_id FROM orders WHERE order_id = ANY($1::uuid[]) "
    "AND status IN ('confirmed', 'rejected', 'payment_failed', 'expired')";
static const char events_since_sql[] =
    "SELECT e.seq, e.order_id::text, o.status, o.client_id FROM order_events e "
    "JOIN orders o ON o.order_id = e.order_id WHERE e.seq > $1::bigint ORDER BY e.seq LIMIT 20000";
static const char max_seq_sql[] = "SELECT coalesce(max(seq), 0) FROM order_events";
static const char events_sql[] = "SELECT order_id::text, count(*) FROM order_events "
                                 "WHERE order_id = ANY($1::uuid[]) GROUP BY order_id";
static const char keys_sql[] = "SELECT idempotency_key, order_id::text FROM orders "
                               "WHERE client_id = $2 AND idempotency_key = ANY($1::text[])";
static const char span_sql[] =
    "SELECT coalesce(extract(epoch FROM min(created_at)), 0)::float8, "
    "coalesce(extract(epoch FROM max(updated_at)), 0)::float8 FROM orders "
    "WHERE order_id = ANY($1::uuid[])";

int follow_key_ok(const char *s)
{
	size_t n = strlen(s);

	return n > 0 && n < FOLLOW_KEY_MAX &&
	       strspn(s, "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789._-") == n;
}

static int uuid_ok(const char *s)
{
	if (strlen(s) != FOLLOW_ID_LEN)
		return 0;
	for (int i = 0; i < FOLLOW_ID_LEN; i++) {
		int dash = i == 8 || i == 13 || i == 18 || i == 23;

		if (dash ? s[i] != '-' : !strchr("0123456789abcdef", s[i]))
			return 0;
	}
	return 1;
}

static int by_id(const void *a, const void *b)
{
	return strcmp(((const struct follow_order *)a)->order_id,
	              ((const struct follow_order *)b)->order_id);
}

static struct follow_order *find_id(struct follow_order *orders, long n, const char *id)
{
	struct follow_order key;

	snprintf(key.order_id, sizeof(key.order_id), "%s", id);
	return bsearch(&key, orders, (size_t)n, sizeof(*orders), by_id);
}

static int by_key(const void *a, const void *b)
{
	return strcmp((*(struct follow_order *const *)a)->key,
	              (*(struct follow_order *const *)b)->key);
}

/* An array literal of the ids (or keys) of list[0..n); both need no quoting. */
static char *array_literal(struct follow_order *const *list, long n, int keys)
{
	size_t size = (size_t)n * (FOLLOW_KEY_MAX + 1) + 3, len = 1;
	char *s = malloc(size);

	if (!s)
		return NULL;
	s[0] = '{';
	for (long i = 0; i < n; i++) {
		const char *v = keys ? list[i]->key : list[i]->order_id;
		size_t vl = strlen(v);

		if (i)
			s[len++] = ',';
		memcpy(s + len, v, vl);
		len += vl;
	}
	s[len++] = '}';
	s[len] = '\0';
	return s;
}

/* Run sql with the literal of list[0..n) as $1 (and extra as $2, when given). */
static PGresult *query_chunk(PGconn *db, const char *sql, struct follow_order *const *list, long n,
                             int keys, const char *extra)
{
	const char *params[2];
	char *lit = array_literal(list, n, keys);
	PGresult *res;

	if (!lit) {
		fprintf(stderr, "orders-bench: out of memory\n");
		return NULL;
	}
	params[0] = lit;
	params[1] = extra;
	res = PQexecParams(db, sql, extra ? 2 : 1, NULL, params, NULL, NULL, 0);
	free(lit);
	if (PQresultStatus(res) != PGRES_TUPLES_OK) {
		fprintf(stderr, "orders-bench: query failed: %s", PQerrorMessage(db));
		PQclear(res);
		return NULL;
	}
	return res;
}

static int status_index(const char *s)
{
	for (int i = 0; i < FOLLOW_STATUSES; i++) {
		if (strcmp(s, follow_status_names[i]) == 0)
			return i;
	}
	return -1;
}

/* o has reached status (when it is a final one): count it, once. */
static void mark_final(struct follow_order *o, const char *status, const char *client,
                       char *client_id, size_t client_size, struct follow_result *r)
{
	int k = status_index(status);

	if (!o || o->final || k < 0)
		return;
	o->final = 1;
	r->final++;
	r->statuses[k]++;
	if (!client_id[0])
		snprintf(client_id, client_size, "%s", client);
}

static void compact(struct follow_order **pending, long *npending)
{
	long kept = 0;

	for (long i = 0; i < *npending; i++) {
		if (!pending[i]->final)
			pending[kept++] = pending[i];
	}
	*npending = kept;
}

/* Every order not yet final, looked up by id; pending is compacted in place. */
static int poll_pending(PGconn *db, struct follow_order *orders, long n,
                        struct follow_order **pending, long *npending, char *client_id,
                        size_t client_size, struct follow_result *r)
{
	for (long at = 0; at < *npending; at += CHUNK) {
		long m = *npending - at < CHUNK ? *npending - at : CHUNK;
		PGresult *res = query_chunk(db, final_sql, pending + at, m, 0, NULL);

		if (!res)
			return -1;
		for (int row = 0; row < PQntuples(res); row++)
			mark_final(find_id(orders, n, PQgetvalue(res, row, 0)),
			           PQgetvalue(res, row, 1), PQgetvalue(res, row, 2), client_id,
			           client_size, r);
		PQclear(res);
	}
	compact(pending, npending);
	return 0;
}

/*
 * The final events recorded after *seq (moved on): a query that costs what is
 * new, not what is pending, so that following 100,000 orders does not load the
 * database being measured.
 */
static int poll_events(PGconn *db, struct follow_order *orders, long n, long long *seq,
                       char *client_id, size_t client_size, struct follow_result *r)
{
	for (;;) {
		char after[32];
		const char *params[1] = {after};
		PGresult *res;
		int rows;

		snprintf(after, sizeof(after), "%lld", *seq);
		res = PQexecParams(db, events_since_sql, 1, NULL, params, NULL, NULL, 0);
		if (PQresultStatus(res) != PGRES_TUPLES_OK) {
			fprintf(stderr, "orders-bench: query failed: %s", PQerrorMessage(db));
			PQclear(res);
			return -1;
		}
		rows = PQntuples(res);
		for (int row = 0; row < rows; row++) {
			long long at = strtoll(PQgetvalue(res, row, 0), NULL, 10);

			if (at > *seq)
				*seq = at;
			mark_final(find_id(orders, n, PQgetvalue(res, row, 1)),
			           PQgetvalue(res, row, 2), PQgetvalue(res, row, 3), client_id,
			           client_size, r);
		}
		PQclear(res);
		if (rows < EVENTS_LIMIT)
			return 0;
	}
}

static int max_seq(PGconn *db, long long *seq)
{
	PGresult *res = PQexec(db, max_seq_sql);

	if (PQresultStatus(res) != PGRES_TUPLES_OK || PQntuples(res) != 1) {
		fprintf(stderr, "orders-bench: query failed: %s", PQerrorMessage(db));
		PQclear(res);
		return -1;
	}
	*seq = strtoll(PQgetvalue(res, 0, 0), NULL, 10);
	PQclear(res);
	return 0;
}

/* Final events per order, and the order each key has, against what the 202s said. */
static int check_duplicates(PGconn *db, struct follow_order *orders, long n,
                            struct follow_order **list, const char *client_id,
                            struct follow_result *r)
{
	long with_event = 0;

	for (long i = 0; i < n; i++)
		list[i] = &orders[i];
	for (long at = 0; at < n; at += CHUNK) {
		long m = n - at < CHUNK ? n - at : CHUNK;
		PGresult *res = query_chunk(db, events_sql, list + at, m, 0, NULL);

		if (!res)
			return -1;
		for (int row = 0; row < PQntuples(res); row++) {
			const struct follow_order *o = find_id(orders, n, PQgetvalue(res, row, 0));
			long count = strtol(PQgetvalue(res, row, 1), NULL, 10);

			/* Orders that became final after the last poll are not counted final. */
			if (o && o->final)
				with_event++;
			if (count > 1)
				r->dup_events++;
		}
		PQclear(res);
		res = query_chunk(db, span_sql, list + at, m, 0, NULL);
		if (!res)
			return -1;
		if (PQntuples(res) == 1) {
			double first = strtod(PQgetvalue(res, 0, 0), NULL);
			double last = strtod(PQgetvalue(res, 0, 1), NULL);

			if (first > 0 && (r->first_created == 0 || first < r->first_created))
				r->first_created = first;
			if (last > r->last_final)
				r->last_final = last;
		}
		PQclear(res);
	}
	r->no_event = r->final - with_event;

	/* Keys: every order row a key has must be the one its 202 named. */
	qsort(list, (size_t)n, sizeof(*list), by_key);
	for (long at = 0; client_id[0] && at < n; at += CHUNK) {
		long m = n - at < CHUNK ? n - at : CHUNK;
		PGresult *res = query_chunk(db, keys_sql, list + at, m, 1, client_id);

		if (!res)
			return -1;
		for (int row = 0; row < PQntuples(res); row++) {
			struct follow_order probe, *pp = &probe, **hit;

			snprintf(probe.key, sizeof(probe.key), "%s", PQgetvalue(res, row, 0));
			hit = bsearch(&pp, list + at, (size_t)m, sizeof(*list), by_key);
			if (hit && strcmp((*hit)->order_id, PQgetvalue(res, row, 1)) != 0)
				r->duplicated++;
		}
		PQclear(res);
	}
	return 0;
}

int follow_run(const char *dsn, struct follow_order *orders, long n, double stall_s, double max_s,
               FILE *progress, struct follow_result *out)
{
	struct follow_result r;
	struct follow_order **pending = NULL;
	char client_id[128] = "";
	double start = util_wall(), last_change = start, last_line = start, last_full;
	long long seq = 0;
	long npending = n, last_final = 0;
	PGconn *db = NULL;
	int rc = -1;

	memset(&r, 0, sizeof(r));
	r.orders = n;
	db = PQconnectdb(dsn ? dsn : "");
	if (PQstatus(db) != CONNECTION_OK) {
		fprintf(stderr, "orders-bench: cannot connect to PostgreSQL: %s",
		        PQerrorMessage(db));
		goto out;
	}
	qsort(orders, (size_t)n, sizeof(*orders), by_id);
	pending = malloc((size_t)(n ? n : 1) * sizeof(*pending));
	if (!pending) {
		fprintf(stderr, "orders-bench: out of memory\n");
		goto out;
	}
	for (long i = 0; i < n; i++) {
		orders[i].final = 0;
		pending[i] = &orders[i];
	}
	/* The events' position first: what happens during the full pass is read again. */
	if (max_seq(db, &seq) != 0 ||
	    poll_pending(db, orders, n, pending, &npending, client_id, sizeof(client_id), &r) != 0)
		goto out;
	last_full = util_wall();
	for (;;) {
		double now = util_wall();
		int stalled, capped;

		if (r.final != last_final) {
			last_final = r.final;
			last_change = now;
		}
		if (progress && (now - last_line >= 1.0 || npending == 0)) {
			last_line = now;
			fprintf(progress,
			        "orders-bench: follow %4.0fs: %ld/%ld final, %ld pending\n",
			        now - start, r.final, n, npending);
			fflush(progress);
		}
		if (npending == 0)
			break;
		stalled = now - last_change >= stall_s;
		capped = max_s > 0 && now - start >= max_s;
		if (stalled || capped) {
			long before = r.final;

			/* A last look at every pending order, with or without an event. */
			if (poll_pending(db, orders, n, pending, &npending, client_id,
			                 sizeof(client_id), &r) != 0)
				goto out;
			if (r.final != before)
				stalled = 0;
			if (!stalled && !capped)
				continue;
			r.capped = capped && !stalled && npending > 0;
			break;
		}
		util_sleep(POLL_S);
		if (poll_events(db, orders, n, &seq, client_id, sizeof(client_id), &r) != 0)
			goto out;
		compact(pending, &npending);
		if (util_wall() - last_full >= FULL_EVERY_S) {
			if (poll_pending(db, orders, n, pending, &npending, client_id,
			                 sizeof(client_id), &r) != 0)
				goto out;
			last_full = util_wall();
		}
	}
	r.not_final = npending;
	r.lost = r.capped ? 0 : npending;
	r.elapsed_s = util_wall() - start;
	if (check_duplicates(db, orders, n, pending, client_id, &r) != 0)
		goto out;
	*out = r;
	rc = 0;
out:
	free(pending);
	PQfinish(db);
	return rc;
}

int follow_write_ids(const char *path, const struct follow_order *orders, long n)
{
	FILE *f = fopen(path, "w");

	if (!f) {
		fprintf(stderr, "orders-bench: cannot write '%s': %s\n", path, strerror(errno));
		return -1;
	}
	for (long i = 0; i < n; i++)
		fprintf(f, "%s\t%s\n", orders[i].key, orders[i].order_id);
	if (fclose(f) != 0) {
		fprintf(stderr, "orders-bench: cannot write '%s': %s\n", path, strerror(errno));
		return -1;
	}
	return 0;
}

int follow_read_ids(const char *path, struct follow_order **orders, long *n)
{
	FILE *f = fopen(path, "r");
	char line[256];
	long cap = *n, lineno = 0;
	int rc = -1;

	if (!f) {
		fprintf(stderr, "orders-bench: cannot read '%s': %s\n", path, strerror(errno));
		return -1;
	}
	while (fgets(line, sizeof(line), f)) {
		char *tab = strchr(line, '\t');
		struct follow_order *o;

		lineno++;
		line[strcspn(line, "\r\n")] = '\0';
		if (!tab || (*tab = '\0', !follow_key_ok(line)) || !uuid_ok(tab + 1)) {
			fprintf(stderr, "orders-bench: %s:%ld: not a key<TAB>order_id line\n", path,
			        lineno);
			goto out;
		}
		if (*n == cap) {
			struct follow_order *grown;

			cap = cap ? cap * 2 : 4096;
			grown = cap <= MAX_ORDERS ? realloc(*orders, (size_t)cap * sizeof(**orders))
			                          : NULL;
			if (!grown) {
				fprintf(stderr, "orders-bench: %s: too many orders\n", path);
				goto out;
			}
			*orders = grown;
		}
		o = &(*orders)[(*n)++];
		snprintf(o->key, sizeof(o->key), "%s", line);
		snprintf(o->order_id, sizeof(o->order_id), "%s", tab + 1);
		o->final = 0;
	}
	rc = ferror(f) ? -1 : 0;
out:
	fclose(f);
	return rc;
}
