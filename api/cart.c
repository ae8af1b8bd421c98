/* cart.c: carts: POST/GET/PUT/DELETE /v1/carts, kept in Redis and enqueued for PostgreSQL. */
#include "api.h"

#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "err.h"
#include "ids.h"
#include "log.h"
#include "parse.h"
#include "proto.h"

/*
 * A cart lives in the Redis hash "cart:{cart_id}":
 *   client      the API key's client_id (another key's cart is not found)
 *   customer, currency
 *   items       [{"sku":..,"quantity":..}], merged by sku
 *   status      "open" or "checked_out" (set by cart-consumer, with order_id)
 *   version     the change last applied
 *   next_version  the last change number handed out
 *   created_ms, updated_ms
 * and expires CART_TTL_S after its last change. Prices are not stored: they
 * come from the catalog whenever the cart is shown or checked out.
 *
 * Every change is also published (cart.changed, the whole cart) so that
 * cart-consumer keeps it in PostgreSQL, and the client hears of it only once
 * the broker has it. A change first takes a version number, then publishes,
 * then applies itself to Redis only if no later change got there first:
 * Redis and PostgreSQL both keep the highest version, so they agree however
 * two changes race. A publish that fails changes nothing (503), except that
 * its version number is skipped.
 */
#define CART_TTL_S (7 * 24 * 3600)

/* What a change carries across the suspension. */
struct cart_change {
	struct cart cart; /* the cart as the change leaves it */
	int64_t prices[CART_MAX_LINES];
	char items[CART_ITEMS_MAX];
	int deleted;
};

/* ---- Redis scripts ---------------------------------------------------------- */

/* KEYS[1] cart key; ARGV client, "1" when the cart must be open.
 * 0: no such cart (for this client); -1: not open; else the new version. */
static const char reserve_script[] =
    "local k = KEYS[1] "
    "if redis.call('HGET', k, 'client') ~= ARGV[1] then return 0 end "
    "if ARGV[2] == '1' and redis.call('HGET', k, 'status') ~= 'open' then return -1 end "
    "return redis.call('HINCRBY', k, 'next_version', 1)";

/* ARGV client, version, items, updated_ms, ttl. 0: gone; -1: not open;
 * 2: a later change is already applied; 1: applied. */
static const char update_script[] =
    "local k = KEYS[1] "
    "if redis.call('HGET', k, 'client') ~= ARGV[1] then return 0 end "
    "if redis.call('HGET', k, 'status') ~= 'open' then return -1 end "
    "if tonumber(redis.call('HGET', k, 'version')) >= tonumber(ARGV[2]) then return 2 end "
    "redis.call('HSET', k, 'items', ARGV[3], 'version', ARGV[2], 'updated_ms', ARGV[4]) "
    "redis.call('EXPIRE', k, ARGV[5]) "
    "return 1";

/* ARGV client, version. 0: gone; 2: a later change is already applied; 1: deleted. */
static const char delete_script[] =
    "local k = KEYS[1] "
    "if redis.call('HGET', k, 'client') ~= ARGV[1] then return 0 end "
    "if tonumber(redis.call('HGET', k, 'version')) >= tonumber(ARGV[2]) then return 2 end "
    "redis.call('DEL', k) "
    "return 1";

/* A script's integer answer; ERR_UNAVAILABLE when Redis failed. */
static int script_result(redisReply *rep, long long *out)
{
	int rc = ERR_UNAVAILABLE;

	if (rep && rep->type == REDIS_REPLY_INTEGER) {
		*out = rep->integer;
		rc = ERR_OK;
	}
	if (rep)
		freeReplyObject(rep);
	return rc;
}

/* ---- reading and writing carts ------------------------------------------------ */

int cart_items_parse(const char *text, struct cart *cart)
{
	json_t *items = json_loads(text, 0, NULL);
	json_t *v;
	size_t i;
	int rc = ERR_OK;

	if (!json_is_array(items) || json_array_size(items) > CART_MAX_LINES) {
		json_decref(items);
		return ERR_PARSE;
	}
	json_array_foreach(items, i, v)
	{
		const char *sku = json_text(json_object_get(v, "sku"), 64);
		json_int_t q = json_integer_value(json_object_get(v, "quantity"));

		if (!sku || !valid_sku(sku) || q < 1 || q > CART_MAX_QUANTITY) {
			rc = ERR_PARSE;
			break;
		}
		snprintf(cart->lines[i].sku, sizeof(cart->lines[i].sku), "%s", sku);
		cart->lines[i].quantity = (int)q;
	}
	cart->nlines = rc == ERR_OK ? json_array_size(items) : 0;
	json_decref(items);
	return rc;
}

int cart_load(struct request *r, struct cache *c, const char *cart_id, struct cart *out)
{
	static const char *const fields[] = {"client",  "customer",   "currency",
	                                     "items",   "status",     "order_id",
	                                     "version", "created_ms", "updated_ms"};
	redisReply *rep;
	struct cart *cart;
	int rc = ERR_NOT_FOUND;

	if (!ids_uuid_valid(cart_id))
		return ERR_NOT_FOUND;
	rep = cache_command(c,
	                    "HMGET cart:%s client customer currency items status order_id version "
	                    "created_ms updated_ms",
	                    cart_id);
	if (!rep || rep->type != REDIS_REPLY_ARRAY ||
	    rep->elements != sizeof(fields) / sizeof(fields[0])) {
		if (rep)
			freeReplyObject(rep);
		return ERR_UNAVAILABLE;
	}
	/* Another key's cart is as good as none: ids are not secrets. */
	if (rep->element[0]->type != REDIS_REPLY_STRING ||
	    strcmp(rep->element[0]->str, r->key->client_id) != 0)
		goto out;
	for (size_t i = 1; i < rep->elements; i++)
		if (i != 5 && rep->element[i]->type != REDIS_REPLY_STRING)
			goto out; /* half a cart: expired or deleted meanwhile */

	cart = calloc(1, sizeof(*cart));
	if (!cart) {
		rc = ERR_NOMEM;
		goto out;
	}
	snprintf(cart->cart_id, sizeof(cart->cart_id), "%s", cart_id);
	snprintf(cart->customer_id, sizeof(cart->customer_id), "%s", rep->element[1]->str);
	snprintf(cart->currency, sizeof(cart->currency), "%s", rep->element[2]->str);
	snprintf(cart->status, sizeof(cart->status), "%s", rep->element[4]->str);
	if (rep->element[5]->type == REDIS_REPLY_STRING)
		snprintf(cart->order_id, sizeof(cart->order_id), "%s", rep->element[5]->str);
	cart->version = strtoll(rep->element[6]->str, NULL, 10);
	cart->created_ms = strtoll(rep->element[7]->str, NULL, 10);
	cart->updated_ms = strtoll(rep->element[8]->str, NULL, 10);
	rc = cart_items_parse(rep->element[3]->str, cart);
	if (rc == ERR_OK)
		memcpy(out, cart, sizeof(*cart));
	else
		log_error("cannot read cart", LF_STR("cart_id", cart_id),
		          LF_STR("reason", "stored items are corrupt"));
	free(cart);
out:
	freeReplyObject(rep);
	return rc == ERR_PARSE ? ERR_UNAVAILABLE : rc;
}

int cart_items_text(const struct cart *cart, char *out, size_t size)
{
	json_t *items = json_array();
	char *text;
	int rc = ERR_NOMEM;

	for (size_t i = 0; items && i < cart->nlines; i++)
		json_array_append_new(items, json_pack("{s:s, s:i}", "sku", cart->lines[i].sku,
		                                       "quantity", cart->lines[i].quantity));
	text = items ? json_dumps(items, JSON_COMPACT | JSON_PRESERVE_ORDER) : NULL;
	if (text && strlen(text) < size) {
		memcpy(out, text, strlen(text) + 1);
		rc = ERR_OK;
	}
	free(text);
	json_decref(items);
	return rc;
}

/* ---- validation --------------------------------------------------------------- */

static int invalid(struct api_error *e, const char *message, const char *field)
{
	return api_error_set(e, 422, "validation_error", field, "%s", message);
}

int cart_parse_items(json_t *items, struct cart *cart, size_t *origin, struct api_error *e)
{
	static const char *const line_fields[] = {"sku", "quantity", NULL};
	char field[48], prefix[32];
	json_t *v;
	size_t i;

	if (!json_is_array(items))
		return invalid(e, "'items' must be an array of {\"sku\", \"quantity\"}", "items");
	if (json_array_size(items) > CART_MAX_LINES)
		return invalid(e, "at most 100 items", "items");
	cart->nlines = 0;
	json_array_foreach(items, i, v)
	{
		json_t *q = json_object_get(v, "quantity");
		const char *sku = json_text(json_object_get(v, "sku"), 64);
		size_t k;

		if (!json_is_object(v)) {
			snprintf(field, sizeof(field), "items[%zu]", i);
			return invalid(e, "each item must be an object {\"sku\", \"quantity\"}",
			               field);
		}
		snprintf(prefix, sizeof(prefix), "items[%zu]", i);
		if (fields_only(v, prefix, line_fields, e) != ERR_OK)
			return ERR_INVALID;
		if (!sku || !valid_sku(sku)) {
			snprintf(field, sizeof(field), "items[%zu].sku", i);
			return invalid(e, "sku must be 1 to 64 of A-Z a-z 0-9 . _ -", field);
		}
		snprintf(field, sizeof(field), "items[%zu].quantity", i);
		if (!json_is_integer(q) || json_integer_value(q) < 1 ||
		    json_integer_value(q) > CART_MAX_QUANTITY)
			return invalid(e, "quantity must be an integer from 1 to 999", field);
		for (k = 0; k < cart->nlines && strcmp(cart->lines[k].sku, sku) != 0; k++)
			;
		if (k == cart->nlines) {
			snprintf(cart->lines[k].sku, sizeof(cart->lines[k].sku), "%s", sku);
			cart->lines[k].quantity = 0;
			origin[k] = i;
			cart->nlines++;
		}
		cart->lines[k].quantity += (int)json_integer_value(q);
		if (cart->lines[k].quantity > CART_MAX_QUANTITY)
			return invalid(e, "the quantity of one sku may be at most 999", field);
	}
	return ERR_OK;
}

int cart_parse_create(json_t *root, struct cart *cart, size_t *origin, struct api_error *e)
{
	static const char *const fields[] = {"customer_id", "currency", "items", NULL};
	const char *customer, *currency;
	json_t *items;

	if (fields_only(root, "", fields, e) != ERR_OK)
		return ERR_INVALID;
	customer = json_text(json_object_get(root, "customer_id"), 128);
	if (!customer)
		return invalid(e, "'customer_id' must be a string of 1 to 128 characters",
		               "customer_id");
	currency = json_text(json_object_get(root, "currency"), 3);
	if (!currency || !valid_currency(currency))
		return invalid(e, "'currency' must be an ISO 4217 code such as \"USD\"",
		               "currency");
	items = json_object_get(root, "items");
	if (items && cart_parse_items(items, cart, origin, e) != ERR_OK)
		return ERR_INVALID;
	snprintf(cart->customer_id, sizeof(cart->customer_id), "%s", customer);
	snprintf(cart->currency, sizeof(cart->currency), "%s", currency);
	return ERR_OK;
}

int cart_parse_replace(json_t *root, struct cart *cart, size_t *origin, struct api_error *e)
{
	static const char *const fields[] = {"items", NULL};

	if (fields_only(root, "", fields, e) != ERR_OK)
		return ERR_INVALID;
	if (!json_object_get(root, "items"))
		return invalid(e, "'items' is required", "items");
	return cart_parse_items(json_object_get(root, "items"), cart, origin, e);
}

/*
 * Today's price of every line; origin as from parse_items (NULL: the
 * cart's own indexes). 0 on success, else *res is queued.
 */
static int price_cart(struct request *r, struct cache *c, const struct cart *cart,
                      const size_t *origin, int64_t *prices, enum MHD_Result *res)
{
	const char *skus[CART_MAX_LINES];

	for (size_t i = 0; i < cart->nlines; i++)
		skus[i] = cart->lines[i].sku;
	if (require_prices(r, c, skus, cart->nlines, NULL, cart->currency, origin,
	                   "the product is sold in another currency than the cart", prices,
	                   res) != ERR_OK)
		return -1;
	return 0;
}

/* ---- responses ------------------------------------------------------------------ */

static json_t *cart_json(const struct cart *cart, const int64_t *prices)
{
	char created[25], updated[25], expires[25];
	json_t *items = json_array(), *doc;
	int64_t total = 0;

	for (size_t i = 0; items && i < cart->nlines; i++) {
		int64_t line = prices[i] * cart->lines[i].quantity;

		json_array_append_new(
		    items, json_pack("{s:s, s:i, s:I, s:I}", "sku", cart->lines[i].sku, "quantity",
		                     cart->lines[i].quantity, "unit_price_cents",
		                     (json_int_t)prices[i], "line_total_cents", (json_int_t)line));
		total += line;
	}
	ids_rfc3339(cart->created_ms, created);
	ids_rfc3339(cart->updated_ms, updated);
	ids_rfc3339(cart->updated_ms + (int64_t)CART_TTL_S * 1000, expires);
	doc = json_pack("{s:s, s:s, s:s, s:s, s:o, s:I, s:s, s:s, s:s}", "cart_id", cart->cart_id,
	                "customer_id", cart->customer_id, "currency", cart->currency, "status",
	                cart->status, "items", items, "total_cents", (json_int_t)total,
	                "created_at", created, "updated_at", updated, "expires_at", expires);
	if (doc && cart->order_id[0])
		json_object_set_new(doc, "order_id", json_string(cart->order_id));
	return doc;
}

static enum MHD_Result cart_not_found(struct request *r)
{
	return respond_error(r, 404, "cart_not_found", "no cart has that id", NULL);
}

/* The cart as Redis has it now, priced today. */
static enum MHD_Result respond_current(struct request *r, struct cache *c, const char *cart_id)
{
	struct cart *cart = calloc(1, sizeof(*cart));
	int64_t prices[CART_MAX_LINES];
	enum MHD_Result res;
	int rc;

	if (!cart)
		return respond_error(r, 500, "internal", "out of memory", NULL);
	rc = cart_load(r, c, cart_id, cart);
	if (rc == ERR_NOT_FOUND)
		res = cart_not_found(r);
	else if (rc != ERR_OK)
		res = respond_unavailable(r, "the cart store");
	else if (price_cart(r, c, cart, NULL, prices, &res) == 0)
		res = respond_obj(r, 200, cart_json(cart, prices), NULL);
	free(cart);
	return res;
}

/* ---- publishing a change ----------------------------------------------------------- */

static int change_message(struct request *r, const struct cart_change *ch, uint8_t **out,
                          size_t *len, char message_id[IDS_UUID_LEN + 1])
{
	Orders__CartChanged msg = ORDERS__CART_CHANGED__INIT;
	Orders__Envelope env = ORDERS__ENVELOPE__INIT;
	Orders__CartLine store[CART_MAX_LINES];
	Orders__CartLine *lines[CART_MAX_LINES];
	const struct cart *cart = &ch->cart;
	char part[48];

	/* One id per cart and version: a re-publication is a redelivery. */
	snprintf(part, sizeof(part), "%s:%" PRId64, MQ_KEY_CART_CHANGED, cart->version);
	ids_uuid_derived(r->api->order_id_key, cart->cart_id, part, message_id);
	proto_envelope_set(&env, message_id, (char *)cart->cart_id, cart->updated_ms,
	                   r->request_id);
	for (size_t i = 0; i < cart->nlines; i++) {
		orders__cart_line__init(&store[i]);
		store[i].sku = (char *)cart->lines[i].sku;
		store[i].quantity = (uint32_t)cart->lines[i].quantity;
		lines[i] = &store[i];
	}
	msg.envelope = &env;
	msg.cart_id = (char *)cart->cart_id;
	msg.client_id = (char *)r->key->client_id;
	msg.customer_id = (char *)cart->customer_id;
	msg.currency = (char *)cart->currency;
	msg.n_lines = cart->nlines;
	msg.lines = lines;
	msg.version = cart->version;
	msg.deleted = ch->deleted;
	msg.created_at_ms = cart->created_ms;
	return proto_pack(&msg.base, out, len);
}

/* Publish ch (owned by r from here on); done() answers once the broker has it. */
static enum MHD_Result publish_change(struct request *r, struct cart_change *ch,
                                      enum MHD_Result (*done)(struct request *r))
{
	char message_id[IDS_UUID_LEN + 1];
	uint8_t *msg = NULL;
	size_t len = 0;
	enum MHD_Result res;

	r->ctx = ch;
	r->ctx_free = free;
	if (change_message(r, ch, &msg, &len, message_id) != ERR_OK)
		return respond_error(r, 500, "internal", "cannot prepare the cart change", NULL);
	res = api_publish(r, MQ_KEY_CART_CHANGED, message_id, msg, len, done);
	free(msg);
	return res;
}

/* The broker refused or did not answer: nothing was changed. */
static enum MHD_Result change_failed(struct request *r)
{
	static const char *const retry[] = {"Retry-After", "1", NULL};
	struct cart_change *ch = r->ctx;

	log_warn("cart change not accepted", LF_STR("request_id", r->request_id),
	         LF_STR("cart_id", ch->cart.cart_id),
	         LF_STR("reason", err_str(atomic_load(&r->publish_result))));
	return respond_obj(r, 503,
	                   json_pack("{s:{s:s, s:s}}", "error", "code", "unavailable", "message",
	                             "the cart could not be saved; retry shortly"),
	                   retry);
}

/* ---- POST /v1/carts ------------------------------------------------------------------ */

static enum MHD_Result created(struct request *r)
{
	struct cart_change *ch = r->ctx;
	const struct cart *cart = &ch->cart;
	char location[64], version[24], created_ms[24], ttl[16];
	const char *headers[] = {"Location", location, NULL};
	struct cache *c;
	redisReply *rep = NULL;

	if (atomic_load(&r->publish_result) != ERR_OK)
		return change_failed(r);
	snprintf(version, sizeof(version), "%" PRId64, cart->version);
	snprintf(created_ms, sizeof(created_ms), "%" PRId64, cart->created_ms);
	snprintf(ttl, sizeof(ttl), "%d", CART_TTL_S);
	c = cache_pool_get(r->api->cache);
	if (c) {
		/* One script: never a cart without its expiry. */
		rep = cache_command(c, "EVAL %s 1 cart:%s %s %s %s %s %s %s %s",
		                    "redis.call('HSET', KEYS[1], 'client', ARGV[1], 'customer', "
		                    "ARGV[2], 'currency', ARGV[3], 'items', ARGV[4], 'status', "
		                    "'open', 'version', ARGV[5], 'next_version', ARGV[5], "
		                    "'created_ms', ARGV[6], 'updated_ms', ARGV[6]) "
		                    "redis.call('EXPIRE', KEYS[1], ARGV[7]) return 1",
		                    cart->cart_id, r->key->client_id, cart->customer_id,
		                    cart->currency, ch->items, version, created_ms, ttl);
		cache_pool_put(r->api->cache, c);
	}
	if (!rep || rep->type != REDIS_REPLY_INTEGER) {
		/* Enqueued but not stored: PostgreSQL has it, Redis does not. */
		if (rep)
			freeReplyObject(rep);
		return respond_unavailable(r, "the cart store");
	}
	freeReplyObject(rep);
	log_info("cart created", LF_STR("request_id", r->request_id),
	         LF_STR("cart_id", cart->cart_id));
	snprintf(location, sizeof(location), "/v1/carts/%s", cart->cart_id);
	return respond_obj(r, 201, cart_json(cart, ch->prices), headers);
}

enum MHD_Result carts_post(struct request *r)
{
	size_t origin[CART_MAX_LINES];
	struct cart_change *ch = NULL;
	struct api_error perr;
	enum MHD_Result res;
	struct cache *c = NULL;
	json_t *root;

	if (require_role(r, ROLE_CLIENT, &res) != ERR_OK ||
	    require_query_args(r, NULL, &res) != ERR_OK)
		return res;
	root = body_json(r, &res);
	if (!root)
		return res;
	ch = calloc(1, sizeof(*ch));
	if (!ch) {
		res = respond_error(r, 500, "internal", "out of memory", NULL);
		goto out;
	}
	if (cart_parse_create(root, &ch->cart, origin, &perr) != ERR_OK) {
		res = respond_api_error(r, &perr);
		goto out;
	}
	c = cache_pool_get(r->api->cache);
	if (!c) {
		res = respond_unavailable(r, "the cache");
		goto out;
	}
	if (price_cart(r, c, &ch->cart, origin, ch->prices, &res) != 0)
		goto out;
	if (cart_items_text(&ch->cart, ch->items, sizeof(ch->items)) != ERR_OK) {
		res = respond_error(r, 500, "internal", "out of memory", NULL);
		goto out;
	}
	ids_uuid4(ch->cart.cart_id);
	snprintf(ch->cart.status, sizeof(ch->cart.status), "open");
	ch->cart.version = 1;
	ch->cart.created_ms = ch->cart.updated_ms = ids_now_ms();
	res = publish_change(r, ch, created);
	ch = NULL;
out:
	if (c)
		cache_pool_put(r->api->cache, c);
	free(ch);
	json_decref(root);
	return res;
}

/* ---- GET /v1/carts/{id} ---------------------------------------------------------------- */

enum MHD_Result carts_get(struct request *r, const char *cart_id)
{
	enum MHD_Result res;
	struct cache *c;

	if (require_role(r, ROLE_CLIENT, &res) != ERR_OK ||
	    require_query_args(r, NULL, &res) != ERR_OK)
		return res;
	if (!ids_uuid_valid(cart_id))
		return cart_not_found(r);
	c = cache_pool_get(r->api->cache);
	if (!c)
		return respond_unavailable(r, "the cache");
	res = respond_current(r, c, cart_id);
	cache_pool_put(r->api->cache, c);
	return res;
}

/* ---- PUT and DELETE /v1/carts/{id} -------------------------------------------------------- */

/*
 * Take the next version number of cart_id (which must be open unless
 * any_status). 0 on success with *version set, else *res is queued.
 */
static int reserve_version(struct request *r, struct cache *c, const char *cart_id, int any_status,
                           int64_t *version, enum MHD_Result *res)
{
	long long v = 0;

	if (script_result(cache_command(c, "EVAL %s 1 cart:%s %s %s", reserve_script, cart_id,
	                                r->key->client_id, any_status ? "0" : "1"),
	                  &v) != ERR_OK) {
		*res = respond_unavailable(r, "the cart store");
		return -1;
	}
	if (v == 0) {
		*res = cart_not_found(r);
		return -1;
	}
	if (v < 0) {
		*res = respond_error(r, 409, "cart_checked_out", "the cart is already checked out",
		                     NULL);
		return -1;
	}
	*version = v;
	return 0;
}

static enum MHD_Result updated(struct request *r)
{
	struct cart_change *ch = r->ctx;
	const struct cart *cart = &ch->cart;
	char version[24], updated_ms[24], ttl[16];
	enum MHD_Result res;
	struct cache *c;
	long long v = 0;

	if (atomic_load(&r->publish_result) != ERR_OK)
		return change_failed(r);
	snprintf(version, sizeof(version), "%" PRId64, cart->version);
	snprintf(updated_ms, sizeof(updated_ms), "%" PRId64, cart->updated_ms);
	snprintf(ttl, sizeof(ttl), "%d", CART_TTL_S);
	c = cache_pool_get(r->api->cache);
	if (!c || script_result(cache_command(c, "EVAL %s 1 cart:%s %s %s %s %s %s", update_script,
	                                      cart->cart_id, r->key->client_id, version, ch->items,
	                                      updated_ms, ttl),
	                        &v) != ERR_OK) {
		res = respond_unavailable(r, "the cart store");
	} else if (v == 0) {
		res = cart_not_found(r); /* deleted meanwhile */
	} else if (v < 0) {
		res = respond_error(r, 409, "cart_checked_out", "the cart is already checked out",
		                    NULL);
	} else if (v == 2) {
		/* A later change won the race: show what the cart is now. */
		res = respond_current(r, c, cart->cart_id);
	} else {
		log_info("cart updated", LF_STR("request_id", r->request_id),
		         LF_STR("cart_id", cart->cart_id), LF_INT("version", cart->version));
		res = respond_obj(r, 200, cart_json(cart, ch->prices), NULL);
	}
	if (c)
		cache_pool_put(r->api->cache, c);
	return res;
}

enum MHD_Result carts_put(struct request *r, const char *cart_id)
{
	size_t origin[CART_MAX_LINES];
	struct cart_change *ch = NULL;
	struct cart *items_only = NULL;
	struct api_error perr;
	enum MHD_Result res;
	struct cache *c = NULL;
	json_t *root = NULL;
	int rc;

	if (require_role(r, ROLE_CLIENT, &res) != ERR_OK ||
	    require_query_args(r, NULL, &res) != ERR_OK)
		return res;
	if (!ids_uuid_valid(cart_id))
		return cart_not_found(r);
	root = body_json(r, &res);
	if (!root)
		return res;
	ch = calloc(1, sizeof(*ch));
	items_only = calloc(1, sizeof(*items_only));
	if (!ch || !items_only) {
		res = respond_error(r, 500, "internal", "out of memory", NULL);
		goto out;
	}
	if (cart_parse_replace(root, items_only, origin, &perr) != ERR_OK) {
		res = respond_api_error(r, &perr);
		goto out;
	}
	c = cache_pool_get(r->api->cache);
	if (!c) {
		res = respond_unavailable(r, "the cache");
		goto out;
	}
	rc = cart_load(r, c, cart_id, &ch->cart);
	if (rc != ERR_OK) {
		res = rc == ERR_NOT_FOUND ? cart_not_found(r)
		                          : respond_unavailable(r, "the cart store");
		goto out;
	}
	if (strcmp(ch->cart.status, "open") != 0) {
		res = respond_error(r, 409, "cart_checked_out", "the cart is already checked out",
		                    NULL);
		goto out;
	}
	memcpy(ch->cart.lines, items_only->lines, sizeof(ch->cart.lines));
	ch->cart.nlines = items_only->nlines;
	if (price_cart(r, c, &ch->cart, origin, ch->prices, &res) != 0)
		goto out;
	if (cart_items_text(&ch->cart, ch->items, sizeof(ch->items)) != ERR_OK) {
		res = respond_error(r, 500, "internal", "out of memory", NULL);
		goto out;
	}
	if (reserve_version(r, c, cart_id, 0, &ch->cart.version, &res) != 0)
		goto out;
	ch->cart.updated_ms = ids_now_ms();
	res = publish_change(r, ch, updated);
	ch = NULL;
out:
	if (c)
		cache_pool_put(r->api->cache, c);
	free(items_only);
	free(ch);
	json_decref(root);
	return res;
}

static enum MHD_Result deleted(struct request *r)
{
	struct cart_change *ch = r->ctx;
	char version[24];
	struct cache *c;
	long long v = 0;
	int rc = ERR_UNAVAILABLE;

	if (atomic_load(&r->publish_result) != ERR_OK)
		return change_failed(r);
	snprintf(version, sizeof(version), "%" PRId64, ch->cart.version);
	c = cache_pool_get(r->api->cache);
	if (c) {
		rc = script_result(cache_command(c, "EVAL %s 1 cart:%s %s %s", delete_script,
		                                 ch->cart.cart_id, r->key->client_id, version),
		                   &v);
		cache_pool_put(r->api->cache, c);
	}
	if (rc != ERR_OK)
		return respond_unavailable(r, "the cart store");
	/* 0 (another delete got there first) and 2 (a later change won) are
	 * answered alike: this delete was taken, in its place in the order. */
	log_info("cart deleted", LF_STR("request_id", r->request_id),
	         LF_STR("cart_id", ch->cart.cart_id), LF_INT("applied", v == 1));
	return respond_empty(r, 204);
}

enum MHD_Result carts_delete(struct request *r, const char *cart_id)
{
	struct cart_change *ch;
	enum MHD_Result res;
	struct cache *c;
	int rc;

	if (require_role(r, ROLE_CLIENT, &res) != ERR_OK ||
	    require_query_args(r, NULL, &res) != ERR_OK)
		return res;
	if (!ids_uuid_valid(cart_id))
		return cart_not_found(r);
	ch = calloc(1, sizeof(*ch));
	if (!ch)
		return respond_error(r, 500, "internal", "out of memory", NULL);
	c = cache_pool_get(r->api->cache);
	if (!c) {
		free(ch);
		return respond_unavailable(r, "the cache");
	}
	/* The message carries the cart as it was, marked deleted. */
	rc = cart_load(r, c, cart_id, &ch->cart);
	if (rc != ERR_OK) {
		res = rc == ERR_NOT_FOUND ? cart_not_found(r)
		                          : respond_unavailable(r, "the cart store");
	} else if (reserve_version(r, c, cart_id, 1, &ch->cart.version, &res) == 0) {
		ch->cart.updated_ms = ids_now_ms();
		ch->deleted = 1;
		cache_pool_put(r->api->cache, c);
		return publish_change(r, ch, deleted);
	}
	cache_pool_put(r->api->cache, c);
	free(ch);
	return res;
}
