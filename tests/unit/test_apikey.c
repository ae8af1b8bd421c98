/* test_apikey.c: the ORDERS_API_KEYS syntax, hashed keys, client ids and lookup. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>

#include <stdio.h>
#include <string.h>

#include <sodium.h>

#include "apikey.h"
#include "err.h"

/* printf %s dev-client | b2sum -l 256, and the same for dev-admin. */
#define DEV_CLIENT_B2 "55f62faab3d08f0f861c770d7e128cef561fac46e4a9f88f45608c54d23d0362"
#define DEV_ADMIN_B2 "892abd1732822b0f6e1a9221ea325b58dc66a6f59e73f4d66d4cb06f9abc3406"

static size_t parse_ok(const char *list, struct apikey *keys)
{
	const char *what = NULL;
	size_t n = 0;

	if (apikey_parse(list, keys, APIKEY_MAX, &n, &what) != ERR_OK)
		fail_msg("'%s' refused: %s", list, what);
	return n;
}

static const char *parse_bad(const char *list)
{
	struct apikey keys[APIKEY_MAX];
	const char *what = NULL;
	size_t n = 12345;

	if (apikey_parse(list, keys, APIKEY_MAX, &n, &what) != ERR_INVALID)
		fail_msg("'%s' was accepted", list);
	assert_int_equal(n, 12345); /* untouched */
	assert_non_null(what);
	return what;
}

static void hex_of(const uint8_t *bin, char out[2 * APIKEY_HASH_BYTES + 1])
{
	sodium_bin2hex(out, 2 * APIKEY_HASH_BYTES + 1, bin, APIKEY_HASH_BYTES);
}

static void test_plain_keys(void **state)
{
	struct apikey k[APIKEY_MAX];
	char hex[2 * APIKEY_HASH_BYTES + 1];
	size_t n;

	(void)state;
	n = parse_ok("dev-client:client,dev-finance:finance,dev-admin:admin", k);
	assert_int_equal(n, 3);
	assert_int_equal(k[0].role, ROLE_CLIENT);
	assert_int_equal(k[1].role, ROLE_FINANCE);
	assert_int_equal(k[2].role, ROLE_ADMIN);
	assert_int_equal(k[0].limit, APIKEY_LIMIT_DEFAULT);
	/* Kept as the digest b2sum -l 256 prints; the name is its first 12 digits. */
	hex_of(k[0].hash, hex);
	assert_string_equal(hex, DEV_CLIENT_B2);
	assert_string_equal(k[0].client_id, "key_55f62faab3d0");
	hex_of(k[2].hash, hex);
	assert_string_equal(hex, DEV_ADMIN_B2);
	assert_string_equal(k[2].client_id, "key_892abd173282");
}

/* A key written as its digest is the same key, with the same client_id. */
static void test_hashed_keys(void **state)
{
	struct apikey plain[APIKEY_MAX], hashed[APIKEY_MAX];
	char upper[128];
	size_t i;

	(void)state;
	assert_int_equal(parse_ok("dev-client:client:20", plain), 1);
	assert_int_equal(parse_ok("blake2b256." DEV_CLIENT_B2 ":client:20", hashed), 1);
	assert_memory_equal(plain[0].hash, hashed[0].hash, APIKEY_HASH_BYTES);
	assert_string_equal(plain[0].client_id, hashed[0].client_id);
	assert_int_equal(hashed[0].limit, 20);
	/* Hex digits in either case. */
	snprintf(upper, sizeof(upper), "blake2b256.%s:admin", DEV_CLIENT_B2);
	for (i = 11; upper[i] != ':'; i++)
		if (upper[i] >= 'a' && upper[i] <= 'f')
			upper[i] = (char)(upper[i] - 32);
	assert_int_equal(parse_ok(upper, hashed), 1);
	assert_memory_equal(plain[0].hash, hashed[0].hash, APIKEY_HASH_BYTES);
	assert_int_equal(hashed[0].role, ROLE_ADMIN);
	/* Mixed forms in one list. */
	assert_int_equal(parse_ok("a:client,blake2b256." DEV_ADMIN_B2 ":admin:0", hashed), 2);
	assert_int_equal(hashed[1].limit, 0);
}

static void test_limits(void **state)
{
	struct apikey k[APIKEY_MAX];

	(void)state;
	assert_int_equal(parse_ok("a:client:0,b:finance:1,c:admin:1000000000", k), 3);
	assert_int_equal(k[0].limit, 0);
	assert_int_equal(k[1].limit, 1);
	assert_int_equal(k[2].limit, 1000000000);
	parse_bad("a:client:1000000001");
	parse_bad("a:client:-1");
	parse_bad("a:client:+5");
	parse_bad("a:client: 5");
	parse_bad("a:client:");
	parse_bad("a:client:5:6");
	parse_bad("a:client:99999999999999999999");
}

static void test_bad_lists(void **state)
{
	static const char *const bad[] = {
	    "", "nokey", "a:superuser", "a:client,", ",a:client", ":client", "a:client,,b:admin",
	    "a:client:x", "a:Client", "a:client, b:admin", "a b:client", "a\tb:client",
	    "caf\xc3\xa9:client", "a:client,a:admin", "blake2b256.:client", "blake2b256.abc:client",
	    "blake2b256." DEV_CLIENT_B2 "0:client",
	    "blake2b256.g5f62faab3d08f0f861c770d7e128cef561fac46e4a9f88f45"
	    "608c54d23d0362:client",
	    /* the same key in both forms */
	    "dev-client:client,blake2b256." DEV_CLIENT_B2 ":client"};
	size_t i;

	(void)state;
	for (i = 0; i < sizeof(bad) / sizeof(bad[0]); i++)
		parse_bad(bad[i]);
	assert_string_equal(parse_bad("a:client,a:admin"), "lists the same key twice");
	assert_string_equal(parse_bad("blake2b256.abc:client"),
	                    "must write a hashed key as blake2b256. and 64 hex digits");
}

static void test_too_many(void **state)
{
	char list[APIKEY_MAX * 16 + 32];
	struct apikey k[APIKEY_MAX];
	const char *what;
	size_t i, o = 0, n;

	(void)state;
	for (i = 0; i < APIKEY_MAX; i++)
		o += (size_t)snprintf(list + o, sizeof(list) - o, "%sk%zu:client", i ? "," : "", i);
	assert_int_equal(parse_ok(list, k), APIKEY_MAX);
	snprintf(list + o, sizeof(list) - o, ",one-more:client");
	parse_bad(list);
	/* A smaller array is respected too. */
	assert_int_equal(apikey_parse("a:client,b:client", k, 1, &n, &what), ERR_INVALID);
}

static void test_find(void **state)
{
	struct apikey k[APIKEY_MAX];
	size_t n;

	(void)state;
	n = parse_ok("dev-client:client,blake2b256." DEV_ADMIN_B2 ":admin,x:finance", k);
	assert_ptr_equal(apikey_find(k, n, "dev-client", 10), &k[0]);
	assert_ptr_equal(apikey_find(k, n, "dev-admin", 9), &k[1]);
	assert_ptr_equal(apikey_find(k, n, "x", 1), &k[2]);
	assert_null(apikey_find(k, n, "dev-clien", 9));
	assert_null(apikey_find(k, n, "dev-client2", 11));
	assert_null(apikey_find(k, n, "", 0));
	/* The digest itself is not a credential. */
	assert_null(apikey_find(k, n, DEV_ADMIN_B2, strlen(DEV_ADMIN_B2)));
	assert_null(apikey_find(k, n, "blake2b256." DEV_ADMIN_B2, 11 + strlen(DEV_ADMIN_B2)));
	assert_null(apikey_find(k, 0, "dev-client", 10));
}

int main(void)
{
	const struct CMUnitTest tests[] = {
	    cmocka_unit_test(test_plain_keys), cmocka_unit_test(test_hashed_keys),
	    cmocka_unit_test(test_limits),     cmocka_unit_test(test_bad_lists),
	    cmocka_unit_test(test_too_many),   cmocka_unit_test(test_find),
	};

	return cmocka_run_group_tests(tests, NULL, NULL);
}
