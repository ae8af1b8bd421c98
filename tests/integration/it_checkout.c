/* it_checkout.c: end to end over HTTP: catalog, checkout to every final status, the contract's
 * errors. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>

#include <pthread.h>

#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include "cache.h"
#include "e2e.h"
#include "err.h"
#include "mq.h"
#include "http_client.h"

#define FINANCE "Authorization: Bearer dev-finance"

/* Final statuses must arrive within this; make-up's 2 s figure is checked by hand. */
#define FINAL_TIMEOUT_MS 15000

static char run_id[32];

static void sku_name(char *out, size_t n, const char *what)
{
	snprintf(out, n, "E2E-%s-%s", run_id, what);
}

/* Check out qty of sku with card and return the order id (caller frees). */
static char *checkout_ok(const char *sku, int qty, const char *card)
{
	char body[1024], idem[96];
	static int seq;

	snprintf(idem, sizeof(idem), "e2e-%s-%d", run_id, ++seq);
	e2e_checkout_body(body, sizeof(body), sku, qty, card);
	return e2e_checkout_status(idem, body, "pending");
}

/* ---- tests ---------------------------------------------------------------- */

/* The API's orders_http_requests_total for route="/healthz",status="200". */
static double healthz_count(void)
{
	static const char series[] =
	    "orders_http_requests_total{route=\"/healthz\",status=\"200\"} ";
	struct http_response r;
	const char *at;
	double v = -1;

	assert_int_equal(http_request("GET", "/metrics", NULL, NULL, 0, &r), 0);
	assert_int_equal(r.status, 200);
	at = strstr(r.body, series);
	if (at)
		v = strtod(at + sizeof(series) - 1, NULL);
	http_response_release(&r);
	return v;
}

/*
 * /healthz has a path of its own (no per-request state): it must still keep
 * the connection open, echo or invent X-Request-Id, answer HEAD, and count
 * every answer in orders_http_requests_total.
 */
static void test_health_fast_path(void **state)
{
	static const char two[] = "GET /healthz HTTP/1.1\r\nHost: x\r\nX-Request-Id: hz-one\r\n\r\n"
	                          "HEAD /healthz HTTP/1.1\r\nHost: x\r\n\r\n";
	struct http_response r;
	char id[80];
	const char *second;
	double before, after;
	(void)state;

	before = healthz_count();
	/* Two requests on one connection: both answered, the first not closing it. */
	assert_int_equal(http_raw(two, sizeof(two) - 1, 1, &r), 0);
	assert_int_equal(r.status, 200);
	assert_null(strcasestr(r.headers, "Connection: close"));
	assert_int_equal(http_header(&r, "X-Request-Id", id, sizeof(id)), 0);
	assert_string_equal(id, "hz-one");
	assert_int_equal(strncmp(r.body, "{\"status\":\"ok\"}", 15), 0);
	second = strstr(r.body, "HTTP/1.1 200");
	assert_non_null(second);
	/* A fresh id for the request without one; no body for HEAD. */
	assert_non_null(strstr(second, "X-Request-Id: "));
	assert_null(strstr(second, "\"status\""));
	http_response_release(&r);

	assert_int_equal(http_request("GET", "/healthz", NULL, NULL, 0, &r), 0);
	assert_int_equal(r.status, 200);
	assert_int_equal(http_header(&r, "X-Request-Id", id, sizeof(id)), 0);
	assert_int_equal(strlen(id), 36);
	http_response_release(&r);
	after = healthz_count();
	assert_true(after >= before + 3);
}

static void test_health(void **state)
{
	struct http_response r;
	(void)state;

	assert_int_equal(http_request("GET", "/healthz", NULL, NULL, 0, &r), 0);
	assert_int_equal(r.status, 200);
	http_response_release(&r);
	assert_int_equal(http_request("GET", "/readyz", NULL, NULL, 0, &r), 0);
	assert_int_equal(r.status, 200);
	http_response_release(&r);
	assert_int_equal(http_request("GET", "/metrics", NULL, NULL, 0, &r), 0);
	assert_int_equal(r.status, 200);
	assert_non_null(strstr(r.body, "orders_http_requests_total"));
	http_response_release(&r);
}

static void test_auth_and_routes(void **state)
{
	struct http_response r;
	const char *fin[] = {FINANCE, E2E_JSON, NULL};
	const char *bad[] = {"Authorization: Bearer nope", NULL};
	const char *cli[] = {E2E_CLIENT, "X-Request-Id: e2e-trace-1", NULL};
	char v[64];
	json_t *j;
	(void)state;

	assert_int_equal(http_request("GET", "/v1/products/MUG-LOGO", NULL, NULL, 0, &r), 0);
	assert_int_equal(r.status, 401);
	j = http_json(&r);
	assert_string_equal(json_string_value(json_object_get(json_object_get(j, "error"), "code")),
	                    "unauthorized");
	json_decref(j);
	http_response_release(&r);

	assert_int_equal(http_request("GET", "/v1/products/MUG-LOGO", bad, NULL, 0, &r), 0);
	assert_int_equal(r.status, 401);
	http_response_release(&r);

	assert_int_equal(http_request("PUT", "/v1/products/X1", fin, "{}", 2, &r), 0);
	assert_int_equal(r.status, 403);
	http_response_release(&r);

	assert_int_equal(http_request("GET", "/v1/nothing-here", cli, NULL, 0, &r), 0);
	assert_int_equal(r.status, 404);
	assert_int_equal(http_header(&r, "X-Request-Id", v, sizeof(v)), 0);
	assert_string_equal(v, "e2e-trace-1");
	http_response_release(&r);

	assert_int_equal(http_request("DELETE", "/v1/checkouts", cli, NULL, 0, &r), 0);
	assert_int_equal(r.status, 405);
	assert_int_equal(http_header(&r, "Allow", v, sizeof(v)), 0);
	assert_string_equal(v, "POST");
	http_response_release(&r);
}

static void test_catalog(void **state)
{
	struct http_response r;
	const char *adm[] = {E2E_ADMIN, E2E_JSON, NULL};
	const char *cli[] = {E2E_CLIENT, NULL};
	char sku[64], path[128];
	const char *body =
	    "{\"name\":\"Widget\",\"price_cents\":250,\"currency\":\"USD\",\"stock\":7}";
	json_t *j;
	(void)state;

	sku_name(sku, sizeof(sku), "CAT");
	snprintf(path, sizeof(path), "/v1/products/%s", sku);
	assert_int_equal(http_request("PUT", path, adm, body, strlen(body), &r), 0);
	assert_int_equal(r.status, 201);
	http_response_release(&r);
	assert_int_equal(http_request("PUT", path, adm, body, strlen(body), &r), 0);
	assert_int_equal(r.status, 200);
	http_response_release(&r);

	assert_int_equal(http_request("GET", path, cli, NULL, 0, &r), 0);
	assert_int_equal(r.status, 200);
	j = http_json(&r);
	assert_string_equal(json_string_value(json_object_get(j, "sku")), sku);
	assert_string_equal(json_string_value(json_object_get(j, "name")), "Widget");
	assert_int_equal(json_integer_value(json_object_get(j, "price_cents")), 250);
	assert_string_equal(json_string_value(json_object_get(j, "currency")), "USD");
	assert_int_equal(json_integer_value(json_object_get(j, "available")), 7);
	json_decref(j);
	http_response_release(&r);

	/* Bad input changes nothing. */
	body = "{\"name\":\"x\",\"price_cents\":-1,\"currency\":\"USD\",\"stock\":1}";
	assert_int_equal(http_request("PUT", path, adm, body, strlen(body), &r), 0);
	assert_int_equal(r.status, 422);
	j = http_json(&r);
	assert_string_equal(
	    json_string_value(json_object_get(json_object_get(j, "error"), "field")),
	    "price_cents");
	json_decref(j);
	http_response_release(&r);
	assert_int_equal(e2e_available(sku), 7);

	assert_int_equal(http_request("GET", "/v1/products/NO-SUCH-SKU-E2E", cli, NULL, 0, &r), 0);
	assert_int_equal(r.status, 404);
	http_response_release(&r);
}

static void test_confirmed(void **state)
{
	char sku[64];
	char *id;
	json_t *o, *pay;
	double ms;
	(void)state;

	sku_name(sku, sizeof(sku), "OK");
	e2e_put_product(sku, 10, 1999);
	id = checkout_ok(sku, 2, "4242424242424242");
	/* Right after the 202: visible, never 404. */
	o = e2e_get_order(id);
	assert_string_equal(json_string_value(json_object_get(o, "order_id")), id);
	json_decref(o);

	o = e2e_wait_final_timed(id, FINAL_TIMEOUT_MS, &ms);
	fprintf(stderr, "confirmed in %.0f ms\n", ms);
	assert_string_equal(json_string_value(json_object_get(o, "status")), "confirmed");
	assert_int_equal(json_integer_value(json_object_get(o, "total_cents")), 3998);
	assert_string_equal(json_string_value(json_object_get(o, "customer_id")), "c-42");
	pay = json_object_get(o, "payment");
	assert_non_null(pay);
	assert_memory_equal(json_string_value(json_object_get(pay, "token")), "tok_", 4);
	assert_string_equal(json_string_value(json_object_get(pay, "last4")), "4242");
	assert_string_equal(json_string_value(json_object_get(pay, "brand")), "visa");
	assert_null(json_object_get(o, "failure_reason"));
	json_decref(o);
	e2e_wait_available(sku, 8);
	free(id);
}

/*
 * The largest checkout the contract allows: 100 lines (a body larger than a
 * connection's 4 KiB memory pool, so it arrives in pieces), the longest
 * Idempotency-Key and X-Request-Id. Accepted, priced line by line, and
 * confirmed.
 */
static void test_largest_checkout(void **state)
{
	enum { LINES = 100 };
	char sku[64], idem[300], rid[100], *body, *p;
	const char *h[] = {E2E_CLIENT, E2E_JSON, idem, rid, NULL};
	size_t cap = 16384, len = 0;
	struct http_response r;
	json_t *j, *o;
	char id[40], got[80], what[16];
	(void)state;

	body = malloc(cap);
	assert_non_null(body);
	len += (size_t)snprintf(body + len, cap - len, "{\"items\":[");
	for (int i = 0; i < LINES; i++) {
		snprintf(what, sizeof(what), "BIG%03d", i);
		sku_name(sku, sizeof(sku), what);
		e2e_put_product(sku, 5, 100 + i);
		len += (size_t)snprintf(body + len, cap - len, "%s{\"sku\":\"%s\",\"quantity\":2}",
		                        i ? "," : "", sku);
	}
	snprintf(body + len, cap - len,
	         "],\"currency\":\"USD\",\"customer\":{\"id\":\"c-42\"},"
	         "\"shipping_address\":{\"name\":\"Ada\",\"line1\":\"1 Main St\","
	         "\"city\":\"Springfield\",\"postal_code\":\"12345\",\"country\":\"US\"},"
	         "\"payment\":{\"card\":{\"number\":\"4242424242424242\",\"exp_month\":12,"
	         "\"exp_year\":2030,\"cvc\":\"" E2E_CVC "\"}}}");
	assert_true(strlen(body) > 4096);
	p = idem + snprintf(idem, sizeof(idem), "Idempotency-Key: e2e-%s-big-", run_id);
	while (p < idem + strlen("Idempotency-Key: ") + 255)
		*p++ = 'k';
	*p = '\0';
	p = rid + snprintf(rid, sizeof(rid), "X-Request-Id: ");
	memset(p, 'r', 64);
	p[64] = '\0';

	assert_int_equal(http_request("POST", "/v1/checkouts", h, body, strlen(body), &r), 0);
	if (r.status != 202)
		fprintf(stderr, "answered %d: %s\n", r.status, r.body);
	assert_int_equal(r.status, 202);
	assert_int_equal(http_header(&r, "X-Request-Id", got, sizeof(got)), 0);
	assert_int_equal(strlen(got), 64);
	j = http_json(&r);
	assert_non_null(j);
	snprintf(id, sizeof(id), "%s", json_string_value(json_object_get(j, "order_id")));
	json_decref(j);
	http_response_release(&r);
	free(body);

	o = e2e_wait_final(id, FINAL_TIMEOUT_MS);
	assert_string_equal(json_string_value(json_object_get(o, "status")), "confirmed");
	/* 2 x (100 + ... + 199) */
	assert_int_equal(json_integer_value(json_object_get(o, "total_cents")), 2 * 14950);
	assert_int_equal(json_array_size(json_object_get(o, "items")), LINES);
	json_decref(o);
}

static void test_rejected_out_of_stock(void **state)
{
	char sku[64];
	char *id;
	json_t *o;
	(void)state;

	sku_name(sku, sizeof(sku), "OOS");
	e2e_put_product(sku, 1, 500);
	id = checkout_ok(sku, 2, "4242424242424242");
	o = e2e_wait_final(id, FINAL_TIMEOUT_MS);
	assert_string_equal(json_string_value(json_object_get(o, "status")), "rejected");
	assert_string_equal(json_string_value(json_object_get(o, "failure_reason")),
	                    "out_of_stock");
	json_decref(o);
	e2e_wait_available(sku, 1);
	free(id);
}

static void declined(const char *card, const char *reason)
{
	char sku[64];
	char *id;
	json_t *o;

	sku_name(sku, sizeof(sku), reason);
	e2e_put_product(sku, 5, 700);
	id = checkout_ok(sku, 3, card);
	o = e2e_wait_final(id, FINAL_TIMEOUT_MS);
	assert_string_equal(json_string_value(json_object_get(o, "status")), "payment_failed");
	assert_string_equal(json_string_value(json_object_get(o, "failure_reason")), reason);
	json_decref(o);
	/* The reservation was released. */
	e2e_wait_available(sku, 5);
	free(id);
}

static void test_payment_failed_declined(void **state)
{
	(void)state;
	declined("4000000000000002", "card_declined");
}

static void test_payment_failed_insufficient_funds(void **state)
{
	(void)state;
	declined("4000000000009995", "insufficient_funds");
}

static void test_transient_gateway_failure_retried(void **state)
{
	char sku[64];
	char *id;
	json_t *o;
	(void)state;

	sku_name(sku, sizeof(sku), "RETRY");
	e2e_put_product(sku, 5, 100);
	id = checkout_ok(sku, 1, "4000000000000119");
	o = e2e_wait_final(id, FINAL_TIMEOUT_MS);
	assert_string_equal(json_string_value(json_object_get(o, "status")), "confirmed");
	json_decref(o);
	free(id);
}

static void test_idempotency(void **state)
{
	struct http_response a, b;
	char sku[64], body[1024], other[1024], idem[96];
	json_t *ja, *jb, *o;
	(void)state;

	sku_name(sku, sizeof(sku), "IDEM");
	e2e_put_product(sku, 10, 300);
	snprintf(idem, sizeof(idem), "e2e-%s-idem", run_id);
	e2e_checkout_body(body, sizeof(body), sku, 1, "5555555555554444");
	assert_int_equal(e2e_post_checkout(idem, body, &a), 0);
	assert_int_equal(a.status, 202);
	assert_int_equal(e2e_post_checkout(idem, body, &b), 0);
	assert_int_equal(b.status, 202);
	ja = http_json(&a);
	jb = http_json(&b);
	assert_true(json_equal(ja, jb));

	e2e_checkout_body(other, sizeof(other), sku, 2, "5555555555554444");
	http_response_release(&b);
	assert_int_equal(e2e_post_checkout(idem, other, &b), 0);
	assert_int_equal(b.status, 422);
	assert_non_null(strstr(b.body, "idempotency_key_reused"));

	/* One order, one reservation: 10 - 1. */
	o = e2e_wait_final(json_string_value(json_object_get(ja, "order_id")), FINAL_TIMEOUT_MS);
	assert_string_equal(json_string_value(json_object_get(o, "status")), "confirmed");
	json_decref(o);
	e2e_wait_available(sku, 9);
	json_decref(ja);
	json_decref(jb);
	http_response_release(&a);
	http_response_release(&b);
}

/* Racers share one key and body: each gets the one 202 or a 409, never a second order. */
#define RACERS 8

struct racer {
	const char *idem;
	const char *body;
	int status;
	char order_id[40];
	char retry_after[16];
};

static void *race(void *arg)
{
	struct racer *rc = arg;
	struct http_response r;
	json_t *j;

	if (e2e_post_checkout(rc->idem, rc->body, &r) != 0)
		return NULL;
	rc->status = r.status;
	if (r.status == 202 && (j = http_json(&r))) {
		snprintf(rc->order_id, sizeof(rc->order_id), "%s",
		         json_string_value(json_object_get(j, "order_id")));
		json_decref(j);
	}
	if (r.status == 409)
		http_header(&r, "Retry-After", rc->retry_after, sizeof(rc->retry_after));
	http_response_release(&r);
	return NULL;
}

/* A product of 10 at 300 cents named after what, and a key for its racers. */
static void race_product(char sku[64], char idem[96], const char *what)
{
	sku_name(sku, 64, what);
	e2e_put_product(sku, 10, 300);
	snprintf(idem, 96, "e2e-%s-%s", run_id, what);
}

/* RACERS checkouts with one key at once, every other one with body b. */
static void run_racers(struct racer *racers, const char *idem, const char *a, const char *b)
{
	pthread_t threads[RACERS];

	for (int i = 0; i < RACERS; i++) {
		memset(&racers[i], 0, sizeof(racers[i]));
		racers[i].idem = idem;
		racers[i].body = i % 2 ? b : a;
		assert_int_equal(pthread_create(&threads[i], NULL, race, &racers[i]), 0);
	}
	for (int i = 0; i < RACERS; i++)
		pthread_join(threads[i], NULL);
}

static void test_idempotency_race(void **state)
{
	struct racer racers[RACERS];
	char sku[64], body[1024], idem[96];
	const char *order_id = NULL;
	int accepted = 0;
	json_t *o;
	(void)state;

	race_product(sku, idem, "RACE");
	e2e_checkout_body(body, sizeof(body), sku, 1, "4242424242424242");
	run_racers(racers, idem, body, body);
	for (int i = 0; i < RACERS; i++) {
		assert_true(racers[i].status == 202 || racers[i].status == 409);
		if (racers[i].status == 409) {
			assert_string_equal(racers[i].retry_after, "1");
			continue;
		}
		accepted++;
		if (!order_id)
			order_id = racers[i].order_id;
		assert_string_equal(racers[i].order_id, order_id);
	}
	assert_true(accepted >= 1);

	/* One order, one unit reserved and sold: 10 - 1. */
	o = e2e_wait_final(order_id, FINAL_TIMEOUT_MS);
	assert_string_equal(json_string_value(json_object_get(o, "status")), "confirmed");
	json_decref(o);
	e2e_wait_available(sku, 9);
}

/*
 * The pending view in Redis (written out by hand, not by jansson) is the
 * JSON of the order as accepted: a customer id with quotes, a backslash,
 * control characters and non-ASCII comes back exactly.
 */
static void test_pending_view(void **state)
{
	/* JSON text: the API decodes the escapes, and must write them again. */
	static const char customer[] = "c \\\"q\\\" \\\\ \\n\\t\\u0001 \\u00e9\\u2713";
	const char *url = getenv("ORDERS_REDIS_URL");
	char sku[64], idem[96], body[2048];
	struct cache *redis;
	redisReply *rep;
	json_t *view, *want, *items;
	char *id;
	(void)state;

	sku_name(sku, sizeof(sku), "VIEW");
	e2e_put_product(sku, 10, 1234);
	snprintf(idem, sizeof(idem), "e2e-%s-view", run_id);
	snprintf(body, sizeof(body),
	         "{\"items\":[{\"sku\":\"%s\",\"quantity\":3}],\"currency\":\"USD\","
	         "\"customer\":{\"id\":\"%s\"},"
	         "\"shipping_address\":{\"name\":\"Ada\",\"line1\":\"1 Main St\","
	         "\"city\":\"Springfield\",\"postal_code\":\"12345\",\"country\":\"US\"},"
	         "\"payment\":{\"card\":{\"number\":\"4242424242424242\",\"exp_month\":12,"
	         "\"exp_year\":2030,\"cvc\":\"" E2E_CVC "\"}}}",
	         sku, customer);
	id = e2e_checkout_status(idem, body, "pending");

	redis = cache_new(url && *url ? url : "redis://127.0.0.1:6389/0");
	assert_non_null(redis);
	rep = cache_command(redis, "GET order:%s", id);
	assert_non_null(rep);
	assert_int_equal(rep->type, REDIS_REPLY_STRING);
	/* "<client id> <json>" */
	assert_non_null(strchr(rep->str, ' '));
	view = json_loads(strchr(rep->str, ' ') + 1, 0, NULL);
	assert_non_null(view);
	want = json_loads(body, 0, NULL);
	assert_non_null(want);
	assert_string_equal(
	    json_string_value(json_object_get(view, "customer_id")),
	    json_string_value(json_object_get(json_object_get(want, "customer"), "id")));
	assert_string_equal(json_string_value(json_object_get(view, "order_id")), id);
	assert_string_equal(json_string_value(json_object_get(view, "status")), "pending");
	assert_string_equal(json_string_value(json_object_get(view, "currency")), "USD");
	assert_int_equal(json_integer_value(json_object_get(view, "total_cents")), 3 * 1234);
	items = json_object_get(view, "items");
	assert_int_equal(json_array_size(items), 1);
	assert_string_equal(json_string_value(json_object_get(json_array_get(items, 0), "sku")),
	                    sku);
	assert_int_equal(
	    json_integer_value(json_object_get(json_array_get(items, 0), "line_total_cents")),
	    3 * 1234);
	assert_true(json_is_string(json_object_get(view, "created_at")));
	json_decref(want);
	json_decref(view);
	freeReplyObject(rep);
	cache_free(redis);
	e2e_expect_final(id, "confirmed", FINAL_TIMEOUT_MS);
	free(id);
}

/*
 * Racers share one key with two bodies (1 or 2 units). One body wins: its
 * racers get the 202 or a 409; the other body's get a 409 while the winner
 * is in flight, 422 once it is accepted, and 422 when they retry. The
 * pending view and the order are the winner's alone.
 */
static void test_idempotency_race_bodies(void **state)
{
	struct racer racers[RACERS];
	struct http_response retry;
	char sku[64], one[1024], two[1024], idem[96];
	const char *winner = NULL, *order_id = NULL;
	long qty;
	json_t *o;
	(void)state;

	race_product(sku, idem, "RACE2");
	e2e_checkout_body(one, sizeof(one), sku, 1, "4242424242424242");
	e2e_checkout_body(two, sizeof(two), sku, 2, "4242424242424242");
	run_racers(racers, idem, one, two);
	for (int i = 0; i < RACERS; i++) {
		if (racers[i].status == 202) {
			winner = racers[i].body;
			order_id = racers[i].order_id;
		}
	}
	assert_non_null(winner);
	for (int i = 0; i < RACERS; i++) {
		if (racers[i].body == winner)
			assert_true(racers[i].status == 202 || racers[i].status == 409);
		else
			assert_true(racers[i].status == 422 || racers[i].status == 409);
		if (racers[i].status == 202)
			assert_string_equal(racers[i].order_id, order_id);
	}
	qty = winner == one ? 1 : 2;
	assert_int_equal(e2e_post_checkout(idem, winner == one ? two : one, &retry), 0);
	assert_int_equal(retry.status, 422);
	assert_non_null(strstr(retry.body, "idempotency_key_reused"));
	http_response_release(&retry);

	o = e2e_get_order(order_id);
	assert_int_equal(json_integer_value(json_object_get(
	                     json_array_get(json_object_get(o, "items"), 0), "quantity")),
	                 qty);
	json_decref(o);
	o = e2e_wait_final(order_id, FINAL_TIMEOUT_MS);
	assert_string_equal(json_string_value(json_object_get(o, "status")), "confirmed");
	assert_int_equal(json_integer_value(json_object_get(o, "total_cents")), 300 * qty);
	json_decref(o);
	e2e_wait_available(sku, 10 - qty);
}

static void expect_error(const char *const *headers, const char *body, size_t len, int status,
                         const char *code)
{
	struct http_response r;
	json_t *j;

	assert_int_equal(http_request("POST", "/v1/checkouts", headers, body, len, &r), 0);
	if (r.status != status)
		fprintf(stderr, "expected %d %s, got %d: %s\n", status, code, r.status, r.body);
	assert_int_equal(r.status, status);
	j = http_json(&r);
	assert_non_null(j);
	assert_string_equal(json_string_value(json_object_get(json_object_get(j, "error"), "code")),
	                    code);
	/* Errors never echo card data. */
	assert_null(strstr(r.body, "4242424242424241"));
	assert_null(strstr(r.body, "4242424242424242"));
	json_decref(j);
	http_response_release(&r);
}

/*
 * A checkout that is refused (bad field, unknown sku, bad card) leaves its
 * Idempotency-Key free: the corrected request with the same key is
 * accepted at once, not told the key is in use or was used.
 */
static void test_refused_checkout_frees_key(void **state)
{
	static const struct {
		const char *sku; /* NULL: the product made here */
		int qty;
		const char *card;
		const char *code;
	} refusals[] = {
	    {"NO-SUCH", 1, "4242424242424242", "unknown_sku"},
	    {NULL, 1000, "4242424242424242", "validation_error"},
	    {NULL, 1, "4242424242424241", "invalid_card"}, /* fails the Luhn check */
	};
	char sku[64], other[64], idem[96], body[1024], idem_h[128];
	const char *h[] = {E2E_CLIENT, E2E_JSON, idem_h, NULL};
	char *id;
	(void)state;

	sku_name(sku, sizeof(sku), "FREE");
	e2e_put_product(sku, 10, 300);
	snprintf(idem, sizeof(idem), "e2e-%s-free", run_id);
	snprintf(idem_h, sizeof(idem_h), "Idempotency-Key: %s", idem);
	for (size_t i = 0; i < sizeof(refusals) / sizeof(refusals[0]); i++) {
		if (refusals[i].sku)
			sku_name(other, sizeof(other), refusals[i].sku);
		e2e_checkout_body(body, sizeof(body), refusals[i].sku ? other : sku,
		                  refusals[i].qty, refusals[i].card);
		expect_error(h, body, strlen(body), 422, refusals[i].code);
	}
	e2e_checkout_body(body, sizeof(body), sku, 1, "4242424242424242");
	id = e2e_checkout_status(idem, body, "pending");
	e2e_expect_final(id, "confirmed", FINAL_TIMEOUT_MS);
	free(id);
}

static void test_checkout_errors(void **state)
{
	const char *ok[] = {E2E_CLIENT, E2E_JSON, "Idempotency-Key: e2e-errors", NULL};
	const char *no_key[] = {E2E_CLIENT, E2E_JSON, NULL};
	const char *text[] = {E2E_CLIENT, "Content-Type: text/plain", "Idempotency-Key: e2e-e2",
	                      NULL};
	char body[1024], sku[64];
	char *big;
	(void)state;

	sku_name(sku, sizeof(sku), "ERR");
	e2e_put_product(sku, 3, 100);
	e2e_checkout_body(body, sizeof(body), sku, 1, "4242424242424242");
	expect_error(no_key, body, strlen(body), 400, "missing_idempotency_key");
	expect_error(text, body, strlen(body), 415, "unsupported_media_type");
	expect_error(ok, "{\"items\": [", 11, 400, "malformed_json");

	e2e_checkout_body(body, sizeof(body), sku, 1, "4242424242424241");
	expect_error(ok, body, strlen(body), 422, "invalid_card");
	e2e_checkout_body(body, sizeof(body), "NO-SUCH-SKU-E2E", 1, "4242424242424242");
	expect_error(ok, body, strlen(body), 422, "unknown_sku");
	e2e_checkout_body(body, sizeof(body), sku, 0, "4242424242424242");
	expect_error(ok, body, strlen(body), 422, "validation_error");

	big = malloc(70 * 1024);
	memset(big, ' ', 70 * 1024);
	big[0] = '{';
	big[70 * 1024 - 1] = '}';
	expect_error(ok, big, 70 * 1024, 413, "payload_too_large");
	free(big);

	/* None of it reserved anything. */
	assert_int_equal(e2e_available(sku), 3);
}

/*
 * A checkout whose message no queue would take is not accepted: with the
 * binding of checkout.requested gone, the broker returns the mandatory
 * publish and the API answers 503, leaving nothing behind; once the binding
 * is back, a retry with the same key is accepted and goes through. The
 * binding is restored before anything is asserted, so that a failure here
 * cannot break the tests after it.
 */
static void test_unroutable_checkout(void **state)
{
	amqp_connection_state_t c;
	struct http_response r;
	char sku[64], body[1024], idem[96], retry_after[16] = "";
	int sent, unbound, rebound;
	json_t *j, *o;
	char *id;
	double ms;

	(void)state;
	sku_name(sku, sizeof(sku), "UNROUTABLE");
	e2e_put_product(sku, 5, 500);
	snprintf(idem, sizeof(idem), "e2e-%s-unroutable", run_id);
	e2e_checkout_body(body, sizeof(body), sku, 1, "4242424242424242");
	c = e2e_amqp_connect();
	assert_non_null(c);

	amqp_queue_unbind(c, E2E_AMQP_CHANNEL, amqp_cstring_bytes(MQ_QUEUE_INVENTORY),
	                  amqp_cstring_bytes(MQ_EXCHANGE_ORDERS),
	                  amqp_cstring_bytes(MQ_KEY_CHECKOUT_REQUESTED), amqp_empty_table);
	unbound = e2e_amqp_ok(c, "queue.unbind");
	sent = e2e_post_checkout(idem, body, &r);
	amqp_queue_bind(c, E2E_AMQP_CHANNEL, amqp_cstring_bytes(MQ_QUEUE_INVENTORY),
	                amqp_cstring_bytes(MQ_EXCHANGE_ORDERS),
	                amqp_cstring_bytes(MQ_KEY_CHECKOUT_REQUESTED), amqp_empty_table);
	rebound = e2e_amqp_ok(c, "queue.bind");
	e2e_amqp_close(c);
	assert_true(unbound);
	assert_true(rebound);

	assert_int_equal(sent, 0);
	if (r.status != 503)
		fprintf(stderr, "unroutable checkout answered %d: %s\n", r.status, r.body);
	assert_int_equal(r.status, 503);
	assert_int_equal(http_header(&r, "Retry-After", retry_after, sizeof(retry_after)), 0);
	j = http_json(&r);
	assert_non_null(j);
	assert_string_equal(json_string_value(json_object_get(json_object_get(j, "error"), "code")),
	                    "unavailable");
	json_decref(j);
	http_response_release(&r);
	assert_int_equal(e2e_available(sku), 5);

	/* The same key again, routable now: accepted and carried through. */
	assert_int_equal(e2e_post_checkout(idem, body, &r), 0);
	assert_int_equal(r.status, 202);
	j = http_json(&r);
	assert_non_null(j);
	id = strdup(json_string_value(json_object_get(j, "order_id")));
	json_decref(j);
	http_response_release(&r);
	o = e2e_wait_final_timed(id, FINAL_TIMEOUT_MS, &ms);
	assert_string_equal(json_string_value(json_object_get(o, "status")), "confirmed");
	json_decref(o);
	e2e_wait_available(sku, 4);
	free(id);
}

static void test_unknown_order(void **state)
{
	struct http_response r;
	const char *h[] = {E2E_CLIENT, NULL};
	(void)state;

	assert_int_equal(
	    http_request("GET", "/v1/orders/00000000-0000-4000-8000-000000000000", h, NULL, 0, &r),
	    0);
	assert_int_equal(r.status, 404);
	http_response_release(&r);
	assert_int_equal(http_request("GET", "/v1/orders/not-a-uuid", h, NULL, 0, &r), 0);
	assert_int_equal(r.status, 404);
	http_response_release(&r);
}

int main(void)
{
	const struct CMUnitTest tests[] = {
	    cmocka_unit_test(test_health),
	    cmocka_unit_test(test_health_fast_path),
	    cmocka_unit_test(test_auth_and_routes),
	    cmocka_unit_test(test_catalog),
	    cmocka_unit_test(test_confirmed),
	    cmocka_unit_test(test_largest_checkout),
	    cmocka_unit_test(test_pending_view),
	    cmocka_unit_test(test_rejected_out_of_stock),
	    cmocka_unit_test(test_payment_failed_declined),
	    cmocka_unit_test(test_payment_failed_insufficient_funds),
	    cmocka_unit_test(test_transient_gateway_failure_retried),
	    cmocka_unit_test(test_idempotency),
	    cmocka_unit_test(test_idempotency_race),
	    cmocka_unit_test(test_idempotency_race_bodies),
	    cmocka_unit_test(test_refused_checkout_frees_key),
	    cmocka_unit_test(test_checkout_errors),
	    cmocka_unit_test(test_unknown_order),
	    cmocka_unit_test(test_unroutable_checkout),
	};

	snprintf(run_id, sizeof(run_id), "%ld-%d", (long)time(NULL), (int)getpid());
	return cmocka_run_group_tests(tests, NULL, NULL);
}
