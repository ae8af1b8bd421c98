/* it_dlq.c: poison messages end in <queue>.dlq and every consumer keeps serving the rest. */
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

#include <amqp.h>
#include <amqp_tcp_socket.h>

#include "e2e.h"
#include "err.h"
#include "ids.h"
#include "mq.h"
#include "proto.h"
#include "seal.h"

/* A message that cannot be decoded is dead-lettered at once. */
#define POISON_TIMEOUT_MS 60000
/*
 * One that keeps failing is retried MQ_DELIVERY_LIMIT times with the
 * consumer's back-off (100 ms doubling to 1 s) first: several seconds.
 */
#define FAILING_TIMEOUT_MS 180000

static char run_id[32];
static const char *url;
static struct mq_publisher *pub;

/* One message this test puts on a queue, and where it must end up. */
struct plant {
	const char *routing_key;
	const char *dlq;
	char message_id[MQ_ID_MAX]; /* "" = published without one */
	uint8_t *body;
	size_t len;
	int seen;
};

/* ---- planting ------------------------------------------------------------- */

static void plant_init(struct plant *p, const char *routing_key, const char *dlq, const char *what,
                       int with_id)
{
	memset(p, 0, sizeof(*p));
	p->routing_key = routing_key;
	p->dlq = dlq;
	if (with_id)
		snprintf(p->message_id, sizeof(p->message_id), "it-dlq-%s-%s", run_id, what);
}

/*
 * Bytes that are no protobuf message: field 1, length-delimited, claiming
 * 4 GiB. A marker follows so that the body is this run's own.
 */
static void plant_garbage(struct plant *p, const char *what)
{
	static const uint8_t head[] = {0x0a, 0xff, 0xff, 0xff, 0xff, 0x0f};
	char marker[96];
	int n = snprintf(marker, sizeof(marker), "it-dlq-%s-%s-body", run_id, what);

	p->len = sizeof(head) + (size_t)n;
	p->body = malloc(p->len);
	assert_non_null(p->body);
	memcpy(p->body, head, sizeof(head));
	memcpy(p->body + sizeof(head), marker, (size_t)n);
}

/* A well-formed order of one line, for the messages below. */
static void fake_order(Orders__Order *o, Orders__Line *line, Orders__Line **lines)
{
	orders__line__init(line);
	line->sku = "DLQ-NO-SUCH-SKU";
	line->quantity = 1;
	line->unit_price_cents = 100;
	lines[0] = line;
	o->customer_id = "c-dlq";
	o->currency = "USD";
	o->n_lines = 1;
	o->lines = lines;
	o->total_cents = 100;
}

static void fake_card(Orders__SealedCard *c)
{
	static uint8_t key[SEAL_KEY_BYTES], nonce[SEAL_NONCE_BYTES];
	static uint8_t ct[SEAL_MAC_BYTES + 28];

	c->sender_public_key.data = key;
	c->sender_public_key.len = sizeof(key);
	c->nonce.data = nonce;
	c->nonce.len = sizeof(nonce);
	c->ciphertext.data = ct;
	c->ciphertext.len = sizeof(ct);
	c->brand = "visa";
	c->last4 = "0000";
}

/* A checkout.requested that unpacks but can never be accepted: its order id is no UUID. */
static void plant_invalid_checkout(struct plant *p)
{
	Orders__CheckoutRequested m = ORDERS__CHECKOUT_REQUESTED__INIT;
	Orders__Envelope env = ORDERS__ENVELOPE__INIT;
	Orders__Order o = ORDERS__ORDER__INIT;
	Orders__SealedCard card = ORDERS__SEALED_CARD__INIT;
	Orders__Line line, *lines[1];

	proto_envelope_set(&env, p->message_id, "not-a-uuid", ids_now_ms(), "it-dlq");
	fake_order(&o, &line, lines);
	fake_card(&card);
	m.envelope = &env;
	m.order = &o;
	m.card = &card;
	assert_int_equal(proto_pack(&m.base, &p->body, &p->len), ERR_OK);
}

/*
 * A checkout.requested that inventory would accept (a real order id and SKU),
 * sent with a message_id too long for a delivery to carry. Were the id cut
 * short instead of dropped, two such messages could share an inbox entry;
 * without an id the message must be dead-lettered, not processed.
 */
static void plant_long_id_checkout(struct plant *p, char order_id[IDS_UUID_LEN + 1])
{
	Orders__CheckoutRequested m = ORDERS__CHECKOUT_REQUESTED__INIT;
	Orders__Envelope env = ORDERS__ENVELOPE__INIT;
	Orders__Order o = ORDERS__ORDER__INIT;
	Orders__SealedCard card = ORDERS__SEALED_CARD__INIT;
	Orders__Line line, *lines[1];
	char id[MQ_ID_MAX * 2];

	memset(id, 'x', sizeof(id) - 1);
	id[sizeof(id) - 1] = '\0';
	ids_uuid4(order_id);
	proto_envelope_set(&env, id, order_id, ids_now_ms(), "it-dlq");
	fake_order(&o, &line, lines);
	fake_card(&card);
	m.envelope = &env;
	m.order = &o;
	m.card = &card;
	assert_int_equal(proto_pack(&m.base, &p->body, &p->len), ERR_OK);
}

/* Publish with any message_id, past what lib/mq.c's publisher allows. */
static void publish_raw(const char *routing_key, const char *message_id, const uint8_t *body,
                        size_t len)
{
	struct amqp_connection_info info;
	amqp_basic_properties_t props;
	amqp_connection_state_t conn = amqp_new_connection();
	amqp_socket_t *sock = amqp_tcp_socket_new(conn);
	char *copy = strdup(url);
	amqp_bytes_t bytes = {len, (void *)body};

	assert_non_null(copy);
	assert_int_equal(amqp_parse_url(copy, &info), AMQP_STATUS_OK);
	assert_int_equal(amqp_socket_open(sock, info.host, info.port), AMQP_STATUS_OK);
	assert_int_equal(amqp_login(conn, info.vhost && *info.vhost ? info.vhost : "/", 0, 131072,
	                            0, AMQP_SASL_METHOD_PLAIN, info.user, info.password)
	                     .reply_type,
	                 AMQP_RESPONSE_NORMAL);
	amqp_channel_open(conn, 1);
	assert_int_equal(amqp_get_rpc_reply(conn).reply_type, AMQP_RESPONSE_NORMAL);
	memset(&props, 0, sizeof(props));
	props._flags = AMQP_BASIC_DELIVERY_MODE_FLAG | AMQP_BASIC_MESSAGE_ID_FLAG;
	props.delivery_mode = 2;
	props.message_id = amqp_cstring_bytes(message_id);
	assert_int_equal(amqp_basic_publish(conn, 1, amqp_cstring_bytes(MQ_EXCHANGE_ORDERS),
	                                    amqp_cstring_bytes(routing_key), 0, 0, &props, bytes),
	                 AMQP_STATUS_OK);
	amqp_channel_close(conn, 1, AMQP_REPLY_SUCCESS);
	amqp_connection_close(conn, AMQP_REPLY_SUCCESS);
	amqp_destroy_connection(conn);
	free(copy);
}

/*
 * An inventory.reserved that decodes, for an order the database does not
 * have: payment-consumer fails on it every time (it cannot lock the order),
 * a transient failure, until the delivery limit parks it.
 */
static void plant_missing_order(struct plant *p)
{
	Orders__InventoryReserved m = ORDERS__INVENTORY_RESERVED__INIT;
	Orders__Envelope env = ORDERS__ENVELOPE__INIT;
	Orders__Order o = ORDERS__ORDER__INIT;
	Orders__SealedCard card = ORDERS__SEALED_CARD__INIT;
	Orders__Line line, *lines[1];
	char order_id[IDS_UUID_LEN + 1];

	ids_uuid4(order_id);
	proto_envelope_set(&env, p->message_id, order_id, ids_now_ms(), "it-dlq");
	fake_order(&o, &line, lines);
	fake_card(&card);
	m.envelope = &env;
	m.order = &o;
	m.card = &card;
	assert_int_equal(proto_pack(&m.base, &p->body, &p->len), ERR_OK);
}

static void publish(const struct plant *p)
{
	assert_int_equal(mq_publish_sync(pub, MQ_EXCHANGE_ORDERS, p->routing_key,
	                                 p->message_id[0] ? p->message_id : NULL, p->body, p->len,
	                                 0),
	                 ERR_OK);
}

static void plants_release(struct plant *plants, size_t n)
{
	for (size_t i = 0; i < n; i++)
		free(plants[i].body);
}

/* ---- checking ------------------------------------------------------------- */

static struct plant *match(struct plant *plants, size_t n, const char *dlq,
                           const struct mq_delivery *d)
{
	for (size_t i = 0; i < n; i++) {
		struct plant *p = &plants[i];

		if (!p->seen && strcmp(p->dlq, dlq) == 0 &&
		    strcmp(p->message_id, d->message_id) == 0 && p->len == d->len &&
		    memcmp(p->body, d->body, d->len) == 0)
			return p;
	}
	return NULL;
}

/*
 * Consume dlq until every plant meant for it has come, or timeout_ms pass.
 * Ours are acked (the dead-letter queue is empty of them afterwards);
 * anything else is left unacked and goes back when the consumer closes.
 */
static void collect(struct plant *plants, size_t n, const char *dlq, double timeout_ms)
{
	struct mq_consumer *c = NULL;
	double start = e2e_now_ms();
	size_t want = 0, got = 0;
	int others = 0;

	for (size_t i = 0; i < n; i++)
		want += strcmp(plants[i].dlq, dlq) == 0;
	while (got < want && e2e_now_ms() - start < timeout_ms) {
		struct mq_delivery d;
		struct plant *p;
		int rc;

		if (!c) {
			c = mq_consumer_new(url, dlq, 100);
			if (!c) {
				usleep(200000);
				continue;
			}
		}
		memset(&d, 0, sizeof(d));
		rc = mq_consumer_next(c, &d, 500);
		if (rc == ERR_TIMEOUT)
			continue;
		if (rc != ERR_OK) {
			mq_consumer_free(c);
			c = NULL;
			continue;
		}
		p = match(plants, n, dlq, &d);
		if (p) {
			assert_int_equal(mq_consumer_ack(c, d.tag), ERR_OK);
			p->seen = 1;
			got++;
		} else {
			others++;
		}
		mq_delivery_release(&d);
	}
	mq_consumer_free(c);
	if (others)
		fprintf(stderr, "it_dlq: %d other message(s) in %s left there\n", others, dlq);
	for (size_t i = 0; i < n; i++) {
		if (!plants[i].seen && strcmp(plants[i].dlq, dlq) == 0)
			fprintf(stderr, "it_dlq: %s (message_id '%s') never reached %s\n",
			        plants[i].routing_key, plants[i].message_id, dlq);
	}
	fprintf(stderr, "it_dlq: %zu of %zu in %s after %.0f ms\n", got, want, dlq,
	        e2e_now_ms() - start);
	assert_int_equal(got, want);
}

/* A normal checkout right after the poison still goes all the way through. */
static void checkout_still_works(const char *what, double timeout_ms)
{
	char sku[64], key[128], body[1024];
	double start = e2e_now_ms();
	char *id;

	snprintf(sku, sizeof(sku), "DLQ-%s-%s", run_id, what);
	snprintf(key, sizeof(key), "it-dlq-%s-%s", run_id, what);
	e2e_put_product(sku, 5, 250);
	e2e_checkout_body(body, sizeof(body), sku, 1, "4242424242424242");
	id = e2e_checkout_ok(key, body);
	e2e_expect_final(id, "confirmed", timeout_ms);
	fprintf(stderr, "it_dlq: checkout %s confirmed in %.0f ms\n", what, e2e_now_ms() - start);
	e2e_wait_available(sku, 4);
	free(id);
}

/* ---- tests ---------------------------------------------------------------- */

static void test_undecodable_messages_dead_lettered(void **state)
{
	struct plant plants[7];
	size_t n = 0;
	(void)state;

	plant_init(&plants[n], MQ_KEY_CHECKOUT_REQUESTED, MQ_QUEUE_INVENTORY ".dlq", "inv-garbage",
	           1);
	plant_garbage(&plants[n++], "inv-garbage");
	plant_init(&plants[n], MQ_KEY_CHECKOUT_REQUESTED, MQ_QUEUE_INVENTORY ".dlq", "inv-noid", 0);
	plant_garbage(&plants[n++], "inv-noid");
	plant_init(&plants[n], MQ_KEY_CHECKOUT_REQUESTED, MQ_QUEUE_INVENTORY ".dlq", "inv-invalid",
	           1);
	plant_invalid_checkout(&plants[n++]);
	plant_init(&plants[n], MQ_KEY_INVENTORY_RESERVED, MQ_QUEUE_PAYMENT ".dlq", "pay-garbage",
	           1);
	plant_garbage(&plants[n++], "pay-garbage");
	plant_init(&plants[n], MQ_KEY_INVENTORY_RESERVED, MQ_QUEUE_PAYMENT ".dlq", "pay-noid", 0);
	plant_garbage(&plants[n++], "pay-noid");
	plant_init(&plants[n], MQ_KEY_PAYMENT_AUTHORIZED, MQ_QUEUE_ORDER ".dlq", "ord-garbage", 1);
	plant_garbage(&plants[n++], "ord-garbage");
	plant_init(&plants[n], MQ_KEY_PAYMENT_AUTHORIZED, MQ_QUEUE_ORDER ".dlq", "ord-noid", 0);
	plant_garbage(&plants[n++], "ord-noid");

	for (size_t i = 0; i < n; i++)
		publish(&plants[i]);
	/* Every consumer is past its poison and serving: this one passes all three. */
	checkout_still_works("AFTER-POISON", E2E_FINAL_TIMEOUT_MS);

	collect(plants, n, MQ_QUEUE_INVENTORY ".dlq", POISON_TIMEOUT_MS);
	collect(plants, n, MQ_QUEUE_PAYMENT ".dlq", POISON_TIMEOUT_MS);
	collect(plants, n, MQ_QUEUE_ORDER ".dlq", POISON_TIMEOUT_MS);
	plants_release(plants, n);
}

static void test_overlong_message_id_dead_lettered(void **state)
{
	struct plant p;
	char order_id[IDS_UUID_LEN + 1], long_id[MQ_ID_MAX * 2];
	(void)state;

	/* Matched on an empty id: that is how the dead-letter queue hands it back. */
	plant_init(&p, MQ_KEY_CHECKOUT_REQUESTED, MQ_QUEUE_INVENTORY ".dlq", "inv-longid", 0);
	plant_long_id_checkout(&p, order_id);
	memset(long_id, 'x', sizeof(long_id) - 1);
	long_id[sizeof(long_id) - 1] = '\0';
	publish_raw(MQ_KEY_CHECKOUT_REQUESTED, long_id, p.body, p.len);
	collect(&p, 1, MQ_QUEUE_INVENTORY ".dlq", POISON_TIMEOUT_MS);
	plants_release(&p, 1);
}

static void test_failing_message_dead_lettered(void **state)
{
	struct plant p;
	double start = e2e_now_ms();
	(void)state;

	plant_init(&p, MQ_KEY_INVENTORY_RESERVED, MQ_QUEUE_PAYMENT ".dlq", "pay-missing-order", 1);
	plant_missing_order(&p);
	publish(&p);
	checkout_still_works("WHILE-FAILING", E2E_FINAL_TIMEOUT_MS);
	collect(&p, 1, MQ_QUEUE_PAYMENT ".dlq", FAILING_TIMEOUT_MS);
	fprintf(stderr, "it_dlq: a failing message was parked after %.0f ms\n",
	        e2e_now_ms() - start);
	checkout_still_works("AFTER-FAILING", E2E_FINAL_TIMEOUT_MS);
	plants_release(&p, 1);
}

static int group_setup(void **state)
{
	(void)state;
	url = getenv("ORDERS_AMQP_URL");
	if (!url || !*url)
		url = E2E_AMQP_URL;
	pub = e2e_publisher_connect(url, "it_dlq");
	return pub ? 0 : -1;
}

static int group_teardown(void **state)
{
	(void)state;
	mq_publisher_free(pub);
	return 0;
}

int main(void)
{
	const struct CMUnitTest tests[] = {
	    cmocka_unit_test(test_undecodable_messages_dead_lettered),
	    cmocka_unit_test(test_overlong_message_id_dead_lettered),
	    cmocka_unit_test(test_failing_message_dead_lettered),
	};

	snprintf(run_id, sizeof(run_id), "%ld-%d", (long)time(NULL), (int)getpid());
	return cmocka_run_group_tests(tests, group_setup, group_teardown);
}
