/*
 * it_injection.c: SQL injection strings (and quotes, backslashes, dollar quoting, format
 * strings, markup, formulas, Unicode) in every text field the API stores, within each
 * field's rules, are stored and returned as plain data: byte for byte through products,
 * carts, orders and the finance feed (JSON and CSV) and in PostgreSQL, whose tables are
 * all still there.
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>

#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include "csv.h"
#include "db.h"
#include "e2e.h"
#include "err.h"

#define DEFAULT_PG "postgresql://orders@127.0.0.1:5442/orders"
#define E2E_FINANCE "Authorization: Bearer dev-finance"

/* Each within every field's rules: at most 128 bytes, no NUL. */
static const char *const payloads[] = {
    "'; DROP TABLE orders;--",
    "' OR '1'='1",
    "\" OR \"\"=\"",
    "Robert'); DROP TABLE carts;--",
    "\\'; DELETE FROM products WHERE ''='",
    "C:\\new\\table \\x27 \\\\ \\",
    "$$; DROP TABLE order_events; $$",
    "$tag$ ' $tag$; TRUNCATE products CASCADE;--",
    "1; SELECT pg_sleep(30);--",
    "Zo\xc3\xab \xe2\x80\x9csmart\xe2\x80\x9d \xe2\x80\x98quotes\xe2\x80\x99 \xe2\x80\x94 "
    "\xe2\x9c\x93 \xf0\x9f\x98\x80 \xce\xa9'; DROP TABLE orders;--",
    "=HYPERLINK(\"http://example.com/x\",\"click\")",
    "+1+cmd|' /C calc'!A0",
    "-2+3",
    "@SUM(1+1)*cmd|' /C calc'!A0",
    "%s%n%x%d {{7*7}} ${7*7} <script>alert(1)</script>",
    "multi\r\nline, with \"quotes\", commas\tand tabs",
    "\\u0000 \\0 \\x00 %00 ' --",
};
#define N (sizeof(payloads) / sizeof(payloads[0]))

static struct db *db;
static char run_id[32];

struct item {
	char sku[64];
	char idem[300];
	char rid[80];
	char email[300];
	char *cart_id;
	char *order_id;
};
static struct item items[N];

/* ---- helpers ---------------------------------------------------------------------- */

/* A request with a JSON body (or none); its parsed answer when the status is want. */
static json_t *call(const char *method, const char *path, const char *const *headers, json_t *body,
                    int want, struct http_response *keep)
{
	char *text = body ? json_dumps(body, JSON_COMPACT) : NULL;
	struct http_response r;
	json_t *j;

	assert_int_equal(http_request(method, path, headers, text, text ? strlen(text) : 0, &r), 0);
	if (r.status != want)
		fprintf(stderr, "%s %s answered %d, want %d: %s\n", method, path, r.status, want,
		        r.body);
	assert_int_equal(r.status, want);
	free(text);
	json_decref(body);
	j = http_json(&r);
	if (keep)
		*keep = r;
	else
		http_response_release(&r);
	return j;
}

static void expect_str(json_t *obj, const char *key, const char *want)
{
	const char *got = json_string_value(json_object_get(obj, key));

	if (!got || strcmp(got, want) != 0)
		fail_msg("'%s' came back as '%s', sent '%s'", key, got ? got : "(none)", want);
}

/* One text value from PostgreSQL: the first column of the first row. */
static char *sql_text(const char *q, int n, const char *const *p)
{
	PGresult *r = NULL;
	char *v;

	assert_int_equal(db_exec(db, q, n, p, &r), ERR_OK);
	assert_int_equal(PQntuples(r), 1);
	v = strdup(PQgetvalue(r, 0, 0));
	PQclear(r);
	assert_non_null(v);
	return v;
}

static void expect_sql(const char *q, const char *param, const char *want)
{
	const char *p[] = {param};
	char *got = sql_text(q, 1, p);

	if (strcmp(got, want) != 0)
		fail_msg("%s stored '%s', sent '%s'", q, got, want);
	free(got);
}

/* s with every byte outside printable ASCII (and, when strict, spaces, quotes
 * and backslashes, which a request id may not hold) replaced by '_', at most
 * max bytes. */
static void printable(char *out, size_t max, const char *s, int strict)
{
	size_t i;

	for (i = 0; s[i] && i < max; i++) {
		char c = s[i];

		out[i] =
		    c < ' ' || c > '~' || (strict && (c == ' ' || c == '"' || c == '\\')) ? '_' : c;
	}
	out[i] = '\0';
}

/* ---- the test --------------------------------------------------------------------- */

static void put_products(void)
{
	const char *admin[] = {E2E_ADMIN, E2E_JSON, NULL};
	const char *client[] = {E2E_CLIENT, NULL};
	char path[128];
	json_t *j, *list;
	size_t i, k, seen = 0;

	for (i = 0; i < N; i++) {
		snprintf(items[i].sku, sizeof(items[i].sku), "INJ-%s-%02zu", run_id, i);
		snprintf(path, sizeof(path), "/v1/products/%.63s", items[i].sku);
		j = call("PUT", path, admin,
		         json_pack("{s:s, s:i, s:s, s:i}", "name", payloads[i], "price_cents", 100,
		                   "currency", "USD", "stock", 10),
		         201, NULL);
		expect_str(j, "name", payloads[i]);
		json_decref(j);
		j = call("GET", path, client, NULL, 200, NULL);
		expect_str(j, "name", payloads[i]);
		json_decref(j);
		expect_sql("SELECT name FROM products WHERE sku = $1", items[i].sku, payloads[i]);
	}
	/* The catalog's list shows them too. */
	snprintf(path, sizeof(path), "/v1/products?after=INJ-%s-&limit=100", run_id);
	list = call("GET", path, client, NULL, 200, NULL);
	json_array_foreach(json_object_get(list, "products"), k, j)
	{
		const char *sku = json_string_value(json_object_get(j, "sku"));

		for (i = 0; i < N; i++) {
			if (strcmp(sku, items[i].sku) == 0) {
				expect_str(j, "name", payloads[i]);
				seen++;
			}
		}
	}
	assert_int_equal(seen, N);
	json_decref(list);
}

static void make_carts(void)
{
	const char *client[] = {E2E_CLIENT, E2E_JSON, NULL};
	char path[96];
	json_t *j;
	size_t i;

	for (i = 0; i < N; i++) {
		j = call("POST", "/v1/carts", client,
		         json_pack("{s:s, s:s, s:[{s:s, s:i}]}", "customer_id", payloads[i],
		                   "currency", "USD", "items", "sku", items[i].sku, "quantity", 1),
		         201, NULL);
		expect_str(j, "customer_id", payloads[i]);
		items[i].cart_id = strdup(json_string_value(json_object_get(j, "cart_id")));
		json_decref(j);
		snprintf(path, sizeof(path), "/v1/carts/%s", items[i].cart_id);
		j = call("GET", path, client, NULL, 200, NULL);
		expect_str(j, "customer_id", payloads[i]);
		json_decref(j);
	}
}

static void check_out(void)
{
	char idem_h[320], rid_h[100], rid[80], part[41];
	size_t i;

	for (i = 0; i < N; i++) {
		struct item *it = &items[i];
		const char *h[] = {E2E_CLIENT, E2E_JSON, idem_h, rid_h, NULL};
		const char *p = payloads[i];
		struct http_response r;
		char key[200];
		json_t *j;

		/* The key is printable ASCII, the request id that without quotes or
		 * backslashes, at most 64: each as much of the payload as fits. */
		printable(key, 200, p, 0);
		snprintf(it->idem, sizeof(it->idem), "%s #%s-%zu", key, run_id, i);
		printable(part, 40, p, 1);
		snprintf(it->rid, sizeof(it->rid), "%s#%zu", part, i);
		snprintf(it->email, sizeof(it->email), "%s%s", p,
		         strchr(p, '@') ? "" : "@example.com");
		snprintf(idem_h, sizeof(idem_h), "Idempotency-Key: %s", it->idem);
		snprintf(rid_h, sizeof(rid_h), "X-Request-Id: %s", it->rid);
		j = call("POST", "/v1/checkouts", h,
		         json_pack("{s:[{s:s, s:i}], s:s, s:{s:s, s:s}, "
		                   "s:{s:s, s:s, s:s, s:s, s:s, s:s}, "
		                   "s:{s:{s:s, s:i, s:i, s:s}}}",
		                   "items", "sku", it->sku, "quantity", 1, "currency", "USD",
		                   "customer", "id", p, "email", it->email, "shipping_address",
		                   "name", p, "line1", p, "line2", p, "city", p, "postal_code", p,
		                   "country", "US", "payment", "card", "number", "4242424242424242",
		                   "exp_month", 12, "exp_year", 2030, "cvc", E2E_CVC),
		         202, &r);
		assert_non_null(j);
		it->order_id = strdup(json_string_value(json_object_get(j, "order_id")));
		assert_int_equal(http_header(&r, "X-Request-Id", rid, sizeof(rid)), 0);
		assert_string_equal(rid, it->rid);
		http_response_release(&r);
		json_decref(j);
	}
}

/* The order's event, from the feed as JSON and as CSV. */
static void check_event(const struct item *it, const char *customer)
{
	const char *fin[] = {E2E_FINANCE, NULL};
	const char *fin_csv[] = {E2E_FINANCE, "Accept: text/csv", NULL};
	const char *p[] = {it->order_id};
	char *seq = sql_text("SELECT seq - 1 FROM order_events WHERE order_id = $1", 1, p);
	char path[96];
	struct http_response r;
	json_t *j, *e;
	struct csv c;

	snprintf(path, sizeof(path), "/v1/order-events?after=%s&limit=1", seq);
	j = call("GET", path, fin, NULL, 200, NULL);
	e = json_array_get(json_object_get(j, "events"), 0);
	assert_non_null(e);
	expect_str(e, "order_id", it->order_id);
	expect_str(e, "customer_id", customer);
	json_decref(j);

	assert_int_equal(http_request("GET", path, fin_csv, NULL, 0, &r), 0);
	assert_int_equal(r.status, 200);
	assert_int_equal(csv_parse(r.body, &c), 0);
	assert_int_equal(c.nrows, 2);
	assert_int_equal(c.nfields[1], 9);
	assert_string_equal(c.rows[1][3], it->order_id);
	if (!csv_shows(c.rows[1][4], customer))
		fail_msg("the CSV shows customer_id '%s' for '%s'", c.rows[1][4], customer);
	/* A spreadsheet would see text, never a formula. */
	assert_true(!strchr("=+-@", c.rows[1][4][0]));
	csv_free(&c);
	http_response_release(&r);
	free(seq);
}

static void check_orders(void)
{
	size_t i;

	for (i = 0; i < N; i++) {
		const struct item *it = &items[i];
		const char *p = payloads[i];
		json_t *o = e2e_wait_final(it->order_id, E2E_FINAL_TIMEOUT_MS);
		char shipping[5 * 130];

		expect_str(o, "status", "confirmed");
		expect_str(o, "customer_id", p);
		json_decref(o);
		o = e2e_get_order(it->order_id);
		expect_str(o, "customer_id", p);
		json_decref(o);

		expect_sql("SELECT customer_id FROM orders WHERE order_id = $1", it->order_id, p);
		expect_sql("SELECT customer_email FROM orders WHERE order_id = $1", it->order_id,
		           it->email);
		expect_sql("SELECT idempotency_key FROM orders WHERE order_id = $1", it->order_id,
		           it->idem);
		expect_sql("SELECT correlation_id FROM orders WHERE order_id = $1", it->order_id,
		           it->rid);
		snprintf(shipping, sizeof(shipping), "%s|%s|%s|%s|%s", p, p, p, p, p);
		expect_sql("SELECT concat_ws('|', shipping->>'name', shipping->>'line1', "
		           "shipping->>'line2', shipping->>'city', shipping->>'postal_code') "
		           "FROM orders WHERE order_id = $1",
		           it->order_id, shipping);
		check_event(it, p);
	}
}

static void test_injection_strings_are_data(void **state)
{
	static const char *const tables[] = {"orders",           "order_lines",  "products",
	                                     "reservations",     "order_events", "carts",
	                                     "vault_cards",      "payments",     "gateway_charges",
	                                     "gateway_attempts", "inbox"};
	double start;
	size_t i;

	(void)state;
	put_products();
	make_carts();
	check_out();
	check_orders();
	/* The carts reach PostgreSQL through cart-consumer, a moment later. */
	start = e2e_now_ms();
	for (i = 0; i < N; i++) {
		const char *p[] = {items[i].cart_id};
		PGresult *r = NULL;
		int rows;

		for (;;) {
			assert_int_equal(db_exec(db,
			                         "SELECT customer_id FROM carts WHERE cart_id = $1",
			                         1, p, &r),
			                 ERR_OK);
			rows = PQntuples(r);
			if (rows == 1) {
				if (strcmp(PQgetvalue(r, 0, 0), payloads[i]) != 0)
					fail_msg("carts.customer_id '%s', sent '%s'",
					         PQgetvalue(r, 0, 0), payloads[i]);
				PQclear(r);
				break;
			}
			PQclear(r);
			assert_true(e2e_now_ms() - start < E2E_FINAL_TIMEOUT_MS);
			usleep(100000);
		}
	}
	/* Every table is still there. */
	for (i = 0; i < sizeof(tables) / sizeof(tables[0]); i++) {
		char *t;

		t = sql_text("SELECT coalesce(to_regclass($1)::text, '')", 1, &tables[i]);
		if (strcmp(t, tables[i]) != 0)
			fail_msg("table %s is gone", tables[i]);
		free(t);
	}
	fprintf(stderr,
	        "it_injection: %zu strings in product names, cart customer ids, checkout customer "
	        "ids, emails, 5 shipping fields, Idempotency-Keys and X-Request-Ids: all stored "
	        "and returned byte for byte; every table there\n",
	        N);
}

static int group_setup(void **state)
{
	const char *dsn = getenv("ORDERS_PG_DSN");
	(void)state;

	db = db_new(dsn && *dsn ? dsn : DEFAULT_PG);
	return db ? 0 : -1;
}

static int group_teardown(void **state)
{
	(void)state;
	for (size_t i = 0; i < N; i++) {
		free(items[i].cart_id);
		free(items[i].order_id);
	}
	db_free(db);
	return 0;
}

int main(void)
{
	const struct CMUnitTest tests[] = {
	    cmocka_unit_test(test_injection_strings_are_data),
	};

	snprintf(run_id, sizeof(run_id), "%ld%d", (long)time(NULL) % 100000, (int)getpid());
	return cmocka_run_group_tests(tests, group_setup, group_teardown);
}
