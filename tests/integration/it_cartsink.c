/* it_cartsink.c: cart-consumer keeps the newest cart in PostgreSQL, and hears of checkouts. */
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

#include <sodium.h>

#include "cache.h"
#include "card.h"
#include "config.h"
#include "db.h"
#include "e2e.h"
#include "err.h"
#include "ids.h"
#include "mq.h"
#include "proto.h"
#include "seal.h"

#define DEFAULT_DSN "postgresql://orders@127.0.0.1:5442/orders"
#define DEFAULT_REDIS "redis://127.0.0.1:6389/0"
/* One message through one consumer on a busy, shared machine. */
#define WAIT_MS 30000
/* A poison message is dead-lettered at once; it still waits its turn in the queue. */
#define DLQ_WAIT_MS 60000
/* The API's cart lifetime in Redis. */
#define CART_TTL_S (7 * 86400)
#define MAX_LINES 4

static char run_id[32];
static const char *amqp_url;
static struct mq_publisher *pub;
static struct db *db;
static struct cache *cache;

/* One cart line as the tests write them. */
struct line {
	const char *sku;
	unsigned qty;
};

/* ---- publishing ------------------------------------------------------------ */

/* Publish body (len bytes) as message_id, mandatory like every work message. */
static void publish(const char *key, const char *message_id, const uint8_t *body, size_t len)
{
	assert_int_equal(mq_publish_sync(pub, MQ_EXCHANGE_ORDERS, key, message_id, body, len,
	                                 MQ_PUBLISH_MANDATORY),
	                 ERR_OK);
}

/*
 * A cart.changed as the API makes it: the whole cart at version, as message
 * message_id, into (*body, *len) (free it). cart_id is used as is, valid
 * or not.
 */
static void pack_changed(const char *cart_id, const char *message_id, int64_t version, int deleted,
                         const struct line *lines, size_t n, uint8_t **body, size_t *len)
{
	Orders__CartChanged m = ORDERS__CART_CHANGED__INIT;
	Orders__Envelope env = ORDERS__ENVELOPE__INIT;
	Orders__CartLine cl[MAX_LINES], *ptrs[MAX_LINES];
	size_t i;

	assert_true(n <= MAX_LINES);
	proto_envelope_set(&env, (char *)message_id, (char *)cart_id, ids_now_ms(), "it-cartsink");
	for (i = 0; i < n; i++) {
		orders__cart_line__init(&cl[i]);
		cl[i].sku = (char *)lines[i].sku;
		cl[i].quantity = lines[i].qty;
		ptrs[i] = &cl[i];
	}
	m.envelope = &env;
	m.cart_id = (char *)cart_id;
	m.client_id = "dev-client";
	m.customer_id = "c-cart";
	m.currency = "USD";
	m.n_lines = n;
	m.lines = ptrs;
	m.version = version;
	m.deleted = deleted;
	m.created_at_ms = ids_now_ms() - 60000;
	assert_int_equal(proto_pack(&m.base, body, len), ERR_OK);
}

/* Publish a cart.changed (see pack_changed) with a fresh message id, into message_id. */
static void publish_changed(const char *cart_id, int64_t version, int deleted,
                            const struct line *lines, size_t n, char message_id[IDS_UUID_LEN + 1])
{
	uint8_t *body = NULL;
	size_t len = 0;

	ids_uuid4(message_id);
	pack_changed(cart_id, message_id, version, deleted, lines, n, &body, &len);
	publish(MQ_KEY_CART_CHANGED, message_id, body, len);
	free(body);
}

/* Publish a cart.checked_out as order-consumer would, with a fresh message id. */
static void publish_checked_out(const char *cart_id, const char *order_id,
                                char message_id[IDS_UUID_LEN + 1])
{
	Orders__CartCheckedOut m = ORDERS__CART_CHECKED_OUT__INIT;
	Orders__Envelope env = ORDERS__ENVELOPE__INIT;
	uint8_t *body = NULL;
	size_t len = 0;

	ids_uuid4(message_id);
	proto_envelope_set(&env, message_id, (char *)order_id, ids_now_ms(), "it-cartsink");
	m.envelope = &env;
	m.cart_id = (char *)cart_id;
	assert_int_equal(proto_pack(&m.base, &body, &len), ERR_OK);
	publish(MQ_KEY_CART_CHECKED_OUT, message_id, body, len);
	free(body);
}

/* ---- the database -------------------------------------------------------- */

/* The first column of the first row of sql ($1 = a, $2 = b), "" when none or NULL. */
static void query2(const char *sql, const char *a, const char *b, char *out, size_t len)
{
	const char *p[2] = {a, b};
	PGresult *r = NULL;

	assert_int_equal(db_exec(db, sql, b ? 2 : 1, p, &r), ERR_OK);
	snprintf(out, len, "%s", PQntuples(r) > 0 ? PQgetvalue(r, 0, 0) : "");
	PQclear(r);
}

static void query(const char *sql, const char *a, char *out, size_t len)
{
	query2(sql, a, NULL, out, len);
}

/* cart-consumer's outcome for message_id once it has one (fails after WAIT_MS). */
static void wait_outcome(const char *message_id, char *out, size_t len)
{
	static const char sql[] =
	    "SELECT outcome FROM inbox WHERE consumer = 'cart' AND message_id = $1";
	double start = e2e_now_ms();

	for (;;) {
		query(sql, message_id, out, len);
		if (out[0])
			return;
		if (e2e_now_ms() - start >= WAIT_MS) {
			fprintf(stderr, "it_cartsink: message %s not processed after %d ms\n",
			        message_id, WAIT_MS);
			fail();
		}
		usleep(50000);
	}
}

/* Wait for the outcome of message_id and check it. */
static void expect_outcome(const char *message_id, const char *want)
{
	char got[256];

	wait_outcome(message_id, got, sizeof(got));
	assert_string_equal(got, want);
}

/* A column of the cart's row as text ("" when NULL or no row). */
static void cart_field(const char *cart_id, const char *column, char *out, size_t len)
{
	char sql[160];

	snprintf(sql, sizeof(sql),
	         "SELECT coalesce(%s::text, '') FROM carts WHERE cart_id = $1::uuid", column);
	query(sql, cart_id, out, len);
}

static void expect_field(const char *cart_id, const char *column, const char *want)
{
	char got[256];

	cart_field(cart_id, column, got, sizeof(got));
	assert_string_equal(got, want);
}

/* The cart's items are exactly json (compared as jsonb). */
static void expect_items(const char *cart_id, const char *json)
{
	static const char sql[] =
	    "SELECT (items = $2::jsonb)::text FROM carts WHERE cart_id = $1::uuid";
	char got[16];

	query2(sql, cart_id, json, got, sizeof(got));
	assert_string_equal(got, "true");
}

/* Publish a cart.changed and wait for its outcome, which must be want. */
static void change(const char *cart_id, int64_t version, int deleted, const struct line *lines,
                   size_t n, const char *want)
{
	char msg[IDS_UUID_LEN + 1];

	publish_changed(cart_id, version, deleted, lines, n, msg);
	expect_outcome(msg, want);
}

/* Publish a cart.checked_out and wait for it: redis says what became of the Redis copy. */
static void check_out(const char *cart_id, const char *order_id, const char *redis)
{
	char msg[IDS_UUID_LEN + 1], want[128];

	publish_checked_out(cart_id, order_id, msg);
	snprintf(want, sizeof(want), "checked_out:%s:%s", cart_id, redis);
	expect_outcome(msg, want);
}

/* ---- Redis ------------------------------------------------------------------ */

static long long redis_int(const char *fmt, const char *key)
{
	redisReply *r = cache_command(cache, fmt, key);
	long long v;

	assert_non_null(r);
	assert_int_equal(r->type, REDIS_REPLY_INTEGER);
	v = r->integer;
	freeReplyObject(r);
	return v;
}

static void expect_hash_field(const char *key, const char *field, const char *want)
{
	redisReply *r = cache_command(cache, "HGET %s %s", key, field);

	assert_non_null(r);
	assert_int_equal(r->type, REDIS_REPLY_STRING);
	assert_string_equal(r->str, want);
	freeReplyObject(r);
}

/* The cart as the API keeps it in Redis, open, expiring in CART_TTL_S. */
static void cache_cart(const char *cart_id, char key[64])
{
	redisReply *r;
	char now[24];

	snprintf(key, 64, "cart:%s", cart_id);
	snprintf(now, sizeof(now), "%lld", (long long)ids_now_ms());
	r = cache_command(cache,
	                  "HSET %s client dev-client customer c-cart currency USD items %s "
	                  "status open version 1 created_ms %s updated_ms %s",
	                  key, "[{\"sku\":\"CART-A\",\"quantity\":1}]", now, now);
	assert_non_null(r);
	assert_int_equal(r->type, REDIS_REPLY_INTEGER);
	freeReplyObject(r);
	r = cache_command(cache, "EXPIRE %s %d", key, CART_TTL_S);
	assert_non_null(r);
	freeReplyObject(r);
}

/* ---- tests ------------------------------------------------------------------ */

/* Versions that arrive 3, 1, 2: the cart ends at 3, and 1 and 2 change nothing. */
static void test_versions_out_of_order(void **state)
{
	const struct line v1[] = {{"CART-A", 1}};
	const struct line v2[] = {{"CART-A", 2}};
	/* Repeated SKUs are stored merged. */
	const struct line v3[] = {{"CART-A", 1}, {"CART-B", 2}, {"CART-A", 3}};
	char cart[IDS_UUID_LEN + 1], m1[IDS_UUID_LEN + 1], m2[IDS_UUID_LEN + 1];
	(void)state;

	ids_uuid4(cart);
	change(cart, 3, 0, v3, 3, "applied:3");
	publish_changed(cart, 1, 0, v1, 1, m1);
	publish_changed(cart, 2, 0, v2, 1, m2);
	expect_outcome(m1, "stale:1");
	expect_outcome(m2, "stale:2");
	expect_field(cart, "version", "3");
	expect_field(cart, "status", "open");
	expect_field(cart, "client_id", "dev-client");
	expect_field(cart, "customer_id", "c-cart");
	expect_field(cart, "currency", "USD");
	expect_items(cart,
	             "[{\"sku\":\"CART-A\",\"quantity\":4},{\"sku\":\"CART-B\",\"quantity\":2}]");
}

/*
 * The same message twice is applied once: between the two deliveries the
 * row is set back to version 0, which a second application would undo.
 */
static void test_redelivery_applies_once(void **state)
{
	static const char back_sql[] = "UPDATE carts SET version = 0 WHERE cart_id = $1::uuid";
	static const char rows_sql[] =
	    "SELECT count(*) FROM inbox WHERE consumer = 'cart' AND message_id = $1";
	const struct line v5[] = {{"CART-A", 1}};
	char cart[IDS_UUID_LEN + 1], msg[IDS_UUID_LEN + 1], barrier[IDS_UUID_LEN + 1];
	char other[IDS_UUID_LEN + 1], n[16];
	const char *p[1];
	uint8_t *body = NULL;
	size_t len = 0;
	(void)state;

	ids_uuid4(cart);
	ids_uuid4(msg);
	pack_changed(cart, msg, 5, 0, v5, 1, &body, &len);
	publish(MQ_KEY_CART_CHANGED, msg, body, len);
	expect_outcome(msg, "applied:5");
	p[0] = cart;
	assert_int_equal(db_exec(db, back_sql, 1, p, NULL), ERR_OK);
	/* The same message again, byte for byte under the same id. */
	publish(MQ_KEY_CART_CHANGED, msg, body, len);
	free(body);
	/* One consumer takes the queue in order: once this is done, so is the repeat. */
	ids_uuid4(other);
	publish_changed(other, 1, 0, v5, 1, barrier);
	expect_outcome(barrier, "applied:1");
	expect_field(cart, "version", "0");
	query(rows_sql, msg, n, sizeof(n));
	assert_string_equal(n, "1");
}

static void test_delete(void **state)
{
	const struct line v1[] = {{"CART-A", 2}};
	char cart[IDS_UUID_LEN + 1];
	(void)state;

	ids_uuid4(cart);
	change(cart, 1, 0, v1, 1, "applied:1");
	change(cart, 2, 1, NULL, 0, "applied:2");
	expect_field(cart, "status", "deleted");
	expect_field(cart, "version", "2");
	expect_items(cart, "[]");
}

/*
 * checked_out is sticky: a change made before the checkout that arrives
 * after it still updates items and version, never the status.
 */
static void test_checked_out_sticky(void **state)
{
	const struct line v1[] = {{"CART-A", 1}};
	const struct line v2[] = {{"CART-A", 1}, {"CART-B", 1}};
	char cart[IDS_UUID_LEN + 1], order[IDS_UUID_LEN + 1], other[IDS_UUID_LEN + 1];
	(void)state;

	ids_uuid4(cart);
	ids_uuid4(order);
	change(cart, 1, 0, v1, 1, "applied:1");
	check_out(cart, order, "absent");
	expect_field(cart, "status", "checked_out");
	expect_field(cart, "order_id", order);
	change(cart, 2, 0, v2, 2, "applied:2");
	expect_field(cart, "status", "checked_out");
	expect_field(cart, "version", "2");
	expect_items(cart,
	             "[{\"sku\":\"CART-A\",\"quantity\":1},{\"sku\":\"CART-B\",\"quantity\":1}]");
	/* A second order of the same cart (the API refuses that) does not take it over. */
	ids_uuid4(other);
	check_out(cart, other, "absent");
	expect_field(cart, "order_id", order);
}

/* The checkout first: a stub row that the cart's first change then fills. */
static void test_checkout_before_first_change(void **state)
{
	const struct line v1[] = {{"CART-C", 3}};
	char cart[IDS_UUID_LEN + 1], order[IDS_UUID_LEN + 1];
	(void)state;

	ids_uuid4(cart);
	ids_uuid4(order);
	check_out(cart, order, "absent");
	expect_field(cart, "status", "checked_out");
	expect_field(cart, "version", "0");
	change(cart, 1, 0, v1, 1, "applied:1");
	expect_field(cart, "status", "checked_out");
	expect_field(cart, "order_id", order);
	expect_field(cart, "client_id", "dev-client");
	expect_field(cart, "currency", "USD");
	expect_items(cart, "[{\"sku\":\"CART-C\",\"quantity\":3}]");
}

/* The Redis copy is marked checked out and keeps its expiry; none is made when it is gone. */
static void test_checkout_marks_redis(void **state)
{
	char cart[IDS_UUID_LEN + 1], gone[IDS_UUID_LEN + 1], order[IDS_UUID_LEN + 1];
	char key[64], gone_key[64];
	long long ttl;
	(void)state;

	ids_uuid4(cart);
	ids_uuid4(gone);
	ids_uuid4(order);
	cache_cart(cart, key);
	snprintf(gone_key, sizeof(gone_key), "cart:%s", gone);
	check_out(cart, order, "marked");
	check_out(gone, order, "absent");
	expect_hash_field(key, "status", "checked_out");
	expect_hash_field(key, "order_id", order);
	expect_hash_field(key, "version", "1");
	expect_hash_field(key, "items", "[{\"sku\":\"CART-A\",\"quantity\":1}]");
	ttl = redis_int("TTL %s", key);
	assert_true(ttl > CART_TTL_S - 600 && ttl <= CART_TTL_S);
	assert_int_equal(redis_int("EXISTS %s", gone_key), 0);
	redis_int("DEL %s", key);
}

/* Take message ids from dlq (acking them) until every one has come; others are left. */
static void expect_dead_lettered(const char *dlq, char ids[][IDS_UUID_LEN + 1], size_t n)
{
	struct mq_consumer *c = NULL;
	double start = e2e_now_ms();
	size_t got = 0, i;
	int seen[8] = {0};

	assert_true(n <= 8);
	while (got < n && e2e_now_ms() - start < DLQ_WAIT_MS) {
		struct mq_delivery d;

		if (!c && !(c = mq_consumer_new(amqp_url, dlq, 50))) {
			usleep(200000);
			continue;
		}
		memset(&d, 0, sizeof(d));
		if (mq_consumer_next(c, &d, 500) != ERR_OK)
			continue;
		for (i = 0; i < n; i++) {
			if (!seen[i] && strcmp(ids[i], d.message_id) == 0) {
				assert_int_equal(mq_consumer_ack(c, d.tag), ERR_OK);
				seen[i] = 1;
				got++;
			}
		}
		mq_delivery_release(&d);
	}
	mq_consumer_free(c);
	for (i = 0; i < n; i++) {
		if (!seen[i])
			fprintf(stderr, "it_cartsink: %s never reached %s\n", ids[i], dlq);
	}
	assert_int_equal(got, n);
}

/* Poison: a bad cart id, a bad quantity, a checkout of no cart id. */
static void test_poison_dead_lettered(void **state)
{
	static const char rows_sql[] =
	    "SELECT count(*) FROM inbox WHERE consumer = 'cart' AND message_id = $1";
	const struct line ok[] = {{"CART-A", 1}};
	const struct line zero[] = {{"CART-A", 0}};
	char ids[3][IDS_UUID_LEN + 1], cart[IDS_UUID_LEN + 1], order[IDS_UUID_LEN + 1], n[16];
	size_t i;
	(void)state;

	ids_uuid4(cart);
	ids_uuid4(order);
	publish_changed("not-a-uuid", 1, 0, ok, 1, ids[0]);
	publish_changed(cart, 1, 0, zero, 1, ids[1]);
	publish_checked_out("not-a-uuid", order, ids[2]);
	expect_dead_lettered(MQ_QUEUE_CART ".dlq", ids, 3);
	for (i = 0; i < 3; i++) {
		query(rows_sql, ids[i], n, sizeof(n));
		assert_string_equal(n, "0");
	}
	expect_field(cart, "status", "");
}

/* ---- end to end through order-consumer ------------------------------------- */

/* A sealed card record as the API makes it, into c. */
static void seal_card(Orders__SealedCard *c, struct sealer **sealer,
                      uint8_t nonce[SEAL_NONCE_BYTES], uint8_t *ct)
{
	struct card card = {.number = "4242424242424242", .cvc = E2E_CVC, 12, 2030};
	uint8_t pk[SEAL_KEY_BYTES];
	char rec[CARD_RECORD_MAX], err[256] = "";
	struct config cfg;
	size_t n;

	assert_int_equal(seal_init(), ERR_OK);
	if (config_load(&cfg, err, sizeof(err)) != ERR_OK)
		fprintf(stderr, "it_cartsink: configuration: %s\n", err);
	assert_int_equal(seal_hex_decode(cfg.seal_public_key, pk, sizeof(pk)), ERR_OK);
	*sealer = sealer_new(pk);
	assert_non_null(*sealer);
	n = card_encode(&card, rec);
	assert_int_equal(sealer_seal(*sealer, rec, n, nonce, ct), ERR_OK);
	sodium_memzero(rec, sizeof(rec));
	card_wipe(&card);
	c->sender_public_key.data = (uint8_t *)sealer_public_key(*sealer);
	c->sender_public_key.len = SEAL_KEY_BYTES;
	c->nonce.data = nonce;
	c->nonce.len = SEAL_NONCE_BYTES;
	c->ciphertext.data = ct;
	c->ciphertext.len = n + SEAL_MAC_BYTES;
	c->brand = "visa";
	c->last4 = "4242";
}

/*
 * A checkout.requested from a cart, published as the API will once it
 * checks carts out: inventory records the cart on the order, payment
 * authorizes, order-consumer confirms and sends cart.checked_out, and
 * cart-consumer marks the row and the Redis copy with the order.
 */
static void test_confirmed_order_checks_cart_out(void **state)
{
	static const char order_sql[] = "SELECT status || ':' || coalesce(cart_id::text, '') FROM "
	                                "orders WHERE order_id = $1::uuid";
	struct line lines[1];
	Orders__CheckoutRequested m = ORDERS__CHECKOUT_REQUESTED__INIT;
	Orders__Envelope env = ORDERS__ENVELOPE__INIT;
	Orders__Order o = ORDERS__ORDER__INIT;
	Orders__Line line = ORDERS__LINE__INIT, *line_ptrs[1] = {&line};
	Orders__SealedCard card = ORDERS__SEALED_CARD__INIT;
	struct sealer *sealer = NULL;
	uint8_t nonce[SEAL_NONCE_BYTES], ct[CARD_RECORD_MAX + SEAL_MAC_BYTES];
	char cart[IDS_UUID_LEN + 1], order[IDS_UUID_LEN + 1], msg[IDS_UUID_LEN + 1];
	char sku[64], idem[64], key[64], want[128], got[128];
	uint8_t *body = NULL;
	size_t len = 0;
	double start;
	(void)state;

	snprintf(sku, sizeof(sku), "CART-E2E-%s", run_id);
	snprintf(idem, sizeof(idem), "it-cartsink-%s", run_id);
	e2e_put_product(sku, 5, 250);
	ids_uuid4(cart);
	ids_uuid4(order);
	lines[0].sku = sku;
	lines[0].qty = 2;
	change(cart, 1, 0, lines, 1, "applied:1");
	cache_cart(cart, key);

	ids_uuid4(msg);
	proto_envelope_set(&env, msg, order, ids_now_ms(), "it-cartsink-e2e");
	line.sku = sku;
	line.quantity = 2;
	line.unit_price_cents = 250;
	o.customer_id = "c-cart";
	o.customer_email = "ada@example.com";
	o.currency = "USD";
	o.n_lines = 1;
	o.lines = line_ptrs;
	o.total_cents = 500;
	o.client_id = "dev-client";
	o.idempotency_key = idem;
	o.cart_id = cart;
	seal_card(&card, &sealer, nonce, ct);
	m.envelope = &env;
	m.order = &o;
	m.card = &card;
	assert_int_equal(proto_pack(&m.base, &body, &len), ERR_OK);
	publish(MQ_KEY_CHECKOUT_REQUESTED, msg, body, len);
	free(body);
	sealer_free(sealer);

	start = e2e_now_ms();
	for (;;) {
		cart_field(cart, "status", got, sizeof(got));
		if (strcmp(got, "checked_out") == 0)
			break;
		if (e2e_now_ms() - start >= E2E_FINAL_TIMEOUT_MS) {
			query(order_sql, order, got, sizeof(got));
			fprintf(stderr, "it_cartsink: cart not checked out; order is '%s'\n", got);
			fail();
		}
		usleep(100000);
	}
	fprintf(stderr, "it_cartsink: cart checked out %.0f ms after the checkout\n",
	        e2e_now_ms() - start);
	expect_field(cart, "order_id", order);
	expect_field(cart, "version", "1");
	snprintf(want, sizeof(want), "confirmed:%s", cart);
	query(order_sql, order, got, sizeof(got));
	assert_string_equal(got, want);
	expect_hash_field(key, "status", "checked_out");
	expect_hash_field(key, "order_id", order);
	assert_true(redis_int("TTL %s", key) > 0);
	redis_int("DEL %s", key);
	e2e_wait_available(sku, 3);
}

static int group_setup(void **state)
{
	const char *dsn = getenv("ORDERS_PG_DSN"), *redis = getenv("ORDERS_REDIS_URL");

	(void)state;
	amqp_url = getenv("ORDERS_AMQP_URL");
	if (!amqp_url || !*amqp_url)
		amqp_url = E2E_AMQP_URL;
	db = db_new(dsn && *dsn ? dsn : DEFAULT_DSN);
	cache = cache_new(redis && *redis ? redis : DEFAULT_REDIS);
	if (!db || !cache || cache_ping(cache) != ERR_OK) {
		fprintf(stderr,
		        "it_cartsink: cannot reach PostgreSQL or Redis (is the stack up?)\n");
		return -1;
	}
	pub = e2e_publisher_connect(amqp_url, "it_cartsink");
	return pub ? 0 : -1;
}

static int group_teardown(void **state)
{
	(void)state;
	mq_publisher_free(pub);
	cache_free(cache);
	db_free(db);
	return 0;
}

int main(void)
{
	const struct CMUnitTest tests[] = {
	    cmocka_unit_test(test_versions_out_of_order),
	    cmocka_unit_test(test_redelivery_applies_once),
	    cmocka_unit_test(test_delete),
	    cmocka_unit_test(test_checked_out_sticky),
	    cmocka_unit_test(test_checkout_before_first_change),
	    cmocka_unit_test(test_checkout_marks_redis),
	    cmocka_unit_test(test_poison_dead_lettered),
	    cmocka_unit_test(test_confirmed_order_checks_cart_out),
	};

	snprintf(run_id, sizeof(run_id), "%ld-%d", (long)time(NULL), (int)getpid());
	return cmocka_run_group_tests(tests, group_setup, group_teardown);
}
