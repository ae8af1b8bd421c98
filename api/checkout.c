/* checkout.c: POST /v1/checkouts: validate, deduplicate, seal the card, publish, answer 202 on
 * confirm. */
#include "api.h"

#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include <sodium.h>

#include "card.h"
#include "err.h"
#include "ids.h"
#include "log.h"
#include "parse.h"
#include "proto.h"

#define MAX_LINES CHECKOUT_MAX_LINES
/*
 * A checkout holds its Idempotency-Key from the claim to its answer: a few
 * Redis commands (1 s timeout each), the publish (publish timeout), and the
 * settler's writes, which it retries while Redis fails until a second
 * before the in-flight record expires. The record expires this long after
 * the publish timeout, so a key whose owner could not release it (Redis
 * down at the time) blocks retries only briefly.
 */
#define IDEM_PENDING_SLACK_S 10
/* How long a finished checkout's answer is replayed (the contract: >= 24 h). */
#define IDEM_DONE_TTL_S (48 * 3600)
#define ORDER_SNAPSHOT_TTL_S (24 * 3600)

/*
 * The Redis record of an Idempotency-Key, "idem:{client}:{key}":
 *   "P:<body hash>:<token>"  a checkout with this key is in flight; the
 *                            token (a random UUID) is that request's own
 *   "D:<body hash>:<json>"   it was accepted; <json> is the 202 body
 * The body hash is BLAKE2b-128 of the raw body in hex (32 digits).
 *
 * A checkout reads the record and, when there is none, takes the key in
 * the same step (one round trip, together with its products), before it
 * validates anything: a replay gets the first answer whatever has changed
 * since. A checkout that then fails gives the key back before it answers.
 * Once the broker has confirmed the message, the settler writes the "D:"
 * record and the order's pending view before the 202 goes out.
 */
#define BODY_HASH_HEX 32
#define IDEM_PENDING_LEN (2 + BODY_HASH_HEX + 1 + IDS_UUID_LEN)

static void checkout_release(struct checkout *co)
{
	card_wipe(&co->card);
	json_decref(co->root);
}

/* ---- validation ----------------------------------------------------------- */

/* A string member of obj, 1..max characters, or NULL. */
static const char *str_member(json_t *obj, const char *key, size_t max)
{
	json_t *v = json_object_get(obj, key);

	if (!json_is_string(v) || json_string_length(v) < 1 || json_string_length(v) > max)
		return NULL;
	return json_string_value(v);
}

/* An ISO 3166-1 alpha-2 code's shape: two upper-case letters. */
static int valid_country(const char *s)
{
	return s && s[0] >= 'A' && s[0] <= 'Z' && s[1] >= 'A' && s[1] <= 'Z' && !s[2];
}

static int invalid(struct api_error *e, const char *message, const char *field)
{
	return api_error_set(e, 422, "validation_error", field, "%s", message);
}

static int invalid_card(struct api_error *e, const char *message, const char *field)
{
	return api_error_set(e, 422, "invalid_card", field, "%s", message);
}

int checkout_parse(json_t *root, time_t now, struct checkout *co, struct api_error *e)
{
	static const char *const top_fields[] = {
	    "cart_id", "items", "currency", "customer", "shipping_address", "payment", NULL};
	static const char *const customer_fields[] = {"id", "email", NULL};
	static const char *const address_fields[] = {"name",        "line1",   "line2", "city",
	                                             "postal_code", "country", NULL};
	static const char *const item_fields[] = {"sku", "quantity", NULL};
	static const char *const payment_fields[] = {"card", NULL};
	static const char *const card_fields[] = {"number", "exp_month", "exp_year", "cvc", NULL};
	json_t *customer, *items, *payment, *card, *v;
	const char *number, *cvc;
	char field[48];
	struct tm tm;
	size_t i;

	if (fields_only(root, "", top_fields, e) != ERR_OK)
		return ERR_INVALID;
	v = json_object_get(root, "cart_id");
	if (v) {
		const char *id = json_text(v, IDS_UUID_LEN);

		if (!json_is_string(v))
			return invalid(e, "'cart_id' must be a cart id string", "cart_id");
		if (json_object_get(root, "items") || json_object_get(root, "currency"))
			return invalid(e,
			               "give either 'cart_id' or 'items' with 'currency', not both",
			               "cart_id");
		if (!id || !ids_uuid_valid(id))
			return api_error_set(e, 404, "cart_not_found", "cart_id",
			                     "no cart has that id");
		snprintf(co->cart_id, sizeof(co->cart_id), "%s", id);
	}
	customer = json_object_get(root, "customer");
	if (!json_is_object(customer))
		return invalid(e, "'customer' with an id is required", "customer");
	if (fields_only(customer, "customer", customer_fields, e) != ERR_OK)
		return ERR_INVALID;
	if (!(co->customer_id = str_member(customer, "id", 128)))
		return invalid(e, "'customer.id' must be a string of 1 to 128 characters",
		               "customer.id");
	co->customer_email = "";
	if (json_object_get(customer, "email")) {
		co->customer_email = str_member(customer, "email", 254);
		if (!co->customer_email || !strchr(co->customer_email, '@'))
			return invalid(e, "'customer.email' must be an email address",
			               "customer.email");
	}
	co->shipping = json_object_get(root, "shipping_address");
	if (!json_is_object(co->shipping))
		return invalid(e, "'shipping_address' is required", "shipping_address");
	if (fields_only(co->shipping, "shipping_address", address_fields, e) != ERR_OK)
		return ERR_INVALID;
	{
		static const char *const required[] = {"name", "line1", "city", "postal_code",
		                                       "country"};

		for (i = 0; i < sizeof(required) / sizeof(required[0]); i++) {
			if (!str_member(co->shipping, required[i], 200)) {
				snprintf(field, sizeof(field), "shipping_address.%s", required[i]);
				return invalid(e, "a required shipping address field is missing",
				               field);
			}
		}
		v = json_object_get(co->shipping, "line2");
		if (v && !json_is_null(v) && !str_member(co->shipping, "line2", 200))
			return invalid(e, "'shipping_address.line2' must be a string",
			               "shipping_address.line2");
		v = json_object_get(co->shipping, "country");
		if (!valid_country(json_string_value(v)))
			return invalid(e, "'shipping_address.country' must be an ISO 3166 code",
			               "shipping_address.country");
	}

	if (co->cart_id[0])
		goto payment; /* lines and currency come from the cart */
	co->currency = str_member(root, "currency", 3);
	if (!co->currency || !valid_currency(co->currency))
		return invalid(e, "'currency' must be an ISO 4217 code such as \"USD\"",
		               "currency");
	items = json_object_get(root, "items");
	if (!json_is_array(items))
		return invalid(e, "'items' or 'cart_id' is required", "items");
	if (json_array_size(items) == 0)
		return api_error_set(e, 422, "empty_cart", "items", "the checkout has no items");
	if (json_array_size(items) > MAX_LINES)
		return invalid(e, "at most 100 items", "items");
	json_array_foreach(items, i, v)
	{
		json_t *q = json_object_get(v, "quantity");
		const char *sku = str_member(v, "sku", 64);

		snprintf(field, sizeof(field), "items[%zu]", i);
		if (!json_is_object(v))
			return invalid(e, "each item must be an object with sku and quantity",
			               field);
		if (fields_only(v, field, item_fields, e) != ERR_OK)
			return ERR_INVALID;
		if (!sku || !valid_sku(sku)) {
			snprintf(field, sizeof(field), "items[%zu].sku", i);
			return invalid(e, "sku must be 1 to 64 of A-Z a-z 0-9 . _ -", field);
		}
		if (!json_is_integer(q) || json_integer_value(q) < 1 ||
		    json_integer_value(q) > CHECKOUT_MAX_QUANTITY) {
			snprintf(field, sizeof(field), "items[%zu].quantity", i);
			return invalid(e, "quantity must be an integer from 1 to 999", field);
		}
		co->lines[i].sku = sku;
		co->lines[i].quantity = (int)json_integer_value(q);
	}
	co->nlines = json_array_size(items);

payment:
	payment = json_object_get(root, "payment");
	if (!json_is_object(payment))
		return invalid(e, "'payment' with a card is required", "payment");
	if (fields_only(payment, "payment", payment_fields, e) != ERR_OK)
		return ERR_INVALID;
	card = json_object_get(payment, "card");
	if (!json_is_object(card))
		return invalid(e, "'payment.card' is required", "payment.card");
	if (fields_only(card, "payment.card", card_fields, e) != ERR_OK)
		return ERR_INVALID;
	/* The messages below never quote what was sent: it may be a card number. */
	number = str_member(card, "number", CARD_NUMBER_MAX);
	if (!number || !card_luhn_ok(number))
		return invalid_card(e, "the card number is not valid", "payment.card.number");
	/* Out-of-range values become 0, which card_validate refuses. */
	v = json_object_get(card, "exp_month");
	co->card.exp_month =
	    json_is_integer(v) && json_integer_value(v) >= 1 && json_integer_value(v) <= 12
	        ? (int)json_integer_value(v)
	        : 0;
	v = json_object_get(card, "exp_year");
	co->card.exp_year =
	    json_is_integer(v) && json_integer_value(v) >= 1000 && json_integer_value(v) <= 9999
	        ? (int)json_integer_value(v)
	        : 0;
	cvc = str_member(card, "cvc", CARD_CVC_MAX);
	if (!cvc)
		return invalid_card(e, "the card's CVC is not valid", "payment.card.cvc");
	snprintf(co->card.number, sizeof(co->card.number), "%s", number);
	snprintf(co->card.cvc, sizeof(co->card.cvc), "%s", cvc);
	gmtime_r(&now, &tm);
	switch (card_validate(&co->card, tm.tm_year + 1900, tm.tm_mon + 1)) {
	case CARD_OK:
		break;
	case CARD_BAD_EXPIRY:
		/* The year is at fault when the month is fine and the year is bad or past. */
		return invalid_card(e, card_problem_str(CARD_BAD_EXPIRY),
		                    co->card.exp_month && co->card.exp_year < tm.tm_year + 1900
		                        ? "payment.card.exp_year"
		                        : "payment.card.exp_month");
	case CARD_BAD_CVC:
		return invalid_card(e, card_problem_str(CARD_BAD_CVC), "payment.card.cvc");
	default:
		return invalid_card(e, card_problem_str(CARD_BAD_NUMBER), "payment.card.number");
	}
	return ERR_OK;
}

/* The lines of the checkout's cart, read now; 0 on success, else *res is queued. */
static int cart_lines(struct request *r, struct cache *c, struct checkout *co, enum MHD_Result *res)
{
	int rc = cart_load(r, c, co->cart_id, &co->cart);

	if (rc == ERR_NOT_FOUND) {
		*res = respond_error(r, 404, "cart_not_found", "no cart has that id", "cart_id");
		return -1;
	}
	if (rc != ERR_OK) {
		*res = respond_unavailable(r, "the cart store");
		return -1;
	}
	if (strcmp(co->cart.status, "open") != 0) {
		*res = respond_error(r, 409, "cart_checked_out", "the cart is already checked out",
		                     "cart_id");
		return -1;
	}
	if (co->cart.nlines == 0) {
		*res = respond_error(r, 422, "empty_cart", "the cart has no items", "cart_id");
		return -1;
	}
	co->currency = co->cart.currency;
	for (size_t i = 0; i < co->cart.nlines; i++) {
		co->lines[i].sku = co->cart.lines[i].sku;
		co->lines[i].quantity = co->cart.lines[i].quantity;
	}
	co->nlines = co->cart.nlines;
	return 0;
}

/* Prices from the product cache (known[i]: line i's cache read, already
 * made, or NULL); 0 on success, else *res is queued. */
static int price_lines(struct request *r, struct cache *c, struct checkout *co,
                       redisReply *const *known, enum MHD_Result *res)
{
	const char *skus[MAX_LINES];
	int64_t cents[MAX_LINES];

	for (size_t i = 0; i < co->nlines; i++)
		skus[i] = co->lines[i].sku;
	if (require_prices(r, c, skus, co->nlines, known, co->currency, NULL,
	                   "the product is sold in another currency", cents, res) != ERR_OK)
		return -1;
	co->total = 0;
	for (size_t i = 0; i < co->nlines; i++) {
		co->lines[i].unit_price = cents[i];
		co->total += cents[i] * co->lines[i].quantity;
	}
	return 0;
}

/* ---- idempotency ---------------------------------------------------------- */

int valid_idempotency_key(const char *k)
{
	size_t n = 0;

	for (; k[n]; n++)
		if (k[n] < ' ' || k[n] > '~')
			return 0;
	return n >= 1 && n <= 255;
}

/* Keyed, so the record in Redis says nothing about the card in the body. */
static void body_hash(const struct request *r, char out[BODY_HASH_HEX + 1])
{
	unsigned char h[BODY_HASH_HEX / 2];

	crypto_generichash(h, sizeof(h), (const unsigned char *)(r->body.data ? r->body.data : ""),
	                   r->body.len, r->api->body_hash_key, sizeof(r->api->body_hash_key));
	sodium_bin2hex(out, BODY_HASH_HEX + 1, h, sizeof(h));
}

/*
 * The in-flight record outlives the longest wait for a confirm. Should it
 * still expire early, nothing breaks: a retry publishes the same order and
 * message id, which the consumers' inboxes make one order.
 */
static int pending_ttl_s(const struct api *a)
{
	return (a->cfg.publish_timeout_ms + 999) / 1000 + IDEM_PENDING_SLACK_S;
}

/*
 * A message the publisher has sent in part or whole may still be stored by
 * the broker after the publish timeout (one that stopped reading reads it
 * later): its checkout waits for the confirm until 2 s before the key's
 * in-flight record expires (1 s before its settle_by), so that a confirm
 * still gets its Redis records and its 202 while the key is held.
 */
int checkout_written_timeout_ms(const struct api *a)
{
	return pending_ttl_s(a) * 1000 - 2000;
}

static enum MHD_Result respond_accepted(struct request *r, const char *body)
{
	char location[80];
	const char *headers[] = {"Location", location, NULL};

	snprintf(location, sizeof(location), "/v1/orders/%s", r->order_id);
	return respond_json(r, 202, body, headers);
}

/*
 * idem_answer - answer from the key's record rep (the reply of a GET, or of
 * a SET ... GET: nil when there was none), if it has one: once accepted,
 * the same 202 for the same body and 422 for another body; 409 while the
 * first is in flight.
 * ERR_OK with *answered set, or ERR_UNAVAILABLE (503 queued) when rep is no
 * answer from Redis.
 */
/* This request's in-flight record, "P:<hash>:<token>", into out. */
static void pending_value(const struct request *r, char out[IDEM_PENDING_LEN + 1])
{
	snprintf(out, IDEM_PENDING_LEN + 1, "P:%s:%s", r->idem_hash, r->idem_token);
}

static int is_own_pending(const struct request *r, const redisReply *rep)
{
	char own[IDEM_PENDING_LEN + 1];

	pending_value(r, own);
	return rep->type == REDIS_REPLY_STRING && rep->len == strlen(own) &&
	       memcmp(rep->str, own, rep->len) == 0;
}

static int idem_answer(struct request *r, const redisReply *rep, int *answered,
                       enum MHD_Result *res)
{
	static const char *const retry[] = {"Retry-After", "1", NULL};

	*answered = 1;
	if (!rep || (rep->type != REDIS_REPLY_NIL && rep->type != REDIS_REPLY_STRING)) {
		*res = respond_unavailable(r, "the idempotency store");
		return ERR_UNAVAILABLE;
	}
	if (rep->type == REDIS_REPLY_NIL || is_own_pending(r, rep)) {
		/* Taken; our own record when a batch sent again after a lost
		 * connection finds what its first sending wrote. */
		*answered = 0;
	} else if (rep->str[0] != 'P' && (rep->len < 2 + BODY_HASH_HEX ||
	                                  memcmp(rep->str + 2, r->idem_hash, BODY_HASH_HEX) != 0)) {
		*res = respond_error(r, 422, "idempotency_key_reused",
		                     "this Idempotency-Key was used with a different body", NULL);
	} else if (rep->str[0] == 'D' && rep->len > 3 + BODY_HASH_HEX) {
		*res = respond_accepted(r, rep->str + 3 + BODY_HASH_HEX);
	} else {
		/* In flight, whatever its body: the first may yet be refused
		 * (it took the key before validating), and then this one may
		 * go ahead. */
		*res = respond_obj(r, 409,
		                   json_pack("{s:{s:s, s:s}}", "error", "code",
		                             "idempotency_key_in_use", "message",
		                             "a checkout with this Idempotency-Key is in progress"),
		                   retry);
	}
	return ERR_OK;
}

/*
 * idem_release - give the key up after a failure, so that a retry with it
 * may succeed. Only our own in-flight record is removed: if it expired and
 * another request took the key meanwhile, that one's record stays.
 * c may be NULL (one is taken from the pool).
 */
static void idem_release(struct request *r, struct cache *c)
{
	static const char script[] =
	    "if redis.call('GET', KEYS[1]) == ARGV[1] then return redis.call('DEL', KEYS[1]) end "
	    "return 0";
	struct cache *own = c ? NULL : cache_pool_get(r->api->cache);
	char value[IDEM_PENDING_LEN + 1];
	redisReply *rep;

	if (!c && !own)
		return;
	pending_value(r, value);
	rep = cache_command(c ? c : own, "EVAL %s 1 %s %s", script, r->idem_redis_key, value);
	if (!rep || rep->type == REDIS_REPLY_ERROR)
		log_warn("cannot release idempotency key; it expires by itself",
		         LF_STR("request_id", r->request_id), LF_STR("order_id", r->order_id));
	if (rep)
		freeReplyObject(rep);
	if (own)
		cache_pool_put(r->api->cache, own);
}

/* ---- the message ---------------------------------------------------------- */

/* 100 lines of at most ~160 bytes each, and the rest. */
#define SNAPSHOT_MAX (32 * 1024)

/* s as a JSON string, as jansson writes one (UTF-8 left as it is). */
static int json_quote(struct buf *b, const char *s)
{
	int rc = buf_append(b, "\"", 1);

	for (; rc == ERR_OK && *s; s++) {
		unsigned char c = (unsigned char)*s;

		if (c == '"' || c == '\\')
			rc = buf_printf(b, "\\%c", c);
		else if (c == '\n')
			rc = buf_append(b, "\\n", 2);
		else if (c == '\r')
			rc = buf_append(b, "\\r", 2);
		else if (c == '\t')
			rc = buf_append(b, "\\t", 2);
		else if (c < 0x20)
			rc = buf_printf(b, "\\u%04x", c);
		else
			rc = buf_append(b, s, 1);
	}
	return rc == ERR_OK ? buf_append(b, "\"", 1) : rc;
}

/*
 * The pending view GET /v1/orders serves until order-consumer's row exists,
 * stored as "<client_id> <json>": only the key that placed the order reads it.
 * Written out directly rather than built as jansson objects, which cost as
 * much as the rest of a checkout's JSON: every other field is an id, a
 * validated code or sku, a number or a time, none of which needs escaping.
 */
char *checkout_snapshot(const struct request *r, const struct checkout *co, int64_t now_ms)
{
	char created[25];
	struct buf b;
	int rc;

	ids_rfc3339(now_ms, created);
	buf_init(&b, SNAPSHOT_MAX);
	rc = buf_printf(&b, "%s {\"order_id\":\"%s\",\"status\":\"pending\",\"customer_id\":",
	                r->key->client_id, r->order_id);
	if (rc == ERR_OK)
		rc = json_quote(&b, co->customer_id);
	if (rc == ERR_OK)
		rc = buf_printf(&b, ",\"currency\":\"%s\",\"items\":[", co->currency);
	for (size_t i = 0; rc == ERR_OK && i < co->nlines; i++)
		rc = buf_printf(&b,
		                "%s{\"sku\":\"%s\",\"quantity\":%d,\"unit_price_cents\":%" PRId64
		                ",\"line_total_cents\":%" PRId64 "}",
		                i ? "," : "", co->lines[i].sku, co->lines[i].quantity,
		                co->lines[i].unit_price,
		                co->lines[i].unit_price * co->lines[i].quantity);
	if (rc == ERR_OK)
		rc = buf_printf(&b,
		                "],\"total_cents\":%" PRId64
		                ",\"created_at\":\"%s\",\"updated_at\":\"%s\"}",
		                co->total, created, created);
	if (rc != ERR_OK) {
		buf_release(&b);
		return NULL;
	}
	return buf_detach(&b, NULL);
}

static char *ship_field(json_t *shipping, const char *key)
{
	const char *v = json_string_value(json_object_get(shipping, key));

	return (char *)(v ? v : "");
}

int checkout_message(struct request *r, const struct checkout *co, const char *idem, int64_t now_ms,
                     char message_id[IDS_UUID_LEN + 1], uint8_t **out, size_t *outlen)
{
	Orders__CheckoutRequested msg = ORDERS__CHECKOUT_REQUESTED__INIT;
	Orders__Envelope env = ORDERS__ENVELOPE__INIT;
	Orders__Order order = ORDERS__ORDER__INIT;
	Orders__Address addr = ORDERS__ADDRESS__INIT;
	Orders__SealedCard sealed = ORDERS__SEALED_CARD__INIT;
	Orders__Line line_store[MAX_LINES];
	Orders__Line *lines[MAX_LINES];
	uint8_t nonce[SEAL_NONCE_BYTES];
	uint8_t ct[CARD_RECORD_MAX + SEAL_MAC_BYTES];
	char record[CARD_RECORD_MAX], last4[5];
	char id_part[sizeof(MQ_KEY_CHECKOUT_REQUESTED) + BODY_HASH_HEX + 1];
	size_t reclen;
	int rc;

	/*
	 * Derived from the order id and the body: a retried publish of the same
	 * checkout is a redelivery to inventory-consumer's inbox, not a second
	 * order. Once Redis has lost a key, another body can come with it; that
	 * is another message, which inventory-consumer finds a duplicate of the
	 * existing order and passes on nowhere, rather than replaying the first
	 * body's outcome with this body's lines and totals.
	 */
	snprintf(id_part, sizeof(id_part), "%s:%s", MQ_KEY_CHECKOUT_REQUESTED, r->idem_hash);
	ids_uuid_derived(r->api->order_id_key, id_part, r->order_id, message_id);
	proto_envelope_set(&env, message_id, r->order_id, now_ms, r->request_id);

	for (size_t i = 0; i < co->nlines; i++) {
		orders__line__init(&line_store[i]);
		line_store[i].sku = (char *)co->lines[i].sku;
		line_store[i].quantity = (uint32_t)co->lines[i].quantity;
		line_store[i].unit_price_cents = co->lines[i].unit_price;
		lines[i] = &line_store[i];
	}
#define SHIP(f) ship_field(co->shipping, f)
	addr.name = SHIP("name");
	addr.line1 = SHIP("line1");
	addr.line2 = SHIP("line2");
	addr.city = SHIP("city");
	addr.postal_code = SHIP("postal_code");
	addr.country = SHIP("country");
#undef SHIP
	order.customer_id = (char *)co->customer_id;
	order.customer_email = (char *)co->customer_email;
	order.currency = (char *)co->currency;
	order.n_lines = co->nlines;
	order.lines = lines;
	order.total_cents = co->total;
	order.shipping = &addr;
	order.client_id = (char *)r->key->client_id;
	order.idempotency_key = (char *)idem;
	order.cart_id = (char *)co->cart_id;

	/* The card leaves this process only sealed for payment-consumer. */
	reclen = card_encode(&co->card, record);
	rc = sealer_seal(r->api->sealer, record, reclen, nonce, ct);
	sodium_memzero(record, sizeof(record));
	if (rc != ERR_OK)
		return rc;
	card_last4(co->card.number, last4);
	sealed.sender_public_key.data = (uint8_t *)sealer_public_key(r->api->sealer);
	sealed.sender_public_key.len = SEAL_KEY_BYTES;
	sealed.nonce.data = nonce;
	sealed.nonce.len = sizeof(nonce);
	sealed.ciphertext.data = ct;
	sealed.ciphertext.len = reclen + SEAL_MAC_BYTES;
	sealed.brand = (char *)card_brand(co->card.number);
	sealed.last4 = last4;

	msg.envelope = &env;
	msg.order = &order;
	msg.card = &sealed;
	return proto_pack(&msg.base, out, outlen);
}

static enum MHD_Result checkout_published(struct request *r);

/*
 * What Redis must hold before the 202 goes out (written by the settler,
 * with other checkouts' in one round trip): the order's pending view,
 * which GET /v1/orders serves until order-consumer's row exists, and the
 * key's record of the answer, so that a replay gets the same 202. NULL
 * when out of memory.
 */
static struct cache_batch *settle_records(const struct request *r, const char *snapshot)
{
	char view_key[sizeof("order:") + sizeof(r->order_id)], view_ttl[16], done_ttl[16];
	size_t size = 2 + BODY_HASH_HEX + 1 + strlen(r->accepted_body) + 1;
	char *record = malloc(size);
	const char *view[] = {"SET", view_key, snapshot, "EX", view_ttl};
	const char *done[] = {"SET", r->idem_redis_key, record, "EX", done_ttl};
	struct cache_batch *b = malloc(sizeof(*b));

	if (!record || !b)
		goto fail;
	snprintf(view_key, sizeof(view_key), "order:%s", r->order_id);
	snprintf(view_ttl, sizeof(view_ttl), "%d", ORDER_SNAPSHOT_TTL_S);
	snprintf(record, size, "D:%s:%s", r->idem_hash, r->accepted_body);
	snprintf(done_ttl, sizeof(done_ttl), "%d", IDEM_DONE_TTL_S);
	cache_batch_init(b);
	if (cache_batch_add_argv(b, 5, view, NULL) != ERR_OK ||
	    cache_batch_add_argv(b, 5, done, NULL) != ERR_OK) {
		cache_batch_release(b);
		goto fail;
	}
	free(record);
	return b;
fail:
	free(record);
	free(b);
	return NULL;
}

/* The 202's body, malloc'd: {"order_id","status":"pending","status_url"}. */
static char *accepted_body(const struct request *r)
{
	static const char fmt[] = "{\"order_id\":\"%s\",\"status\":\"pending\","
	                          "\"status_url\":\"/v1/orders/%s\"}";
	size_t size = sizeof(fmt) + 2 * sizeof(r->order_id);
	char *body = malloc(size);

	/* An order id is a UUID: nothing in it needs escaping. */
	if (body)
		snprintf(body, size, fmt, r->order_id, r->order_id);
	return body;
}

/*
 * The checkout's first round trip: the key's record or its taking
 * (reply[0]: the record, or nil when taken) and, for an items checkout, the
 * product of every line that names a well-formed sku. product[i] is
 * items[i]'s product read, or NULL.
 */
struct prefetch {
	redisReply *reply[1 + MAX_LINES];
	size_t n;
	const char *sku[MAX_LINES];
	redisReply *product[MAX_LINES];
};

static int prefetch(struct request *r, struct cache *c, json_t *root, struct prefetch *pf)
{
	json_t *items = json_object_get(root, "items"), *item;
	char pending[IDEM_PENDING_LEN + 1], ttl[16];
	const char *take[] = {"SET", r->idem_redis_key, pending, "NX", "GET", "EX", ttl};
	struct cache_batch b;
	size_t i, n = 0;
	int rc;

	memset(pf, 0, sizeof(*pf));
	cache_batch_init(&b);
	/* The record if there is one; else the key is taken (Redis 7.0 lets
	 * NX and GET go together; a script did the same at five times the
	 * cost in Redis). */
	ids_uuid4(r->idem_token);
	pending_value(r, pending);
	snprintf(ttl, sizeof(ttl), "%d", pending_ttl_s(r->api));
	/* Past that, another body could take the key: no 202 then. */
	r->settle_by_ms = api_now_ns() / 1000000 + pending_ttl_s(r->api) * 1000 - 1000;
	cache_batch_add_argv(&b, 7, take, NULL);
	if (json_is_array(items) && json_array_size(items) <= MAX_LINES &&
	    !json_object_get(root, "cart_id")) {
		json_array_foreach(items, i, item)
		{
			const char *sku = json_string_value(json_object_get(item, "sku"));

			if (sku && valid_sku(sku) && product_batch_add(&b, sku) == ERR_OK)
				pf->sku[i] = sku;
		}
	}
	rc = cache_batch_run(c, &b, pf->reply);
	if (rc == ERR_OK) {
		pf->n = b.n;
		for (i = 0; i < MAX_LINES; i++)
			if (pf->sku[i])
				pf->product[i] = pf->reply[1 + n++];
	}
	cache_batch_release(&b);
	return rc;
}

static void prefetch_release(struct prefetch *pf)
{
	for (size_t i = 0; i < pf->n; i++)
		freeReplyObject(pf->reply[i]);
	pf->n = 0;
}

/* What prefetch() read for the checkout's lines, for price_lines. */
static void prefetched_products(const struct prefetch *pf, const struct checkout *co,
                                redisReply **known)
{
	for (size_t i = 0; i < co->nlines; i++)
		known[i] =
		    !co->cart_id[0] && pf->sku[i] && strcmp(pf->sku[i], co->lines[i].sku) == 0
		        ? pf->product[i]
		        : NULL;
}

enum MHD_Result checkout_post(struct request *r)
{
	struct checkout co;
	struct api_error perr;
	struct prefetch pf;
	enum MHD_Result res;
	const char *idem;
	char message_id[IDS_UUID_LEN + 1];
	char *snapshot = NULL;
	struct cache *c = NULL;
	uint8_t *msg = NULL;
	size_t msglen = 0;
	int64_t now_ms = ids_now_ms();
	redisReply *known[MAX_LINES];
	json_t *root;
	int rc, answered, taken = 0;

	memset(&co, 0, sizeof(co));
	pf.n = 0;
	if (require_role(r, ROLE_CLIENT, &res) != ERR_OK ||
	    require_query_args(r, NULL, &res) != ERR_OK)
		return res;
	idem = MHD_lookup_connection_value(r->conn, MHD_HEADER_KIND, "Idempotency-Key");
	if (!idem)
		return respond_error(r, 400, "missing_idempotency_key",
		                     "the Idempotency-Key header is required", NULL);
	if (!valid_idempotency_key(idem))
		return respond_error(r, 400, "invalid_idempotency_key",
		                     "Idempotency-Key must be 1 to 255 printable ASCII characters",
		                     NULL);
	root = body_json(r, &res);
	if (!root)
		return res;
	co.root = root;

	/* Same client and key: same order id, also after Redis forgets the key. */
	ids_uuid_derived(r->api->order_id_key, r->key->client_id, idem, r->order_id);
	log_context_set(r->request_id, NULL, r->order_id);
	snprintf(r->idem_redis_key, sizeof(r->idem_redis_key), "idem:%s:%s", r->key->client_id,
	         idem);
	body_hash(r, r->idem_hash);
	/* Parsed and hashed: the raw body (card included) is not needed again,
	 * nor kept while the checkout waits for the broker. */
	if (r->body.data)
		sodium_memzero(r->body.data, r->body.len);
	buf_release(&r->body);

	c = cache_pool_get(r->api->cache);
	if (!c) {
		res = respond_unavailable(r, "the cache");
		goto out;
	}
	/* A replay gets the first answer whatever has changed since (an
	 * expired card, a repriced product), so look before validating. */
	if (prefetch(r, c, root, &pf) != ERR_OK) {
		/* The key may have been taken before the connection failed. */
		idem_release(r, c);
		res = respond_unavailable(r, "the idempotency store");
		goto out;
	}
	if (idem_answer(r, pf.reply[0], &answered, &res) != ERR_OK || answered)
		goto out;
	taken = 1;
	if (checkout_parse(root, time(NULL), &co, &perr) != ERR_OK) {
		res = respond_api_error(r, &perr);
		goto out;
	}
	if (co.cart_id[0] && cart_lines(r, c, &co, &res) != 0)
		goto out;
	prefetched_products(&pf, &co, known);
	if (price_lines(r, c, &co, known, &res) != 0)
		goto out;

	rc = checkout_message(r, &co, idem, now_ms, message_id, &msg, &msglen);
	if (rc != ERR_OK) {
		res = respond_error(r, 500, "internal", "cannot prepare the order", NULL);
		goto out;
	}
	snapshot = checkout_snapshot(r, &co, now_ms);
	r->accepted_body = snapshot ? accepted_body(r) : NULL;
	r->settle = r->accepted_body ? settle_records(r, snapshot) : NULL;
	if (!r->settle) {
		res = respond_error(r, 500, "internal", "out of memory", NULL);
		goto out;
	}
	res =
	    api_publish(r, MQ_KEY_CHECKOUT_REQUESTED, message_id, msg, msglen, checkout_published);
	taken = 0; /* checkout_published() settles the key from here on */
out:
	/* Not accepted: a retry with the key may succeed at once. */
	if (taken)
		idem_release(r, c);
	prefetch_release(&pf);
	if (c)
		cache_pool_put(r->api->cache, c);
	free(snapshot);
	free(msg);
	checkout_release(&co);
	return res;
}

static enum MHD_Result checkout_published(struct request *r)
{
	static const char *const retry[] = {"Retry-After", "1", NULL};
	int result = atomic_load(&r->publish_result);

	/*
	 * Sent, and neither confirmed nor refused in time: the broker may hold
	 * the order, so a 503 ("nothing was accepted") would be untrue, and so
	 * would a 202. As when the settler gives up, the answer is none: the
	 * client retries with its key, which makes the same order and message
	 * id (one order, whatever the broker did), and gets the 202. The key is
	 * given back for that retry at once.
	 */
	if (result == ERR_IN_DOUBT) {
		idem_release(r, NULL);
		log_warn("checkout sent but not confirmed; closing without an answer",
		         LF_STR("request_id", r->request_id), LF_STR("order_id", r->order_id));
		return MHD_NO;
	}
	/* Refused as built (never sent): a retry would fare no better. */
	if (result == ERR_INVALID) {
		idem_release(r, NULL);
		log_error("checkout message cannot be published",
		          LF_STR("request_id", r->request_id), LF_STR("order_id", r->order_id),
		          LF_STR("reason", err_str(result)));
		return respond_error(r, 500, "internal", "cannot queue the order", NULL);
	}
	if (result != ERR_OK) {
		/* Nothing was half-accepted (the broker never had the message, or
		 * refused it): a retry with the same key may succeed. */
		idem_release(r, NULL);
		log_warn("checkout not accepted", LF_STR("request_id", r->request_id),
		         LF_STR("order_id", r->order_id), LF_STR("reason", err_str(result)));
		return respond_obj(r, 503,
		                   json_pack("{s:{s:s, s:s}}", "error", "code", "unavailable",
		                             "message",
		                             "the order could not be queued; retry with the same "
		                             "Idempotency-Key"),
		                   retry);
	}

	/*
	 * The message is durable but Redis has neither the answer nor the
	 * pending view: a 202 now could be followed by a 404 for the order, and
	 * a 503 would say that nothing was accepted. The honest answer is none.
	 * The client retries with its key, which makes the same order (and
	 * message) id, and gets the 202 once Redis takes it.
	 */
	if (r->settle_failed) {
		log_error("confirmed checkout not recorded in redis; closing without an answer",
		          LF_STR("request_id", r->request_id), LF_STR("order_id", r->order_id));
		return MHD_NO;
	}
	metric_add(r->api->m_checkouts, NULL, 1);
	log_info("checkout accepted", LF_STR("request_id", r->request_id),
	         LF_STR("order_id", r->order_id));
	return respond_accepted(r, r->accepted_body);
}
