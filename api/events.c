/* events.c: the finance routes: GET /v1/order-events (JSON or CSV) and GET /v1/reconciliation. */
#include "api.h"

#include <ctype.h>
#include <errno.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "err.h"
#include "parse.h"

/*
 * Both routes read order_events from PostgreSQL, each with one statement,
 * so each answer comes from one snapshot. The feed is safe to page by seq
 * because events become visible in seq order (migrations/0007): a snapshot
 * sees every committed event up to its highest seq, so "seq > after ORDER
 * BY seq" never skips one that commits later, and next_after never passes
 * one.
 */

#define EVENTS_LIMIT_DEFAULT 100
#define EVENTS_LIMIT_MAX 1000
/* A CSV page: 1,000 events of at most 100 lines each stay well below. */
#define CSV_MAX (32 * 1024 * 1024)
/* The PostgreSQL text[] literal of every type, each once. */
#define TYPES_ARRAY_MAX EVENTS_TYPES_MAX

static const char *const event_types[] = {"order.confirmed", "order.rejected",
                                          "order.payment_failed", "order.expired"};
#define NTYPES (sizeof(event_types) / sizeof(event_types[0]))

static const char csv_header[] =
    "seq,event_id,type,order_id,customer_id,currency,total_cents,items,occurred_at\r\n";

/* One page; $3 NULL means every type. */
static const char page_sql[] =
    "SELECT seq, event_id::text, type, order_id::text, customer_id, currency, total_cents, "
    "items::text, to_char(occurred_at AT TIME ZONE 'UTC', 'YYYY-MM-DD\"T\"HH24:MI:SS.MS\"Z\"') "
    "FROM order_events WHERE seq > $1::bigint "
    "AND ($3::text[] IS NULL OR type = ANY ($3::text[])) ORDER BY seq LIMIT $2::int";

/*
 * The day's figures per currency and the feed's highest seq, in one
 * statement (one snapshot): the figures are exactly the sums over the
 * day's events with seq <= last_seq.
 */
static const char reconciliation_sql[] =
    "SELECT json_build_object('date', $1::text, 'currencies', "
    "coalesce((SELECT json_agg(json_build_object('currency', c.currency, "
    "'confirmed_count', c.confirmed_count, 'confirmed_total_cents', c.confirmed_total_cents, "
    "'rejected_count', c.rejected_count, 'payment_failed_count', c.payment_failed_count, "
    "'expired_count', c.expired_count) ORDER BY c.currency) "
    "FROM (SELECT e.currency, "
    "count(*) FILTER (WHERE e.type = 'order.confirmed') AS confirmed_count, "
    "coalesce(sum(e.total_cents) FILTER (WHERE e.type = 'order.confirmed'), 0) "
    "AS confirmed_total_cents, "
    "count(*) FILTER (WHERE e.type = 'order.rejected') AS rejected_count, "
    "count(*) FILTER (WHERE e.type = 'order.payment_failed') AS payment_failed_count, "
    "count(*) FILTER (WHERE e.type = 'order.expired') AS expired_count "
    "FROM order_events e "
    "WHERE e.occurred_at >= $1::date::timestamp AT TIME ZONE 'UTC' "
    "AND e.occurred_at < ($1::date + 1)::timestamp AT TIME ZONE 'UTC' "
    "GROUP BY e.currency) c), '[]'::json), "
    "'last_seq', (SELECT coalesce(max(seq), 0) FROM order_events))::text";

/* ---- query parameters ------------------------------------------------------ */

/* s as a whole number from min to max (digits only, no sign, no spaces). */
static int parse_count(const char *s, long long min, long long max, long long *out)
{
	unsigned long long v;
	char *end;

	if (!s[0] || strlen(s) > 19)
		return ERR_INVALID;
	for (const char *p = s; *p; p++)
		if (!isdigit((unsigned char)*p))
			return ERR_INVALID;
	errno = 0;
	v = strtoull(s, &end, 10);
	if (errno || *end || v < (unsigned long long)min || v > (unsigned long long)max)
		return ERR_INVALID;
	*out = (long long)v;
	return ERR_OK;
}

/*
 * types ("order.confirmed,order.expired") as a text[] literal into out:
 * every element one of event_types, none empty; duplicates are harmless.
 */
static int parse_types(const char *s, char *out, size_t outlen)
{
	int seen[NTYPES] = {0};
	struct buf b;
	const char *p = s;
	size_t i;
	int rc = ERR_OK, first = 1;

	for (;;) {
		size_t n = strcspn(p, ",");

		for (i = 0; i < NTYPES; i++)
			if (strlen(event_types[i]) == n && strncmp(p, event_types[i], n) == 0)
				break;
		if (i == NTYPES)
			return ERR_INVALID;
		seen[i] = 1;
		if (!p[n])
			break;
		p += n + 1;
	}
	buf_init(&b, outlen - 1);
	rc = buf_append_str(&b, "{");
	for (i = 0; !rc && i < NTYPES; i++) {
		if (!seen[i])
			continue;
		rc = buf_printf(&b, "%s%s", first ? "" : ",", event_types[i]);
		first = 0;
	}
	if (!rc)
		rc = buf_append_str(&b, "}");
	if (!rc)
		memcpy(out, b.data, b.len + 1);
	buf_release(&b);
	return rc;
}

/*
 * How specifically the media range range[0..len) names type: 2 by name, 1
 * as its main type with any subtype, 0 as any type at all, -1 not at all.
 */
static int range_spec(const char *range, size_t len, const char *type)
{
	size_t tlen = (size_t)(strchr(type, '/') - type);

	while (len && isspace((unsigned char)*range)) {
		range++;
		len--;
	}
	while (len && isspace((unsigned char)range[len - 1]))
		len--;
	if (len == strlen(type) && strncasecmp(range, type, len) == 0)
		return 2;
	if (len == tlen + 2 && strncasecmp(range, type, tlen + 1) == 0 && range[tlen + 1] == '*')
		return 1;
	if (len == 3 && strncmp(range, "*/*", 3) == 0)
		return 0;
	return -1;
}

/*
 * How an Accept header takes type: the q (0..1000) of the most specific
 * media range that matches it, -1 when none does, and that specificity.
 */
static void accept_match(const char *accept, const char *type, int *q_out, int *spec_out)
{
	int best_q = -1, best_spec = -1;

	while (*accept) {
		size_t n = strcspn(accept, ",");
		size_t rlen = strcspn(accept, ";,");
		int spec = range_spec(accept, rlen, type);

		if (spec > best_spec) {
			const char *q = rlen < n ? strstr(accept + rlen, "q=") : NULL;
			double v = q && q < accept + n ? strtod(q + 2, NULL) : 1.0;

			best_spec = spec;
			best_q = v <= 0 ? 0 : v >= 1 ? 1000 : (int)(v * 1000 + 0.5);
		}
		accept += n;
		if (*accept == ',')
			accept++;
	}
	*q_out = best_q;
	*spec_out = best_spec;
}

/*
 * 1 when the client prefers text/csv to application/json: a higher q, or
 * the same q with a more specific range ("text/csv" beside a wildcard).
 * JSON otherwise, also without an Accept header.
 */
int events_wants_csv(const char *accept)
{
	int qc, sc, qj, sj;

	if (!accept)
		return 0;
	accept_match(accept, "text/csv", &qc, &sc);
	accept_match(accept, "application/json", &qj, &sj);
	if (qc <= 0)
		return 0;
	return qc > qj || (qc == qj && sc > sj);
}

/* ---- the feed ---------------------------------------------------------------- */

/*
 * One CSV field (RFC 4180): quoted, with quotes doubled, when it needs to be.
 * Finance opens the file in spreadsheets, which take a field beginning with
 * =, +, -, @, a tab or a carriage return as a formula: such a field gets a
 * single quote in front (and quotes around), which spreadsheets show as text
 * (OWASP's advice on CSV injection). No number in the feed is negative, so
 * only text is ever changed; the JSON feed has the value as stored.
 */
static int csv_field(struct buf *b, const char *s, int last)
{
	int rc = ERR_OK;
	int formula = s[0] && strchr("=+-@\t\r", s[0]);

	if (formula || strpbrk(s, ",\"\r\n")) {
		rc = buf_append_str(b, formula ? "\"'" : "\"");
		while (!rc && *s) {
			size_t n = strcspn(s, "\"");

			rc = buf_append(b, s, n);
			s += n;
			if (!rc && *s) {
				rc = buf_append_str(b, "\"\"");
				s++;
			}
		}
		if (!rc)
			rc = buf_append_str(b, "\"");
	} else {
		rc = buf_append_str(b, s);
	}
	if (!rc)
		rc = buf_append_str(b, last ? "\r\n" : ",");
	return rc;
}

/* Row i of the page: items compacted (the column holds JSONB's spaced text). */
static json_t *row_items(const PGresult *res, int i)
{
	return json_loads(PQgetvalue(res, i, 7), 0, NULL);
}

static int csv_row(struct buf *b, const PGresult *res, int i)
{
	json_t *items = row_items(res, i);
	char *text = items ? json_dumps(items, JSON_COMPACT) : NULL;
	int rc = text ? ERR_OK : ERR_NOMEM, col;

	json_decref(items);
	for (col = 0; !rc && col < 9; col++)
		rc = csv_field(b, col == 7 ? text : PQgetvalue(res, i, col), col == 8);
	free(text);
	return rc;
}

static json_t *json_row(const PGresult *res, int i)
{
	json_t *items = row_items(res, i);

	if (!items)
		return NULL;
	return json_pack("{s:I, s:s, s:s, s:s, s:s, s:s, s:I, s:o, s:s}", "seq",
	                 (json_int_t)strtoll(PQgetvalue(res, i, 0), NULL, 10), "event_id",
	                 PQgetvalue(res, i, 1), "type", PQgetvalue(res, i, 2), "order_id",
	                 PQgetvalue(res, i, 3), "customer_id", PQgetvalue(res, i, 4), "currency",
	                 PQgetvalue(res, i, 5), "total_cents",
	                 (json_int_t)strtoll(PQgetvalue(res, i, 6), NULL, 10), "items", items,
	                 "occurred_at", PQgetvalue(res, i, 8));
}

static enum MHD_Result respond_csv(struct request *r, const PGresult *res,
                                   const char *const *headers)
{
	enum MHD_Result ret;
	struct buf b;
	int rc, i;

	buf_init(&b, CSV_MAX);
	rc = buf_append_str(&b, csv_header);
	for (i = 0; !rc && i < PQntuples(res); i++)
		rc = csv_row(&b, res, i);
	if (rc) {
		buf_release(&b);
		return respond_error(r, 500, "internal", "cannot write the page as CSV", NULL);
	}
	ret = respond_text(r, 200, "text/csv; charset=utf-8", b.data, b.len, headers);
	buf_release(&b);
	return ret;
}

static enum MHD_Result respond_page(struct request *r, const PGresult *res, long long next_after,
                                    int csv)
{
	char next[24];
	const char *const headers[] = {"X-Next-After", next, "Vary", "Accept", NULL};
	json_t *events, *row;
	int i;

	snprintf(next, sizeof(next), "%lld", next_after);
	if (csv)
		return respond_csv(r, res, headers);
	events = json_array();
	for (i = 0; events && i < PQntuples(res); i++) {
		row = json_row(res, i);
		if (!row || json_array_append_new(events, row)) {
			json_decref(events);
			events = NULL;
		}
	}
	if (!events)
		return respond_error(r, 500, "internal", "cannot write the page", NULL);
	return respond_obj(
	    r, 200, json_pack("{s:o, s:I}", "events", events, "next_after", (json_int_t)next_after),
	    headers);
}

int events_parse_query(const char *after, const char *limit, const char *types,
                       struct events_query *q, struct api_error *e)
{
	q->after = 0;
	q->limit = EVENTS_LIMIT_DEFAULT;
	q->has_types = 0;
	if (after && parse_count(after, 0, INT64_MAX, &q->after))
		return api_error_set(e, 422, "validation_error", "after",
		                     "'after' must be a seq: a whole number from 0");
	if (limit && parse_count(limit, 1, EVENTS_LIMIT_MAX, &q->limit))
		return api_error_set(e, 422, "validation_error", "limit",
		                     "'limit' must be an integer from 1 to 1000");
	if (types) {
		if (parse_types(types, q->types, sizeof(q->types)))
			return api_error_set(e, 422, "validation_error", "types",
			                     "'types' must be a comma-separated list of "
			                     "order.confirmed, order.rejected, "
			                     "order.payment_failed, order.expired");
		q->has_types = 1;
	}
	return ERR_OK;
}

enum MHD_Result events_list(struct request *r)
{
	enum MHD_Result result;
	struct events_query q;
	struct api_error perr;
	char after[24], limit[16];
	const char *params[3] = {after, limit, NULL};
	long long next_after;
	PGresult *res = NULL;
	struct db *d;
	int rc, n;

	if (require_role(r, ROLE_FINANCE, &result) != ERR_OK)
		return result;
	if (events_parse_query(MHD_lookup_connection_value(r->conn, MHD_GET_ARGUMENT_KIND, "after"),
	                       MHD_lookup_connection_value(r->conn, MHD_GET_ARGUMENT_KIND, "limit"),
	                       MHD_lookup_connection_value(r->conn, MHD_GET_ARGUMENT_KIND, "types"),
	                       &q, &perr) != ERR_OK)
		return respond_api_error(r, &perr);
	if (q.has_types)
		params[2] = q.types;
	snprintf(after, sizeof(after), "%lld", q.after);
	snprintf(limit, sizeof(limit), "%lld", q.limit);

	d = db_pool_get(r->api->db);
	if (!d)
		return respond_unavailable(r, "the database");
	rc = db_exec(d, page_sql, 3, params, &res);
	db_pool_put(r->api->db, d);
	if (rc != ERR_OK)
		return respond_unavailable(r, "the database");
	n = PQntuples(res);
	/* The last seq handed out, or the cursor itself: always safe to pass back. */
	next_after = n ? strtoll(PQgetvalue(res, n - 1, 0), NULL, 10) : q.after;
	result = respond_page(
	    r, res, next_after,
	    events_wants_csv(MHD_lookup_connection_value(r->conn, MHD_HEADER_KIND, "Accept")));
	PQclear(res);
	return result;
}

/* ---- reconciliation ------------------------------------------------------------ */

/* 1 when s is a calendar date YYYY-MM-DD (years 0001 to 9999). */
static int valid_date(const char *s)
{
	static const int days[] = {31, 28, 31, 30, 31, 30, 31, 31, 30, 31, 30, 31};
	int y, m, d, i, leap;

	if (strlen(s) != 10 || s[4] != '-' || s[7] != '-')
		return 0;
	for (i = 0; i < 10; i++)
		if (i != 4 && i != 7 && !isdigit((unsigned char)s[i]))
			return 0;
	y = atoi(s);
	m = atoi(s + 5);
	d = atoi(s + 8);
	leap = (y % 4 == 0 && y % 100 != 0) || y % 400 == 0;
	return y >= 1 && m >= 1 && m <= 12 && d >= 1 && d <= days[m - 1] + (m == 2 && leap ? 1 : 0);
}

int events_parse_date(const char *date, struct api_error *e)
{
	if (!date || !valid_date(date))
		return api_error_set(e, 422, "validation_error", "date",
		                     "'date' must be a calendar date, YYYY-MM-DD");
	return ERR_OK;
}

enum MHD_Result reconciliation_get(struct request *r)
{
	enum MHD_Result result;
	struct api_error perr;
	const char *date;
	PGresult *res = NULL;
	json_t *doc;
	struct db *d;
	int rc;

	if (require_role(r, ROLE_FINANCE, &result) != ERR_OK)
		return result;
	date = MHD_lookup_connection_value(r->conn, MHD_GET_ARGUMENT_KIND, "date");
	if (events_parse_date(date, &perr) != ERR_OK)
		return respond_api_error(r, &perr);
	d = db_pool_get(r->api->db);
	if (!d)
		return respond_unavailable(r, "the database");
	rc = db_exec(d, reconciliation_sql, 1, &date, &res);
	db_pool_put(r->api->db, d);
	if (rc != ERR_OK)
		return respond_unavailable(r, "the database");
	/* Parsed and written again: PostgreSQL's JSON text is spaced. */
	doc = PQntuples(res) == 1 ? json_loads(PQgetvalue(res, 0, 0), 0, NULL) : NULL;
	PQclear(res);
	if (!doc)
		return respond_error(r, 500, "internal", "cannot read the figures", NULL);
	return respond_obj(r, 200, doc, NULL);
}
