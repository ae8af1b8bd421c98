/* test_addrlimit.c: events per address and second, windows, the fixed table, threads. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>

#include <pthread.h>
#include <stdio.h>
#include <string.h>

#include <sodium.h>

#include "addrlimit.h"
#include "err.h"

static struct netaddr addr_n(unsigned n)
{
	struct netaddr a;
	char text[32];

	snprintf(text, sizeof(text), "10.%u.%u.%u", (n >> 16) & 255, (n >> 8) & 255, n & 255);
	assert_int_equal(netaddr_parse(text, strlen(text), &a), ERR_OK);
	return a;
}

static void test_limit_per_window(void **state)
{
	struct addrlimit *l = addrlimit_new(3, 64);
	struct netaddr a = addr_n(1), b = addr_n(2);
	int64_t t = 1700000000000; /* ms, at the start of a second */
	int crossed = -1;

	(void)state;
	assert_non_null(l);
	assert_false(addrlimit_busy(l, t));
	for (int i = 0; i < 3; i++) {
		assert_int_equal(addrlimit_add(l, &a, t + i, &crossed), 0);
		assert_int_equal(crossed, 0);
		assert_false(addrlimit_over(l, &a, t + i));
	}
	assert_false(addrlimit_busy(l, t));
	/* The fourth goes over, and says so once. */
	assert_int_equal(addrlimit_add(l, &a, t + 10, &crossed), 1);
	assert_int_equal(crossed, 1);
	assert_int_equal(addrlimit_add(l, &a, t + 11, &crossed), 1);
	assert_int_equal(crossed, 0);
	assert_true(addrlimit_busy(l, t + 12));
	assert_true(addrlimit_over(l, &a, t + 999));
	/* Another address is not affected. */
	assert_false(addrlimit_over(l, &b, t + 20));
	assert_int_equal(addrlimit_add(l, &b, t + 20, NULL), 0);
	/* The next second starts afresh. */
	assert_false(addrlimit_busy(l, t + 1000));
	assert_false(addrlimit_over(l, &a, t + 1000));
	assert_int_equal(addrlimit_add(l, &a, t + 1000, NULL), 0);
	addrlimit_free(l);
}

static void test_retry_after(void **state)
{
	(void)state;
	assert_int_equal(addrlimit_retry_after(1700000000000), 1);
	assert_int_equal(addrlimit_retry_after(1700000000001), 1);
	assert_int_equal(addrlimit_retry_after(1700000000999), 1);
}

static void test_bad_arguments(void **state)
{
	(void)state;
	assert_null(addrlimit_new(0, 64));
	assert_null(addrlimit_new(-1, 64));
	assert_null(addrlimit_new(1, (size_t)1 << 30));
	addrlimit_free(NULL);
}

/*
 * Far more addresses than entries: the table never grows, an address is
 * never refused for others' events, and a heavy sender keeps its entry
 * (the lightest entry of a set is the one reused).
 */
static void test_table_is_bounded(void **state)
{
	struct addrlimit *l = addrlimit_new(5, 64);
	struct netaddr heavy = addr_n(0xabcdef);
	int64_t t = 1700000005000;
	unsigned i;

	(void)state;
	assert_non_null(l);
	for (i = 0; i < 6; i++)
		addrlimit_add(l, &heavy, t, NULL);
	assert_true(addrlimit_over(l, &heavy, t));
	for (i = 0; i < 20000; i++) {
		struct netaddr a = addr_n(i);

		/* One event each: never over, whatever shares its set. */
		assert_int_equal(addrlimit_add(l, &a, t, NULL), 0);
		assert_false(addrlimit_over(l, &a, t));
	}
	assert_true(addrlimit_over(l, &heavy, t));
	addrlimit_free(l);
}

struct worker {
	struct addrlimit *l;
	int64_t t;
	int over;
};

static void *hammer(void *arg)
{
	struct worker *w = arg;
	struct netaddr a = addr_n(7);

	for (int i = 0; i < 10000; i++)
		w->over += addrlimit_add(w->l, &a, w->t, NULL);
	return NULL;
}

/* Four threads, 40,000 events of one address: exactly limit are admitted. */
static void test_threads_count_exactly(void **state)
{
	struct addrlimit *l = addrlimit_new(1000, 64);
	struct worker w[4];
	pthread_t th[4];
	int over = 0;

	(void)state;
	assert_non_null(l);
	for (int i = 0; i < 4; i++) {
		w[i] = (struct worker){.l = l, .t = 1700000009000};
		assert_int_equal(pthread_create(&th[i], NULL, hammer, &w[i]), 0);
	}
	for (int i = 0; i < 4; i++) {
		pthread_join(th[i], NULL);
		over += w[i].over;
	}
	assert_int_equal(over, 40000 - 1000);
	addrlimit_free(l);
}

int main(void)
{
	const struct CMUnitTest tests[] = {
	    cmocka_unit_test(test_limit_per_window),      cmocka_unit_test(test_retry_after),
	    cmocka_unit_test(test_bad_arguments),         cmocka_unit_test(test_table_is_bounded),
	    cmocka_unit_test(test_threads_count_exactly),
	};

	if (sodium_init() < 0)
		return 1;
	return cmocka_run_group_tests(tests, NULL, NULL);
}
