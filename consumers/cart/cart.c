/* cart.c: keeps the newest version of every cart in PostgreSQL, and marks checked-out carts. */
#include "cart.h"

#include <inttypes.h>
#include <jansson.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "cache.h"
#include "err.h"
#include "log.h"

/* A cart holds at most this many lines (the API's limit too). */
#define CART_LINES_MAX 100
#define CART_QUANTITY_MAX 999
/* Client and customer ids, in characters (the API's limit on customer_id). */
#define CART_ID_CHARS_MAX 128

/*
 * Mark the Redis copy checked out if it still exists. One script, so that
 * a key that expires meanwhile is not recreated without its expiry; HSET
 * leaves the expiry as it is.
 */
static const char mark_script[] =
    "if redis.call('EXISTS', KEYS[1]) == 1 then "
    "redis.call('HSET', KEYS[1], 'status', 'checked_out', 'order_id', ARGV[1]) "
    "return 1 end return 0";

struct cart_state {
	struct cache *cache; /* used by the loop's thread only */
};

/* The decoded input: one of two message types. */
struct cart_msg {
	Orders__CartChanged *changed;
	Orders__CartCheckedOut *checked_out;
	char *items; /* a change's lines as stored: [{"sku","quantity"}], merged */
};

/* One SKU of a cart with its quantities summed over every line. */
struct cart_need {
	const char *sku;
	unsigned long qty;
};

static int cart_init(const struct config *cfg, void **state)
{
	struct cart_state *st;
	char err[256];

	if (cache_tls_configure(cfg->redis_ca_file, err, sizeof(err)) != ERR_OK) {
		log_error("cannot use the redis tls settings", LF_STR("reason", err));
		return ERR_INVALID;
	}
	st = calloc(1, sizeof(*st));
	if (!st)
		return ERR_NOMEM;
	/* Connects on first use, so Redis may be down at start. */
	st->cache = cache_new(cfg->redis_url);
	if (!st->cache) {
		free(st);
		return ERR_INVALID;
	}
	*state = st;
	return ERR_OK;
}

static void cart_fini(void *state)
{
	struct cart_state *st = state;

	if (!st)
		return;
	cache_free(st->cache);
	free(st);
}

static void cart_msg_free(void *p)
{
	struct cart_msg *cm = p;

	if (!cm)
		return;
	if (cm->changed)
		orders__cart_changed__free_unpacked(cm->changed, NULL);
	if (cm->checked_out)
		orders__cart_checked_out__free_unpacked(cm->checked_out, NULL);
	free(cm->items);
	free(cm);
}

/* ---- decoding ------------------------------------------------------------- */

/* 1 when s is UTF-8 of 1..CART_ID_CHARS_MAX characters. */
static int id_text_ok(const char *s)
{
	size_t chars = 0;

	if (!s || !consume_utf8_ok(s))
		return 0;
	for (; *s; s++) {
		/* Every character has exactly one byte that is no continuation byte. */
		if (((unsigned char)*s & 0xc0) != 0x80)
			chars++;
	}
	return chars >= 1 && chars <= CART_ID_CHARS_MAX;
}

/*
 * The lines merged by SKU (first appearance first) as the JSON text stored
 * in carts.items, into *out (free it). *why is set for a line that can
 * never be stored.
 */
static int items_json(const Orders__CartChanged *m, char **out, const char **why)
{
	struct cart_need needs[CART_LINES_MAX];
	json_t *arr = NULL;
	size_t i, j, n = 0;
	int rc = ERR_NOMEM;

	for (i = 0; i < m->n_lines; i++) {
		const Orders__CartLine *l = m->lines[i];

		if (!l || !consume_sku_ok(l->sku)) {
			*why = "line sku does not match ^[A-Za-z0-9._-]{1,64}$";
			return ERR_INVALID;
		}
		if (l->quantity < 1 || l->quantity > CART_QUANTITY_MAX) {
			*why = "line quantity must be 1 to 999";
			return ERR_INVALID;
		}
		for (j = 0; j < n && strcmp(needs[j].sku, l->sku) != 0; j++)
			;
		if (j == n) {
			needs[n].sku = l->sku;
			needs[n++].qty = 0;
		}
		needs[j].qty += l->quantity;
		if (needs[j].qty > CART_QUANTITY_MAX) {
			*why = "a sku's quantity, merged, is over 999";
			return ERR_INVALID;
		}
	}
	arr = json_array();
	if (!arr)
		return ERR_NOMEM;
	for (i = 0; i < n; i++) {
		json_t *item = json_pack("{s:s, s:I}", "sku", needs[i].sku, "quantity",
		                         (json_int_t)needs[i].qty);

		if (!item || json_array_append_new(arr, item))
			goto out;
	}
	*out = json_dumps(arr, JSON_COMPACT);
	if (*out)
		rc = ERR_OK;
out:
	json_decref(arr);
	return rc;
}

/* Check a cart.changed and make its items; *why for poison. */
static int check_changed(struct cart_msg *cm, const char **why)
{
	const Orders__CartChanged *m = cm->changed;

	*why = consume_envelope_problem(m->envelope);
	if (!*why && (!ids_uuid_valid(m->cart_id) || strcmp(m->cart_id, m->envelope->order_id)))
		*why = "cart_id is not a lowercase uuid equal to the envelope's order_id";
	if (!*why && !id_text_ok(m->client_id))
		*why = "client_id must be 1 to 128 characters of utf-8";
	if (!*why && !id_text_ok(m->customer_id))
		*why = "customer_id must be 1 to 128 characters of utf-8";
	if (!*why && !consume_currency_ok(m->currency))
		*why = "currency is not three upper-case letters";
	if (!*why && m->n_lines > CART_LINES_MAX)
		*why = "cart has more than 100 lines";
	if (!*why && (m->version < 0 || m->created_at_ms < 0))
		*why = "version or created_at_ms is negative";
	if (*why)
		return ERR_INVALID;
	return items_json(m, &cm->items, why);
}

static int cart_decode(void *state, struct consume_input *in)
{
	struct cart_msg *cm;
	const char *why = NULL;
	int rc = ERR_OK;

	(void)state;
	cm = calloc(1, sizeof(*cm));
	if (!cm)
		return ERR_NOMEM;
	if (strcmp(in->routing_key, MQ_KEY_CART_CHANGED) == 0) {
		cm->changed = orders__cart_changed__unpack(NULL, in->len, in->body);
		if (!cm->changed)
			rc = ERR_PARSE;
		else
			rc = check_changed(cm, &why);
	} else if (strcmp(in->routing_key, MQ_KEY_CART_CHECKED_OUT) == 0) {
		cm->checked_out = orders__cart_checked_out__unpack(NULL, in->len, in->body);
		if (!cm->checked_out) {
			rc = ERR_PARSE;
		} else {
			why = consume_envelope_problem(cm->checked_out->envelope);
			if (!why && !ids_uuid_valid(cm->checked_out->cart_id))
				why = "cart_id is not a lowercase uuid";
			rc = why ? ERR_INVALID : ERR_OK;
		}
	} else {
		why = "unexpected routing key";
		rc = ERR_INVALID;
	}
	if (rc == ERR_PARSE)
		log_error("cannot unpack message", LF_STR("message_id", in->message_id),
		          LF_STR("routing_key", in->routing_key));
	else if (rc && why)
		log_error("cannot accept message", LF_STR("message_id", in->message_id),
		          LF_STR("routing_key", in->routing_key), LF_STR("reason", why));
	if (rc) {
		cart_msg_free(cm);
		return rc;
	}
	in->msg = cm;
	/* The inbox's order_id: the cart for a change, the order for a checkout. */
	in->order_id =
	    cm->changed ? cm->changed->envelope->order_id : cm->checked_out->envelope->order_id;
	in->correlation_id = cm->changed ? cm->changed->envelope->correlation_id
	                                 : cm->checked_out->envelope->correlation_id;
	return ERR_OK;
}

/* ---- processing ------------------------------------------------------------ */

/*
 * Upsert the change unless the row holds the same or a newer version. A
 * stub (client_id '', from a checkout that came first) takes any version.
 */
static int apply_change(struct db *db, const struct cart_msg *cm, struct consume_result *res)
{
	static const struct db_stmt st = {
	    "cart.apply_change",
	    "INSERT INTO carts (cart_id, client_id, customer_id, currency, items, status, "
	    "version, created_at, updated_at) "
	    "VALUES ($1::uuid, $2, $3, $4, $5::jsonb, $6, $7::bigint, "
	    "CASE WHEN $8::bigint > 0 THEN to_timestamp($8::bigint / 1000.0) ELSE now() END, "
	    "CASE WHEN $9::bigint > 0 THEN to_timestamp($9::bigint / 1000.0) ELSE now() END) "
	    "ON CONFLICT (cart_id) DO UPDATE SET client_id = EXCLUDED.client_id, "
	    "customer_id = EXCLUDED.customer_id, currency = EXCLUDED.currency, "
	    "items = EXCLUDED.items, status = CASE WHEN carts.status = 'checked_out' "
	    "THEN carts.status ELSE EXCLUDED.status END, version = EXCLUDED.version, "
	    "created_at = EXCLUDED.created_at, updated_at = EXCLUDED.updated_at "
	    "WHERE carts.version < EXCLUDED.version OR carts.client_id = '' "
	    "RETURNING status"};
	const Orders__CartChanged *m = cm->changed;
	char version[24], created[24], occurred[24];
	const char *p[9];
	PGresult *r = NULL;
	int rc, applied;

	snprintf(version, sizeof(version), "%" PRId64, (int64_t)m->version);
	snprintf(created, sizeof(created), "%" PRId64, (int64_t)m->created_at_ms);
	snprintf(occurred, sizeof(occurred), "%" PRId64, (int64_t)m->envelope->occurred_at_ms);
	p[0] = m->cart_id;
	p[1] = m->client_id;
	p[2] = m->customer_id;
	p[3] = m->currency;
	p[4] = cm->items;
	p[5] = m->deleted ? "deleted" : "open";
	p[6] = version;
	p[7] = created;
	p[8] = occurred;
	rc = consume_db_rc(db_exec_stmt(db, &st, 9, p, &r));
	if (rc)
		return rc;
	/* No row: the cart holds this version or a newer one already. */
	applied = PQntuples(r) == 1;
	PQclear(r);
	snprintf(res->outcome, sizeof(res->outcome), "%s:%s", applied ? "applied" : "stale",
	         version);
	return ERR_OK;
}

/*
 * Mark the cart checked out by order_id (or a stub row for it). The order
 * kept is the first one to check the cart out, into kept.
 */
static int mark_row(struct db *db, const char *cart_id, const char *order_id,
                    char kept[IDS_UUID_LEN + 1])
{
	static const struct db_stmt st = {
	    "cart.mark_checked_out",
	    "INSERT INTO carts (cart_id, client_id, customer_id, currency, status, version, "
	    "order_id, created_at, updated_at, checked_out_at) "
	    "VALUES ($1::uuid, '', '', 'XXX', 'checked_out', 0, $2::uuid, now(), now(), now()) "
	    "ON CONFLICT (cart_id) DO UPDATE SET status = 'checked_out', "
	    "order_id = coalesce(carts.order_id, EXCLUDED.order_id), "
	    "checked_out_at = coalesce(carts.checked_out_at, EXCLUDED.checked_out_at) "
	    "RETURNING order_id::text"};
	const char *p[2] = {cart_id, order_id};
	PGresult *r = NULL;
	int rc;

	rc = consume_db_rc(db_exec_stmt(db, &st, 2, p, &r));
	if (rc)
		return rc;
	if (PQntuples(r) != 1) {
		PQclear(r);
		return ERR_DB;
	}
	snprintf(kept, IDS_UUID_LEN + 1, "%s", PQgetvalue(r, 0, 0));
	PQclear(r);
	return ERR_OK;
}

/* Mark the Redis copy, if any; *marked = 0 when it is gone. */
static int mark_cache(struct cart_state *st, const char *cart_id, const char *order_id, int *marked)
{
	char key[8 + IDS_UUID_LEN + 1];
	redisReply *rep;
	int rc = ERR_OK;

	snprintf(key, sizeof(key), "cart:%s", cart_id);
	rep = cache_command(st->cache, "EVAL %s 1 %s %s", mark_script, key, order_id);
	if (!rep)
		return ERR_UNAVAILABLE;
	if (rep->type == REDIS_REPLY_INTEGER) {
		*marked = rep->integer == 1;
	} else {
		/* A script error or a key of another type: Redis said no. */
		log_warn("cannot run the cart marking script", LF_STR("cart_id", cart_id),
		         LF_STR("reason", rep->type == REDIS_REPLY_ERROR && rep->str
		                              ? rep->str
		                              : "unexpected reply"));
		rc = ERR_CACHE;
	}
	freeReplyObject(rep);
	return rc;
}

static int check_out(struct cart_state *st, struct db *db, const struct consume_input *in,
                     const struct cart_msg *cm, struct consume_result *res)
{
	const char *cart_id = cm->checked_out->cart_id;
	char kept[IDS_UUID_LEN + 1];
	int rc, marked = 0;

	rc = mark_row(db, cart_id, in->order_id, kept);
	if (rc)
		return rc;
	if (strcmp(kept, in->order_id) != 0)
		log_warn("cart was checked out by another order already, keeping that one",
		         LF_STR("message_id", in->message_id), LF_STR("cart_id", cart_id),
		         LF_STR("order_id", in->order_id), LF_STR("kept_order_id", kept));
	/*
	 * Redis last, still inside the transaction: when it fails the row
	 * change is rolled back with it and the message comes again.
	 */
	rc = mark_cache(st, cart_id, kept, &marked);
	if (rc) {
		log_warn("cannot mark the cached cart checked out, will retry",
		         LF_STR("message_id", in->message_id), LF_STR("order_id", in->order_id),
		         LF_STR("cart_id", cart_id), LF_STR("error", err_str(rc)));
		return rc;
	}
	snprintf(res->outcome, sizeof(res->outcome), "checked_out:%s:%s", cart_id,
	         marked ? "marked" : "absent");
	return ERR_OK;
}

static int cart_process(void *state, struct db *db, const struct consume_input *in,
                        struct consume_result *res)
{
	const struct cart_msg *cm = in->msg;

	if (cm->changed)
		return apply_change(db, cm, res);
	return check_out(state, db, in, cm, res);
}

/*
 * Serialise the batch with every other transaction on the same carts, in
 * one global order (advisory locks, since a cart's row may not exist yet):
 * upserting cart by cart could otherwise deadlock with another consumer.
 */
static int cart_prepare(void *state, struct db *db, const struct consume_input *const *in, size_t n)
{
	static const struct db_stmt st = {
	    "cart.lock_carts",
	    "SELECT pg_advisory_xact_lock(hashtext('orders.carts'), k) "
	    "FROM (SELECT DISTINCT hashtext(c) AS k FROM unnest($1::text[]) AS c ORDER BY k) AS s"};
	const char *ids[CONSUME_BATCH_MAX];
	size_t i;

	(void)state;
	for (i = 0; i < n && i < CONSUME_BATCH_MAX; i++) {
		const struct cart_msg *cm = in[i]->msg;

		ids[i] = cm->changed ? cm->changed->cart_id : cm->checked_out->cart_id;
	}
	return consume_lock_all(db, &st, ids, i);
}

static int cart_replay(void *state, const struct consume_input *in, const char *outcome,
                       struct consume_result *res)
{
	(void)state;
	(void)in;
	(void)res;
	/* Nothing was published: only check that the outcome is one of ours. */
	if (strncmp(outcome, "applied:", 8) == 0 || strncmp(outcome, "stale:", 6) == 0 ||
	    strncmp(outcome, "checked_out:", 12) == 0)
		return ERR_OK;
	return ERR_PARSE;
}

const struct consume_handler cart_handler = {
    .name = "cart",
    .queue = MQ_QUEUE_CART,
    .default_port = 9104,
    .init = cart_init,
    .fini = cart_fini,
    .decode = cart_decode,
    .msg_free = cart_msg_free,
    .process = cart_process,
    .prepare = cart_prepare,
    .replay = cart_replay,
};
