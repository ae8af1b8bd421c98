/* test_ratelimit.c: leases, windows, shared quota across limiters, threads, fail-open. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>

#include <pthread.h>
#include <stdatomic.h>
#include <stdio.h>
#include <string.h>
#include <unistd.h>

#include "err.h"
#include "log.h"
#include "ratelimit.h"

/* ---- a fake counter store and clock ---------------------------------------- */

#define STORE_MAX 32

/* What Redis would hold: counters by name, shared by every limiter of a test. */
struct store {
	char names[STORE_MAX][96];
	long long values[STORE_MAX];
	int ttls[STORE_MAX];
	size_t n;
	int calls;
	long long last_n;
	int fail;         /* answer ERR_UNAVAILABLE */
	int delay_us;     /* per call, to let threads pile up behind a lease */
	atomic_llong now; /* the clock, ms since the epoch */
};

static struct store store;
static pthread_mutex_t store_lock = PTHREAD_MUTEX_INITIALIZER;

static int store_lease(void *arg, const char *counter, long long n, int ttl_s, long long *total)
{
	struct store *s = arg;
	size_t i;
	int rc = ERR_OK;

	if (s->delay_us)
		usleep((useconds_t)s->delay_us);
	pthread_mutex_lock(&store_lock);
	s->calls++;
	s->last_n = n;
	if (s->fail) {
		rc = ERR_UNAVAILABLE;
		goto out;
	}
	for (i = 0; i < s->n && strcmp(s->names[i], counter) != 0; i++)
		;
	if (i == s->n) {
		assert_true(s->n < STORE_MAX);
		snprintf(s->names[i], sizeof(s->names[i]), "%s", counter);
		s->values[i] = 0;
		s->n++;
	}
	s->values[i] += n;
	s->ttls[i] = ttl_s;
	*total = s->values[i];
out:
	pthread_mutex_unlock(&store_lock);
	return rc;
}

static long long store_value(const char *counter)
{
	size_t i;

	for (i = 0; i < store.n; i++) {
		if (strcmp(store.names[i], counter) == 0)
			return store.values[i];
	}
	return -1;
}

static int64_t store_clock(void *arg)
{
	return atomic_load(&((struct store *)arg)->now);
}

/* The test's epoch second starts here: 2026-11-27T08:00:00Z. */
#define T0 1795766400000LL

static int reset(void **state)
{
	(void)state;
	memset(&store, 0, sizeof(store));
	atomic_store(&store.now, T0 + 250);
	return 0;
}

static struct ratelimit *limiter(void)
{
	struct ratelimit_options o = {
	    .lease = store_lease, .lease_arg = &store, .clock = store_clock, .clock_arg = &store};
	struct ratelimit *rl = ratelimit_new(&o, 4);

	assert_non_null(rl);
	return rl;
}

static size_t add(struct ratelimit *rl, const char *name, long limit)
{
	size_t index = 99;

	assert_int_equal(ratelimit_add(rl, name, limit, &index), ERR_OK);
	return index;
}

/* Take n times; count each verdict. */
static void take_n(struct ratelimit *rl, size_t key, int n, int *allow, int *deny, int *unchecked)
{
	int i;

	*allow = *deny = *unchecked = 0;
	for (i = 0; i < n; i++) {
		switch (ratelimit_take(rl, key, NULL)) {
		case RATELIMIT_ALLOW:
			(*allow)++;
			break;
		case RATELIMIT_DENY:
			(*deny)++;
			break;
		case RATELIMIT_UNCHECKED:
			(*unchecked)++;
			break;
		}
	}
}

/* ---- tests ------------------------------------------------------------------ */

static void test_add_rejects_bad_input(void **state)
{
	struct ratelimit_options none = {0};
	struct ratelimit *rl = limiter();
	size_t i;
	char long_name[RATELIMIT_NAME_MAX + 2];

	(void)state;
	assert_null(ratelimit_new(&none, 4));
	assert_null(ratelimit_new(NULL, 4));
	assert_int_equal(ratelimit_add(rl, "", 10, &i), ERR_INVALID);
	assert_int_equal(ratelimit_add(rl, "a:b", 10, &i), ERR_INVALID);
	assert_int_equal(ratelimit_add(rl, "a b", 10, &i), ERR_INVALID);
	assert_int_equal(ratelimit_add(rl, "ok", -1, &i), ERR_INVALID);
	memset(long_name, 'x', sizeof(long_name) - 1);
	long_name[sizeof(long_name) - 1] = '\0';
	assert_int_equal(ratelimit_add(rl, long_name, 10, &i), ERR_INVALID);
	assert_int_equal(add(rl, "k0", 1), 0);
	assert_int_equal(add(rl, "k1", 1), 1);
	assert_int_equal(add(rl, "k2", 1), 2);
	assert_int_equal(add(rl, "k3", 1), 3);
	assert_int_equal(ratelimit_add(rl, "k4", 1, &i), ERR_TOO_BIG);
	/* An unknown index is not limited (and does not crash). */
	assert_int_equal(ratelimit_take(rl, 17, NULL), RATELIMIT_ALLOW);
	ratelimit_free(rl);
	ratelimit_free(NULL);
}

/* Limit 0: every request passes and the store is never asked. */
static void test_zero_is_no_limit(void **state)
{
	struct ratelimit *rl = limiter();
	size_t k = add(rl, "key_open", 0);
	int allow, deny, unchecked;

	(void)state;
	take_n(rl, k, 10000, &allow, &deny, &unchecked);
	assert_int_equal(allow, 10000);
	assert_int_equal(store.calls, 0);
	ratelimit_free(rl);
}

/* A large limit is served from leases of limit / 50: one call per batch. */
static void test_leases_batch_the_store(void **state)
{
	struct ratelimit *rl = limiter();
	size_t k = add(rl, "key_big", 5000);
	int allow, deny, unchecked;

	(void)state;
	take_n(rl, k, 250, &allow, &deny, &unchecked);
	assert_int_equal(allow, 250);
	assert_int_equal(store.calls, 3); /* 100 + 100 + 100 */
	assert_int_equal(store.last_n, 100);
	assert_int_equal(store_value("rl:key_big:1795766400"), 300);
	assert_int_equal(store.ttls[0], RATELIMIT_COUNTER_TTL_S);
	ratelimit_free(rl);
}

/* Over the limit: exactly limit pass, the rest are refused with Retry-After
 * >= 1, and the store is not asked again in that window. */
static void test_over_limit_and_retry_after(void **state)
{
	struct ratelimit *rl = limiter();
	size_t k = add(rl, "key_small", 20);
	int allow, deny, unchecked, retry = 0, calls;

	(void)state;
	take_n(rl, k, 30, &allow, &deny, &unchecked);
	assert_int_equal(allow, 20);
	assert_int_equal(deny, 10);
	assert_int_equal(unchecked, 0);
	/* Batch 1: 20 claims; the last one filled the counter, so the store
	 * is not asked again in this window. */
	calls = store.calls;
	assert_int_equal(calls, 20);
	assert_int_equal(ratelimit_take(rl, k, &retry), RATELIMIT_DENY);
	assert_int_equal(retry, 1);
	atomic_store(&store.now, T0 + 999);
	assert_int_equal(ratelimit_take(rl, k, &retry), RATELIMIT_DENY);
	assert_int_equal(retry, 1);
	assert_int_equal(store.calls, calls);
	ratelimit_free(rl);
}

/* A new window brings a new quota; leftovers of the old one are void. */
static void test_window_rollover(void **state)
{
	struct ratelimit *rl = limiter();
	size_t k = add(rl, "key_roll", 100); /* batch 2 */
	int allow, deny, unchecked;

	(void)state;
	take_n(rl, k, 99, &allow, &deny, &unchecked);
	assert_int_equal(allow, 99); /* one token of the last lease is left */
	atomic_store(&store.now, T0 + 1000);
	take_n(rl, k, 150, &allow, &deny, &unchecked);
	assert_int_equal(allow, 100);
	assert_int_equal(deny, 50);
	assert_int_equal(store_value("rl:key_roll:1795766400"), 100);
	assert_true(store_value("rl:key_roll:1795766401") >= 100);
	/* Two seconds on, and again. */
	atomic_store(&store.now, T0 + 3500);
	take_n(rl, k, 100, &allow, &deny, &unchecked);
	assert_int_equal(allow, 100);
	ratelimit_free(rl);
}

/* Two limiters (two API instances) on one store share the quota. */
static void test_instances_share_the_quota(void **state)
{
	struct ratelimit *a = limiter(), *b = limiter();
	size_t ka = add(a, "key_shared", 1000), kb = add(b, "key_shared", 1000);
	int allowed = 0, i;

	(void)state;
	/* Interleaved, as a load balancer would spread them. */
	for (i = 0; i < 3000; i++)
		allowed += ratelimit_take(i % 3 ? a : b, i % 3 ? ka : kb, NULL) == RATELIMIT_ALLOW;
	assert_int_equal(allowed, 1000);
	ratelimit_free(a);
	ratelimit_free(b);
}

/* Keys do not share quotas. */
static void test_keys_are_independent(void **state)
{
	struct ratelimit *rl = limiter();
	size_t k1 = add(rl, "key_one", 5), k2 = add(rl, "key_two", 5);
	int allow, deny, unchecked;

	(void)state;
	take_n(rl, k1, 10, &allow, &deny, &unchecked);
	assert_int_equal(allow, 5);
	take_n(rl, k2, 10, &allow, &deny, &unchecked);
	assert_int_equal(allow, 5);
	ratelimit_free(rl);
}

/* ---- threads ------------------------------------------------------------------ */

struct worker {
	struct ratelimit *rl;
	size_t key;
	int takes;
	int allowed;
};

static void *work(void *arg)
{
	struct worker *w = arg;
	int i;

	for (i = 0; i < w->takes; i++)
		w->allowed += ratelimit_take(w->rl, w->key, NULL) == RATELIMIT_ALLOW;
	return NULL;
}

/* Eight threads over two limiters: exactly the limit is admitted, and each
 * limiter leased in batches, not once per request. */
static void test_threads(void **state)
{
	struct ratelimit *rl[2] = {limiter(), limiter()};
	size_t key[2] = {add(rl[0], "key_threads", 2000), add(rl[1], "key_threads", 2000)};
	struct worker w[8];
	pthread_t t[8];
	int i, total = 0;

	(void)state;
	store.delay_us = 200; /* a Redis round trip: threads queue behind a lease */
	for (i = 0; i < 8; i++) {
		w[i] = (struct worker){.rl = rl[i % 2], .key = key[i % 2], .takes = 1500};
		assert_int_equal(pthread_create(&t[i], NULL, work, &w[i]), 0);
	}
	for (i = 0; i < 8; i++) {
		pthread_join(t[i], NULL);
		total += w[i].allowed;
	}
	assert_int_equal(total, 2000);
	/* 2000 / 40 = 50 leases, plus one refused claim per limiter. */
	assert_true(store.calls <= 52);
	assert_true(store.calls >= 50);
	ratelimit_free(rl[0]);
	ratelimit_free(rl[1]);
}

/* ---- failing open ------------------------------------------------------------ */

static void test_fail_open(void **state)
{
	struct ratelimit *rl = limiter();
	size_t k = add(rl, "key_down", 10);
	int allow, deny, unchecked;

	(void)state;
	store.fail = 1;
	take_n(rl, k, 50, &allow, &deny, &unchecked);
	/* Every request passes, and the store was asked once, not per request. */
	assert_int_equal(unchecked, 50);
	assert_int_equal(store.calls, 1);
	/* A second later it is asked again; still down, still open. */
	atomic_store(&store.now, T0 + 1250);
	take_n(rl, k, 5, &allow, &deny, &unchecked);
	assert_int_equal(unchecked, 5);
	assert_int_equal(store.calls, 2);
	/* Back: the limit applies again. */
	store.fail = 0;
	atomic_store(&store.now, T0 + 2250);
	take_n(rl, k, 20, &allow, &deny, &unchecked);
	assert_int_equal(allow, 10);
	assert_int_equal(deny, 10);
	assert_int_equal(unchecked, 0);
	ratelimit_free(rl);
}

int main(void)
{
	const struct CMUnitTest tests[] = {
	    cmocka_unit_test_setup(test_add_rejects_bad_input, reset),
	    cmocka_unit_test_setup(test_zero_is_no_limit, reset),
	    cmocka_unit_test_setup(test_leases_batch_the_store, reset),
	    cmocka_unit_test_setup(test_over_limit_and_retry_after, reset),
	    cmocka_unit_test_setup(test_window_rollover, reset),
	    cmocka_unit_test_setup(test_instances_share_the_quota, reset),
	    cmocka_unit_test_setup(test_keys_are_independent, reset),
	    cmocka_unit_test_setup(test_threads, reset),
	    cmocka_unit_test_setup(test_fail_open, reset),
	};

	/* The fail-open warnings are expected; keep the output readable. */
	log_init("test_ratelimit", LOG_ERROR);
	return cmocka_run_group_tests(tests, NULL, NULL);
}
