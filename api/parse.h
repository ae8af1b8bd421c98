/*
 * parse.h: the API's parsers of untrusted input as functions of that input
 * alone: request bodies, query and path parameters, headers. None of them
 * needs a connection, Redis or PostgreSQL, so that the fuzz targets
 * (tests/fuzz/) run exactly the code the handlers run. Each is defined
 * beside its route's handler (the file named in its section).
 *
 * A parser fills its result and returns ERR_OK, or describes the contract's
 * error in a struct api_error and returns ERR_INVALID (results are then
 * unspecified); the handler answers it with respond_api_error(). Error
 * texts never quote a card number or a CVC. Thread-safe: none keeps state.
 */
#ifndef ORDERS_API_PARSE_H
#define ORDERS_API_PARSE_H

#include <stddef.h>
#include <stdint.h>
#include <time.h>

#include <jansson.h>

#include "api.h"
#include "card.h"

/* The contract's error of one request: {"error":{"code","message","field"}}. */
struct api_error {
	unsigned int status; /* 400, 404 or 422 */
	const char *code;    /* a static text: "validation_error", "invalid_card", ... */
	char message[192];
	char field[160]; /* the path of the one field at fault ("items[2].sku"), or "" */
};

/* ---- errors and JSON bodies (parse.c) ----------------------------------------------------- */

/* api_error_set - fill e (field NULL or "" for none); returns ERR_INVALID. */
int api_error_set(struct api_error *e, unsigned int status, const char *code, const char *field,
                  const char *fmt, ...) __attribute__((format(printf, 5, 6)));

/* respond_api_error - queue e as the request's answer (http.c). */
enum MHD_Result respond_api_error(struct request *r, const struct api_error *e);

/*
 * body_parse - data[0..len) as a JSON object: valid UTF-8 without NUL
 * characters in strings, no member twice. The caller decrefs it. NULL with
 * 400 malformed_json in e otherwise.
 */
json_t *body_parse(const char *data, size_t len, struct api_error *e);

/*
 * fields_only - ERR_OK when obj has no member outside allowed (NULL-terminated);
 * else 422 validation_error "unknown field 'x'" with field path.x (x when path
 * is ""), the name cut to 64 bytes on a character boundary; a member named ""
 * is path[""].
 */
int fields_only(json_t *obj, const char *path, const char *const *allowed, struct api_error *e);

/*
 * query_arg_error - the 422 for an unknown query parameter name, quoted and
 * given as field: its first 64 bytes, those other than printable ASCII (and
 * '%') percent-encoded (query strings are not checked as UTF-8); [""] for
 * the empty name.
 */
int query_arg_error(const char *name, struct api_error *e);

/* ---- headers and paths (http.c) ----------------------------------------------------------- */

/* valid_request_id - 1 when an X-Request-Id may be echoed: 1 to API_REQUEST_ID_MAX
 * printable ASCII characters (0x20-0x7e, spaces, quotes and backslashes included). */
int valid_request_id(const char *s);

/* is_json_type - 1 for a Content-Type of application/json, parameters allowed. */
int is_json_type(const char *ct);

/* bearer_token - the token of an Authorization header "Bearer <token>" (scheme
 * in any case, one or more spaces), pointing into header; NULL for none. */
const char *bearer_token(const char *header);

/* path_param - the one path segment of url after prefix, or NULL when there is
 * none or more than one. */
const char *path_param(const char *url, const char *prefix);

/*
 * unescape_url - MHD's unescape callback (cls and conn are not used):
 * percent-decodes s in place, except "%00" and "%2F", which stay encoded.
 * Returns the new length.
 */
size_t unescape_url(void *cls, struct MHD_Connection *conn, char *s);

/* ---- POST /v1/checkouts (checkout.c) ------------------------------------------------------ */

#define CHECKOUT_MAX_LINES 100
#define CHECKOUT_MAX_QUANTITY 999

struct checkout {
	json_t *root;
	const char *customer_id;
	const char *customer_email;
	const char *currency;
	struct {
		const char *sku;
		int quantity;
		int64_t unit_price;
	} lines[CHECKOUT_MAX_LINES];
	size_t nlines;
	int64_t total;
	json_t *shipping;
	struct card card;
	char cart_id[40]; /* "" for an items checkout */
	struct cart cart; /* the cart's lines and currency, when cart_id is set */
};

/* valid_idempotency_key - 1 for 1 to 255 printable ASCII characters. */
int valid_idempotency_key(const char *k);

/*
 * checkout_parse - check root (a body_parse() object) as a checkout and fill
 * co's customer, shipping, card (valid through the month of now, UTC) and
 * either cart_id or currency and lines (1..CHECKOUT_MAX_LINES, quantities
 * 1..CHECKOUT_MAX_QUANTITY; prices are not looked at). The strings point
 * into root. 422 validation_error, empty_cart or invalid_card, or 404
 * cart_not_found for a malformed cart_id.
 */
int checkout_parse(json_t *root, time_t now, struct checkout *co, struct api_error *e);

/*
 * checkout_snapshot - the order's pending view as Redis keeps it, "<client_id>
 * <json>", malloc'd (NULL when out of memory): from r its key's client_id and
 * order_id, from co (priced) the rest.
 */
char *checkout_snapshot(const struct request *r, const struct checkout *co, int64_t now_ms);

/*
 * checkout_message - the checkout.requested message for co (priced), with the
 * card sealed by r->api->sealer, into *out (malloc'd, *outlen bytes), and its
 * message_id. From r: the api's keys, the key's client_id, request_id,
 * idem_hash and order_id. ERR_OK, or proto_pack's and sealer_seal's errors.
 */
int checkout_message(struct request *r, const struct checkout *co, const char *idem, int64_t now_ms,
                     char message_id[37], uint8_t **out, size_t *outlen);

/* ---- /v1/carts (cart.c) ------------------------------------------------------------------- */

#define CART_ITEMS_MAX 8192 /* 100 lines of at most 64-byte skus, as JSON */

/*
 * cart_parse_items - a request's items (an array of {"sku","quantity"}) into
 * cart->lines, repeated skus merged (a merged quantity over
 * CART_MAX_QUANTITY is refused); origin[i] is the request index of line i's
 * first mention (for error fields). 422 validation_error.
 */
int cart_parse_items(json_t *items, struct cart *cart, size_t *origin, struct api_error *e);

/* cart_parse_create - POST /v1/carts's body: customer_id, currency and items (optional)
 * into cart. 422 validation_error. */
int cart_parse_create(json_t *root, struct cart *cart, size_t *origin, struct api_error *e);

/* cart_parse_replace - PUT /v1/carts/{id}'s body: its items (required) into cart's
 * lines. 422 validation_error. */
int cart_parse_replace(json_t *root, struct cart *cart, size_t *origin, struct api_error *e);

/* cart_items_text - cart's lines as Redis stores them, compact JSON, into out
 * (size bytes). ERR_NOMEM when out of memory or too long. */
int cart_items_text(const struct cart *cart, char *out, size_t size);

/* cart_items_parse - cart_items_text()'s text back into cart->lines and nlines.
 * ERR_PARSE when it is not such a list. */
int cart_items_parse(const char *text, struct cart *cart);

/* ---- /v1/products (catalog.c) ------------------------------------------------------------- */

/* The body of PUT /v1/products/{sku}; name points into the body. */
struct product_put {
	json_t *name; /* a string of 1 to 200 characters */
	const char *currency;
	int64_t price_cents; /* 0 to 10^12 */
	int64_t stock;       /* 0 to 10^9 */
};

/* catalog_parse_put - the body of PUT /v1/products/{sku} (the sku in the path is
 * checked with valid_sku() first). 422 validation_error. */
int catalog_parse_put(json_t *body, struct product_put *p, struct api_error *e);

/* catalog_parse_list - GET /v1/products's limit (1..200, default 50) and after
 * (a sku, default "") query parameters, each NULL when not given. 422. */
int catalog_parse_list(const char *limit_s, const char *after_s, long *limit, const char **after,
                       struct api_error *e);

/* ---- the finance routes (events.c) -------------------------------------------------------- */

#define EVENTS_TYPES_MAX 128

/* GET /v1/order-events's query. */
struct events_query {
	long long after; /* 0.. */
	long long limit; /* 1..1000, default 100 */
	int has_types;
	char types[EVENTS_TYPES_MAX]; /* a text[] literal of known types, when has_types */
};

/* events_parse_query - after, limit and types, each NULL when not given. 422. */
int events_parse_query(const char *after, const char *limit, const char *types,
                       struct events_query *q, struct api_error *e);

/* events_parse_date - GET /v1/reconciliation's date (NULL when not given): a
 * calendar date YYYY-MM-DD, years 0001 to 9999. 422. */
int events_parse_date(const char *date, struct api_error *e);

/* events_wants_csv - 1 when an Accept header (NULL when none) prefers text/csv
 * to application/json. */
int events_wants_csv(const char *accept);

#endif
