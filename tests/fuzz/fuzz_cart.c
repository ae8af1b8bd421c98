/*
 * fuzz_cart.c: the carts' bodies (the input) through body_parse() and both
 * cart_parse_create() (POST /v1/carts) and cart_parse_replace() (PUT
 * /v1/carts/{id}); accepted lines are written as Redis stores them and must
 * read back the same (cart_items_text, cart_items_parse). The input is also
 * read as stored items, the text cart_load() parses.
 */
#include "fuzz.h"
#include "parse.h"

FUZZ_QUIET_INITIALIZE

/* Lines as the cart contract has them: valid skus, each once, 1..999 each, at most 100. */
static void check_lines(const struct cart *cart)
{
	FUZZ_CHECK(cart->nlines <= CART_MAX_LINES);
	for (size_t i = 0; i < cart->nlines; i++) {
		FUZZ_CHECK(valid_sku(cart->lines[i].sku));
		FUZZ_CHECK(cart->lines[i].quantity >= 1 &&
		           cart->lines[i].quantity <= CART_MAX_QUANTITY);
		for (size_t k = 0; k < i; k++)
			FUZZ_CHECK(strcmp(cart->lines[k].sku, cart->lines[i].sku) != 0);
	}
}

/* Written as stored, read back: the same lines in the same order. */
static void check_stored(const struct cart *cart)
{
	static char text[CART_ITEMS_MAX];
	static struct cart back;

	FUZZ_CHECK(cart_items_text(cart, text, sizeof(text)) == ERR_OK);
	memset(&back, 0, sizeof(back));
	FUZZ_CHECK(cart_items_parse(text, &back) == ERR_OK);
	FUZZ_CHECK(back.nlines == cart->nlines);
	for (size_t i = 0; i < cart->nlines; i++) {
		FUZZ_CHECK(strcmp(back.lines[i].sku, cart->lines[i].sku) == 0);
		FUZZ_CHECK(back.lines[i].quantity == cart->lines[i].quantity);
	}
}

/* origin[i]: the request index of line i's first mention, so increasing. */
static void check_origin(const struct cart *cart, const size_t *origin, json_t *items)
{
	for (size_t i = 0; i < cart->nlines; i++) {
		FUZZ_CHECK(origin[i] < json_array_size(items));
		FUZZ_CHECK(i == 0 || origin[i] > origin[i - 1]);
		FUZZ_CHECK(strcmp(json_string_value(
		                      json_object_get(json_array_get(items, origin[i]), "sku")),
		                  cart->lines[i].sku) == 0);
	}
}

/* A body's lines accepted (rc ERR_OK) or its error, as the contract has them. */
static void check_parsed(int rc, const struct cart *cart, const size_t *origin, json_t *items,
                         const struct api_error *e)
{
	if (rc != ERR_OK) {
		fuzz_check_error(e, 1);
		FUZZ_CHECK(e->status == 422);
		return;
	}
	check_lines(cart);
	check_origin(cart, origin, items);
	check_stored(cart);
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	static struct cart cart;
	size_t origin[CART_MAX_LINES];
	struct api_error e;
	char *text;
	json_t *root;
	int rc;

	root = body_parse((const char *)data, size, &e);
	if (!root) {
		fuzz_check_error(&e, 1);
	} else {
		memset(&cart, 0, sizeof(cart));
		rc = cart_parse_create(root, &cart, origin, &e);
		if (rc == ERR_OK) {
			size_t n = strlen(cart.customer_id);

			FUZZ_CHECK(n >= 1 && n <= 128 && fuzz_utf8(cart.customer_id));
			FUZZ_CHECK(valid_currency(cart.currency));
		}
		check_parsed(rc, &cart, origin, json_object_get(root, "items"), &e);
		memset(&cart, 0, sizeof(cart));
		rc = cart_parse_replace(root, &cart, origin, &e);
		check_parsed(rc, &cart, origin, json_object_get(root, "items"), &e);
		json_decref(root);
	}

	/* The same bytes as stored items (what cart_load reads from Redis). */
	text = fuzz_cstr(data, size);
	memset(&cart, 0, sizeof(cart));
	if (cart_items_parse(text, &cart) == ERR_OK) {
		FUZZ_CHECK(cart.nlines <= CART_MAX_LINES);
		for (size_t i = 0; i < cart.nlines; i++) {
			FUZZ_CHECK(valid_sku(cart.lines[i].sku));
			FUZZ_CHECK(cart.lines[i].quantity >= 1 &&
			           cart.lines[i].quantity <= CART_MAX_QUANTITY);
		}
	}
	free(text);
	return 0;
}
