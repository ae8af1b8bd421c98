/* it_trace.c: one X-Request-Id follows a checkout through every daemon's log and message. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>

#include <limits.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include <jansson.h>

#include "db.h"
#include "e2e.h"
#include "err.h"
#include "ids.h"
#include "mq.h"
#include "proto.h"

#define DEFAULT_DSN "postgresql://orders@127.0.0.1:5442/orders"
/* The last daemon logs its line after the order is final: allow it a while. */
#define LOG_WAIT_MS 15000

static const char *const daemons[] = {"orders-api", "orders-inventory", "orders-payment",
                                      "orders-order"};
#define NDAEMONS (sizeof(daemons) / sizeof(daemons[0]))

static char run_id[32];
static char root[PATH_MAX];
static struct db *db;

/* ---- helpers -------------------------------------------------------------- */

/* GET path with the extra header line (or none); returns the X-Request-Id answered. */
static void request_id_of(const char *path, const char *header, char *out, size_t n)
{
	const char *h[] = {E2E_CLIENT, header, NULL};
	struct http_response r;

	assert_int_equal(http_request("GET", path, h, NULL, 0, &r), 0);
	assert_true(r.status > 0);
	if (http_header(&r, "X-Request-Id", out, n) != 0)
		fail_msg("GET %s answered %d without X-Request-Id", path, r.status);
	http_response_release(&r);
}

/*
 * What one daemon's log says about a request: how many lines carry
 * request_id rid and order_id oid (with a message_id in *with_message),
 * after checking that every line mentioning oid is one JSON object
 * without a repeated key (rid itself appears escaped).
 */
static int lines_about(const char *daemon, const char *rid, const char *oid, int *with_message)
{
	char path[PATH_MAX + 64];
	char *line = NULL;
	size_t cap = 0;
	ssize_t len;
	FILE *f;
	int n = 0;

	*with_message = 0;
	snprintf(path, sizeof(path), "%s/.local/log/%s.log", root, daemon);
	f = fopen(path, "r");
	if (!f)
		fail_msg("cannot read %s (is the stack up?)", path);
	while ((len = getline(&line, &cap, f)) > 0) {
		json_error_t e;
		json_t *j;
		const char *mid;

		if (!strstr(line, oid))
			continue;
		j = json_loadb(line, (size_t)len, JSON_REJECT_DUPLICATES, &e);
		if (!j || !json_is_object(j))
			fail_msg("%s: a line about %s is not one JSON object (%s): %s", daemon, oid,
			         e.text, line);
		if (json_is_string(json_object_get(j, "request_id")) &&
		    strcmp(json_string_value(json_object_get(j, "request_id")), rid) == 0 &&
		    json_is_string(json_object_get(j, "order_id")) &&
		    strcmp(json_string_value(json_object_get(j, "order_id")), oid) == 0) {
			n++;
			mid = json_string_value(json_object_get(j, "message_id"));
			if (mid && *mid)
				(*with_message)++;
		}
		json_decref(j);
	}
	free(line);
	fclose(f);
	return n;
}

/* The correlation id of the order event published for order_id (10 s at most). */
static char *event_correlation(amqp_connection_state_t c, const char *order_id)
{
	double start = e2e_now_ms();

	while (e2e_now_ms() - start < 10000) {
		struct timeval tv = {0, 500000};
		Orders__OrderEvent *ev;
		amqp_envelope_t env;
		amqp_rpc_reply_t r;
		char *cid = NULL;

		amqp_maybe_release_buffers(c);
		r = amqp_consume_message(c, &env, &tv, 0);
		if (r.reply_type == AMQP_RESPONSE_LIBRARY_EXCEPTION &&
		    r.library_error == AMQP_STATUS_TIMEOUT)
			continue;
		assert_int_equal(r.reply_type, AMQP_RESPONSE_NORMAL);
		ev =
		    orders__order_event__unpack(NULL, env.message.body.len, env.message.body.bytes);
		amqp_destroy_envelope(&env);
		assert_non_null(ev);
		if (ev->envelope && strcmp(ev->envelope->order_id, order_id) == 0)
			cid = strdup(ev->envelope->correlation_id ? ev->envelope->correlation_id
			                                          : "");
		orders__order_event__free_unpacked(ev, NULL);
		if (cid)
			return cid;
	}
	fail_msg("no order event for %s within 10 s", order_id);
	return NULL;
}

/* ---- tests ---------------------------------------------------------------- */

/*
 * A checkout with its own X-Request-Id, one with spaces, quotes and a
 * backslash: the 202 echoes it, the order row and the finance event carry
 * it as it is, and each of the four daemons wrote lines with it and the
 * order id, all valid JSON.
 */
static void test_request_id_follows_the_order(void **state)
{
	char sku[64], idem[96], rid[64], rid_h[96], idem_h[128], echoed[128], body[1024];
	const char *h[] = {E2E_CLIENT, E2E_JSON, idem_h, rid_h, NULL};
	const char *param[1];
	char uuid[IDS_UUID_LEN + 1];
	struct http_response r;
	amqp_connection_state_t events;
	PGresult *res = NULL;
	json_t *j;
	char *order_id, *cid;
	int found[NDAEMONS], with_message[NDAEMONS];
	double start;
	size_t i;
	(void)state;

	ids_uuid4(uuid);
	snprintf(rid, sizeof(rid), "trace \"q\" \\ %s", uuid);
	snprintf(rid_h, sizeof(rid_h), "X-Request-Id: %s", rid);
	snprintf(sku, sizeof(sku), "TRACE-%s", run_id);
	snprintf(idem, sizeof(idem), "it-trace-%s", run_id);
	snprintf(idem_h, sizeof(idem_h), "Idempotency-Key: %s", idem);
	e2e_put_product(sku, 5, 250);
	events = e2e_events_watch();

	e2e_checkout_body(body, sizeof(body), sku, 1, "4242424242424242");
	assert_int_equal(http_request("POST", "/v1/checkouts", h, body, strlen(body), &r), 0);
	if (r.status != 202)
		fprintf(stderr, "checkout answered %d: %s\n", r.status, r.body);
	assert_int_equal(r.status, 202);
	assert_int_equal(http_header(&r, "X-Request-Id", echoed, sizeof(echoed)), 0);
	assert_string_equal(echoed, rid);
	j = http_json(&r);
	assert_non_null(j);
	order_id = strdup(json_string_value(json_object_get(j, "order_id")));
	json_decref(j);
	http_response_release(&r);
	assert_non_null(order_id);
	e2e_expect_final(order_id, "confirmed", E2E_FINAL_TIMEOUT_MS);

	/* inventory-consumer kept it with the order; order-consumer sent it on. */
	param[0] = order_id;
	assert_int_equal(db_exec(db, "SELECT correlation_id FROM orders WHERE order_id = $1::uuid",
	                         1, param, &res),
	                 ERR_OK);
	assert_int_equal(PQntuples(res), 1);
	assert_string_equal(PQgetvalue(res, 0, 0), rid);
	PQclear(res);
	cid = event_correlation(events, order_id);
	assert_string_equal(cid, rid);
	free(cid);
	e2e_amqp_close(events);

	/* The consumers log once their message is settled, just after the status. */
	start = e2e_now_ms();
	for (;;) {
		int missing = 0;

		for (i = 0; i < NDAEMONS; i++) {
			found[i] = lines_about(daemons[i], rid, order_id, &with_message[i]);
			missing += found[i] == 0;
		}
		if (!missing || e2e_now_ms() - start > LOG_WAIT_MS)
			break;
		usleep(200000);
	}
	for (i = 0; i < NDAEMONS; i++) {
		if (found[i] == 0)
			fprintf(stderr, "%s.log: no line with request_id %s and order_id %s\n",
			        daemons[i], rid, order_id);
		assert_true(found[i] > 0);
		/* Consumers' lines also name the message they handle. */
		if (i > 0)
			assert_true(with_message[i] > 0);
	}
	free(order_id);
}

/* Without X-Request-Id, every answer gets a fresh UUID, errors included. */
static void test_request_id_generated(void **state)
{
	const char *const paths[] = {"/healthz", "/v1/products", "/no/such/route",
	                             "/v1/orders/not-an-id"};
	char a[128], b[128];
	size_t i;
	(void)state;

	for (i = 0; i < sizeof(paths) / sizeof(paths[0]); i++) {
		request_id_of(paths[i], NULL, a, sizeof(a));
		request_id_of(paths[i], NULL, b, sizeof(b));
		assert_true(ids_uuid_valid(a));
		assert_true(ids_uuid_valid(b));
		assert_string_not_equal(a, b);
	}
}

/* 1-64 printable ASCII (0x20-0x7e) is echoed; anything else replaced. */
static void test_request_id_validated(void **state)
{
	static const char *const good[] = {
	    "has\"quote", "back\\slash", "two words", "{\"json\": \"\\u0000\"}", " !~",
	};
	static const char *const bad[] = {
	    "X-Request-Id: "
	    "a123456789b123456789c123456789d123456789e123456789f123456789g1234",
	    "X-Request-Id: caf\xc3\xa9",
	    "X-Request-Id: tab\there",
	    "X-Request-Id: del\x7f",
	};
	const char *longest = "a123456789b123456789c123456789d123456789e123456789f123456789g123";
	char got[256], header[128];
	size_t i;
	(void)state;

	assert_int_equal(strlen(longest), 64);
	snprintf(header, sizeof(header), "X-Request-Id: %s", longest);
	request_id_of("/healthz", header, got, sizeof(got));
	assert_string_equal(got, longest);
	request_id_of("/no/such/route", "X-Request-Id: r-404.ok_1", got, sizeof(got));
	assert_string_equal(got, "r-404.ok_1");
	for (i = 0; i < sizeof(good) / sizeof(good[0]); i++) {
		snprintf(header, sizeof(header), "X-Request-Id: %s", good[i]);
		request_id_of("/healthz", header, got, sizeof(got));
		/* The header's leading space goes, as HTTP trims it. */
		assert_string_equal(got, good[i][0] == ' ' ? good[i] + 1 : good[i]);
	}

	for (i = 0; i < sizeof(bad) / sizeof(bad[0]); i++) {
		request_id_of("/healthz", bad[i], got, sizeof(got));
		if (!ids_uuid_valid(got))
			fail_msg("sent '%s', got back '%s'", bad[i], got);
		assert_null(strchr(got, '"'));
		assert_null(strstr(bad[i], got));
	}
}

static int group_setup(void **state)
{
	const char *dsn = getenv("ORDERS_PG_DSN");
	(void)state;

	e2e_find_root(root, sizeof(root));
	db = db_new(dsn && *dsn ? dsn : DEFAULT_DSN);
	if (!db) {
		fprintf(stderr, "it_trace: cannot connect to ORDERS_PG_DSN (make up?)\n");
		return -1;
	}
	return 0;
}

static int group_teardown(void **state)
{
	(void)state;
	db_free(db);
	return 0;
}

int main(void)
{
	const struct CMUnitTest tests[] = {
	    cmocka_unit_test(test_request_id_follows_the_order),
	    cmocka_unit_test(test_request_id_generated),
	    cmocka_unit_test(test_request_id_validated),
	};

	snprintf(run_id, sizeof(run_id), "%ld-%d", (long)time(NULL), (int)getpid());
	return cmocka_run_group_tests(tests, group_setup, group_teardown);
}
