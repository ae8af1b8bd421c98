/* it_ratelimit.c: per-key rate limits: 429 with Retry-After, the quota per window, shared by
 * two API instances. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>

#include <limits.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include "apikey.h"
#include "e2e.h"
#include "err.h"

/* The test stack's limited key (deploy/local/test.sh). */
#define LIMITED_KEY "dev-limited"
#define LIMITED_AUTH "Authorization: Bearer " LIMITED_KEY

/* Threads per API instance in a burst: enough to pass the limit early in a
 * window even on a busy machine. */
#define BURST_THREADS 4
#define SHOTS_MAX 20000

static char run_id[32];
static char root[PATH_MAX];
static char sku_path[128];
static char client_id[APIKEY_CLIENT_ID_LEN + 1];
static long limit;
static pid_t second_pid = -1;
static int second_port;

/* ---- helpers -------------------------------------------------------------- */

/* The limit ORDERS_API_KEYS gives dev-limited, or 0 when it has none. */
static long limited_key_limit(void)
{
	const char *keys = getenv("ORDERS_API_KEYS");
	const char *p = keys ? strstr(keys, LIMITED_KEY ":client:") : NULL;

	return p ? strtol(p + strlen(LIMITED_KEY ":client:"), NULL, 10) : 0;
}

static void need_limited_key(void)
{
	if (limit < 1 || limit > 1000) {
		fprintf(stderr,
		        "it_ratelimit: skipped, ORDERS_API_KEYS has no %s:client:<1-1000> "
		        "(make test sets it)\n",
		        LIMITED_KEY);
		skip();
	}
}

static int get_status(int port, const char *auth, const char *path)
{
	const char *h[] = {auth, NULL};
	struct http_response r;
	int status;

	if (http_request_to(port, "GET", path, auth ? h : NULL, NULL, 0, &r) != 0)
		return 0;
	status = r.status;
	http_response_release(&r);
	return status;
}

/* orders_rate_limited_total for the limited key, from one instance's /metrics. */
static double limited_total(int port)
{
	char series[96];

	snprintf(series, sizeof(series), "orders_rate_limited_total{key=\"%s\"}", client_id);
	return e2e_metric(port, series);
}

/* ---- bursts --------------------------------------------------------------- */

/* One request of a burst, with the wall clock around it. */
struct shot {
	int64_t sent, got;
	int status;
	int instance;
};

struct burst {
	int ports[2];
	int ninstances;
	int64_t until; /* wall ms */
	struct shot *shots;
	atomic_int n;
	pthread_mutex_t lock;
	struct http_response first_429; /* kept for its headers and body */
	int have_429;
};

struct burster {
	struct burst *b;
	int instance;
};

static void *burst_run(void *arg)
{
	struct burster *t = arg;
	struct burst *b = t->b;
	const char *h[] = {LIMITED_AUTH, NULL};

	while (e2e_wall_ms() < b->until) {
		int i = atomic_fetch_add(&b->n, 1);
		struct http_response r;
		struct shot *s;

		if (i >= SHOTS_MAX)
			break;
		s = &b->shots[i];
		s->instance = t->instance;
		s->sent = e2e_wall_ms();
		if (http_request_to(b->ports[t->instance], "GET", sku_path, h, NULL, 0, &r) != 0)
			r.status = 0;
		s->got = e2e_wall_ms();
		s->status = r.status;
		if (r.status == 429) {
			/* Refused: the window's quota is gone; spare the shared machine. */
			usleep(1000);
			pthread_mutex_lock(&b->lock);
			if (!b->have_429) {
				b->first_429 = r;
				b->have_429 = 1;
				pthread_mutex_unlock(&b->lock);
				continue;
			}
			pthread_mutex_unlock(&b->lock);
		}
		http_response_release(&r);
	}
	return NULL;
}

/* Requests from BURST_THREADS threads per instance, from 30 ms into the next
 * window until just before the end of the windows-th; returns the first. */
static int64_t burst(struct burst *b, int windows)
{
	pthread_t t[2 * BURST_THREADS];
	struct burster args[2 * BURST_THREADS];
	int64_t first;
	int i, nthreads = BURST_THREADS * b->ninstances;

	b->shots = calloc(SHOTS_MAX, sizeof(*b->shots));
	assert_non_null(b->shots);
	atomic_store(&b->n, 0);
	pthread_mutex_init(&b->lock, NULL);
	first = e2e_next_window(30);
	b->until = (first + windows) * 1000 - 30;
	for (i = 0; i < nthreads; i++) {
		args[i] = (struct burster){.b = b, .instance = i % b->ninstances};
		assert_int_equal(pthread_create(&t[i], NULL, burst_run, &args[i]), 0);
	}
	for (i = 0; i < nthreads; i++)
		pthread_join(t[i], NULL);
	if (atomic_load(&b->n) > SHOTS_MAX)
		atomic_store(&b->n, SHOTS_MAX);
	return first;
}

/*
 * Requests answered status that were both sent and answered within window
 * (so that the server, on the same clock, counted them in it too), of one
 * instance or of all (-1). A request that straddles two windows may have
 * been counted in either, so this is a lower bound of what the server
 * admitted in window, and exact for everything else.
 */
static int count_in(const struct burst *b, int64_t window, int status, int instance)
{
	int i, n = 0, total = atomic_load(&b->n);

	for (i = 0; i < total; i++) {
		const struct shot *s = &b->shots[i];

		if (s->status == status && s->sent / 1000 == window && s->got / 1000 == window &&
		    (instance < 0 || s->instance == instance))
			n++;
	}
	return n;
}

/* Requests answered status, of one instance or of all (-1). */
static int count_status(const struct burst *b, int status, int instance)
{
	int i, n = 0, total = atomic_load(&b->n);

	for (i = 0; i < total; i++)
		n += b->shots[i].status == status &&
		     (instance < 0 || b->shots[i].instance == instance);
	return n;
}

/* Requests answered status that were answered after window ended. */
static int count_after(const struct burst *b, int64_t window, int status)
{
	int i, n = 0, total = atomic_load(&b->n);

	for (i = 0; i < total; i++)
		n += b->shots[i].status == status && b->shots[i].got / 1000 > window;
	return n;
}

/*
 * What a burst over windows w and w + 1 must show: no window admitted more
 * than the limit, and both together about twice the limit. Every request
 * was sent within the two windows; those answered after them may have been
 * admitted by the window after, so they are set aside.
 */
static void check_admitted(const struct burst *b, int64_t w)
{
	int late = count_after(b, w + 1, 200);
	int total = count_status(b, 200, -1);

	assert_true(count_in(b, w, 200, -1) <= limit);
	assert_true(count_in(b, w + 1, 200, -1) <= limit);
	/* Leases of one request at this limit: no slack but the late ones. */
	assert_true(total - late <= 2 * limit);
	assert_true(total >= 2 * limit - 2);
}

static void burst_release(struct burst *b)
{
	if (b->have_429)
		http_response_release(&b->first_429);
	pthread_mutex_destroy(&b->lock);
	free(b->shots);
}

/* The 429 the contract describes. */
static void check_429(const struct http_response *r)
{
	char retry[16], rid[80];
	json_t *j, *err;
	char *end;
	long s;

	assert_int_equal(r->status, 429);
	assert_int_equal(http_header(r, "Retry-After", retry, sizeof(retry)), 0);
	s = strtol(retry, &end, 10);
	assert_true(*retry && *end == '\0');
	assert_true(s >= 1 && s <= 2);
	assert_int_equal(http_header(r, "X-Request-Id", rid, sizeof(rid)), 0);
	j = http_json(r);
	assert_non_null(j);
	err = json_object_get(j, "error");
	assert_true(json_is_object(err));
	assert_string_equal(json_string_value(json_object_get(err, "code")), "rate_limited");
	assert_true(json_is_string(json_object_get(err, "message")));
	assert_null(json_object_get(err, "field"));
	assert_int_equal(json_object_size(j), 1);
	json_decref(j);
}

/* ---- the second API instance ----------------------------------------------- */

/* A second orders-api with the same environment on a free port, ready. */
static void start_second(void)
{
	const char *name = getenv("ORDERS_API_LOG");

	/* Its log sits beside the others, where make test looks for sanitizer
	 * reports; ORDERS_API_LOG names it (the ThreadSanitizer run's own). */
	if (!name || !*name || strchr(name, '/'))
		name = "orders-api-ratelimit.log";
	second_pid = e2e_api_start(root, name, NULL, &second_port);
}

static void stop_second(void)
{
	e2e_api_stop(second_pid);
	second_pid = -1;
}

/* ---- tests ---------------------------------------------------------------- */

/*
 * A burst over the limit on one instance for two windows: in each, about
 * limit requests pass and the rest get the contract's 429; other keys and
 * the ops routes are not affected.
 */
static void test_burst_over_limit(void **state)
{
	struct burst b = {.ninstances = 1};
	double before;
	int64_t w;
	int refused;

	(void)state;
	need_limited_key();
	before = limited_total(0);
	b.ports[0] = 0;
	w = burst(&b, 2);
	refused = count_status(&b, 429, -1);
	fprintf(stderr,
	        "it_ratelimit: one instance, limit %ld, two windows: %d requests, %d admitted, "
	        "%d refused\n",
	        limit, atomic_load(&b.n), count_status(&b, 200, -1), refused);
	/* Only 200 and 429: the limiter never makes a request fail. */
	assert_int_equal(count_status(&b, 200, -1) + refused, atomic_load(&b.n));
	assert_true(refused > 0);
	assert_true(count_in(&b, w, 429, -1) > 0);
	check_admitted(&b, w);
	assert_true(b.have_429);
	check_429(&b.first_429);
	assert_true(limited_total(0) >= before + refused);

	/* Still refused in this window, while other keys and the ops routes pass. */
	assert_int_equal(get_status(0, E2E_CLIENT, sku_path), 200);
	assert_int_equal(get_status(0, NULL, "/healthz"), 200);
	assert_int_equal(get_status(0, NULL, "/readyz"), 200);
	/* Without a key it is 401, not 429: unauthenticated requests are not counted. */
	assert_int_equal(get_status(0, NULL, sku_path), 401);
	burst_release(&b);

	/* The next window admits the key again. */
	e2e_next_window(50);
	assert_int_equal(get_status(0, LIMITED_AUTH, sku_path), 200);
}

/* Two API instances draw from one quota: together about limit, not 2 x limit. */
static void test_two_instances_share_the_limit(void **state)
{
	struct burst b = {.ninstances = 2};
	int64_t w;
	int ok_a, ok_b;

	(void)state;
	need_limited_key();
	start_second();
	b.ports[0] = 0;
	b.ports[1] = second_port;
	w = burst(&b, 2);
	ok_a = count_status(&b, 200, 0);
	ok_b = count_status(&b, 200, 1);
	fprintf(stderr,
	        "it_ratelimit: two instances, limit %ld, two windows: %d requests, %d "
	        "admitted (%d by the first, %d by the second), %d refused\n",
	        limit, atomic_load(&b.n), ok_a + ok_b, ok_a, ok_b, count_status(&b, 429, -1));
	assert_int_equal(ok_a + ok_b + count_status(&b, 429, -1), atomic_load(&b.n));
	check_admitted(&b, w);
	/* Both served, and both refused: neither had a quota of its own. */
	assert_true(ok_a > 0 && ok_b > 0);
	assert_true(count_in(&b, w, 429, 0) > 0 && count_in(&b, w, 429, 1) > 0);
	assert_true(limited_total(second_port) > 0);
	burst_release(&b);
	stop_second();
}

static int group_setup(void **state)
{
	struct apikey k;
	const char *what;
	char sku[64];
	size_t n;
	(void)state;

	e2e_find_root(root, sizeof(root));
	limit = limited_key_limit();
	/* The key's name in the metrics, as the API derives it. */
	if (apikey_parse(LIMITED_KEY ":client", &k, 1, &n, &what) != ERR_OK)
		return -1;
	memcpy(client_id, k.client_id, sizeof(client_id));
	http_set_timeout_ms(15000);
	snprintf(sku, sizeof(sku), "RL-%s", run_id);
	snprintf(sku_path, sizeof(sku_path), "/v1/products/%s", sku);
	e2e_put_product(sku, 5, 100);
	return 0;
}

static int group_teardown(void **state)
{
	(void)state;
	stop_second();
	return 0;
}

int main(void)
{
	const struct CMUnitTest tests[] = {
	    cmocka_unit_test(test_burst_over_limit),
	    cmocka_unit_test(test_two_instances_share_the_limit),
	};

	snprintf(run_id, sizeof(run_id), "%ld-%d", (long)time(NULL), (int)getpid());
	return cmocka_run_group_tests(tests, group_setup, group_teardown);
}
