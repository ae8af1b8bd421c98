/*
 * it_batch.c: the consume loop's batches, with inventory's handler against
 * PostgreSQL (consume__deliver_batch), and once through the running stack.
 */
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

#include "config.h"
#include "consume.h"
#include "db.h"
#include "e2e.h"
#include "err.h"
#include "ids.h"
#include "inventory.h"
#include "mq.h"
#include "proto.h"
#include "seal.h"

#define DEFAULT_DSN "postgresql://orders@127.0.0.1:5442/orders"
#define LINES_MAX 4
/* The deadlock test: consumers, batches each, checkouts per batch, SKUs. */
#define RACE_THREADS 3
#define RACE_ROUNDS 10
#define RACE_BATCH 12
#define RACE_SKUS 6
/* How long the running stack may take to settle what the test planted. */
#define STACK_TIMEOUT_MS 60000

static struct db *db;
static struct config cfg;
static void *inv;
static char run_id[32];

/* One checkout.requested, as a delivery, with what the test knows of it. */
struct checkout {
	struct mq_delivery d;
	char order_id[IDS_UUID_LEN + 1];
};

/* A checkout of n lines (sku[i] x qty[i]) as a delivery with message id id. */
static void checkout_make(struct checkout *c, const char *id, const char *const *sku,
                          const int *qty, size_t n)
{
	static uint8_t key[SEAL_KEY_BYTES], nonce[SEAL_NONCE_BYTES];
	static uint8_t ct[SEAL_MAC_BYTES + 28];
	Orders__CheckoutRequested m = ORDERS__CHECKOUT_REQUESTED__INIT;
	Orders__Envelope env = ORDERS__ENVELOPE__INIT;
	Orders__Order o = ORDERS__ORDER__INIT;
	Orders__SealedCard card = ORDERS__SEALED_CARD__INIT;
	Orders__Line lines[LINES_MAX], *ptrs[LINES_MAX];
	size_t i;

	assert_true(n >= 1 && n <= LINES_MAX);
	memset(c, 0, sizeof(*c));
	ids_uuid4(c->order_id);
	snprintf(c->d.message_id, sizeof(c->d.message_id), "%s", id);
	snprintf(c->d.routing_key, sizeof(c->d.routing_key), "%s", MQ_KEY_CHECKOUT_REQUESTED);
	proto_envelope_set(&env, c->d.message_id, c->order_id, ids_now_ms(), "it-batch");
	for (i = 0; i < n; i++) {
		orders__line__init(&lines[i]);
		lines[i].sku = (char *)sku[i];
		lines[i].quantity = (uint32_t)qty[i];
		lines[i].unit_price_cents = 100;
		ptrs[i] = &lines[i];
	}
	o.client_id = "it-batch";
	o.idempotency_key = c->d.message_id;
	o.customer_id = "c-it-batch";
	o.currency = "USD";
	o.n_lines = n;
	o.lines = ptrs;
	o.total_cents = 100;
	card.sender_public_key.data = key;
	card.sender_public_key.len = sizeof(key);
	card.nonce.data = nonce;
	card.nonce.len = sizeof(nonce);
	card.ciphertext.data = ct;
	card.ciphertext.len = sizeof(ct);
	card.brand = "visa";
	card.last4 = "4242";
	m.envelope = &env;
	m.order = &o;
	m.card = &card;
	assert_int_equal(proto_pack(&m.base, &c->d.body, &c->d.len), ERR_OK);
}

/* A checkout of one unit of sku. */
static void checkout_one(struct checkout *c, const char *what, const char *sku)
{
	char id[MQ_ID_MAX];
	int one = 1;

	snprintf(id, sizeof(id), "it-batch-%s-%s", run_id, what);
	checkout_make(c, id, &sku, &one, 1);
}

/* Bytes no protobuf message decodes: field 1 claiming 4 GiB. */
static void garbage_make(struct checkout *c, const char *what)
{
	static const uint8_t bad[] = {0x0a, 0xff, 0xff, 0xff, 0xff, 0x0f};

	memset(c, 0, sizeof(*c));
	snprintf(c->d.message_id, sizeof(c->d.message_id), "it-batch-%s-%s", run_id, what);
	snprintf(c->d.routing_key, sizeof(c->d.routing_key), "%s", MQ_KEY_CHECKOUT_REQUESTED);
	c->d.body = malloc(sizeof(bad));
	assert_non_null(c->d.body);
	memcpy(c->d.body, bad, sizeof(bad));
	c->d.len = sizeof(bad);
}

static void checkouts_release(struct checkout *c, size_t n)
{
	for (size_t i = 0; i < n; i++)
		mq_delivery_release(&c[i].d);
}

/* The n deliveries of c into d, for consume__deliver_batch. */
static void deliveries(const struct checkout *c, size_t n, struct mq_delivery *d)
{
	for (size_t i = 0; i < n; i++) {
		d[i] = c[i].d;
		d[i].tag = i + 1;
	}
}

static void put_product(const char *sku, long stock)
{
	char s[24];
	const char *p[2] = {sku, s};

	snprintf(s, sizeof(s), "%ld", stock);
	assert_int_equal(db_exec(db,
	                         "INSERT INTO products (sku, name, price_cents, currency, stock) "
	                         "VALUES ($1, 'it-batch', 100, 'USD', $2::bigint) "
	                         "ON CONFLICT (sku) DO UPDATE SET stock = EXCLUDED.stock",
	                         2, p, NULL),
	                 ERR_OK);
}

/* One integer the query (with parameter p1) answers. */
static long query_long(const char *sql, const char *p1)
{
	PGresult *r = NULL;
	long v;

	assert_int_equal(db_exec(db, sql, p1 ? 1 : 0, &p1, &r), ERR_OK);
	assert_int_equal(PQntuples(r), 1);
	v = strtol(PQgetvalue(r, 0, 0), NULL, 10);
	PQclear(r);
	return v;
}

/* Units ever reserved of sku (held, committed or released: expiry does not change it). */
static long reserved_ever(const char *sku)
{
	return query_long("SELECT coalesce(sum(quantity), 0) FROM reservations WHERE sku = $1",
	                  sku);
}

static long inbox_rows(const char *message_id)
{
	return query_long("SELECT count(*) FROM inbox WHERE consumer = 'inventory' "
	                  "AND message_id = $1",
	                  message_id);
}

static void results_release(struct consume_result *res, size_t n)
{
	for (size_t i = 0; i < n; i++)
		consume_result_release(&res[i]);
}

/*
 * A new product (its SKU into sku) and five checkouts of one unit of it,
 * named <p>0 to <p>4, the middle one poison.
 */
static void five_with_poison(struct checkout *c, const char *p, char *sku, size_t skulen)
{
	char what[16];

	snprintf(sku, skulen, "BATCH-%s-%s", run_id, p);
	put_product(sku, 100);
	for (int i = 0; i < 5; i++) {
		snprintf(what, sizeof(what), "%s%d", p, i);
		if (i == 2)
			garbage_make(&c[i], what);
		else
			checkout_one(&c[i], what, sku);
	}
}

/* ---- batches against PostgreSQL ------------------------------------------ */

/*
 * A poison message in the middle of a batch, one undecodable and one that
 * fails inside the transaction (its message id was recorded for another
 * order), is settled alone: the others commit.
 */
static void test_poison_in_the_middle(void **state)
{
	char sku[64];
	struct checkout c[8];
	struct mq_delivery d[5];
	struct consume_result res[5];
	int rcs[5];
	size_t i;
	(void)state;

	five_with_poison(c, "p", sku, sizeof(sku));
	deliveries(c, 5, d);
	assert_int_equal(consume__deliver_batch(&inventory_handler, inv, db, d, 5, res, rcs),
	                 ERR_OK);
	for (i = 0; i < 5; i++) {
		if (i == 2) {
			assert_true(rcs[i] == ERR_PARSE || rcs[i] == ERR_INVALID);
			assert_null(res[i].body);
			assert_int_equal(inbox_rows(c[i].d.message_id), 0);
			continue;
		}
		assert_int_equal(rcs[i], ERR_OK);
		assert_string_equal(res[i].outcome, "reserved");
		assert_int_equal(res[i].replayed, 0);
		assert_string_equal(res[i].routing_key, MQ_KEY_INVENTORY_RESERVED);
		assert_non_null(res[i].body);
		assert_int_equal(inbox_rows(c[i].d.message_id), 1);
	}
	assert_int_equal(reserved_ever(sku), 4);
	results_release(res, 5);

	/* p0's message id again, for another order: poison found inside the transaction. */
	checkout_one(&c[5], "p5", sku);
	checkout_one(&c[6], "p0", sku);
	checkout_one(&c[7], "p6", sku);
	deliveries(&c[5], 3, d);
	assert_int_equal(consume__deliver_batch(&inventory_handler, inv, db, d, 3, res, rcs),
	                 ERR_OK);
	assert_int_equal(rcs[0], ERR_OK);
	assert_int_equal(rcs[1], ERR_INVALID);
	assert_int_equal(rcs[2], ERR_OK);
	assert_string_equal(res[0].outcome, "reserved");
	assert_string_equal(res[2].outcome, "reserved");
	assert_null(res[1].body);
	assert_int_equal(inbox_rows(c[5].d.message_id), 1);
	assert_int_equal(inbox_rows(c[7].d.message_id), 1);
	assert_int_equal(reserved_ever(sku), 6);
	assert_int_equal(
	    query_long("SELECT count(*) FROM orders WHERE order_id = $1::uuid", c[6].order_id), 0);
	results_release(res, 3);

	/* The same message id twice in one call is refused: the loop never does that. */
	d[0] = c[5].d;
	d[1] = c[5].d;
	assert_int_equal(consume__deliver_batch(&inventory_handler, inv, db, d, 2, res, rcs),
	                 ERR_INVALID);
	checkouts_release(c, 8);
}

/* The same outgoing message: key, id and bytes. */
static void assert_same_message(const struct consume_result *a, const struct consume_result *b)
{
	assert_string_equal(a->outcome, b->outcome);
	assert_string_equal(a->message_id, b->message_id);
	assert_string_equal(a->routing_key, b->routing_key);
	assert_int_equal(a->len, b->len);
	assert_memory_equal(a->body, b->body, a->len);
}

/*
 * A batch that committed and then was never acked (the consumer died before
 * it could publish) comes again, here among a new message: each seen one
 * replays its outcome, byte for byte the message of the first run, and
 * changes nothing.
 */
static void test_replay_after_commit(void **state)
{
	char sku[64], rejected[128];
	struct checkout c[4];
	struct mq_delivery d[4];
	struct consume_result first[3], again[4];
	int rcs[4];
	size_t i;
	long orders;
	(void)state;

	snprintf(sku, sizeof(sku), "BATCH-%s-REPLAY", run_id);
	snprintf(rejected, sizeof(rejected), "rejected:out_of_stock:%s", sku);
	put_product(sku, 2);
	checkout_one(&c[0], "r0", sku);
	checkout_one(&c[1], "r1", sku);
	checkout_one(&c[2], "r2", sku); /* the third unit: out of stock */
	checkout_one(&c[3], "r3", sku);
	deliveries(c, 3, d);
	assert_int_equal(consume__deliver_batch(&inventory_handler, inv, db, d, 3, first, rcs),
	                 ERR_OK);
	for (i = 0; i < 3; i++)
		assert_int_equal(rcs[i], ERR_OK);
	assert_string_equal(first[0].outcome, "reserved");
	assert_string_equal(first[1].outcome, "reserved");
	assert_string_equal(first[2].outcome, rejected);
	assert_string_equal(first[2].routing_key, MQ_KEY_INVENTORY_REJECTED);
	orders = query_long("SELECT count(*) FROM orders WHERE idempotency_key LIKE $1",
	                    "it-batch-%-r_");

	/* Crash here: nothing published, nothing acked. The batch comes again, mixed. */
	d[0] = c[1].d;
	d[1] = c[3].d;
	d[2] = c[0].d;
	d[3] = c[2].d;
	assert_int_equal(consume__deliver_batch(&inventory_handler, inv, db, d, 4, again, rcs),
	                 ERR_OK);
	for (i = 0; i < 4; i++)
		assert_int_equal(rcs[i], ERR_OK);
	assert_int_equal(again[0].replayed, 1);
	assert_int_equal(again[1].replayed, 0);
	assert_int_equal(again[2].replayed, 1);
	assert_int_equal(again[3].replayed, 1);
	assert_same_message(&again[0], &first[1]);
	assert_same_message(&again[2], &first[0]);
	assert_same_message(&again[3], &first[2]);
	assert_string_equal(again[1].outcome, rejected);
	assert_int_equal(reserved_ever(sku), 2);
	assert_int_equal(query_long("SELECT count(*) FROM orders WHERE idempotency_key LIKE $1",
	                            "it-batch-%-r_"),
	                 orders + 1);
	results_release(first, 3);
	results_release(again, 4);
	checkouts_release(c, 4);
}

/* One consumer of the deadlock test: its own connection, its own batches. */
struct racer {
	int t;
	int bad; /* messages that did not come out "reserved" */
	int batch_errors;
	char sku[RACE_SKUS][64];
};

static void *racer_run(void *arg)
{
	struct racer *r = arg;
	struct db *mine = db_new(getenv("ORDERS_PG_DSN") ? getenv("ORDERS_PG_DSN") : DEFAULT_DSN);
	struct checkout c[RACE_BATCH];
	struct mq_delivery d[RACE_BATCH];
	struct consume_result res[RACE_BATCH];
	int rcs[RACE_BATCH];

	if (!mine) {
		r->batch_errors++;
		return NULL;
	}
	for (int round = 0; round < RACE_ROUNDS; round++) {
		for (int i = 0; i < RACE_BATCH; i++) {
			/*
			 * Two neighbouring SKUs an order, and across a batch each
			 * consumer walks the SKUs its own way from its own start:
			 * up from the first, down from the middle, down by twos
			 * from the last. Without the batch's locks taken up front
			 * in one order, they deadlock.
			 */
			int a = r->t == 0   ? i
			        : r->t == 1 ? RACE_SKUS / 2 - i
			                    : RACE_SKUS - 1 - 2 * i;
			const char *skus[2];
			int qty[2] = {1, 2};
			char id[MQ_ID_MAX];

			a = (a % RACE_SKUS + RACE_SKUS) % RACE_SKUS;
			skus[0] = r->sku[a];
			skus[1] = r->sku[(a + 1) % RACE_SKUS];
			snprintf(id, sizeof(id), "it-batch-%s-race-%d-%d-%d", run_id, r->t, round,
			         i);
			checkout_make(&c[i], id, skus, qty, 2);
		}
		deliveries(c, RACE_BATCH, d);
		if (consume__deliver_batch(&inventory_handler, inv, mine, d, RACE_BATCH, res,
		                           rcs) != ERR_OK)
			r->batch_errors++;
		for (int i = 0; i < RACE_BATCH; i++) {
			if (rcs[i] != ERR_OK || strcmp(res[i].outcome, "reserved") != 0)
				r->bad++;
		}
		results_release(res, RACE_BATCH);
		checkouts_release(c, RACE_BATCH);
	}
	db_free(mine);
	return NULL;
}

/*
 * Three inventory consumers' batches over the same SKUs, each visiting them
 * in another order, never deadlock (PostgreSQL would break one with an
 * error after a second, failing messages) and reserve exactly what was
 * asked.
 */
static void test_no_deadlock(void **state)
{
	struct racer r[RACE_THREADS];
	pthread_t th[RACE_THREADS];
	long total = 0;
	int t, k;
	(void)state;

	memset(r, 0, sizeof(r));
	for (t = 0; t < RACE_THREADS; t++) {
		r[t].t = t;
		for (k = 0; k < RACE_SKUS; k++) {
			snprintf(r[t].sku[k], sizeof(r[t].sku[k]), "BATCH-%s-RACE-%d", run_id, k);
			if (t == 0)
				put_product(r[t].sku[k], 1000000);
		}
	}
	for (t = 0; t < RACE_THREADS; t++)
		assert_int_equal(pthread_create(&th[t], NULL, racer_run, &r[t]), 0);
	for (t = 0; t < RACE_THREADS; t++)
		assert_int_equal(pthread_join(th[t], NULL), 0);
	for (t = 0; t < RACE_THREADS; t++) {
		fprintf(stderr,
		        "it_batch: consumer %d: %d batch errors, %d messages not reserved\n", t,
		        r[t].batch_errors, r[t].bad);
		assert_int_equal(r[t].batch_errors, 0);
		assert_int_equal(r[t].bad, 0);
	}
	for (k = 0; k < RACE_SKUS; k++)
		total += reserved_ever(r[0].sku[k]);
	/* Three units an order. */
	assert_int_equal(total, 3L * RACE_THREADS * RACE_ROUNDS * RACE_BATCH);
}

/* ---- one batch through the running stack --------------------------------- */

static char root[PATH_MAX];

/* deploy/local/daemon.sh ACTION orders-inventory, with env (assignments) before it. */
static int inventory_daemon(const char *env, const char *action)
{
	char cmd[PATH_MAX + 256];

	snprintf(cmd, sizeof(cmd), "cd '%s' && %s deploy/local/daemon.sh %s orders-inventory >&2",
	         root, env, action);
	return system(cmd);
}

/* 1 when one line of orders-inventory's log holds both a and b. */
static int log_has(const char *a, const char *b)
{
	char path[PATH_MAX + 64], line[8192];
	FILE *f;
	int found = 0;

	snprintf(path, sizeof(path), "%s/.local/log/orders-inventory.log", root);
	f = fopen(path, "r");
	if (!f)
		return 0;
	while (!found && fgets(line, sizeof(line), f))
		found = strstr(line, a) && strstr(line, b);
	fclose(f);
	return found;
}

/* Take message_id out of queue (acked); 1 once it came within timeout_ms. */
static int take_from(const char *url, const char *queue, const char *message_id, double timeout_ms)
{
	struct mq_consumer *c = mq_consumer_new(url, queue, 100);
	double start = e2e_now_ms();
	int found = 0;

	assert_non_null(c);
	while (!found && e2e_now_ms() - start < timeout_ms) {
		struct mq_delivery d;

		memset(&d, 0, sizeof(d));
		if (mq_consumer_next(c, &d, 500) != ERR_OK)
			continue;
		if (strcmp(d.message_id, message_id) == 0) {
			assert_int_equal(mq_consumer_ack(c, d.tag), ERR_OK);
			found = 1;
		}
		mq_delivery_release(&d);
	}
	mq_consumer_free(c);
	return found;
}

/* Back to the stack's own settings, whatever the test did. */
static int inventory_restart(void **state)
{
	(void)state;
	return inventory_daemon("", "restart") == 0 ? 0 : -1;
}

/*
 * Through orders-inventory itself: six checkouts wait while it is stopped,
 * the third poison, the fifth the fourth again (same message id). Started,
 * it takes them in two batches: four (the repeated id ends the first
 * batch), settled with the poison rejected to inventory.reserve.dlq and one
 * ack for the three others; then the repeat, replayed, and the sixth, again
 * with one ack.
 */
static void test_stack_batch(void **state)
{
	const char *url = getenv("ORDERS_AMQP_URL") ? getenv("ORDERS_AMQP_URL") : E2E_AMQP_URL;
	const char *ok[4] = {"s0", "s1", "s3", "s4"};
	struct mq_publisher_options opt;
	struct mq_publisher *pub;
	struct checkout c[5];
	char sku[64], id[MQ_ID_MAX];
	double start;
	size_t i;
	(void)state;

	five_with_poison(c, "s", sku, sizeof(sku));
	memset(&opt, 0, sizeof(opt));
	opt.url = url;
	opt.confirm_timeout_ms = 10000;
	pub = mq_publisher_new(&opt);
	assert_non_null(pub);
	assert_int_equal(inventory_daemon("", "stop"), 0);
	/* The publisher connects in the background. */
	start = e2e_now_ms();
	while (!mq_publisher_connected(pub) && e2e_now_ms() - start < 15000)
		usleep(100000);
	for (i = 0; i < 6; i++) {
		const struct mq_delivery *d = &c[i < 4 ? i : i - 1].d;

		assert_int_equal(mq_publish_sync(pub, MQ_EXCHANGE_ORDERS, d->routing_key,
		                                 d->message_id, d->body, d->len, 0),
		                 ERR_OK);
	}
	mq_publisher_free(pub);
	assert_int_equal(inventory_daemon("ORDERS_LOG_LEVEL=debug", "start"), 0);

	for (i = 0; i < 4; i++) {
		snprintf(id, sizeof(id), "it-batch-%s-%s", run_id, ok[i]);
		start = e2e_now_ms();
		while (inbox_rows(id) == 0 && e2e_now_ms() - start < STACK_TIMEOUT_MS)
			usleep(100000);
		assert_int_equal(inbox_rows(id), 1);
	}
	assert_true(take_from(url, MQ_QUEUE_INVENTORY ".dlq", c[2].d.message_id, STACK_TIMEOUT_MS));
	start = e2e_now_ms();
	while (!log_has("\"msg\":\"batch settled\",\"messages\":2,", "\"acked\":2,") &&
	       e2e_now_ms() - start < STACK_TIMEOUT_MS)
		usleep(100000);
	assert_true(log_has("\"msg\":\"batch settled\",\"messages\":4,\"acked\":3,"
	                    "\"dead_lettered\":1,\"requeued\":0,\"ack_multiple\":1",
	                    ""));
	assert_true(log_has("\"msg\":\"batch settled\",\"messages\":2,\"acked\":2,"
	                    "\"dead_lettered\":0,\"requeued\":0,\"ack_multiple\":1",
	                    ""));
	assert_true(log_has("\"msg\":\"message replayed\"", c[3].d.message_id));
	checkouts_release(c, 5);
}

int main(void)
{
	const struct CMUnitTest tests[] = {
	    cmocka_unit_test(test_poison_in_the_middle),
	    cmocka_unit_test(test_replay_after_commit),
	    cmocka_unit_test(test_no_deadlock),
	    cmocka_unit_test_teardown(test_stack_batch, inventory_restart),
	};
	const char *dsn = getenv("ORDERS_PG_DSN");
	char err[256] = "";
	int rc;

	snprintf(run_id, sizeof(run_id), "%ld-%ld", (long)time(NULL) % 100000000, (long)getpid());
	e2e_find_root(root, sizeof(root));
	if (config_load(&cfg, err, sizeof(err)) != ERR_OK) {
		fprintf(stderr, "it_batch: %s\n", err);
		return 1;
	}
	db = db_new(dsn && *dsn ? dsn : DEFAULT_DSN);
	if (!db) {
		fprintf(stderr, "it_batch: cannot connect to ORDERS_PG_DSN (is the stack up?)\n");
		return 1;
	}
	if (inventory_handler.init(&cfg, &inv) != ERR_OK) {
		db_free(db);
		return 1;
	}
	rc = cmocka_run_group_tests(tests, NULL, NULL);
	inventory_handler.fini(inv);
	db_free(db);
	return rc;
}
