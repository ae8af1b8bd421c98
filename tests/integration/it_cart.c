/* it_cart.c: carts end to end: the API, Redis, the queue, cart-consumer and PostgreSQL. */
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
#include "db.h"
#include "e2e.h"
#include "err.h"

#define DEFAULT_REDIS "redis://127.0.0.1:6389/0"
#define DEFAULT_PG "postgresql://orders@127.0.0.1:5442/orders"
#define CART_TTL_S (7 * 24 * 3600)
#define RACERS 8

static struct cache *redis;
static struct db *pg;
static char sku_a[32], sku_b[32], sku_eur[32];

/* ---- helpers ------------------------------------------------------------------- */

static json_t *cart_request(const char *method, const char *path, const char *auth,
                            const char *body, int want_status, struct http_response *keep)
{
	const char *h[] = {auth, E2E_JSON, NULL};
	struct http_response r;
	json_t *j;

	assert_int_equal(http_request(method, path, h, body, body ? strlen(body) : 0, &r), 0);
	if (r.status != want_status)
		fprintf(stderr, "%s %s answered %d, want %d: %s\n", method, path, r.status,
		        want_status, r.body);
	assert_int_equal(r.status, want_status);
	j = http_json(&r);
	if (keep)
		*keep = r;
	else
		http_response_release(&r);
	return j;
}

/* POST a cart; returns its id (free it). */
static char *create_cart(const char *items)
{
	char body[4096];
	json_t *j;
	char *id;

	snprintf(body, sizeof(body),
	         "{\"customer_id\":\"c-cart\",\"currency\":\"USD\",\"items\":%s}", items);
	j = cart_request("POST", "/v1/carts", E2E_CLIENT, body, 201, NULL);
	assert_non_null(j);
	id = strdup(json_string_value(json_object_get(j, "cart_id")));
	json_decref(j);
	return id;
}

static json_t *get_cart(const char *id, int want)
{
	char path[96];

	snprintf(path, sizeof(path), "/v1/carts/%s", id);
	return cart_request("GET", path, E2E_CLIENT, NULL, want, NULL);
}

static json_t *put_cart(const char *id, const char *body, int want)
{
	char path[96];

	snprintf(path, sizeof(path), "/v1/carts/%s", id);
	return cart_request("PUT", path, E2E_CLIENT, body, want, NULL);
}

static void expect_error(json_t *j, const char *code, const char *field)
{
	json_t *err = json_object_get(j, "error");

	assert_non_null(err);
	assert_string_equal(json_string_value(json_object_get(err, "code")), code);
	if (field)
		assert_string_equal(json_string_value(json_object_get(err, "field")), field);
	json_decref(j);
}

static void expect_line(json_t *cart, size_t i, const char *sku, int qty, int price)
{
	json_t *line = json_array_get(json_object_get(cart, "items"), i);

	assert_non_null(line);
	assert_string_equal(json_string_value(json_object_get(line, "sku")), sku);
	assert_int_equal(json_integer_value(json_object_get(line, "quantity")), qty);
	assert_int_equal(json_integer_value(json_object_get(line, "unit_price_cents")), price);
	assert_int_equal(json_integer_value(json_object_get(line, "line_total_cents")),
	                 (json_int_t)qty * price);
}

static char *pg_value(const char *sql, const char *param)
{
	const char *params[1] = {param};
	PGresult *res = NULL;
	char *v = NULL;

	assert_int_equal(db_exec(pg, sql, 1, params, &res), ERR_OK);
	if (PQntuples(res) == 1)
		v = strdup(PQgetvalue(res, 0, 0));
	PQclear(res);
	return v;
}

/* Wait until the PostgreSQL copy of the cart reads want ("status:version"). */
static void wait_pg_cart(const char *id, const char *want)
{
	double start = e2e_now_ms();
	char *got = NULL;

	for (;;) {
		free(got);
		got = pg_value(
		    "SELECT status || ':' || version FROM carts WHERE cart_id = $1::uuid", id);
		if (got && strcmp(got, want) == 0)
			break;
		if (e2e_now_ms() - start > 15000)
			fprintf(stderr, "cart %s in postgresql: %s, want %s\n", id,
			        got ? got : "none", want);
		assert_true(e2e_now_ms() - start < 15000);
		usleep(100000);
	}
	free(got);
}

static void checkout_body(char *out, size_t n, const char *cart_id)
{
	snprintf(out, n,
	         "{\"cart_id\":\"%s\",\"customer\":{\"id\":\"c-cart\"},"
	         "\"shipping_address\":{\"name\":\"Ada\",\"line1\":\"1 Main St\","
	         "\"city\":\"Springfield\",\"postal_code\":\"12345\",\"country\":\"US\"},"
	         "\"payment\":{\"card\":{\"number\":\"4242424242424242\",\"exp_month\":12,"
	         "\"exp_year\":2030,\"cvc\":\"" E2E_CVC "\"}}}",
	         cart_id);
}

static void unique(char *out, size_t n, const char *what)
{
	snprintf(out, n, "%s-%d-%ld", what, (int)getpid(), (long)random());
}

/* ---- tests ----------------------------------------------------------------------- */

/* Create, read, replace, delete; duplicates merged; Redis TTL; PostgreSQL copy. */
static void test_lifecycle(void **state)
{
	char items[256], body[512], path[96], location[96];
	struct http_response r;
	redisReply *rep;
	json_t *j;
	char *id;
	(void)state;

	snprintf(items, sizeof(items),
	         "[{\"sku\":\"%s\",\"quantity\":2},{\"sku\":\"%s\",\"quantity\":1},"
	         "{\"sku\":\"%s\",\"quantity\":3}]",
	         sku_a, sku_b, sku_a);
	snprintf(body, sizeof(body),
	         "{\"customer_id\":\"c-cart\",\"currency\":\"USD\",\"items\":%s}", items);
	j = cart_request("POST", "/v1/carts", E2E_CLIENT, body, 201, &r);
	id = strdup(json_string_value(json_object_get(j, "cart_id")));
	assert_int_equal(http_header(&r, "Location", location, sizeof(location)), 0);
	snprintf(path, sizeof(path), "/v1/carts/%s", id);
	assert_string_equal(location, path);
	http_response_release(&r);
	assert_string_equal(json_string_value(json_object_get(j, "status")), "open");
	assert_string_equal(json_string_value(json_object_get(j, "customer_id")), "c-cart");
	assert_int_equal(json_array_size(json_object_get(j, "items")), 2);
	expect_line(j, 0, sku_a, 5, 1000);
	expect_line(j, 1, sku_b, 1, 250);
	assert_int_equal(json_integer_value(json_object_get(j, "total_cents")), 5250);
	json_decref(j);

	/* Kept for seven days after the last change. */
	rep = cache_command(redis, "TTL cart:%s", id);
	assert_non_null(rep);
	assert_true(rep->integer > CART_TTL_S - 60 && rep->integer <= CART_TTL_S);
	freeReplyObject(rep);

	j = get_cart(id, 200);
	expect_line(j, 0, sku_a, 5, 1000);
	json_decref(j);
	wait_pg_cart(id, "open:1");

	snprintf(items, sizeof(items), "{\"items\":[{\"sku\":\"%s\",\"quantity\":7}]}", sku_b);
	j = put_cart(id, items, 200);
	assert_int_equal(json_array_size(json_object_get(j, "items")), 1);
	expect_line(j, 0, sku_b, 7, 250);
	assert_int_equal(json_integer_value(json_object_get(j, "total_cents")), 1750);
	json_decref(j);
	j = get_cart(id, 200);
	expect_line(j, 0, sku_b, 7, 250);
	json_decref(j);
	wait_pg_cart(id, "open:2");
	{
		char *pg_items =
		    pg_value("SELECT items::text FROM carts WHERE cart_id = $1::uuid", id);
		char want[128];

		snprintf(want, sizeof(want), "[{\"sku\": \"%s\", \"quantity\": 7}]", sku_b);
		assert_non_null(pg_items);
		assert_string_equal(pg_items, want);
		free(pg_items);
	}

	/* An empty cart is a cart. */
	j = put_cart(id, "{\"items\":[]}", 200);
	assert_int_equal(json_array_size(json_object_get(j, "items")), 0);
	assert_int_equal(json_integer_value(json_object_get(j, "total_cents")), 0);
	json_decref(j);

	assert_null(cart_request("DELETE", path, E2E_CLIENT, NULL, 204, NULL));
	expect_error(get_cart(id, 404), "cart_not_found", NULL);
	expect_error(cart_request("DELETE", path, E2E_CLIENT, NULL, 404, NULL), "cart_not_found",
	             NULL);
	wait_pg_cart(id, "deleted:4");
	free(id);
}

/* Another API key's cart does not exist for this one. */
static void test_scoped_to_key(void **state)
{
	char items[128], path[96];
	char *id;
	(void)state;

	snprintf(items, sizeof(items), "[{\"sku\":\"%s\",\"quantity\":1}]", sku_a);
	id = create_cart(items);
	snprintf(path, sizeof(path), "/v1/carts/%s", id);
	expect_error(cart_request("GET", path, E2E_ADMIN, NULL, 404, NULL), "cart_not_found", NULL);
	expect_error(cart_request("PUT", path, E2E_ADMIN, "{\"items\":[]}", 404, NULL),
	             "cart_not_found", NULL);
	expect_error(cart_request("DELETE", path, E2E_ADMIN, NULL, 404, NULL), "cart_not_found",
	             NULL);
	json_decref(get_cart(id, 200));
	free(id);
}

/* Bad cart bodies change nothing. */
static void test_validation(void **state)
{
	char body[8192], items[128];
	size_t n;
	json_t *j;
	char *id;
	(void)state;

	snprintf(body, sizeof(body),
	         "{\"customer_id\":\"c\",\"currency\":\"USD\",\"items\":[{\"sku\":\"%s\","
	         "\"quantity\":1},{\"sku\":\"NO-SUCH-SKU-EVER\",\"quantity\":1}]}",
	         sku_a);
	expect_error(cart_request("POST", "/v1/carts", E2E_CLIENT, body, 422, NULL), "unknown_sku",
	             "items[1].sku");
	snprintf(body, sizeof(body),
	         "{\"customer_id\":\"c\",\"currency\":\"USD\",\"items\":[{\"sku\":\"%s\","
	         "\"quantity\":1}]}",
	         sku_eur);
	expect_error(cart_request("POST", "/v1/carts", E2E_CLIENT, body, 422, NULL),
	             "currency_mismatch", "items[0].sku");
	snprintf(body, sizeof(body),
	         "{\"customer_id\":\"c\",\"currency\":\"USD\",\"items\":[{\"sku\":\"%s\","
	         "\"quantity\":600},{\"sku\":\"%s\",\"quantity\":400}]}",
	         sku_a, sku_a);
	expect_error(cart_request("POST", "/v1/carts", E2E_CLIENT, body, 422, NULL),
	             "validation_error", "items[1].quantity");
	expect_error(cart_request("POST", "/v1/carts", E2E_CLIENT,
	                          "{\"customer_id\":\"c\",\"currency\":\"USD\",\"coupon\":\"X\"}",
	                          422, NULL),
	             "validation_error", "coupon");
	expect_error(
	    cart_request("POST", "/v1/carts", E2E_CLIENT, "{\"currency\":\"USD\"}", 422, NULL),
	    "validation_error", "customer_id");
	n = (size_t)snprintf(body, sizeof(body),
	                     "{\"customer_id\":\"c\",\"currency\":\"USD\",\"items\":[");
	for (int i = 0; i < 101; i++)
		n += (size_t)snprintf(body + n, sizeof(body) - n,
		                      "%s{\"sku\":\"S%d\",\"quantity\":1}", i ? "," : "", i);
	snprintf(body + n, sizeof(body) - n, "]}");
	expect_error(cart_request("POST", "/v1/carts", E2E_CLIENT, body, 422, NULL),
	             "validation_error", "items");

	snprintf(items, sizeof(items), "[{\"sku\":\"%s\",\"quantity\":1}]", sku_a);
	id = create_cart(items);
	snprintf(body, sizeof(body), "{\"customer_id\":\"other\",\"items\":[]}");
	expect_error(put_cart(id, body, 422), "validation_error", "customer_id");
	snprintf(body, sizeof(body), "{\"items\":[{\"sku\":\"%s\",\"quantity\":0}]}", sku_a);
	expect_error(put_cart(id, body, 422), "validation_error", "items[0].quantity");
	expect_error(put_cart(id, "{}", 422), "validation_error", "items");
	/* None of it changed the cart. */
	j = get_cart(id, 200);
	expect_line(j, 0, sku_a, 1, 1000);
	json_decref(j);
	expect_error(get_cart("not-a-uuid", 404), "cart_not_found", NULL);
	expect_error(get_cart("00000000-0000-4000-8000-000000000000", 404), "cart_not_found", NULL);
	free(id);
}

/*
 * A checkout by cart id prices the cart's lines from the catalog at
 * checkout time; the confirmed order marks the cart checked out, in Redis
 * and in PostgreSQL, and a checked-out cart can be neither changed nor
 * checked out again.
 */
static void test_checkout(void **state)
{
	char items[128], body[1024], idem[64], path[96];
	struct http_response r;
	json_t *j, *order;
	char *id, *order_id, *pg_order;
	double start;
	(void)state;

	snprintf(items, sizeof(items), "[{\"sku\":\"%s\",\"quantity\":3}]", sku_b);
	id = create_cart(items);
	/* Repriced after the cart was made: the order pays today's price. */
	e2e_put_product(sku_b, 1000, 300);
	checkout_body(body, sizeof(body), id);
	unique(idem, sizeof(idem), "cart");
	order_id = e2e_checkout_ok(idem, body);
	order = e2e_wait_final(order_id, E2E_FINAL_TIMEOUT_MS);
	assert_string_equal(json_string_value(json_object_get(order, "status")), "confirmed");
	assert_int_equal(json_integer_value(json_object_get(order, "total_cents")), 900);
	assert_int_equal(json_array_size(json_object_get(order, "items")), 1);
	json_decref(order);

	start = e2e_now_ms();
	for (;;) {
		j = get_cart(id, 200);
		if (strcmp(json_string_value(json_object_get(j, "status")), "checked_out") == 0)
			break;
		json_decref(j);
		assert_true(e2e_now_ms() - start < 15000);
		usleep(100000);
	}
	assert_string_equal(json_string_value(json_object_get(j, "order_id")), order_id);
	json_decref(j);
	/* cart-consumer marks Redis inside its transaction, so PostgreSQL's
	 * copy may commit a moment (a batch) later. */
	start = e2e_now_ms();
	while (!(pg_order = pg_value("SELECT order_id::text FROM carts WHERE cart_id = $1::uuid "
	                             "AND status = 'checked_out'",
	                             id))) {
		assert_true(e2e_now_ms() - start < 15000);
		usleep(100000);
	}
	assert_string_equal(pg_order, order_id);
	free(pg_order);
	pg_order = pg_value("SELECT cart_id::text FROM orders WHERE order_id = $1::uuid", order_id);
	assert_non_null(pg_order);
	assert_string_equal(pg_order, id);
	free(pg_order);

	expect_error(put_cart(id, "{\"items\":[]}", 409), "cart_checked_out", NULL);
	unique(idem, sizeof(idem), "cart-again");
	assert_int_equal(e2e_post_checkout(idem, body, &r), 0);
	assert_int_equal(r.status, 409);
	expect_error(http_json(&r), "cart_checked_out", "cart_id");
	http_response_release(&r);
	/* Deleting a checked-out cart is allowed. */
	snprintf(path, sizeof(path), "/v1/carts/%s", id);
	assert_null(cart_request("DELETE", path, E2E_CLIENT, NULL, 204, NULL));
	free(order_id);
	free(id);
}

static void test_checkout_refusals(void **state)
{
	char body[1024], idem[64], with_items[1200];
	struct http_response r;
	char *id;
	(void)state;

	id = create_cart("[]");
	checkout_body(body, sizeof(body), id);
	unique(idem, sizeof(idem), "empty");
	assert_int_equal(e2e_post_checkout(idem, body, &r), 0);
	assert_int_equal(r.status, 422);
	expect_error(http_json(&r), "empty_cart", "cart_id");
	http_response_release(&r);

	checkout_body(body, sizeof(body), "00000000-0000-4000-8000-000000000000");
	unique(idem, sizeof(idem), "unknown");
	assert_int_equal(e2e_post_checkout(idem, body, &r), 0);
	assert_int_equal(r.status, 404);
	expect_error(http_json(&r), "cart_not_found", "cart_id");
	http_response_release(&r);

	/* cart_id and items together: which one is meant? */
	checkout_body(body, sizeof(body), id);
	snprintf(with_items, sizeof(with_items), "{\"items\":[{\"sku\":\"%s\",\"quantity\":1}],%s",
	         sku_a, body + 1);
	unique(idem, sizeof(idem), "both");
	assert_int_equal(e2e_post_checkout(idem, with_items, &r), 0);
	assert_int_equal(r.status, 422);
	expect_error(http_json(&r), "validation_error", "cart_id");
	http_response_release(&r);
	free(id);
}

/* Racing changes: Redis and PostgreSQL both end with the last version applied. */
struct racer {
	const char *cart_id;
	int quantity;
};

static void *race_put(void *arg)
{
	struct racer *rc = arg;
	const char *h[] = {E2E_CLIENT, E2E_JSON, NULL};
	char path[96], body[128];
	struct http_response r;

	snprintf(path, sizeof(path), "/v1/carts/%s", rc->cart_id);
	snprintf(body, sizeof(body), "{\"items\":[{\"sku\":\"%s\",\"quantity\":%d}]}", sku_a,
	         rc->quantity);
	for (int i = 0; i < 5; i++) {
		if (http_request("PUT", path, h, body, strlen(body), &r) == 0) {
			if (r.status != 200)
				fprintf(stderr, "racing PUT answered %d: %s\n", r.status, r.body);
			http_response_release(&r);
		}
	}
	return NULL;
}

static void test_racing_changes(void **state)
{
	pthread_t t[RACERS];
	struct racer racers[RACERS];
	char *id, *pg_items, *version, want[128];
	redisReply *rep;
	json_t *j;
	int q;
	(void)state;

	id = create_cart("[]");
	for (int i = 0; i < RACERS; i++) {
		racers[i].cart_id = id;
		racers[i].quantity = i + 1;
		assert_int_equal(pthread_create(&t[i], NULL, race_put, &racers[i]), 0);
	}
	for (int i = 0; i < RACERS; i++)
		pthread_join(t[i], NULL);
	rep = cache_command(redis, "HGET cart:%s version", id);
	assert_non_null(rep);
	assert_int_equal(rep->type, REDIS_REPLY_STRING);
	version = strdup(rep->str);
	freeReplyObject(rep);
	assert_int_equal(atoi(version), 1 + RACERS * 5);

	j = get_cart(id, 200);
	q = (int)json_integer_value(
	    json_object_get(json_array_get(json_object_get(j, "items"), 0), "quantity"));
	json_decref(j);
	snprintf(want, sizeof(want), "open:%s", version);
	wait_pg_cart(id, want);
	pg_items = pg_value("SELECT items::text FROM carts WHERE cart_id = $1::uuid", id);
	snprintf(want, sizeof(want), "[{\"sku\": \"%s\", \"quantity\": %d}]", sku_a, q);
	assert_non_null(pg_items);
	assert_string_equal(pg_items, want);
	free(pg_items);
	free(version);
	free(id);
}

static int setup(void **state)
{
	const char *url = getenv("ORDERS_REDIS_URL");
	const char *dsn = getenv("ORDERS_PG_DSN");
	(void)state;

	srandom((unsigned)time(NULL) ^ (unsigned)getpid());
	redis = cache_new(url && *url ? url : DEFAULT_REDIS);
	pg = db_new(dsn && *dsn ? dsn : DEFAULT_PG);
	if (!redis || !pg) {
		fprintf(stderr, "it_cart: cannot reach Redis or PostgreSQL (make up?)\n");
		return -1;
	}
	unique(sku_a, sizeof(sku_a), "CART-A");
	unique(sku_b, sizeof(sku_b), "CART-B");
	unique(sku_eur, sizeof(sku_eur), "CART-EUR");
	e2e_put_product(sku_a, 1000, 1000);
	e2e_put_product(sku_b, 1000, 250);
	{
		const char *h[] = {E2E_ADMIN, E2E_JSON, NULL};
		char path[96], body[128];
		struct http_response r;

		snprintf(path, sizeof(path), "/v1/products/%s", sku_eur);
		snprintf(
		    body, sizeof(body),
		    "{\"name\":\"Euro\",\"price_cents\":100,\"currency\":\"EUR\",\"stock\":5}");
		if (http_request("PUT", path, h, body, strlen(body), &r) != 0 || r.status != 201)
			return -1;
		http_response_release(&r);
	}
	return 0;
}

static int teardown(void **state)
{
	(void)state;
	cache_free(redis);
	db_free(pg);
	return 0;
}

int main(void)
{
	const struct CMUnitTest tests[] = {
	    cmocka_unit_test(test_lifecycle),         cmocka_unit_test(test_scoped_to_key),
	    cmocka_unit_test(test_validation),        cmocka_unit_test(test_checkout),
	    cmocka_unit_test(test_checkout_refusals), cmocka_unit_test(test_racing_changes),
	};

	return cmocka_run_group_tests(tests, setup, teardown);
}
