/*
 * it_hostile.c: hostile clients against an API instance of its own with short timeouts:
 * slow and idle connections are closed without starving others, the connections of one
 * address are limited, oversized requests are refused, and floods of bad keys get 429s
 * (per client address, X-Forwarded-For believed from trusted proxies only).
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>

#include <errno.h>
#include <limits.h>
#include <poll.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include "e2e.h"

/* The instance's settings: short, so that the test does not wait long. */
#define IDLE_S 2
#define REQUEST_S 3
#define BUDGET_S (IDLE_S + REQUEST_S)
#define PER_IP 100
#define AUTH_LIMIT 10
#define TRUSTED_PROXY "127.0.0.9"
/* What a busy shared machine may add to any deadline. */
#define SLACK_S 4.0

/* Loopback addresses, so that the server sees different clients. */
#define SRC_NORMAL "127.0.0.1"
#define SRC_IDLE "127.0.0.2"
#define SRC_SLOW_HEADERS "127.0.0.3"
#define SRC_SLOW_BODY "127.0.0.4"
#define SRC_CROWD "127.0.0.5"
#define SRC_FLOOD "127.0.0.6"
#define SRC_SPOOF "127.0.0.7"

#define N_IDLE 90
#define N_SLOW_HEADERS 90
#define N_SLOW_BODY 90
#define N_CROWD 150

static char root[PATH_MAX];
static char run_id[32];
static char sku_path[128];
static pid_t api_pid = -1;
static int api_port;

static const char *const api_env[] = {"ORDERS_HTTP_IDLE_TIMEOUT_S=2",
                                      "ORDERS_HTTP_REQUEST_TIMEOUT_S=3",
                                      "ORDERS_HTTP_PER_IP_CONNECTION_LIMIT=100",
                                      "ORDERS_AUTH_FAILURE_LIMIT=10",
                                      "ORDERS_TRUSTED_PROXIES=" TRUSTED_PROXY,
                                      NULL};

static double now_s(void)
{
	return e2e_now_ms() / 1e3;
}

/* One counter's value from the instance's /metrics (0 when absent). */
static double metric(const char *series)
{
	return e2e_metric(api_port, series);
}

/* A raw request from src; the status, 0 when closed without an answer. The
 * answer is kept in *keep (release it) when keep is not NULL. */
static int raw_status_from(const char *src, const char *req, size_t len, struct http_response *keep)
{
	struct http_response r;
	int status;

	if (http_raw_from(src, api_port, req, len, 0, &r) != 0)
		return 0;
	status = r.status;
	if (keep)
		*keep = r;
	else
		http_response_release(&r);
	return status;
}

/* GET path from src with auth and extra (full header lines, or NULL); as raw_status_from. */
static int get_from(const char *src, const char *path, const char *auth, const char *extra,
                    struct http_response *keep)
{
	char req[1024];
	int n;

	n = snprintf(req, sizeof(req),
	             "GET %s HTTP/1.1\r\nHost: x\r\nConnection: close\r\n%s%s%s%s\r\n", path,
	             auth ? auth : "", auth ? "\r\n" : "", extra ? extra : "", extra ? "\r\n" : "");
	return raw_status_from(src, req, (size_t)n, keep);
}

/* ---- slow and idle connections --------------------------------------------------- */

enum kind { IDLE, SLOW_HEADERS, SLOW_BODY, CROWD, NKINDS };

static const char *const kind_name[] = {"idle", "slow headers", "slow body", "crowd"};

struct sconn {
	int fd;
	enum kind kind;
	double opened, closed; /* seconds, monotonic; closed 0 while open */
	const char *script;    /* what it sends, a byte at a time (NULL: nothing) */
	size_t len, sent;
};

/* A request whose headers never end in time: a byte every 250 ms. */
static const char slow_headers[] = "GET /v1/products/HOSTILE HTTP/1.1\r\nHost: x\r\nX-Padding: "
                                   "aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa";
/* Whole headers at once, then a body of 5,000 bytes a byte at a time. */
static const char slow_body_head[] =
    "POST /v1/carts HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer dev-client\r\n"
    "Content-Type: application/json\r\nContent-Length: 5000\r\n\r\n";
static char slow_body[sizeof(slow_body_head) + 5000];

/* Normal traffic beside them: GETs from SRC_NORMAL with a good key, pause_us
 * apart, their latencies. */
struct normal {
	atomic_int stop;
	useconds_t pause_us;
	int n, ok;
	double lat_ms[4096];
};

static void *normal_run(void *arg)
{
	struct normal *nt = arg;

	while (!atomic_load(&nt->stop) && nt->n < 4096) {
		double t0 = e2e_now_ms();
		int status = get_from(SRC_NORMAL, sku_path, E2E_CLIENT, NULL, NULL);

		nt->lat_ms[nt->n++] = e2e_now_ms() - t0;
		nt->ok += status == 200;
		if (nt->pause_us)
			usleep(nt->pause_us);
	}
	return NULL;
}

static int cmp_double(const void *a, const void *b)
{
	double x = *(const double *)a, y = *(const double *)b;

	return x < y ? -1 : x > y;
}

static void open_conns(struct sconn *c, size_t *n, enum kind kind, const char *src, int count,
                       const char *script, size_t len)
{
	for (int i = 0; i < count; i++) {
		struct sconn *s = &c[(*n)++];

		s->fd = http_connect_from(src, api_port);
		if (s->fd < 0)
			fail_msg("cannot connect from %s: %s", src, strerror(errno));
		s->kind = kind;
		s->opened = now_s();
		s->script = script;
		s->len = len;
		/* A whole header block goes at once; the rest a byte at a time. */
		if (kind == SLOW_BODY) {
			size_t head = sizeof(slow_body_head) - 1;

			assert_int_equal(send(s->fd, script, head, MSG_NOSIGNAL), (ssize_t)head);
			s->sent = head;
		}
	}
}

/* Whether s's peer has closed (EOF or a reset); marks it closed. */
static void check_closed(struct sconn *s, double t)
{
	char b[512];
	ssize_t r = recv(s->fd, b, sizeof(b), MSG_DONTWAIT);

	if (r == 0 || (r < 0 && errno != EAGAIN && errno != EWOULDBLOCK)) {
		s->closed = t;
		close(s->fd);
		s->fd = -1;
	}
}

static void test_slow_and_idle_connections(void **state)
{
	enum { MAX = N_IDLE + N_SLOW_HEADERS + N_SLOW_BODY + N_CROWD };
	static struct sconn c[MAX];
	static struct normal nt;
	struct pollfd pfd[MAX];
	double first[NKINDS], last[NKINDS], start, slow_closed_before, next_send = 0;
	int open_left, closed_count[NKINDS] = {0}, refused_at_once = 0, kept = 0;
	pthread_t normal_thread;
	size_t n = 0, i;

	(void)state;
	memset(c, 0, sizeof(c));
	memset(&nt, 0, sizeof(nt));
	nt.pause_us = 50000;
	memcpy(slow_body, slow_body_head, sizeof(slow_body_head) - 1);
	memset(slow_body + sizeof(slow_body_head) - 1, ' ', 5000);
	slow_closed_before = metric("orders_http_slow_connections_closed_total");

	assert_int_equal(pthread_create(&normal_thread, NULL, normal_run, &nt), 0);
	start = now_s();
	open_conns(c, &n, IDLE, SRC_IDLE, N_IDLE, NULL, 0);
	open_conns(c, &n, SLOW_HEADERS, SRC_SLOW_HEADERS, N_SLOW_HEADERS, slow_headers,
	           sizeof(slow_headers) - 1);
	open_conns(c, &n, SLOW_BODY, SRC_SLOW_BODY, N_SLOW_BODY, slow_body,
	           sizeof(slow_body_head) - 1 + 5000);
	open_conns(c, &n, CROWD, SRC_CROWD, N_CROWD, NULL, 0);

	/* Trickle a byte every 250 ms into every slow one until all are closed. */
	for (open_left = (int)n; open_left > 0 && now_s() - start < BUDGET_S + 3 * SLACK_S;) {
		double t = now_s();
		int np = 0;

		if (t >= next_send) {
			for (i = 0; i < n; i++) {
				if (c[i].fd < 0 || !c[i].script || c[i].sent >= c[i].len)
					continue;
				if (send(c[i].fd, c[i].script + c[i].sent, 1, MSG_NOSIGNAL) == 1)
					c[i].sent++;
			}
			next_send = t + 0.25;
		}
		for (i = 0; i < n; i++) {
			if (c[i].fd < 0)
				continue;
			pfd[np].fd = c[i].fd;
			pfd[np].events = POLLIN;
			pfd[np].revents = 0;
			np++;
		}
		poll(pfd, (nfds_t)np, 50);
		t = now_s();
		for (i = 0; i < n; i++) {
			if (c[i].fd < 0)
				continue;
			check_closed(&c[i], t);
			if (c[i].fd < 0)
				open_left--;
		}
	}
	atomic_store(&nt.stop, 1);
	pthread_join(normal_thread, NULL);

	for (int k = 0; k < NKINDS; k++) {
		first[k] = 1e9;
		last[k] = 0;
	}
	for (i = 0; i < n; i++) {
		double life = c[i].closed - c[i].opened;

		if (c[i].fd >= 0) {
			fail_msg("a %s connection is still open after %.1f s", kind_name[c[i].kind],
			         now_s() - c[i].opened);
		}
		closed_count[c[i].kind]++;
		if (c[i].kind == CROWD && life < 1.0) {
			refused_at_once++;
			continue;
		}
		if (c[i].kind == CROWD)
			kept++;
		if (life < first[c[i].kind])
			first[c[i].kind] = life;
		if (life > last[c[i].kind])
			last[c[i].kind] = life;
	}
	qsort(nt.lat_ms, (size_t)nt.n, sizeof(nt.lat_ms[0]), cmp_double);
	fprintf(stderr,
	        "it_hostile: %zu connections from 4 addresses; idle closed after %.1f-%.1f s "
	        "(timeout %d s); slow headers after %.1f-%.1f s, slow bodies after %.1f-%.1f s "
	        "(deadline %d s); crowd of %d from one address: %d kept (closed after "
	        "%.1f-%.1f s), %d refused at once; meanwhile %d normal requests, %d answered "
	        "200, latency p50 %.0f ms, max %.0f ms\n",
	        n, first[IDLE], last[IDLE], IDLE_S, first[SLOW_HEADERS], last[SLOW_HEADERS],
	        first[SLOW_BODY], last[SLOW_BODY], BUDGET_S, N_CROWD, kept, first[CROWD],
	        last[CROWD], refused_at_once, nt.n, nt.ok, nt.n ? nt.lat_ms[nt.n / 2] : 0,
	        nt.n ? nt.lat_ms[nt.n - 1] : 0);

	/* Idle ones: closed by the idle timeout. */
	assert_true(first[IDLE] >= IDLE_S - 0.5);
	assert_true(last[IDLE] <= IDLE_S + SLACK_S);
	/* Slow ones outlived the idle timeout (bytes kept coming) and were closed
	 * by the deadline, every one of them by the watchdog. */
	assert_true(first[SLOW_HEADERS] >= IDLE_S + 0.5 && first[SLOW_BODY] >= IDLE_S + 0.5);
	assert_true(first[SLOW_HEADERS] >= BUDGET_S - 0.5 && first[SLOW_BODY] >= BUDGET_S - 0.5);
	assert_true(last[SLOW_HEADERS] <= BUDGET_S + SLACK_S &&
	            last[SLOW_BODY] <= BUDGET_S + SLACK_S);
	assert_true(metric("orders_http_slow_connections_closed_total") - slow_closed_before >=
	            N_SLOW_HEADERS + N_SLOW_BODY);
	/* One address holds at most PER_IP connections; the rest are closed at once. */
	assert_int_equal(kept, PER_IP);
	assert_int_equal(refused_at_once, N_CROWD - PER_IP);
	assert_true(last[CROWD] <= IDLE_S + SLACK_S);
	/* Everybody else was served all along, and quickly (generously bounded). */
	assert_true(nt.n >= 20);
	assert_int_equal(nt.ok, nt.n);
	assert_true(nt.lat_ms[nt.n - 1] < 2000);
	assert_int_equal(get_from(SRC_CROWD, "/healthz", NULL, NULL, NULL), 200);
}

/* ---- oversized requests ------------------------------------------------------------ */

/* A raw request from SRC_NORMAL, as raw_status_from. */
static int raw_status(const char *req, size_t len, struct http_response *keep)
{
	return raw_status_from(SRC_NORMAL, req, len, keep);
}

static void expect_413(const struct http_response *r)
{
	char v[80];
	json_t *j = http_json(r);

	assert_int_equal(r->status, 413);
	assert_non_null(j);
	assert_string_equal(json_string_value(json_object_get(json_object_get(j, "error"), "code")),
	                    "payload_too_large");
	json_decref(j);
	assert_int_equal(http_header(r, "X-Request-Id", v, sizeof(v)), 0);
	assert_int_equal(http_header(r, "Connection", v, sizeof(v)), 0);
	assert_string_equal(v, "close");
}

/* A POST /v1/carts with a JSON body of exactly size bytes, as announced or chunked. */
static size_t cart_request(char *out, size_t cap, size_t size, int chunked)
{
	static const char head[] = "{\"customer_id\":\"";
	static const char tail[] = "\",\"currency\":\"USD\"}";
	size_t n, body_start, fill = size - (sizeof(head) - 1) - (sizeof(tail) - 1), i;

	n = (size_t)snprintf(
	    out, cap,
	    "POST /v1/carts HTTP/1.1\r\nHost: x\r\nConnection: close\r\n"
	    "Authorization: Bearer dev-client\r\nContent-Type: application/json\r\n");
	if (chunked)
		n += (size_t)snprintf(out + n, cap - n, "Transfer-Encoding: chunked\r\n\r\n");
	else
		n += (size_t)snprintf(out + n, cap - n, "Content-Length: %zu\r\n\r\n", size);
	body_start = n;
	/* The body, then cut into chunks of 4 KiB when chunked. */
	{
		char *body = malloc(size);

		assert_non_null(body);
		memcpy(body, head, sizeof(head) - 1);
		memset(body + sizeof(head) - 1, 'x', fill);
		memcpy(body + sizeof(head) - 1 + fill, tail, sizeof(tail) - 1);
		for (i = 0; i < size;) {
			size_t piece = chunked ? (size - i < 4096 ? size - i : 4096) : size;

			if (chunked)
				n += (size_t)snprintf(out + n, cap - n, "%zx\r\n", piece);
			assert_true(n + piece + 8 < cap);
			memcpy(out + n, body + i, piece);
			n += piece;
			i += piece;
			if (chunked)
				n += (size_t)snprintf(out + n, cap - n, "\r\n");
		}
		free(body);
	}
	if (chunked)
		n += (size_t)snprintf(out + n, cap - n, "0\r\n\r\n");
	(void)body_start;
	return n;
}

/*
 * Pad the head out[0..n) to about size bytes, with one header or many
 * small ones, and end it with its blank line. Returns the new length.
 */
static size_t pad_head(char *out, size_t cap, size_t n, size_t size, int many)
{
	int i = 0;

	while (n + 4 < size) {
		size_t room = size - n - 4, v = many ? 8 : room - 12;

		if (room < 20)
			break;
		n += (size_t)snprintf(out + n, cap - n, "X-Pad-%d: ", i++);
		memset(out + n, 'p', v);
		n += v;
		n += (size_t)snprintf(out + n, cap - n, "\r\n");
		if (!many)
			break;
	}
	n += (size_t)snprintf(out + n, cap - n, "\r\n");
	return n;
}

/* A GET whose header block is about size bytes, in one header or in many. */
static size_t header_request(char *out, size_t cap, size_t size, int many)
{
	size_t n = (size_t)snprintf(out, cap,
	                            "GET /v1/products/HOSTILE-NONE HTTP/1.1\r\nHost: x\r\n"
	                            "Connection: close\r\nAuthorization: Bearer dev-client\r\n");

	return pad_head(out, cap, n, size, many);
}

/* A checkout whose header block is about size bytes, body as given. */
static size_t checkout_head_request(char *out, size_t cap, size_t size, const char *key,
                                    const char *body)
{
	size_t n = (size_t)snprintf(out, cap,
	                            "POST /v1/checkouts HTTP/1.1\r\nHost: x\r\n"
	                            "Connection: close\r\nAuthorization: Bearer dev-client\r\n"
	                            "Content-Type: application/json\r\nIdempotency-Key: %s\r\n"
	                            "Content-Length: %zu\r\n",
	                            key, strlen(body));

	n = pad_head(out, cap, n, size, 0);
	return n + (size_t)snprintf(out + n, cap - n, "%s", body);
}

static void test_oversized_requests(void **state)
{
	size_t cap = 160 * 1024, len;
	char *req = malloc(cap), v[64];
	struct http_response r;
	int status, size, served_max = 0, refused_min = 0, closed_min = 0, closed_max = 0;

	(void)state;
	assert_non_null(req);
	/* Bodies: at 64 KiB taken (then judged: 422, the customer id is too long), one byte
	 * more refused, announced or chunked. */
	len = cart_request(req, cap, 64 * 1024, 0);
	assert_int_equal(raw_status(req, len, NULL), 422);
	len = cart_request(req, cap, 64 * 1024 + 1, 0);
	assert_int_equal(raw_status(req, len, &r), 413);
	expect_413(&r);
	http_response_release(&r);
	len = cart_request(req, cap, 64 * 1024, 1);
	assert_int_equal(raw_status(req, len, NULL), 422);
	len = cart_request(req, cap, 80 * 1024, 1);
	assert_int_equal(raw_status(req, len, &r), 413);
	expect_413(&r);
	http_response_release(&r);
	/* Announced and never sent: refused before a byte of it is read. */
	len = (size_t)snprintf(
	    req, cap,
	    "POST /v1/carts HTTP/1.1\r\nHost: x\r\nConnection: close\r\n"
	    "Authorization: Bearer dev-client\r\n"
	    "Content-Type: application/json\r\nContent-Length: 1000000000\r\n\r\n");
	assert_int_equal(raw_status(req, len, &r), 413);
	expect_413(&r);
	http_response_release(&r);

	/* Headers: small ones served; past the 4 KiB pool refused with 431 and closed. */
	len = header_request(req, cap, 2048, 0);
	assert_int_equal(raw_status(req, len, NULL), 404); /* no such product: served */
	len = header_request(req, cap, 8192, 0);
	assert_int_equal(raw_status(req, len, &r), 431);
	assert_int_equal(http_header(&r, "Connection", v, sizeof(v)), 0);
	assert_string_equal(v, "close");
	http_response_release(&r);
	len = header_request(req, cap, 6000, 1); /* 300 small headers */
	assert_int_equal(raw_status(req, len, NULL), 431);
	/* A request line past the pool: 414. */
	len = (size_t)snprintf(req, cap, "GET /v1/products/");
	memset(req + len, 'a', 6000);
	len += 6000;
	len += (size_t)snprintf(req + len, cap - len, " HTTP/1.1\r\nHost: x\r\n\r\n");
	assert_int_equal(raw_status(req, len, NULL), 414);

	/* Every size on the way: served, refused with 431 (ours up to the pool's
	 * size, then libmicrohttpd's), or (just below the pool's size, where not
	 * even our 431's headers fit) closed without an answer; never anything
	 * else, and never a hang. */
	for (size = 2000; size <= 4600; size += 50) {
		len = header_request(req, cap, (size_t)size, 0);
		status = raw_status(req, len, NULL);
		if (status == 404)
			served_max = size;
		else if (status == 431 && !refused_min)
			refused_min = size;
		else if (status == 0) {
			if (!closed_min)
				closed_min = size;
			closed_max = size;
		} else if (status != 431)
			fail_msg("a header block of %d bytes got %d", size, status);
	}
	fprintf(stderr,
	        "it_hostile: header blocks served up to %d bytes, refused with 431 from %d, "
	        "closed without an answer from %d to %d\n",
	        served_max, refused_min, closed_min, closed_max);
	assert_true(served_max >= 2800);
	assert_true(refused_min > served_max && refused_min <= 3300);
	assert_true(!closed_min || closed_min > refused_min);
	/* And the server goes on serving. */
	assert_int_equal(get_from(SRC_NORMAL, sku_path, E2E_CLIENT, NULL, NULL), 200);
	free(req);
}

/* A checkout is never carried out without its answer: one refused or
 * closed for its headers' size leaves no order behind. */
static void test_oversized_checkout_headers(void **state)
{
	size_t cap = 16 * 1024, len;
	char *req = malloc(cap), body[1024], key[96], sku[64];
	double before = metric("orders_checkouts_accepted_total");
	int size, status, accepted = 0;

	(void)state;
	assert_non_null(req);
	snprintf(sku, sizeof(sku), "HOSTILE-HEAD-%ld", (long)getpid());
	e2e_put_product(sku, 1000, 100);
	e2e_checkout_body(body, sizeof(body), sku, 1, "4242424242424242");
	for (size = 2000; size <= 4600; size += 50) {
		snprintf(key, sizeof(key), "hostile-head-%ld-%d", (long)getpid(), size);
		len = checkout_head_request(req, cap, (size_t)size, key, body);
		status = raw_status(req, len, NULL);
		if (status == 202)
			accepted++;
		else if (status != 431 && status != 0)
			fail_msg("a checkout with a header block of %d bytes got %d", size, status);
	}
	fprintf(stderr, "it_hostile: %d checkouts of the header sweep accepted\n", accepted);
	assert_true(accepted > 0);
	assert_int_equal((int)(metric("orders_checkouts_accepted_total") - before), accepted);
	free(req);
}

/* ---- floods of bad keys -------------------------------------------------------------- */

struct shot {
	int64_t sent, got;
	int status;
};

static void expect_auth_429(const struct http_response *r)
{
	char retry[16], rid[80];
	json_t *j = http_json(r);

	assert_int_equal(r->status, 429);
	assert_int_equal(http_header(r, "Retry-After", retry, sizeof(retry)), 0);
	assert_string_equal(retry, "1");
	assert_int_equal(http_header(r, "X-Request-Id", rid, sizeof(rid)), 0);
	assert_non_null(j);
	assert_string_equal(json_string_value(json_object_get(json_object_get(j, "error"), "code")),
	                    "rate_limited");
	json_decref(j);
}

static void test_bad_key_flood(void **state)
{
	enum { SHOTS = 20000 };
	static struct shot s[SHOTS];
	static struct normal nt;
	double unauth0, limited0;
	int64_t w, until;
	int n = 0, i, n401 = 0, n429 = 0, other = 0, in_w[2] = {0}, in_w429[2] = {0};
	struct http_response first_429;
	int have_429 = 0;
	pthread_t good;
	char auth[64];

	(void)state;
	memset(&nt, 0, sizeof(nt));
	unauth0 = metric("orders_auth_failures_total{outcome=\"unauthorized\"}");
	limited0 = metric("orders_auth_failures_total{outcome=\"rate_limited\"}");
	assert_int_equal(pthread_create(&good, NULL, normal_run, &nt), 0);
	/* Two whole windows of bad keys from one address, as fast as it goes. */
	w = e2e_next_window(30);
	until = (w + 2) * 1000 - 30;
	while (e2e_wall_ms() < until && n < SHOTS) {
		struct http_response r;

		snprintf(auth, sizeof(auth), "Authorization: Bearer guess-%d", n);
		s[n].sent = e2e_wall_ms();
		s[n].status = get_from(SRC_FLOOD, sku_path, auth, NULL, &r);
		s[n].got = e2e_wall_ms();
		if (s[n].status == 429 && !have_429) {
			first_429 = r;
			have_429 = 1;
		} else if (s[n].status) {
			http_response_release(&r);
		}
		n++;
	}
	atomic_store(&nt.stop, 1);
	pthread_join(good, NULL);
	for (i = 0; i < n; i++) {
		int k = (int)(s[i].sent / 1000 - w);

		n401 += s[i].status == 401;
		n429 += s[i].status == 429;
		other += s[i].status != 401 && s[i].status != 429;
		if (k >= 0 && k < 2 && s[i].got / 1000 == s[i].sent / 1000) {
			in_w[k] += s[i].status == 401;
			in_w429[k] += s[i].status == 429;
		}
	}
	qsort(nt.lat_ms, (size_t)nt.n, sizeof(nt.lat_ms[0]), cmp_double);
	fprintf(stderr,
	        "it_hostile: %d bad keys from one address in two seconds: %d answered 401 (%d and "
	        "%d per window, limit %d), %d answered 429; meanwhile %d good-key requests from "
	        "another address, %d answered 200, latency p50 %.0f ms, max %.0f ms\n",
	        n, n401, in_w[0], in_w[1], AUTH_LIMIT, n429, nt.n, nt.ok,
	        nt.n ? nt.lat_ms[nt.n / 2] : 0, nt.n ? nt.lat_ms[nt.n - 1] : 0);
	assert_int_equal(other, 0);
	assert_true(in_w[0] <= AUTH_LIMIT && in_w[1] <= AUTH_LIMIT);
	assert_true(in_w429[0] > 0 && in_w429[1] > 0);
	/* No window admits more than the limit's worth of 401s (the flood may touch a third). */
	assert_true(n401 <= 3 * AUTH_LIMIT);
	assert_true(have_429);
	expect_auth_429(&first_429);
	http_response_release(&first_429);
	/* Good keys from elsewhere were never refused. */
	assert_true(nt.n >= 10);
	assert_int_equal(nt.ok, nt.n);
	/* The metrics count them exactly (the instance is the test's own). */
	assert_int_equal(
	    (long)(metric("orders_auth_failures_total{outcome=\"unauthorized\"}") - unauth0), n401);
	assert_int_equal(
	    (long)(metric("orders_auth_failures_total{outcome=\"rate_limited\"}") - limited0),
	    n429);

	/* Within one window: the limit's 401s, then 429 even for a good key from that
	 * address (its key is not looked at); the next second serves it again. */
	w = e2e_next_window(30);
	for (i = 0; i < AUTH_LIMIT; i++)
		assert_int_equal(
		    get_from(SRC_FLOOD, sku_path, "Authorization: Bearer nope", NULL, NULL), 401);
	assert_int_equal(get_from(SRC_FLOOD, sku_path, "Authorization: Bearer nope", NULL, NULL),
	                 429);
	assert_int_equal(get_from(SRC_FLOOD, sku_path, NULL, NULL, NULL), 429);
	assert_int_equal(get_from(SRC_FLOOD, sku_path, E2E_CLIENT, NULL, NULL), 429);
	assert_int_equal(e2e_wall_ms() / 1000, w);
	e2e_next_window(30);
	assert_int_equal(get_from(SRC_FLOOD, sku_path, E2E_CLIENT, NULL, NULL), 200);
}

/* X-Forwarded-For names the client only when a trusted proxy sent the request. */
static void test_forwarded_for(void **state)
{
	char xff[96];
	int64_t w;
	int i;

	(void)state;
	w = e2e_next_window(30);
	for (i = 0; i < AUTH_LIMIT; i++)
		assert_int_equal(get_from(TRUSTED_PROXY, sku_path, "Authorization: Bearer nope",
		                          "X-Forwarded-For: 203.0.113.7", NULL),
		                 401);
	assert_int_equal(get_from(TRUSTED_PROXY, sku_path, "Authorization: Bearer nope",
	                          "X-Forwarded-For: 203.0.113.7", NULL),
	                 429);
	/* Another client behind the same proxy is not affected... */
	assert_int_equal(get_from(TRUSTED_PROXY, sku_path, "Authorization: Bearer nope",
	                          "X-Forwarded-For: 203.0.113.8", NULL),
	                 401);
	assert_int_equal(
	    get_from(TRUSTED_PROXY, sku_path, E2E_CLIENT, "X-Forwarded-For: 203.0.113.8", NULL),
	    200);
	/* ...and what the client wrote left of the proxy's entry is not believed. */
	assert_int_equal(get_from(TRUSTED_PROXY, sku_path, E2E_CLIENT,
	                          "X-Forwarded-For: 198.51.100.1, 203.0.113.7", NULL),
	                 429);
	assert_int_equal(e2e_wall_ms() / 1000, w);

	/* From an untrusted peer the header is ignored: changing it changes nothing. */
	w = e2e_next_window(30);
	for (i = 0; i < AUTH_LIMIT; i++) {
		snprintf(xff, sizeof(xff), "X-Forwarded-For: 198.51.100.%d", i + 10);
		assert_int_equal(
		    get_from(SRC_SPOOF, sku_path, "Authorization: Bearer nope", xff, NULL), 401);
	}
	assert_int_equal(get_from(SRC_SPOOF, sku_path, "Authorization: Bearer nope",
	                          "X-Forwarded-For: 198.51.100.99", NULL),
	                 429);
	assert_int_equal(e2e_wall_ms() / 1000, w);
}

static int group_setup(void **state)
{
	char sku[64];
	(void)state;

	e2e_find_root(root, sizeof(root));
	http_set_timeout_ms(15000);
	snprintf(sku, sizeof(sku), "HOSTILE-%s", run_id);
	snprintf(sku_path, sizeof(sku_path), "/v1/products/%s", sku);
	e2e_put_product(sku, 5, 100);
	api_pid = e2e_api_start(root, "orders-api-hostile.log", api_env, &api_port);
	return 0;
}

static int group_teardown(void **state)
{
	(void)state;
	e2e_api_stop(api_pid);
	api_pid = -1;
	return 0;
}

int main(void)
{
	const struct CMUnitTest tests[] = {
	    cmocka_unit_test(test_slow_and_idle_connections),
	    cmocka_unit_test(test_oversized_requests),
	    cmocka_unit_test(test_oversized_checkout_headers),
	    cmocka_unit_test(test_bad_key_flood),
	    cmocka_unit_test(test_forwarded_for),
	};

	snprintf(run_id, sizeof(run_id), "%ld-%d", (long)time(NULL), (int)getpid());
	return cmocka_run_group_tests(tests, group_setup, group_teardown);
}
