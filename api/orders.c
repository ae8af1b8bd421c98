/* orders.c: GET /v1/orders/{order_id}: the database's view, else the pending snapshot. */
#include "api.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "err.h"
#include "ids.h"
#include "log.h"

/* One SELECT builds the whole document, so it is consistent with itself. */
static const char order_sql[] =
    "SELECT json_build_object("
    "  'order_id', o.order_id, 'status', o.status, 'customer_id', o.customer_id,"
    "  'currency', o.currency,"
    "  'items', COALESCE((SELECT json_agg(json_build_object("
    "      'sku', l.sku, 'quantity', l.quantity, 'unit_price_cents', l.unit_price_cents,"
    "      'line_total_cents', l.unit_price_cents * l.quantity) ORDER BY l.line_no)"
    "    FROM order_lines l WHERE l.order_id = o.order_id), '[]'::json),"
    "  'total_cents', o.total_cents,"
    "  'payment', CASE WHEN o.payment_token IS NULL THEN NULL ELSE json_build_object("
    "      'token', o.payment_token, 'brand', o.card_brand, 'last4', o.card_last4) END,"
    "  'failure_reason', o.failure_reason,"
    "  'created_at', to_char(o.created_at AT TIME ZONE 'UTC',"
    "                        'YYYY-MM-DD\"T\"HH24:MI:SS.MS\"Z\"'),"
    "  'updated_at', to_char(o.updated_at AT TIME ZONE 'UTC',"
    "                        'YYYY-MM-DD\"T\"HH24:MI:SS.MS\"Z\"'))"
    " FROM orders o WHERE o.order_id = $1::uuid AND ($2 = '' OR o.client_id = $2)";

/* Drop the members the contract leaves out when they do not apply. */
static json_t *tidy(json_t *order)
{
	if (json_is_null(json_object_get(order, "payment")))
		json_object_del(order, "payment");
	if (json_is_null(json_object_get(order, "failure_reason")))
		json_object_del(order, "failure_reason");
	return order;
}

enum MHD_Result orders_get(struct request *r, const char *order_id)
{
	enum MHD_Result result;
	/* A client key sees its own orders; admin keys see every order. */
	const char *client = r->key && r->key->role == ROLE_CLIENT ? r->key->client_id : "";
	const char *params[2] = {order_id, client};
	const char *json;
	PGresult *res = NULL;
	struct db *d;
	struct cache *c;
	redisReply *rep;
	json_t *doc = NULL;
	int rc;

	if (require_role(r, ROLE_CLIENT, &result) != ERR_OK ||
	    require_query_args(r, NULL, &result) != ERR_OK)
		return result;
	if (!ids_uuid_valid(order_id))
		return respond_error(r, 404, "order_not_found", "no order has that id", NULL);
	log_context_set(r->request_id, NULL, order_id);

	d = db_pool_get(r->api->db);
	if (!d)
		return respond_unavailable(r, "the database");
	rc = db_exec(d, order_sql, 2, params, &res);
	db_pool_put(r->api->db, d);
	if (rc != ERR_OK)
		return respond_unavailable(r, "the database");
	if (PQntuples(res) == 1)
		doc = json_loads(PQgetvalue(res, 0, 0), 0, NULL);
	PQclear(res);
	if (doc)
		return respond_obj(r, 200, tidy(doc), NULL);

	/* Accepted but not yet seen by inventory-consumer: the API's snapshot. */
	c = cache_pool_get(r->api->cache);
	if (!c)
		return respond_unavailable(r, "the cache");
	rep = cache_command(c, "GET order:%s", order_id);
	cache_pool_put(r->api->cache, c);
	if (!rep)
		return respond_unavailable(r, "the cache");
	/* "<client_id> <json>", written by checkout.c. */
	json = rep->type == REDIS_REPLY_STRING ? strchr(rep->str, ' ') : NULL;
	if (json && (!client[0] || ((size_t)(json - rep->str) == strlen(client) &&
	                            memcmp(rep->str, client, strlen(client)) == 0)))
		doc = json_loads(json + 1, 0, NULL);
	freeReplyObject(rep);
	if (doc)
		return respond_obj(r, 200, doc, NULL);
	return respond_error(r, 404, "order_not_found", "no order has that id", NULL);
}
