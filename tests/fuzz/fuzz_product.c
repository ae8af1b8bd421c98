/*
 * fuzz_product.c: PUT /v1/products/{sku}: the input is the sku as the path
 * gives it (after unescape_url), a NUL, and the body. The sku goes through
 * valid_sku(), the body through body_parse() and catalog_parse_put().
 */
#include "fuzz.h"
#include "parse.h"

FUZZ_QUIET_INITIALIZE

/* UTF-8 characters of a valid UTF-8 string, counted by decoding it (mbrtowc's rules aside). */
static size_t chars(const char *s)
{
	size_t n = 0;

	while (*s) {
		unsigned char c = (unsigned char)*s;

		s += c < 0x80 ? 1 : c < 0xe0 ? 2 : c < 0xf0 ? 3 : 4;
		n++;
	}
	return n;
}

static int sku_char(char c)
{
	return (c >= 'A' && c <= 'Z') || (c >= 'a' && c <= 'z') || (c >= '0' && c <= '9') ||
	       c == '.' || c == '_' || c == '-';
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	const uint8_t *nul = memchr(data, 0, size);
	size_t skulen = nul ? (size_t)(nul - data) : size;
	char *sku = fuzz_cstr(data, skulen);
	struct product_put p;
	struct api_error e;
	json_t *body;

	/* The path parameter: 1 to 64 of A-Z a-z 0-9 . _ - (and so safe in a Redis key). */
	if (valid_sku(sku)) {
		FUZZ_CHECK(skulen >= 1 && skulen <= 64);
		for (size_t i = 0; i < skulen; i++)
			FUZZ_CHECK(sku_char(sku[i]));
	}
	free(sku);
	if (!nul)
		return 0;

	body = body_parse((const char *)nul + 1, size - skulen - 1, &e);
	if (!body) {
		fuzz_check_error(&e, 1);
		return 0;
	}
	if (catalog_parse_put(body, &p, &e) == ERR_OK) {
		const char *name = json_string_value(p.name);

		FUZZ_CHECK(name && name[0] && chars(name) <= 200 && fuzz_utf8(name));
		FUZZ_CHECK(valid_currency(p.currency));
		FUZZ_CHECK(p.price_cents >= 0 && p.price_cents <= INT64_C(1000000000000));
		FUZZ_CHECK(p.stock >= 0 && p.stock <= INT64_C(1000000000));
	} else {
		fuzz_check_error(&e, 1);
		FUZZ_CHECK(e.status == 422);
	}
	json_decref(body);
	return 0;
}
