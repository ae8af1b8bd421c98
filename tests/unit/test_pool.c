/* test_pool.c: unit tests for the connection pool, with fake connections instead of a network. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>

#include <errno.h>
#include <pthread.h>
#include <sched.h>
#include <stdatomic.h>
#include <stdlib.h>
#include <time.h>

#include "cache.h"
#include "db.h"
#include "pool.h"

/* Long enough for a thread that is going to return to do so on a loaded
 * CI machine; short enough that a hang fails the test, not the timeout. */
#define WAIT_LONG_MS 5000
/* How long a thread that must stay blocked is watched. */
#define WAIT_SHORT_MS 100

#define FAKE_MAX 64

struct fake_conn {
	int id;
	atomic_int in_use; /* handed out by the pool right now */
	int resets;
};

/* The callbacks' argument: counts what the pool asked for. */
struct fake {
	pthread_mutex_t lock;
	pthread_cond_t cond;
	int opens; /* open calls, failed ones included */
	int closes;
	int fail;    /* open calls still to fail */
	int gated;   /* open waits while set */
	int in_open; /* open calls waiting at the gate */
	struct fake_conn *made[FAKE_MAX];
	int closed[FAKE_MAX]; /* by id */
};

static void *fake_open(void *arg)
{
	struct fake *f = arg;
	struct fake_conn *c = NULL;
	int id;

	pthread_mutex_lock(&f->lock);
	f->in_open++;
	pthread_cond_broadcast(&f->cond);
	while (f->gated)
		pthread_cond_wait(&f->cond, &f->lock);
	f->in_open--;
	id = f->opens++;
	if (f->fail > 0) {
		f->fail--;
	} else if (id < FAKE_MAX) {
		c = calloc(1, sizeof(*c));
		if (c) {
			c->id = id;
			f->made[id] = c;
		}
	}
	pthread_mutex_unlock(&f->lock);
	return c;
}

static void fake_close(void *conn, void *arg)
{
	struct fake *f = arg;
	struct fake_conn *c = conn;

	pthread_mutex_lock(&f->lock);
	f->closes++;
	f->closed[c->id]++;
	pthread_mutex_unlock(&f->lock);
	free(c);
}

/* Only the thread that holds the connection calls reset: no lock. */
static void fake_reset(void *conn, void *arg)
{
	struct fake_conn *c = conn;

	(void)arg;
	c->resets++;
}

static const struct pool_ops fake_ops = {
    .open = fake_open,
    .close = fake_close,
    .reset = fake_reset,
};

static struct fake *fake_new(void)
{
	struct fake *f = calloc(1, sizeof(*f));

	assert_non_null(f);
	assert_int_equal(pthread_mutex_init(&f->lock, NULL), 0);
	assert_int_equal(pthread_cond_init(&f->cond, NULL), 0);
	return f;
}

static void fake_free(struct fake *f)
{
	pthread_cond_destroy(&f->cond);
	pthread_mutex_destroy(&f->lock);
	free(f);
}

static int fake_count(struct fake *f, const int *field)
{
	int n;

	pthread_mutex_lock(&f->lock);
	n = *field;
	pthread_mutex_unlock(&f->lock);
	return n;
}

static void fake_set_gate(struct fake *f, int gated, int fail)
{
	pthread_mutex_lock(&f->lock);
	f->gated = gated;
	f->fail = fail;
	pthread_cond_broadcast(&f->cond);
	pthread_mutex_unlock(&f->lock);
}

/* Wait until n open calls are held at the gate. */
static void fake_wait_in_open(struct fake *f, int n)
{
	pthread_mutex_lock(&f->lock);
	while (f->in_open < n)
		pthread_cond_wait(&f->cond, &f->lock);
	pthread_mutex_unlock(&f->lock);
}

/* ---- a thread that calls pool_get ---------------------------------------- */

struct getter {
	struct pool *pool;
	pthread_t thread;
	pthread_mutex_t lock;
	pthread_cond_t cond;
	int done;
	void *conn;
};

static void *getter_main(void *arg)
{
	struct getter *g = arg;
	void *conn = pool_get(g->pool);

	pthread_mutex_lock(&g->lock);
	g->conn = conn;
	g->done = 1;
	pthread_cond_signal(&g->cond);
	pthread_mutex_unlock(&g->lock);
	return NULL;
}

static void getter_start(struct getter *g, struct pool *p)
{
	g->pool = p;
	g->done = 0;
	g->conn = NULL;
	assert_int_equal(pthread_mutex_init(&g->lock, NULL), 0);
	assert_int_equal(pthread_cond_init(&g->cond, NULL), 0);
	assert_int_equal(pthread_create(&g->thread, NULL, getter_main, g), 0);
}

/* 1 when the getter's pool_get returned within ms, else 0. */
static int getter_wait(struct getter *g, long ms)
{
	struct timespec until;
	int done;

	clock_gettime(CLOCK_REALTIME, &until);
	until.tv_sec += ms / 1000;
	until.tv_nsec += (ms % 1000) * 1000000L;
	if (until.tv_nsec >= 1000000000L) {
		until.tv_sec++;
		until.tv_nsec -= 1000000000L;
	}
	pthread_mutex_lock(&g->lock);
	while (!g->done) {
		if (pthread_cond_timedwait(&g->cond, &g->lock, &until) == ETIMEDOUT)
			break;
	}
	done = g->done;
	pthread_mutex_unlock(&g->lock);
	return done;
}

/* Only for a getter that has returned. */
static void *getter_join(struct getter *g)
{
	assert_int_equal(pthread_join(g->thread, NULL), 0);
	pthread_cond_destroy(&g->cond);
	pthread_mutex_destroy(&g->lock);
	return g->conn;
}

/* pool_get in another thread, so that a get that would wait forever fails
 * the test instead of hanging it. */
static void *get_in_thread(struct pool *p)
{
	struct getter g;

	getter_start(&g, p);
	assert_int_equal(getter_wait(&g, WAIT_LONG_MS), 1);
	return getter_join(&g);
}

/* Free the pool (every connection put back) and check what it closed. */
static void free_and_check(struct pool *p, struct fake *f, int closes)
{
	pool_free(p);
	assert_int_equal(f->closes, closes);
	fake_free(f);
}

/* ---- tests --------------------------------------------------------------- */

static void test_new_rejects_bad_arguments(void **state)
{
	struct fake *f = fake_new();
	const struct pool_ops no_open = {.open = NULL, .close = fake_close, .reset = NULL};
	const struct pool_ops no_close = {.open = fake_open, .close = NULL, .reset = NULL};

	(void)state;
	assert_null(pool_new(0, &fake_ops, f));
	assert_null(pool_new(-1, &fake_ops, f));
	assert_null(pool_new(1, NULL, f));
	assert_null(pool_new(1, &no_open, f));
	assert_null(pool_new(1, &no_close, f));
	/* NULL pools and connections are no-ops, not crashes. */
	assert_null(pool_get(NULL));
	pool_put(NULL, NULL);
	pool_free(NULL);
	assert_int_equal(f->opens, 0);
	fake_free(f);
}

static void test_opens_lazily_up_to_size(void **state)
{
	struct fake *f = fake_new();
	struct pool *p = pool_new(3, &fake_ops, f);
	void *a, *b;

	(void)state;
	assert_non_null(p);
	assert_int_equal(f->opens, 0);
	a = pool_get(p);
	assert_non_null(a);
	assert_int_equal(f->opens, 1);
	b = pool_get(p);
	assert_non_null(b);
	assert_ptr_not_equal(a, b);
	assert_int_equal(f->opens, 2);
	pool_put(p, a);
	pool_put(p, b);
	free_and_check(p, f, 2);
}

static void test_reuses_put_back_connection(void **state)
{
	struct fake *f = fake_new();
	struct pool *p = pool_new(2, &fake_ops, f);
	struct fake_conn *a, *b, *again;
	int i;

	(void)state;
	assert_non_null(p);
	a = pool_get(p);
	assert_non_null(a);
	for (i = 0; i < 5; i++) {
		pool_put(p, a);
		assert_int_equal(a->resets, i + 1);
		again = pool_get(p);
		assert_ptr_equal(again, a);
	}
	/* Five gets after the first, one connection ever opened. */
	assert_int_equal(f->opens, 1);
	/* The most recently put back comes first: the others may idle out
	 * at the server, this one is known to be alive. */
	b = pool_get(p);
	assert_non_null(b);
	pool_put(p, a);
	pool_put(p, b);
	assert_ptr_equal(pool_get(p), b);
	assert_ptr_equal(pool_get(p), a);
	assert_int_equal(f->opens, 2);
	pool_put(p, a);
	pool_put(p, b);
	free_and_check(p, f, 2);
}

static void test_get_waits_while_all_taken(void **state)
{
	struct fake *f = fake_new();
	struct pool *p = pool_new(2, &fake_ops, f);
	struct getter g;
	void *a, *b;

	(void)state;
	assert_non_null(p);
	a = pool_get(p);
	b = pool_get(p);
	assert_non_null(a);
	assert_non_null(b);

	getter_start(&g, p);
	assert_int_equal(getter_wait(&g, WAIT_SHORT_MS), 0);
	/* Blocked, and not by trying to open a third. */
	assert_int_equal(fake_count(f, &f->opens), 2);

	pool_put(p, b);
	assert_int_equal(getter_wait(&g, WAIT_LONG_MS), 1);
	assert_ptr_equal(getter_join(&g), b);
	assert_int_equal(fake_count(f, &f->opens), 2);

	pool_put(p, a);
	pool_put(p, b);
	free_and_check(p, f, 2);
}

static void test_open_failure_frees_the_slot(void **state)
{
	struct fake *f = fake_new();
	struct pool *p = pool_new(1, &fake_ops, f);
	void *a;

	(void)state;
	assert_non_null(p);
	f->fail = 2;
	assert_null(pool_get(p));
	/* Had a failure kept the only slot, these gets would wait forever:
	 * they run in a thread so that the test fails instead. */
	assert_null(get_in_thread(p));
	assert_int_equal(f->opens, 2);
	a = get_in_thread(p);
	assert_non_null(a);
	assert_int_equal(f->opens, 3);

	pool_put(p, a);
	free_and_check(p, f, 1);
}

static void test_open_failure_wakes_a_waiter(void **state)
{
	struct fake *f = fake_new();
	struct pool *p = pool_new(1, &fake_ops, f);
	struct getter first, second;
	void *a;

	(void)state;
	assert_non_null(p);
	/* The first get takes the only slot and is held inside open. */
	fake_set_gate(f, 1, 1);
	getter_start(&first, p);
	fake_wait_in_open(f, 1);
	/* The second finds no idle connection and no free slot: it waits. */
	getter_start(&second, p);
	assert_int_equal(getter_wait(&second, WAIT_SHORT_MS), 0);

	/* The first open fails; the waiter must get to open its own. */
	fake_set_gate(f, 0, 1);
	assert_int_equal(getter_wait(&first, WAIT_LONG_MS), 1);
	assert_null(getter_join(&first));
	assert_int_equal(getter_wait(&second, WAIT_LONG_MS), 1);
	a = getter_join(&second);
	assert_non_null(a);
	assert_int_equal(f->opens, 2);

	pool_put(p, a);
	free_and_check(p, f, 1);
}

static void test_free_closes_every_connection(void **state)
{
	struct fake *f = fake_new();
	struct pool *p = pool_new(4, &fake_ops, f);
	void *c[4];
	int i;

	(void)state;
	assert_non_null(p);
	for (i = 0; i < 4; i++) {
		c[i] = pool_get(p);
		assert_non_null(c[i]);
	}
	for (i = 0; i < 4; i++)
		pool_put(p, c[i]);
	assert_int_equal(f->closes, 0);
	pool_free(p);
	/* Each once: none leaked (ASan would say), none closed twice. */
	assert_int_equal(f->opens, 4);
	assert_int_equal(f->closes, 4);
	for (i = 0; i < 4; i++)
		assert_int_equal(f->closed[i], 1);
	fake_free(f);
}

static void test_extra_put_is_closed_not_kept(void **state)
{
	struct fake *f = fake_new();
	struct pool *p = pool_new(1, &fake_ops, f);
	struct fake_conn *a, *stray;

	(void)state;
	assert_non_null(p);
	a = pool_get(p);
	assert_non_null(a);
	pool_put(p, a);
	/* A connection the pool never handed out, put back into a full pool. */
	stray = calloc(1, sizeof(*stray));
	assert_non_null(stray);
	stray->id = FAKE_MAX - 1;
	pool_put(p, stray);
	assert_int_equal(f->closes, 1);
	assert_int_equal(f->closed[FAKE_MAX - 1], 1);
	assert_ptr_equal(pool_get(p), a);
	pool_put(p, a);
	free_and_check(p, f, 2);
}

/* db_pool and cache_pool are wrappers over pool; their constructors open
 * nothing, so their argument checks can be tested without a server. */
static void test_wrappers_check_arguments(void **state)
{
	struct cache_pool *cp;
	struct db_pool *dp;

	(void)state;
	assert_null(cache_pool_new("http://127.0.0.1:6379/0", 2));
	assert_null(cache_pool_new("redis://127.0.0.1:99999/0", 2));
	assert_null(cache_pool_new(NULL, 2));
	assert_null(cache_pool_new("redis://127.0.0.1:1/0", 0));
	cp = cache_pool_new("redis://127.0.0.1:1/0", 2);
	assert_non_null(cp);
	cache_pool_free(cp);
	assert_null(cache_pool_get(NULL));
	cache_pool_put(NULL, NULL);
	cache_pool_free(NULL);

	assert_null(db_pool_new(NULL, 2));
	assert_null(db_pool_new("host=127.0.0.1 port=1", 0));
	dp = db_pool_new("host=127.0.0.1 port=1", 2);
	assert_non_null(dp);
	db_pool_free(dp);
	assert_null(db_pool_get(NULL));
	db_pool_put(NULL, NULL);
	db_pool_free(NULL);
}

/* ---- many threads -------------------------------------------------------- */

#define STRESS_THREADS 8
#define STRESS_ROUNDS 500
#define STRESS_SIZE 3

struct stress {
	struct pool *pool;
	atomic_int shared; /* times a connection was found already in use */
	atomic_int nulls;  /* gets that returned NULL */
};

static void *stress_main(void *arg)
{
	struct stress *s = arg;
	struct fake_conn *c;
	int i;

	for (i = 0; i < STRESS_ROUNDS; i++) {
		c = pool_get(s->pool);
		if (!c) {
			atomic_fetch_add(&s->nulls, 1);
			continue;
		}
		if (atomic_fetch_add(&c->in_use, 1) != 0)
			atomic_fetch_add(&s->shared, 1);
		if (i % 16 == 0)
			sched_yield();
		atomic_fetch_sub(&c->in_use, 1);
		pool_put(s->pool, c);
	}
	return NULL;
}

static void test_threads_get_exclusive_connections(void **state)
{
	struct fake *f = fake_new();
	struct stress s = {.pool = pool_new(STRESS_SIZE, &fake_ops, f)};
	pthread_t t[STRESS_THREADS];
	int i;

	(void)state;
	assert_non_null(s.pool);
	for (i = 0; i < STRESS_THREADS; i++)
		assert_int_equal(pthread_create(&t[i], NULL, stress_main, &s), 0);
	for (i = 0; i < STRESS_THREADS; i++)
		assert_int_equal(pthread_join(t[i], NULL), 0);
	assert_int_equal(atomic_load(&s.shared), 0);
	assert_int_equal(atomic_load(&s.nulls), 0);
	assert_true(f->opens >= 1 && f->opens <= STRESS_SIZE);
	free_and_check(s.pool, f, f->opens);
}

int main(void)
{
	const struct CMUnitTest tests[] = {
	    cmocka_unit_test(test_new_rejects_bad_arguments),
	    cmocka_unit_test(test_opens_lazily_up_to_size),
	    cmocka_unit_test(test_reuses_put_back_connection),
	    cmocka_unit_test(test_get_waits_while_all_taken),
	    cmocka_unit_test(test_open_failure_frees_the_slot),
	    cmocka_unit_test(test_open_failure_wakes_a_waiter),
	    cmocka_unit_test(test_free_closes_every_connection),
	    cmocka_unit_test(test_extra_put_is_closed_not_kept),
	    cmocka_unit_test(test_wrappers_check_arguments),
	    cmocka_unit_test(test_threads_get_exclusive_connections),
	};

	return cmocka_run_group_tests(tests, NULL, NULL);
}
