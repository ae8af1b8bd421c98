/* order.c: sets each order's final status together with its finance event. */
#include "order.h"

#include <inttypes.h>
#include <jansson.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "buf.h"
#include "err.h"
#include "gateway.h"
#include "log.h"

/* The expiry sweeper runs this often, on the loop's thread. */
#define EXPIRE_TICK_MS 1000
/* Orders expired, and pending events published, per transaction. */
#define EXPIRE_BATCH 100
/* An order has at most this many lines (consume_order_problem). */
#define LINES_MAX 100
/* A PostgreSQL array literal of EXPIRE_BATCH quoted UUIDs. */
#define ID_ARRAY_MAX (EXPIRE_BATCH * (IDS_UUID_LEN + 3) + 3)
/* The completion sweep runs this often (on the same tick), EXPIRE_BATCH at a time. */
#define FINALIZE_EVERY_MS 2000
/* The leftover-authorization safety net runs this often. */
#define VOID_EVERY_MS 20000
/* A sweep that keeps failing says so at most this often. */
#define SWEEP_WARN_EVERY_S 10
/* What a cart.checked_out's message id is derived from, with the order id. */
#define CART_CHECKED_OUT_ID_PART "order.cart_checked_out"

/*
 * SQL: the payment of order o has been decided, for good: payment-consumer
 * recorded an authorization or a decline (payments), or declined an
 * invalid card, which it records in its inbox only.
 */
#define PAYMENT_DECIDED                                                                            \
	"(EXISTS (SELECT 1 FROM payments p WHERE p.order_id = o.order_id) "                        \
	"OR EXISTS (SELECT 1 FROM inbox i WHERE i.order_id = o.order_id "                          \
	"AND i.consumer = 'payment' AND i.outcome LIKE 'declined:%'))"

enum order_kind { KIND_REJECTED, KIND_AUTHORIZED, KIND_DECLINED, KIND_EXPIRED };

struct order_state {
	/* Voids the authorization of an order that will never be confirmed. */
	struct gateway *gateway;
	/* ORDERS_FINALIZE_GRACE_S, as text for the SQL. */
	char grace_s[16];
	/* How far back a leftover authorization can have been made, in seconds:
	 * a charge comes at most a reservation's life after its order. */
	char void_window_s[24];
	int64_t next_finalize_ms;
	int64_t next_void_ms;
	/* The sweeps run every tick: while one fails (PostgreSQL down), it
	 * says so at most every SWEEP_WARN_EVERY_S. */
	struct log_throttle expire_warn, finalize_warn;
};

/* What a sweep says: failed (throttled while it keeps failing), or working again. */
static void sweep_said(struct log_throttle *t, int rc, const char *failed, const char *again)
{
	long held;

	if (rc && log_throttle_due(t, SWEEP_WARN_EVERY_S, &held))
		log_warn(failed, LF_STR("error", err_str(rc)), LF_INT("warnings_suppressed", held));
	else if (!rc && log_throttle_clear(t, &held))
		log_info(again, LF_INT("warnings_suppressed", held));
}

/* The decoded input: one of two message types, seen through common fields. */
struct order_msg {
	enum order_kind kind;
	Orders__InventoryRejected *rejected;
	Orders__PaymentResult *payment;
	Orders__Envelope *env;
	Orders__Order *order;
};

static const char *const event_types[] = {
    [KIND_REJECTED] = "order.rejected",
    [KIND_AUTHORIZED] = "order.confirmed",
    [KIND_DECLINED] = "order.payment_failed",
    [KIND_EXPIRED] = "order.expired",
};

static int order_init(const struct config *cfg, void **state)
{
	struct order_state *st = calloc(1, sizeof(*st));

	if (!st)
		return ERR_NOMEM;
	st->gateway = gateway_new(cfg->pg_dsn, cfg->gateway_latency_ms);
	if (!st->gateway) {
		free(st);
		return ERR_NOMEM;
	}
	snprintf(st->grace_s, sizeof(st->grace_s), "%d", cfg->finalize_grace_s);
	snprintf(st->void_window_s, sizeof(st->void_window_s), "%lld",
	         (long long)cfg->reservation_ttl_s + 2LL * cfg->finalize_grace_s + 3600);
	*state = st;
	return ERR_OK;
}

static void order_fini(void *state)
{
	struct order_state *st = state;

	if (!st)
		return;
	gateway_free(st->gateway);
	free(st);
}

static void order_msg_free(void *p)
{
	struct order_msg *om = p;

	if (!om)
		return;
	if (om->rejected)
		orders__inventory_rejected__free_unpacked(om->rejected, NULL);
	if (om->payment)
		orders__payment_result__free_unpacked(om->payment, NULL);
	free(om);
}

/* Decline codes become failure_reason, shown to clients: keep them tame. */
static int code_ok(const char *s)
{
	size_t i;

	if (!s || !s[0])
		return 0;
	for (i = 0; s[i]; i++) {
		if (i >= 64 ||
		    !((s[i] >= 'a' && s[i] <= 'z') || (s[i] >= '0' && s[i] <= '9') || s[i] == '_'))
			return 0;
	}
	return 1;
}

static const char *check_payment(const Orders__PaymentResult *p, int authorized_key)
{
	if (!!p->authorized != authorized_key)
		return "authorized flag does not match the routing key";
	if (!authorized_key && !code_ok(p->decline_code))
		return "decline_code does not match ^[a-z0-9_]{1,64}$";
	return NULL;
}

static int order_decode(void *state, struct consume_input *in)
{
	struct order_msg *om;
	const char *why = NULL;

	(void)state;
	om = calloc(1, sizeof(*om));
	if (!om)
		return ERR_NOMEM;
	if (strcmp(in->routing_key, MQ_KEY_INVENTORY_REJECTED) == 0) {
		om->kind = KIND_REJECTED;
		om->rejected = orders__inventory_rejected__unpack(NULL, in->len, in->body);
		if (om->rejected) {
			om->env = om->rejected->envelope;
			om->order = om->rejected->order;
		}
	} else if (strcmp(in->routing_key, MQ_KEY_PAYMENT_AUTHORIZED) == 0 ||
	           strcmp(in->routing_key, MQ_KEY_PAYMENT_DECLINED) == 0) {
		int authorized = strcmp(in->routing_key, MQ_KEY_PAYMENT_AUTHORIZED) == 0;

		om->kind = authorized ? KIND_AUTHORIZED : KIND_DECLINED;
		om->payment = orders__payment_result__unpack(NULL, in->len, in->body);
		if (om->payment) {
			om->env = om->payment->envelope;
			om->order = om->payment->order;
			why = check_payment(om->payment, authorized);
		}
	} else {
		why = "unexpected routing key";
	}
	if (!why && !om->rejected && !om->payment) {
		log_error("cannot unpack message", LF_STR("message_id", in->message_id),
		          LF_STR("routing_key", in->routing_key));
		order_msg_free(om);
		return ERR_PARSE;
	}
	if (!why)
		why = consume_envelope_problem(om->env);
	if (!why)
		why = consume_order_problem(om->order);
	if (why) {
		log_error("cannot accept message", LF_STR("message_id", in->message_id),
		          LF_STR("routing_key", in->routing_key), LF_STR("reason", why));
		order_msg_free(om);
		return ERR_INVALID;
	}
	in->msg = om;
	in->order_id = om->env->order_id;
	in->correlation_id = om->env->correlation_id;
	return ERR_OK;
}

/* ---- outgoing message ---------------------------------------------------- */

static int build_event(const struct order_msg *om, const struct consume_input *in, int64_t seq,
                       const char *event_id, const char *type, struct consume_result *res)
{
	Orders__OrderEvent out = ORDERS__ORDER_EVENT__INIT;
	Orders__Envelope env = ORDERS__ENVELOPE__INIT;
	int rc;

	proto_envelope_set(&env, (char *)in->out_message_id, om->env->order_id, in->processed_ms,
	                   om->env->correlation_id);
	out.envelope = &env;
	out.seq = seq;
	out.event_id = (char *)event_id;
	out.type = (char *)type;
	out.customer_id = om->order->customer_id;
	out.currency = om->order->currency;
	out.total_cents = om->order->total_cents;
	out.n_lines = om->order->n_lines;
	out.lines = om->order->lines;
	rc = proto_pack(&out.base, &res->body, &res->len);
	if (rc)
		return rc == ERR_TOO_BIG ? ERR_INVALID : rc;
	res->exchange = MQ_EXCHANGE_EVENTS;
	snprintf(res->routing_key, sizeof(res->routing_key), "%s", type);
	return ERR_OK;
}

/*
 * The cart.checked_out for a confirmed order made from cart_id, into out:
 * the work message that tells cart-consumer. Its message id
 * stands for the fact (this order checked that cart out), so the message
 * handler and the completion sweep, and every replay of either, publish the
 * very same message.
 */
static int build_cart_checked_out(const char *order_id, const char *cart_id, int64_t at_ms,
                                  const char *correlation_id, struct consume_extra *out)
{
	Orders__CartCheckedOut m = ORDERS__CART_CHECKED_OUT__INIT;
	Orders__Envelope env = ORDERS__ENVELOPE__INIT;
	char message_id[IDS_UUID_LEN + 1];
	int rc;

	consume_derived_id(CART_CHECKED_OUT_ID_PART, order_id, message_id);
	proto_envelope_set(&env, message_id, (char *)order_id, at_ms, (char *)correlation_id);
	m.envelope = &env;
	m.cart_id = (char *)cart_id;
	rc = proto_pack(&m.base, &out->body, &out->len);
	if (rc)
		return rc == ERR_TOO_BIG ? ERR_INVALID : rc;
	memcpy(out->message_id, message_id, sizeof(out->message_id));
	out->exchange = MQ_EXCHANGE_ORDERS;
	snprintf(out->routing_key, sizeof(out->routing_key), "%s", MQ_KEY_CART_CHECKED_OUT);
	return ERR_OK;
}

/* 1 when the order was made from a cart and kind confirms it: cart-consumer must hear. */
static int tells_cart(const Orders__Order *o, enum order_kind kind)
{
	return kind == KIND_AUTHORIZED && o->cart_id && o->cart_id[0];
}

/*
 * What the handler publishes for a status it set: the finance event, and
 * for a confirmed order made from a cart the cart.checked_out beside it.
 * process() and replay() both come here, so a replay is the same messages.
 */
static int build_outgoing(const struct order_msg *om, const struct consume_input *in, int64_t seq,
                          const char *event_id, const char *type, struct consume_result *res)
{
	int rc = build_event(om, in, seq, event_id, type, res);

	if (rc || !tells_cart(om->order, om->kind))
		return rc;
	return build_cart_checked_out(om->env->order_id, om->order->cart_id, in->processed_ms,
	                              om->env->correlation_id, &res->extra);
}

/* ---- processing ---------------------------------------------------------- */

/*
 * SQL: the tail of a settle statement whose CTE s has moved the order (its
 * order_id): its held reservations (CTE held) settled, every product by
 * products_set, every reservation to state; the row says how many orders
 * moved (0 or 1).
 */
#define SETTLE_HELD(products_set, state)                                                           \
	"held AS (SELECT r.sku, r.quantity FROM reservations r JOIN s ON r.order_id = s.order_id " \
	"WHERE r.state = 'held'), "                                                                \
	"debited AS (UPDATE products p SET " products_set ", updated_at = now() FROM held "        \
	"WHERE p.sku = held.sku), "                                                                \
	"settled AS (UPDATE reservations r SET state = '" state "', updated_at = now() FROM s "    \
	"WHERE r.order_id = s.order_id AND r.state = 'held') "                                     \
	"SELECT count(*) FROM s"

/* Committed: stock and reserved both go down. Released: reserved goes down. */
#define SETTLE_COMMIT                                                                              \
	SETTLE_HELD("stock = p.stock - held.quantity, "                                            \
	            "reserved = p.reserved - held.quantity",                                       \
	            "committed")
#define SETTLE_RELEASE SETTLE_HELD("reserved = p.reserved - held.quantity", "released")

/* One statement per kind: see settle_order. $1 the order, $2 the decline code. */
static const struct db_stmt settle_st[] = {
    [KIND_REJECTED] = {"order.settle_rejected",
                       "WITH s AS (UPDATE orders SET status = 'rejected', "
                       "failure_reason = 'out_of_stock', updated_at = now() "
                       "WHERE order_id = $1::uuid AND status = 'pending' RETURNING order_id) "
                       "SELECT count(*) FROM s"},
    [KIND_AUTHORIZED] = {"order.settle_confirmed",
                         "WITH s AS (UPDATE orders SET status = 'confirmed', updated_at = now() "
                         "WHERE order_id = $1::uuid AND status = 'reserved' "
                         "RETURNING order_id), " SETTLE_COMMIT},
    [KIND_DECLINED] = {"order.settle_payment_failed",
                       "WITH s AS (UPDATE orders SET status = 'payment_failed', "
                       "failure_reason = $2, updated_at = now() "
                       "WHERE order_id = $1::uuid AND status = 'reserved' "
                       "RETURNING order_id), " SETTLE_RELEASE},
    [KIND_EXPIRED] = {"order.settle_expired",
                      "WITH s AS (UPDATE orders SET status = 'expired', "
                      "failure_reason = 'reservation_expired', updated_at = now() "
                      "WHERE order_id = $1::uuid AND status = 'reserved' "
                      "RETURNING order_id), " SETTLE_RELEASE},
};

/*
 * Move the order to kind's final status, in the caller's transaction and
 * in one statement: the guarded status change, and with it the order's
 * held reservations settled (committed for a confirmation, released for a
 * decline or an expiry; a rejected order holds none). Every final status
 * is set here, by the message handler and by both sweeps alike, so they
 * cannot differ; each then appends the event. code is the decline's
 * failure_reason. *moved = 0, with nothing done, when the order was not in
 * the state kind moves it from (it is final already).
 *
 * The guard in the WHERE is what makes every later attempt a no-op:
 * PostgreSQL re-checks it on the newest version of the row once a
 * concurrent change has committed. The caller has locked the order and
 * then the products it holds, in SKU byte order (order_prepare,
 * lock_batch_products), as everyone does against deadlocks: the products'
 * update waits for no lock, and no reservation of a locked order changes
 * meanwhile.
 */
static int settle_order(struct db *db, enum order_kind kind, const char *order_id, const char *code,
                        int *moved)
{
	const char *p[2] = {order_id, code};
	PGresult *r = NULL;
	int rc;

	rc =
	    consume_db_rc(db_exec_stmt(db, &settle_st[kind], kind == KIND_DECLINED ? 2 : 1, p, &r));
	if (rc)
		return rc;
	if (PQntuples(r) != 1) {
		PQclear(r);
		return ERR_DB;
	}
	*moved = strcmp(PQgetvalue(r, 0, 0), "1") == 0;
	PQclear(r);
	return ERR_OK;
}

/* The order's lines as the event's items: [{"sku","quantity","unit_price_cents"}]. */
static json_t *items_json(const Orders__Order *o)
{
	json_t *arr = json_array();
	size_t i;

	if (!arr)
		return NULL;
	for (i = 0; i < o->n_lines; i++) {
		const Orders__Line *l = o->lines[i];
		json_t *item =
		    json_pack("{s:s, s:I, s:I}", "sku", l->sku, "quantity", (json_int_t)l->quantity,
		              "unit_price_cents", (json_int_t)l->unit_price_cents);

		if (!item || json_array_append_new(arr, item)) {
			json_decref(arr);
			return NULL;
		}
	}
	return arr;
}

/*
 * Append the finance events of the n orders the message path finished, in
 * one statement: ev[i] (what build_event() packs, items from the order's
 * lines) with ids[i], in order. *seqs gets each one's seq.
 *
 * The table's trigger takes the feed's transaction-level advisory lock and
 * then draws seq, so that events become visible in seq order (see
 * migrations/0007): from here to the commit every other event writer
 * waits. So this is a transaction's last real work: the message path
 * appends the batch's events last (only the inbox outcomes follow), the
 * sweeps append all of a batch's events after the rest of the batch.
 */
static int insert_events(struct db *db, const struct order_msg *const *ev,
                         const char *const *order_ids, char (*ids)[IDS_UUID_LEN + 1], size_t n,
                         int64_t *seqs)
{
	static const struct db_stmt st = {
	    "order.insert_events",
	    "INSERT INTO order_events (event_id, type, order_id, customer_id, currency, "
	    "total_cents, items, publish_pending) "
	    "SELECT e.event_id, e.type, e.order_id, e.customer_id, e.currency, e.total_cents, "
	    "e.items, false FROM ROWS FROM (jsonb_to_recordset($1::jsonb) AS (event_id uuid, "
	    "type text, order_id uuid, customer_id text, currency text, total_cents bigint, "
	    "items jsonb)) WITH ORDINALITY AS e(event_id, type, order_id, customer_id, currency, "
	    "total_cents, items, n) "
	    "ORDER BY e.n ON CONFLICT (order_id) DO NOTHING RETURNING order_id::text, seq"};
	json_t *arr = json_array();
	char *doc = NULL;
	const char *p[1];
	PGresult *r = NULL;
	size_t i, found = 0;
	int rc = ERR_NOMEM, row;

	for (i = 0; arr && i < n; i++) {
		const Orders__Order *o = ev[i]->order;
		json_t *items = items_json(o);
		json_t *e =
		    items ? json_pack("{s:s, s:s, s:s, s:s, s:s, s:I, s:o}", "event_id", ids[i],
		                      "type", event_types[ev[i]->kind], "order_id", order_ids[i],
		                      "customer_id", o->customer_id ? o->customer_id : "",
		                      "currency", o->currency, "total_cents",
		                      (json_int_t)o->total_cents, "items", items)
		          : NULL;

		if (!e || json_array_append_new(arr, e))
			goto out;
	}
	doc = arr ? json_dumps(arr, JSON_COMPACT) : NULL;
	if (!doc)
		goto out;
	p[0] = doc;
	rc = consume_db_rc(db_exec_stmt(db, &st, 1, p, &r));
	if (rc)
		goto out;
	for (i = 0; i < n; i++)
		seqs[i] = 0;
	for (row = 0; row < PQntuples(r); row++) {
		for (i = 0; i < n; i++) {
			if (seqs[i] == 0 && strcmp(PQgetvalue(r, row, 0), order_ids[i]) == 0) {
				seqs[i] = strtoll(PQgetvalue(r, row, 1), NULL, 10);
				found++;
				break;
			}
		}
	}
	for (i = 0; found < n && i < n; i++) {
		/*
		 * The status was not final, yet an event exists: someone broke
		 * the rule that both change together. Leave it for ops.
		 */
		if (seqs[i] <= 0) {
			log_error("cannot append order event: one exists for a non-final order",
			          LF_STR("order_id", order_ids[i]),
			          LF_STR("type", event_types[ev[i]->kind]));
			rc = ERR_DB;
			break;
		}
	}
out:
	PQclear(r);
	free(doc);
	json_decref(arr);
	return rc;
}

/*
 * An authorization arrived for an order that is final without being
 * confirmed (expired meanwhile): payment-consumer's lock and expiry check
 * should make that impossible, but should it happen, the authorization must
 * not stay live on the card.
 */
static int void_unconfirmed(struct order_state *st, struct db *db, const struct consume_input *in)
{
	static const struct db_stmt final_st = {
	    "order.final_unconfirmed", "SELECT status FROM orders WHERE order_id = $1::uuid "
	                               "AND status IN ('expired', 'payment_failed', 'rejected')"};
	char status[32];
	PGresult *r = NULL;
	int rc, voided = 0;

	rc = consume_db_rc(db_exec_stmt(db, &final_st, 1, &in->order_id, &r));
	if (rc)
		return rc;
	if (PQntuples(r) != 1) {
		PQclear(r);
		return ERR_OK;
	}
	snprintf(status, sizeof(status), "%s", PQgetvalue(r, 0, 0));
	PQclear(r);
	rc = gateway_void(st->gateway, in->order_id, &voided);
	if (rc) {
		log_warn("cannot void the authorization of an unconfirmed order, will retry",
		         LF_STR("message_id", in->message_id), LF_STR("order_id", in->order_id),
		         LF_STR("status", status), LF_STR("error", err_str(rc)));
		return rc;
	}
	if (voided)
		log_warn("voided the authorization of an order that was not confirmed",
		         LF_STR("message_id", in->message_id), LF_STR("order_id", in->order_id),
		         LF_STR("status", status));
	return ERR_OK;
}

/*
 * The order finished here gets its event from order_finish(), at the end of
 * the batch's transaction: the outcome stays empty until then.
 */
static int order_process(void *state, struct db *db, const struct consume_input *in,
                         struct consume_result *res)
{
	const struct order_msg *om = in->msg;
	int rc, moved = 0;

	rc = settle_order(db, om->kind, in->order_id,
	                  om->kind == KIND_DECLINED ? om->payment->decline_code : NULL, &moved);
	if (rc)
		return rc;
	if (!moved) {
		if (om->kind == KIND_AUTHORIZED) {
			rc = void_unconfirmed(state, db, in);
			if (rc)
				return rc;
		}
		log_info("order is final already, nothing to do",
		         LF_STR("message_id", in->message_id), LF_STR("order_id", in->order_id),
		         LF_STR("routing_key", in->routing_key));
		snprintf(res->outcome, sizeof(res->outcome), "noop");
	}
	return ERR_OK;
}

/*
 * Lock the batch's orders in order id order, then the products they hold,
 * in SKU byte order: the order the sweeps and inventory-consumer lock in,
 * so that batches never deadlock with them or each other.
 */
static int order_prepare(void *state, struct db *db, const struct consume_input *const *in,
                         size_t n)
{
	static const struct db_stmt orders_st = {
	    "order.lock_orders", "SELECT 1 FROM orders WHERE order_id = ANY ($1::uuid[]) "
	                         "ORDER BY order_id FOR UPDATE"};
	static const struct db_stmt products_st = {
	    "order.lock_products",
	    "SELECT 1 FROM products p WHERE p.sku IN (SELECT r.sku FROM reservations r "
	    "WHERE r.order_id = ANY ($1::uuid[]) AND r.state = 'held') "
	    "ORDER BY p.sku COLLATE \"C\" FOR UPDATE OF p"};
	const char *ids[CONSUME_BATCH_MAX];
	size_t i;
	int rc;

	(void)state;
	for (i = 0; i < n && i < CONSUME_BATCH_MAX; i++)
		ids[i] = in[i]->order_id;
	rc = consume_lock_all(db, &orders_st, ids, i);
	return rc ? rc : consume_lock_all(db, &products_st, ids, i);
}

/*
 * Append the events of the orders the batch finished, last in its
 * transaction (event order is commit order), and complete their results.
 */
static int order_finish(void *state, struct db *db, const struct consume_input *const *in,
                        struct consume_result *const *res, size_t n)
{
	const struct order_msg *ev[CONSUME_BATCH_MAX];
	const char *order_ids[CONSUME_BATCH_MAX];
	char(*ids)[IDS_UUID_LEN + 1] = NULL;
	int64_t *seqs = NULL;
	size_t i, k = 0, *at = NULL;
	int rc = ERR_NOMEM;

	(void)state;
	ids = malloc(n * sizeof(*ids));
	seqs = malloc(n * sizeof(*seqs));
	at = malloc(n * sizeof(*at));
	if (!ids || !seqs || !at)
		goto out;
	for (i = 0; i < n && k < CONSUME_BATCH_MAX; i++) {
		if (res[i]->outcome[0])
			continue; /* a noop */
		ev[k] = in[i]->msg;
		order_ids[k] = in[i]->order_id;
		ids_uuid4(ids[k]);
		at[k++] = i;
	}
	rc = ERR_OK;
	if (k == 0)
		goto out;
	rc = insert_events(db, ev, order_ids, ids, k, seqs);
	for (i = 0; !rc && i < k; i++) {
		const char *type = event_types[ev[i]->kind];
		struct consume_result *r = res[at[i]];

		snprintf(r->outcome, sizeof(r->outcome), "event:%" PRId64 ":%s:%s", seqs[i], ids[i],
		         type);
		rc = build_outgoing(ev[i], in[at[i]], seqs[i], ids[i], type, r);
	}
out:
	free(ids);
	free(seqs);
	free(at);
	return rc;
}

static int order_replay(void *state, const struct consume_input *in, const char *outcome,
                        struct consume_result *res)
{
	const struct order_msg *om = in->msg;
	char seq[24], event_id[IDS_UUID_LEN + 1], type[32];
	char *end;
	long long n;
	size_t i;

	(void)state;
	if (strcmp(outcome, "noop") == 0)
		return ERR_OK;
	if (strncmp(outcome, "event:", 6) != 0 || consume_field_count(outcome) != 4 ||
	    consume_field(outcome, 1, seq, sizeof(seq)) ||
	    consume_field(outcome, 2, event_id, sizeof(event_id)) ||
	    consume_field(outcome, 3, type, sizeof(type)) || !ids_uuid_valid(event_id))
		return ERR_PARSE;
	n = strtoll(seq, &end, 10);
	if (end == seq || *end || n <= 0)
		return ERR_PARSE;
	for (i = 0; i < sizeof(event_types) / sizeof(event_types[0]); i++) {
		if (strcmp(type, event_types[i]) == 0)
			return build_outgoing(om, in, (int64_t)n, event_id, event_types[i], res);
	}
	return ERR_PARSE;
}

/* ---- expiry -------------------------------------------------------------- */

/* An order read back from the database, seen as a message for the event code. */
struct stored_order {
	struct order_msg om;
	char order_id[IDS_UUID_LEN + 1];
	Orders__Envelope env;
	Orders__Order order;
	Orders__Line lines[LINES_MAX];
	Orders__Line *line_ptrs[LINES_MAX];
	PGresult *r; /* the texts above point into it */
};

static void stored_order_release(struct stored_order *so)
{
	PQclear(so->r);
	so->r = NULL;
}

static int load_order(struct db *db, const char *order_id, struct stored_order *so)
{
	static const struct db_stmt st = {
	    "order.load_order",
	    "SELECT o.customer_id, o.currency, o.total_cents, o.correlation_id, l.sku, "
	    "l.quantity, l.unit_price_cents, coalesce(o.cart_id::text, '') "
	    "FROM orders o JOIN order_lines l ON l.order_id = o.order_id "
	    "WHERE o.order_id = $1::uuid ORDER BY l.line_no"};
	PGresult *r = NULL;
	int rc, i, n;

	rc = consume_db_rc(db_exec_stmt(db, &st, 1, &order_id, &r));
	if (rc)
		return rc;
	n = PQntuples(r);
	if (n < 1 || n > LINES_MAX) {
		PQclear(r);
		log_error("cannot read order back: it has no lines or too many",
		          LF_STR("order_id", order_id), LF_INT("lines", n));
		return ERR_DB;
	}
	memset(so, 0, sizeof(*so));
	snprintf(so->order_id, sizeof(so->order_id), "%s", order_id);
	so->r = r;
	orders__envelope__init(&so->env);
	so->env.order_id = so->order_id;
	so->env.correlation_id = PQgetvalue(r, 0, 3);
	orders__order__init(&so->order);
	so->order.customer_id = PQgetvalue(r, 0, 0);
	so->order.currency = PQgetvalue(r, 0, 1);
	so->order.total_cents = strtoll(PQgetvalue(r, 0, 2), NULL, 10);
	so->order.cart_id = PQgetvalue(r, 0, 7);
	for (i = 0; i < n; i++) {
		orders__line__init(&so->lines[i]);
		so->lines[i].sku = PQgetvalue(r, i, 4);
		so->lines[i].quantity = (uint32_t)strtoul(PQgetvalue(r, i, 5), NULL, 10);
		so->lines[i].unit_price_cents = strtoll(PQgetvalue(r, i, 6), NULL, 10);
		so->line_ptrs[i] = &so->lines[i];
	}
	so->order.n_lines = (size_t)n;
	so->order.lines = so->line_ptrs;
	so->om.kind = KIND_EXPIRED;
	so->om.env = &so->env;
	so->om.order = &so->order;
	return ERR_OK;
}

/* The ids in column 0 of r as a PostgreSQL uuid[] literal into b. */
static int id_array(const PGresult *r, struct buf *b)
{
	int rc, i;

	rc = buf_append_str(b, "{");
	for (i = 0; !rc && i < PQntuples(r); i++)
		rc = consume_pg_array_add(b, PQgetvalue(r, i, 0), i == 0);
	return rc ? rc : buf_append_str(b, "}");
}

/*
 * pick_then_read - lock up to EXPIRE_BATCH orders with pick_st ($1 is the
 * batch size, $2 the optional param2), then run read_st over their ids
 * ($1, a uuid[]) in a new statement, so that it sees what was committed
 * while the locks were being taken. ERR_OK with *out NULL when nothing is
 * left; otherwise *out is read_st's result (PQclear it), at most one row
 * per picked order.
 */
static int pick_then_read(struct db *db, const struct db_stmt *pick_st, const char *param2,
                          const struct db_stmt *read_st, PGresult **out)
{
	char limit[16];
	const char *p[2] = {limit, param2};
	struct buf ids;
	PGresult *r = NULL;
	int rc;

	*out = NULL;
	snprintf(limit, sizeof(limit), "%d", EXPIRE_BATCH);
	rc = consume_db_rc(db_exec_stmt(db, pick_st, param2 ? 2 : 1, p, &r));
	if (rc || PQntuples(r) == 0) {
		PQclear(r);
		return rc;
	}
	buf_init(&ids, ID_ARRAY_MAX);
	rc = id_array(r, &ids);
	PQclear(r);
	r = NULL;
	if (!rc) {
		p[0] = ids.data;
		rc = consume_db_rc(db_exec_stmt(db, read_st, 1, p, &r));
	}
	buf_release(&ids);
	if (rc)
		return rc;
	if (PQntuples(r) == 0) {
		PQclear(r);
		return ERR_OK;
	}
	/* One row per picked order: the sweeps keep per-row state that long. */
	if (PQntuples(r) > EXPIRE_BATCH) {
		PQclear(r);
		return ERR_DB;
	}
	*out = r;
	return ERR_OK;
}

/*
 * Lock up to EXPIRE_BATCH reserved orders whose reservation has expired
 * and whose payment is not decided: rows (order_id, correlation_id), or
 * ERR_OK with *out NULL when there are none. A decided payment was decided
 * in time (payment-consumer checks the reservation under the order's
 * lock), so its order is the completion
 * sweep's to finish as confirmed or payment_failed, never expired.
 * SKIP LOCKED: payment-consumer holds an order's row while it authorizes,
 * and other replicas sweep beside this one. The payments check is repeated
 * once the rows are ours, in a new statement (a new snapshot): a payment
 * committed while this query ran must keep its order.
 */
static int pick_expired(struct db *db, PGresult **out)
{
	static const struct db_stmt pick_st = {
	    "order.pick_expired",
	    "SELECT o.order_id::text FROM orders o "
	    "WHERE o.status = 'reserved' AND o.order_id IN (SELECT r.order_id "
	    "FROM reservations r WHERE r.state = 'held' AND r.expires_at <= now()) "
	    "AND NOT " PAYMENT_DECIDED " LIMIT $1::int FOR UPDATE OF o SKIP LOCKED"};
	static const struct db_stmt check_st = {
	    "order.check_expired", "SELECT o.order_id::text, o.correlation_id FROM orders o "
	                           "WHERE o.order_id = ANY ($1::uuid[]) AND o.status = 'reserved' "
	                           "AND NOT " PAYMENT_DECIDED " ORDER BY o.order_id"};
	return pick_then_read(db, &pick_st, NULL, &check_st, out);
}

/*
 * Lock every product the picked orders hold, in SKU byte order, before any
 * is changed: releasing order by order would lock them out of order across
 * the batch and could deadlock with another consumer.
 */
static int lock_batch_products(struct db *db, const PGresult *orders)
{
	static const struct db_stmt st = {
	    "order.lock_batch_products",
	    "SELECT p.sku FROM products p WHERE p.sku IN (SELECT r.sku FROM reservations r "
	    "WHERE r.order_id = ANY ($1::uuid[]) AND r.state = 'held') "
	    "ORDER BY p.sku COLLATE \"C\" FOR UPDATE OF p"};
	struct buf ids;
	const char *p[1];
	int rc;

	buf_init(&ids, ID_ARRAY_MAX);
	rc = id_array(orders, &ids);
	if (!rc) {
		p[0] = ids.data;
		rc = consume_db_rc(db_exec_stmt(db, &st, 1, p, NULL));
	}
	buf_release(&ids);
	return rc;
}

/*
 * The events of the orders a sweep has just finished, in one statement: row
 * i of r (column 0 the order id, column cid its correlation id) as
 * kinds[i] when moved[i]. Each is built from the order as the database
 * holds it (its lines, in line order, as the items; a new random event id)
 * and marked publish_pending. They are the batch's last work (see
 * insert_events), so the feed's lock is held for this insert and the
 * commit only.
 */
static int append_sweep_events(struct db *db, const PGresult *r, int cid,
                               const enum order_kind *kinds, const unsigned char *moved)
{
	static const struct db_stmt st = {
	    "order.insert_sweep_events",
	    "INSERT INTO order_events (event_id, type, order_id, customer_id, currency, "
	    "total_cents, items, publish_pending) "
	    "SELECT gen_random_uuid(), e.type, o.order_id, o.customer_id, o.currency, "
	    "o.total_cents, (SELECT jsonb_agg(jsonb_build_object('sku', l.sku, 'quantity', "
	    "l.quantity, 'unit_price_cents', l.unit_price_cents) ORDER BY l.line_no) "
	    "FROM order_lines l WHERE l.order_id = o.order_id), true "
	    "FROM unnest($1::uuid[], $2::text[]) WITH ORDINALITY AS e(order_id, type, n) "
	    "JOIN orders o ON o.order_id = e.order_id ORDER BY e.n "
	    "ON CONFLICT (order_id) DO NOTHING RETURNING order_id::text, seq, event_id::text"};
	const char *ids[EXPIRE_BATCH], *types[EXPIRE_BATCH], *p[2];
	unsigned char done[EXPIRE_BATCH];
	struct buf b_ids, b_types;
	PGresult *ev = NULL;
	int rc, i, k = 0, row;

	buf_init(&b_ids, 0);
	buf_init(&b_types, 0);
	memset(done, 0, sizeof(done));
	for (i = 0; i < PQntuples(r) && k < EXPIRE_BATCH; i++) {
		if (!moved[i])
			continue;
		ids[k] = PQgetvalue(r, i, 0);
		types[k++] = event_types[kinds[i]];
	}
	if (k == 0)
		return ERR_OK;
	rc = consume_pg_array(&b_ids, ids, (size_t)k);
	rc = rc ? rc : consume_pg_array(&b_types, types, (size_t)k);
	if (rc)
		goto out;
	p[0] = b_ids.data;
	p[1] = b_types.data;
	rc = consume_db_rc(db_exec_stmt(db, &st, 2, p, &ev));
	if (rc)
		goto out;
	for (row = 0; row < PQntuples(ev); row++) {
		const char *order_id = PQgetvalue(ev, row, 0);

		for (i = 0; i < PQntuples(r) && strcmp(PQgetvalue(r, i, 0), order_id) != 0; i++)
			;
		if (i == PQntuples(r))
			continue;
		done[i] = 1;
		log_context_set(PQgetvalue(r, i, cid), NULL, order_id);
		if (kinds[i] == KIND_EXPIRED)
			log_info("order expired, reservation released",
			         LF_STR("order_id", order_id),
			         LF_INT("seq", strtoll(PQgetvalue(ev, row, 1), NULL, 10)),
			         LF_STR("event_id", PQgetvalue(ev, row, 2)));
		else
			log_warn("finished an order from the database: the message that finishes "
			         "it is overdue",
			         LF_STR("order_id", order_id),
			         LF_STR("type", event_types[kinds[i]]),
			         LF_INT("seq", strtoll(PQgetvalue(ev, row, 1), NULL, 10)),
			         LF_STR("event_id", PQgetvalue(ev, row, 2)));
	}
	for (i = 0; i < PQntuples(r); i++) {
		if (!moved[i] || done[i])
			continue;
		/* As in insert_events: an event exists for an order that was not final. */
		log_context_set(PQgetvalue(r, i, cid), NULL, PQgetvalue(r, i, 0));
		log_error("cannot append order event: one exists for a non-final order",
		          LF_STR("order_id", PQgetvalue(r, i, 0)),
		          LF_STR("type", event_types[kinds[i]]));
		rc = ERR_DB;
		break;
	}
out:
	PQclear(ev);
	buf_release(&b_ids);
	buf_release(&b_types);
	return rc;
}

/*
 * One batch of expiries in one transaction. Each order's authorization, if
 * one exists (payment-consumer died between the gateway's answer and its
 * own commit), is voided first, while the order row is locked so that no
 * charge can start meanwhile. Voiding then failing to commit is harmless:
 * the order stays reserved with an expired reservation, which payment-
 * consumer refuses to charge, and the next tick expires it.
 */
static int expire_batch(struct order_state *st, struct db *db)
{
	enum order_kind kinds[EXPIRE_BATCH];
	unsigned char moved_rows[EXPIRE_BATCH];
	PGresult *r = NULL;
	int rc, i, in_tx = 0;

	rc = consume_db_rc(db_begin(db));
	if (rc)
		goto out;
	in_tx = 1;
	rc = pick_expired(db, &r);
	if (rc || !r)
		goto out;
	for (i = 0; i < PQntuples(r); i++) {
		const char *order_id = PQgetvalue(r, i, 0);
		int voided = 0;

		log_context_set(PQgetvalue(r, i, 1), NULL, order_id);
		rc = gateway_void(st->gateway, order_id, &voided);
		if (rc) {
			log_warn("cannot void the authorization of an expiring order, will retry",
			         LF_STR("order_id", order_id), LF_STR("error", err_str(rc)));
			goto out;
		}
		if (voided)
			log_warn("voided the authorization of an expiring order",
			         LF_STR("order_id", order_id));
	}
	/* Release and expire every order, then append the events: last. */
	rc = lock_batch_products(db, r);
	for (i = 0; !rc && i < PQntuples(r); i++) {
		int moved = 0;

		log_context_set(PQgetvalue(r, i, 1), NULL, PQgetvalue(r, i, 0));
		kinds[i] = KIND_EXPIRED;
		rc = settle_order(db, KIND_EXPIRED, PQgetvalue(r, i, 0), NULL, &moved);
		moved_rows[i] = (unsigned char)moved;
	}
	if (!rc)
		rc = append_sweep_events(db, r, 1, kinds, moved_rows);
	if (rc)
		goto out;
	in_tx = 0;
	rc = consume_db_rc(db_commit(db));
out:
	/* The batch's own lines are about no one order. */
	log_context_clear();
	sweep_said(&st->expire_warn, rc, "cannot expire reservations, will retry",
	           "expiring reservations again");
	PQclear(r);
	if (in_tx)
		db_rollback(db);
	return rc;
}

/* ---- completion sweep ------------------------------------------------------ */

/*
 * An order can be stranded short of its final status when the message that
 * would finish it never reaches this consumer although the work before it
 * was committed: the quorum queues count every return toward the delivery
 * limit, a killed or disconnected consumer's included, so a crash-looping
 * consumer parks good messages in <queue>.dlq. The completion sweep finishes
 * such orders from the database alone, once their last change is older than
 * ORDERS_FINALIZE_GRACE_S:
 *
 *   pending, inventory recorded a rejection            -> rejected
 *   reserved, payments records an authorization        -> confirmed
 *   reserved, payments (or payment-consumer's inbox,
 *   for an invalid card) records a decline             -> payment_failed
 *
 * each through settle_order(), exactly as the lost message would have, with
 * the event (appended after the whole batch is settled) marked
 * publish_pending for publish_pending() to send.
 *
 * This is safe whatever the grace, even none. The final status is derived
 * only from committed facts that nothing can change any more: inventory
 * decides an order's stock in the transaction that inserts it (a 'pending'
 * order with a rejected outcome is never reserved later), and
 * payment-consumer decides its payment once (one payments row per order,
 * written under the order's lock; the gateway answers the same key the same
 * way), in the transaction that also produces the message. So the lost
 * message, if it ever comes, carries the very verdict the sweep applied.
 * And whichever of the two comes second finds the order final: both change
 * the status with an UPDATE guarded by the status it moves from, under the
 * order row's lock, so the second matches no row, does nothing and writes no
 * second event (the handler's outcome is "noop"). The grace only keeps the
 * sweep from doing, on every order, what the message does a moment later.
 */

/*
 * Lock up to EXPIRE_BATCH stranded orders and read, once they are ours, what
 * finishes each: rows (order_id, kind, decline code, correlation_id) in
 * order id order, or
 * ERR_OK with *out NULL when there are none. SKIP LOCKED: replicas share the
 * work, and an order whose message is being processed right now is skipped.
 * The facts are read in a new statement, after the locks: payment-consumer
 * writes them holding the same lock, so none can change meanwhile.
 */
static int pick_stranded(struct db *db, const char *grace_s, PGresult **out)
{
	static const struct db_stmt pick_st = {
	    "order.pick_stranded", "SELECT o.order_id::text FROM orders o "
	                           "WHERE o.status IN ('pending', 'reserved') "
	                           "AND o.updated_at <= now() - $2::int * interval '1 second' "
	                           "AND ((o.status = 'pending' AND EXISTS (SELECT 1 FROM inbox i "
	                           "WHERE i.order_id = o.order_id AND i.consumer = 'inventory' "
	                           "AND i.outcome LIKE 'rejected:%')) "
	                           "OR (o.status = 'reserved' AND " PAYMENT_DECIDED ")) "
	                           "LIMIT $1::int FOR UPDATE OF o SKIP LOCKED"};
	static const struct db_stmt facts_st = {
	    "order.stranded_facts",
	    "SELECT o.order_id::text, CASE WHEN o.status = 'pending' THEN 'rejected' "
	    "WHEN p.authorized THEN 'authorized' ELSE 'declined' END, "
	    "coalesce(p.decline_code, d.code, ''), o.correlation_id "
	    "FROM orders o LEFT JOIN payments p ON p.order_id = o.order_id "
	    "LEFT JOIN LATERAL (SELECT split_part(i.outcome, ':', 2) AS code FROM inbox i "
	    "WHERE i.order_id = o.order_id AND i.consumer = 'payment' "
	    "AND i.outcome LIKE 'declined:%' LIMIT 1) d ON true "
	    "WHERE o.order_id = ANY ($1::uuid[]) "
	    "AND ((o.status = 'pending' AND EXISTS (SELECT 1 FROM inbox i "
	    "WHERE i.order_id = o.order_id AND i.consumer = 'inventory' "
	    "AND i.outcome LIKE 'rejected:%')) "
	    "OR (o.status = 'reserved' AND (p.order_id IS NOT NULL OR d.code IS NOT NULL))) "
	    "ORDER BY o.order_id"};
	return pick_then_read(db, &pick_st, grace_s, &facts_st, out);
}

/*
 * Settle one locked stranded order as row i of facts says; *kind is what
 * it finished as.
 */
static int finalize_one(struct db *db, const PGresult *facts, int i, enum order_kind *kind,
                        int *moved)
{
	const char *order_id = PQgetvalue(facts, i, 0), *what = PQgetvalue(facts, i, 1);
	const char *code = PQgetvalue(facts, i, 2);

	log_context_set(PQgetvalue(facts, i, 3), NULL, order_id);
	if (strcmp(what, "rejected") == 0) {
		*kind = KIND_REJECTED;
	} else if (strcmp(what, "authorized") == 0) {
		*kind = KIND_AUTHORIZED;
	} else {
		*kind = KIND_DECLINED;
		/* payment-consumer's codes always pass; a client sees this one. */
		if (!code_ok(code))
			code = "payment_declined";
	}
	return settle_order(db, *kind, order_id, code, moved);
}

/* One batch of the completion sweep, in one transaction. */
static int finalize_batch(struct order_state *st, struct db *db)
{
	enum order_kind kinds[EXPIRE_BATCH];
	unsigned char moved_rows[EXPIRE_BATCH];
	PGresult *r = NULL;
	int rc, i, in_tx = 0;

	rc = consume_db_rc(db_begin(db));
	if (rc)
		goto out;
	in_tx = 1;
	rc = pick_stranded(db, st->grace_s, &r);
	if (rc || !r)
		goto out;
	/* Orders first (locked above), then products in SKU byte order. */
	rc = lock_batch_products(db, r);
	for (i = 0; !rc && i < PQntuples(r); i++) {
		int moved = 0;

		rc = finalize_one(db, r, i, &kinds[i], &moved);
		moved_rows[i] = (unsigned char)moved;
	}
	/* The events last, once every order of the batch is settled. */
	if (!rc)
		rc = append_sweep_events(db, r, 3, kinds, moved_rows);
	if (rc)
		goto out;
	in_tx = 0;
	rc = consume_db_rc(db_commit(db));
out:
	log_context_clear();
	sweep_said(&st->finalize_warn, rc, "cannot finish stranded orders, will retry",
	           "finishing stranded orders again");
	PQclear(r);
	if (in_tx)
		db_rollback(db);
	return rc;
}

/*
 * Void every live authorization whose order ended without being confirmed.
 * The paths to such a status void what they find, but a charge can land at
 * the gateway after that: payment-consumer's session can die while the
 * gateway (on its own connection) is still authorizing, and the order then
 * expires. The redelivery of that message voids it in payment-consumer;
 * this is the safety net behind it, so it runs seldom and looks only at
 * charges recent enough to have raced an order's end (an index keeps that
 * read to those). Those final statuses
 * never change again, so no lock is needed, and a void is idempotent: a
 * race with another replica is harmless.
 */
static int void_leftovers(struct order_state *st, struct db *db)
{
	static const struct db_stmt pick = {
	    "order.pick_leftovers",
	    "SELECT g.idempotency_key, o.correlation_id FROM gateway_charges g "
	    "JOIN orders o ON o.order_id::text = g.idempotency_key "
	    "WHERE g.approved AND g.voided_at IS NULL "
	    "AND g.created_at > now() - make_interval(secs => $2::bigint) "
	    "AND o.status IN ('expired', 'payment_failed', 'rejected') LIMIT $1::int"};
	char limit[16];
	const char *p[2] = {limit, st->void_window_s};
	PGresult *r = NULL;
	int rc, i;

	snprintf(limit, sizeof(limit), "%d", EXPIRE_BATCH);
	rc = consume_db_rc(db_exec_stmt(db, &pick, 2, p, &r));
	for (i = 0; !rc && i < PQntuples(r); i++) {
		const char *order_id = PQgetvalue(r, i, 0);
		int voided = 0;

		log_context_set(PQgetvalue(r, i, 1), NULL, order_id);
		rc = gateway_void(st->gateway, order_id, &voided);
		if (rc)
			log_warn(
			    "cannot void the authorization of an unconfirmed order, will retry",
			    LF_STR("order_id", order_id), LF_STR("error", err_str(rc)));
		else if (voided)
			log_warn("voided a live authorization left on an unconfirmed order",
			         LF_STR("order_id", order_id));
	}
	log_context_clear();
	PQclear(r);
	return rc;
}

/*
 * Pack one stored event the way order_process() does, as message event_id,
 * and publish it; for a confirmation of an order made from a cart, then its
 * cart.checked_out too (both again, with the same ids, if either fails).
 */
static int publish_event(struct db *db, struct mq_publisher *pub, const PGresult *r, int row)
{
	const char *seq = PQgetvalue(r, row, 0), *event_id = PQgetvalue(r, row, 1);
	const char *order_id = PQgetvalue(r, row, 2), *type = PQgetvalue(r, row, 3);
	struct consume_input in;
	struct consume_result res;
	struct stored_order so;
	size_t k;
	int rc;

	for (k = 0; k < sizeof(event_types) / sizeof(event_types[0]); k++) {
		if (strcmp(type, event_types[k]) == 0)
			break;
	}
	if (k == sizeof(event_types) / sizeof(event_types[0]))
		return ERR_INVALID;
	rc = load_order(db, order_id, &so);
	if (rc)
		return rc;
	memset(&in, 0, sizeof(in));
	memset(&res, 0, sizeof(res));
	/* The event's own id and time: a republication is the same message. */
	snprintf(in.out_message_id, sizeof(in.out_message_id), "%s", event_id);
	in.processed_ms = strtoll(PQgetvalue(r, row, 4), NULL, 10);
	so.om.kind = (enum order_kind)k;
	rc = build_event(&so.om, &in, strtoll(seq, NULL, 10), event_id, event_types[k], &res);
	if (!rc)
		rc = mq_publish_sync(pub, res.exchange, res.routing_key, event_id, res.body,
		                     res.len, 0);
	/* The completion sweep's confirmations tell cart-consumer from here. */
	if (!rc && tells_cart(&so.order, so.om.kind))
		rc = build_cart_checked_out(order_id, so.order.cart_id, in.processed_ms,
		                            so.env.correlation_id, &res.extra);
	if (!rc && res.extra.exchange)
		rc = mq_publish_sync(pub, res.extra.exchange, res.extra.routing_key,
		                     res.extra.message_id, res.extra.body, res.extra.len,
		                     MQ_PUBLISH_MANDATORY);
	consume_result_release(&res);
	stored_order_release(&so);
	return rc;
}

/*
 * Publish the events marked pending (the sweeper's), oldest first, and
 * clear each mark once the broker has confirmed it. A failure leaves the
 * rest for the next tick, here or on another replica; a crash between the
 * confirm and the commit publishes one again, with the same message id.
 */
static int publish_pending(struct db *db, struct mq_publisher *pub)
{
	static const struct db_stmt pick_st = {
	    "order.pick_pending",
	    "SELECT seq, event_id::text, order_id::text, type, "
	    "floor(extract(epoch FROM occurred_at) * 1000)::bigint, "
	    "(SELECT o.correlation_id FROM orders o WHERE o.order_id = e.order_id) "
	    "FROM order_events e WHERE publish_pending ORDER BY seq "
	    "LIMIT $1::int FOR UPDATE SKIP LOCKED"};
	static const struct db_stmt done_st = {
	    "order.pending_done",
	    "UPDATE order_events SET publish_pending = false WHERE seq = $1::bigint"};
	char limit[16];
	const char *p[1] = {limit};
	PGresult *r = NULL;
	int rc, i, in_tx = 0;

	rc = consume_db_rc(db_begin(db));
	if (rc)
		goto out;
	in_tx = 1;
	snprintf(limit, sizeof(limit), "%d", EXPIRE_BATCH);
	rc = consume_db_rc(db_exec_stmt(db, &pick_st, 1, p, &r));
	for (i = 0; !rc && i < PQntuples(r); i++) {
		p[0] = PQgetvalue(r, i, 0);
		log_context_set(PQgetvalue(r, i, 5), NULL, PQgetvalue(r, i, 2));
		rc = publish_event(db, pub, r, i);
		if (rc) {
			log_warn("cannot publish order event, will retry",
			         LF_STR("order_id", PQgetvalue(r, i, 2)),
			         LF_STR("type", PQgetvalue(r, i, 3)), LF_STR("seq", p[0]),
			         LF_STR("error", err_str(rc)));
			break;
		}
		log_info("order event published", LF_STR("order_id", PQgetvalue(r, i, 2)),
		         LF_STR("type", PQgetvalue(r, i, 3)), LF_STR("seq", p[0]),
		         LF_STR("out_message_id", PQgetvalue(r, i, 1)));
		rc = consume_db_rc(db_exec_stmt(db, &done_st, 1, p, NULL));
	}
	log_context_clear();
	/* What was confirmed is recorded even when a later publish failed. */
	in_tx = 0;
	if (consume_db_rc(db_commit(db)) != ERR_OK && !rc)
		rc = ERR_DB;
out:
	PQclear(r);
	if (in_tx)
		db_rollback(db);
	return rc;
}

/*
 * The sweepers: every FINALIZE_EVERY_MS finish stranded orders, every
 * VOID_EVERY_MS void leftover authorizations; every tick expire what is due (after finishing,
 * so that a decided payment wins over its reservation's end), then publish
 * what is pending.
 */
static int order_tick(void *state, struct db *db, struct mq_publisher *pub)
{
	struct order_state *st = state;
	int64_t now = ids_now_ms();
	int rc = ERR_OK, erc, prc;

	if (now >= st->next_finalize_ms) {
		st->next_finalize_ms = now + FINALIZE_EVERY_MS;
		rc = finalize_batch(st, db);
	}
	if (now >= st->next_void_ms) {
		st->next_void_ms = now + VOID_EVERY_MS;
		erc = void_leftovers(st, db);
		rc = rc ? rc : erc;
	}
	erc = expire_batch(st, db);
	prc = publish_pending(db, pub);
	if (!rc)
		rc = erc ? erc : prc;
	return rc;
}

const struct consume_handler order_handler = {
    .name = "order",
    .queue = MQ_QUEUE_ORDER,
    .default_port = 9103,
    .init = order_init,
    .fini = order_fini,
    .decode = order_decode,
    .msg_free = order_msg_free,
    .process = order_process,
    .replay = order_replay,
    .prepare = order_prepare,
    .finish = order_finish,
    .tick = order_tick,
    .tick_ms = EXPIRE_TICK_MS,
};
