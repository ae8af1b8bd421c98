/* test_ops.c: unit tests for the ops endpoints, over real sockets on loopback. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>

#include <arpa/inet.h>
#include <errno.h>
#include <netinet/in.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <sys/socket.h>
#include <sys/time.h>
#include <unistd.h>

#include "buf.h"
#include "err.h"
#include "metrics.h"
#include "mq.h"
#include "ops.h"

#define BIND "127.0.0.1"
#define PORT_TRIES 50
#define RESPONSE_MAX (256 * 1024)
#define IO_TIMEOUT_S 5

/* What the readiness callback answers; flipped by the tests, read on MHD's thread. */
static atomic_int ready_flag = 1;
static atomic_int ready_calls;
static atomic_int ready_bad_arg; /* the callback runs on MHD's thread: no asserts there */
static const char *failing_reason = "postgresql: cannot connect";

static struct metrics *m;
static struct metric_family *counter;
static struct ops *ops;
static int port;

struct response {
	int status;
	char *head; /* status line and headers, NUL-terminated */
	char *body; /* NUL-terminated; may be empty */
	size_t body_len;
	char *raw;
};

static int test_ready(void *arg, char *why, size_t whylen)
{
	atomic_fetch_add(&ready_calls, 1);
	if (arg != &ready_flag)
		atomic_store(&ready_bad_arg, 1);
	if (atomic_load(&ready_flag))
		return ERR_OK;
	snprintf(why, whylen, "%s", failing_reason);
	return ERR_UNAVAILABLE;
}

/* The ports tried are spread by pid, so that parallel runs rarely collide. */
static struct ops *start_ops(int *out_port, struct metrics *mm, ops_ready_fn fn, void *arg)
{
	struct ops *o;
	int i, p;

	for (i = 0; i < PORT_TRIES; i++) {
		p = 20000 + (int)((getpid() + i * 997) % 20000);
		o = ops_new(BIND, p, mm, fn, arg);
		if (o) {
			*out_port = p;
			return o;
		}
	}
	return NULL;
}

static void response_free(struct response *r)
{
	free(r->raw);
	memset(r, 0, sizeof(*r));
}

/*
 * One HTTP/1.1 request with Connection: close, the whole answer read until
 * the server closes. The server's Content-Length is checked against the
 * body received.
 */
static void request(int p, const char *method, const char *path, struct response *r)
{
	struct sockaddr_in addr;
	struct timeval tv = {IO_TIMEOUT_S, 0};
	char req[512];
	size_t used = 0, reqlen;
	ssize_t n;
	char *sep, *cl;
	int fd, len;

	memset(r, 0, sizeof(*r));
	fd = socket(AF_INET, SOCK_STREAM, 0);
	assert_true(fd >= 0);
	assert_int_equal(setsockopt(fd, SOL_SOCKET, SO_RCVTIMEO, &tv, sizeof(tv)), 0);
	assert_int_equal(setsockopt(fd, SOL_SOCKET, SO_SNDTIMEO, &tv, sizeof(tv)), 0);
	memset(&addr, 0, sizeof(addr));
	addr.sin_family = AF_INET;
	addr.sin_port = htons((uint16_t)p);
	assert_int_equal(inet_pton(AF_INET, BIND, &addr.sin_addr), 1);
	assert_int_equal(connect(fd, (struct sockaddr *)&addr, sizeof(addr)), 0);

	len = snprintf(req, sizeof(req),
	               "%s %s HTTP/1.1\r\nHost: %s:%d\r\nConnection: close\r\n"
	               "Content-Length: 0\r\n\r\n",
	               method, path, BIND, p);
	assert_true(len > 0 && (size_t)len < sizeof(req));
	reqlen = (size_t)len;
	while (used < reqlen) {
		n = send(fd, req + used, reqlen - used, MSG_NOSIGNAL);
		assert_true(n > 0);
		used += (size_t)n;
	}

	r->raw = malloc(RESPONSE_MAX + 1);
	assert_non_null(r->raw);
	used = 0;
	for (;;) {
		n = recv(fd, r->raw + used, RESPONSE_MAX - used, 0);
		if (n < 0 && errno == EINTR)
			continue;
		/* A timeout (EAGAIN) means the server never closed: a failure. */
		assert_true(n >= 0);
		if (n == 0)
			break;
		used += (size_t)n;
		assert_true(used < RESPONSE_MAX);
	}
	close(fd);
	r->raw[used] = '\0';

	assert_int_equal(strncmp(r->raw, "HTTP/1.1 ", 9), 0);
	r->status = atoi(r->raw + 9);
	sep = strstr(r->raw, "\r\n\r\n");
	assert_non_null(sep);
	*sep = '\0';
	r->head = r->raw;
	r->body = sep + 4;
	r->body_len = used - (size_t)(r->body - r->raw);

	cl = strcasestr(r->head, "\r\nContent-Length:");
	assert_non_null(cl);
	assert_int_equal(strtoul(cl + 17, NULL, 10), r->body_len);
}

/* The value of header name (without the leading space), or NULL. Case-insensitive name. */
static const char *header(const struct response *r, const char *name, char *out, size_t outlen)
{
	char pat[64];
	const char *p, *end;
	size_t n;

	snprintf(pat, sizeof(pat), "\r\n%s:", name);
	p = strcasestr(r->head, pat);
	if (!p)
		return NULL;
	p += strlen(pat);
	while (*p == ' ')
		p++;
	end = strstr(p, "\r\n");
	n = end ? (size_t)(end - p) : strlen(p);
	if (n >= outlen)
		n = outlen - 1;
	memcpy(out, p, n);
	out[n] = '\0';
	return out;
}

static void assert_header(const struct response *r, const char *name, const char *want)
{
	char v[256];

	assert_non_null(header(r, name, v, sizeof(v)));
	assert_string_equal(v, want);
}

/* The text of line (no newline) is one whole line of text. */
static int has_line(const char *text, const char *line)
{
	size_t n = strlen(line);
	const char *p = text;

	while ((p = strstr(p, line)) != NULL) {
		if ((p == text || p[-1] == '\n') && (p[n] == '\n' || p[n] == '\0'))
			return 1;
		p += n;
	}
	return 0;
}

static int group_setup(void **state)
{
	(void)state;
	m = metrics_new();
	if (!m)
		return -1;
	counter = metrics_counter(m, "orders_test_events_total", "Events seen by the test.", NULL);
	if (!counter)
		return -1;
	ops = start_ops(&port, m, test_ready, &ready_flag);
	if (!ops) {
		fprintf(stderr, "test_ops: no free port to listen on\n");
		return -1;
	}
	return 0;
}

static int group_teardown(void **state)
{
	(void)state;
	ops_free(ops);
	metrics_free(m);
	return 0;
}

static void test_healthz(void **state)
{
	struct response r;

	(void)state;
	request(port, "GET", "/healthz", &r);
	assert_int_equal(r.status, 200);
	assert_header(&r, "Content-Type", "application/json");
	assert_header(&r, "Cache-Control", "no-store");
	assert_string_equal(r.body, "{\"status\":\"ok\"}");
	response_free(&r);
}

static void test_readyz_toggles(void **state)
{
	struct response r;
	int before;

	(void)state;
	atomic_store(&ready_flag, 1);
	before = atomic_load(&ready_calls);
	request(port, "GET", "/readyz", &r);
	assert_int_equal(r.status, 200);
	assert_header(&r, "Content-Type", "application/json");
	assert_string_equal(r.body, "{\"status\":\"ready\"}");
	response_free(&r);
	/* The callback is asked on every probe, not cached, with our arg. */
	assert_true(atomic_load(&ready_calls) > before);
	assert_int_equal(atomic_load(&ready_bad_arg), 0);

	atomic_store(&ready_flag, 0);
	request(port, "GET", "/readyz", &r);
	assert_int_equal(r.status, 503);
	assert_header(&r, "Content-Type", "application/json");
	assert_string_equal(
	    r.body, "{\"status\":\"not_ready\",\"failing\":\"postgresql: cannot connect\"}");
	response_free(&r);

	/* And back. */
	atomic_store(&ready_flag, 1);
	request(port, "GET", "/readyz", &r);
	assert_int_equal(r.status, 200);
	response_free(&r);
}

/* The reason is free text: quotes, backslashes and control bytes must stay valid JSON. */
static void test_readyz_reason_escaped(void **state)
{
	struct response r;

	(void)state;
	failing_reason = "redis \"cache\" at C:\\x\n\tdown";
	atomic_store(&ready_flag, 0);
	request(port, "GET", "/readyz", &r);
	atomic_store(&ready_flag, 1);
	failing_reason = "postgresql: cannot connect";
	assert_int_equal(r.status, 503);
	assert_string_equal(r.body, "{\"status\":\"not_ready\",\"failing\":"
	                            "\"redis \\\"cache\\\" at C:\\\\x\\u000a\\u0009down\"}");
	response_free(&r);
}

static void test_metrics(void **state)
{
	struct response r;

	(void)state;
	metric_add(counter, NULL, 3);
	request(port, "GET", "/metrics", &r);
	assert_int_equal(r.status, 200);
	assert_header(&r, "Content-Type", "text/plain; version=0.0.4; charset=utf-8");
	assert_true(has_line(r.body, "# TYPE orders_test_events_total counter"));
	assert_true(has_line(r.body, "orders_test_events_total 3"));
	response_free(&r);

	/* Each scrape renders afresh. */
	metric_add(counter, NULL, 2);
	request(port, "GET", "/metrics", &r);
	assert_int_equal(r.status, 200);
	assert_true(has_line(r.body, "orders_test_events_total 5"));
	assert_false(has_line(r.body, "orders_test_events_total 3"));
	response_free(&r);
}

static void test_not_found(void **state)
{
	static const char *const paths[] = {"/", "/nope", "/healthz/", "/metricsx", "/HEALTHZ"};
	struct response r;
	size_t i;

	(void)state;
	for (i = 0; i < sizeof(paths) / sizeof(paths[0]); i++) {
		request(port, "GET", paths[i], &r);
		assert_int_equal(r.status, 404);
		assert_header(&r, "Content-Type", "application/json");
		assert_int_equal(strncmp(r.body, "{\"error\":{\"code\":\"not_found\",", 29), 0);
		assert_non_null(strstr(r.body, "\"message\":\""));
		assert_string_equal(r.body + r.body_len - 2, "}}");
		response_free(&r);
	}
}

static void test_method_not_allowed(void **state)
{
	static const char *const methods[] = {"POST", "PUT", "DELETE"};
	static const char *const paths[] = {"/healthz", "/readyz", "/metrics"};
	struct response r;
	size_t i, j;

	(void)state;
	for (i = 0; i < sizeof(methods) / sizeof(methods[0]); i++) {
		for (j = 0; j < sizeof(paths) / sizeof(paths[0]); j++) {
			request(port, methods[i], paths[j], &r);
			assert_int_equal(r.status, 405);
			assert_header(&r, "Allow", "GET");
			assert_header(&r, "Content-Type", "application/json");
			assert_int_equal(
			    strncmp(r.body, "{\"error\":{\"code\":\"method_not_allowed\",", 38), 0);
			response_free(&r);
		}
	}
}

/* Several probes in a row on fresh connections: nothing is left half-open. */
static void test_many_requests(void **state)
{
	struct response r;
	int i;

	(void)state;
	for (i = 0; i < 100; i++) {
		request(port, "GET", i % 2 ? "/healthz" : "/metrics", &r);
		assert_int_equal(r.status, 200);
		response_free(&r);
	}
}

static void test_ready_null_and_no_metrics(void **state)
{
	struct response r;
	struct ops *o;
	int p;

	(void)state;
	o = start_ops(&p, NULL, NULL, NULL);
	assert_non_null(o);
	assert_int_not_equal(p, port);
	request(p, "GET", "/readyz", &r);
	assert_int_equal(r.status, 200);
	assert_string_equal(r.body, "{\"status\":\"ready\"}");
	response_free(&r);
	/* No registry: an empty scrape, not a crash. */
	request(p, "GET", "/metrics", &r);
	assert_int_equal(r.status, 200);
	assert_int_equal(r.body_len, 0);
	response_free(&r);
	ops_free(o);
}

static void test_new_refuses(void **state)
{
	(void)state;
	assert_null(ops_new(BIND, 0, m, NULL, NULL));
	assert_null(ops_new(BIND, -1, m, NULL, NULL));
	assert_null(ops_new(BIND, 65536, m, NULL, NULL));
	assert_null(ops_new("not an address", 20000, m, NULL, NULL));
	assert_null(ops_new("::1", 20000, m, NULL, NULL)); /* IPv4 only */
	/* The port the group's server holds. */
	assert_null(ops_new(BIND, port, m, NULL, NULL));
	ops_free(NULL);
}

/* After ops_free the port is closed and can be taken again. */
static void test_free_releases_port(void **state)
{
	struct sockaddr_in addr;
	struct ops *o;
	int p = 0, fd;

	(void)state;
	o = start_ops(&p, m, NULL, NULL);
	assert_non_null(o);
	ops_free(o);

	fd = socket(AF_INET, SOCK_STREAM, 0);
	assert_true(fd >= 0);
	memset(&addr, 0, sizeof(addr));
	addr.sin_family = AF_INET;
	addr.sin_port = htons((uint16_t)p);
	inet_pton(AF_INET, BIND, &addr.sin_addr);
	assert_int_not_equal(connect(fd, (struct sockaddr *)&addr, sizeof(addr)), 0);
	assert_int_equal(errno, ECONNREFUSED);
	close(fd);

	o = ops_new(BIND, p, m, NULL, NULL);
	assert_non_null(o);
	ops_free(o);
}

/* The queue gauges show only what a publisher has polled: nothing without one. */
static void test_queue_gauges(void **state)
{
	struct mq_publisher_options opt;
	struct ops_queue_gauges g;
	struct mq_publisher *p;
	struct metrics *qm = metrics_new();
	struct buf b;

	(void)state;
	assert_non_null(qm);
	assert_int_equal(ops_queue_gauges_init(&g, qm), ERR_OK);
	ops_queue_gauges_update(&g, NULL);
	/* Nothing listens on port 1: the publisher never connects, never polls. */
	memset(&opt, 0, sizeof(opt));
	opt.url = "amqp://guest:guest@127.0.0.1:1/";
	opt.poll_queue_stats_ms = 10;
	p = mq_publisher_new(&opt);
	assert_non_null(p);
	ops_queue_gauges_update(&g, p);
	buf_init(&b, RESPONSE_MAX);
	assert_int_equal(metrics_render(qm, &b), ERR_OK);
	assert_non_null(strstr(b.data, "# TYPE orders_queue_messages_ready gauge\n"));
	assert_non_null(strstr(b.data, "# TYPE orders_queue_consumers gauge\n"));
	assert_null(strstr(b.data, "{queue="));
	buf_release(&b);
	mq_publisher_free(p);
	metrics_free(qm);
}

int main(void)
{
	const struct CMUnitTest tests[] = {
	    cmocka_unit_test(test_healthz),
	    cmocka_unit_test(test_readyz_toggles),
	    cmocka_unit_test(test_readyz_reason_escaped),
	    cmocka_unit_test(test_metrics),
	    cmocka_unit_test(test_not_found),
	    cmocka_unit_test(test_method_not_allowed),
	    cmocka_unit_test(test_many_requests),
	    cmocka_unit_test(test_ready_null_and_no_metrics),
	    cmocka_unit_test(test_new_refuses),
	    cmocka_unit_test(test_free_releases_port),
	    cmocka_unit_test(test_queue_gauges),
	};

	return cmocka_run_group_tests(tests, group_setup, group_teardown);
}
