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

/* Insert the order as 'pending'; *inserted = 0 when it exists already. */
static int insert_order(struct db *db, const Orders__CheckoutRequested *m, int *inserted)
{
	static const char sql[] =
	    "INSERT INTO orders (order_id, client_id, idempotency_key, status, customer_id, "
	    "customer_email, currency, total_cents, shipping, correlation_id, created_at, "
	    "cart_id) "
	    "VALUES ($1::uuid, $2, $3, 'pending', $4, $5, $6, $7::bigint, "
	    "CASE WHEN $8::boolean THEN jsonb_build_object('name', $9::text, "
	    "'line1', $10::text, 'line2', $11::text, 'city', $12::text, "
	    "'postal_code', $13::text, 'country', $14::text) ELSE '{}'::jsonb END, "
	    "$15, CASE WHEN $16::bigint > 0 THEN to_timestamp($16::bigint / 1000.0) "
	    "ELSE now() END, NULLIF($17, '')::uuid) "
	    "ON CONFLICT DO NOTHING RETURNING 1";
	const Orders__Order *o = m->order;
	const Orders__Address *a = o->shipping;
	char total[24], occurred[24];
	const char *p[17];
	PGresult *r = NULL;
	int rc;

	snprintf(total, sizeof(total), "%" PRId64, (int64_t)o->total_cents);
	snprintf(occurred, sizeof(occurred), "%" PRId64, (int64_t)m->envelope->occurred_at_ms);
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
	rc = consume_db_rc(db_exec(db, sql, 17, p, &r));
	if (rc)
		return rc;
	*inserted = PQntuples(r) == 1;
	PQclear(r);
	return ERR_OK;
}

static int insert_lines(struct db *db, const Orders__Order *o, const char *order_id)
{
	static const char sql[] =
	    "INSERT INTO order_lines (order_id, line_no, sku, quantity, unit_price_cents) "
	    "SELECT $1::uuid, t.n, t.sku, t.q, t.p "
	    "FROM unnest($2::text[], $3::int[], $4::bigint[]) WITH ORDINALITY AS t(sku, q, p, n)";
	struct buf skus, qtys, prices;
	const char *p[4];
	size_t i;
	int rc = ERR_OK;

	buf_init(&skus, ARRAY_MAX);
	buf_init(&qtys, ARRAY_MAX);
	buf_init(&prices, ARRAY_MAX);
	rc = buf_append_str(&skus, "{");
	rc = rc ? rc : buf_append_str(&qtys, "{");
	rc = rc ? rc : buf_append_str(&prices, "{");
	for (i = 0; !rc && i < o->n_lines; i++) {
		const Orders__Line *l = o->lines[i];
		const char *sep = i ? "," : "";

		rc = consume_pg_array_add(&skus, l->sku, i == 0);
		rc = rc ? rc : buf_printf(&qtys, "%s%u", sep, (unsigned)l->quantity);
		rc = rc ? rc : buf_printf(&prices, "%s%" PRId64, sep, (int64_t)l->unit_price_cents);
	}
	rc = rc ? rc : buf_append_str(&skus, "}");
	rc = rc ? rc : buf_append_str(&qtys, "}");
	rc = rc ? rc : buf_append_str(&prices, "}");
	if (rc)
		goto out;
	p[0] = order_id;
	p[1] = skus.data;
	p[2] = qtys.data;
	p[3] = prices.data;
	rc = consume_db_rc(db_exec(db, sql, 4, p, NULL));
out:
	buf_release(&skus);
	buf_release(&qtys);
	buf_release(&prices);
	return rc;
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

/*
 * Reserve every need, or none: *short_at = n when all were reserved, else
 * the index of the first need (in SKU order) that the stock cannot cover,
 * with *unknown = 1 when its product does not exist at all. The products
 * are locked (inv_prepare), so what the check reads holds for the update;
 * the update's own guard and the table's constraints back that up.
 */
static int reserve_all(struct db *db, const struct need *needs, size_t n, size_t *short_at,
                       int *unknown)
{
	static const char check_sql[] =
	    "SELECT t.n, p.sku IS NULL, coalesce(p.stock - p.reserved >= t.q, false) "
	    "FROM unnest($1::text[], $2::bigint[]) WITH ORDINALITY AS t(sku, q, n) "
	    "LEFT JOIN products p ON p.sku = t.sku ORDER BY t.n";
	static const char reserve_sql[] =
	    "UPDATE products p SET reserved = p.reserved + t.q, updated_at = now() "
	    "FROM unnest($1::text[], $2::bigint[]) AS t(sku, q) "
	    "WHERE p.sku = t.sku AND p.stock - p.reserved >= t.q";
	struct buf skus, qtys;
	const char *p[2];
	PGresult *r = NULL;
	size_t i;
	int rc;

	buf_init(&skus, ARRAY_MAX);
	buf_init(&qtys, ARRAY_MAX);
	rc = need_arrays(needs, n, &skus, &qtys);
	if (rc)
		goto out;
	p[0] = skus.data;
	p[1] = qtys.data;
	rc = consume_db_rc(db_exec(db, check_sql, 2, p, &r));
	if (rc)
		goto out;
	if ((size_t)PQntuples(r) != n) {
		rc = ERR_DB;
		goto out;
	}
	*short_at = n;
	*unknown = 0;
	for (i = 0; i < n; i++) {
		if (strcmp(PQgetvalue(r, (int)i, 2), "t") != 0) {
			*short_at = i;
			*unknown = strcmp(PQgetvalue(r, (int)i, 1), "t") == 0;
			goto out;
		}
	}
	PQclear(r);
	r = NULL;
	rc = consume_db_rc(db_exec(db, reserve_sql, 2, p, &r));
	if (rc)
		goto out;
	if (strtoul(PQcmdTuples(r), NULL, 10) != n) {
		/* Only a product changed without its lock could do this. */
		log_error("cannot reserve stock: it changed since it was checked");
		rc = ERR_DB;
	}
out:
	PQclear(r);
	buf_release(&skus);
	buf_release(&qtys);
	return rc;
}

static int insert_reservations(struct db *db, const char *order_id, const struct need *needs,
                               size_t n, int ttl_s)
{
	static const char sql[] =
	    "INSERT INTO reservations (order_id, sku, quantity, expires_at) "
	    "SELECT $1::uuid, t.sku, t.q, now() + $4::int * interval '1 second' "
	    "FROM unnest($2::text[], $3::int[]) AS t(sku, q) ON CONFLICT DO NOTHING";
	struct buf skus, qtys;
	char ttl[16];
	const char *p[4];
	int rc;

	buf_init(&skus, ARRAY_MAX);
	buf_init(&qtys, ARRAY_MAX);
	rc = need_arrays(needs, n, &skus, &qtys);
	if (rc)
		goto out;
	snprintf(ttl, sizeof(ttl), "%d", ttl_s);
	p[0] = order_id;
	p[1] = skus.data;
	p[2] = qtys.data;
	p[3] = ttl;
	rc = consume_db_rc(db_exec(db, sql, 4, p, NULL));
out:
	buf_release(&skus);
	buf_release(&qtys);
	return rc;
}

static int inv_process(void *state, struct db *db, const struct consume_input *in,
                       struct consume_result *res)
{
	static const char status_sql[] =
	    "UPDATE orders SET status = 'reserved', updated_at = now() "
	    "WHERE order_id = $1::uuid AND status = 'pending'";
	struct inventory *inv = state;
	Orders__CheckoutRequested *m = in->msg;
	const char *order_id = in->order_id;
	struct need needs[100];
	size_t n, short_at = 0;
	int rc, inserted = 0, unknown = 0;

	rc = insert_order(db, m, &inserted);
	if (rc)
		return rc;
	if (!inserted) {
		/* The same order id again: a replayed checkout, already under way. */
		log_info("order exists already, ignoring the repeated checkout",
		         LF_STR("message_id", in->message_id), LF_STR("order_id", order_id));
		snprintf(res->outcome, sizeof(res->outcome), "duplicate");
		return ERR_OK;
	}
	rc = insert_lines(db, m->order, order_id);
	if (rc)
		return rc;

	n = merge_lines(m->order, needs);
	rc = reserve_all(db, needs, n, &short_at, &unknown);
	if (rc)
		return rc;
	if (short_at < n) {
		const char *reason = unknown ? "unknown_sku" : "out_of_stock";
		const char *sku = needs[short_at].sku;

		/* Nothing was reserved; the order stays pending. */
		snprintf(res->outcome, sizeof(res->outcome), "rejected:%s:%s", reason, sku);
		return build_rejected(m, in, reason, sku, res);
	}
	rc = insert_reservations(db, order_id, needs, n, inv->reservation_ttl_s);
	if (rc)
		return rc;
	rc = consume_db_rc(db_exec(db, status_sql, 1, &order_id, NULL));
	if (rc)
		return rc;
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
	static const char sql[] = "SELECT 1 FROM products WHERE sku = ANY ($1::text[]) "
	                          "ORDER BY sku COLLATE \"C\" FOR UPDATE";
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
	rc = consume_lock_all(db, sql, skus, k);
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
