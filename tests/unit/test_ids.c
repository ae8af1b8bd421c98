/* test_ids.c: UUID formats, keyed derivation, tokens and RFC 3339 times. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>

#include "ids.h"

#include <pthread.h>
#include <stdlib.h>
#include <string.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

static const uint8_t key_a[32] = {0,  1,  2,  3,  4,  5,  6,  7,  8,  9,  10, 11, 12, 13, 14, 15,
                                  16, 17, 18, 19, 20, 21, 22, 23, 24, 25, 26, 27, 28, 29, 30, 31};

static int is_variant(char c)
{
	return c == '8' || c == '9' || c == 'a' || c == 'b';
}

static void test_uuid4_format(void **state)
{
	char a[IDS_UUID_LEN + 1], b[IDS_UUID_LEN + 1];
	int i;

	(void)state;
	for (i = 0; i < 1000; i++) {
		ids_uuid4(a);
		assert_int_equal(strlen(a), IDS_UUID_LEN);
		assert_true(ids_uuid_valid(a));
		assert_int_equal(a[14], '4');
		assert_true(is_variant(a[19]));
	}
	ids_uuid4(b);
	assert_string_not_equal(a, b);
}

#define UNIQUE_PER_THREAD 5000

static void *make_uuids(void *arg)
{
	char(*out)[IDS_UUID_LEN + 1] = arg;

	for (int i = 0; i < UNIQUE_PER_THREAD; i++)
		ids_uuid4(out[i]);
	return NULL;
}

static int cmp_uuid(const void *a, const void *b)
{
	return strcmp(a, b);
}

/* Two threads' streams, each past many refills, never repeat an id. */
static void test_uuid4_unique_across_threads(void **state)
{
	char(*ids)[IDS_UUID_LEN + 1] = calloc(2 * UNIQUE_PER_THREAD, IDS_UUID_LEN + 1);
	pthread_t t;

	(void)state;
	assert_non_null(ids);
	assert_int_equal(pthread_create(&t, NULL, make_uuids, ids), 0);
	make_uuids(ids + UNIQUE_PER_THREAD);
	assert_int_equal(pthread_join(t, NULL), 0);
	qsort(ids, 2 * UNIQUE_PER_THREAD, IDS_UUID_LEN + 1, cmp_uuid);
	for (int i = 1; i < 2 * UNIQUE_PER_THREAD; i++)
		assert_string_not_equal(ids[i - 1], ids[i]);
	free(ids);
}

/* A forked child does not hand out the ids its parent gives next. */
static void test_uuid4_fork(void **state)
{
	char parent[IDS_UUID_LEN + 1], child[IDS_UUID_LEN + 1] = "";
	int fds[2];
	pid_t pid;
	int status;

	(void)state;
	ids_uuid4(parent); /* the stream is keyed before the fork */
	assert_int_equal(pipe(fds), 0);
	pid = fork();
	assert_true(pid >= 0);
	if (pid == 0) {
		ids_uuid4(child);
		_exit(write(fds[1], child, sizeof(child)) == (ssize_t)sizeof(child) ? 0 : 1);
	}
	close(fds[1]);
	assert_int_equal(read(fds[0], child, sizeof(child)), (ssize_t)sizeof(child));
	close(fds[0]);
	assert_int_equal(waitpid(pid, &status, 0), pid);
	assert_true(WIFEXITED(status) && WEXITSTATUS(status) == 0);
	ids_uuid4(parent);
	assert_true(ids_uuid_valid(child));
	assert_string_not_equal(parent, child);
}

static void test_derived_known_answer(void **state)
{
	char out[IDS_UUID_LEN + 1];

	(void)state;
	/* Computed independently with Python's hashlib.blake2b(key=..., digest_size=32). */
	ids_uuid_derived(key_a, "client-1", "idem-key-1", out);
	assert_string_equal(out, "5094597a-abc2-8618-a707-aae289d25007");
	ids_uuid_derived(key_a, "", "", out);
	assert_string_equal(out, "41ff93a4-eaee-8d3b-b8a9-3438a6f62a92");
}

static void test_derived_deterministic_and_sensitive(void **state)
{
	uint8_t key_b[32];
	char x[IDS_UUID_LEN + 1], y[IDS_UUID_LEN + 1];

	(void)state;
	memcpy(key_b, key_a, sizeof(key_b));
	key_b[31] ^= 1;

	ids_uuid_derived(key_a, "client-1", "k", x);
	ids_uuid_derived(key_a, "client-1", "k", y);
	assert_string_equal(x, y);
	assert_true(ids_uuid_valid(x));
	assert_int_equal(x[14], '8');
	assert_true(is_variant(x[19]));

	ids_uuid_derived(key_a, "client-2", "k", y);
	assert_string_not_equal(x, y);
	ids_uuid_derived(key_a, "client-1", "K", y);
	assert_string_not_equal(x, y);
	ids_uuid_derived(key_b, "client-1", "k", y);
	assert_string_not_equal(x, y);
	/* Swapping the parts gives another id. */
	ids_uuid_derived(key_a, "k", "client-1", y);
	assert_string_not_equal(x, y);

	/* The split between the parts matters. */
	ids_uuid_derived(key_a, "ab", "c", x);
	ids_uuid_derived(key_a, "a", "bc", y);
	assert_string_not_equal(x, y);
	ids_uuid_derived(key_a, "abc", "", y);
	assert_string_not_equal(x, y);
}

static void test_uuid_valid(void **state)
{
	static const char *const good[] = {
	    "00000000-0000-0000-0000-000000000000",
	    "5094597a-abc2-8618-a707-aae289d25007",
	    "ffffffff-ffff-4fff-bfff-ffffffffffff",
	};
	static const char *const bad[] = {
	    "",
	    "5094597a-abc2-8618-a707-aae289d2500",   /* short */
	    "5094597a-abc2-8618-a707-aae289d250077", /* long */
	    "5094597A-abc2-8618-a707-aae289d25007",  /* upper case */
	    "5094597a_abc2-8618-a707-aae289d25007",  /* wrong separator */
	    "5094597aa-bc2-8618-a707-aae289d25007",  /* dash misplaced */
	    "5094597a-abc2-8618-a707-aae289d2500g",  /* not hex */
	    "{5094597a-abc2-8618-a707-aae289d25007}",
	    "5094597aabc28618a707aae289d25007",
	    " 5094597a-abc2-8618-a707-aae289d25007",
	    "5094597a-abc2-8618-a707-aae289d25007\n",
	};
	size_t i;

	(void)state;
	for (i = 0; i < sizeof(good) / sizeof(good[0]); i++)
		assert_true(ids_uuid_valid(good[i]));
	for (i = 0; i < sizeof(bad) / sizeof(bad[0]); i++) {
		if (ids_uuid_valid(bad[i]))
			fail_msg("accepted '%s'", bad[i]);
	}
	assert_false(ids_uuid_valid(NULL));
}

static void test_token(void **state)
{
	char a[29], b[29];
	int i;

	(void)state;
	ids_token(a);
	assert_int_equal(strlen(a), 28);
	assert_memory_equal(a, "tok_", 4);
	for (i = 4; i < 28; i++)
		assert_non_null(strchr("0123456789abcdef", a[i]));
	ids_token(b);
	assert_string_not_equal(a, b);
}

static void test_now_ms(void **state)
{
	int64_t a = ids_now_ms();
	int64_t t = (int64_t)time(NULL) * 1000;

	(void)state;
	assert_true(a > 1700000000000LL);
	assert_true(a - t < 2000 && t - a < 2000);
	assert_true(ids_now_ms() >= a);
}

static void test_rfc3339(void **state)
{
	char out[25];

	(void)state;
	ids_rfc3339(0, out);
	assert_string_equal(out, "1970-01-01T00:00:00.000Z");
	ids_rfc3339(1795766400123LL, out);
	assert_string_equal(out, "2026-11-27T08:00:00.123Z");
	ids_rfc3339(951782400000LL, out); /* leap day */
	assert_string_equal(out, "2000-02-29T00:00:00.000Z");
	ids_rfc3339(1735689599999LL, out);
	assert_string_equal(out, "2024-12-31T23:59:59.999Z");
	ids_rfc3339(-1, out);
	assert_string_equal(out, "1969-12-31T23:59:59.999Z");
	ids_rfc3339(253402300799999LL, out);
	assert_string_equal(out, "9999-12-31T23:59:59.999Z");
	/* Out of the four-digit range: clamped, never longer. */
	ids_rfc3339(INT64_MAX, out);
	assert_string_equal(out, "9999-12-31T23:59:59.999Z");
	ids_rfc3339(INT64_MIN, out);
	assert_string_equal(out, "0000-01-01T00:00:00.000Z");
}

int main(void)
{
	const struct CMUnitTest tests[] = {
	    cmocka_unit_test(test_uuid4_format),
	    cmocka_unit_test(test_uuid4_unique_across_threads),
	    cmocka_unit_test(test_uuid4_fork),
	    cmocka_unit_test(test_derived_known_answer),
	    cmocka_unit_test(test_derived_deterministic_and_sensitive),
	    cmocka_unit_test(test_uuid_valid),
	    cmocka_unit_test(test_token),
	    cmocka_unit_test(test_now_ms),
	    cmocka_unit_test(test_rfc3339),
	};

	return cmocka_run_group_tests(tests, NULL, NULL);
}
