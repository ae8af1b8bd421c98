/* test_metrics.c: unit tests for the Prometheus metrics registry and its text rendering. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>

#include <math.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "buf.h"
#include "err.h"
#include "metrics.h"

#define RENDER_MAX (1024 * 1024)

/* Render m into a fresh string the test frees. */
static char *render(struct metrics *m)
{
	struct buf b;
	char *s;

	buf_init(&b, RENDER_MAX);
	assert_int_equal(metrics_render(m, &b), ERR_OK);
	s = buf_detach(&b, NULL);
	assert_non_null(s);
	return s;
}

/* The number of lines of text that start with prefix. */
static int count_lines(const char *text, const char *prefix)
{
	const char *p = text;
	int n = 0;

	while (*p) {
		if (strncmp(p, prefix, strlen(prefix)) == 0)
			n++;
		p = strchr(p, '\n');
		if (!p)
			break;
		p++;
	}
	return n;
}

static void test_counter_render(void **state)
{
	struct metrics *m = metrics_new();
	struct metric_family *f;
	const char *a[] = {"/v1/orders", "202"};
	const char *b[] = {"/healthz", "200"};
	char *s;

	(void)state;
	assert_non_null(m);
	f = metrics_counter(m, "orders_http_requests_total", "HTTP requests served.",
	                    "route,status");
	assert_non_null(f);
	metric_add(f, a, 1);
	metric_add(f, b, 1);
	metric_add(f, a, 2);
	metric_add(f, a, -5); /* counters never go down */
	metric_add(f, a, NAN);
	s = render(m);
	assert_string_equal(s, "# HELP orders_http_requests_total HTTP requests served.\n"
	                       "# TYPE orders_http_requests_total counter\n"
	                       "orders_http_requests_total{route=\"/v1/orders\",status=\"202\"} 3\n"
	                       "orders_http_requests_total{route=\"/healthz\",status=\"200\"} 1\n");
	free(s);
	metrics_free(m);
}

static void test_gauge_render(void **state)
{
	struct metrics *m = metrics_new();
	struct metric_family *g, *q;
	const char *work[] = {"work.inventory"};
	const char *dlq[] = {"work.inventory.dlq"};
	char *s;

	(void)state;
	g = metrics_gauge(m, "orders_up", "1 while the process runs.", NULL);
	q = metrics_gauge(m, "orders_queue_depth", "Ready messages per queue.", "queue");
	assert_non_null(g);
	assert_non_null(q);
	metric_set(q, work, 10);
	metric_add(q, work, -4);
	metric_set(q, dlq, 0.5);
	s = render(m);
	/* A family without labels shows 0 before its first update. */
	assert_string_equal(s, "# HELP orders_up 1 while the process runs.\n"
	                       "# TYPE orders_up gauge\n"
	                       "orders_up 0\n"
	                       "# HELP orders_queue_depth Ready messages per queue.\n"
	                       "# TYPE orders_queue_depth gauge\n"
	                       "orders_queue_depth{queue=\"work.inventory\"} 6\n"
	                       "orders_queue_depth{queue=\"work.inventory.dlq\"} 0.5\n");
	free(s);

	metric_set(g, NULL, 1);
	metric_set(q, work, -1e21);
	metric_set(q, dlq, 0.1);
	s = render(m);
	assert_non_null(strstr(s, "\norders_up 1\n"));
	assert_non_null(strstr(s, "{queue=\"work.inventory\"} -1e+21\n"));
	assert_non_null(strstr(s, "{queue=\"work.inventory.dlq\"} 0.1\n"));
	free(s);

	metric_set(q, work, INFINITY);
	metric_set(q, dlq, NAN);
	s = render(m);
	assert_non_null(strstr(s, "{queue=\"work.inventory\"} +Inf\n"));
	assert_non_null(strstr(s, "{queue=\"work.inventory.dlq\"} NaN\n"));
	free(s);
	metrics_free(m);
}

static void test_histogram_render(void **state)
{
	static const double bounds[] = {0.5, 1};
	struct metrics *m = metrics_new();
	struct metric_family *h, *plain;
	const char *r[] = {"checkout"};
	char *s;

	(void)state;
	h = metrics_histogram(m, "orders_http_request_duration_seconds", "Request latency.",
	                      "route", bounds, 2);
	plain = metrics_histogram(m, "orders_publish_seconds", "Publish latency.", NULL, bounds, 1);
	assert_non_null(h);
	assert_non_null(plain);
	metric_observe(h, r, 0.25);
	metric_observe(h, r, 0.5); /* le is inclusive */
	metric_observe(h, r, 0.75);
	metric_observe(h, r, 2);
	metric_observe(h, r, NAN); /* ignored */
	metric_observe(plain, NULL, 3);
	s = render(m);
	assert_string_equal(
	    s, "# HELP orders_http_request_duration_seconds Request latency.\n"
	       "# TYPE orders_http_request_duration_seconds histogram\n"
	       "orders_http_request_duration_seconds_bucket{route=\"checkout\",le=\"0.5\"} 2\n"
	       "orders_http_request_duration_seconds_bucket{route=\"checkout\",le=\"1\"} 3\n"
	       "orders_http_request_duration_seconds_bucket{route=\"checkout\",le=\"+Inf\"} 4\n"
	       "orders_http_request_duration_seconds_sum{route=\"checkout\"} 3.5\n"
	       "orders_http_request_duration_seconds_count{route=\"checkout\"} 4\n"
	       "# HELP orders_publish_seconds Publish latency.\n"
	       "# TYPE orders_publish_seconds histogram\n"
	       "orders_publish_seconds_bucket{le=\"0.5\"} 0\n"
	       "orders_publish_seconds_bucket{le=\"+Inf\"} 1\n"
	       "orders_publish_seconds_sum 3\n"
	       "orders_publish_seconds_count 1\n");
	free(s);
	metrics_free(m);
}

static void test_label_escaping(void **state)
{
	struct metrics *m = metrics_new();
	struct metric_family *f;
	const char *v[] = {"a\\b\"c\nd"};
	char *s;

	(void)state;
	f = metrics_counter(m, "orders_escape_total", "Back\\slash and\nnewline \"kept\".", "what");
	assert_non_null(f);
	metric_add(f, v, 1);
	s = render(m);
	assert_string_equal(s, "# HELP orders_escape_total Back\\\\slash and\\nnewline \"kept\".\n"
	                       "# TYPE orders_escape_total counter\n"
	                       "orders_escape_total{what=\"a\\\\b\\\"c\\nd\"} 1\n");
	free(s);
	metrics_free(m);
}

static void test_buckets_cumulative(void **state)
{
	struct metrics *m = metrics_new();
	struct metric_family *h;
	unsigned long long prev = 0, n;
	const char *p;
	char *s;
	int i, lines = 0;

	(void)state;
	assert_int_equal(metrics_latency_nbounds, 14);
	assert_true(metrics_latency_bounds[0] == 0.0005);
	assert_true(metrics_latency_bounds[13] == 10);
	h = metrics_histogram(m, "orders_x_seconds", "x", NULL, metrics_latency_bounds,
	                      metrics_latency_nbounds);
	assert_non_null(h);
	srand(7);
	for (i = 0; i < 1000; i++)
		metric_observe(h, NULL, (double)rand() / RAND_MAX * 12.0);
	s = render(m);
	for (p = strstr(s, "orders_x_seconds_bucket{"); p;
	     p = strstr(p, "orders_x_seconds_bucket{")) {
		p = strchr(p, '}');
		assert_non_null(p);
		n = strtoull(p + 2, NULL, 10);
		assert_true(n >= prev);
		prev = n;
		lines++;
	}
	assert_int_equal(lines, 15);
	assert_int_equal(prev, 1000);
	assert_non_null(strstr(s, "orders_x_seconds_bucket{le=\"0.0005\"} "));
	assert_non_null(strstr(s, "orders_x_seconds_bucket{le=\"0.0025\"} "));
	assert_non_null(strstr(s, "orders_x_seconds_bucket{le=\"10\"} "));
	assert_non_null(strstr(s, "orders_x_seconds_bucket{le=\"+Inf\"} 1000\n"));
	assert_non_null(strstr(s, "orders_x_seconds_count 1000\n"));
	free(s);
	metrics_free(m);
}

static void test_child_cap(void **state)
{
	struct metrics *m = metrics_new();
	struct metric_family *f;
	const char *v[2];
	char sku[32];
	char *s;
	int i;

	(void)state;
	f = metrics_counter(m, "orders_sku_total", "x", "sku,kind");
	assert_non_null(f);
	v[1] = "k";
	for (i = 0; i < 300; i++) {
		snprintf(sku, sizeof(sku), "sku-%d", i);
		v[0] = sku;
		metric_add(f, v, 1);
	}
	/* A child made before the cap still counts on its own. */
	v[0] = "sku-0";
	metric_add(f, v, 1);
	s = render(m);
	assert_int_equal(count_lines(s, "orders_sku_total{"), METRICS_MAX_CHILDREN);
	assert_non_null(strstr(s, "orders_sku_total{sku=\"sku-0\",kind=\"k\"} 2\n"));
	assert_non_null(strstr(s, "orders_sku_total{sku=\"sku-254\",kind=\"k\"} 1\n"));
	assert_null(strstr(s, "sku=\"sku-255\""));
	/* 300 values, 255 of them with a child of their own. */
	assert_non_null(strstr(s, "orders_sku_total{sku=\"other\",kind=\"other\"} 45\n"));
	free(s);
	metrics_free(m);
}

static void test_bad_names(void **state)
{
	static const double up[] = {1, 2}, down[] = {2, 1}, inf[] = {1, INFINITY};
	double many[METRICS_MAX_BUCKETS + 1];
	struct metrics *m = metrics_new();
	int i;

	(void)state;
	for (i = 0; i <= METRICS_MAX_BUCKETS; i++)
		many[i] = i;
	assert_null(metrics_counter(m, NULL, "x", NULL));
	assert_null(metrics_counter(m, "", "x", NULL));
	assert_null(metrics_counter(m, "1abc", "x", NULL));
	assert_null(metrics_counter(m, "a-b", "x", NULL));
	assert_null(metrics_counter(m, "a b", "x", NULL));
	assert_null(metrics_counter(m, "caf\xc3\xa9", "x", NULL));
	assert_null(metrics_counter(m, "ok_total", "x", "a,,b"));
	assert_null(metrics_counter(m, "ok_total", "x", "a,"));
	assert_null(metrics_counter(m, "ok_total", "x", "a:b"));
	assert_null(metrics_counter(m, "ok_total", "x", "1a"));
	assert_null(metrics_counter(m, "ok_total", "x", "__name"));
	assert_null(metrics_counter(m, "ok_total", "x", "a,a"));
	assert_null(metrics_counter(m, "ok_total", "x", "a,b,c,d,e"));
	assert_null(metrics_histogram(m, "ok_seconds", "x", "le", up, 2));
	assert_null(metrics_histogram(m, "ok_seconds", "x", NULL, down, 2));
	assert_null(metrics_histogram(m, "ok_seconds", "x", NULL, inf, 2));
	assert_null(metrics_histogram(m, "ok_seconds", "x", NULL, many, METRICS_MAX_BUCKETS + 1));
	assert_null(metrics_histogram(m, "ok_seconds", "x", NULL, NULL, 2));
	assert_null(metrics_counter(NULL, "ok_total", "x", NULL));
	/* Every family says what it is: promtool flags one without HELP. */
	assert_null(metrics_counter(m, "ok_total", NULL, NULL));
	assert_null(metrics_gauge(m, "ok_gauge_value", "", NULL));
	/* "_total" on counters and only there; no family takes a histogram
	 * sample's suffix. */
	assert_null(metrics_counter(m, "ok_events", "x", NULL));
	assert_null(metrics_gauge(m, "ok_events_total", "x", NULL));
	assert_null(metrics_histogram(m, "ok_seconds_total", "x", NULL, up, 2));
	assert_null(metrics_gauge(m, "ok_bucket", "x", NULL));
	assert_null(metrics_gauge(m, "ok_count", "x", NULL));
	assert_null(metrics_histogram(m, "ok_sum", "x", NULL, up, 2));
	assert_null(metrics_counter(m, "total", "x", NULL));

	assert_non_null(metrics_counter(m, "ok:sub_total", "x", " a , b,c,d "));
	assert_non_null(metrics_histogram(m, "ok_seconds", "x", "le_x", many, METRICS_MAX_BUCKETS));
	assert_non_null(metrics_gauge(m, "_ok", "x", ""));
	assert_non_null(metrics_counter(m, "_total", "x", NULL));
	assert_non_null(metrics_gauge(m, "ok_totals", "x", NULL));
	/* The same name twice would make the exposition invalid. */
	assert_null(metrics_gauge(m, "ok_seconds", "x", NULL));
	metrics_free(m);
	metrics_free(NULL);
}

static void test_render_too_big(void **state)
{
	struct metrics *m = metrics_new();
	struct metric_family *f;
	struct buf b;

	(void)state;
	f = metrics_counter(m, "orders_big_total", "A family that does not fit.", NULL);
	assert_non_null(f);
	buf_init(&b, 16);
	assert_int_equal(metrics_render(m, &b), ERR_TOO_BIG);
	assert_int_equal(b.len, 0);
	assert_int_equal(buf_append_str(&b, "keep"), ERR_OK);
	assert_int_equal(metrics_render(m, &b), ERR_TOO_BIG);
	/* What was in the buffer before stays, and nothing after it. */
	assert_int_equal(b.len, 4);
	assert_string_equal(b.data, "keep");
	buf_release(&b);
	metrics_free(m);
}

static void collect(void *arg)
{
	struct metric_family *g = arg;

	metric_set(g, NULL, 42);
}

static void test_collect(void **state)
{
	struct metrics *m = metrics_new();
	struct metric_family *g;
	char *s;

	(void)state;
	g = metrics_gauge(m, "orders_collected", "x", NULL);
	metrics_on_collect(m, collect, g);
	s = render(m);
	assert_non_null(strstr(s, "\norders_collected 42\n"));
	free(s);
	metrics_free(m);
}

/* The value of the first sample line that starts with "name " ; NAN when there is none. */
static double sample(const char *text, const char *name)
{
	size_t n = strlen(name);
	const char *p = text;

	while (p && *p) {
		if (strncmp(p, name, n) == 0 && p[n] == ' ')
			return strtod(p + n + 1, NULL);
		p = strchr(p, '\n');
		if (p)
			p++;
	}
	return NAN;
}

static void test_process(void **state)
{
	struct metrics *m = metrics_new();
	struct timespec now;
	double start, rss, cpu;
	char *s;

	(void)state;
	assert_int_equal(metrics_process(NULL, "1.2.3"), ERR_INVALID);
	assert_int_equal(metrics_process(m, NULL), ERR_INVALID);
	assert_int_equal(metrics_process(m, "1.2.3"), ERR_OK);
	assert_int_equal(metrics_process(m, "1.2.3"), ERR_INVALID);
	clock_gettime(CLOCK_REALTIME, &now);
	s = render(m);
	assert_non_null(strstr(s, "# TYPE orders_build_info gauge\n"
	                          "orders_build_info{version=\"1.2.3\"} 1\n"));
	assert_non_null(strstr(s, "# TYPE process_start_time_seconds gauge\n"));
	assert_non_null(strstr(s, "# TYPE process_resident_memory_bytes gauge\n"));
	assert_non_null(strstr(s, "# TYPE process_cpu_seconds_total counter\n"));
	/* This test process started moments ago (a slow machine: minutes). */
	start = sample(s, "process_start_time_seconds");
	assert_true(start <= (double)now.tv_sec + 1);
	assert_true(start > (double)now.tv_sec - 600);
	/* Read from /proc at render: a process of this size has some MiB. */
	rss = sample(s, "process_resident_memory_bytes");
	assert_true(rss >= 1024 * 1024);
	assert_true(rss < 16.0 * 1024 * 1024 * 1024);
	cpu = sample(s, "process_cpu_seconds_total");
	assert_true(cpu >= 0 && cpu < 3600);
	free(s);
	metrics_free(m);
}

#define THREADS 4
#define ROUNDS 100000

struct worker {
	struct metric_family *c;
	struct metric_family *h;
};

static void *work(void *arg)
{
	struct worker *w = arg;
	const char *v[] = {"route"};
	int i;

	for (i = 0; i < ROUNDS; i++) {
		metric_add(w->c, v, 1);
		metric_observe(w->h, NULL, 0.001);
	}
	return NULL;
}

static void test_concurrent(void **state)
{
	struct metrics *m = metrics_new();
	struct worker w;
	pthread_t t[THREADS];
	char *s;
	int i;

	(void)state;
	w.c = metrics_counter(m, "orders_par_total", "x", "r");
	w.h = metrics_histogram(m, "orders_par_seconds", "x", NULL, metrics_latency_bounds,
	                        metrics_latency_nbounds);
	for (i = 0; i < THREADS; i++)
		assert_int_equal(pthread_create(&t[i], NULL, work, &w), 0);
	for (i = 0; i < THREADS; i++)
		pthread_join(t[i], NULL);
	s = render(m);
	assert_non_null(strstr(s, "orders_par_total{r=\"route\"} 400000\n"));
	assert_non_null(strstr(s, "orders_par_seconds_bucket{le=\"0.001\"} 400000\n"));
	assert_non_null(strstr(s, "orders_par_seconds_count 400000\n"));
	free(s);
	metrics_free(m);
}

int main(void)
{
	const struct CMUnitTest tests[] = {
	    cmocka_unit_test(test_counter_render),
	    cmocka_unit_test(test_gauge_render),
	    cmocka_unit_test(test_histogram_render),
	    cmocka_unit_test(test_label_escaping),
	    cmocka_unit_test(test_buckets_cumulative),
	    cmocka_unit_test(test_child_cap),
	    cmocka_unit_test(test_bad_names),
	    cmocka_unit_test(test_render_too_big),
	    cmocka_unit_test(test_collect),
	    cmocka_unit_test(test_concurrent),
	    cmocka_unit_test(test_process),
	};

	return cmocka_run_group_tests(tests, NULL, NULL);
}
