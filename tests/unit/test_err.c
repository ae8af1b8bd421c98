/* test_err.c: every error code has its own text, unknown codes a fallback. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>

#include "err.h"

#include <limits.h>
#include <string.h>

static void test_every_code_has_distinct_text(void **state)
{
	int a, b;

	(void)state;
	for (a = ERR_OK; a > ERR_LAST_; a--) {
		const char *s = err_str(a);

		assert_non_null(s);
		assert_true(strlen(s) > 0);
		assert_string_not_equal(s, "unknown error");
		for (b = ERR_OK; b > a; b--)
			assert_string_not_equal(s, err_str(b));
	}
}

static void test_unknown_codes(void **state)
{
	(void)state;
	assert_string_equal(err_str(ERR_LAST_), "unknown error");
	assert_string_equal(err_str(ERR_LAST_ - 1), "unknown error");
	assert_string_equal(err_str(1), "unknown error");
	assert_string_equal(err_str(INT_MIN), "unknown error");
	assert_string_equal(err_str(INT_MAX), "unknown error");
}

static void test_ok_and_known_texts(void **state)
{
	(void)state;
	assert_string_equal(err_str(ERR_OK), "ok");
	assert_string_equal(err_str(ERR_NOMEM), "out of memory");
	assert_string_equal(err_str(ERR_UNROUTABLE), "message routed to no queue");
}

int main(void)
{
	const struct CMUnitTest tests[] = {
	    cmocka_unit_test(test_every_code_has_distinct_text),
	    cmocka_unit_test(test_unknown_codes),
	    cmocka_unit_test(test_ok_and_known_texts),
	};

	return cmocka_run_group_tests(tests, NULL, NULL);
}
