/* test_card.c: Luhn, brands, expiry and CVC rules, the sealed record format. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>

#include "card.h"
#include "err.h"

#include <ctype.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

static struct card make(const char *number, const char *cvc, int month, int year)
{
	struct card c;

	memset(&c, 0, sizeof(c));
	snprintf(c.number, sizeof(c.number), "%s", number);
	snprintf(c.cvc, sizeof(c.cvc), "%s", cvc);
	c.exp_month = month;
	c.exp_year = year;
	return c;
}

static void test_luhn(void **state)
{
	static const char *const good[] = {
	    "4242424242424242", "5555555555554444", "4000000000000002", "4000000000009995",
	    "4000000000000119", "378282246310005",  "6011111111111117", "0",
	};
	static const char *const bad[] = {
	    "4242424242424241",  "5555555555554445",  "", "4242 4242 4242 4242", "424242424242424a",
	    "-4242424242424242", "4242424242424242 ",
	};
	size_t i;

	(void)state;
	for (i = 0; i < sizeof(good) / sizeof(good[0]); i++) {
		if (!card_luhn_ok(good[i]))
			fail_msg("rejected %s", good[i]);
	}
	for (i = 0; i < sizeof(bad) / sizeof(bad[0]); i++) {
		if (card_luhn_ok(bad[i]))
			fail_msg("accepted '%s'", bad[i]);
	}
	assert_false(card_luhn_ok(NULL));
}

static void test_brand(void **state)
{
	(void)state;
	assert_string_equal(card_brand("4242424242424242"), "visa");
	assert_string_equal(card_brand("5555555555554444"), "mastercard");
	assert_string_equal(card_brand("5100000000000000"), "mastercard");
	assert_string_equal(card_brand("5600000000000000"), "unknown");
	assert_string_equal(card_brand("5000000000000000"), "unknown");
	assert_string_equal(card_brand("2221000000000000"), "mastercard");
	assert_string_equal(card_brand("2720999999999999"), "mastercard");
	assert_string_equal(card_brand("2220999999999999"), "unknown");
	assert_string_equal(card_brand("2721000000000000"), "unknown");
	assert_string_equal(card_brand("378282246310005"), "amex");
	assert_string_equal(card_brand("340000000000000"), "amex");
	assert_string_equal(card_brand("350000000000000"), "unknown");
	assert_string_equal(card_brand("6011111111111117"), "discover");
	assert_string_equal(card_brand("6500000000000000"), "discover");
	assert_string_equal(card_brand("6440000000000000"), "discover");
	assert_string_equal(card_brand("6490000000000000"), "discover");
	assert_string_equal(card_brand("6430000000000000"), "unknown");
	assert_string_equal(card_brand("6012000000000000"), "unknown");
	assert_string_equal(card_brand(""), "unknown");
	assert_string_equal(card_brand("22"), "unknown");
	assert_string_equal(card_brand(NULL), "unknown");
}

static void test_last4(void **state)
{
	char out[5];

	(void)state;
	card_last4("4242424242424242", out);
	assert_string_equal(out, "4242");
	card_last4("5555555555554444", out);
	assert_string_equal(out, "4444");
	card_last4("123", out);
	assert_string_equal(out, "123");
	card_last4("", out);
	assert_string_equal(out, "");
}

static void test_validate_good(void **state)
{
	struct card c;

	(void)state;
	c = make("4242424242424242", "123", 12, 2030);
	assert_int_equal(card_validate(&c, 2026, 11), CARD_OK);
	c = make("378282246310005", "1234", 1, 2027);
	assert_int_equal(card_validate(&c, 2026, 11), CARD_OK);
	/* 12 and 19 digits are the bounds. */
	c = make("424242424242", "123", 1, 2027);
	c.number[11] = '0';
	for (char d = '0'; d <= '9'; d++) {
		c.number[11] = d;
		if (card_luhn_ok(c.number))
			break;
	}
	assert_int_equal(card_validate(&c, 2026, 11), CARD_OK);
	c = make("4242424242424242420", "123", 1, 2027);
	for (char d = '0'; d <= '9'; d++) {
		c.number[18] = d;
		if (card_luhn_ok(c.number))
			break;
	}
	assert_int_equal(card_validate(&c, 2026, 11), CARD_OK);
}

static void test_validate_number(void **state)
{
	struct card c;

	(void)state;
	c = make("4242424242424241", "123", 12, 2030);
	assert_int_equal(card_validate(&c, 2026, 11), CARD_BAD_NUMBER);
	c = make("0", "123", 12, 2030); /* passes Luhn, too short */
	assert_int_equal(card_validate(&c, 2026, 11), CARD_BAD_NUMBER);
	c = make("00000000000", "123", 12, 2030); /* 11 digits */
	assert_int_equal(card_validate(&c, 2026, 11), CARD_BAD_NUMBER);
	c = make("", "123", 12, 2030);
	assert_int_equal(card_validate(&c, 2026, 11), CARD_BAD_NUMBER);
	c = make("4242-4242-4242", "123", 12, 2030);
	assert_int_equal(card_validate(&c, 2026, 11), CARD_BAD_NUMBER);
	/* A number that fills the array without its NUL. */
	c = make("4242424242424242", "123", 12, 2030);
	memset(c.number, '0', sizeof(c.number));
	assert_int_equal(card_validate(&c, 2026, 11), CARD_BAD_NUMBER);
}

static void test_validate_expiry(void **state)
{
	struct card c;

	(void)state;
	c = make("4242424242424242", "123", 11, 2026);
	assert_int_equal(card_validate(&c, 2026, 11), CARD_OK); /* this month */
	c.exp_month = 10;
	assert_int_equal(card_validate(&c, 2026, 11), CARD_BAD_EXPIRY);
	c.exp_month = 12;
	c.exp_year = 2025;
	assert_int_equal(card_validate(&c, 2026, 1), CARD_BAD_EXPIRY);
	c.exp_month = 1;
	c.exp_year = 2027;
	assert_int_equal(card_validate(&c, 2026, 12), CARD_OK);
	c.exp_month = 12;
	c.exp_year = 2026;
	assert_int_equal(card_validate(&c, 2026, 12), CARD_OK);
	c.exp_month = 0;
	assert_int_equal(card_validate(&c, 2026, 1), CARD_BAD_EXPIRY);
	c.exp_month = 13;
	assert_int_equal(card_validate(&c, 2026, 1), CARD_BAD_EXPIRY);
	c.exp_month = -1;
	assert_int_equal(card_validate(&c, 2026, 1), CARD_BAD_EXPIRY);
	c.exp_month = 6;
	c.exp_year = 30; /* two digits */
	assert_int_equal(card_validate(&c, 2026, 1), CARD_BAD_EXPIRY);
	c.exp_year = 10000;
	assert_int_equal(card_validate(&c, 2026, 1), CARD_BAD_EXPIRY);
	c.exp_year = 9999;
	assert_int_equal(card_validate(&c, 2026, 1), CARD_OK);
}

static void test_validate_cvc(void **state)
{
	struct card c;

	(void)state;
	c = make("4242424242424242", "12", 12, 2030);
	assert_int_equal(card_validate(&c, 2026, 11), CARD_BAD_CVC);
	c = make("4242424242424242", "1234", 12, 2030);
	assert_int_equal(card_validate(&c, 2026, 11), CARD_BAD_CVC);
	c = make("4242424242424242", "12a", 12, 2030);
	assert_int_equal(card_validate(&c, 2026, 11), CARD_BAD_CVC);
	c = make("4242424242424242", "", 12, 2030);
	assert_int_equal(card_validate(&c, 2026, 11), CARD_BAD_CVC);
	c = make("378282246310005", "123", 12, 2030);
	assert_int_equal(card_validate(&c, 2026, 11), CARD_BAD_CVC);
	c = make("378282246310005", "1234", 12, 2030);
	assert_int_equal(card_validate(&c, 2026, 11), CARD_OK);
	memset(c.cvc, '1', sizeof(c.cvc)); /* no NUL */
	assert_int_equal(card_validate(&c, 2026, 11), CARD_BAD_CVC);
	/* The number is checked first. */
	c = make("4242424242424241", "1", 1, 2000);
	assert_int_equal(card_validate(&c, 2026, 11), CARD_BAD_NUMBER);
}

static void test_problem_strings_have_no_digits(void **state)
{
	int p;

	(void)state;
	for (p = CARD_OK; p <= CARD_BAD_CVC + 1; p++) {
		const char *s = card_problem_str((enum card_problem)p);

		assert_non_null(s);
		assert_true(strlen(s) > 0);
		for (; *s; s++)
			assert_false(isdigit((unsigned char)*s));
	}
	assert_string_not_equal(card_problem_str(CARD_BAD_NUMBER),
	                        card_problem_str(CARD_BAD_EXPIRY));
	assert_string_not_equal(card_problem_str(CARD_BAD_CVC), card_problem_str(CARD_BAD_EXPIRY));
}

static void test_wipe(void **state)
{
	struct card c = make("4242424242424242", "123", 12, 2030);
	const unsigned char *p = (const unsigned char *)&c;
	size_t i;

	(void)state;
	card_wipe(&c);
	for (i = 0; i < sizeof(c); i++)
		assert_int_equal(p[i], 0);
}

static void test_encode_decode_roundtrip(void **state)
{
	struct card c = make("4242424242424242", "123", 1, 2030), d;
	char rec[CARD_RECORD_MAX];
	size_t n;

	(void)state;
	n = card_encode(&c, rec);
	assert_int_equal(n, strlen("4242424242424242|123|01|2030"));
	assert_string_equal(rec, "4242424242424242|123|01|2030");
	memset(&d, 0x55, sizeof(d));
	assert_int_equal(card_decode(rec, n, &d), ERR_OK);
	assert_string_equal(d.number, c.number);
	assert_string_equal(d.cvc, c.cvc);
	assert_int_equal(d.exp_month, 1);
	assert_int_equal(d.exp_year, 2030);

	/* The longest record: 19 digits and a 4-digit CVC. */
	c = make("4242424242424242424", "1234", 12, 9999);
	n = card_encode(&c, rec);
	assert_true(n < CARD_RECORD_MAX);
	assert_int_equal(card_decode(rec, n, &d), ERR_OK);
	assert_string_equal(d.number, "4242424242424242424");
	assert_string_equal(d.cvc, "1234");
	assert_int_equal(d.exp_month, 12);
	assert_int_equal(d.exp_year, 9999);
}

static void test_encode_out_of_range_is_refused_by_decode(void **state)
{
	struct card c = make("4242424242424242", "123", 123, 123456), d;
	char rec[CARD_RECORD_MAX];
	size_t n;

	(void)state;
	n = card_encode(&c, rec);
	assert_true(n < CARD_RECORD_MAX);
	assert_int_equal(card_decode(rec, n, &d), ERR_PARSE);
}

/* Decode from an exactly-sized heap copy so that ASan sees any over-read. */
static int decode_exact(const char *bytes, size_t len, struct card *out)
{
	char *p = malloc(len ? len : 1);
	int rc;

	assert_non_null(p);
	memcpy(p, bytes, len);
	rc = card_decode(p, len, out);
	free(p);
	return rc;
}

static void test_decode_malformed(void **state)
{
	static const char *const bad[] = {
	    "",
	    "|",
	    "|||",
	    "4242424242424242|123|01|2030|",
	    "4242424242424242|123|01|2030x",
	    "4242424242424242|123|01|20300",
	    "4242424242424242|123|01|203",
	    "4242424242424242|123|1|2030",
	    "4242424242424242|123|001|2030",
	    "4242424242424242|123|00|2030",
	    "4242424242424242|123|13|2030",
	    "4242424242424242|12|01|2030",
	    "4242424242424242|12345|01|2030",
	    "4242424242424242||01|2030",
	    "42424242424|123|01|2030",
	    "42424242424242424242|123|01|2030",
	    "4242424242424242|123|01",
	    "4242424242424242|123",
	    "4242424242424242",
	    "4242x24242424242|123|01|2030",
	    " 4242424242424242|123|01|2030",
	    "4242424242424242|123|01|2030\n",
	    "4242424242424242|1a3|01|2030",
	    "4242424242424242|123|0a|2030",
	    "4242424242424242|123|01|20a0",
	    "4242424242424242,123,01,2030",
	    "-4242424242424242|123|01|2030",
	    "4242424242424242|123|+1|2030",
	};
	struct card d, before;
	size_t i;

	(void)state;
	memset(&d, 0x5a, sizeof(d));
	before = d;
	for (i = 0; i < sizeof(bad) / sizeof(bad[0]); i++) {
		if (decode_exact(bad[i], strlen(bad[i]), &d) != ERR_PARSE)
			fail_msg("accepted record %zu", i);
		assert_memory_equal(&d, &before, sizeof(d)); /* untouched */
	}
	/* An embedded NUL, and a length that cuts the record short. */
	assert_int_equal(decode_exact("4242424242424242|123|01|20\0"
	                              "30",
	                              29, &d),
	                 ERR_PARSE);
	assert_int_equal(decode_exact("4242424242424242|123|01|2030", 27, &d), ERR_PARSE);
	assert_int_equal(card_decode(NULL, 0, &d), ERR_PARSE);
	assert_int_equal(decode_exact("4242424242424242|123|01|2030", 28, &d), ERR_OK);
}

static void test_decode_arbitrary_bytes(void **state)
{
	static const char good[] = "4242424242424242|123|01|2030";
	unsigned seed = 12345;
	char bytes[64];
	struct card d;
	size_t i, j, len;

	(void)state;
	/* Every single-byte change of a good record. */
	for (i = 0; i < sizeof(good) - 1; i++) {
		for (j = 0; j < 256; j++) {
			int rc;

			memcpy(bytes, good, sizeof(good) - 1);
			bytes[i] = (char)j;
			rc = decode_exact(bytes, sizeof(good) - 1, &d);
			if (rc == ERR_OK) {
				char rec[CARD_RECORD_MAX];

				/* Whatever decodes re-encodes to the same bytes. */
				assert_int_equal(card_encode(&d, rec), sizeof(good) - 1);
				assert_memory_equal(rec, bytes, sizeof(good) - 1);
			} else {
				assert_int_equal(rc, ERR_PARSE);
			}
		}
	}
	/* Random bytes of random lengths, drawn mostly from the record alphabet. */
	for (i = 0; i < 100000; i++) {
		len = (seed = seed * 1103515245u + 12345u) >> 16 & 63;
		for (j = 0; j < len; j++) {
			unsigned r = (seed = seed * 1103515245u + 12345u) >> 16;

			bytes[j] = (r & 0x100) ? "0123456789|"[r % 11] : (char)r;
		}
		if (decode_exact(bytes, len, &d) == ERR_OK) {
			char rec[CARD_RECORD_MAX];

			assert_int_equal(card_encode(&d, rec), len);
			assert_memory_equal(rec, bytes, len);
		}
	}
}

int main(void)
{
	const struct CMUnitTest tests[] = {
	    cmocka_unit_test(test_luhn),
	    cmocka_unit_test(test_brand),
	    cmocka_unit_test(test_last4),
	    cmocka_unit_test(test_validate_good),
	    cmocka_unit_test(test_validate_number),
	    cmocka_unit_test(test_validate_expiry),
	    cmocka_unit_test(test_validate_cvc),
	    cmocka_unit_test(test_problem_strings_have_no_digits),
	    cmocka_unit_test(test_wipe),
	    cmocka_unit_test(test_encode_decode_roundtrip),
	    cmocka_unit_test(test_encode_out_of_range_is_refused_by_decode),
	    cmocka_unit_test(test_decode_malformed),
	    cmocka_unit_test(test_decode_arbitrary_bytes),
	};

	return cmocka_run_group_tests(tests, NULL, NULL);
}
