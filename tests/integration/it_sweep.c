/* it_sweep.c: end to end: order-consumer finishes orders whose finishing message was lost. */
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

#include "db.h"
#include "e2e.h"
#include "err.h"
#include "ids.h"
#include "mq.h"
#include "proto.h"

#define DEFAULT_DSN "postgresql://orders@127.0.0.1:5442/orders"
/* Every stranded order here was last changed this long ago: past any grace. */
#define LONG_AGO_S (2 * 86400)
/* Beyond the grace: a sweep every 2 s, and a busy machine. */
#define SWEEP_TIMEOUT_MS 30000
/* The fresh order waits out the grace first; longer graces skip that test. */
#define FRESH_GRACE_MAX_S 15
#define INITIAL_STOCK 10
#define PRICE 250
#define LINES 2

/* The stranded states this test builds, as the lost message left them. */
enum stranded {
	/* pending; inventory's inbox says rejected; inventory.rejected lost */
	S_REJECTED,
	/* reserved; payments authorized, live charge; payment.authorized lost */
	S_AUTHORIZED,
	/* the same for an order made from a cart */
	S_AUTHORIZED_CART,
	/* reserved (reservation run out, too); payments declined; payment.declined lost */
	S_DECLINED,
	/* reserved; an invalid card, declined in payment's inbox only; message lost */
	S_INVALID_CARD,
	/* expired for good, yet a live authorization at the gateway */
	S_LEFTOVER_EXPIRED,
	/* payment_failed for good, yet a live authorization at the gateway */
	S_LEFTOVER_FAILED,
};

struct stranded_order {
	enum stranded kind;
	char order_id[IDS_UUID_LEN + 1];
	char cart_id[IDS_UUID_LEN + 1]; /* "" when not made from a cart */
	char sku[LINES][64];
	int qty[LINES];
	char token[32];
	char auth_id[64];
	long total;
	double updated_at; /* as built, Unix seconds */
};

static char run_id[32];
static struct db *db;
static struct mq_publisher *pub;
static int grace_s = 60;

/* ---- the database -------------------------------------------------------- */

static void exec_ok(const char *sql, int n, const char *const *p)
{
	int rc = db_exec(db, sql, n, p, NULL);

	if (rc != ERR_OK)
		fprintf(stderr, "it_sweep: failed (%s): %s\n", err_str(rc), sql);
	assert_int_equal(rc, ERR_OK);
}

/* The first column of the first row of sql with $1 = a, as text ("" when no row or NULL). */
static void query_text(const char *sql, const char *a, char *out, size_t len)
{
	PGresult *r = NULL;

	assert_int_equal(db_exec(db, sql, 1, &a, &r), ERR_OK);
	snprintf(out, len, "%s", PQntuples(r) > 0 ? PQgetvalue(r, 0, 0) : "");
	PQclear(r);
}

static long query_long(const char *sql, const char *a)
{
	char v[64];

	query_text(sql, a, v, sizeof(v));
	return v[0] ? strtol(v, NULL, 10) : -1;
}

static double query_double(const char *sql, const char *a)
{
	char v[64];

	query_text(sql, a, v, sizeof(v));
	assert_true(v[0] != '\0');
	return strtod(v, NULL);
}

/*
 * Build the stranded state of o->kind, in one transaction, the way the
 * consumers would have left it (see their handlers): products with their
 * held units in reserved, the order and its lines, reservations, the vault
 * card and payments row, the gateway's charge and the inbox rows.
 */
static void build(struct stranded_order *o, enum stranded kind, const char *tag, int age_s)
{
	static const char product_sql[] =
	    "INSERT INTO products (sku, name, price_cents, currency, stock, reserved) "
	    "VALUES ($1, 'Sweep test ' || $1, $2::bigint, 'USD', $3::bigint, $4::bigint)";
	static const char order_sql[] =
	    "INSERT INTO orders (order_id, client_id, idempotency_key, status, customer_id, "
	    "customer_email, currency, total_cents, shipping, payment_token, card_brand, "
	    "card_last4, failure_reason, correlation_id, created_at, updated_at, cart_id) "
	    "VALUES ($1::uuid, 'it-sweep', $2, $3, 'c-sweep', 'ada@example.com', 'USD', "
	    "$4::bigint, '{}'::jsonb, NULLIF($5, ''), CASE WHEN $5 <> '' THEN 'visa' END, "
	    "CASE WHEN $5 <> '' THEN '4242' END, NULLIF($6, ''), 'it-sweep-' || $2, "
	    "now() - $7::int * interval '1 second' - interval '1 minute', "
	    "now() - $7::int * interval '1 second', NULLIF($8, '')::uuid)";
	static const char line_sql[] =
	    "INSERT INTO order_lines (order_id, line_no, sku, quantity, unit_price_cents) "
	    "VALUES ($1::uuid, $2::int, $3, $4::int, $5::bigint)";
	static const char reservation_sql[] =
	    "INSERT INTO reservations (order_id, sku, quantity, state, expires_at) "
	    "VALUES ($1::uuid, $2, $3::int, $4, now() + $5::int * interval '1 second')";
	static const char vault_sql[] =
	    "INSERT INTO vault_cards (token, fingerprint, ciphertext, nonce, brand, last4, "
	    "exp_month, exp_year) VALUES ($1, sha256(convert_to($1, 'UTF8')), "
	    "decode('00', 'hex'), decode('00', 'hex'), 'visa', '4242', 12, 2030)";
	static const char payment_sql[] =
	    "INSERT INTO payments (order_id, token, amount_cents, currency, authorized, "
	    "decline_code, authorization_id, attempts) "
	    "VALUES ($1::uuid, $2, $3::bigint, 'USD', $4::boolean, NULLIF($5, ''), "
	    "NULLIF($6, ''), 1)";
	static const char charge_sql[] =
	    "INSERT INTO gateway_charges (idempotency_key, amount_cents, currency, approved, "
	    "decline_code, authorization_id) "
	    "VALUES ($1, $2::bigint, 'USD', $3::boolean, NULLIF($4, ''), $5)";
	static const char inbox_sql[] =
	    "INSERT INTO inbox (consumer, message_id, order_id, outcome) "
	    "VALUES ($1, $2, $3::uuid, $4)";
	static const char event_sql[] =
	    "INSERT INTO order_events (event_id, type, order_id, customer_id, currency, "
	    "total_cents, items) VALUES ($1::uuid, $2, $3::uuid, 'c-sweep', 'USD', $4::bigint, "
	    "'[]'::jsonb)";
	static const char updated_sql[] =
	    "SELECT extract(epoch FROM updated_at) FROM orders WHERE order_id = $1::uuid";
	const char *status = "reserved", *reason = "", *res_state = "held";
	const char *pay_code = "", *auth = "", *outcome;
	int pays = 0, authorized = 0, charged = 0, approved = 0, ttl_s = 3600;
	char stock[16], held[16], qty[16], line_no[16], price[16], total[24], age[16], ttl[16];
	char idem[96], msg_id[IDS_UUID_LEN + 1], event_id[IDS_UUID_LEN + 1];
	char pay_outcome[160], inv_outcome[160];
	const char *p[8];
	int i;

	memset(o, 0, sizeof(*o));
	o->kind = kind;
	ids_uuid4(o->order_id);
	snprintf(idem, sizeof(idem), "swp-%s-%s", run_id, tag);
	for (i = 0; i < LINES; i++) {
		/* Two SKUs, given in reverse byte order: the sweep locks them sorted. */
		snprintf(o->sku[i], sizeof(o->sku[i]), "SWP-%s-%s-%c", run_id, tag, 'B' - i);
		o->qty[i] = 2 + i;
		o->total += (long)o->qty[i] * PRICE;
	}
	ids_token(o->token);
	snprintf(o->auth_id, sizeof(o->auth_id), "auth_itsweep%s", tag);
	switch (kind) {
	case S_AUTHORIZED_CART:
		ids_uuid4(o->cart_id);
		pays = authorized = charged = approved = 1;
		auth = o->auth_id;
		break;
	case S_REJECTED:
		status = "pending";
		res_state = NULL;
		break;
	case S_AUTHORIZED:
		pays = authorized = charged = approved = 1;
		auth = o->auth_id;
		break;
	case S_DECLINED:
		pays = charged = 1;
		pay_code = "insufficient_funds";
		ttl_s = -60; /* run out: the expiry sweeper must leave it to the completion sweep */
		break;
	case S_INVALID_CARD:
		o->token[0] = '\0';
		break;
	case S_LEFTOVER_EXPIRED:
		status = "expired";
		reason = "reservation_expired";
		res_state = "released";
		charged = approved = 1;
		break;
	case S_LEFTOVER_FAILED:
		status = "payment_failed";
		reason = "card_declined";
		res_state = "released";
		pays = charged = approved = 1;
		pay_code = "card_declined";
		break;
	}

	assert_int_equal(db_begin(db), ERR_OK);
	snprintf(stock, sizeof(stock), "%d", INITIAL_STOCK);
	snprintf(price, sizeof(price), "%d", PRICE);
	for (i = 0; i < LINES; i++) {
		snprintf(held, sizeof(held), "%d",
		         res_state && strcmp(res_state, "held") == 0 ? o->qty[i] : 0);
		p[0] = o->sku[i];
		p[1] = price;
		p[2] = stock;
		p[3] = held;
		exec_ok(product_sql, 4, p);
	}
	snprintf(total, sizeof(total), "%ld", o->total);
	snprintf(age, sizeof(age), "%d", age_s);
	p[0] = o->order_id;
	p[1] = idem;
	p[2] = status;
	p[3] = total;
	p[4] = pays ? o->token : "";
	p[5] = reason;
	p[6] = age;
	p[7] = o->cart_id;
	exec_ok(order_sql, 8, p);
	for (i = 0; i < LINES; i++) {
		snprintf(line_no, sizeof(line_no), "%d", i + 1);
		snprintf(qty, sizeof(qty), "%d", o->qty[i]);
		p[0] = o->order_id;
		p[1] = line_no;
		p[2] = o->sku[i];
		p[3] = qty;
		p[4] = price;
		exec_ok(line_sql, 5, p);
		if (!res_state)
			continue;
		snprintf(ttl, sizeof(ttl), "%d", ttl_s);
		p[1] = o->sku[i];
		p[2] = qty;
		p[3] = res_state;
		p[4] = ttl;
		exec_ok(reservation_sql, 5, p);
	}
	if (pays) {
		p[0] = o->token;
		exec_ok(vault_sql, 1, p);
		p[0] = o->order_id;
		p[1] = o->token;
		p[2] = total;
		p[3] = authorized ? "true" : "false";
		p[4] = pay_code;
		p[5] = auth;
		exec_ok(payment_sql, 6, p);
	}
	if (charged) {
		p[0] = o->order_id;
		p[1] = total;
		p[2] = approved ? "true" : "false";
		p[3] = approved ? "" : pay_code;
		p[4] = o->auth_id;
		exec_ok(charge_sql, 5, p);
	}
	/* inventory's inbox row: what it decided for the checkout. */
	if (kind == S_REJECTED)
		snprintf(inv_outcome, sizeof(inv_outcome), "rejected:out_of_stock:%s", o->sku[1]);
	else
		snprintf(inv_outcome, sizeof(inv_outcome), "reserved");
	ids_uuid4(msg_id);
	p[0] = "inventory";
	p[1] = msg_id;
	p[2] = o->order_id;
	p[3] = inv_outcome;
	exec_ok(inbox_sql, 4, p);
	/* payment-consumer's, when it got that far. */
	outcome = NULL;
	if (kind == S_AUTHORIZED || kind == S_AUTHORIZED_CART) {
		snprintf(pay_outcome, sizeof(pay_outcome), "authorized:%s:%s", o->auth_id,
		         o->token);
		outcome = pay_outcome;
	} else if (kind == S_DECLINED || kind == S_LEFTOVER_FAILED) {
		snprintf(pay_outcome, sizeof(pay_outcome), "declined:%s:%s", pay_code, o->token);
		outcome = pay_outcome;
	} else if (kind == S_INVALID_CARD) {
		outcome = "declined:invalid_card:";
	}
	if (outcome) {
		ids_uuid4(msg_id);
		p[0] = "payment";
		p[1] = msg_id;
		p[3] = outcome;
		exec_ok(inbox_sql, 4, p);
	}
	/* A final status comes with its event. */
	if (kind == S_LEFTOVER_EXPIRED || kind == S_LEFTOVER_FAILED) {
		ids_uuid4(event_id);
		p[0] = event_id;
		p[1] = kind == S_LEFTOVER_EXPIRED ? "order.expired" : "order.payment_failed";
		p[2] = o->order_id;
		p[3] = total;
		exec_ok(event_sql, 4, p);
	}
	assert_int_equal(db_commit(db), ERR_OK);
	o->updated_at = query_double(updated_sql, o->order_id);
}

/* ---- waiting and checking ------------------------------------------------ */

static const char status_sql[] = "SELECT status FROM orders WHERE order_id = $1::uuid";
static const char live_auth_sql[] = "SELECT count(*) FROM gateway_charges "
                                    "WHERE idempotency_key = $1 AND approved AND voided_at IS NULL";

static int is_final(const char *status)
{
	return strcmp(status, "confirmed") == 0 || strcmp(status, "rejected") == 0 ||
	       strcmp(status, "payment_failed") == 0 || strcmp(status, "expired") == 0;
}

static void wait_final(const struct stranded_order *o, int timeout_ms)
{
	double start = e2e_now_ms();
	char status[32];

	for (;;) {
		query_text(status_sql, o->order_id, status, sizeof(status));
		if (is_final(status))
			break;
		if (e2e_now_ms() - start >= timeout_ms) {
			fprintf(stderr, "it_sweep: order %s still %s after %d ms\n", o->order_id,
			        status, timeout_ms);
			fail();
		}
		usleep(100000);
	}
	fprintf(stderr, "it_sweep: order %s %s after %.0f ms\n", o->order_id, status,
	        e2e_now_ms() - start);
}

/* Wait until sql with $1 = a gives want. */
static void wait_long(const char *sql, const char *a, long want, int timeout_ms)
{
	double start = e2e_now_ms();
	long got;

	while ((got = query_long(sql, a)) != want) {
		if (e2e_now_ms() - start >= timeout_ms) {
			fprintf(stderr, "it_sweep: %ld, not %ld, from: %s\n", got, want, sql);
			fail();
		}
		usleep(100000);
	}
}

/* Wait until sql with $1 = a gives the text want. */
static void wait_text(const char *sql, const char *a, const char *want, int timeout_ms)
{
	double start = e2e_now_ms();
	char got[256];

	for (;;) {
		query_text(sql, a, got, sizeof(got));
		if (strcmp(got, want) == 0)
			return;
		if (e2e_now_ms() - start >= timeout_ms) {
			fprintf(stderr, "it_sweep: '%s', not '%s', from: %s\n", got, want, sql);
			fail();
		}
		usleep(100000);
	}
}

/*
 * The order is final as want (failure_reason reason, "" for none), with
 * exactly one event, of the right type and published; no reservation is
 * held any more; each SKU's stock accounts for what was sold (initial =
 * stock + committed) and reserves nothing; committed says whether the units
 * were sold.
 */
static void check_final(const struct stranded_order *o, const char *want, const char *reason,
                        const char *event_type, int committed)
{
	static const char reason_sql[] =
	    "SELECT coalesce(failure_reason, '') FROM orders WHERE order_id = $1::uuid";
	static const char events_sql[] =
	    "SELECT count(*) FROM order_events WHERE order_id = $1::uuid";
	static const char type_sql[] = "SELECT type FROM order_events WHERE order_id = $1::uuid";
	static const char unpublished_sql[] = "SELECT count(*) FROM order_events "
	                                      "WHERE order_id = $1::uuid AND publish_pending";
	static const char held_sql[] =
	    "SELECT count(*) FROM reservations WHERE order_id = $1::uuid AND state = 'held'";
	static const char committed_sql[] =
	    "SELECT count(*) FROM reservations WHERE order_id = $1::uuid AND state = 'committed'";
	static const char stock_sql[] = "SELECT stock FROM products WHERE sku = $1";
	static const char reserved_sql[] = "SELECT reserved FROM products WHERE sku = $1";
	static const char accounted_sql[] =
	    "SELECT p.stock + coalesce((SELECT sum(r.quantity) FROM reservations r "
	    "WHERE r.sku = p.sku AND r.state = 'committed'), 0) FROM products p WHERE p.sku = $1";
	char got[64];
	int i;

	query_text(status_sql, o->order_id, got, sizeof(got));
	assert_string_equal(got, want);
	query_text(reason_sql, o->order_id, got, sizeof(got));
	assert_string_equal(got, reason);
	assert_int_equal(query_long(events_sql, o->order_id), 1);
	query_text(type_sql, o->order_id, got, sizeof(got));
	assert_string_equal(got, event_type);
	/* The sweep's event goes out through publish_pending(). */
	wait_long(unpublished_sql, o->order_id, 0, SWEEP_TIMEOUT_MS);
	assert_int_equal(query_long(held_sql, o->order_id), 0);
	assert_int_equal(query_long(committed_sql, o->order_id), committed ? LINES : 0);
	for (i = 0; i < LINES; i++) {
		assert_int_equal(query_long(reserved_sql, o->sku[i]), 0);
		assert_int_equal(query_long(stock_sql, o->sku[i]),
		                 INITIAL_STOCK - (committed ? o->qty[i] : 0));
		assert_int_equal(query_long(accounted_sql, o->sku[i]), INITIAL_STOCK);
	}
}

/* ---- the late message ----------------------------------------------------- */

/*
 * Publish the message that was lost, as its consumer would have, and wait
 * for order-consumer to record it: the order is final, so it must be a noop.
 */
static void late_message(const struct stranded_order *o)
{
	static const char outcome_sql[] =
	    "SELECT outcome FROM inbox WHERE consumer = 'order' AND message_id = $1";
	Orders__Envelope env = ORDERS__ENVELOPE__INIT;
	Orders__Order order = ORDERS__ORDER__INIT;
	Orders__Line lines[LINES], *line_ptrs[LINES];
	Orders__PaymentResult pr = ORDERS__PAYMENT_RESULT__INIT;
	Orders__InventoryRejected rej = ORDERS__INVENTORY_REJECTED__INIT;
	char msg_id[IDS_UUID_LEN + 1], order_id[IDS_UUID_LEN + 1], corr[64];
	const char *key;
	uint8_t *body = NULL;
	size_t len = 0;
	double start = e2e_now_ms();
	char outcome[256] = "";
	int i;

	ids_uuid4(msg_id);
	snprintf(order_id, sizeof(order_id), "%s", o->order_id);
	snprintf(corr, sizeof(corr), "it-sweep-late");
	proto_envelope_set(&env, msg_id, order_id, ids_now_ms(), corr);
	for (i = 0; i < LINES; i++) {
		orders__line__init(&lines[i]);
		lines[i].sku = (char *)o->sku[i];
		lines[i].quantity = (uint32_t)o->qty[i];
		lines[i].unit_price_cents = PRICE;
		line_ptrs[i] = &lines[i];
	}
	order.customer_id = "c-sweep";
	order.customer_email = "ada@example.com";
	order.currency = "USD";
	order.n_lines = LINES;
	order.lines = line_ptrs;
	order.total_cents = o->total;
	if (o->kind == S_REJECTED) {
		key = MQ_KEY_INVENTORY_REJECTED;
		rej.envelope = &env;
		rej.order = &order;
		rej.reason = "out_of_stock";
		rej.sku = (char *)o->sku[1];
		assert_int_equal(proto_pack(&rej.base, &body, &len), ERR_OK);
	} else {
		pr.envelope = &env;
		pr.order = &order;
		pr.authorized = o->kind == S_AUTHORIZED;
		pr.decline_code = o->kind == S_DECLINED ? "insufficient_funds" : "";
		pr.token = (char *)o->token;
		pr.brand = "visa";
		pr.last4 = "4242";
		pr.authorization_id = o->kind == S_AUTHORIZED ? (char *)o->auth_id : "";
		key = pr.authorized ? MQ_KEY_PAYMENT_AUTHORIZED : MQ_KEY_PAYMENT_DECLINED;
		assert_int_equal(proto_pack(&pr.base, &body, &len), ERR_OK);
	}
	assert_int_equal(
	    mq_publish_sync(pub, MQ_EXCHANGE_ORDERS, key, msg_id, body, len, MQ_PUBLISH_MANDATORY),
	    ERR_OK);
	free(body);
	for (;;) {
		query_text(outcome_sql, msg_id, outcome, sizeof(outcome));
		if (outcome[0])
			break;
		if (e2e_now_ms() - start >= SWEEP_TIMEOUT_MS) {
			fprintf(stderr, "it_sweep: order-consumer did not handle the late %s\n",
			        key);
			fail();
		}
		usleep(100000);
	}
	assert_string_equal(outcome, "noop");
}

/* ---- tests ---------------------------------------------------------------- */

/* (a) inventory.rejected lost: the order stays pending. */
static void test_rejected_finished(void **state)
{
	struct stranded_order o;
	(void)state;

	build(&o, S_REJECTED, "REJ", LONG_AGO_S);
	wait_final(&o, SWEEP_TIMEOUT_MS);
	check_final(&o, "rejected", "out_of_stock", "order.rejected", 0);
	late_message(&o);
	check_final(&o, "rejected", "out_of_stock", "order.rejected", 0);
}

/* (b) payment.authorized lost: the order stays reserved, stock held, card authorized. */
static void test_authorized_confirmed(void **state)
{
	struct stranded_order o;
	(void)state;

	build(&o, S_AUTHORIZED, "AUTH", LONG_AGO_S);
	wait_final(&o, SWEEP_TIMEOUT_MS);
	check_final(&o, "confirmed", "", "order.confirmed", 1);
	assert_int_equal(query_long(live_auth_sql, o.order_id), 1);
	/* The late message finds it confirmed: no second event, nothing voided. */
	late_message(&o);
	check_final(&o, "confirmed", "", "order.confirmed", 1);
	assert_int_equal(query_long(live_auth_sql, o.order_id), 1);
}

/*
 * An order made from a cart, confirmed by the sweep: the cart.checked_out
 * goes out after the commit, and cart-consumer marks the cart (a stub row:
 * no change of that cart ever came).
 */
static void test_authorized_cart_checked_out(void **state)
{
	static const char cart_sql[] = "SELECT status || ':' || coalesce(order_id::text, '') "
	                               "FROM carts WHERE cart_id = $1::uuid";
	struct stranded_order o;
	char want[128];
	(void)state;

	build(&o, S_AUTHORIZED_CART, "CART", LONG_AGO_S);
	wait_final(&o, SWEEP_TIMEOUT_MS);
	check_final(&o, "confirmed", "", "order.confirmed", 1);
	snprintf(want, sizeof(want), "checked_out:%s", o.order_id);
	wait_text(cart_sql, o.cart_id, want, SWEEP_TIMEOUT_MS);
}

/* (c) payment.declined lost, and the reservation ran out meanwhile: still payment_failed. */
static void test_declined_failed(void **state)
{
	struct stranded_order o;
	(void)state;

	build(&o, S_DECLINED, "DECL", LONG_AGO_S);
	wait_final(&o, SWEEP_TIMEOUT_MS);
	check_final(&o, "payment_failed", "insufficient_funds", "order.payment_failed", 0);
	assert_int_equal(query_long(live_auth_sql, o.order_id), 0);
	late_message(&o);
	check_final(&o, "payment_failed", "insufficient_funds", "order.payment_failed", 0);
}

/* An invalid card's decline, which only payment-consumer's inbox records. */
static void test_invalid_card_failed(void **state)
{
	static const char charges_sql[] =
	    "SELECT count(*) FROM gateway_charges WHERE idempotency_key = $1";
	struct stranded_order o;
	(void)state;

	build(&o, S_INVALID_CARD, "INV", LONG_AGO_S);
	wait_final(&o, SWEEP_TIMEOUT_MS);
	check_final(&o, "payment_failed", "invalid_card", "order.payment_failed", 0);
	assert_int_equal(query_long(charges_sql, o.order_id), 0);
}

/* (d) a live authorization on an order that ended otherwise is voided. */
static void test_leftover_authorizations_voided(void **state)
{
	static const char voided_sql[] = "SELECT count(*) FROM gateway_charges "
	                                 "WHERE idempotency_key = $1 AND voided_at IS NOT NULL";
	struct stranded_order exp, failed;
	(void)state;

	build(&exp, S_LEFTOVER_EXPIRED, "LEFT-EXP", LONG_AGO_S);
	build(&failed, S_LEFTOVER_FAILED, "LEFT-FAIL", LONG_AGO_S);
	wait_long(live_auth_sql, exp.order_id, 0, SWEEP_TIMEOUT_MS);
	wait_long(live_auth_sql, failed.order_id, 0, SWEEP_TIMEOUT_MS);
	assert_int_equal(query_long(voided_sql, exp.order_id), 1);
	assert_int_equal(query_long(voided_sql, failed.order_id), 1);
	check_final(&exp, "expired", "reservation_expired", "order.expired", 0);
	check_final(&failed, "payment_failed", "card_declined", "order.payment_failed", 0);
}

/* Fresh: the sweep waits out ORDERS_FINALIZE_GRACE_S before it steps in. */
static void test_grace_respected(void **state)
{
	static const char updated_sql[] =
	    "SELECT extract(epoch FROM updated_at) FROM orders WHERE order_id = $1::uuid";
	struct stranded_order o;
	double finished;
	(void)state;

	if (grace_s > FRESH_GRACE_MAX_S) {
		fprintf(stderr,
		        "it_sweep: skipped, ORDERS_FINALIZE_GRACE_S is %d (make test sets 3)\n",
		        grace_s);
		skip();
	}
	build(&o, S_AUTHORIZED, "FRESH", 0);
	wait_final(&o, grace_s * 1000 + SWEEP_TIMEOUT_MS);
	check_final(&o, "confirmed", "", "order.confirmed", 1);
	/* Finished at the sweep's transaction time, which came after the grace. */
	finished = query_double(updated_sql, o.order_id);
	fprintf(stderr, "it_sweep: finished %.1f s after its last change (grace %d s)\n",
	        finished - o.updated_at, grace_s);
	assert_true(finished - o.updated_at >= grace_s);
}

static int group_setup(void **state)
{
	const char *dsn = getenv("ORDERS_PG_DSN"), *url = getenv("ORDERS_AMQP_URL");
	const char *grace = getenv("ORDERS_FINALIZE_GRACE_S");

	(void)state;
	if (grace && atoi(grace) > 0)
		grace_s = atoi(grace);
	db = db_new(dsn && *dsn ? dsn : DEFAULT_DSN);
	if (!db) {
		fprintf(stderr, "it_sweep: cannot connect to ORDERS_PG_DSN (is the stack up?)\n");
		return -1;
	}
	pub = e2e_publisher_connect(url && *url ? url : E2E_AMQP_URL, "it_sweep");
	return pub ? 0 : -1;
}

static int group_teardown(void **state)
{
	(void)state;
	mq_publisher_free(pub);
	db_free(db);
	return 0;
}

int main(void)
{
	const struct CMUnitTest tests[] = {
	    cmocka_unit_test(test_rejected_finished),
	    cmocka_unit_test(test_authorized_confirmed),
	    cmocka_unit_test(test_authorized_cart_checked_out),
	    cmocka_unit_test(test_declined_failed),
	    cmocka_unit_test(test_invalid_card_failed),
	    cmocka_unit_test(test_leftover_authorizations_voided),
	    cmocka_unit_test(test_grace_respected),
	};

	snprintf(run_id, sizeof(run_id), "%ld-%d", (long)time(NULL), (int)getpid());
	return cmocka_run_group_tests(tests, group_setup, group_teardown);
}
