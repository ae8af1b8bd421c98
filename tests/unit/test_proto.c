/* test_proto.c: unit tests for proto_pack and the envelope helpers over the generated code. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>

#include <stdlib.h>
#include <string.h>

#include "err.h"
#include "proto.h"

/* A pointer no allocator hands out: outputs must still hold it after a failure. */
#define SENTINEL_PTR ((uint8_t *)(uintptr_t)0x5a5a5a5a)
#define SENTINEL_LEN ((size_t)4242)

/* The random-input rounds: enough to cross every branch of the parser many times. */
#define FUZZ_ROUNDS 4000
#define FUZZ_MAX_LEN 96

/* ---- fixtures ------------------------------------------------------------ */

/*
 * One of everything, with fields that differ from their defaults, so that a
 * field dropped or mixed up on the way shows in the comparison. Strings are
 * borrowed from static storage, as proto.h says hand-built messages do.
 */
struct fixture {
	Orders__Envelope env;
	Orders__Line line_a, line_b;
	Orders__Line *lines[2];
	Orders__Address addr;
	Orders__Order order;
	Orders__SealedCard card;
	uint8_t pub[32], nonce[24], ct[64];
};

static void fixture_init(struct fixture *f)
{
	static const Orders__Envelope env = ORDERS__ENVELOPE__INIT;
	static const Orders__Line line = ORDERS__LINE__INIT;
	static const Orders__Address addr = ORDERS__ADDRESS__INIT;
	static const Orders__Order order = ORDERS__ORDER__INIT;
	static const Orders__SealedCard card = ORDERS__SEALED_CARD__INIT;
	size_t i;

	memset(f, 0, sizeof(*f));
	f->env = env;
	proto_envelope_set(&f->env, "msg-0001", "7b1f3c52-9f0e-4b8e-a7c1-1d2e3f405162",
	                   1735689600123LL, "req-abc");

	f->line_a = line;
	f->line_a.sku = "SKU-RED-1";
	f->line_a.quantity = 2;
	f->line_a.unit_price_cents = 1999;
	f->line_b = line;
	f->line_b.sku = "SKU.blue_2";
	f->line_b.quantity = 999;
	f->line_b.unit_price_cents = 0;
	f->lines[0] = &f->line_a;
	f->lines[1] = &f->line_b;

	f->addr = addr;
	f->addr.name = "Ada Lovelace";
	f->addr.line1 = "12 St James's Square";
	f->addr.line2 = "";
	f->addr.city = "London";
	f->addr.postal_code = "SW1Y 4JH";
	f->addr.country = "GB";

	f->order = order;
	f->order.customer_id = "cus_42";
	f->order.customer_email = "ada@example.com";
	f->order.currency = "EUR";
	f->order.n_lines = 2;
	f->order.lines = f->lines;
	f->order.total_cents = 3998;
	f->order.shipping = &f->addr;
	f->order.client_id = "web";
	f->order.idempotency_key = "idem-\xc3\xa9-1";

	/* Binary fields with NULs and high bytes: they must come back byte for byte. */
	for (i = 0; i < sizeof(f->pub); i++)
		f->pub[i] = (uint8_t)(i * 7);
	for (i = 0; i < sizeof(f->nonce); i++)
		f->nonce[i] = (uint8_t)(255 - i);
	for (i = 0; i < sizeof(f->ct); i++)
		f->ct[i] = (uint8_t)(i * 13 + 1);
	f->ct[10] = 0;
	f->card = card;
	f->card.sender_public_key.data = f->pub;
	f->card.sender_public_key.len = sizeof(f->pub);
	f->card.nonce.data = f->nonce;
	f->card.nonce.len = sizeof(f->nonce);
	f->card.ciphertext.data = f->ct;
	f->card.ciphertext.len = sizeof(f->ct);
	f->card.brand = "visa";
	f->card.last4 = "4242";
}

static void assert_bytes_equal(const ProtobufCBinaryData *got, const uint8_t *want, size_t len)
{
	assert_int_equal(got->len, len);
	assert_non_null(got->data);
	assert_memory_equal(got->data, want, len);
}

static void assert_envelope_equal(const Orders__Envelope *got, const Orders__Envelope *want)
{
	assert_non_null(got);
	assert_string_equal(got->message_id, want->message_id);
	assert_string_equal(got->order_id, want->order_id);
	assert_int_equal(got->occurred_at_ms, want->occurred_at_ms);
	assert_string_equal(got->correlation_id, want->correlation_id);
}

static void assert_line_equal(const Orders__Line *got, const Orders__Line *want)
{
	assert_non_null(got);
	assert_string_equal(got->sku, want->sku);
	assert_int_equal(got->quantity, want->quantity);
	assert_int_equal(got->unit_price_cents, want->unit_price_cents);
}

static void assert_address_equal(const Orders__Address *got, const Orders__Address *want)
{
	assert_non_null(got);
	assert_string_equal(got->name, want->name);
	assert_string_equal(got->line1, want->line1);
	assert_string_equal(got->line2, want->line2);
	assert_string_equal(got->city, want->city);
	assert_string_equal(got->postal_code, want->postal_code);
	assert_string_equal(got->country, want->country);
}

static void assert_order_equal(const Orders__Order *got, const Orders__Order *want)
{
	size_t i;

	assert_non_null(got);
	assert_string_equal(got->customer_id, want->customer_id);
	assert_string_equal(got->customer_email, want->customer_email);
	assert_string_equal(got->currency, want->currency);
	assert_int_equal(got->n_lines, want->n_lines);
	for (i = 0; i < want->n_lines; i++)
		assert_line_equal(got->lines[i], want->lines[i]);
	assert_int_equal(got->total_cents, want->total_cents);
	assert_address_equal(got->shipping, want->shipping);
	assert_string_equal(got->client_id, want->client_id);
	assert_string_equal(got->idempotency_key, want->idempotency_key);
}

static void assert_card_equal(const Orders__SealedCard *got, const struct fixture *f)
{
	assert_non_null(got);
	assert_bytes_equal(&got->sender_public_key, f->pub, sizeof(f->pub));
	assert_bytes_equal(&got->nonce, f->nonce, sizeof(f->nonce));
	assert_bytes_equal(&got->ciphertext, f->ct, sizeof(f->ct));
	assert_string_equal(got->brand, f->card.brand);
	assert_string_equal(got->last4, f->card.last4);
}

/* proto_pack m, check the result against the library's own size, return it. */
static uint8_t *pack(const ProtobufCMessage *m, size_t *len)
{
	uint8_t *out = NULL;

	*len = SENTINEL_LEN;
	assert_int_equal(proto_pack(m, &out, len), ERR_OK);
	assert_non_null(out);
	assert_int_equal(*len, protobuf_c_message_get_packed_size(m));
	return out;
}

/* ---- round trips --------------------------------------------------------- */

static void test_roundtrip_checkout_requested(void **state)
{
	Orders__CheckoutRequested m = ORDERS__CHECKOUT_REQUESTED__INIT;
	Orders__CheckoutRequested *u;
	struct fixture f;
	uint8_t *out;
	size_t len;

	(void)state;
	fixture_init(&f);
	m.envelope = &f.env;
	m.order = &f.order;
	m.card = &f.card;
	out = pack(&m.base, &len);
	u = orders__checkout_requested__unpack(NULL, len, out);
	assert_non_null(u);
	assert_envelope_equal(u->envelope, &f.env);
	assert_order_equal(u->order, &f.order);
	assert_card_equal(u->card, &f);
	orders__checkout_requested__free_unpacked(u, NULL);
	free(out);
}

static void test_roundtrip_inventory_reserved(void **state)
{
	Orders__InventoryReserved m = ORDERS__INVENTORY_RESERVED__INIT;
	Orders__InventoryReserved *u;
	struct fixture f;
	uint8_t *out;
	size_t len;

	(void)state;
	fixture_init(&f);
	m.envelope = &f.env;
	m.order = &f.order;
	m.card = &f.card;
	out = pack(&m.base, &len);
	u = orders__inventory_reserved__unpack(NULL, len, out);
	assert_non_null(u);
	assert_envelope_equal(u->envelope, &f.env);
	assert_order_equal(u->order, &f.order);
	assert_card_equal(u->card, &f);
	orders__inventory_reserved__free_unpacked(u, NULL);
	free(out);
}

static void test_roundtrip_inventory_rejected(void **state)
{
	Orders__InventoryRejected m = ORDERS__INVENTORY_REJECTED__INIT;
	Orders__InventoryRejected *u;
	struct fixture f;
	uint8_t *out;
	size_t len;

	(void)state;
	fixture_init(&f);
	m.envelope = &f.env;
	m.order = &f.order;
	m.reason = "out_of_stock";
	m.sku = "SKU.blue_2";
	out = pack(&m.base, &len);
	u = orders__inventory_rejected__unpack(NULL, len, out);
	assert_non_null(u);
	assert_envelope_equal(u->envelope, &f.env);
	assert_order_equal(u->order, &f.order);
	assert_string_equal(u->reason, "out_of_stock");
	assert_string_equal(u->sku, "SKU.blue_2");
	orders__inventory_rejected__free_unpacked(u, NULL);
	free(out);
}

static void test_roundtrip_payment_result(void **state)
{
	Orders__PaymentResult m = ORDERS__PAYMENT_RESULT__INIT;
	Orders__PaymentResult *u;
	struct fixture f;
	uint8_t *out;
	size_t len;

	(void)state;
	fixture_init(&f);
	m.envelope = &f.env;
	m.order = &f.order;
	m.authorized = 1;
	m.decline_code = "";
	m.token = "tok_0123456789abcdef";
	m.brand = "visa";
	m.last4 = "4242";
	m.authorization_id = "auth_77";
	out = pack(&m.base, &len);
	u = orders__payment_result__unpack(NULL, len, out);
	assert_non_null(u);
	assert_envelope_equal(u->envelope, &f.env);
	assert_order_equal(u->order, &f.order);
	assert_true(u->authorized);
	assert_string_equal(u->decline_code, "");
	assert_string_equal(u->token, "tok_0123456789abcdef");
	assert_string_equal(u->brand, "visa");
	assert_string_equal(u->last4, "4242");
	assert_string_equal(u->authorization_id, "auth_77");
	orders__payment_result__free_unpacked(u, NULL);
	free(out);

	/* The declined shape: authorized false, a decline code, no token. */
	m.authorized = 0;
	m.decline_code = "insufficient_funds";
	m.token = "";
	m.authorization_id = "";
	out = pack(&m.base, &len);
	u = orders__payment_result__unpack(NULL, len, out);
	assert_non_null(u);
	assert_false(u->authorized);
	assert_string_equal(u->decline_code, "insufficient_funds");
	assert_string_equal(u->token, "");
	orders__payment_result__free_unpacked(u, NULL);
	free(out);
}

static void test_roundtrip_order_event(void **state)
{
	Orders__OrderEvent m = ORDERS__ORDER_EVENT__INIT;
	Orders__OrderEvent *u;
	struct fixture f;
	uint8_t *out;
	size_t len, i;

	(void)state;
	fixture_init(&f);
	m.envelope = &f.env;
	m.seq = 9007199254740993LL; /* past 2^53: an int64 must not go through a double */
	m.event_id = "evt-1";
	m.type = "order.confirmed";
	m.customer_id = "cus_42";
	m.currency = "EUR";
	m.total_cents = -1; /* signed on the wire, even if never negative in practice */
	m.n_lines = 2;
	m.lines = f.lines;
	out = pack(&m.base, &len);
	u = orders__order_event__unpack(NULL, len, out);
	assert_non_null(u);
	assert_envelope_equal(u->envelope, &f.env);
	assert_int_equal(u->seq, 9007199254740993LL);
	assert_string_equal(u->event_id, "evt-1");
	assert_string_equal(u->type, "order.confirmed");
	assert_string_equal(u->customer_id, "cus_42");
	assert_string_equal(u->currency, "EUR");
	assert_int_equal(u->total_cents, -1);
	assert_int_equal(u->n_lines, 2);
	for (i = 0; i < 2; i++)
		assert_line_equal(u->lines[i], f.lines[i]);
	orders__order_event__free_unpacked(u, NULL);
	free(out);
}

/* The building blocks on their own, including Customer, which no top-level message uses. */
static void test_roundtrip_parts(void **state)
{
	Orders__Customer c = ORDERS__CUSTOMER__INIT;
	Orders__Customer *cu;
	Orders__Envelope *eu;
	Orders__Line *lu;
	Orders__Address *au;
	Orders__Order *ou;
	Orders__SealedCard *su;
	struct fixture f;
	uint8_t *out;
	size_t len;

	(void)state;
	fixture_init(&f);

	out = pack(&f.env.base, &len);
	eu = orders__envelope__unpack(NULL, len, out);
	assert_envelope_equal(eu, &f.env);
	orders__envelope__free_unpacked(eu, NULL);
	free(out);

	out = pack(&f.line_a.base, &len);
	lu = orders__line__unpack(NULL, len, out);
	assert_line_equal(lu, &f.line_a);
	orders__line__free_unpacked(lu, NULL);
	free(out);

	c.id = "cus_42";
	c.email = "ada@example.com";
	out = pack(&c.base, &len);
	cu = orders__customer__unpack(NULL, len, out);
	assert_non_null(cu);
	assert_string_equal(cu->id, "cus_42");
	assert_string_equal(cu->email, "ada@example.com");
	orders__customer__free_unpacked(cu, NULL);
	free(out);

	out = pack(&f.addr.base, &len);
	au = orders__address__unpack(NULL, len, out);
	assert_address_equal(au, &f.addr);
	orders__address__free_unpacked(au, NULL);
	free(out);

	out = pack(&f.order.base, &len);
	ou = orders__order__unpack(NULL, len, out);
	assert_order_equal(ou, &f.order);
	orders__order__free_unpacked(ou, NULL);
	free(out);

	out = pack(&f.card.base, &len);
	su = orders__sealed_card__unpack(NULL, len, out);
	assert_card_equal(su, &f);
	orders__sealed_card__free_unpacked(su, NULL);
	free(out);
}

/* An all-default message packs to zero bytes, yet the buffer is a real one. */
static void test_pack_empty(void **state)
{
	Orders__Envelope e = ORDERS__ENVELOPE__INIT;
	Orders__Envelope *u;
	uint8_t *out = NULL;
	size_t len = SENTINEL_LEN;

	(void)state;
	assert_int_equal(proto_pack(&e.base, &out, &len), ERR_OK);
	assert_int_equal(len, 0);
	assert_non_null(out);
	u = orders__envelope__unpack(NULL, len, out);
	assert_non_null(u);
	assert_string_equal(u->message_id, "");
	assert_int_equal(u->occurred_at_ms, 0);
	assert_false(proto_envelope_ok(u));
	orders__envelope__free_unpacked(u, NULL);
	free(out);
}

/* ---- the size limit ------------------------------------------------------ */

/*
 * A SealedCard with only a ciphertext of n bytes packs to 1 (tag) + 3
 * (length varint, for n in [2^14, 2^21)) + n bytes.
 */
static void test_pack_too_big(void **state)
{
	Orders__SealedCard c = ORDERS__SEALED_CARD__INIT;
	Orders__CheckoutRequested m = ORDERS__CHECKOUT_REQUESTED__INIT;
	Orders__SealedCard *u;
	const size_t n = PROTO_MAX_MESSAGE - 4;
	uint8_t *big, *out = SENTINEL_PTR;
	size_t len = SENTINEL_LEN;

	(void)state;
	big = malloc(PROTO_MAX_MESSAGE + 64);
	assert_non_null(big);
	memset(big, 0xab, PROTO_MAX_MESSAGE + 64);

	/* Exactly at the limit: accepted, and it comes back whole. */
	c.ciphertext.data = big;
	c.ciphertext.len = n;
	assert_int_equal(protobuf_c_message_get_packed_size(&c.base), PROTO_MAX_MESSAGE);
	assert_int_equal(proto_pack(&c.base, &out, &len), ERR_OK);
	assert_int_equal(len, PROTO_MAX_MESSAGE);
	u = orders__sealed_card__unpack(NULL, len, out);
	assert_non_null(u);
	assert_bytes_equal(&u->ciphertext, big, n);
	orders__sealed_card__free_unpacked(u, NULL);
	free(out);

	/* One byte over: refused, outputs untouched. */
	out = SENTINEL_PTR;
	len = SENTINEL_LEN;
	c.ciphertext.len = n + 1;
	assert_int_equal(proto_pack(&c.base, &out, &len), ERR_TOO_BIG);
	assert_ptr_equal(out, SENTINEL_PTR);
	assert_int_equal(len, SENTINEL_LEN);

	/* Far over, nested inside a top-level message. */
	c.ciphertext.len = PROTO_MAX_MESSAGE + 64;
	m.card = &c;
	assert_int_equal(proto_pack(&m.base, &out, &len), ERR_TOO_BIG);
	assert_ptr_equal(out, SENTINEL_PTR);
	assert_int_equal(len, SENTINEL_LEN);

	free(big);
}

/* ---- envelopes ----------------------------------------------------------- */

static void test_envelope_set(void **state)
{
	Orders__Envelope e = ORDERS__ENVELOPE__INIT;
	char mid[] = "m-1", oid[] = "o-1", cid[] = "c-1";

	(void)state;
	proto_envelope_set(&e, mid, oid, 1234567890123LL, cid);
	/* Borrowed, not copied. */
	assert_ptr_equal(e.message_id, mid);
	assert_ptr_equal(e.order_id, oid);
	assert_ptr_equal(e.correlation_id, cid);
	assert_int_equal(e.occurred_at_ms, 1234567890123LL);
	assert_ptr_equal(e.base.descriptor, &orders__envelope__descriptor);
}

static void test_envelope_ok(void **state)
{
	Orders__Envelope e = ORDERS__ENVELOPE__INIT;
	char mid[] = "m-1", oid[] = "o-1", empty[] = "";

	(void)state;
	assert_false(proto_envelope_ok(NULL));

	/* The generated INIT points strings at an empty default, not NULL. */
	assert_false(proto_envelope_ok(&e));

	proto_envelope_set(&e, mid, oid, 0, NULL);
	assert_true(proto_envelope_ok(&e)); /* correlation_id and time are optional */

	e.message_id = NULL;
	assert_false(proto_envelope_ok(&e));
	e.message_id = empty;
	assert_false(proto_envelope_ok(&e));
	e.message_id = mid;

	e.order_id = NULL;
	assert_false(proto_envelope_ok(&e));
	e.order_id = empty;
	assert_false(proto_envelope_ok(&e));

	e.message_id = NULL;
	e.order_id = NULL;
	assert_false(proto_envelope_ok(&e));
}

/* A message whose envelope lacks an id on the wire is caught after unpack too. */
static void test_envelope_ok_after_unpack(void **state)
{
	Orders__CheckoutRequested m = ORDERS__CHECKOUT_REQUESTED__INIT;
	Orders__CheckoutRequested *u;
	struct fixture f;
	uint8_t *out;
	size_t len;

	(void)state;
	fixture_init(&f);

	/* No envelope at all. */
	m.order = &f.order;
	out = pack(&m.base, &len);
	u = orders__checkout_requested__unpack(NULL, len, out);
	assert_non_null(u);
	assert_null(u->envelope);
	assert_false(proto_envelope_ok(u->envelope));
	orders__checkout_requested__free_unpacked(u, NULL);
	free(out);

	/* An envelope with an order id but no message id. */
	f.env.message_id = "";
	m.envelope = &f.env;
	out = pack(&m.base, &len);
	u = orders__checkout_requested__unpack(NULL, len, out);
	assert_non_null(u);
	assert_false(proto_envelope_ok(u->envelope));
	orders__checkout_requested__free_unpacked(u, NULL);
	free(out);

	/* Both present. */
	f.env.message_id = "msg-0001";
	out = pack(&m.base, &len);
	u = orders__checkout_requested__unpack(NULL, len, out);
	assert_non_null(u);
	assert_true(proto_envelope_ok(u->envelope));
	orders__checkout_requested__free_unpacked(u, NULL);
	free(out);
}

/* ---- hostile input ------------------------------------------------------- */

/* A varint at p (at most end); its length in bytes, 0 when it runs off the end. */
static size_t skip_varint(const uint8_t *p, const uint8_t *end, uint64_t *v)
{
	size_t i;

	*v = 0;
	for (i = 0; p + i < end && i < 10; i++) {
		*v |= (uint64_t)(p[i] & 0x7f) << (7 * i);
		if (!(p[i] & 0x80))
			return i + 1;
	}
	return 0;
}

/*
 * Mark in boundary[] (len + 1 entries) every offset at which a top-level
 * field ends. Only wire types 0 (varint) and 2 (length-delimited) occur in
 * orders.proto.
 */
static void top_level_boundaries(const uint8_t *data, size_t len, char *boundary)
{
	const uint8_t *p = data, *end = data + len;
	uint64_t tag, n;
	size_t k;

	memset(boundary, 0, len + 1);
	boundary[0] = 1;
	while (p < end) {
		k = skip_varint(p, end, &tag);
		assert_true(k > 0);
		p += k;
		k = skip_varint(p, end, &n);
		assert_true(k > 0);
		p += k;
		if ((tag & 7) == 2)
			p += n;
		else
			assert_int_equal(tag & 7, 0);
		assert_true(p <= end);
		boundary[p - data] = 1;
	}
}

/*
 * Every prefix of a valid encoding: one that stops between two top-level
 * fields is itself a valid (smaller) message; one that stops inside a field
 * must be refused with NULL.
 */
static void test_unpack_truncated(void **state)
{
	Orders__CheckoutRequested m = ORDERS__CHECKOUT_REQUESTED__INIT;
	Orders__CheckoutRequested *u;
	Orders__OrderEvent e = ORDERS__ORDER_EVENT__INIT;
	Orders__OrderEvent *eu;
	struct fixture f;
	uint8_t *out, *copy;
	char *boundary;
	size_t len, n, refused = 0;

	(void)state;
	fixture_init(&f);
	m.envelope = &f.env;
	m.order = &f.order;
	m.card = &f.card;
	out = pack(&m.base, &len);
	boundary = malloc(len + 1);
	assert_non_null(boundary);
	top_level_boundaries(out, len, boundary);
	for (n = 0; n <= len; n++) {
		/* A copy of exactly n bytes, so that ASan sees any read past it. */
		copy = malloc(n ? n : 1);
		assert_non_null(copy);
		memcpy(copy, out, n);
		u = orders__checkout_requested__unpack(NULL, n, copy);
		if (boundary[n]) {
			assert_non_null(u);
		} else {
			assert_null(u);
			refused++;
		}
		orders__checkout_requested__free_unpacked(u, NULL);
		free(copy);
	}
	/* Three submessages of many bytes each: nearly every prefix is cut short. */
	assert_true(refused > len - 8);
	free(boundary);
	free(out);

	/* A top-level varint (seq) cut in the middle. */
	e.seq = INT64_MAX;
	out = pack(&e.base, &len);
	assert_int_equal(len, 10); /* tag + 9 varint bytes */
	for (n = 1; n < len; n++) {
		copy = malloc(n);
		assert_non_null(copy);
		memcpy(copy, out, n);
		eu = orders__order_event__unpack(NULL, n, copy);
		assert_null(eu);
		free(copy);
	}
	free(out);
}

/* xorshift64*: the same "random" bytes on every run, so a failure can be replayed. */
static uint64_t rng_state = 0x9e3779b97f4a7c15ULL;

static uint64_t rng(void)
{
	rng_state ^= rng_state >> 12;
	rng_state ^= rng_state << 25;
	rng_state ^= rng_state >> 27;
	return rng_state * 0x2545f4914f6cdd1dULL;
}

/* Unpack data as every top-level type; each must return NULL or a message that frees. */
static int unpack_all(const uint8_t *data, size_t len)
{
	Orders__CheckoutRequested *a = orders__checkout_requested__unpack(NULL, len, data);
	Orders__InventoryReserved *b = orders__inventory_reserved__unpack(NULL, len, data);
	Orders__InventoryRejected *c = orders__inventory_rejected__unpack(NULL, len, data);
	Orders__PaymentResult *d = orders__payment_result__unpack(NULL, len, data);
	Orders__OrderEvent *e = orders__order_event__unpack(NULL, len, data);
	Orders__Envelope *peeked = NULL;
	int parsed = !!a + !!b + !!c + !!d + !!e;

	/* The envelope peek sees the same bytes; whatever it returns must free. */
	if (proto_envelope_peek(data, len, &peeked) == ERR_OK)
		orders__envelope__free_unpacked(peeked, NULL);

	/* Whatever parsed must also be usable: check and repack it. */
	if (a) {
		uint8_t *out;
		size_t n;

		(void)proto_envelope_ok(a->envelope);
		if (proto_pack(&a->base, &out, &n) == ERR_OK)
			free(out);
	}
	orders__checkout_requested__free_unpacked(a, NULL);
	orders__inventory_reserved__free_unpacked(b, NULL);
	orders__inventory_rejected__free_unpacked(c, NULL);
	orders__payment_result__free_unpacked(d, NULL);
	orders__order_event__free_unpacked(e, NULL);
	return parsed;
}

static void test_unpack_random(void **state)
{
	uint8_t *data;
	size_t len, i;
	int round, refused = 0;

	(void)state;
	for (round = 0; round < FUZZ_ROUNDS; round++) {
		len = (size_t)(rng() % (FUZZ_MAX_LEN + 1));
		data = malloc(len ? len : 1);
		assert_non_null(data);
		for (i = 0; i < len; i++)
			data[i] = (uint8_t)rng();
		if (unpack_all(data, len) == 0)
			refused++;
		free(data);
	}
	/* Random bytes are almost never a valid message. */
	assert_true(refused > FUZZ_ROUNDS / 2);
}

/*
 * A first byte with wire type 3, 4 (groups, not in proto3), 6 or 7 (not
 * defined), or field number 0, can start no valid message: every unpack must
 * refuse it, whatever follows.
 */
static void test_unpack_bad_tag(void **state)
{
	static const uint8_t bad_wire_types[] = {3, 4, 6, 7};
	uint8_t data[32];
	size_t len, i;
	int round;

	(void)state;
	for (round = 0; round < FUZZ_ROUNDS; round++) {
		len = 1 + (size_t)(rng() % sizeof(data));
		for (i = 0; i < len; i++)
			data[i] = (uint8_t)rng();
		if (round % 5 == 0)
			data[0] = (uint8_t)(rng() & 7); /* field number 0 */
		else
			data[0] = (uint8_t)(((1 + rng() % 15) << 3) | bad_wire_types[rng() % 4]);
		assert_int_equal(unpack_all(data, len), 0);
	}
}

/* A valid message with random bytes overwritten: the mutations reach deep fields. */
static void test_unpack_mutated(void **state)
{
	Orders__CheckoutRequested m = ORDERS__CHECKOUT_REQUESTED__INIT;
	struct fixture f;
	uint8_t *out, *copy;
	size_t len, n;
	int round, k, flips;

	(void)state;
	fixture_init(&f);
	m.envelope = &f.env;
	m.order = &f.order;
	m.card = &f.card;
	out = pack(&m.base, &len);
	copy = malloc(len);
	assert_non_null(copy);
	for (round = 0; round < FUZZ_ROUNDS; round++) {
		memcpy(copy, out, len);
		flips = 1 + (int)(rng() % 4);
		for (k = 0; k < flips; k++)
			copy[rng() % len] = (uint8_t)rng();
		/* Sometimes also cut it short. */
		n = round % 3 == 0 ? (size_t)(rng() % (len + 1)) : len;
		unpack_all(copy, n);
	}
	free(copy);
	/* The original still parses: the loop changed only copies. */
	assert_int_equal(unpack_all(out, len) > 0, 1);
	free(out);
}

/* ---- envelope peek -------------------------------------------------------- */

/* Every message type carries its envelope as field 1: the peek finds each. */
static void test_envelope_peek_every_type(void **state)
{
	Orders__CheckoutRequested a = ORDERS__CHECKOUT_REQUESTED__INIT;
	Orders__PaymentResult b = ORDERS__PAYMENT_RESULT__INIT;
	Orders__CartChanged c = ORDERS__CART_CHANGED__INIT;
	Orders__CartCheckedOut d = ORDERS__CART_CHECKED_OUT__INIT;
	const ProtobufCMessage *msgs[4];
	struct fixture f;

	(void)state;
	fixture_init(&f);
	a.envelope = &f.env;
	a.order = &f.order;
	a.card = &f.card;
	b.envelope = &f.env;
	b.order = &f.order;
	b.authorized = 1;
	b.token = "tok_1";
	c.envelope = &f.env;
	c.cart_id = "cart-1";
	c.version = 7;
	d.envelope = &f.env;
	d.cart_id = "cart-2";
	msgs[0] = &a.base;
	msgs[1] = &b.base;
	msgs[2] = &c.base;
	msgs[3] = &d.base;
	for (size_t i = 0; i < 4; i++) {
		Orders__Envelope *env = (Orders__Envelope *)SENTINEL_PTR;
		size_t len;
		uint8_t *out = pack(msgs[i], &len);

		assert_int_equal(proto_envelope_peek(out, len, &env), ERR_OK);
		assert_envelope_equal(env, &f.env);
		orders__envelope__free_unpacked(env, NULL);
		free(out);
	}
}

/* No envelope, garbage, or a message cut short: an error, and *out untouched. */
static void test_envelope_peek_refuses(void **state)
{
	static const uint8_t garbage[] = {0x0a, 0xff, 0xff, 0xff, 0xff, 0x0f, 'x', 'y'};
	static const uint8_t bad_wire[] = {0x0b, 0x01};
	Orders__CartCheckedOut d = ORDERS__CART_CHECKED_OUT__INIT;
	Orders__CheckoutRequested a = ORDERS__CHECKOUT_REQUESTED__INIT;
	Orders__Envelope *env = (Orders__Envelope *)SENTINEL_PTR;
	struct fixture f;
	uint8_t *out;
	size_t len;

	(void)state;
	fixture_init(&f);
	d.cart_id = "cart-without-envelope";
	out = pack(&d.base, &len);
	assert_int_equal(proto_envelope_peek(out, len, &env), ERR_NOT_FOUND);
	free(out);
	assert_int_equal(proto_envelope_peek(NULL, 0, &env), ERR_NOT_FOUND);
	assert_int_equal(proto_envelope_peek(garbage, sizeof(garbage), &env), ERR_PARSE);
	assert_int_equal(proto_envelope_peek(bad_wire, sizeof(bad_wire), &env), ERR_PARSE);
	assert_int_equal(proto_envelope_peek(NULL, 3, &env), ERR_INVALID);
	a.envelope = &f.env;
	a.order = &f.order;
	a.card = &f.card;
	out = pack(&a.base, &len);
	/* Cut inside the envelope (which comes first): its length runs past the end. */
	assert_int_equal(proto_envelope_peek(out, 5, &env), ERR_PARSE);
	free(out);
	assert_ptr_equal(env, SENTINEL_PTR);
}

/*
 * An envelope sent twice is the merge of both to the consumers' decoder;
 * the peek must find that very envelope, not the last one alone. And
 * whatever the decoder takes, the peek takes.
 */
static void test_envelope_peek_merges(void **state)
{
	Orders__CartCheckedOut first = ORDERS__CART_CHECKED_OUT__INIT;
	Orders__CartCheckedOut second = ORDERS__CART_CHECKED_OUT__INIT;
	Orders__Envelope e1 = ORDERS__ENVELOPE__INIT, e2 = ORDERS__ENVELOPE__INIT;
	Orders__Envelope *env = NULL;
	Orders__CartCheckedOut *decoded;
	uint8_t *a, *b, *both;
	size_t alen, blen;

	(void)state;
	proto_envelope_set(&e1, "msg-1", "7b1f3c52-9f0e-4b8e-a7c1-1d2e3f405162", 1735689600123LL,
	                   "req-1");
	e2.message_id = "msg-2";
	first.envelope = &e1;
	first.cart_id = "cart-1";
	second.envelope = &e2;
	a = pack(&first.base, &alen);
	b = pack(&second.base, &blen);
	both = malloc(alen + blen);
	assert_non_null(both);
	memcpy(both, a, alen);
	memcpy(both + alen, b, blen);
	decoded = orders__cart_checked_out__unpack(NULL, alen + blen, both);
	assert_non_null(decoded);
	assert_int_equal(proto_envelope_peek(both, alen + blen, &env), ERR_OK);
	assert_envelope_equal(env, decoded->envelope);
	assert_string_equal(env->message_id, "msg-2");
	orders__envelope__free_unpacked(env, NULL);
	orders__cart_checked_out__free_unpacked(decoded, NULL);
	free(both);

	/* A key for field 0 written in two bytes: protobuf-c takes it, so must the peek. */
	both = malloc(alen + 3);
	assert_non_null(both);
	memcpy(both, a, alen);
	memcpy(both + alen, "\x80\x00\x00", 3);
	decoded = orders__cart_checked_out__unpack(NULL, alen + 3, both);
	assert_non_null(decoded);
	assert_int_equal(proto_envelope_peek(both, alen + 3, &env), ERR_OK);
	assert_envelope_equal(env, decoded->envelope);
	orders__envelope__free_unpacked(env, NULL);
	orders__cart_checked_out__free_unpacked(decoded, NULL);
	free(both);
	free(b);
	free(a);
}

int main(void)
{
	const struct CMUnitTest tests[] = {
	    cmocka_unit_test(test_roundtrip_checkout_requested),
	    cmocka_unit_test(test_roundtrip_inventory_reserved),
	    cmocka_unit_test(test_roundtrip_inventory_rejected),
	    cmocka_unit_test(test_roundtrip_payment_result),
	    cmocka_unit_test(test_roundtrip_order_event),
	    cmocka_unit_test(test_roundtrip_parts),
	    cmocka_unit_test(test_pack_empty),
	    cmocka_unit_test(test_pack_too_big),
	    cmocka_unit_test(test_envelope_set),
	    cmocka_unit_test(test_envelope_ok),
	    cmocka_unit_test(test_envelope_ok_after_unpack),
	    cmocka_unit_test(test_unpack_truncated),
	    cmocka_unit_test(test_unpack_random),
	    cmocka_unit_test(test_unpack_bad_tag),
	    cmocka_unit_test(test_unpack_mutated),
	    cmocka_unit_test(test_envelope_peek_every_type),
	    cmocka_unit_test(test_envelope_peek_refuses),
	    cmocka_unit_test(test_envelope_peek_merges),
	};

	return cmocka_run_group_tests(tests, NULL, NULL);
}
