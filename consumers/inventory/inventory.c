/* inventory.c: records each checkout as an order and reserves its stock, or rejects it. */
#include "inventory.h"

#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "buf.h"
#include "err.h"
#include "log.h"

#define ARRAY_MAX (64 * 1024)
#define DEFAULT_TTL_S 900

struct inventory {
	int reservation_ttl_s;
};

/* One SKU of an order with its quantities summed over every line. */
struct need {
	const char *sku;
	long qty;
};

static const char *str(const char *s)
{
	return s ? s : "";
}

static int inv_init(const struct config *cfg, void **state)
{
	struct inventory *inv = calloc(1, sizeof(*inv));

	if (!inv)
		return ERR_NOMEM;
	inv->reservation_ttl_s =
	    cfg->reservation_ttl_s > 0 ? cfg->reservation_ttl_s : DEFAULT_TTL_S;
	*state = inv;
	return ERR_OK;
}

static void inv_fini(void *state)
{
	free(state);
}

static void inv_msg_free(void *msg)
{
	if (msg)
		orders__checkout_requested__free_unpacked(msg, NULL);
}

static int inv_decode(void *state, struct consume_input *in)
{
	Orders__CheckoutRequested *m;
	const char *why;

	(void)state;
	m = orders__checkout_requested__unpack(NULL, in->len, in->body);
	if (!m) {
		log_error("cannot unpack checkout.requested", LF_STR("message_id", in->message_id));
		return ERR_PARSE;
	}
	why = consume_envelope_problem(m->envelope);
	if (!why)
		why = consume_order_problem(m->order);
	if (!why)
		why = consume_card_problem(m->card);
	if (why) {
		log_error("cannot accept checkout", LF_STR("message_id", in->message_id),
		          LF_STR("reason", why));
		orders__checkout_requested__free_unpacked(m, NULL);
		return ERR_INVALID;
	}
	in->msg = m;
	in->order_id = m->envelope->order_id;
	in->correlation_id = m->envelope->correlation_id;
	return ERR_OK;
}

/* ---- outgoing messages --------------------------------------------------- */

static void envelope_for(Orders__Envelope *env, const Orders__CheckoutRequested *m,
                         const struct consume_input *in)
{
	proto_envelope_set(env, (char *)in->out_message_id, m->envelope->order_id, in->processed_ms,
	                   m->envelope->correlation_id);
}

static int pack_into(const ProtobufCMessage *msg, const char *routing_key,
                     struct consume_result *res)
{
	int rc = proto_pack(msg, &res->body, &res->len);

	/* Too big can only get bigger on a retry: that is poison. */
	if (rc == ERR_TOO_BIG)
		return ERR_INVALID;
	if (rc)
		return rc;
	res->exchange = MQ_EXCHANGE_ORDERS;
	snprintf(res->routing_key, sizeof(res->routing_key), "%s", routing_key);
	return ERR_OK;
}

static int build_reserved(Orders__CheckoutRequested *m, const struct consume_input *in,
                          struct consume_result *res)
{
	Orders__InventoryReserved out = ORDERS__INVENTORY_RESERVED__INIT;
	Orders__Envelope env = ORDERS__ENVELOPE__INIT;

	envelope_for(&env, m, in);
	out.envelope = &env;
	out.order = m->order;
	out.card = m->card;
	return pack_into(&out.base, MQ_KEY_INVENTORY_RESERVED, res);
}

static int build_rejected(Orders__CheckoutRequested *m, const struct consume_input *in,
                          const char *reason, const char *sku, struct consume_result *res)
{
	Orders__InventoryRejected out = ORDERS__INVENTORY_REJECTED__INIT;
	Orders__Envelope env = ORDERS__ENVELOPE__INIT;

	envelope_for(&env, m, in);
	out.envelope = &env;
	out.order = m->order;
	out.reason = (char *)reason;
	out.sku = (char *)sku;
	return pack_into(&out.base, MQ_KEY_INVENTORY_REJECTED, res);
}

/* ---- processing ---------------------------------------------------------- */

static int need_cmp(const void *a, const void *b)
{
	return strcmp(((const struct need *)a)->sku, ((const struct need *)b)->sku);
}

/* The order's SKUs, merged and in byte order (the lock order). Returns the count. */
static size_t merge_lines(const Orders__Order *o, struct need *needs)
{
	size_t i, n = 0;

	for (i = 0; i < o->n_lines; i++) {
		needs[i].sku = o->lines[i]->sku;
		needs[i].qty = (long)o->lines[i]->quantity;
	}
	qsort(needs, o->n_lines, sizeof(*needs), need_cmp);
	for (i = 0; i < o->n_lines; i++) {
		if (n > 0 && strcmp(needs[n - 1].sku, needs[i].sku) == 0)
			needs[n - 1].qty += needs[i].qty;
		else
			needs[n++] = needs[i];
	}
	return n;
}

/*
 * The whole of an order's work, in one statement: check its needs (merged
 * per SKU, in SKU order) against the stock; insert the order with its
 * lines, 'reserved' when every need is covered, else 'pending' (the order
 * consumer rejects it); and only when both the order is new and every need
 * is covered, reserve them all on the products and record the
 * reservations. The products are locked (inv_prepare), so what the check
 * reads holds for the update; the update's own guard and the table's
 * constraints back that up. Every part sees the same snapshot, the one
 * after the batch's earlier orders. An order id that exists already
 * (ON CONFLICT DO NOTHING) changes nothing at all.
 *
 * Row: 1 or 0 orders inserted; the 1-based number of the first need not
 * covered (NULL when all are); whether its product is unknown; the
 * products reserved.
 */
static const struct db_stmt record_st = {
    "inventory.record_order",
    "WITH need AS (SELECT t.sku, t.q, t.n "
    "FROM unnest($21::text[], $22::bigint[]) WITH ORDINALITY AS t(sku, q, n)), "
    "short AS (SELECT need.n, p.sku IS NULL AS unknown FROM need "
    "LEFT JOIN products p ON p.sku = need.sku "
    "WHERE NOT coalesce(p.stock - p.reserved >= need.q, false) ORDER BY need.n LIMIT 1), "
    "o AS (INSERT INTO orders (order_id, client_id, idempotency_key, status, customer_id, "
    "customer_email, currency, total_cents, shipping, correlation_id, created_at, cart_id) "
    "VALUES ($1::uuid, $2, $3, "
    "CASE WHEN EXISTS (SELECT 1 FROM short) THEN 'pending' ELSE 'reserved' END, "
    "$4, $5, $6, $7::bigint, "
    "CASE WHEN $8::boolean THEN jsonb_build_object('name', $9::text, "
    "'line1', $10::text, 'line2', $11::text, 'city', $12::text, "
    "'postal_code', $13::text, 'country', $14::text) ELSE '{}'::jsonb END, "
    "$15, CASE WHEN $16::bigint > 0 THEN to_timestamp($16::bigint / 1000.0) "
    "ELSE now() END, NULLIF($17, '')::uuid) "
    "ON CONFLICT DO NOTHING RETURNING order_id), "
    "lines AS (INSERT INTO order_lines (order_id, line_no, sku, quantity, unit_price_cents) "
    "SELECT o.order_id, t.n, t.sku, t.q, t.p FROM o, "
    "unnest($18::text[], $19::int[], $20::bigint[]) WITH ORDINALITY AS t(sku, q, p, n)), "
    "reserved AS (UPDATE products p SET reserved = p.reserved + need.q, updated_at = now() "
    "FROM need WHERE p.sku = need.sku AND p.stock - p.reserved >= need.q "
    "AND EXISTS (SELECT 1 FROM o) AND NOT EXISTS (SELECT 1 FROM short) RETURNING 1), "
    "held AS (INSERT INTO reservations (order_id, sku, quantity, expires_at) "
    "SELECT o.order_id, need.sku, need.q, now() + $23::int * interval '1 second' "
    "FROM o, need WHERE NOT EXISTS (SELECT 1 FROM short) ON CONFLICT DO NOTHING) "
    "SELECT (SELECT count(*) FROM o), (SELECT n FROM short), "
    "(SELECT unknown FROM short), (SELECT count(*) FROM reserved)"};

/* The order's lines as three PostgreSQL array literals: SKUs, quantities, prices. */
static int line_arrays(const Orders__Order *o, struct buf *skus, struct buf *qtys,
                       struct buf *prices)
{
	size_t i;
	int rc;

	rc = buf_append_str(skus, "{");
	rc = rc ? rc : buf_append_str(qtys, "{");
	rc = rc ? rc : buf_append_str(prices, "{");
	for (i = 0; !rc && i < o->n_lines; i++) {
		const Orders__Line *l = o->lines[i];
		const char *sep = i ? "," : "";

		rc = consume_pg_array_add(skus, l->sku, i == 0);
		rc = rc ? rc : buf_printf(qtys, "%s%u", sep, (unsigned)l->quantity);
		rc = rc ? rc : buf_printf(prices, "%s%" PRId64, sep, (int64_t)l->unit_price_cents);
	}
	rc = rc ? rc : buf_append_str(skus, "}");
	rc = rc ? rc : buf_append_str(qtys, "}");
	return rc ? rc : buf_append_str(prices, "}");
}

/* The needs as two PostgreSQL array literals: SKUs into skus, quantities into qtys. */
static int need_arrays(const struct need *needs, size_t n, struct buf *skus, struct buf *qtys)
{
	size_t i;
	int rc;

	rc = buf_append_str(skus, "{");
	rc = rc ? rc : buf_append_str(qtys, "{");
	for (i = 0; !rc && i < n; i++) {
		rc = consume_pg_array_add(skus, needs[i].sku, i == 0);
		rc = rc ? rc : buf_printf(qtys, "%s%ld", i ? "," : "", needs[i].qty);
	}
	rc = rc ? rc : buf_append_str(skus, "}");
	return rc ? rc : buf_append_str(qtys, "}");
}

/* What record_order() did. */
struct recorded {
	int inserted;    /* 0: the order existed already, nothing was done */
	size_t short_at; /* the first need not covered (nothing reserved), or n */
	int unknown;     /* its product does not exist */
};

/* Run record_st for the order of m with its n merged needs (see there). */
static int record_order(struct db *db, const Orders__CheckoutRequested *m, const struct need *needs,
                        size_t n, int ttl_s, struct recorded *out)
{
	enum { B_LSKU, B_LQTY, B_LPRICE, B_NSKU, B_NQTY, B_N };
	const Orders__Order *o = m->order;
	const Orders__Address *a = o->shipping;
	char total[24], occurred[24], ttl[16];
	struct buf b[B_N];
	const char *p[23];
	PGresult *r = NULL;
	size_t i;
	int rc;

	for (i = 0; i < B_N; i++)
		buf_init(&b[i], ARRAY_MAX);
	rc = line_arrays(o, &b[B_LSKU], &b[B_LQTY], &b[B_LPRICE]);
	rc = rc ? rc : need_arrays(needs, n, &b[B_NSKU], &b[B_NQTY]);
	if (rc)
		goto out;
	snprintf(total, sizeof(total), "%" PRId64, (int64_t)o->total_cents);
	snprintf(occurred, sizeof(occurred), "%" PRId64, (int64_t)m->envelope->occurred_at_ms);
	snprintf(ttl, sizeof(ttl), "%d", ttl_s);
	p[0] = m->envelope->order_id;
	p[1] = str(o->client_id);
	p[2] = str(o->idempotency_key);
	p[3] = str(o->customer_id);
	p[4] = str(o->customer_email);
	p[5] = o->currency;
	p[6] = total;
	p[7] = a ? "true" : "false";
	p[8] = a ? str(a->name) : NULL;
	p[9] = a ? str(a->line1) : NULL;
	p[10] = a ? str(a->line2) : NULL;
	p[11] = a ? str(a->city) : NULL;
	p[12] = a ? str(a->postal_code) : NULL;
	p[13] = a ? str(a->country) : NULL;
	p[14] = str(m->envelope->correlation_id);
	p[15] = occurred;
	p[16] = str(o->cart_id);
	p[17] = b[B_LSKU].data;
	p[18] = b[B_LQTY].data;
	p[19] = b[B_LPRICE].data;
	p[20] = b[B_NSKU].data;
	p[21] = b[B_NQTY].data;
	p[22] = ttl;
	rc = consume_db_rc(db_exec_stmt(db, &record_st, 23, p, &r));
	if (rc)
		goto out;
	if (PQntuples(r) != 1) {
		rc = ERR_DB;
		goto out;
	}
	out->inserted = strcmp(PQgetvalue(r, 0, 0), "1") == 0;
	out->short_at = n;
	out->unknown = 0;
	if (!PQgetisnull(r, 0, 1)) {
		unsigned long k = strtoul(PQgetvalue(r, 0, 1), NULL, 10);

		if (k < 1 || k > n) {
			rc = ERR_DB;
			goto out;
		}
		out->short_at = k - 1;
		out->unknown = strcmp(PQgetvalue(r, 0, 2), "t") == 0;
	}
	if (out->inserted && out->short_at == n && strtoul(PQgetvalue(r, 0, 3), NULL, 10) != n) {
		/* Only a product changed without its lock could do this. */
		log_error("cannot reserve stock: it changed since it was checked");
		rc = ERR_DB;
	}
out:
	PQclear(r);
	for (i = 0; i < B_N; i++)
		buf_release(&b[i]);
	return rc;
}

static int inv_process(void *state, struct db *db, const struct consume_input *in,
                       struct consume_result *res)
{
	struct inventory *inv = state;
	Orders__CheckoutRequested *m = in->msg;
	struct need needs[100];
	struct recorded rec = {0};
	size_t n;
	int rc;

	n = merge_lines(m->order, needs);
	rc = record_order(db, m, needs, n, inv->reservation_ttl_s, &rec);
	if (rc)
		return rc;
	if (!rec.inserted) {
		/* The same order id again: a replayed checkout, already under way. */
		log_info("order exists already, ignoring the repeated checkout",
		         LF_STR("message_id", in->message_id), LF_STR("order_id", in->order_id));
		snprintf(res->outcome, sizeof(res->outcome), "duplicate");
		return ERR_OK;
	}
	if (rec.short_at < n) {
		const char *reason = rec.unknown ? "unknown_sku" : "out_of_stock";
		const char *sku = needs[rec.short_at].sku;

		/* Nothing was reserved; the order stays pending. */
		snprintf(res->outcome, sizeof(res->outcome), "rejected:%s:%s", reason, sku);
		return build_rejected(m, in, reason, sku, res);
	}
	snprintf(res->outcome, sizeof(res->outcome), "reserved");
	return build_reserved(m, in, res);
}

/*
 * Lock every product the batch's orders name, in SKU byte order, before any
 * order reserves: reserving order by order would lock them out of order
 * across the batch and could deadlock with another consumer's batch.
 */
static int inv_prepare(void *state, struct db *db, const struct consume_input *const *in, size_t n)
{
	static const struct db_stmt st = {"inventory.lock_products",
	                                  "SELECT 1 FROM products WHERE sku = ANY ($1::text[]) "
	                                  "ORDER BY sku COLLATE \"C\" FOR UPDATE"};
	const char **skus;
	size_t i, j, k = 0, max = 0;
	int rc;

	(void)state;
	for (i = 0; i < n; i++)
		max += ((const Orders__CheckoutRequested *)in[i]->msg)->order->n_lines;
	skus = malloc((max ? max : 1) * sizeof(*skus));
	if (!skus)
		return ERR_NOMEM;
	for (i = 0; i < n; i++) {
		const Orders__Order *o = ((const Orders__CheckoutRequested *)in[i]->msg)->order;

		for (j = 0; j < o->n_lines; j++)
			skus[k++] = o->lines[j]->sku;
	}
	rc = consume_lock_all(db, &st, skus, k);
	free(skus);
	return rc;
}

static int inv_replay(void *state, const struct consume_input *in, const char *outcome,
                      struct consume_result *res)
{
	Orders__CheckoutRequested *m = in->msg;
	char reason[32], sku[80];

	(void)state;
	if (strcmp(outcome, "duplicate") == 0)
		return ERR_OK;
	if (strcmp(outcome, "reserved") == 0)
		return build_reserved(m, in, res);
	if (strncmp(outcome, "rejected:", 9) == 0 && consume_field_count(outcome) == 3 &&
	    consume_field(outcome, 1, reason, sizeof(reason)) == ERR_OK &&
	    consume_field(outcome, 2, sku, sizeof(sku)) == ERR_OK)
		return build_rejected(m, in, reason, sku, res);
	return ERR_PARSE;
}

const struct consume_handler inventory_handler = {
    .name = "inventory",
    .queue = MQ_QUEUE_INVENTORY,
    .default_port = 9101,
    .init = inv_init,
    .fini = inv_fini,
    .decode = inv_decode,
    .msg_free = inv_msg_free,
    .process = inv_process,
    .replay = inv_replay,
    .prepare = inv_prepare,
};
