/* mixload.c: orders-mixload, every kind of API request at once from many threads. */
#include <getopt.h>
#include <pthread.h>
#include <stdarg.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include "http_client.h"
#include "util.h"

/*
 * orders-loadgen and orders-bench send checkouts only. This sends the rest
 * of the API's traffic beside them, so that every route's code runs on
 * several of the API's threads at once (the ThreadSanitizer run of make
 * test): carts and checkouts from carts, orders, products written and
 * read, the finance routes, a rate-limited key, the ops routes, and
 * requests refused for each reason the contract names. Every answer is held to the status the
 * contract gives it; anything else is counted and the first few printed.
 */

#define MAX_THREADS 64
#define MAX_SKUS 8
#define PREFIX_MAX 64
/* A checkout or cart change met with 409 or 503 is sent again, this often. */
#define TRIES 8
#define RETRY_SLEEP_S 0.25
#define SHOW_UNEXPECTED 10

#define AUTH_ADMIN "Authorization: Bearer dev-admin"
#define AUTH_CLIENT "Authorization: Bearer dev-client"
#define AUTH_FINANCE "Authorization: Bearer dev-finance"
#define AUTH_LIMITED "Authorization: Bearer dev-limited"
#define JSON_TYPE "Content-Type: application/json"

enum scenario { SC_CART, SC_CATALOG, SC_OPS, SC_LIMITED, SC_FINANCE, SC_REFUSED, SC_N };

static const char *const scenario_names[SC_N] = {"cart",    "catalog", "ops",
                                                 "limited", "finance", "refused"};

struct options {
	double duration_s;
	int threads;
	const char *skus[MAX_SKUS];
	int nskus;
	char prefix[PREFIX_MAX];
};

struct mix {
	struct options o;
	double t0;
	atomic_long requests[SC_N];
	atomic_long retries;
	atomic_long unexpected;
	atomic_long rounds;
	char today[16];
};

struct worker {
	struct mix *mix;
	int index;
	pthread_t thread;
};

/* ---- one request ----------------------------------------------------------- */

/* Count, and print the first few: what was sent, what came back, what was wanted. */
static void unexpected(struct mix *m, const char *method, const char *path, int status,
                       const char *want, const char *body)
{
	long n = atomic_fetch_add(&m->unexpected, 1);

	if (n < SHOW_UNEXPECTED)
		fprintf(stderr, "mixload: %s %s answered %d, expected %s: %.300s\n", method, path,
		        status, want, body ? body : "");
}

/*
 * Send one request; *out holds the response (release it) when the status is
 * one of the allowed (a 0-terminated list); otherwise the surprise is
 * counted and -1 returned. Checkouts and cart changes are sent again, as a
 * client would, when the key is in flight (409) or the broker briefly
 * unavailable (503).
 */
static int request(struct mix *m, enum scenario sc, const char *method, const char *path,
                   const char *const *headers, const char *body, const int *allowed,
                   struct http_response *out)
{
	int retry_busy = strcmp(method, "GET") != 0, tries = 0, rc;
	char want[64] = "";

	for (;;) {
		atomic_fetch_add(&m->requests[sc], 1);
		rc = http_request(method, path, headers, body, body ? strlen(body) : 0, out);
		if (rc != 0)
			out->status = 0;
		for (const int *a = allowed; rc == 0 && *a; a++)
			if (out->status == *a)
				return 0;
		if (retry_busy && (out->status == 409 || out->status == 503) && ++tries < TRIES) {
			http_response_release(out);
			atomic_fetch_add(&m->retries, 1);
			util_sleep(RETRY_SLEEP_S);
			continue;
		}
		break;
	}
	for (const int *a = allowed; *a; a++)
		snprintf(want + strlen(want), sizeof(want) - strlen(want), "%s%d",
		         a == allowed ? "" : " or ", *a);
	unexpected(m, method, path, out->status, want, out->body);
	http_response_release(out);
	return -1;
}

/* request() for a status alone: the body is not needed. */
static void expect(struct mix *m, enum scenario sc, const char *method, const char *path,
                   const char *const *headers, const char *body, const int *allowed)
{
	struct http_response r;

	if (request(m, sc, method, path, headers, body, allowed, &r) == 0)
		http_response_release(&r);
}

/*
 * request() for the string member name of the JSON body (a cart_id, an
 * order_id) into out (len bytes); the response is released. 0, or -1 when
 * the status or the member was not what was wanted (counted).
 */
static int request_id(struct mix *m, enum scenario sc, const char *method, const char *path,
                      const char *const *headers, const char *body, const int *allowed,
                      const char *name, char *out, size_t len)
{
	struct http_response r;
	const char *s;
	json_t *j;
	int rc = -1;

	if (request(m, sc, method, path, headers, body, allowed, &r) != 0)
		return -1;
	j = http_json(&r);
	s = json_string_value(json_object_get(j, name));
	if (s && strlen(s) < len) {
		memcpy(out, s, strlen(s) + 1);
		rc = 0;
	} else {
		unexpected(m, method, path, r.status, name, r.body);
	}
	json_decref(j);
	http_response_release(&r);
	return rc;
}

/* ---- the scenarios ------------------------------------------------------------ */

static const int ok200[] = {200, 0}, ok201[] = {201, 0}, ok202[] = {202, 0}, ok204[] = {204, 0};

/* A cart, changed and read, checked out by its id; the order read; another cart deleted. */
static void run_cart(struct mix *m, int t, long round)
{
	static const char *const client[] = {AUTH_CLIENT, JSON_TYPE, NULL};
	const char *sku = m->o.skus[round % m->o.nskus];
	char body[1024], path[128], cart_id[64], order_id[64], again[64];
	char idem[PREFIX_MAX + 80];
	const char *checkout_headers[] = {AUTH_CLIENT, JSON_TYPE, idem, NULL};

	snprintf(body, sizeof(body),
	         "{\"customer_id\":\"mix-%d\",\"currency\":\"USD\","
	         "\"items\":[{\"sku\":\"%s\",\"quantity\":1}]}",
	         t, sku);
	if (request_id(m, SC_CART, "POST", "/v1/carts", client, body, ok201, "cart_id", cart_id,
	               sizeof(cart_id)))
		return;
	snprintf(path, sizeof(path), "/v1/carts/%s", cart_id);
	snprintf(body, sizeof(body), "{\"items\":[{\"sku\":\"%s\",\"quantity\":2}]}", sku);
	expect(m, SC_CART, "PUT", path, client, body, ok200);
	expect(m, SC_CART, "GET", path, client, NULL, ok200);

	snprintf(idem, sizeof(idem), "Idempotency-Key: %s-cart-%d-%ld", m->o.prefix, t, round);
	snprintf(body, sizeof(body),
	         "{\"cart_id\":\"%s\",\"customer\":{\"id\":\"mix-%d\"},"
	         "\"shipping_address\":{\"name\":\"Mix\",\"line1\":\"1 Main St\","
	         "\"city\":\"Springfield\",\"postal_code\":\"12345\",\"country\":\"US\"},"
	         "\"payment\":{\"card\":{\"number\":\"4242424242424242\",\"exp_month\":12,"
	         "\"exp_year\":2030,\"cvc\":\"123\"}}}",
	         cart_id, t);
	if (request_id(m, SC_CART, "POST", "/v1/checkouts", checkout_headers, body, ok202,
	               "order_id", order_id, sizeof(order_id)))
		return;
	/* The same key and body again: the same order. */
	if (request_id(m, SC_CART, "POST", "/v1/checkouts", checkout_headers, body, ok202,
	               "order_id", again, sizeof(again)) == 0 &&
	    strcmp(again, order_id) != 0)
		unexpected(m, "POST", "/v1/checkouts", 202, "the first answer's order", again);
	snprintf(path, sizeof(path), "/v1/orders/%s", order_id);
	expect(m, SC_CART, "GET", path, client, NULL, ok200);

	snprintf(body, sizeof(body),
	         "{\"customer_id\":\"mix-%d\",\"currency\":\"USD\",\"items\":[]}", t);
	if (request_id(m, SC_CART, "POST", "/v1/carts", client, body, ok201, "cart_id", cart_id,
	               sizeof(cart_id)))
		return;
	snprintf(path, sizeof(path), "/v1/carts/%s", cart_id);
	expect(m, SC_CART, "DELETE", path, client, NULL, ok204);
}

/* A product of the thread's own created or replaced; the catalog read. */
static void run_catalog(struct mix *m, int t, long round)
{
	static const char *const admin[] = {AUTH_ADMIN, JSON_TYPE, NULL};
	static const char *const client[] = {AUTH_CLIENT, NULL};
	static const int saved[] = {200, 201, 0}, not_found[] = {404, 0};
	char path[128], body[160];

	snprintf(path, sizeof(path), "/v1/products/%.40s-p%d", m->o.prefix, t);
	snprintf(body, sizeof(body),
	         "{\"name\":\"Mix %d\",\"price_cents\":%ld,\"currency\":\"USD\",\"stock\":1000}", t,
	         100 + round % 50);
	expect(m, SC_CATALOG, "PUT", path, admin, body, saved);
	expect(m, SC_CATALOG, "GET", path, client, NULL, ok200);
	snprintf(path, sizeof(path), "/v1/products/%s", m->o.skus[round % m->o.nskus]);
	expect(m, SC_CATALOG, "GET", path, client, NULL, ok200);
	expect(m, SC_CATALOG, "GET", "/v1/products?limit=5", client, NULL, ok200);
	expect(m, SC_CATALOG, "GET", "/v1/products/NO-SUCH-SKU-MIX", client, NULL, not_found);
}

static void run_ops(struct mix *m)
{
	struct http_response r;

	expect(m, SC_OPS, "GET", "/healthz", NULL, NULL, ok200);
	expect(m, SC_OPS, "GET", "/readyz", NULL, NULL, ok200);
	if (request(m, SC_OPS, "GET", "/metrics", NULL, NULL, ok200, &r) != 0)
		return;
	if (!r.body || !strstr(r.body, "orders_http_requests_total{"))
		unexpected(m, "GET", "/metrics", r.status, "orders_http_requests_total", r.body);
	http_response_release(&r);
}

/* A key limited to a few requests a second: admitted or refused, nothing else. */
static void run_limited(struct mix *m, long round)
{
	static const char *const limited[] = {AUTH_LIMITED, NULL};
	static const int admitted_or_refused[] = {200, 429, 0};
	char path[128];

	snprintf(path, sizeof(path), "/v1/products/%s", m->o.skus[round % m->o.nskus]);
	for (int i = 0; i < 4; i++)
		expect(m, SC_LIMITED, "GET", path, limited, NULL, admitted_or_refused);
}

static void run_finance(struct mix *m)
{
	static const char *const finance[] = {AUTH_FINANCE, NULL};
	static const char *const csv[] = {AUTH_FINANCE, "Accept: text/csv", NULL};
	char path[128];

	expect(m, SC_FINANCE, "GET", "/v1/order-events?limit=5", finance, NULL, ok200);
	expect(m, SC_FINANCE, "GET", "/v1/order-events?limit=5", csv, NULL, ok200);
	snprintf(path, sizeof(path), "/v1/reconciliation?date=%s", m->today);
	expect(m, SC_FINANCE, "GET", path, finance, NULL, ok200);
}

/* One request refused for each reason the contract names. */
static void run_refused(struct mix *m)
{
	static const char *const client[] = {AUTH_CLIENT, JSON_TYPE, NULL};
	static const char *const text[] = {AUTH_CLIENT, "Content-Type: text/plain", NULL};
	static const char *const stranger[] = {"Authorization: Bearer no-such-key", NULL};
	static const int s400[] = {400, 0}, s401[] = {401, 0}, s403[] = {403, 0};
	static const int s404[] = {404, 0}, s405[] = {405, 0}, s415[] = {415, 0};
	static const int s422[] = {422, 0};

	expect(m, SC_REFUSED, "GET", "/v1/products?limit=5", stranger, NULL, s401);
	expect(m, SC_REFUSED, "GET", "/v1/order-events", client, NULL, s403);
	expect(m, SC_REFUSED, "GET", "/v1/no-such-route", client, NULL, s404);
	expect(m, SC_REFUSED, "DELETE", "/v1/checkouts", client, NULL, s405);
	expect(m, SC_REFUSED, "POST", "/v1/carts", text, "{}", s415);
	expect(m, SC_REFUSED, "POST", "/v1/carts", client, "{not json", s400);
	expect(m, SC_REFUSED, "POST", "/v1/carts", client,
	       "{\"customer_id\":\"mix\",\"currency\":\"USD\",\"colour\":\"red\"}", s422);
}

/* ---- threads ------------------------------------------------------------------- */

static void *worker_main(void *arg)
{
	struct worker *w = arg;
	struct mix *m = w->mix;

	/* Threads start on different scenarios, so that all run at once. */
	for (long round = 0; util_now() - m->t0 < m->o.duration_s; round++) {
		switch ((enum scenario)((w->index + round) % SC_N)) {
		case SC_CART:
			run_cart(m, w->index, round);
			break;
		case SC_CATALOG:
			run_catalog(m, w->index, round);
			break;
		case SC_OPS:
			run_ops(m);
			break;
		case SC_LIMITED:
			run_limited(m, round);
			break;
		case SC_FINANCE:
			run_finance(m);
			break;
		case SC_REFUSED:
		case SC_N:
			run_refused(m);
			break;
		}
		atomic_fetch_add(&m->rounds, 1);
	}
	return NULL;
}

/* ---- options ------------------------------------------------------------------- */

static void usage(FILE *f)
{
	fprintf(f, "usage: orders-mixload [options] -s SKU[,SKU...]\n"
	           "Sends every kind of API request to 127.0.0.1:$ORDERS_HTTP_PORT from several\n"
	           "threads at once, for a while, and holds each answer to the status the\n"
	           "contract gives it (checkouts and cart changes are retried on 409 and 503).\n"
	           "Needs the test stack's keys: dev-client, dev-admin, dev-finance, dev-limited.\n"
	           "\n"
	           "  -d, --duration S      start no round after S seconds (default 20)\n"
	           "  -c, --concurrency N   threads (default 8)\n"
	           "  -s, --skus LIST       USD products to put in carts (required)\n"
	           "  -k, --key-prefix P    Idempotency-Key prefix (default mix-<pid>-<time>)\n"
	           "\n"
	           "Exit status: 0 when every answer was the expected one, 3 when some was\n"
	           "not, 2 on a usage error, 1 on another error.\n");
}

static int parse_options(struct options *o, int argc, char **argv)
{
	static const struct option longs[] = {
	    {"duration", required_argument, NULL, 'd'},
	    {"concurrency", required_argument, NULL, 'c'},
	    {"skus", required_argument, NULL, 's'},
	    {"key-prefix", required_argument, NULL, 'k'},
	    {"help", no_argument, NULL, 'h'},
	    {NULL, 0, NULL, 0},
	};
	char *save = NULL, *s;
	long v;
	int opt;

	memset(o, 0, sizeof(*o));
	o->duration_s = 20;
	o->threads = 8;
	snprintf(o->prefix, sizeof(o->prefix), "mix-%ld-%ld", (long)getpid(), (long)time(NULL));
	while ((opt = getopt_long(argc, argv, "d:c:s:k:h", longs, NULL)) != -1) {
		switch (opt) {
		case 'd':
			if (util_parse_double(optarg, 0.1, 3600, &o->duration_s))
				goto bad;
			break;
		case 'c':
			if (util_parse_long(optarg, 1, MAX_THREADS, &v))
				goto bad;
			o->threads = (int)v;
			break;
		case 's':
			for (s = strtok_r(optarg, ",", &save); s; s = strtok_r(NULL, ",", &save)) {
				if (o->nskus == MAX_SKUS || strlen(s) > 64)
					goto bad;
				o->skus[o->nskus++] = s;
			}
			break;
		case 'k':
			if (util_parse_prefix(optarg, o->prefix, sizeof(o->prefix)))
				goto bad;
			break;
		case 'h':
			usage(stdout);
			exit(0);
		default:
			goto usage;
		}
	}
	if (optind != argc || o->nskus == 0)
		goto usage;
	return 0;
bad:
	fprintf(stderr, "orders-mixload: bad value for -%c: '%s'\n", opt, optarg);
usage:
	usage(stderr);
	return -1;
}

int main(int argc, char **argv)
{
	static struct mix m;
	struct worker workers[MAX_THREADS];
	struct tm tm;
	time_t now = time(NULL);
	long total = 0;
	int n = 0;

	if (parse_options(&m.o, argc, argv))
		return 2;
	gmtime_r(&now, &tm);
	strftime(m.today, sizeof(m.today), "%Y-%m-%d", &tm);
	http_set_timeout_ms(30000);
	m.t0 = util_now();
	for (int i = 0; i < m.o.threads; i++) {
		workers[i].mix = &m;
		workers[i].index = i;
		if (pthread_create(&workers[i].thread, NULL, worker_main, &workers[i]) != 0) {
			fprintf(stderr, "orders-mixload: cannot start thread %d\n", i);
			break;
		}
		n++;
	}
	for (int i = 0; i < n; i++)
		pthread_join(workers[i].thread, NULL);
	if (n == 0)
		return 1;
	for (int i = 0; i < SC_N; i++) {
		long k = atomic_load(&m.requests[i]);

		printf("mixload: %-8s %ld requests\n", scenario_names[i], k);
		total += k;
	}
	printf("mixload: %ld requests in %ld rounds, %.1f s, %d threads; %ld retried (409/503), "
	       "%ld unexpected answers\n",
	       total, atomic_load(&m.rounds), util_now() - m.t0, n, atomic_load(&m.retries),
	       atomic_load(&m.unexpected));
	return atomic_load(&m.unexpected) == 0 ? 0 : 3;
}
