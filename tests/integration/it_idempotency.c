/* it_idempotency.c: one Idempotency-Key, one order: across an API restart and after Redis
 * loses its data. */
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

#include "cache.h"
#include "db.h"
#include "e2e.h"
#include "err.h"
#include "mq.h"
#include "proto.h"

#define DEFAULT_DSN "postgresql://orders@127.0.0.1:5442/orders"
#define DEFAULT_REDIS "redis://127.0.0.1:6389/0"

static char run_id[32];
static char root[PATH_MAX];
static struct db *db;
static struct cache *redis;

/* ---- helpers -------------------------------------------------------------- */

static void sku_name(char *out, size_t n, const char *what)
{
	snprintf(out, n, "IDEM-%s-%s", run_id, what);
}

static void idem_key(char *out, size_t n, const char *what)
{
	snprintf(out, n, "it-idem-%s-%s", run_id, what);
}

/* The first column of the first row of a one-parameter query, as a number. */
static long sql_long(const char *sql, const char *param)
{
	PGresult *r = NULL;
	long v;

	assert_int_equal(db_exec(db, sql, 1, &param, &r), ERR_OK);
	assert_int_equal(PQntuples(r), 1);
	v = strtol(PQgetvalue(r, 0, 0), NULL, 10);
	PQclear(r);
	return v;
}

/* How many lines of a daemon's log hold both needles. */
static int log_lines(const char *file, const char *a, const char *b)
{
	char path[PATH_MAX + 64], line[8192];
	FILE *f;
	int n = 0;

	snprintf(path, sizeof(path), "%s/.local/log/%s", root, file);
	f = fopen(path, "r");
	if (!f)
		return 0;
	while (fgets(line, sizeof(line), f))
		if (strstr(line, a) && (!b || strstr(line, b)))
			n++;
	fclose(f);
	return n;
}

/*
 * Push a checkout of a SKU of its own through every stage and wait for its
 * final status. Each stage is one consumer taking its queue in order, so
 * once this order is final every message published before it has been
 * handled too.
 */
static void drain_pipeline(const char *what)
{
	char sku[64], key[128], body[1024];
	char *id;

	snprintf(sku, sizeof(sku), "IDEM-%s-DRAIN-%s", run_id, what);
	idem_key(key, sizeof(key), sku);
	e2e_put_product(sku, 5, 100);
	e2e_checkout_body(body, sizeof(body), sku, 1, "4242424242424242");
	id = e2e_checkout_ok(key, body);
	e2e_expect_final(id, "confirmed", E2E_FINAL_TIMEOUT_MS);
	free(id);
}

/* Redis loses everything. ASYNC: the keys are gone at once and freed in the
 * background, so a Redis left with many keys (a benchmark) does not outlast
 * the command timeout. */
static void flush_redis(void)
{
	redisReply *rep = cache_command(redis, "FLUSHALL ASYNC");

	assert_non_null(rep);
	assert_int_equal(rep->type, REDIS_REPLY_STATUS);
	freeReplyObject(rep);
}

/*
 * Everything one order of qty units of sku leaves in the database, exactly
 * once: the order row for the key, its reservation (committed), the
 * gateway's authorization and payment, the finance event, and the stock
 * taken once.
 */
static void expect_one_order(const char *key, const char *order_id, const char *sku, long stock0,
                             long qty)
{
	assert_int_equal(sql_long("SELECT count(*) FROM orders WHERE idempotency_key = $1", key),
	                 1);
	assert_int_equal(sql_long("SELECT count(*) FROM orders WHERE order_id = $1::uuid "
	                          "AND status = 'confirmed'",
	                          order_id),
	                 1);
	assert_int_equal(
	    sql_long("SELECT count(*) FROM order_lines WHERE order_id = $1::uuid", order_id), 1);
	assert_int_equal(sql_long("SELECT coalesce(sum(quantity), 0) FROM order_lines "
	                          "WHERE order_id = $1::uuid",
	                          order_id),
	                 qty);
	assert_int_equal(
	    sql_long("SELECT count(*) FROM reservations WHERE order_id = $1::uuid", order_id), 1);
	assert_int_equal(sql_long("SELECT count(*) FROM reservations WHERE order_id = $1::uuid "
	                          "AND state = 'committed'",
	                          order_id),
	                 1);
	assert_int_equal(
	    sql_long("SELECT count(*) FROM gateway_charges WHERE idempotency_key = $1", order_id),
	    1);
	assert_int_equal(
	    sql_long("SELECT count(*) FROM payments WHERE order_id = $1::uuid AND authorized",
	             order_id),
	    1);
	assert_int_equal(
	    sql_long("SELECT count(*) FROM order_events WHERE order_id = $1::uuid", order_id), 1);
	/* The key's order never appears under any other id either. */
	assert_int_equal(sql_long("SELECT count(*) FROM order_events e JOIN orders o USING "
	                          "(order_id) WHERE o.idempotency_key = $1",
	                          key),
	                 1);
	/* Sold once: stock went down by qty, nothing is left held. */
	assert_int_equal(sql_long("SELECT stock FROM products WHERE sku = $1", sku), stock0 - qty);
	assert_int_equal(sql_long("SELECT reserved FROM products WHERE sku = $1", sku), 0);
	e2e_wait_available(sku, stock0 - qty);
}

/*
 * Read the events that arrived, until none comes for half a second. Every
 * one for order_id must describe the order as the database holds it (one
 * line of qty of sku, total). Returns how many were for order_id.
 */
static int events_check(amqp_connection_state_t c, const char *order_id, const char *sku, long qty,
                        long total)
{
	int n = 0;

	for (;;) {
		struct timeval tv = {0, 500000};
		Orders__OrderEvent *ev;
		amqp_envelope_t env;
		amqp_rpc_reply_t r;

		amqp_maybe_release_buffers(c);
		r = amqp_consume_message(c, &env, &tv, 0);
		if (r.reply_type == AMQP_RESPONSE_LIBRARY_EXCEPTION &&
		    r.library_error == AMQP_STATUS_TIMEOUT)
			break;
		assert_int_equal(r.reply_type, AMQP_RESPONSE_NORMAL);
		ev =
		    orders__order_event__unpack(NULL, env.message.body.len, env.message.body.bytes);
		amqp_destroy_envelope(&env);
		assert_non_null(ev);
		if (ev->envelope && strcmp(ev->envelope->order_id, order_id) == 0) {
			n++;
			assert_string_equal(ev->type, "order.confirmed");
			assert_int_equal(ev->total_cents, total);
			assert_int_equal(ev->n_lines, 1);
			assert_string_equal(ev->lines[0]->sku, sku);
			assert_int_equal(ev->lines[0]->quantity, qty);
		}
		orders__order_event__free_unpacked(ev, NULL);
	}
	return n;
}

/* ---- tests ---------------------------------------------------------------- */

/* The same key and body after an API restart: the same 202, byte for byte. */
static void test_replay_after_api_restart(void **state)
{
	struct http_response a, b;
	char sku[64], key[128], body[1024], other[1024], cmd[PATH_MAX + 64];
	json_t *ja, *jb;
	(void)state;

	sku_name(sku, sizeof(sku), "RESTART");
	idem_key(key, sizeof(key), "restart");
	e2e_put_product(sku, 10, 450);
	e2e_checkout_body(body, sizeof(body), sku, 2, "4242424242424242");
	assert_int_equal(e2e_post_checkout(key, body, &a), 0);
	assert_int_equal(a.status, 202);

	snprintf(cmd, sizeof(cmd), "'%s/deploy/local/daemon.sh' restart orders-api", root);
	assert_int_equal(system(cmd), 0);
	/* The old process stopped cleanly: no sanitizer report in its log. */
	assert_int_equal(log_lines("orders-api.log.prev", "ERROR: AddressSanitizer", NULL), 0);
	assert_int_equal(log_lines("orders-api.log.prev", "ERROR: LeakSanitizer", NULL), 0);
	assert_int_equal(log_lines("orders-api.log.prev", "runtime error:", NULL), 0);

	assert_int_equal(e2e_post_checkout(key, body, &b), 0);
	if (b.status != 202)
		fprintf(stderr, "replay after restart answered %d: %s\n", b.status, b.body);
	assert_int_equal(b.status, 202);
	assert_int_equal(b.body_len, a.body_len);
	assert_string_equal(b.body, a.body);
	ja = http_json(&a);
	jb = http_json(&b);
	assert_non_null(ja);
	assert_true(json_equal(ja, jb));
	http_response_release(&b);

	/* And another body with that key is still refused. */
	e2e_checkout_body(other, sizeof(other), sku, 3, "4242424242424242");
	assert_int_equal(e2e_post_checkout(key, other, &b), 0);
	assert_int_equal(b.status, 422);
	assert_non_null(strstr(b.body, "idempotency_key_reused"));
	http_response_release(&b);

	e2e_expect_final(json_string_value(json_object_get(ja, "order_id")), "confirmed",
	                 E2E_FINAL_TIMEOUT_MS);
	expect_one_order(key, json_string_value(json_object_get(ja, "order_id")), sku, 10, 2);
	json_decref(ja);
	json_decref(jb);
	http_response_release(&a);
}

/*
 * Redis forgets every key (a restart without persistence, a failover):
 * the same key and body come again. The API cannot tell and may accept
 * again, but the order id derives from the client and the key, so the
 * database still holds one order, charged, reserved and sold once.
 */
static void test_replay_after_redis_loss(void **state)
{
	struct http_response a, b;
	char sku[64], key[128], body[1024];
	const char *order_id;
	amqp_connection_state_t events;
	json_t *ja, *jb;
	int replays;
	(void)state;

	events = e2e_events_watch();
	sku_name(sku, sizeof(sku), "WIPE");
	idem_key(key, sizeof(key), "wipe");
	e2e_put_product(sku, 10, 300);
	e2e_checkout_body(body, sizeof(body), sku, 2, "5555555555554444");
	assert_int_equal(e2e_post_checkout(key, body, &a), 0);
	assert_int_equal(a.status, 202);
	ja = http_json(&a);
	assert_non_null(ja);
	order_id = json_string_value(json_object_get(ja, "order_id"));
	e2e_expect_final(order_id, "confirmed", E2E_FINAL_TIMEOUT_MS);
	expect_one_order(key, order_id, sku, 10, 2);
	replays = log_lines("orders-inventory.log", "\"message replayed\"", order_id);

	flush_redis();
	assert_int_equal(e2e_post_checkout(key, body, &b), 0);
	if (b.status != 202)
		fprintf(stderr, "replay after FLUSHALL answered %d: %s\n", b.status, b.body);
	assert_int_equal(b.status, 202);
	jb = http_json(&b);
	assert_non_null(jb);
	assert_true(json_equal(ja, jb));
	json_decref(jb);
	http_response_release(&b);

	/* The replay went down the pipeline and was recognised there. */
	drain_pipeline("WIPE");
	assert_true(log_lines("orders-inventory.log", "\"message replayed\"", order_id) > replays);
	expect_one_order(key, order_id, sku, 10, 2);
	e2e_expect_final(order_id, "confirmed", 1000);
	/* Announced as it is (a replayed announcement is the same event again). */
	assert_true(events_check(events, order_id, sku, 2, 600) >= 1);
	e2e_amqp_close(events);

	json_decref(ja);
	http_response_release(&a);
}

/*
 * After Redis lost the key, another body with it cannot be told from a
 * first request by the API, but it must not make a second order (or
 * touch any stock) either: same order id, and the order keeps what the
 * first body asked for.
 */
static void test_other_body_after_redis_loss(void **state)
{
	struct http_response r;
	char sku[64], sku2[64], key[128], body[1024], other[1024];
	amqp_connection_state_t events;
	char *order_id;
	long total;
	(void)state;

	events = e2e_events_watch();
	sku_name(sku, sizeof(sku), "OTHER");
	sku_name(sku2, sizeof(sku2), "OTHER2");
	idem_key(key, sizeof(key), "other");
	e2e_put_product(sku, 10, 300);
	e2e_put_product(sku2, 10, 500);
	e2e_checkout_body(body, sizeof(body), sku, 1, "4242424242424242");
	order_id = e2e_checkout_ok(key, body);
	e2e_expect_final(order_id, "confirmed", E2E_FINAL_TIMEOUT_MS);
	expect_one_order(key, order_id, sku, 10, 1);
	total = sql_long("SELECT total_cents FROM orders WHERE order_id = $1::uuid", order_id);
	assert_int_equal(total, 300);

	/* Another SKU and quantity, and a card that would be declined. */
	e2e_checkout_body(other, sizeof(other), sku2, 3, "4000000000000002");
	for (int round = 0; round < 2; round++) {
		flush_redis();
		assert_int_equal(e2e_post_checkout(key, other, &r), 0);
		if (r.status == 202) {
			json_t *j = http_json(&r);

			assert_non_null(j);
			assert_string_equal(json_string_value(json_object_get(j, "order_id")),
			                    order_id);
			json_decref(j);
		} else {
			/* A refusal is as good, as long as nothing is made. */
			if (r.status != 422)
				fprintf(stderr, "other body after FLUSHALL answered %d: %s\n",
				        r.status, r.body);
			assert_int_equal(r.status, 422);
		}
		http_response_release(&r);

		drain_pipeline(round ? "OTHER-B" : "OTHER-A");
		expect_one_order(key, order_id, sku, 10, 1);
		assert_int_equal(
		    sql_long("SELECT total_cents FROM orders WHERE order_id = $1::uuid", order_id),
		    300);
		assert_int_equal(sql_long("SELECT count(*) FROM order_lines WHERE sku = $1", sku2),
		                 0);
		assert_int_equal(sql_long("SELECT count(*) FROM reservations WHERE sku = $1", sku2),
		                 0);
		assert_int_equal(sql_long("SELECT stock FROM products WHERE sku = $1", sku2), 10);
		assert_int_equal(sql_long("SELECT reserved FROM products WHERE sku = $1", sku2), 0);
		e2e_wait_available(sku2, 10);
		/* The order stays as it was, and so does what subscribers hear of it. */
		e2e_expect_final(order_id, "confirmed", 1000);
		assert_true(events_check(events, order_id, sku, 1, 300) >= (round ? 0 : 1));
	}
	e2e_amqp_close(events);
	free(order_id);
}

static int group_setup(void **state)
{
	const char *dsn = getenv("ORDERS_PG_DSN");
	const char *url = getenv("ORDERS_REDIS_URL");
	(void)state;

	e2e_find_root(root, sizeof(root));
	db = db_new(dsn && *dsn ? dsn : DEFAULT_DSN);
	if (!db) {
		fprintf(stderr, "it_idempotency: cannot connect to ORDERS_PG_DSN (make up?)\n");
		return -1;
	}
	redis = cache_new(url && *url ? url : DEFAULT_REDIS);
	if (!redis || cache_ping(redis) != ERR_OK) {
		fprintf(stderr, "it_idempotency: cannot reach ORDERS_REDIS_URL (make up?)\n");
		return -1;
	}
	return 0;
}

static int group_teardown(void **state)
{
	(void)state;
	cache_free(redis);
	db_free(db);
	return 0;
}

int main(void)
{
	const struct CMUnitTest tests[] = {
	    cmocka_unit_test(test_replay_after_api_restart),
	    cmocka_unit_test(test_replay_after_redis_loss),
	    cmocka_unit_test(test_other_body_after_redis_loss),
	};

	snprintf(run_id, sizeof(run_id), "%ld-%d", (long)time(NULL), (int)getpid());
	return cmocka_run_group_tests(tests, group_setup, group_teardown);
}
