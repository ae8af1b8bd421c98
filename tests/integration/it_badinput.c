/* it_badinput.c: the API holds its contract under bad input: a table of bad requests, each
 * answered with the contract's error, the server still serving, and nothing written. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>

#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <time.h>
#include <unistd.h>

#include <jansson.h>

#include "buf.h"
#include "cache.h"
#include "db.h"
#include "e2e.h"
#include "err.h"
#include "http_client.h"

#define DEFAULT_DSN "postgresql://orders@127.0.0.1:5442/orders"
#define DEFAULT_REDIS "redis://127.0.0.1:6389/0"

#define FINANCE "Authorization: Bearer dev-finance"
#define SKU_USD "BADIN-USD"
#define SKU_EUR "BADIN-EUR"
#define CARD_OK "4242424242424242"
#define UUID_UNKNOWN "00000000-0000-4000-8000-000000000000"

/* How long to wait out a 429 (the per-key rate limit) before giving up. */
#define RATE_LIMIT_RETRIES 20

static char run_id[32];
static struct db *db;
static struct cache *redis;
static int carts_served;
static char cart_id[64];

/* ---- the table's shape ------------------------------------------------------ */

/* The valid body a row starts from, or RAW for a body given as it is. */
enum base { RAW = 0, CHECKOUT, PRODUCT, CART, CART_ITEMS };

/*
 * One change to the base body: path is dotted ("items.0.quantity"), value is
 * JSON text, DEL (remove the member) or a generated value:
 *   "@str:N"    a string of N letters     "@items:N"  N valid lines
 *   "@year:+N"  this year plus N (or -N)  "@raw:TEXT" TEXT as it is, even
 *                                                     when it is not JSON
 */
struct patch {
	const char *path;
	const char *value;
};

#define DEL "@del"
/* As a row's field: present or absent, any value (the carts' own choice). */
#define ANY_FIELD "?"
/* As a row's auth, ctype or idem: send no such header. */
#define NONE "-"

struct row {
	const char *method;
	const char *path;  /* "{cart}" is the test's cart, "{AN}" N letters */
	const char *auth;  /* NULL: the route's key; else the header line */
	const char *ctype; /* NULL: application/json when there is a body */
	const char *idem;  /* checkouts: NULL a fresh key, else the header line */
	const char *rid;   /* NULL: a valid X-Request-Id to echo; else a bad one's line */
	enum base base;
	struct patch p[3];
	/* RAW: the body as sent, or "@pad:N" (an object of N bytes), "@deep:N"
	 * (N '['), "@nulbyte" (a NUL byte inside a string); NULL: no body. */
	const char *body;
	int chunked;
	int status;
	const char *code;
	const char *field; /* NULL: none; ANY_FIELD: not checked */
	const char *allow; /* 405: the methods Allow must list */
};

#define ERR(s, c) .status = (s), .code = (c)
#define V422(f) ERR(422, "validation_error"), .field = (f)
#define CARD422(f) ERR(422, "invalid_card"), .field = "payment.card." f
#define MALFORMED ERR(400, "malformed_json")
#define E415 ERR(415, "unsupported_media_type")
#define M405(methods) ERR(405, "method_not_allowed"), .allow = (methods)
#define UNKNOWN_SKU(f) ERR(422, "unknown_sku"), .field = (f)
#define MISMATCH(f) ERR(422, "currency_mismatch"), .field = (f)
#define ORDER404 ERR(404, "order_not_found")
#define CART404 ERR(404, "cart_not_found"), .field = ANY_FIELD
#define POST_CHECKOUT .method = "POST", .path = "/v1/checkouts", .base = CHECKOUT
#define PUT_PRODUCT .method = "PUT", .path = "/v1/products/" SKU_USD, .base = PRODUCT
#define GET_PRODUCT .method = "GET", .path = "/v1/products/" SKU_USD
#define POST_CART .method = "POST", .path = "/v1/carts", .base = CART
#define PUT_CART .method = "PUT", .path = "/v1/carts/{cart}", .base = CART_ITEMS
/* The same routes with a body given as it is. */
#define PRODUCT_RAW .method = "PUT", .path = "/v1/products/" SKU_USD
#define CHECKOUT_RAW .method = "POST", .path = "/v1/checkouts"
#define CART_RAW .method = "POST", .path = "/v1/carts"
#define CART_PUT_RAW .method = "PUT", .path = "/v1/carts/{cart}"

/* ---- the bad requests --------------------------------------------------------- */

/* One row a line, so that the table reads as one. */
/* clang-format off */
static const struct row rows[] = {
    /* Routes and methods. */
    {.method = "GET", .path = "/v1/nope", ERR(404, "not_found")},
    {.method = "GET", .path = "//v1/products", ERR(404, "not_found")},
    {.method = "GET", .path = "/V1/products", ERR(404, "not_found")},
    {.method = "GET", .path = "/v1/products/", ERR(404, "not_found")},
    {.method = "GET", .path = "/v1/products/" SKU_USD "/", ERR(404, "not_found")},
    {.method = "GET", .path = "/v1/products/" SKU_USD "/stock", ERR(404, "not_found")},
    {.method = "GET", .path = "/v1/orders/", ERR(404, "not_found")},
    {.method = "GET", .path = "/v1/orders/" UUID_UNKNOWN "/x", ERR(404, "not_found")},
    {.method = "POST", .path = "/v1/checkouts/", .base = CHECKOUT, ERR(404, "not_found")},
    {.method = "DELETE", .path = "/v1/products/" SKU_USD, M405("GET, HEAD, PUT")},
    {.method = "POST", .path = "/v1/products/" SKU_USD, .base = PRODUCT, M405("GET, HEAD, PUT")},
    {.method = "GET", .path = "/v1/checkouts", M405("POST")},
    {.method = "PUT", .path = "/v1/checkouts", .base = CHECKOUT, M405("POST")},
    {.method = "OPTIONS", .path = "/v1/checkouts", M405("POST")},
    {.method = "POST", .path = "/v1/products", .base = PRODUCT, M405("GET, HEAD")},
    {.method = "DELETE", .path = "/v1/orders/" UUID_UNKNOWN, M405("GET, HEAD")},
    {.method = "POST", .path = "/healthz", .body = "{}", M405("GET, HEAD")},
    {.method = "PUT", .path = "/metrics", .body = "{}", M405("GET, HEAD")},

    /* Who is asking. */
    {GET_PRODUCT, .auth = NONE, ERR(401, "unauthorized")},
    {GET_PRODUCT, .auth = "Authorization: Basic ZGV2LWNsaWVudDo=", ERR(401, "unauthorized")},
    {GET_PRODUCT, .auth = "Authorization: Bearer", ERR(401, "unauthorized")},
    {GET_PRODUCT, .auth = "Authorization: Bearer ", ERR(401, "unauthorized")},
    {GET_PRODUCT, .auth = "Authorization: Bearerdev-client", ERR(401, "unauthorized")},
    {GET_PRODUCT, .auth = "Authorization: Bearer nope", ERR(401, "unauthorized")},
    {GET_PRODUCT, .auth = "Authorization: Bearer dev-clientx", ERR(401, "unauthorized")},
    {GET_PRODUCT, .auth = "Authorization: Bearer DEV-CLIENT", ERR(401, "unauthorized")},
    {GET_PRODUCT, .auth = "Authorization: dev-client", ERR(401, "unauthorized")},
    {GET_PRODUCT, .auth = FINANCE, ERR(403, "forbidden")},
    {PUT_PRODUCT, .auth = E2E_CLIENT, ERR(403, "forbidden")},
    {PUT_PRODUCT, .auth = FINANCE, ERR(403, "forbidden")},
    {PUT_PRODUCT, .auth = NONE, ERR(401, "unauthorized")},
    {POST_CHECKOUT, .auth = FINANCE, ERR(403, "forbidden")},
    {POST_CHECKOUT, .auth = NONE, ERR(401, "unauthorized")},
    {.method = "GET", .path = "/v1/orders/" UUID_UNKNOWN, .auth = NONE, ERR(401, "unauthorized")},

    /* X-Request-Id that cannot be echoed: a fresh one comes back. */
    {.method = "GET", .path = "/v1/nope", .rid = "X-Request-Id: caf\xc3\xa9", ERR(404, "not_found")},
    {.method = "GET", .path = "/v1/nope", .rid = "X-Request-Id: {A65}", ERR(404, "not_found")},

    /* Products: the sku in the path, query parameters. */
    {.method = "GET", .path = "/v1/products/bad!sku", ERR(404, "product_not_found")},
    {.method = "GET", .path = "/v1/products/{A65}", ERR(404, "product_not_found")},
    {.method = "GET", .path = "/v1/products/{A300}", ERR(404, "product_not_found")},
    {.method = "GET", .path = "/v1/products/BADIN-NO-SUCH", ERR(404, "product_not_found")},
    {.method = "GET", .path = "/v1/products/BADIN%00USD", ERR(404, "product_not_found")},
    {.method = "GET", .path = "/v1/products/BADIN%2FUSD", ERR(404, "product_not_found")},
    {.method = "GET", .path = "/v1/products/%FF", ERR(404, "product_not_found")},
    {.method = "GET", .path = "/v1/products/" SKU_USD "?expand=x", V422("expand")},
    {.method = "PUT", .path = "/v1/products/bad!sku", .base = PRODUCT, V422("sku")},
    {.method = "PUT", .path = "/v1/products/{A65}", .base = PRODUCT, V422("sku")},
    {.method = "PUT", .path = "/v1/products/{A300}", .base = PRODUCT, V422("sku")},
    {.method = "PUT", .path = "/v1/products/BADIN%00X", .base = PRODUCT, V422("sku")},
    {.method = "PUT", .path = "/v1/products/BADIN%2FX", .base = PRODUCT, V422("sku")},
    {.method = "PUT", .path = "/v1/products/BADIN%20X", .base = PRODUCT, V422("sku")},
    {.method = "PUT", .path = "/v1/products/BADIN-X?dry_run=1", .base = PRODUCT, V422("dry_run")},
    {.method = "GET", .path = "/v1/products?limit=0", V422("limit")},
    {.method = "GET", .path = "/v1/products?limit=201", V422("limit")},
    {.method = "GET", .path = "/v1/products?limit=abc", V422("limit")},
    {.method = "GET", .path = "/v1/products?limit=", V422("limit")},
    {.method = "GET", .path = "/v1/products?limit=99999999999999999999", V422("limit")},
    {.method = "GET", .path = "/v1/products?after=bad!sku", V422("after")},
    {.method = "GET", .path = "/v1/products?after=A%00B", V422("after")},
    {.method = "GET", .path = "/v1/products?page=2", V422("page")},

    /* Products: the body as a whole. */
    {PUT_PRODUCT, .ctype = NONE, E415},
    {PUT_PRODUCT, .ctype = "Content-Type: text/plain", E415},
    {PUT_PRODUCT, .ctype = "Content-Type: application/jsonx", E415},
    {PUT_PRODUCT, .ctype = "Content-Type: application/json x", E415},
    {PUT_PRODUCT, .ctype = "Content-Type: application/json-patch+json", E415},
    {PUT_PRODUCT, .ctype = "Content-Type: application/x-www-form-urlencoded", E415},
    {PRODUCT_RAW, .ctype = NONE, E415},
    {PRODUCT_RAW, .ctype = E2E_JSON, MALFORMED},
    {PRODUCT_RAW, .body = "", MALFORMED},
    {PRODUCT_RAW, .body = "[]", MALFORMED},
    {PRODUCT_RAW, .body = "\"product\"", MALFORMED},
    {PRODUCT_RAW, .body = "null", MALFORMED},
    {PRODUCT_RAW, .body = "{\"name\":", MALFORMED},
    {PRODUCT_RAW, .body = "{} x", MALFORMED},
    {PRODUCT_RAW, .body = "\xef\xbb\xbf{}", MALFORMED},
    {PRODUCT_RAW, .body = "{\"name\":\"a\",\"name\":\"b\"}", MALFORMED},
    {PRODUCT_RAW, .body = "{'name':'a'}", MALFORMED},
    {PRODUCT_RAW, .body = "@deep:20000", MALFORMED},
    {PRODUCT_RAW, .body = "@nulbyte", MALFORMED},
    {PRODUCT_RAW, .body = "@pad:65536", V422("pad")},
    {PRODUCT_RAW, .body = "@pad:65536", .chunked = 1, V422("pad")},
    {PRODUCT_RAW, .body = "@pad:65537", ERR(413, "payload_too_large")},
    {PRODUCT_RAW, .body = "@pad:65537", .chunked = 1, ERR(413, "payload_too_large")},
    {PUT_PRODUCT, .p = {{"name", "@raw:\"\xff\""}}, MALFORMED},
    {PUT_PRODUCT, .p = {{"name", "@raw:\"a\xc3\""}}, MALFORMED},
    {PUT_PRODUCT, .p = {{"name", "@raw:\"\xed\xa0\x80\""}}, MALFORMED},
    {PUT_PRODUCT, .p = {{"name", "@raw:\"\\ud800\""}}, MALFORMED},
    {PUT_PRODUCT, .p = {{"name", "@raw:\"A\\u0000B\""}}, MALFORMED},
    {PUT_PRODUCT, .p = {{"na\\u0000me", "@raw:\"x\""}}, MALFORMED},

    /* Products: each field. */
    {PUT_PRODUCT, .p = {{"name", DEL}}, V422("name")},
    {PUT_PRODUCT, .p = {{"name", "null"}}, V422("name")},
    {PUT_PRODUCT, .p = {{"name", "\"\""}}, V422("name")},
    {PUT_PRODUCT, .p = {{"name", "@str:201"}}, V422("name")},
    {PUT_PRODUCT, .p = {{"name", "42"}}, V422("name")},
    {PUT_PRODUCT, .p = {{"name", "[\"a\"]"}}, V422("name")},
    {PUT_PRODUCT, .p = {{"price_cents", DEL}}, V422("price_cents")},
    {PUT_PRODUCT, .p = {{"price_cents", "\"500\""}}, V422("price_cents")},
    {PUT_PRODUCT, .p = {{"price_cents", "5.0"}}, V422("price_cents")},
    {PUT_PRODUCT, .p = {{"price_cents", "@raw:5e2"}}, V422("price_cents")},
    {PUT_PRODUCT, .p = {{"price_cents", "-1"}}, V422("price_cents")},
    {PUT_PRODUCT, .p = {{"price_cents", "true"}}, V422("price_cents")},
    {PUT_PRODUCT, .p = {{"price_cents", "null"}}, V422("price_cents")},
    {PUT_PRODUCT, .p = {{"price_cents", "9223372036854775807"}}, V422("price_cents")},
    {PUT_PRODUCT, .p = {{"price_cents", "-9223372036854775808"}}, V422("price_cents")},
    {PUT_PRODUCT, .p = {{"price_cents", "@raw:1e400"}}, MALFORMED},
    {PUT_PRODUCT, .p = {{"price_cents", "@raw:99999999999999999999"}}, MALFORMED},
    {PUT_PRODUCT, .p = {{"price_cents", "@raw:-99999999999999999999"}}, MALFORMED},
    {PUT_PRODUCT, .p = {{"stock", DEL}}, V422("stock")},
    {PUT_PRODUCT, .p = {{"stock", "-1"}}, V422("stock")},
    {PUT_PRODUCT, .p = {{"stock", "1.5"}}, V422("stock")},
    {PUT_PRODUCT, .p = {{"stock", "\"10\""}}, V422("stock")},
    {PUT_PRODUCT, .p = {{"currency", DEL}}, V422("currency")},
    {PUT_PRODUCT, .p = {{"currency", "\"usd\""}}, V422("currency")},
    {PUT_PRODUCT, .p = {{"currency", "\"US\""}}, V422("currency")},
    {PUT_PRODUCT, .p = {{"currency", "\"USDX\""}}, V422("currency")},
    {PUT_PRODUCT, .p = {{"currency", "840"}}, V422("currency")},
    {PUT_PRODUCT, .p = {{"color", "\"red\""}}, V422("color")},
    {PUT_PRODUCT, .p = {{"sku", "\"" SKU_USD "\""}}, V422("sku")},
    {PUT_PRODUCT, .p = {{"available", "10"}}, V422("available")},

    /* Checkouts: the headers and the body as a whole. */
    {POST_CHECKOUT, .idem = NONE, ERR(400, "missing_idempotency_key")},
    {POST_CHECKOUT, .idem = "Idempotency-Key:", ERR(400, "invalid_idempotency_key")},
    {POST_CHECKOUT, .idem = "Idempotency-Key: {A256}", ERR(400, "invalid_idempotency_key")},
    {POST_CHECKOUT, .idem = "Idempotency-Key: cl\xc3\xa9", ERR(400, "invalid_idempotency_key")},
    {POST_CHECKOUT, .idem = "Idempotency-Key: a\tb", ERR(400, "invalid_idempotency_key")},
    {.method = "POST", .path = "/v1/checkouts?coupon=x", .base = CHECKOUT, V422("coupon")},
    {POST_CHECKOUT, .ctype = NONE, E415},
    {POST_CHECKOUT, .ctype = "Content-Type: text/plain", E415},
    {POST_CHECKOUT, .ctype = "Content-Type: application/jsonx", E415},
    {CHECKOUT_RAW, .ctype = E2E_JSON, MALFORMED},
    {CHECKOUT_RAW, .body = "", MALFORMED},
    {CHECKOUT_RAW, .body = "[{\"items\":[]}]", MALFORMED},
    {CHECKOUT_RAW, .body = "{\"items\": [", MALFORMED},
    {CHECKOUT_RAW, .body = "@pad:65537", ERR(413, "payload_too_large")},
    {CHECKOUT_RAW, .body = "@pad:65537", .chunked = 1, ERR(413, "payload_too_large")},
    {POST_CHECKOUT, .p = {{"coupon", "\"FREE\""}}, V422("coupon")},

    /* Checkouts: items. */
    {POST_CHECKOUT, .p = {{"items", DEL}}, V422("items")},
    {POST_CHECKOUT, .p = {{"items", "[]"}}, ERR(422, "empty_cart"), .field = "items"},
    {POST_CHECKOUT, .p = {{"items", "{}"}}, V422("items")},
    {POST_CHECKOUT, .p = {{"items", "null"}}, V422("items")},
    {POST_CHECKOUT, .p = {{"items", "@items:101"}}, V422("items")},
    {POST_CHECKOUT, .p = {{"items.0", "\"" SKU_USD "\""}}, V422("items[0]")},
    {POST_CHECKOUT, .p = {{"items.0.sku", DEL}}, V422("items[0].sku")},
    {POST_CHECKOUT, .p = {{"items.0.sku", "\"bad sku\""}}, V422("items[0].sku")},
    {POST_CHECKOUT, .p = {{"items.0.sku", "@str:65"}}, V422("items[0].sku")},
    {POST_CHECKOUT, .p = {{"items.0.sku", "42"}}, V422("items[0].sku")},
    {POST_CHECKOUT, .p = {{"items.0.sku", "@raw:\"BADIN\\u0000USD\""}}, MALFORMED},
    {POST_CHECKOUT, .p = {{"items.0.quantity", "0"}}, V422("items[0].quantity")},
    {POST_CHECKOUT, .p = {{"items.0.quantity", "-1"}}, V422("items[0].quantity")},
    {POST_CHECKOUT, .p = {{"items.0.quantity", "1000"}}, V422("items[0].quantity")},
    {POST_CHECKOUT, .p = {{"items.0.quantity", "\"1\""}}, V422("items[0].quantity")},
    {POST_CHECKOUT, .p = {{"items.0.quantity", "1.0"}}, V422("items[0].quantity")},
    {POST_CHECKOUT, .p = {{"items.0.quantity", "@raw:1e2"}}, V422("items[0].quantity")},
    {POST_CHECKOUT, .p = {{"items.0.quantity", "null"}}, V422("items[0].quantity")},
    {POST_CHECKOUT, .p = {{"items.0.quantity", "true"}}, V422("items[0].quantity")},
    {POST_CHECKOUT, .p = {{"items.0.quantity", DEL}}, V422("items[0].quantity")},
    {POST_CHECKOUT, .p = {{"items.0.quantity", "4294967297"}}, V422("items[0].quantity")},
    {POST_CHECKOUT, .p = {{"items.0.quantity", "@raw:99999999999999999999"}}, MALFORMED},
    {POST_CHECKOUT, .p = {{"items.0.quantity", "@raw:1e400"}}, MALFORMED},
    {POST_CHECKOUT, .p = {{"items.0.price_cents", "1"}}, V422("items[0].price_cents")},
    {POST_CHECKOUT, .p = {{"items", "@items:2"}, {"items.1.quantity", "0"}},
     V422("items[1].quantity")},
    {POST_CHECKOUT, .p = {{"items.0.sku", "\"BADIN-NO-SUCH\""}}, UNKNOWN_SKU("items[0].sku")},
    {POST_CHECKOUT, .p = {{"items", "@items:2"}, {"items.1.sku", "\"" SKU_EUR "\""}},
     MISMATCH("items[1].sku")},

    /* Checkouts: currency and customer. */
    {POST_CHECKOUT, .p = {{"currency", DEL}}, V422("currency")},
    {POST_CHECKOUT, .p = {{"currency", "\"usd\""}}, V422("currency")},
    {POST_CHECKOUT, .p = {{"currency", "null"}}, V422("currency")},
    {POST_CHECKOUT, .p = {{"currency", "\"EUR\""}}, MISMATCH("items[0].sku")},
    {POST_CHECKOUT, .p = {{"customer", DEL}}, V422("customer")},
    {POST_CHECKOUT, .p = {{"customer", "\"c-42\""}}, V422("customer")},
    {POST_CHECKOUT, .p = {{"customer.id", DEL}}, V422("customer.id")},
    {POST_CHECKOUT, .p = {{"customer.id", "\"\""}}, V422("customer.id")},
    {POST_CHECKOUT, .p = {{"customer.id", "@str:129"}}, V422("customer.id")},
    {POST_CHECKOUT, .p = {{"customer.id", "42"}}, V422("customer.id")},
    {POST_CHECKOUT, .p = {{"customer.id", "@raw:\"c\\u0000\""}}, MALFORMED},
    {POST_CHECKOUT, .p = {{"customer.id", "@raw:\"c\xc0\xaf\""}}, MALFORMED},
    {POST_CHECKOUT, .p = {{"customer.email", "\"ada.example.com\""}}, V422("customer.email")},
    {POST_CHECKOUT, .p = {{"customer.email", "@str:255"}}, V422("customer.email")},
    {POST_CHECKOUT, .p = {{"customer.email", "null"}}, V422("customer.email")},
    {POST_CHECKOUT, .p = {{"customer.phone", "\"555\""}}, V422("customer.phone")},

    /* Checkouts: the shipping address. */
    {POST_CHECKOUT, .p = {{"shipping_address", DEL}}, V422("shipping_address")},
    {POST_CHECKOUT, .p = {{"shipping_address", "[]"}}, V422("shipping_address")},
    {POST_CHECKOUT, .p = {{"shipping_address.name", DEL}}, V422("shipping_address.name")},
    {POST_CHECKOUT, .p = {{"shipping_address.line1", "\"\""}}, V422("shipping_address.line1")},
    {POST_CHECKOUT, .p = {{"shipping_address.city", "@str:201"}}, V422("shipping_address.city")},
    {POST_CHECKOUT, .p = {{"shipping_address.postal_code", "12345"}},
     V422("shipping_address.postal_code")},
    {POST_CHECKOUT, .p = {{"shipping_address.country", "\"USA\""}},
     V422("shipping_address.country")},
    {POST_CHECKOUT, .p = {{"shipping_address.country", "\"us\""}},
     V422("shipping_address.country")},
    {POST_CHECKOUT, .p = {{"shipping_address.country", "\"1A\""}},
     V422("shipping_address.country")},
    {POST_CHECKOUT, .p = {{"shipping_address.line2", "42"}}, V422("shipping_address.line2")},
    {POST_CHECKOUT, .p = {{"shipping_address.state", "\"IL\""}}, V422("shipping_address.state")},

    /* Checkouts: payment and card. */
    {POST_CHECKOUT, .p = {{"payment", DEL}}, V422("payment")},
    {POST_CHECKOUT, .p = {{"payment", "\"card\""}}, V422("payment")},
    {POST_CHECKOUT, .p = {{"payment.card", DEL}}, V422("payment.card")},
    {POST_CHECKOUT, .p = {{"payment.card", "\"" CARD_OK "\""}}, V422("payment.card")},
    {POST_CHECKOUT, .p = {{"payment.method", "\"card\""}}, V422("payment.method")},
    {POST_CHECKOUT, .p = {{"payment.card.name", "\"Ada\""}}, V422("payment.card.name")},
    {POST_CHECKOUT, .p = {{"payment.card.number", "\"4242424242424241\""}}, CARD422("number")},
    {POST_CHECKOUT, .p = {{"payment.card.number", "\"4242\""}}, CARD422("number")},
    {POST_CHECKOUT, .p = {{"payment.card.number", "\"4242 4242 4242 4242\""}}, CARD422("number")},
    {POST_CHECKOUT, .p = {{"payment.card.number", "\"42424242424242424242\""}}, CARD422("number")},
    {POST_CHECKOUT, .p = {{"payment.card.number", "4242424242424242"}}, CARD422("number")},
    {POST_CHECKOUT, .p = {{"payment.card.number", DEL}}, CARD422("number")},
    {POST_CHECKOUT, .p = {{"payment.card.number", "@raw:\"4242\\u0000424242424242\""}}, MALFORMED},
    {POST_CHECKOUT, .p = {{"payment.card.exp_year", "@year:-1"}}, CARD422("exp_year")},
    {POST_CHECKOUT, .p = {{"payment.card.exp_year", "99"}}, CARD422("exp_year")},
    {POST_CHECKOUT, .p = {{"payment.card.exp_year", DEL}}, CARD422("exp_year")},
    {POST_CHECKOUT, .p = {{"payment.card.exp_month", "13"}}, CARD422("exp_month")},
    {POST_CHECKOUT, .p = {{"payment.card.exp_month", "0"}}, CARD422("exp_month")},
    {POST_CHECKOUT, .p = {{"payment.card.exp_month", "\"12\""}}, CARD422("exp_month")},
    {POST_CHECKOUT, .p = {{"payment.card.cvc", "\"12\""}}, CARD422("cvc")},
    {POST_CHECKOUT, .p = {{"payment.card.cvc", "\"abc\""}}, CARD422("cvc")},
    {POST_CHECKOUT, .p = {{"payment.card.cvc", "737"}}, CARD422("cvc")},
    {POST_CHECKOUT, .p = {{"payment.card.cvc", DEL}}, CARD422("cvc")},

    /* Orders: the id in the path. */
    {.method = "GET", .path = "/v1/orders/not-a-uuid", ORDER404},
    {.method = "GET", .path = "/v1/orders/00000000-0000-4000-8000-00000000000A", ORDER404},
    {.method = "GET", .path = "/v1/orders/00000000-0000-4000-8000-00000000000", ORDER404},
    {.method = "GET", .path = "/v1/orders/00000000-0000-4000-8000-0000000000000", ORDER404},
    {.method = "GET", .path = "/v1/orders/000000000000-4000-8000-0000-00000000", ORDER404},
    {.method = "GET", .path = "/v1/orders/" UUID_UNKNOWN "%2Fx", ORDER404},
    {.method = "GET", .path = "/v1/orders/" UUID_UNKNOWN "%00", ORDER404},
    {.method = "GET", .path = "/v1/orders/%30" UUID_UNKNOWN, ORDER404},
    {.method = "GET", .path = "/v1/orders/{A300}", ORDER404},
    {.method = "GET", .path = "/v1/orders/" UUID_UNKNOWN, ORDER404},
    {.method = "GET", .path = "/v1/orders/" UUID_UNKNOWN "?expand=items", V422("expand")},
};
/* clang-format on */

/* Carts (the cart contract of issue 4); run once the server has carts. */
/* One row a line, so that the table reads as one. */
/* clang-format off */
static const struct row cart_rows[] = {
    {POST_CART, .auth = NONE, ERR(401, "unauthorized")},
    {POST_CART, .auth = FINANCE, ERR(403, "forbidden")},
    {POST_CART, .ctype = "Content-Type: text/plain", E415},
    {CART_RAW, .body = "", MALFORMED},
    {CART_RAW, .body = "[]", MALFORMED},
    {CART_RAW, .body = "{\"customer_id\":", MALFORMED},
    {CART_RAW, .body = "@pad:65537", ERR(413, "payload_too_large")},
    {POST_CART, .p = {{"customer_id", DEL}}, V422("customer_id")},
    {POST_CART, .p = {{"customer_id", "\"\""}}, V422("customer_id")},
    {POST_CART, .p = {{"customer_id", "@str:129"}}, V422("customer_id")},
    {POST_CART, .p = {{"customer_id", "42"}}, V422("customer_id")},
    {POST_CART, .p = {{"customer_id", "null"}}, V422("customer_id")},
    {POST_CART, .p = {{"customer_id", "@raw:\"c\\u0000d\""}}, MALFORMED},
    {POST_CART, .p = {{"currency", DEL}}, V422("currency")},
    {POST_CART, .p = {{"currency", "\"usd\""}}, V422("currency")},
    {POST_CART, .p = {{"currency", "978"}}, V422("currency")},
    {POST_CART, .p = {{"items", "{}"}}, V422("items")},
    {POST_CART, .p = {{"items", "@items:101"}}, V422("items")},
    {POST_CART, .p = {{"items.0", "42"}}, V422(ANY_FIELD)},
    {POST_CART, .p = {{"items.0.sku", DEL}}, V422("items[0].sku")},
    {POST_CART, .p = {{"items.0.sku", "\"bad sku\""}}, V422("items[0].sku")},
    {POST_CART, .p = {{"items.0.quantity", "0"}}, V422("items[0].quantity")},
    {POST_CART, .p = {{"items.0.quantity", "1000"}}, V422("items[0].quantity")},
    {POST_CART, .p = {{"items.0.quantity", "-1"}}, V422("items[0].quantity")},
    {POST_CART, .p = {{"items.0.quantity", "\"1\""}}, V422("items[0].quantity")},
    {POST_CART, .p = {{"items.0.quantity", "1.0"}}, V422("items[0].quantity")},
    {POST_CART, .p = {{"items.0.quantity", "@raw:1e400"}}, MALFORMED},
    /* Duplicate SKUs merge; 500 + 500 is over 999. */
    {POST_CART, .p = {{"items", "@items:2"}, {"items.0.quantity", "500"}, {"items.1.quantity", "500"}},
     V422(ANY_FIELD)},
    {POST_CART, .p = {{"items.0.sku", "\"BADIN-NO-SUCH\""}}, UNKNOWN_SKU("items[0].sku")},
    {POST_CART, .p = {{"items.0.sku", "\"" SKU_EUR "\""}}, MISMATCH(ANY_FIELD)},
    {POST_CART, .p = {{"note", "\"x\""}}, V422("note")},
    {POST_CART, .p = {{"items.0.price_cents", "1"}}, V422("items[0].price_cents")},
    {.method = "GET", .path = "/v1/carts", M405("POST")},
    {.method = "POST", .path = "/v1/carts/{cart}", .base = CART, M405("GET, PUT, DELETE")},
    {.method = "GET", .path = "/v1/carts/", ERR(404, "not_found")},
    {.method = "GET", .path = "/v1/carts/{cart}/items", ERR(404, "not_found")},
    {.method = "GET", .path = "/v1/carts/{cart}", .auth = NONE, ERR(401, "unauthorized")},
    {.method = "GET", .path = "/v1/carts/{cart}", .auth = FINANCE, ERR(403, "forbidden")},
    {.method = "GET", .path = "/v1/carts/not-a-uuid", CART404},
    {.method = "GET", .path = "/v1/carts/00000000-0000-4000-8000-00000000000A", CART404},
    {.method = "GET", .path = "/v1/carts/" UUID_UNKNOWN, CART404},
    {.method = "GET", .path = "/v1/carts/" UUID_UNKNOWN "%00", CART404},
    {.method = "GET", .path = "/v1/carts/{A300}", CART404},
    {.method = "PUT", .path = "/v1/carts/not-a-uuid", .base = CART_ITEMS, CART404},
    {.method = "PUT", .path = "/v1/carts/" UUID_UNKNOWN, .base = CART_ITEMS, CART404},
    {.method = "DELETE", .path = "/v1/carts/not-a-uuid", CART404},
    {.method = "DELETE", .path = "/v1/carts/" UUID_UNKNOWN, CART404},
    {PUT_CART, .p = {{"customer_id", "\"c-other\""}}, V422("customer_id")},
    {PUT_CART, .p = {{"currency", "\"USD\""}}, V422("currency")},
    {PUT_CART, .p = {{"note", "\"x\""}}, V422("note")},
    {PUT_CART, .p = {{"items", DEL}}, V422("items")},
    {PUT_CART, .p = {{"items", "null"}}, V422("items")},
    {PUT_CART, .p = {{"items.0.quantity", "0"}}, V422("items[0].quantity")},
    {PUT_CART, .p = {{"items.0.quantity", "1000"}}, V422("items[0].quantity")},
    {PUT_CART, .p = {{"items.0.quantity", "@raw:99999999999999999999"}}, MALFORMED},
    {PUT_CART, .p = {{"items", "@items:101"}}, V422("items")},
    {PUT_CART, .p = {{"items.0.sku", "\"BADIN-NO-SUCH\""}}, UNKNOWN_SKU("items[0].sku")},
    {PUT_CART, .p = {{"items.0.sku", "\"" SKU_EUR "\""}}, MISMATCH(ANY_FIELD)},
    {PUT_CART, .p = {{"items.0.extra", "1"}}, V422("items[0].extra")},
    {PUT_CART, .ctype = "Content-Type: text/plain", E415},
    {CART_PUT_RAW, .body = "[]", MALFORMED},
    {CART_PUT_RAW, .body = "@pad:65537", .chunked = 1, ERR(413, "payload_too_large")},
    /* Checkouts from a cart. */
    {POST_CHECKOUT, .p = {{"cart_id", "\"" UUID_UNKNOWN "\""}}, V422("cart_id")},
    {POST_CHECKOUT, .p = {{"cart_id", "\"" UUID_UNKNOWN "\""}, {"items", DEL}, {"currency", DEL}},
     ERR(404, "cart_not_found"), .field = "cart_id"},
    {POST_CHECKOUT, .p = {{"cart_id", "\"not-a-uuid\""}, {"items", DEL}, {"currency", DEL}},
     ERR(404, "cart_not_found"), .field = "cart_id"},
    {POST_CHECKOUT, .p = {{"cart_id", "42"}, {"items", DEL}, {"currency", DEL}}, V422("cart_id")},
};
/* clang-format on */

/* ---- building a request ------------------------------------------------------- */

static json_t *base_body(enum base b)
{
	struct tm tm;
	time_t now = time(NULL);

	gmtime_r(&now, &tm);
	switch (b) {
	case CHECKOUT:
		return json_pack("{s:[{s:s, s:i}], s:s, s:{s:s, s:s},"
		                 " s:{s:s, s:s, s:s, s:s, s:s}, s:{s:{s:s, s:i, s:i, s:s}}}",
		                 "items", "sku", SKU_USD, "quantity", 1, "currency", "USD",
		                 "customer", "id", "c-badinput", "email", "ada@example.com",
		                 "shipping_address", "name", "Ada", "line1", "1 Main St", "city",
		                 "Springfield", "postal_code", "12345", "country", "US", "payment",
		                 "card", "number", CARD_OK, "exp_month", 12, "exp_year",
		                 tm.tm_year + 1900 + 5, "cvc", E2E_CVC);
	case PRODUCT:
		return json_pack("{s:s, s:i, s:s, s:i}", "name", "Bad input test", "price_cents",
		                 500, "currency", "USD", "stock", 10);
	case CART:
		return json_pack("{s:s, s:s, s:[{s:s, s:i}]}", "customer_id", "c-badinput",
		                 "currency", "USD", "items", "sku", SKU_USD, "quantity", 1);
	case CART_ITEMS:
		return json_pack("{s:[{s:s, s:i}]}", "items", "sku", SKU_USD, "quantity", 1);
	default:
		return NULL;
	}
}

/* A generated value (see struct patch); raw text is put in place later. */
static json_t *patch_value(const char *v, int slot)
{
	char marker[32];
	long n;

	if (strncmp(v, "@str:", 5) == 0) {
		char *s = calloc(1, (size_t)atol(v + 5) + 1);
		json_t *j;

		assert_non_null(s);
		memset(s, 'x', (size_t)atol(v + 5));
		j = json_string(s);
		free(s);
		return j;
	}
	if (strncmp(v, "@items:", 7) == 0) {
		json_t *a = json_array();

		n = atol(v + 7);
		for (long i = 0; i < n; i++)
			json_array_append_new(
			    a, json_pack("{s:s, s:i}", "sku", SKU_USD, "quantity", 1));
		return a;
	}
	if (strncmp(v, "@year:", 6) == 0) {
		struct tm tm;
		time_t now = time(NULL);

		gmtime_r(&now, &tm);
		return json_integer(tm.tm_year + 1900 + atol(v + 6));
	}
	if (strncmp(v, "@raw:", 5) == 0) {
		snprintf(marker, sizeof(marker), "@@raw%d@@", slot);
		return json_string(marker);
	}
	return json_loads(v, JSON_DECODE_ANY, NULL);
}

/* The member or element named seg. */
static json_t *child(json_t *parent, const char *seg)
{
	return json_is_array(parent) ? json_array_get(parent, (size_t)atol(seg))
	                             : json_object_get(parent, seg);
}

static void apply_patch(json_t *root, const struct patch *p, int slot)
{
	char path[128], *seg = path, *dot;
	json_t *parent = root, *v = NULL;

	snprintf(path, sizeof(path), "%s", p->path);
	while ((dot = strchr(seg, '.'))) {
		*dot = '\0';
		parent = child(parent, seg);
		assert_non_null(parent);
		seg = dot + 1;
	}
	if (strcmp(p->value, DEL) != 0) {
		v = patch_value(p->value, slot);
		assert_non_null(v);
	}
	/* A member name may carry JSON escapes (a NUL): those go in raw too. */
	if (strchr(seg, '\\')) {
		char marker[32];

		snprintf(marker, sizeof(marker), "@@key%d@@", slot);
		json_object_set_new(parent, marker, v);
		return;
	}
	if (json_is_array(parent)) {
		if (v)
			assert_int_equal(json_array_set_new(parent, (size_t)atol(seg), v), 0);
		else
			json_array_remove(parent, (size_t)atol(seg));
	} else if (v) {
		json_object_set_new(parent, seg, v);
	} else {
		json_object_del(parent, seg);
	}
}

/* Replace the first "from" in b with to (both not NUL-containing). */
static void replace_in(struct buf *b, const char *from, const char *to)
{
	char *at = b->data ? strstr(b->data, from) : NULL;
	struct buf out;
	size_t pre;

	if (!at)
		return;
	pre = (size_t)(at - b->data);
	buf_init(&out, 1 << 20);
	assert_int_equal(buf_append(&out, b->data, pre), ERR_OK);
	assert_int_equal(buf_append_str(&out, to), ERR_OK);
	assert_int_equal(buf_append_str(&out, at + strlen(from)), ERR_OK);
	buf_release(b);
	*b = out;
}

/* The row's body into out (empty when it has none); 0 when it has none. */
static int row_body(const struct row *row, struct buf *out)
{
	buf_init(out, 1 << 20);
	if (row->base != RAW) {
		json_t *root = base_body(row->base);
		char *text;

		assert_non_null(root);
		for (int i = 0; i < 3 && row->p[i].path; i++)
			apply_patch(root, &row->p[i], i);
		text = json_dumps(root, JSON_COMPACT);
		json_decref(root);
		assert_non_null(text);
		assert_int_equal(buf_append_str(out, text), ERR_OK);
		free(text);
		for (int i = 0; i < 3 && row->p[i].path; i++) {
			char marker[40];

			if (strncmp(row->p[i].value, "@raw:", 5) == 0) {
				snprintf(marker, sizeof(marker), "\"@@raw%d@@\"", i);
				replace_in(out, marker, row->p[i].value + 5);
			}
			if (strchr(row->p[i].path, '\\')) {
				char key[160];
				const char *last = strrchr(row->p[i].path, '.');

				snprintf(marker, sizeof(marker), "\"@@key%d@@\"", i);
				snprintf(key, sizeof(key), "\"%s\"",
				         last ? last + 1 : row->p[i].path);
				replace_in(out, marker, key);
			}
		}
		return 1;
	}
	if (!row->body)
		return 0;
	if (strncmp(row->body, "@pad:", 5) == 0) {
		size_t n = (size_t)atol(row->body + 5);

		/* {"pad":"xxx…"}: 10 bytes of frame around the letters. */
		assert_int_equal(buf_append_str(out, "{\"pad\":\""), ERR_OK);
		for (size_t i = 0; i + 10 < n; i++)
			assert_int_equal(buf_append(out, "x", 1), ERR_OK);
		assert_int_equal(buf_append_str(out, "\"}"), ERR_OK);
		assert_int_equal(out->len, n);
	} else if (strncmp(row->body, "@deep:", 6) == 0) {
		for (long i = 0; i < atol(row->body + 6); i++)
			assert_int_equal(buf_append(out, "[", 1), ERR_OK);
	} else if (strcmp(row->body, "@nulbyte") == 0) {
		assert_int_equal(buf_append(out, "{\"name\":\"a\0b\"}", 14), ERR_OK);
	} else {
		assert_int_equal(buf_append_str(out, row->body), ERR_OK);
	}
	return 1;
}

/* The path or a header line with "{cart}" and "{AN}" expanded. */
static void expand(const char *in, char *out, size_t n)
{
	size_t o = 0;

	while (*in && o + 1 < n) {
		if (strncmp(in, "{cart}", 6) == 0) {
			o += (size_t)snprintf(out + o, n - o, "%s", cart_id);
			in += 6;
		} else if (in[0] == '{' && in[1] == 'A') {
			char *end;
			long k = strtol(in + 2, &end, 10);

			in = end + 1; /* past the '}' */
			while (k-- > 0 && o + 1 < n)
				out[o++] = 'A';
		} else {
			out[o++] = *in++;
		}
		if (o >= n)
			o = n - 1;
	}
	out[o] = '\0';
}

/* The header lines a row sends (pointers into store). */
static void row_headers(const struct row *row, int idx, int has_body, char store[5][400],
                        const char *hdrs[6])
{
	int n = 0;
	const char *auth = row->auth;

	if (!auth)
		auth =
		    strcmp(row->method, "PUT") == 0 && strncmp(row->path, "/v1/products", 12) == 0
		        ? E2E_ADMIN
		        : E2E_CLIENT;
	if (strcmp(auth, NONE) != 0)
		hdrs[n++] = auth;
	if (row->ctype && strcmp(row->ctype, NONE) != 0)
		hdrs[n++] = row->ctype;
	else if (!row->ctype && has_body)
		hdrs[n++] = E2E_JSON;
	if (strncmp(row->path, "/v1/checkouts", 13) == 0) {
		if (!row->idem)
			snprintf(store[0], sizeof(store[0]), "Idempotency-Key: it-badin-%s-%d",
			         run_id, idx);
		else if (strcmp(row->idem, NONE) != 0)
			expand(row->idem, store[0], sizeof(store[0]));
		if (!row->idem || strcmp(row->idem, NONE) != 0)
			hdrs[n++] = store[0];
	}
	if (row->rid)
		expand(row->rid, store[1], sizeof(store[1]));
	else
		snprintf(store[1], sizeof(store[1]), "X-Request-Id: it-badin-%d", idx);
	hdrs[n++] = store[1];
	hdrs[n] = NULL;
}

/* Send the body in 4 KiB chunks (no Content-Length), the rest as usual. */
static int send_chunked(const char *method, const char *path, const char *const *hdrs,
                        const struct buf *body, struct http_response *r)
{
	struct buf req;
	char line[64];
	int rc;

	buf_init(&req, 4 << 20);
	assert_int_equal(buf_printf(&req,
	                            "%s %s HTTP/1.1\r\nHost: 127.0.0.1\r\nConnection: close\r\n"
	                            "Transfer-Encoding: chunked\r\n",
	                            method, path),
	                 ERR_OK);
	for (; *hdrs; hdrs++)
		assert_int_equal(buf_printf(&req, "%s\r\n", *hdrs), ERR_OK);
	assert_int_equal(buf_append_str(&req, "\r\n"), ERR_OK);
	for (size_t off = 0; off < body->len; off += 4096) {
		size_t n = body->len - off < 4096 ? body->len - off : 4096;

		snprintf(line, sizeof(line), "%zx\r\n", n);
		assert_int_equal(buf_append_str(&req, line), ERR_OK);
		assert_int_equal(buf_append(&req, body->data + off, n), ERR_OK);
		assert_int_equal(buf_append_str(&req, "\r\n"), ERR_OK);
	}
	assert_int_equal(buf_append_str(&req, "0\r\n\r\n"), ERR_OK);
	rc = http_raw(req.data, req.len, 0, r);
	buf_release(&req);
	return rc;
}

/* ---- checking an answer ------------------------------------------------------- */

/* Every method of want (", "-separated) is listed in have. */
static int allow_lists(const char *have, const char *want)
{
	char h[128], w[128], *s1 = NULL, *s2 = NULL;

	snprintf(w, sizeof(w), "%s", want);
	for (char *m = strtok_r(w, ", ", &s1); m; m = strtok_r(NULL, ", ", &s1)) {
		int found = 0;

		snprintf(h, sizeof(h), "%s", have);
		for (char *x = strtok_r(h, ", ", &s2); x && !found; x = strtok_r(NULL, ", ", &s2))
			found = strcmp(x, m) == 0;
		if (!found)
			return 0;
	}
	return 1;
}

/* NULL when r is the row's answer, else what is wrong with it. */
static const char *row_problem(const struct row *row, const char *rid_sent,
                               const struct http_response *r)
{
	static char why[160];
	char value[128];
	json_t *j, *err, *field;
	const char *problem = NULL;
	const char *key;
	json_t *member;

	if (r->status != row->status) {
		snprintf(why, sizeof(why), "status %d, want %d", r->status, row->status);
		return why;
	}
	if (http_header(r, "X-Request-Id", value, sizeof(value)) != 0)
		return "no X-Request-Id";
	if (rid_sent && strcmp(value, rid_sent) != 0)
		return "X-Request-Id not echoed";
	if (!rid_sent && strlen(value) != 36)
		return "a bad X-Request-Id was not replaced by a fresh UUID";
	if (http_header(r, "Retry-After", value, sizeof(value)) == 0)
		return "Retry-After on a request that should not be retried";
	if (row->allow &&
	    (http_header(r, "Allow", value, sizeof(value)) != 0 || !allow_lists(value, row->allow)))
		return "Allow missing or incomplete";
	if (http_header(r, "Content-Type", value, sizeof(value)) != 0 ||
	    strncmp(value, "application/json", 16) != 0)
		return "not application/json";
	if (strstr(r->body, CARD_OK) || strstr(r->body, "\"" E2E_CVC "\""))
		return "the error echoes card data";

	j = http_json(r);
	err = json_object_get(j, "error");
	field = json_object_get(err, "field");
	if (!json_is_object(j) || json_object_size(j) != 1 || !json_is_object(err))
		problem = "body is not {\"error\":{...}}";
	else if (!json_is_string(json_object_get(err, "code")) ||
	         strcmp(json_string_value(json_object_get(err, "code")), row->code) != 0)
		problem = "wrong error code";
	else if (!json_is_string(json_object_get(err, "message")) ||
	         !*json_string_value(json_object_get(err, "message")))
		problem = "no error message";
	else if (row->field == NULL ? field != NULL
	         : strcmp(row->field, ANY_FIELD) == 0
	             ? field && !json_is_string(field)
	             : !json_is_string(field) || strcmp(json_string_value(field), row->field) != 0)
		problem = "wrong error field";
	if (!problem)
		json_object_foreach(err, key, member)
		{
			if (strcmp(key, "code") && strcmp(key, "message") && strcmp(key, "field"))
				problem = "unexpected member in error";
		}
	json_decref(j);
	return problem;
}

static int healthz_ok(void)
{
	struct http_response r;
	int ok = http_request("GET", "/healthz", NULL, NULL, 0, &r) == 0 && r.status == 200;

	http_response_release(&r);
	return ok;
}

/* Send one row (waiting out 429s); 0 when it was answered as the contract says. */
static int run_row(const struct row *row, int idx)
{
	char store[5][400], path[1024], rid[64];
	const char *hdrs[6], *problem;
	struct http_response r;
	struct buf body;
	int has_body, rc, tries = 0;

	has_body = row_body(row, &body);
	row_headers(row, idx, has_body, store, hdrs);
	expand(row->path, path, sizeof(path));
	snprintf(rid, sizeof(rid), "it-badin-%d", idx);
	for (;;) {
		char retry[16] = "1";

		rc = row->chunked ? send_chunked(row->method, path, hdrs, &body, &r)
		                  : http_request(row->method, path, hdrs,
		                                 has_body ? (body.data ? body.data : "") : NULL,
		                                 body.len, &r);
		if (rc != 0 || r.status != 429 || ++tries > RATE_LIMIT_RETRIES)
			break;
		/* Over the per-key rate limit: not what this row is about. */
		http_header(&r, "Retry-After", retry, sizeof(retry));
		http_response_release(&r);
		sleep((unsigned)(atoi(retry) > 0 ? atoi(retry) : 1));
	}
	problem = rc != 0 ? "no answer" : row_problem(row, row->rid ? NULL : rid, &r);
	if (!problem && !healthz_ok())
		problem = "the server stopped answering /healthz";
	if (problem) {
		char shown[200];

		snprintf(shown, sizeof(shown), "%.*s", (int)(sizeof(shown) - 1),
		         r.body ? r.body : "");
		fprintf(stderr, "row %d: %s %.80s%s%s%s%s: %s; got %d %s\n", idx, row->method, path,
		        row->p[0].path ? " with " : "", row->p[0].path ? row->p[0].path : "",
		        row->p[0].path ? " = " : "", row->p[0].path ? row->p[0].value : "", problem,
		        r.status, shown);
	}
	http_response_release(&r);
	buf_release(&body);
	return problem ? 1 : 0;
}

static int run_table(const struct row *table, size_t n, int first_idx)
{
	int failed = 0;

	for (size_t i = 0; i < n; i++)
		failed += run_row(&table[i], first_idx + (int)i);
	if (failed)
		fprintf(stderr, "%d of %zu rows not answered as the contract says\n", failed, n);
	return failed;
}

/* ---- what the stack holds ------------------------------------------------------- */

struct counts {
	long orders, inbox, events, products, carts; /* carts: -1 without the table */
	long idem_keys, order_keys, cart_keys;
	long accepted;
};

static long sql_count(const char *sql)
{
	PGresult *res = NULL;
	long v;

	assert_int_equal(db_exec(db, sql, 0, NULL, &res), ERR_OK);
	v = PQgetisnull(res, 0, 0) ? -1 : strtol(PQgetvalue(res, 0, 0), NULL, 10);
	PQclear(res);
	return v;
}

static long scan_count(const char *pattern)
{
	char cursor[32] = "0";
	long n = 0;

	do {
		redisReply *rep =
		    cache_command(redis, "SCAN %s MATCH %s COUNT 1000", cursor, pattern);

		assert_non_null(rep);
		assert_int_equal(rep->type, REDIS_REPLY_ARRAY);
		assert_int_equal(rep->elements, 2);
		snprintf(cursor, sizeof(cursor), "%s", rep->element[0]->str);
		n += (long)rep->element[1]->elements;
		freeReplyObject(rep);
	} while (strcmp(cursor, "0") != 0);
	return n;
}

static long accepted_metric(void)
{
	static const char name[] = "orders_checkouts_accepted_total ";
	struct http_response r;
	const char *line;
	long v = 0;

	assert_int_equal(http_request("GET", "/metrics", NULL, NULL, 0, &r), 0);
	assert_int_equal(r.status, 200);
	for (line = r.body; line && *line;
	     line = strchr(line, '\n') ? strchr(line, '\n') + 1 : NULL)
		if (strncmp(line, name, sizeof(name) - 1) == 0)
			v = (long)strtod(line + sizeof(name) - 1, NULL);
	http_response_release(&r);
	return v;
}

static void take_counts(struct counts *c)
{
	c->orders = sql_count("SELECT count(*) FROM orders");
	c->inbox = sql_count("SELECT count(*) FROM inbox");
	c->events = sql_count("SELECT count(*) FROM order_events");
	c->products = sql_count("SELECT count(*) FROM products");
	c->carts = -1;
	if (sql_count("SELECT (to_regclass('carts') IS NOT NULL)::int") == 1)
		c->carts = sql_count("SELECT count(*) FROM carts");
	c->idem_keys = scan_count("idem:*");
	c->order_keys = scan_count("order:*");
	c->cart_keys = scan_count("cart:*");
	c->accepted = accepted_metric();
}

static void print_counts(const char *what, const struct counts *c)
{
	fprintf(
	    stderr,
	    "%s: orders %ld, inbox %ld, order_events %ld, products %ld, carts %ld; redis idem:* "
	    "%ld, order:* %ld, cart:* %ld; checkouts accepted %ld\n",
	    what, c->orders, c->inbox, c->events, c->products, c->carts, c->idem_keys,
	    c->order_keys, c->cart_keys, c->accepted);
}

static struct counts before;

/* Counts once they hold still (earlier work may still be landing); at most 30 s. */
static void settled_counts(struct counts *c)
{
	struct counts prev;

	take_counts(&prev);
	for (int i = 0; i < 30; i++) {
		sleep(1);
		take_counts(c);
		if (memcmp(c, &prev, sizeof(*c)) == 0)
			return;
		prev = *c;
	}
	print_counts("still changing", c);
}

/* ---- tests ---------------------------------------------------------------------- */

/* Variants the contract accepts: the table's refusals are not over-eager. */
static void test_accepted_variants(void **state)
{
	static const char *const gets[] = {
	    "authorization: bearer dev-client",
	    "Authorization: BEARER dev-client",
	    "Authorization: Bearer  dev-client",
	};
	static const char *const types[] = {
	    "Content-Type: application/json; charset=utf-8",
	    "Content-Type: application/json ; charset=utf-8",
	    "Content-Type: application/json;charset=UTF-8",
	    "Content-Type: APPLICATION/JSON",
	};
	const char body[] = "{\"name\":\"Bad input test\",\"price_cents\":500,\"currency\":\"USD\","
	                    "\"stock\":10}";
	struct http_response r;
	(void)state;

	for (size_t i = 0; i < sizeof(gets) / sizeof(gets[0]); i++) {
		const char *h[] = {gets[i], NULL};

		assert_int_equal(http_request("GET", "/v1/products/" SKU_USD, h, NULL, 0, &r), 0);
		if (r.status != 200)
			fprintf(stderr, "'%s' answered %d\n", gets[i], r.status);
		assert_int_equal(r.status, 200);
		http_response_release(&r);
	}
	/* 200 characters is the name's limit, however many bytes they take. */
	{
		const char *h[] = {E2E_ADMIN, E2E_JSON, NULL};
		char name[2 * 200 + 1], long_body[600];
		json_t *j;

		for (int i = 0; i < 200; i++)
			memcpy(name + 2 * i, "\xc3\xa9", 2);
		name[400] = '\0';
		snprintf(long_body, sizeof(long_body),
		         "{\"name\":\"%s\",\"price_cents\":500,\"currency\":\"USD\",\"stock\":10}",
		         name);
		assert_int_equal(http_request("PUT", "/v1/products/" SKU_USD, h, long_body,
		                              strlen(long_body), &r),
		                 0);
		assert_int_equal(r.status, 200);
		http_response_release(&r);
		h[0] = E2E_CLIENT;
		h[1] = NULL;
		assert_int_equal(http_request("GET", "/v1/products/" SKU_USD, h, NULL, 0, &r), 0);
		assert_int_equal(r.status, 200);
		j = http_json(&r);
		assert_non_null(j);
		assert_string_equal(json_string_value(json_object_get(j, "name")), name);
		json_decref(j);
		http_response_release(&r);
	}
	for (size_t i = 0; i < sizeof(types) / sizeof(types[0]); i++) {
		const char *h[] = {E2E_ADMIN, types[i], NULL};

		assert_int_equal(
		    http_request("PUT", "/v1/products/" SKU_USD, h, body, strlen(body), &r), 0);
		if (r.status != 200)
			fprintf(stderr, "'%s' answered %d: %s\n", types[i], r.status, r.body);
		assert_int_equal(r.status, 200);
		http_response_release(&r);
	}
	/* A percent-encoded letter is the letter. */
	{
		const char *h[] = {E2E_CLIENT, NULL};

		assert_int_equal(http_request("GET", "/v1/products/BADIN%2dUSD", h, NULL, 0, &r),
		                 0);
		assert_int_equal(r.status, 200);
		http_response_release(&r);
	}
}

static void test_bad_requests(void **state)
{
	(void)state;
	assert_true(sizeof(rows) / sizeof(rows[0]) >= 80);
	assert_int_equal(run_table(rows, sizeof(rows) / sizeof(rows[0]), 0), 0);
}

static void test_bad_cart_requests(void **state)
{
	(void)state;
	if (!carts_served) {
		fprintf(stderr,
		        "it_badinput: SKIPPED the %zu cart rows: POST /v1/carts answers 404 "
		        "not_found (this server has no carts yet)\n",
		        sizeof(cart_rows) / sizeof(cart_rows[0]));
		skip();
	}
	assert_int_equal(run_table(cart_rows, sizeof(cart_rows) / sizeof(cart_rows[0]), 1000), 0);
}

static int refusal(int status)
{
	return (status >= 400 && status < 500) || status == 505;
}

/* Broken HTTP on raw sockets: whatever MHD answers, the server keeps serving. */
static void test_raw_requests(void **state)
{
	static const struct {
		const char *what;
		const char *bytes;
	} cases[] = {
	    {"truncated request line", "GET /v1/prod"},
	    {"headers without their end", "GET /healthz HTTP/1.1\r\nHost: x\r\nX-A: b"},
	    {"header-only garbage", "\x01\x02\x03 garbage\r\n\r\n"},
	    {"no method", " / HTTP/1.1\r\nHost: x\r\n\r\n"},
	    {"bad HTTP version", "GET /healthz HTTP/9.9\r\nHost: x\r\n\r\n"},
	    {"header without a colon", "GET /healthz HTTP/1.1\r\nHost x\r\nBroken\r\n\r\n"},
	    {"body shorter than Content-Length",
	     "POST /v1/checkouts HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer dev-client\r\n"
	     "Content-Type: application/json\r\nIdempotency-Key: it-badin-raw\r\n"
	     "Content-Length: 400\r\n\r\n{\"items\":[{\"sku\":\"" SKU_USD "\",\"quantity\":1}]"},
	    {"negative Content-Length",
	     "PUT /v1/products/" SKU_USD " HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer "
	     "dev-admin\r\nContent-Type: application/json\r\nContent-Length: -1\r\n\r\n{}"},
	    {"bad chunk size",
	     "PUT /v1/products/" SKU_USD " HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer "
	     "dev-admin\r\nContent-Type: application/json\r\nTransfer-Encoding: chunked\r\n\r\n"
	     "zz\r\n{}\r\n0\r\n\r\n"},
	    {"chunked body cut short",
	     "PUT /v1/products/" SKU_USD " HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer "
	     "dev-admin\r\nContent-Type: application/json\r\nTransfer-Encoding: chunked\r\n\r\n"
	     "100\r\n{\"name\":"},
	};
	struct buf big;
	struct http_response r;
	(void)state;

	/* MHD may not notice a half-closed, unfinished request until its own
	 * 30 s timeout; the answer (if any) comes at once, so wait 3 s at most. */
	http_set_timeout_ms(3000);
	for (size_t i = 0; i < sizeof(cases) / sizeof(cases[0]); i++) {
		int rc = http_raw(cases[i].bytes, strlen(cases[i].bytes), 1, &r);

		/* No answer, or a refusal (505 for the version); never a success
		 * or a server error. */
		if (rc == 0 && !refusal(r.status))
			fprintf(stderr, "%s: answered %d\n", cases[i].what, r.status);
		assert_true(rc != 0 || refusal(r.status));
		http_response_release(&r);
		if (!healthz_ok())
			fprintf(stderr, "%s: /healthz no longer answers\n", cases[i].what);
		assert_true(healthz_ok());
	}

	/* A header block far over the connection's memory. */
	buf_init(&big, 1 << 20);
	assert_int_equal(buf_append_str(&big, "GET /healthz HTTP/1.1\r\nHost: x\r\nX-Big: "), 0);
	for (int i = 0; i < 32 * 1024; i++)
		assert_int_equal(buf_append(&big, "a", 1), 0);
	assert_int_equal(buf_append_str(&big, "\r\n\r\n"), 0);
	if (http_raw(big.data, big.len, 1, &r) == 0)
		assert_true(refusal(r.status));
	http_response_release(&r);
	buf_release(&big);
	http_set_timeout_ms(60000);
	assert_true(healthz_ok());
}

/* Runs last: none of the above wrote, enqueued or accepted anything. */
static void test_nothing_written(void **state)
{
	struct counts after;
	(void)state;

	settled_counts(&after);
	if (memcmp(&after, &before, sizeof(after)) != 0) {
		print_counts("before", &before);
		print_counts("after", &after);
	}
	assert_int_equal(after.orders, before.orders);
	assert_int_equal(after.inbox, before.inbox);
	assert_int_equal(after.events, before.events);
	assert_int_equal(after.products, before.products);
	assert_int_equal(after.carts, before.carts);
	assert_int_equal(after.idem_keys, before.idem_keys);
	assert_int_equal(after.order_keys, before.order_keys);
	assert_int_equal(after.cart_keys, before.cart_keys);
	assert_int_equal(after.accepted, before.accepted);
}

/* ---- setup ------------------------------------------------------------------------ */

static int put_product(const char *sku, const char *currency)
{
	struct http_response r;
	const char *h[] = {E2E_ADMIN, E2E_JSON, NULL};
	char path[96], body[160];
	int ok;

	snprintf(path, sizeof(path), "/v1/products/%s", sku);
	snprintf(body, sizeof(body),
	         "{\"name\":\"Bad input test\",\"price_cents\":500,\"currency\":\"%s\","
	         "\"stock\":10}",
	         currency);
	ok = http_request("PUT", path, h, body, strlen(body), &r) == 0 &&
	     (r.status == 200 || r.status == 201);
	if (!ok)
		fprintf(stderr, "it_badinput: PUT %s answered %d\n", path, r.status);
	http_response_release(&r);
	return ok ? 0 : -1;
}

/* A cart for the PUT rows, when the server has carts; -1 on a real failure. */
static int make_cart(void)
{
	static const char body[] = "{\"customer_id\":\"c-badinput\",\"currency\":\"USD\","
	                           "\"items\":[{\"sku\":\"" SKU_USD "\",\"quantity\":1}]}";
	const char *h[] = {E2E_CLIENT, E2E_JSON, NULL};
	struct http_response r;
	const char *code;
	json_t *j;
	int rc = -1;

	if (http_request("POST", "/v1/carts", h, body, strlen(body), &r) != 0)
		return -1;
	j = http_json(&r);
	code = json_string_value(json_object_get(json_object_get(j, "error"), "code"));
	if (r.status == 404 && code && strcmp(code, "not_found") == 0) {
		rc = 0;
	} else if (r.status == 201 && json_is_string(json_object_get(j, "cart_id"))) {
		snprintf(cart_id, sizeof(cart_id), "%s",
		         json_string_value(json_object_get(j, "cart_id")));
		carts_served = 1;
		rc = 0;
	} else {
		fprintf(stderr, "it_badinput: POST /v1/carts answered %d: %s\n", r.status, r.body);
	}
	json_decref(j);
	http_response_release(&r);
	return rc;
}

static int group_setup(void **state)
{
	const char *dsn = getenv("ORDERS_PG_DSN");
	const char *url = getenv("ORDERS_REDIS_URL");
	(void)state;

	http_set_timeout_ms(60000);
	db = db_new(dsn && *dsn ? dsn : DEFAULT_DSN);
	redis = cache_new(url && *url ? url : DEFAULT_REDIS);
	if (!db || !redis || cache_ping(redis) != ERR_OK) {
		fprintf(stderr, "it_badinput: cannot reach PostgreSQL or Redis (make up?)\n");
		return -1;
	}
	if (put_product(SKU_USD, "USD") != 0 || put_product(SKU_EUR, "EUR") != 0 ||
	    make_cart() != 0)
		return -1;
	settled_counts(&before);
	return 0;
}

static int group_teardown(void **state)
{
	(void)state;
	cache_free(redis);
	db_free(db);
	return 0;
}

int main(void)
{
	const struct CMUnitTest tests[] = {
	    cmocka_unit_test(test_accepted_variants), cmocka_unit_test(test_bad_requests),
	    cmocka_unit_test(test_bad_cart_requests), cmocka_unit_test(test_raw_requests),
	    cmocka_unit_test(test_nothing_written),
	};

	snprintf(run_id, sizeof(run_id), "%ld-%d", (long)time(NULL), (int)getpid());
	return cmocka_run_group_tests(tests, group_setup, group_teardown);
}
