/* order.c: sets each order's final status together with its finance event. */
#include "order.h"

#include <inttypes.h>
#include <jansson.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "err.h"
#include "log.h"

enum order_kind { KIND_REJECTED, KIND_AUTHORIZED, KIND_DECLINED };

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
};

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

/* ---- processing ---------------------------------------------------------- */

/* Move the status; *moved = 0 when the order is not in the expected state. */
static int set_status(struct db *db, const struct order_msg *om, const char *order_id, int *moved)
{
	static const char confirm_sql[] =
	    "UPDATE orders SET status = 'confirmed', updated_at = now() "
	    "WHERE order_id = $1::uuid AND status = 'reserved' RETURNING 1";
	static const char fail_sql[] =
	    "UPDATE orders SET status = 'payment_failed', failure_reason = $2, "
	    "updated_at = now() WHERE order_id = $1::uuid AND status = 'reserved' RETURNING 1";
	static const char reject_sql[] =
	    "UPDATE orders SET status = 'rejected', failure_reason = 'out_of_stock', "
	    "updated_at = now() WHERE order_id = $1::uuid AND status = 'pending' RETURNING 1";
	const char *p[2] = {order_id, NULL};
	const char *sql = reject_sql;
	PGresult *r = NULL;
	int rc, n = 1;

	if (om->kind == KIND_AUTHORIZED) {
		sql = confirm_sql;
	} else if (om->kind == KIND_DECLINED) {
		sql = fail_sql;
		p[1] = om->payment->decline_code;
		n = 2;
	}
	rc = consume_db_rc(db_exec(db, sql, n, p, &r));
	if (rc)
		return rc;
	*moved = PQntuples(r) == 1;
	PQclear(r);
	return ERR_OK;
}

/*
 * Settle the held reservations: committed (stock and reserved both go
 * down) or released (reserved goes down). The product rows are locked
 * first, in SKU byte order like inventory-consumer, against deadlocks.
 */
static int settle_reservations(struct db *db, const char *order_id, int commit)
{
	static const char lock_sql[] =
	    "SELECT p.sku FROM products p JOIN reservations r ON r.sku = p.sku "
	    "WHERE r.order_id = $1::uuid AND r.state = 'held' "
	    "ORDER BY p.sku COLLATE \"C\" FOR UPDATE OF p";
	static const char commit_sql[] =
	    "UPDATE products p SET stock = p.stock - r.quantity, "
	    "reserved = p.reserved - r.quantity, updated_at = now() FROM reservations r "
	    "WHERE r.order_id = $1::uuid AND r.state = 'held' AND p.sku = r.sku";
	static const char release_sql[] =
	    "UPDATE products p SET reserved = p.reserved - r.quantity, updated_at = now() "
	    "FROM reservations r "
	    "WHERE r.order_id = $1::uuid AND r.state = 'held' AND p.sku = r.sku";
	static const char state_sql[] = "UPDATE reservations SET state = $2, updated_at = now() "
	                                "WHERE order_id = $1::uuid AND state = 'held'";
	const char *p[2] = {order_id, commit ? "committed" : "released"};
	int rc;

	rc = consume_db_rc(db_exec(db, lock_sql, 1, p, NULL));
	if (!rc)
		rc = consume_db_rc(db_exec(db, commit ? commit_sql : release_sql, 1, p, NULL));
	if (!rc)
		rc = consume_db_rc(db_exec(db, state_sql, 2, p, NULL));
	return rc;
}

/* The order's lines as the event's items: [{"sku","quantity","unit_price_cents"}]. */
static char *items_json(const Orders__Order *o)
{
	json_t *arr = json_array();
	char *s = NULL;
	size_t i;

	if (!arr)
		return NULL;
	for (i = 0; i < o->n_lines; i++) {
		const Orders__Line *l = o->lines[i];
		json_t *item =
		    json_pack("{s:s, s:I, s:I}", "sku", l->sku, "quantity", (json_int_t)l->quantity,
		              "unit_price_cents", (json_int_t)l->unit_price_cents);

		if (!item || json_array_append_new(arr, item))
			goto out;
	}
	s = json_dumps(arr, JSON_COMPACT);
out:
	json_decref(arr);
	return s;
}

static int insert_event(struct db *db, const struct order_msg *om, const char *order_id,
                        const char *event_id, const char *type, int64_t *seq)
{
	static const char sql[] =
	    "INSERT INTO order_events (event_id, type, order_id, customer_id, currency, "
	    "total_cents, items) "
	    "VALUES ($1::uuid, $2, $3::uuid, $4, $5, $6::bigint, $7::jsonb) "
	    "ON CONFLICT (order_id) DO NOTHING RETURNING seq";
	const Orders__Order *o = om->order;
	char total[24], *items;
	const char *p[7];
	PGresult *r = NULL;
	int rc;

	items = items_json(o);
	if (!items)
		return ERR_NOMEM;
	snprintf(total, sizeof(total), "%" PRId64, (int64_t)o->total_cents);
	p[0] = event_id;
	p[1] = type;
	p[2] = order_id;
	p[3] = o->customer_id ? o->customer_id : "";
	p[4] = o->currency;
	p[5] = total;
	p[6] = items;
	rc = consume_db_rc(db_exec(db, sql, 7, p, &r));
	free(items);
	if (rc)
		return rc;
	if (PQntuples(r) != 1) {
		/*
		 * The status was not final, yet an event exists: someone broke
		 * the rule that both change together. Leave it for ops.
		 */
		PQclear(r);
		log_error("cannot append order event: one exists for a non-final order",
		          LF_STR("order_id", order_id), LF_STR("type", type));
		return ERR_DB;
	}
	*seq = strtoll(PQgetvalue(r, 0, 0), NULL, 10);
	PQclear(r);
	return ERR_OK;
}

static int order_process(void *state, struct db *db, const struct consume_input *in,
                         struct consume_result *res)
{
	const struct order_msg *om = in->msg;
	const char *type = event_types[om->kind];
	char event_id[IDS_UUID_LEN + 1];
	int64_t seq = 0;
	int rc, moved = 0;

	(void)state;
	rc = set_status(db, om, in->order_id, &moved);
	if (rc)
		return rc;
	if (!moved) {
		log_info("order is final already, nothing to do",
		         LF_STR("message_id", in->message_id), LF_STR("order_id", in->order_id),
		         LF_STR("routing_key", in->routing_key));
		snprintf(res->outcome, sizeof(res->outcome), "noop");
		return ERR_OK;
	}
	if (om->kind != KIND_REJECTED) {
		rc = settle_reservations(db, in->order_id, om->kind == KIND_AUTHORIZED);
		if (rc)
			return rc;
	}
	ids_uuid4(event_id);
	rc = insert_event(db, om, in->order_id, event_id, type, &seq);
	if (rc)
		return rc;
	snprintf(res->outcome, sizeof(res->outcome), "event:%" PRId64 ":%s:%s", seq, event_id,
	         type);
	return build_event(om, in, seq, event_id, type, res);
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
			return build_event(om, in, (int64_t)n, event_id, event_types[i], res);
	}
	return ERR_PARSE;
}

const struct consume_handler order_handler = {
    .name = "order",
    .queue = MQ_QUEUE_ORDER,
    .default_port = 9103,
    .decode = order_decode,
    .msg_free = order_msg_free,
    .process = order_process,
    .replay = order_replay,
};
