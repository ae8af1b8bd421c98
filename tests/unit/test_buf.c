/* test_buf.c: the bounded buffer: maximum, growth, printf, detach. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>

#include "buf.h"
#include "err.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

static void test_init_is_empty(void **state)
{
	struct buf b;

	(void)state;
	buf_init(&b, 100);
	assert_null(b.data);
	assert_int_equal(b.len, 0);
	assert_int_equal(b.max, 100);
	buf_release(&b);
	buf_release(&b); /* twice is harmless */
}

static void test_append_terminates(void **state)
{
	struct buf b;

	(void)state;
	buf_init(&b, 100);
	assert_int_equal(buf_append(&b, "abc", 3), ERR_OK);
	assert_int_equal(buf_append_str(&b, "def"), ERR_OK);
	assert_int_equal(b.len, 6);
	assert_string_equal(b.data, "abcdef");
	assert_int_equal(buf_append(&b, "", 0), ERR_OK);
	assert_string_equal(b.data, "abcdef");
	/* Binary data, embedded NUL included. */
	assert_int_equal(buf_append(&b, "x\0y", 3), ERR_OK);
	assert_int_equal(b.len, 9);
	assert_memory_equal(b.data, "abcdefx\0y", 10);
	buf_release(&b);
}

static void test_max_boundary(void **state)
{
	struct buf b;
	char big[1000];
	char *before;
	size_t cap;

	(void)state;
	memset(big, 'q', sizeof(big));
	buf_init(&b, 1000);
	assert_int_equal(buf_append(&b, big, 999), ERR_OK);
	assert_int_equal(buf_append(&b, "z", 1), ERR_OK); /* exactly max */
	assert_int_equal(b.len, 1000);
	assert_int_equal(b.data[1000], '\0');
	before = malloc(b.len + 1);
	assert_non_null(before);
	memcpy(before, b.data, b.len + 1);
	cap = b.cap;

	assert_int_equal(buf_append(&b, "y", 1), ERR_TOO_BIG);
	assert_int_equal(buf_append_str(&b, "yy"), ERR_TOO_BIG);
	assert_int_equal(buf_printf(&b, "%d", 7), ERR_TOO_BIG);
	assert_int_equal(b.len, 1000);
	assert_int_equal(b.cap, cap);
	assert_memory_equal(b.data, before, 1001);
	/* Zero bytes still fit. */
	assert_int_equal(buf_append(&b, "", 0), ERR_OK);
	free(before);
	buf_release(&b);

	/* One bigger than max in a single append, from empty. */
	buf_init(&b, 10);
	assert_int_equal(buf_append(&b, big, 11), ERR_TOO_BIG);
	assert_int_equal(b.len, 0);
	assert_int_equal(buf_append(&b, big, 10), ERR_OK);
	assert_int_equal(b.len, 10);
	buf_release(&b);

	/* A zero maximum holds nothing but still gives "". */
	buf_init(&b, 0);
	assert_int_equal(buf_append(&b, "a", 1), ERR_TOO_BIG);
	assert_int_equal(buf_append(&b, "", 0), ERR_OK);
	assert_string_equal(b.data, "");
	buf_release(&b);
}

static void test_size_overflow(void **state)
{
	struct buf b;

	(void)state;
	buf_init(&b, SIZE_MAX);
	assert_int_equal(buf_append(&b, "abc", 3), ERR_OK);
	/* Sizes that would wrap around must be refused, not allocated. */
	assert_int_equal(buf_append(&b, "abc", SIZE_MAX), ERR_TOO_BIG);
	assert_int_equal(buf_append(&b, "abc", SIZE_MAX - 3), ERR_TOO_BIG);
	assert_int_equal(b.len, 3);
	assert_string_equal(b.data, "abc");
	buf_release(&b);
}

static void test_growth(void **state)
{
	struct buf b;
	size_t i;

	(void)state;
	buf_init(&b, 1 << 20);
	for (i = 0; i < 10000; i++)
		assert_int_equal(buf_append(&b, &"0123456789"[i % 10], 1), ERR_OK);
	assert_int_equal(b.len, 10000);
	assert_true(b.cap > b.len);
	assert_true(b.cap <= (1 << 20) + 1);
	for (i = 0; i < 10000; i++)
		assert_int_equal(b.data[i], '0' + (int)(i % 10));
	assert_int_equal(b.data[10000], '\0');
	buf_release(&b);
}

static void test_capacity_never_past_max(void **state)
{
	struct buf b;

	(void)state;
	buf_init(&b, 100);
	assert_int_equal(buf_append(&b, "a", 1), ERR_OK);
	while (b.len < 100)
		assert_int_equal(buf_append(&b, "a", 1), ERR_OK);
	assert_true(b.cap <= 101);
	buf_release(&b);
}

static void test_printf_growth(void **state)
{
	struct buf b;
	char expect[64];
	size_t off = 0;
	int i;

	(void)state;
	buf_init(&b, 100000);
	assert_int_equal(buf_printf(&b, "%s", ""), ERR_OK);
	assert_string_equal(b.data, "");
	for (i = 0; i < 2000; i++) {
		int n = snprintf(expect, sizeof(expect), "[%d:%s]", i, "x");

		assert_int_equal(buf_printf(&b, "[%d:%s]", i, "x"), ERR_OK);
		assert_memory_equal(b.data + off, expect, (size_t)n);
		off += (size_t)n;
		assert_int_equal(b.len, off);
		assert_int_equal(b.data[off], '\0');
	}
	buf_release(&b);

	/* One long printf into a fresh buffer. */
	buf_init(&b, 5000);
	assert_int_equal(buf_printf(&b, "%04000d", 42), ERR_OK);
	assert_int_equal(b.len, 4000);
	assert_string_equal(b.data + 3998, "42");
	buf_release(&b);
}

static void test_printf_too_big_leaves_buffer(void **state)
{
	struct buf b;

	(void)state;
	buf_init(&b, 20);
	assert_int_equal(buf_printf(&b, "%s", "0123456789"), ERR_OK);
	/* One byte over: refused, and the partial output is not left behind. */
	assert_int_equal(buf_printf(&b, "%s", "abcdefghijk"), ERR_TOO_BIG);
	assert_int_equal(b.len, 10);
	assert_string_equal(b.data, "0123456789");
	assert_int_equal(buf_printf(&b, "%s", "abcdefghij"), ERR_OK);
	assert_int_equal(b.len, 20);
	assert_string_equal(b.data, "0123456789abcdefghij");
	buf_release(&b);
}

static void test_truncate(void **state)
{
	struct buf b;

	(void)state;
	buf_init(&b, 100);
	buf_truncate(&b, 0); /* empty, nothing allocated: a no-op */
	assert_int_equal(buf_append_str(&b, "abcdef"), ERR_OK);
	buf_truncate(&b, 10);
	assert_int_equal(b.len, 6);
	buf_truncate(&b, 3);
	assert_int_equal(b.len, 3);
	assert_string_equal(b.data, "abc");
	assert_int_equal(buf_append_str(&b, "xy"), ERR_OK);
	assert_string_equal(b.data, "abcxy");
	buf_release(&b);
}

/* A cut from the middle, the end and past it; the rest moves down, NUL-terminated. */
static void test_cut(void **state)
{
	struct buf b;
	size_t cap;

	(void)state;
	buf_init(&b, 100);
	buf_cut(&b, 0, 5); /* empty, nothing allocated: a no-op */
	assert_int_equal(b.len, 0);
	assert_int_equal(buf_append_str(&b, "0123456789"), ERR_OK);
	cap = b.cap;
	buf_cut(&b, 2, 3);
	assert_int_equal(b.len, 7);
	assert_string_equal(b.data, "0156789");
	buf_cut(&b, 5, 0);
	buf_cut(&b, 7, 1);
	assert_string_equal(b.data, "0156789");
	buf_cut(&b, 5, 10);
	assert_int_equal(b.len, 5);
	assert_string_equal(b.data, "01567");
	buf_cut(&b, 0, 1);
	assert_string_equal(b.data, "1567");
	assert_int_equal(b.cap, cap);
	assert_int_equal(buf_append_str(&b, "xy"), ERR_OK);
	assert_string_equal(b.data, "1567xy");
	buf_cut(&b, 0, 6);
	assert_int_equal(b.len, 0);
	assert_string_equal(b.data, "");
	buf_release(&b);
}

static void test_reset(void **state)
{
	struct buf b;
	char *p;

	(void)state;
	buf_init(&b, 100);
	assert_int_equal(buf_append_str(&b, "hello"), ERR_OK);
	p = b.data;
	buf_reset(&b);
	assert_int_equal(b.len, 0);
	assert_ptr_equal(b.data, p);
	assert_string_equal(b.data, "");
	assert_int_equal(buf_append_str(&b, "x"), ERR_OK);
	assert_string_equal(b.data, "x");
	buf_release(&b);
}

static void test_self_append(void **state)
{
	struct buf b;
	int i;

	(void)state;
	buf_init(&b, 1 << 16);
	assert_int_equal(buf_append_str(&b, "ab"), ERR_OK);
	/* Each round doubles the data and makes the buffer reallocate. */
	for (i = 0; i < 10; i++)
		assert_int_equal(buf_append(&b, b.data, b.len), ERR_OK);
	assert_int_equal(b.len, 2048);
	for (i = 0; i < 2048; i += 2)
		assert_memory_equal(b.data + i, "ab", 2);
	buf_release(&b);
}

static void test_detach(void **state)
{
	struct buf b;
	size_t len = 99;
	char *p;

	(void)state;
	buf_init(&b, 100);
	assert_int_equal(buf_append_str(&b, "payload"), ERR_OK);
	p = buf_detach(&b, &len);
	assert_non_null(p);
	assert_string_equal(p, "payload");
	assert_int_equal(len, 7);
	assert_null(b.data);
	assert_int_equal(b.len, 0);
	assert_int_equal(b.max, 100);
	free(p);

	/* Reusable afterwards. */
	assert_int_equal(buf_append_str(&b, "again"), ERR_OK);
	p = buf_detach(&b, NULL);
	assert_string_equal(p, "again");
	free(p);

	/* An empty buffer detaches as "". */
	len = 99;
	p = buf_detach(&b, &len);
	assert_non_null(p);
	assert_string_equal(p, "");
	assert_int_equal(len, 0);
	free(p);
	buf_release(&b);
}

int main(void)
{
	const struct CMUnitTest tests[] = {
	    cmocka_unit_test(test_init_is_empty),
	    cmocka_unit_test(test_append_terminates),
	    cmocka_unit_test(test_max_boundary),
	    cmocka_unit_test(test_size_overflow),
	    cmocka_unit_test(test_growth),
	    cmocka_unit_test(test_capacity_never_past_max),
	    cmocka_unit_test(test_printf_growth),
	    cmocka_unit_test(test_printf_too_big_leaves_buffer),
	    cmocka_unit_test(test_truncate),
	    cmocka_unit_test(test_cut),
	    cmocka_unit_test(test_reset),
	    cmocka_unit_test(test_self_append),
	    cmocka_unit_test(test_detach),
	};

	return cmocka_run_group_tests(tests, NULL, NULL);
}
