/* catalog.c: products: PUT/GET /v1/products/{sku}, GET /v1/products, and the product cache. */
#include "api.h"

#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "err.h"
#include "log.h"
#include "parse.h"

/*
 * Redis keys: "product:{sku}" is a hash (name, price_cents, currency),
 * filled from the database on a miss and dropped by PUT, so the next
 * reader fills it afresh; it also expires, which bounds how long a fill
 * that raced a PUT can serve the old price. "available:{sku}" holds stock
 * minus reservations for at most one second, so what clients see lags the
 * database by at most that. "products:page:{limit}:{after}" holds one page
 * of GET /v1/products, the response body as it was sent, for at most one
 * second too: under load every list request but one a second per page is
 * answered from Redis, and no page is staler than the contract allows.
 * (A SKU never contains ':', so the key names one page only.)
 */
#define PRODUCT_TTL_S 300
#define AVAILABLE_TTL_MS 1000
#define PAGE_TTL_MS 1000
/* Characters, as the database counts them; UTF-8 takes up to 4 bytes each. */
#define NAME_MAX_CHARS 200
#define NAME_MAX_BYTES (4 * NAME_MAX_CHARS)

static void cache_product(struct cache *c, const char *sku, const char *name, int64_t price,
                          const char *currency)
{
	char price_s[24];
	redisReply *rep;

	snprintf(price_s, sizeof(price_s), "%" PRId64, price);
	rep = cache_command(c, "HSET product:%s name %s price_cents %s currency %s", sku, name,
	                    price_s, currency);
	if (rep)
		freeReplyObject(rep);
	rep = cache_command(c, "EXPIRE product:%s %d", sku, PRODUCT_TTL_S);
	if (rep)
		freeReplyObject(rep);
}

int product_batch_add(struct cache_batch *b, const char *sku)
{
	char key[sizeof("product:") + 64];
	const char *argv[] = {"HMGET", key, "name", "price_cents", "currency"};

	/* A longer sku is no valid one, and no product would be found. */
	if ((size_t)snprintf(key, sizeof(key), "product:%s", sku) >= sizeof(key))
		return ERR_INVALID;
	return cache_batch_add_argv(b, 5, argv, NULL);
}

/* The fields of product_batch_add's reply; ERR_NOT_FOUND when the cache
 * does not hold the product (or the reply is not what we wrote). */
static int product_from_reply(const redisReply *rep, int64_t *price_cents, char currency[4],
                              char *name_out, size_t name_len)
{
	if (!rep || rep->type != REDIS_REPLY_ARRAY || rep->elements != 3 ||
	    rep->element[0]->type != REDIS_REPLY_STRING ||
	    rep->element[1]->type != REDIS_REPLY_STRING ||
	    rep->element[2]->type != REDIS_REPLY_STRING || rep->element[2]->len != 3)
		return ERR_NOT_FOUND;
	*price_cents = strtoll(rep->element[1]->str, NULL, 10);
	memcpy(currency, rep->element[2]->str, 4);
	if (name_out)
		snprintf(name_out, name_len, "%s", rep->element[0]->str);
	return ERR_OK;
}

/* A cache miss: the database knows, and the next caller finds it cached. */
static int product_from_db(struct api *a, struct cache *c, const char *sku, int64_t *price_cents,
                           char currency[4], char *name_out, size_t name_len)
{
	const char *params[1] = {sku};
	PGresult *res = NULL;
	struct db *d;
	int rc;

	d = db_pool_get(a->db);
	if (!d)
		return ERR_UNAVAILABLE;
	rc = db_exec(d, "SELECT name, price_cents, currency FROM products WHERE sku = $1", 1,
	             params, &res);
	db_pool_put(a->db, d);
	if (rc != ERR_OK)
		return ERR_UNAVAILABLE;
	if (PQntuples(res) != 1) {
		PQclear(res);
		return ERR_NOT_FOUND;
	}
	*price_cents = strtoll(PQgetvalue(res, 0, 1), NULL, 10);
	snprintf(currency, 4, "%s", PQgetvalue(res, 0, 2));
	if (name_out)
		snprintf(name_out, name_len, "%s", PQgetvalue(res, 0, 0));
	cache_product(c, sku, PQgetvalue(res, 0, 0), *price_cents, currency);
	PQclear(res);
	return ERR_OK;
}

int product_lookup(struct api *a, struct cache *c, const char *sku, int64_t *price_cents,
                   char currency[4], char *name_out, size_t name_len)
{
	redisReply *rep = cache_command(c, "HMGET product:%s name price_cents currency", sku);
	int rc = product_from_reply(rep, price_cents, currency, name_out, name_len);

	if (rep)
		freeReplyObject(rep);
	if (rc == ERR_OK)
		return ERR_OK;
	return product_from_db(a, c, sku, price_cents, currency, name_out, name_len);
}

/* One line's price: rc is ERR_OK, ERR_NOT_FOUND (no such product) or
 * ERR_UNAVAILABLE (the database could not say). */
struct product_price {
	int rc;
	int64_t cents;
	char currency[4];
};

/* What product_lookup finds for each of skus[0..n-1] (n at most
 * PRODUCT_PRICES_MAX), into out[i], up to the first line it cannot price
 * (the lines after that one are left unknown); known as for require_prices. */
static void product_prices(struct api *a, struct cache *c, const char *const *skus, size_t n,
                           redisReply *const *known, struct product_price *out)
{
	redisReply *rep[PRODUCT_PRICES_MAX];
	size_t ask[PRODUCT_PRICES_MAX];
	struct cache_batch b;
	size_t nask = 0, i;

	cache_batch_init(&b);
	for (i = 0; i < n; i++) {
		out[i].rc = ERR_NOT_FOUND;
		if (known && known[i])
			out[i].rc =
			    product_from_reply(known[i], &out[i].cents, out[i].currency, NULL, 0);
		else if (product_batch_add(&b, skus[i]) == ERR_OK)
			ask[nask++] = i;
	}
	/* A Redis that fails is a cache that misses: the database answers. */
	if (nask && cache_batch_run(c, &b, rep) == ERR_OK) {
		for (size_t k = 0; k < nask; k++) {
			out[ask[k]].rc = product_from_reply(rep[k], &out[ask[k]].cents,
			                                    out[ask[k]].currency, NULL, 0);
			freeReplyObject(rep[k]);
		}
	}
	cache_batch_release(&b);
	/* The answer is the first line that fails, so the lines after it are
	 * not looked up: a body of 100 unknown skus costs one query, not 100. */
	for (i = 0; i < n; i++) {
		if (out[i].rc == ERR_OK)
			continue;
		out[i].rc = product_from_db(a, c, skus[i], &out[i].cents, out[i].currency, NULL, 0);
		if (out[i].rc != ERR_OK)
			break;
	}
}

int require_prices(struct request *r, struct cache *c, const char *const *skus, size_t n,
                   redisReply *const *known, const char *currency, const size_t *origin,
                   const char *mismatch, int64_t *cents, enum MHD_Result *result)
{
	struct product_price p[PRODUCT_PRICES_MAX];
	char field[48];

	if (n > PRODUCT_PRICES_MAX) {
		*result = respond_error(r, 500, "internal", "too many lines to price", NULL);
		return ERR_TOO_BIG;
	}
	product_prices(r->api, c, skus, n, known, p);
	for (size_t i = 0; i < n; i++) {
		snprintf(field, sizeof(field), "items[%zu].sku", origin ? origin[i] : i);
		if (p[i].rc == ERR_NOT_FOUND) {
			*result =
			    respond_error(r, 422, "unknown_sku", "no product has that sku", field);
			return ERR_INVALID;
		}
		if (p[i].rc != ERR_OK) {
			*result = respond_unavailable(r, "the product catalog");
			return ERR_UNAVAILABLE;
		}
		if (strcmp(p[i].currency, currency) != 0) {
			*result = respond_error(r, 422, "currency_mismatch", mismatch, field);
			return ERR_INVALID;
		}
		cents[i] = p[i].cents;
	}
	return ERR_OK;
}

/* A field that must be an integer in [min, max]; the 422 otherwise. */
static int int_field(json_t *obj, const char *key, int64_t min, int64_t max, int64_t *out,
                     struct api_error *e)
{
	json_t *v = json_object_get(obj, key);

	if (!json_is_integer(v) || json_integer_value(v) < min || json_integer_value(v) > max)
		return api_error_set(e, 422, "validation_error", key,
		                     "'%s' must be an integer from %" PRId64 " to %" PRId64, key,
		                     min, max);
	*out = json_integer_value(v);
	return ERR_OK;
}

/* Characters in a valid UTF-8 string: the bytes that do not continue one. */
static size_t utf8_chars(const char *s)
{
	size_t n = 0;

	for (; *s; s++)
		n += ((unsigned char)*s & 0xc0) != 0x80;
	return n;
}

int catalog_parse_put(json_t *body, struct product_put *p, struct api_error *e)
{
	static const char *const fields[] = {"name", "price_cents", "currency", "stock", NULL};
	json_t *name;

	if (fields_only(body, "", fields, e) != ERR_OK)
		return ERR_INVALID;
	name = json_object_get(body, "name");
	if (!json_is_string(name) || json_string_length(name) < 1 ||
	    json_string_length(name) > NAME_MAX_BYTES ||
	    utf8_chars(json_string_value(name)) > NAME_MAX_CHARS)
		return api_error_set(e, 422, "validation_error", "name",
		                     "'name' must be a string of 1 to 200 characters");
	p->name = name;
	p->currency = json_string_value(json_object_get(body, "currency"));
	if (!p->currency || !valid_currency(p->currency))
		return api_error_set(e, 422, "validation_error", "currency",
		                     "'currency' must be an ISO 4217 code such as \"USD\"");
	if (int_field(body, "price_cents", 0, INT64_C(1000000000000), &p->price_cents, e) ||
	    int_field(body, "stock", 0, INT64_C(1000000000), &p->stock, e))
		return ERR_INVALID;
	return ERR_OK;
}

enum MHD_Result catalog_put(struct request *r, const char *sku)
{
	enum MHD_Result result;
	struct product_put p;
	struct api_error perr;
	json_t *body;
	char price_s[24], stock_s[24];
	const char *params[5];
	PGresult *res = NULL;
	struct db *d;
	struct cache *c;
	int rc, created;
	json_t *out;

	if (require_role(r, ROLE_ADMIN, &result) != ERR_OK ||
	    require_query_args(r, NULL, &result) != ERR_OK)
		return result;
	if (!valid_sku(sku))
		return respond_error(r, 422, "validation_error",
		                     "sku must be 1 to 64 of A-Z a-z 0-9 . _ -", "sku");
	body = body_json(r, &result);
	if (!body)
		return result;
	if (catalog_parse_put(body, &p, &perr) != ERR_OK) {
		json_decref(body);
		return respond_api_error(r, &perr);
	}

	snprintf(price_s, sizeof(price_s), "%" PRId64, p.price_cents);
	snprintf(stock_s, sizeof(stock_s), "%" PRId64, p.stock);
	params[0] = sku;
	params[1] = json_string_value(p.name);
	params[2] = price_s;
	params[3] = p.currency;
	params[4] = stock_s;
	d = db_pool_get(r->api->db);
	if (!d) {
		json_decref(body);
		return respond_unavailable(r, "the database");
	}
	/* xmax = 0 only on a row this statement inserted: 201 versus 200. */
	rc = db_exec(d,
	             "INSERT INTO products (sku, name, price_cents, currency, stock)"
	             " VALUES ($1, $2, $3, $4, $5)"
	             " ON CONFLICT (sku) DO UPDATE SET name = EXCLUDED.name,"
	             "   price_cents = EXCLUDED.price_cents, currency = EXCLUDED.currency,"
	             "   stock = EXCLUDED.stock, updated_at = now()"
	             " RETURNING (xmax = 0), stock - reserved, reserved",
	             5, params, &res);
	db_pool_put(r->api->db, d);
	if (rc == ERR_INVALID) {
		json_decref(body);
		return respond_error(r, 409, "stock_below_reserved",
		                     "stock cannot be set below the units currently reserved",
		                     "stock");
	}
	if (rc != ERR_OK) {
		json_decref(body);
		return respond_unavailable(r, "the database");
	}
	created = strcmp(PQgetvalue(res, 0, 0), "t") == 0;
	out = json_pack("{s:s, s:O, s:I, s:s, s:I, s:I}", "sku", sku, "name", p.name, "price_cents",
	                (json_int_t)p.price_cents, "currency", p.currency, "stock",
	                (json_int_t)p.stock, "available",
	                (json_int_t)strtoll(PQgetvalue(res, 0, 1), NULL, 10));
	PQclear(res);

	c = cache_pool_get(r->api->cache);
	if (c) {
		redisReply *rep;

		rep = cache_command(c, "DEL product:%s available:%s", sku, sku);
		if (rep)
			freeReplyObject(rep);
		cache_pool_put(r->api->cache, c);
	}
	log_info("product saved", LF_STR("request_id", r->request_id), LF_STR("sku", sku),
	         LF_INT("stock", p.stock), LF_INT("created", created));
	json_decref(body);
	return respond_obj(r, created ? 201 : 200, out, NULL);
}

/* available for sku: the one-second cache, else the database. */
static int product_available(struct api *a, struct cache *c, const char *sku, int64_t *out)
{
	const char *params[1] = {sku};
	redisReply *rep;
	PGresult *res = NULL;
	struct db *d;
	int rc;

	rep = cache_command(c, "GET available:%s", sku);
	if (rep && rep->type == REDIS_REPLY_STRING) {
		*out = strtoll(rep->str, NULL, 10);
		freeReplyObject(rep);
		return ERR_OK;
	}
	if (rep)
		freeReplyObject(rep);
	d = db_pool_get(a->db);
	if (!d)
		return ERR_UNAVAILABLE;
	rc = db_exec(d, "SELECT stock - reserved FROM products WHERE sku = $1", 1, params, &res);
	db_pool_put(a->db, d);
	if (rc != ERR_OK)
		return ERR_UNAVAILABLE;
	if (PQntuples(res) != 1) {
		PQclear(res);
		return ERR_NOT_FOUND;
	}
	*out = strtoll(PQgetvalue(res, 0, 0), NULL, 10);
	rep = cache_command(c, "SET available:%s %s PX %d", sku, PQgetvalue(res, 0, 0),
	                    AVAILABLE_TTL_MS);
	if (rep)
		freeReplyObject(rep);
	PQclear(res);
	return ERR_OK;
}

enum MHD_Result catalog_get(struct request *r, const char *sku)
{
	enum MHD_Result result;
	struct cache *c;
	char currency[4], name[NAME_MAX_BYTES + 1];
	int64_t price = 0, available = 0;
	int rc;

	if (require_role(r, ROLE_CLIENT, &result) != ERR_OK ||
	    require_query_args(r, NULL, &result) != ERR_OK)
		return result;
	if (!valid_sku(sku))
		return respond_error(r, 404, "product_not_found", "no product has that sku", NULL);
	c = cache_pool_get(r->api->cache);
	if (!c)
		return respond_unavailable(r, "the cache");
	rc = product_lookup(r->api, c, sku, &price, currency, name, sizeof(name));
	if (rc == ERR_OK)
		rc = product_available(r->api, c, sku, &available);
	cache_pool_put(r->api->cache, c);
	if (rc == ERR_NOT_FOUND)
		return respond_error(r, 404, "product_not_found", "no product has that sku", NULL);
	if (rc != ERR_OK)
		return respond_unavailable(r, "the database");
	return respond_obj(r, 200,
	                   json_pack("{s:s, s:s, s:I, s:s, s:I}", "sku", sku, "name", name,
	                             "price_cents", (json_int_t)price, "currency", currency,
	                             "available", (json_int_t)(available < 0 ? 0 : available)),
	                   NULL);
}

/*
 * One page of the catalog from the database, as the response body
 * (malloc'd) into *out: limit products after the SKU after ("" for the
 * first page). ERR_UNAVAILABLE, ERR_NOMEM.
 */
static int page_from_db(struct api *a, const char *after, long limit, char **out)
{
	char limit_buf[24];
	const char *params[2];
	PGresult *res = NULL;
	struct db *d;
	json_t *products, *page;
	char *text;
	int rc, n;

	/* One more than asked tells whether there is a next page. */
	snprintf(limit_buf, sizeof(limit_buf), "%ld", limit + 1);
	params[0] = after;
	params[1] = limit_buf;
	d = db_pool_get(a->db);
	if (!d)
		return ERR_UNAVAILABLE;
	rc = db_exec(d,
	             "SELECT sku, name, price_cents, currency, stock - reserved FROM products"
	             " WHERE sku > $1 ORDER BY sku LIMIT $2::int",
	             2, params, &res);
	db_pool_put(a->db, d);
	if (rc != ERR_OK)
		return ERR_UNAVAILABLE;
	products = json_array();
	n = PQntuples(res);
	for (int i = 0; i < n && i < limit; i++)
		json_array_append_new(
		    products, json_pack("{s:s, s:s, s:I, s:s, s:I}", "sku", PQgetvalue(res, i, 0),
		                        "name", PQgetvalue(res, i, 1), "price_cents",
		                        (json_int_t)strtoll(PQgetvalue(res, i, 2), NULL, 10),
		                        "currency", PQgetvalue(res, i, 3), "available",
		                        (json_int_t)strtoll(PQgetvalue(res, i, 4), NULL, 10)));
	page = json_pack("{s:o, s:o}", "products", products, "next_after",
	                 n > limit ? json_string(PQgetvalue(res, (int)limit - 1, 0)) : json_null());
	PQclear(res);
	text = page ? json_dumps(page, JSON_COMPACT) : NULL;
	json_decref(page);
	if (!text)
		return ERR_NOMEM;
	*out = text;
	return ERR_OK;
}

int catalog_parse_list(const char *limit_s, const char *after_s, long *limit, const char **after,
                       struct api_error *e)
{
	char *end;

	*limit = 50;
	if (limit_s) {
		*limit = strtol(limit_s, &end, 10);
		if (!*limit_s || *end || *limit < 1 || *limit > 200)
			return api_error_set(e, 422, "validation_error", "limit",
			                     "'limit' must be an integer from 1 to 200");
	}
	if (after_s && !valid_sku(after_s))
		return api_error_set(e, 422, "validation_error", "after", "'after' must be a sku");
	*after = after_s ? after_s : "";
	return ERR_OK;
}

enum MHD_Result catalog_list(struct request *r)
{
	static const char *const list_args[] = {"limit", "after", NULL};
	enum MHD_Result result;
	struct api_error perr;
	const char *after;
	char key[128];
	struct cache *c;
	redisReply *rep;
	char *page = NULL;
	long limit;
	int rc;

	if (require_role(r, ROLE_CLIENT, &result) != ERR_OK ||
	    require_query_args(r, list_args, &result) != ERR_OK)
		return result;
	if (catalog_parse_list(MHD_lookup_connection_value(r->conn, MHD_GET_ARGUMENT_KIND, "limit"),
	                       MHD_lookup_connection_value(r->conn, MHD_GET_ARGUMENT_KIND, "after"),
	                       &limit, &after, &perr) != ERR_OK)
		return respond_api_error(r, &perr);

	c = cache_pool_get(r->api->cache);
	if (!c)
		return respond_unavailable(r, "the cache");
	snprintf(key, sizeof(key), "products:page:%ld:%s", limit, after);
	rep = cache_command(c, "GET %s", key);
	if (rep && rep->type == REDIS_REPLY_STRING) {
		result = respond_json(r, 200, rep->str, NULL);
		freeReplyObject(rep);
		cache_pool_put(r->api->cache, c);
		return result;
	}
	if (rep)
		freeReplyObject(rep);

	/* A miss (or Redis failing): the database, and the next second's
	 * requests for this page find it cached. */
	rc = page_from_db(r->api, after, limit, &page);
	if (rc == ERR_OK) {
		rep = cache_command(c, "SET %s %s PX %d", key, page, PAGE_TTL_MS);
		if (rep)
			freeReplyObject(rep);
	}
	cache_pool_put(r->api->cache, c);
	if (rc == ERR_NOMEM)
		return respond_error(r, 500, "internal", "out of memory", NULL);
	if (rc != ERR_OK)
		return respond_unavailable(r, "the database");
	result = respond_json(r, 200, page, NULL);
	free(page);
	return result;
}
