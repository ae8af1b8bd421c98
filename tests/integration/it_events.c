/* it_events.c: end to end: the finance feed never skips an event; filters, CSV, reconciliation. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>

#include <arpa/inet.h>
#include <fcntl.h>
#include <netinet/in.h>
#include <pthread.h>
#include <signal.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include <libpq-fe.h>

#include "buf.h"
#include "csv.h"
#include "e2e.h"
#include "ids.h"
#include "proto.h"

#define DEFAULT_DSN "postgresql://orders@127.0.0.1:5442/orders"
#define E2E_FINANCE "Authorization: Bearer dev-finance"
#define ACCEPT_CSV "Accept: text/csv"
#define CSV_HEADER "seq,event_id,type,order_id,customer_id,currency,total_cents,items,occurred_at"
/* The direct SQL writers: threads, transactions each, one in ROLLBACK_EVERY rolled back. */
#define SQL_WRITERS 6
#define SQL_TXNS 40
#define ROLLBACK_EVERY 8
/* The checkout burst through the real consumers. */
#define BURST 120
#define BURST_THREADS 4
#define EXTRA_CONSUMERS 2
/* A reader's page size: small, so that it pages often while writers write. */
#define READER_LIMIT 5
#define WAIT_MS 60000

static const char *dsn;
static PGconn *pg;
static char run_id[32];
static char root[1024];

/* ---- SQL (main thread: every failure fails the test) ---------------------- */

static PGresult *sql(const char *q, int n, const char *const *p)
{
	PGresult *r = PQexecParams(pg, q, n, NULL, p, NULL, NULL, 0);
	ExecStatusType st = PQresultStatus(r);

	if (st != PGRES_TUPLES_OK && st != PGRES_COMMAND_OK)
		fprintf(stderr, "it_events: %s: %s\n", q, PQerrorMessage(pg));
	assert_true(st == PGRES_TUPLES_OK || st == PGRES_COMMAND_OK);
	return r;
}

static long long sql_ll(const char *q, int n, const char *const *p)
{
	PGresult *r = sql(q, n, p);
	long long v;

	assert_int_equal(PQntuples(r), 1);
	v = strtoll(PQgetvalue(r, 0, 0), NULL, 10);
	PQclear(r);
	return v;
}

static long long max_seq(void)
{
	return sql_ll("SELECT coalesce(max(seq), 0) FROM order_events", 0, NULL);
}

static PGconn *connect_pg(void)
{
	PGconn *c = PQconnectdb(dsn);

	if (PQstatus(c) != CONNECTION_OK) {
		fprintf(stderr, "it_events: cannot connect to %s: %s\n", dsn, PQerrorMessage(c));
		PQfinish(c);
		return NULL;
	}
	return c;
}

/* 1 when q ran; on a failure the message goes to stderr. For any thread. */
static int exec_ok(PGconn *c, const char *q, int n, const char *const *p, PGresult **out)
{
	PGresult *r = PQexecParams(c, q, n, NULL, p, NULL, NULL, 0);
	ExecStatusType st = PQresultStatus(r);

	if (st != PGRES_TUPLES_OK && st != PGRES_COMMAND_OK) {
		fprintf(stderr, "it_events: %s: %s\n", q, PQerrorMessage(c));
		PQclear(r);
		return 0;
	}
	if (out)
		*out = r;
	else
		PQclear(r);
	return 1;
}

static const char order_sql[] =
    "INSERT INTO orders (order_id, client_id, idempotency_key, status, customer_id, currency, "
    "total_cents, created_at) VALUES ($1::uuid, 'it-events', $2, 'confirmed', $3, $4, "
    "$5::bigint, now())";
/* The table's trigger takes the feed's lock and draws seq, as for order-consumer. */
static const char event_sql[] =
    "INSERT INTO order_events (event_id, type, order_id, customer_id, currency, total_cents, "
    "items) VALUES ($1::uuid, $2, $3::uuid, $4, $5, $6::bigint, $7::jsonb) RETURNING seq";
static const char items_json[] = "[{\"sku\":\"EV-1\",\"quantity\":2,\"unit_price_cents\":150}]";

/* An order row for a hand-made event (committed on its own): its id into order_id. */
static int make_order(PGconn *c, const char *customer, const char *currency,
                      char order_id[IDS_UUID_LEN + 1])
{
	char key[96];
	const char *p[5] = {order_id, key, customer, currency, "300"};

	ids_uuid4(order_id);
	snprintf(key, sizeof(key), "it-events-%s-%s", run_id, order_id);
	return exec_ok(c, order_sql, 5, p, NULL);
}

/* Insert order_id's event in c's open transaction; 1 and *seq on success. */
static int insert_event(PGconn *c, const char *order_id, const char *type, const char *customer,
                        const char *currency, long long *seq)
{
	char event_id[IDS_UUID_LEN + 1];
	const char *p[7] = {event_id, type, order_id, customer, currency, "300", items_json};
	PGresult *r = NULL;

	ids_uuid4(event_id);
	if (!exec_ok(c, event_sql, 7, p, &r))
		return 0;
	*seq = strtoll(PQgetvalue(r, 0, 0), NULL, 10);
	PQclear(r);
	return 1;
}

/* ---- the feed over HTTP ------------------------------------------------------ */

/* GET target as finance (CSV when csv); a 429 is waited out. 0 when answered. */
static int feed_get(const char *target, int csv, struct http_response *out)
{
	const char *h[] = {E2E_FINANCE, csv ? ACCEPT_CSV : NULL, NULL};
	char retry[16];
	int i;

	for (i = 0; i < 50; i++) {
		if (http_request("GET", target, h, NULL, 0, out) != 0)
			return -1;
		if (out->status != 429)
			return 0;
		if (http_header(out, "Retry-After", retry, sizeof(retry)) != 0)
			snprintf(retry, sizeof(retry), "1");
		http_response_release(out);
		usleep((useconds_t)(atoi(retry) > 0 ? atoi(retry) : 1) * 1000000);
	}
	return -1;
}

/* One JSON page after `after` (types may be NULL); asserts 200. Decref it. */
static json_t *page(long long after, int limit, const char *types)
{
	struct http_response r;
	char target[256], next[32];
	json_t *j;

	snprintf(target, sizeof(target), "/v1/order-events?after=%lld&limit=%d%s%s", after, limit,
	         types ? "&types=" : "", types ? types : "");
	assert_int_equal(feed_get(target, 0, &r), 0);
	if (r.status != 200)
		fprintf(stderr, "GET %s answered %d: %s\n", target, r.status, r.body);
	assert_int_equal(r.status, 200);
	j = http_json(&r);
	assert_non_null(j);
	assert_true(json_is_array(json_object_get(j, "events")));
	assert_true(json_is_integer(json_object_get(j, "next_after")));
	assert_int_equal(http_header(&r, "X-Next-After", next, sizeof(next)), 0);
	assert_int_equal(strtoll(next, NULL, 10),
	                 json_integer_value(json_object_get(j, "next_after")));
	http_response_release(&r);
	return j;
}

static long long ev_seq(json_t *e)
{
	return json_integer_value(json_object_get(e, "seq"));
}

static const char *ev_str(json_t *e, const char *k)
{
	return json_string_value(json_object_get(e, k));
}

/* ---- a reader that pages in a tight loop ------------------------------------- */

struct seen {
	long long seq;
	char event_id[IDS_UUID_LEN + 1];
	char order_id[IDS_UUID_LEN + 1];
	char type[24];
};

struct reader {
	long long cursor;
	/* Once stop is set, read until the cursor reaches target. */
	atomic_llong target;
	atomic_int stop;
	struct seen *seen;
	size_t n, cap;
	long pages;
	char error[256];
	pthread_t thread;
};

static int reader_add(struct reader *rd, json_t *e)
{
	struct seen *s;

	if (rd->n == rd->cap) {
		size_t cap = rd->cap ? rd->cap * 2 : 1024;
		struct seen *p = realloc(rd->seen, cap * sizeof(*p));

		if (!p)
			return -1;
		rd->seen = p;
		rd->cap = cap;
	}
	s = &rd->seen[rd->n++];
	s->seq = ev_seq(e);
	snprintf(s->event_id, sizeof(s->event_id), "%s", ev_str(e, "event_id"));
	snprintf(s->order_id, sizeof(s->order_id), "%s", ev_str(e, "order_id"));
	snprintf(s->type, sizeof(s->type), "%s", ev_str(e, "type"));
	return 0;
}

/* One page for the reader thread (no asserts here); 1 when it had events, -1 on error. */
static int reader_step(struct reader *rd)
{
	struct http_response r;
	char target[128];
	json_t *j = NULL, *events, *e;
	size_t i;
	int rc = -1;

	snprintf(target, sizeof(target), "/v1/order-events?after=%lld&limit=%d", rd->cursor,
	         READER_LIMIT);
	if (feed_get(target, 0, &r) != 0) {
		snprintf(rd->error, sizeof(rd->error), "GET %s failed", target);
		return -1;
	}
	if (r.status != 200 || !(j = http_json(&r))) {
		snprintf(rd->error, sizeof(rd->error), "GET %s answered %d", target, r.status);
		goto out;
	}
	rd->pages++;
	events = json_object_get(j, "events");
	json_array_foreach(events, i, e)
	{
		if (ev_seq(e) <= (rd->n ? rd->seen[rd->n - 1].seq : rd->cursor)) {
			snprintf(rd->error, sizeof(rd->error), "seq %lld after %lld: out of order",
			         ev_seq(e), rd->n ? rd->seen[rd->n - 1].seq : rd->cursor);
			goto out;
		}
		if (reader_add(rd, e)) {
			snprintf(rd->error, sizeof(rd->error), "out of memory");
			goto out;
		}
	}
	if (json_integer_value(json_object_get(j, "next_after")) !=
	    (rd->n && json_array_size(events) ? rd->seen[rd->n - 1].seq : rd->cursor)) {
		snprintf(rd->error, sizeof(rd->error), "next_after %lld is not the page's last seq",
		         (long long)json_integer_value(json_object_get(j, "next_after")));
		goto out;
	}
	rd->cursor = json_integer_value(json_object_get(j, "next_after"));
	rc = json_array_size(events) > 0;
out:
	json_decref(j);
	http_response_release(&r);
	return rc;
}

static void *reader_run(void *arg)
{
	struct reader *rd = arg;

	for (;;) {
		int got = reader_step(rd);

		if (got < 0)
			break;
		if (got == 0) {
			if (atomic_load(&rd->stop) && rd->cursor >= atomic_load(&rd->target))
				break;
			usleep(2000);
		}
	}
	return NULL;
}

static void reader_start(struct reader *rd, long long from)
{
	memset(rd, 0, sizeof(*rd));
	rd->cursor = from;
	assert_int_equal(pthread_create(&rd->thread, NULL, reader_run, rd), 0);
}

/* Let the reader catch up with every event now committed, then check it saw
 * each exactly once, in seq order: exactly the table's events after from. */
static void reader_finish(struct reader *rd, long long from)
{
	char a[24], b[24];
	const char *p[2] = {a, b};
	long long to = max_seq();
	PGresult *r;
	size_t i;

	atomic_store(&rd->target, to);
	atomic_store(&rd->stop, 1);
	pthread_join(rd->thread, NULL);
	if (rd->error[0])
		fprintf(stderr, "it_events: reader: %s\n", rd->error);
	assert_string_equal(rd->error, "");
	snprintf(a, sizeof(a), "%lld", from);
	snprintf(b, sizeof(b), "%lld", rd->cursor);
	r = sql("SELECT seq, event_id::text FROM order_events WHERE seq > $1::bigint "
	        "AND seq <= $2::bigint ORDER BY seq",
	        2, p);
	fprintf(stderr, "it_events: the reader saw %zu events in %ld pages; the table has %d\n",
	        rd->n, rd->pages, PQntuples(r));
	for (i = 0; i < rd->n && (int)i < PQntuples(r); i++) {
		if (rd->seen[i].seq != strtoll(PQgetvalue(r, (int)i, 0), NULL, 10))
			fprintf(stderr,
			        "it_events: position %zu: the reader saw seq %lld, the table "
			        "has %s\n",
			        i, rd->seen[i].seq, PQgetvalue(r, (int)i, 0));
		assert_int_equal(rd->seen[i].seq, strtoll(PQgetvalue(r, (int)i, 0), NULL, 10));
		assert_string_equal(rd->seen[i].event_id, PQgetvalue(r, (int)i, 1));
	}
	assert_int_equal(rd->n, PQntuples(r));
	assert_true(rd->cursor >= to);
	PQclear(r);
}

/* ---- extra order consumers ---------------------------------------------------- */

struct extra {
	pid_t pid;
	int port;
	char log[1200];
};

static struct extra extras[EXTRA_CONSUMERS];

/* A socket connected to 127.0.0.1:port, or -1. */
static int loopback_connect(int port)
{
	struct sockaddr_in addr;
	int fd = socket(AF_INET, SOCK_STREAM, 0);

	if (fd < 0)
		return -1;
	memset(&addr, 0, sizeof(addr));
	addr.sin_family = AF_INET;
	addr.sin_port = htons((unsigned short)port);
	addr.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
	if (connect(fd, (struct sockaddr *)&addr, sizeof(addr)) != 0) {
		close(fd);
		return -1;
	}
	return fd;
}

static int port_open(int port)
{
	int fd = loopback_connect(port);

	if (fd < 0)
		return 0;
	close(fd);
	return 1;
}

/* 1 when GET /readyz on port answers 200. */
static int ready(int port)
{
	static const char req[] = "GET /readyz HTTP/1.0\r\nHost: 127.0.0.1\r\n\r\n";
	char buf[64] = "";
	int fd = loopback_connect(port), ok = 0;
	ssize_t n;

	if (fd < 0)
		return 0;
	if (send(fd, req, sizeof(req) - 1, MSG_NOSIGNAL) == (ssize_t)(sizeof(req) - 1)) {
		n = recv(fd, buf, sizeof(buf) - 1, 0);
		ok = n > 12 && strncmp(buf + 8, " 200", 4) == 0;
	}
	close(fd);
	return ok;
}

/* The build the stack runs (.local/run/build-dir) into out. */
static void stack_build(char *out, size_t n)
{
	char path[1200];
	FILE *f;

	snprintf(path, sizeof(path), "%s/.local/run/build-dir", root);
	f = fopen(path, "r");
	assert_non_null(f);
	assert_non_null(fgets(out, (int)n, f));
	fclose(f);
	out[strcspn(out, "\n")] = '\0';
}

/*
 * Start orders-order number k beside the stack's own, from the stack's
 * build, with this process's environment (test.sh exports .local/env) and
 * an ops port of its own within the stack's block; log in .local/log.
 */
static void extra_start(int k, int *next_port)
{
	struct extra *x = &extras[k];
	char build[1024], bin[1200], port[16];
	const char *http = getenv("ORDERS_HTTP_PORT");
	int offset = (http ? atoi(http) : 8080) - 8080, last = 9101 + offset * 10 + 9, fd;

	stack_build(build, sizeof(build));
	snprintf(bin, sizeof(bin), "%s/consumers/orders-order", build);
	assert_int_equal(access(bin, X_OK), 0);
	while (*next_port <= last && port_open(*next_port))
		(*next_port)++;
	assert_true(*next_port <= last);
	x->port = (*next_port)++;
	snprintf(x->log, sizeof(x->log), "%s/.local/log/orders-order-events%d.log", root, k + 1);
	snprintf(port, sizeof(port), "%d", x->port);
	x->pid = fork();
	assert_true(x->pid >= 0);
	if (x->pid == 0) {
		fd = open(x->log, O_WRONLY | O_CREAT | O_TRUNC, 0644);
		if (fd < 0 || dup2(fd, 1) < 0 || dup2(fd, 2) < 0 || chdir(root) != 0)
			_exit(127);
		setenv("ORDERS_METRICS_PORT", port, 1);
		execl(bin, "orders-order", (char *)NULL);
		_exit(127);
	}
}

static void extras_wait_ready(void)
{
	double start = e2e_now_ms();
	int k, all;

	do {
		all = 1;
		for (k = 0; k < EXTRA_CONSUMERS; k++) {
			assert_int_equal(waitpid(extras[k].pid, NULL, WNOHANG), 0);
			all = all && ready(extras[k].port);
		}
		if (!all)
			usleep(200000);
	} while (!all && e2e_now_ms() - start < 30000);
	assert_true(all);
}

/* SIGTERM, 10 s, then SIGKILL; the exit status, or -1 when it had to be killed. */
static int extra_stop(struct extra *x)
{
	double start = e2e_now_ms();
	int status = 0;

	if (x->pid <= 0)
		return 0;
	kill(x->pid, SIGTERM);
	while (waitpid(x->pid, &status, WNOHANG) == 0) {
		if (e2e_now_ms() - start > 10000) {
			kill(x->pid, SIGKILL);
			waitpid(x->pid, &status, 0);
			x->pid = 0;
			return -1;
		}
		usleep(50000);
	}
	x->pid = 0;
	return WIFEXITED(status) ? WEXITSTATUS(status) : -1;
}

static void extras_stop_all(void)
{
	int k;

	for (k = 0; k < EXTRA_CONSUMERS; k++)
		extra_stop(&extras[k]);
}

/* How many messages the consumer logging to file processed. */
static int processed_in(const char *file)
{
	char line[4096];
	FILE *f = fopen(file, "r");
	int n = 0;

	if (!f)
		return 0;
	while (fgets(line, sizeof(line), f))
		if (strstr(line, "\"message processed\""))
			n++;
	fclose(f);
	return n;
}

/* ---- tests: contract ------------------------------------------------------------ */

static void expect_status(const char *method, const char *target, const char *auth, int want,
                          const char *code, const char *field)
{
	const char *h[] = {auth, NULL};
	struct http_response r;
	json_t *j, *err;

	assert_int_equal(http_request(method, target, h, NULL, 0, &r), 0);
	if (r.status != want)
		fprintf(stderr, "%s %s answered %d, want %d: %s\n", method, target, r.status, want,
		        r.body);
	assert_int_equal(r.status, want);
	if (code) {
		j = http_json(&r);
		assert_non_null(j);
		err = json_object_get(j, "error");
		assert_string_equal(json_string_value(json_object_get(err, "code")), code);
		if (field)
			assert_string_equal(json_string_value(json_object_get(err, "field")),
			                    field);
		json_decref(j);
	}
	http_response_release(&r);
}

static void test_auth(void **state)
{
	static const char *const targets[] = {"/v1/order-events",
	                                      "/v1/reconciliation?date=2026-01-01"};
	size_t i;
	(void)state;

	for (i = 0; i < 2; i++) {
		expect_status("GET", targets[i], NULL, 401, "unauthorized", NULL);
		expect_status("GET", targets[i], "Authorization: Bearer nope", 401, "unauthorized",
		              NULL);
		expect_status("GET", targets[i], E2E_CLIENT, 403, "forbidden", NULL);
		expect_status("GET", targets[i], E2E_FINANCE, 200, NULL, NULL);
		expect_status("GET", targets[i], E2E_ADMIN, 200, NULL, NULL);
		expect_status("POST", targets[i], E2E_FINANCE, 405, "method_not_allowed", NULL);
	}
}

static void test_validation(void **state)
{
	static const struct {
		const char *query, *field;
	} bad[] = {
	    {"after=-1", "after"},
	    {"after=", "after"},
	    {"after=abc", "after"},
	    {"after=1.5", "after"},
	    {"after=+1", "after"},
	    {"after=9223372036854775808", "after"},
	    {"limit=0", "limit"},
	    {"limit=1001", "limit"},
	    {"limit=", "limit"},
	    {"limit=ten", "limit"},
	    {"types=", "types"},
	    {"types=order.shipped", "types"},
	    {"types=order.confirmed,", "types"},
	    {"types=order.confirmed,,order.expired", "types"},
	    {"types=ORDER.CONFIRMED", "types"},
	};
	static const char *const bad_dates[] = {
	    "",
	    "?date=",
	    "?date=2026-02-30",
	    "?date=2025-02-29",
	    "?date=2026-13-01",
	    "?date=26-01-01",
	    "?date=2026-1-01",
	    "?date=0000-01-01",
	    "?date=2026-01-01x",
	    "?date=2026/01/01",
	};
	char target[128];
	size_t i;
	(void)state;

	for (i = 0; i < sizeof(bad) / sizeof(bad[0]); i++) {
		snprintf(target, sizeof(target), "/v1/order-events?%s", bad[i].query);
		expect_status("GET", target, E2E_FINANCE, 422, "validation_error", bad[i].field);
	}
	for (i = 0; i < sizeof(bad_dates) / sizeof(bad_dates[0]); i++) {
		snprintf(target, sizeof(target), "/v1/reconciliation%s", bad_dates[i]);
		expect_status("GET", target, E2E_FINANCE, 422, "validation_error", "date");
	}
	/* The edges that are fine. */
	expect_status("GET", "/v1/order-events?limit=1", E2E_FINANCE, 200, NULL, NULL);
	expect_status("GET", "/v1/order-events?limit=1000&after=0", E2E_FINANCE, 200, NULL, NULL);
	expect_status("GET", "/v1/order-events?after=9223372036854775807", E2E_FINANCE, 200, NULL,
	              NULL);
	expect_status("GET", "/v1/order-events?types=order.expired,order.expired", E2E_FINANCE, 200,
	              NULL, NULL);
	expect_status("GET", "/v1/reconciliation?date=2024-02-29", E2E_FINANCE, 200, NULL, NULL);
}

/* An empty page hands the cursor back, in JSON and in CSV. */
static void test_empty_page(void **state)
{
	long long after = max_seq() + 1000000;
	struct http_response r;
	char target[128], next[32];
	json_t *j;
	(void)state;

	j = page(after, 10, NULL);
	assert_int_equal(json_array_size(json_object_get(j, "events")), 0);
	assert_int_equal(json_integer_value(json_object_get(j, "next_after")), after);
	json_decref(j);
	snprintf(target, sizeof(target), "/v1/order-events?after=%lld", after);
	assert_int_equal(feed_get(target, 1, &r), 0);
	assert_int_equal(r.status, 200);
	assert_string_equal(r.body, CSV_HEADER "\r\n");
	assert_int_equal(http_header(&r, "X-Next-After", next, sizeof(next)), 0);
	assert_int_equal(strtoll(next, NULL, 10), after);
	http_response_release(&r);
}

/* ---- tests: the gap-free guarantee ----------------------------------------------- */

/* Wait until c's pending query has answered (its result, or NULL after timeout_ms). */
static PGresult *await_result(PGconn *c, int timeout_ms)
{
	double start = e2e_now_ms();

	while (e2e_now_ms() - start < timeout_ms) {
		assert_int_equal(PQconsumeInput(c), 1);
		if (!PQisBusy(c))
			return PQgetResult(c);
		usleep(5000);
	}
	return NULL;
}

static void drain_results(PGconn *c)
{
	PGresult *r;

	while ((r = PQgetResult(c)))
		PQclear(r);
}

/* Whether the reader, paging from *cursor now, gets seq (and advances the cursor). */
static int reader_gets(long long *cursor, long long seq)
{
	json_t *j = page(*cursor, 1000, NULL), *e;
	size_t i;
	int found = 0;

	json_array_foreach(json_object_get(j, "events"), i, e)
	{
		assert_true(ev_seq(e) > *cursor);
		found = found || ev_seq(e) == seq;
	}
	*cursor = json_integer_value(json_object_get(j, "next_after"));
	json_decref(j);
	return found;
}

/*
 * The interleaving that breaks a plain sequence, first on a scratch table
 * with one (to show the reader would skip), then on order_events:
 * transaction A writes its event, B writes one after it, B is to commit
 * before A, and a reader pages in between.
 */
static void test_adversarial(void **state)
{
	PGconn *a = connect_pg(), *b = connect_pg();
	char oa[IDS_UUID_LEN + 1], ob[IDS_UUID_LEN + 1], table[64], q[256], pid[16];
	const char *p[1] = {pid};
	long long sa = 0, sb, cursor, before;
	PGresult *r;
	(void)state;

	assert_non_null(a);
	assert_non_null(b);

	/* A plain bigserial: B commits 2 while A still holds 1; a cursor at 2 misses 1. */
	snprintf(table, sizeof(table), "it_events_scratch_%d", (int)getpid());
	snprintf(q, sizeof(q), "CREATE TABLE %s (seq bigserial PRIMARY KEY)", table);
	PQclear(sql(q, 0, NULL));
	snprintf(q, sizeof(q), "INSERT INTO %s DEFAULT VALUES RETURNING seq", table);
	assert_true(exec_ok(a, "BEGIN", 0, NULL, NULL) && exec_ok(a, q, 0, NULL, &r));
	PQclear(r);
	assert_true(exec_ok(b, "BEGIN", 0, NULL, NULL) && exec_ok(b, q, 0, NULL, &r));
	PQclear(r);
	assert_true(exec_ok(b, "COMMIT", 0, NULL, NULL));
	snprintf(q, sizeof(q), "SELECT coalesce(max(seq), 0) FROM %s", table);
	cursor = sql_ll(q, 0, NULL);
	assert_int_equal(cursor, 2);
	assert_true(exec_ok(a, "COMMIT", 0, NULL, NULL));
	snprintf(q, sizeof(q), "SELECT count(*) FROM %s WHERE seq <= 2", table);
	assert_int_equal(sql_ll(q, 0, NULL), 2); /* seq 1 is there, below the cursor: skipped */
	snprintf(q, sizeof(q), "DROP TABLE %s", table);
	PQclear(sql(q, 0, NULL));

	/* order_events: the same moves. */
	assert_true(make_order(a, "c,\"adv\"\nA", "USD", oa));
	assert_true(make_order(b, "c-adv-B", "EUR", ob));
	before = max_seq();
	cursor = before;
	assert_true(exec_ok(a, "BEGIN", 0, NULL, NULL));
	assert_true(insert_event(a, oa, "order.confirmed", "c,\"adv\"\nA", "USD", &sa));
	assert_true(exec_ok(b, "BEGIN", 0, NULL, NULL));
	{
		char event_id[IDS_UUID_LEN + 1];
		const char *pb[7] = {event_id, "order.expired", ob,        "c-adv-B",
		                     "EUR",    "300",           items_json};

		ids_uuid4(event_id);
		assert_int_equal(PQsendQueryParams(b, event_sql, 7, NULL, pb, NULL, NULL, 0), 1);
	}
	/* B cannot even draw its seq, let alone commit, while A is open: it waits on the lock. */
	assert_null(await_result(b, 500));
	snprintf(pid, sizeof(pid), "%d", PQbackendPID(b));
	r = sql("SELECT wait_event_type || ':' || wait_event FROM pg_stat_activity WHERE pid = "
	        "$1::int",
	        1, p);
	assert_int_equal(PQntuples(r), 1);
	assert_string_equal(PQgetvalue(r, 0, 0), "Lock:advisory");
	PQclear(r);
	/* A reader in between sees neither. */
	assert_false(reader_gets(&cursor, sa));
	assert_true(cursor < sa);
	/* A commits: the reader gets A; B now has its seq, after A's, and is not visible yet. */
	assert_true(exec_ok(a, "COMMIT", 0, NULL, NULL));
	r = await_result(b, 10000);
	assert_non_null(r);
	assert_int_equal(PQresultStatus(r), PGRES_TUPLES_OK);
	sb = strtoll(PQgetvalue(r, 0, 0), NULL, 10);
	PQclear(r);
	drain_results(b);
	assert_true(sb > sa);
	assert_true(reader_gets(&cursor, sa));
	assert_true(cursor < sb);
	/* B commits: the reader gets B. */
	assert_true(exec_ok(b, "COMMIT", 0, NULL, NULL));
	while (cursor < sb)
		if (reader_gets(&cursor, sb))
			break;
	assert_true(cursor >= sb);
	PQfinish(a);
	PQfinish(b);
}

struct writer {
	int index;
	long long committed;
	int rolled_back;
	char error[256];
	pthread_t thread;
};

/*
 * SQL_TXNS transactions, each: an order row, a random pause, the event (the
 * table's trigger takes the feed's lock and draws seq), another pause with
 * the lock held, then COMMIT, or ROLLBACK for one in ROLLBACK_EVERY (a hole).
 */
static void *writer_run(void *arg)
{
	struct writer *w = arg;
	PGconn *c = connect_pg();
	unsigned seed = (unsigned)(w->index * 7919 + getpid());
	char order_id[IDS_UUID_LEN + 1], customer[32];
	long long seq;
	int i;

	if (!c) {
		snprintf(w->error, sizeof(w->error), "cannot connect");
		return NULL;
	}
	snprintf(customer, sizeof(customer), "c-writer-%d", w->index);
	for (i = 0; i < SQL_TXNS; i++) {
		int rollback = rand_r(&seed) % ROLLBACK_EVERY == 0;

		if (!exec_ok(c, "BEGIN", 0, NULL, NULL) ||
		    !make_order(c, customer, i % 3 ? "USD" : "EUR", order_id)) {
			snprintf(w->error, sizeof(w->error), "cannot begin transaction %d", i);
			break;
		}
		usleep((useconds_t)(rand_r(&seed) % 2000));
		if (!insert_event(c, order_id, i % 2 ? "order.confirmed" : "order.payment_failed",
		                  customer, i % 3 ? "USD" : "EUR", &seq)) {
			snprintf(w->error, sizeof(w->error), "cannot insert event %d", i);
			break;
		}
		usleep((useconds_t)(rand_r(&seed) % 3000));
		if (!exec_ok(c, rollback ? "ROLLBACK" : "COMMIT", 0, NULL, NULL)) {
			snprintf(w->error, sizeof(w->error), "cannot end transaction %d", i);
			break;
		}
		if (rollback)
			w->rolled_back++;
		else
			w->committed++;
	}
	PQfinish(c);
	return NULL;
}

/* Interleaved writers straight through SQL, a reader paging all along. */
static void test_concurrent_sql_writers(void **state)
{
	struct writer w[SQL_WRITERS];
	struct reader *rd = calloc(1, sizeof(*rd));
	long long from = max_seq(), committed = 0;
	int i, rolled_back = 0;
	(void)state;

	assert_non_null(rd);
	reader_start(rd, from);
	for (i = 0; i < SQL_WRITERS; i++) {
		memset(&w[i], 0, sizeof(w[i]));
		w[i].index = i;
		assert_int_equal(pthread_create(&w[i].thread, NULL, writer_run, &w[i]), 0);
	}
	for (i = 0; i < SQL_WRITERS; i++) {
		pthread_join(w[i].thread, NULL);
		if (w[i].error[0])
			fprintf(stderr, "it_events: writer %d: %s\n", i, w[i].error);
		assert_string_equal(w[i].error, "");
		committed += w[i].committed;
		rolled_back += w[i].rolled_back;
	}
	reader_finish(rd, from);
	fprintf(stderr, "it_events: %lld events committed, %d rolled back (holes in seq)\n",
	        committed, rolled_back);
	/* Everything the writers committed was seen (others may have written too). */
	assert_true((long long)rd->n >= committed);
	free(rd->seen);
	free(rd);
}

/* ---- tests: the real consumers ----------------------------------------------------- */

struct burst {
	atomic_int next;
	char order_id[BURST][IDS_UUID_LEN + 1];
	int status[BURST];
	char sku_small[64], sku_big[64];
};

static void *burst_run(void *arg)
{
	static const char *const cards[] = {"4242424242424242", "5555555555554444",
	                                    "4000000000000002", "4000000000009995"};
	struct burst *b = arg;
	struct http_response r;
	char body[1024], idem[96];
	int i, attempt;

	while ((i = atomic_fetch_add(&b->next, 1)) < BURST) {
		e2e_checkout_body(body, sizeof(body), i % 3 == 0 ? b->sku_small : b->sku_big,
		                  1 + i % 2, cards[i % 4]);
		snprintf(idem, sizeof(idem), "it-events-%s-%d", run_id, i);
		for (attempt = 0; attempt < 20; attempt++) {
			if (e2e_post_checkout(idem, body, &r) != 0) {
				usleep(100000);
				continue;
			}
			b->status[i] = r.status;
			if (r.status == 202) {
				json_t *j = http_json(&r);

				if (j)
					snprintf(b->order_id[i], sizeof(b->order_id[i]), "%s",
					         json_string_value(json_object_get(j, "order_id")));
				json_decref(j);
			}
			http_response_release(&r);
			if (b->status[i] != 503 && b->status[i] != 429)
				break;
			usleep(200000);
		}
	}
	return NULL;
}

/* The published events, by event id: seq and type, or 0 when not seen. */
struct published {
	char event_id[IDS_UUID_LEN + 1];
	long long seq;
	char type[24];
	char order_id[IDS_UUID_LEN + 1];
};

/* Take every message the watcher has (waiting up to wait_ms for the next). */
static size_t drain_watch(amqp_connection_state_t c, struct published **list, size_t *n,
                          size_t *cap, int wait_ms)
{
	size_t got = 0;

	for (;;) {
		struct timeval tv = {wait_ms / 1000, (wait_ms % 1000) * 1000};
		amqp_envelope_t env;
		amqp_rpc_reply_t rep;
		Orders__OrderEvent *ev;

		amqp_maybe_release_buffers(c);
		rep = amqp_consume_message(c, &env, &tv, 0);
		if (rep.reply_type != AMQP_RESPONSE_NORMAL)
			break;
		ev =
		    orders__order_event__unpack(NULL, env.message.body.len, env.message.body.bytes);
		if (ev) {
			if (*n == *cap) {
				*cap = *cap ? *cap * 2 : 1024;
				*list = realloc(*list, *cap * sizeof(**list));
				assert_non_null(*list);
			}
			snprintf((*list)[*n].event_id, sizeof((*list)[*n].event_id), "%s",
			         ev->event_id);
			snprintf((*list)[*n].type, sizeof((*list)[*n].type), "%s", ev->type);
			snprintf((*list)[*n].order_id, sizeof((*list)[*n].order_id), "%s",
			         ev->envelope && ev->envelope->order_id ? ev->envelope->order_id
			                                                : "");
			(*list)[*n].seq = ev->seq;
			(*n)++;
			/* The routing key is the type. */
			assert_int_equal(env.routing_key.len, strlen(ev->type));
			assert_memory_equal(env.routing_key.bytes, ev->type, env.routing_key.len);
			orders__order_event__free_unpacked(ev, NULL);
			got++;
		}
		amqp_destroy_envelope(&env);
	}
	return got;
}

static const struct published *find_published(const struct published *list, size_t n,
                                              const char *event_id)
{
	size_t i;

	for (i = 0; i < n; i++)
		if (strcmp(list[i].event_id, event_id) == 0)
			return &list[i];
	return NULL;
}

/*
 * A burst of checkouts through the API and three order-consumers (the
 * stack's and two more) while a reader pages the feed: it sees every event
 * once, in seq order, and each of the burst's events is the one published to
 * the exchange order-events, with the same seq and event id.
 */
static void test_consumers_burst(void **state)
{
	struct burst *b = calloc(1, sizeof(*b));
	struct reader *rd = calloc(1, sizeof(*rd));
	pthread_t t[BURST_THREADS];
	amqp_connection_state_t watch;
	struct published *pub = NULL;
	size_t npub = 0, cappub = 0, i, j;
	char ids[BURST * (IDS_UUID_LEN + 3) + 3];
	const char *p[1] = {ids};
	long long from;
	int k, next_port, matched = 0;
	const char *http = getenv("ORDERS_HTTP_PORT");
	double start;
	(void)state;

	assert_non_null(b);
	assert_non_null(rd);
	next_port = 9101 + ((http ? atoi(http) : 8080) - 8080) * 10 + 5;
	for (k = 0; k < EXTRA_CONSUMERS; k++)
		extra_start(k, &next_port);
	extras_wait_ready();

	snprintf(b->sku_small, sizeof(b->sku_small), "EV-S-%s", run_id);
	snprintf(b->sku_big, sizeof(b->sku_big), "EV-B-%s", run_id);
	e2e_put_product(b->sku_small, 15, 700);
	e2e_put_product(b->sku_big, 100000, 1100);
	watch = e2e_events_watch();
	from = max_seq();
	reader_start(rd, from);
	for (k = 0; k < BURST_THREADS; k++)
		assert_int_equal(pthread_create(&t[k], NULL, burst_run, b), 0);
	for (k = 0; k < BURST_THREADS; k++)
		pthread_join(t[k], NULL);
	snprintf(ids, sizeof(ids), "{");
	for (i = 0; i < BURST; i++) {
		if (b->status[i] != 202)
			fprintf(stderr, "it_events: checkout %zu answered %d\n", i, b->status[i]);
		assert_int_equal(b->status[i], 202);
		snprintf(ids + strlen(ids), sizeof(ids) - strlen(ids), "%s\"%s\"", i ? "," : "",
		         b->order_id[i]);
	}
	snprintf(ids + strlen(ids), sizeof(ids) - strlen(ids), "}");

	/* Every order of the burst gets its one event. */
	start = e2e_now_ms();
	while (sql_ll("SELECT count(*) FROM order_events WHERE order_id = ANY ($1::uuid[])", 1, p) <
	       BURST) {
		assert_true(e2e_now_ms() - start < WAIT_MS);
		usleep(200000);
	}
	reader_finish(rd, from);

	/* Each order's event, in the feed: one, of its final status's type. */
	{
		PGresult *r = sql("SELECT o.order_id::text, 'order.' || o.status FROM orders o "
		                  "WHERE o.order_id = ANY ($1::uuid[])",
		                  1, p);

		assert_int_equal(PQntuples(r), BURST);
		for (k = 0; k < BURST; k++) {
			int found = 0;

			for (i = 0; i < rd->n; i++) {
				if (strcmp(rd->seen[i].order_id, PQgetvalue(r, k, 0)) != 0)
					continue;
				found++;
				assert_string_equal(rd->seen[i].type, PQgetvalue(r, k, 1));
			}
			assert_int_equal(found, 1);
		}
		PQclear(r);
	}

	/* And published with the same seq, event id and type. */
	start = e2e_now_ms();
	for (;;) {
		drain_watch(watch, &pub, &npub, &cappub, 500);
		matched = 0;
		for (i = 0; i < rd->n; i++) {
			for (j = 0; j < BURST; j++)
				if (strcmp(rd->seen[i].order_id, b->order_id[j]) == 0)
					break;
			if (j < BURST && find_published(pub, npub, rd->seen[i].event_id))
				matched++;
		}
		if (matched == BURST || e2e_now_ms() - start > 30000)
			break;
	}
	fprintf(stderr, "it_events: %zu events published meanwhile; %d of the burst's %d matched\n",
	        npub, matched, BURST);
	assert_int_equal(matched, BURST);
	for (i = 0; i < npub; i++) {
		/* Every message (republications too) agrees with the feed. */
		for (j = 0; j < rd->n; j++)
			if (strcmp(rd->seen[j].event_id, pub[i].event_id) == 0)
				break;
		if (j == rd->n)
			continue; /* another test's, from before this one */
		assert_int_equal(pub[i].seq, rd->seen[j].seq);
		assert_string_equal(pub[i].type, rd->seen[j].type);
		assert_string_equal(pub[i].order_id, rd->seen[j].order_id);
	}
	e2e_amqp_close(watch);

	/* The extra consumers took part, and stop cleanly. */
	for (k = 0; k < EXTRA_CONSUMERS; k++) {
		int n = processed_in(extras[k].log);

		fprintf(stderr, "it_events: extra order-consumer %d processed %d messages\n", k + 1,
		        n);
		assert_true(n > 0);
		assert_int_equal(extra_stop(&extras[k]), 0);
	}
	free(pub);
	free(rd->seen);
	free(rd);
	free(b);
}

/* ---- tests: filters, limits, CSV ------------------------------------------------------- */

/* The CSV page for target equals the JSON page j, field by field. */
static void expect_csv_matches(const char *target, json_t *j)
{
	static const char *const cols[] = {"seq",         "event_id",    "type",
	                                   "order_id",    "customer_id", "currency",
	                                   "total_cents", "items",       "occurred_at"};
	struct http_response r;
	char ct[64], next[32], num[32];
	struct csv c;
	json_t *events = json_object_get(j, "events"), *e;
	size_t i, k;

	assert_int_equal(feed_get(target, 1, &r), 0);
	assert_int_equal(r.status, 200);
	assert_int_equal(http_header(&r, "Content-Type", ct, sizeof(ct)), 0);
	assert_string_equal(ct, "text/csv; charset=utf-8");
	assert_int_equal(http_header(&r, "X-Next-After", next, sizeof(next)), 0);
	assert_int_equal(strtoll(next, NULL, 10),
	                 json_integer_value(json_object_get(j, "next_after")));
	assert_int_equal(csv_parse(r.body, &c), 0);
	assert_int_equal(c.nrows, json_array_size(events) + 1);
	assert_int_equal(c.nfields[0], 9);
	for (k = 0; k < 9; k++)
		assert_string_equal(c.rows[0][k], cols[k]);
	json_array_foreach(events, i, e)
	{
		char **row = c.rows[i + 1];
		json_t *items;

		assert_int_equal(c.nfields[i + 1], 9);
		snprintf(num, sizeof(num), "%lld", ev_seq(e));
		assert_string_equal(row[0], num);
		for (k = 1; k < 6; k++) {
			if (!csv_shows(row[k], ev_str(e, cols[k])))
				fail_msg("CSV '%s' for %s '%s'", row[k], cols[k],
				         ev_str(e, cols[k]));
		}
		snprintf(num, sizeof(num), "%lld",
		         (long long)json_integer_value(json_object_get(e, "total_cents")));
		assert_string_equal(row[6], num);
		items = json_loads(row[7], 0, NULL);
		assert_non_null(items);
		assert_true(json_equal(items, json_object_get(e, "items")));
		json_decref(items);
		assert_string_equal(row[8], ev_str(e, "occurred_at"));
	}
	csv_free(&c);
	http_response_release(&r);
}

/* The events the table has for (after, limit, types) up to `to`, as the feed shows them. */
static json_t *table_page(long long after, int limit, const char *types, long long to)
{
	char a[24], l[16], t[24], arr[160];
	const char *p[4] = {a, l, types ? arr : NULL, t};
	PGresult *r;
	json_t *out = json_array();
	int i;

	snprintf(a, sizeof(a), "%lld", after);
	snprintf(l, sizeof(l), "%d", limit);
	snprintf(t, sizeof(t), "%lld", to);
	snprintf(arr, sizeof(arr), "{%s}", types ? types : "");
	r = sql(
	    "SELECT json_build_object('seq', seq, 'event_id', event_id, 'type', type, "
	    "'order_id', order_id, 'customer_id', customer_id, 'currency', currency, "
	    "'total_cents', total_cents, 'items', items, 'occurred_at', "
	    "to_char(occurred_at AT TIME ZONE 'UTC', 'YYYY-MM-DD\"T\"HH24:MI:SS.MS\"Z\"'))::text "
	    "FROM order_events WHERE seq > $1::bigint AND seq <= $4::bigint "
	    "AND ($3::text[] IS NULL OR type = ANY ($3::text[])) ORDER BY seq LIMIT $2::int",
	    4, p);
	for (i = 0; i < PQntuples(r); i++)
		json_array_append_new(out, json_loads(PQgetvalue(r, i, 0), 0, NULL));
	PQclear(r);
	return out;
}

static void test_filters_limits_csv(void **state)
{
	static const char *const filters[] = {"order.confirmed,order.payment_failed",
	                                      "order.expired", "order.rejected,order.confirmed",
	                                      NULL};
	long long top = max_seq(), after = top > 300 ? top - 300 : 0;
	char target[256];
	json_t *j, *want, *e;
	size_t f, i;
	(void)state;

	for (f = 0; f < sizeof(filters) / sizeof(filters[0]); f++) {
		j = page(after, 50, filters[f]);
		want = table_page(after, 50, filters[f],
		                  json_integer_value(json_object_get(j, "next_after")));
		/* The page is exactly the table's events it covers, field for field. */
		assert_true(json_equal(json_object_get(j, "events"), want));
		json_array_foreach(json_object_get(j, "events"), i, e)
		{
			assert_true(!filters[f] || strstr(filters[f], ev_str(e, "type")));
		}
		snprintf(target, sizeof(target), "/v1/order-events?after=%lld&limit=50%s%s", after,
		         filters[f] ? "&types=" : "", filters[f] ? filters[f] : "");
		expect_csv_matches(target, j);
		json_decref(want);
		json_decref(j);
	}
	/* Limits: 1 gives one event; 1000 at most 1000, every event up to next_after. */
	j = page(0, 1, NULL);
	assert_int_equal(json_array_size(json_object_get(j, "events")), 1);
	json_decref(j);
	j = page(0, 1000, NULL);
	snprintf(target, sizeof(target), "%lld",
	         (long long)json_integer_value(json_object_get(j, "next_after")));
	assert_true(json_array_size(json_object_get(j, "events")) <= 1000);
	assert_int_equal(json_array_size(json_object_get(j, "events")),
	                 sql_ll("SELECT count(*) FROM order_events WHERE seq <= $1::bigint", 1,
	                        (const char *const[]){target}));
	json_decref(j);
	/* The hand-made events with a comma, quotes and a line break survive CSV. */
	{
		long long seq = sql_ll("SELECT coalesce(max(seq), 0) FROM order_events "
		                       "WHERE customer_id = $1",
		                       1, (const char *const[]){"c,\"adv\"\nA"});

		assert_true(seq > 0);
		j = page(seq - 1, 1, NULL);
		assert_string_equal(
		    ev_str(json_array_get(json_object_get(j, "events"), 0), "customer_id"),
		    "c,\"adv\"\nA");
		snprintf(target, sizeof(target), "/v1/order-events?after=%lld&limit=1", seq - 1);
		expect_csv_matches(target, j);
		json_decref(j);
	}
	/* Accept: CSV only when preferred. */
	{
		const char *h[] = {E2E_FINANCE, "Accept: application/json, text/csv;q=0.5", NULL};
		const char *h2[] = {E2E_FINANCE, "Accept: text/csv, */*", NULL};
		struct http_response r;
		char ct[64];

		assert_int_equal(http_request("GET", "/v1/order-events?limit=1", h, NULL, 0, &r),
		                 0);
		assert_int_equal(http_header(&r, "Content-Type", ct, sizeof(ct)), 0);
		assert_string_equal(ct, "application/json");
		http_response_release(&r);
		assert_int_equal(http_request("GET", "/v1/order-events?limit=1", h2, NULL, 0, &r),
		                 0);
		assert_int_equal(http_header(&r, "Content-Type", ct, sizeof(ct)), 0);
		assert_string_equal(ct, "text/csv; charset=utf-8");
		http_response_release(&r);
	}
}

/* ---- tests: reconciliation ----------------------------------------------------------- */

struct day_sums {
	char currency[4];
	long long confirmed, confirmed_total, rejected, payment_failed, expired;
};

static void test_reconciliation(void **state)
{
	struct day_sums sums[32];
	size_t nsums = 0, i, k;
	struct http_response r;
	char target[64], date[11];
	long long last_seq, cursor = 0;
	json_t *rec, *c, *j, *e;
	time_t now = time(NULL);
	struct tm tm;
	(void)state;

	gmtime_r(&now, &tm);
	strftime(date, sizeof(date), "%Y-%m-%d", &tm);
	snprintf(target, sizeof(target), "/v1/reconciliation?date=%s", date);
	assert_int_equal(feed_get(target, 0, &r), 0);
	assert_int_equal(r.status, 200);
	rec = http_json(&r);
	http_response_release(&r);
	assert_non_null(rec);
	assert_string_equal(json_string_value(json_object_get(rec, "date")), date);
	last_seq = json_integer_value(json_object_get(rec, "last_seq"));
	assert_true(last_seq > 0);

	/* The same figures, summed from the feed up to last_seq. */
	memset(sums, 0, sizeof(sums));
	while (cursor < last_seq) {
		j = page(cursor, 1000, NULL);
		assert_true(json_array_size(json_object_get(j, "events")) > 0);
		json_array_foreach(json_object_get(j, "events"), i, e)
		{
			const char *type = ev_str(e, "type");

			if (ev_seq(e) > last_seq ||
			    strncmp(ev_str(e, "occurred_at"), date, 10) != 0)
				continue;
			for (k = 0; k < nsums; k++)
				if (strcmp(sums[k].currency, ev_str(e, "currency")) == 0)
					break;
			if (k == nsums) {
				assert_true(nsums < sizeof(sums) / sizeof(sums[0]));
				snprintf(sums[nsums++].currency, 4, "%s", ev_str(e, "currency"));
			}
			if (strcmp(type, "order.confirmed") == 0) {
				sums[k].confirmed++;
				sums[k].confirmed_total +=
				    json_integer_value(json_object_get(e, "total_cents"));
			} else if (strcmp(type, "order.rejected") == 0) {
				sums[k].rejected++;
			} else if (strcmp(type, "order.payment_failed") == 0) {
				sums[k].payment_failed++;
			} else {
				sums[k].expired++;
			}
		}
		cursor = json_integer_value(json_object_get(j, "next_after"));
		json_decref(j);
	}
	assert_int_equal(json_array_size(json_object_get(rec, "currencies")), nsums);
	json_array_foreach(json_object_get(rec, "currencies"), i, c)
	{
		const char *cur = json_string_value(json_object_get(c, "currency"));

		for (k = 0; k < nsums && strcmp(sums[k].currency, cur) != 0; k++)
			;
		assert_true(k < nsums);
		fprintf(stderr,
		        "it_events: %s %s: confirmed %lld (%lld cents), rejected %lld, "
		        "payment_failed %lld, expired %lld, up to seq %lld\n",
		        date, cur, sums[k].confirmed, sums[k].confirmed_total, sums[k].rejected,
		        sums[k].payment_failed, sums[k].expired, last_seq);
		assert_int_equal(json_integer_value(json_object_get(c, "confirmed_count")),
		                 sums[k].confirmed);
		assert_int_equal(json_integer_value(json_object_get(c, "confirmed_total_cents")),
		                 sums[k].confirmed_total);
		assert_int_equal(json_integer_value(json_object_get(c, "rejected_count")),
		                 sums[k].rejected);
		assert_int_equal(json_integer_value(json_object_get(c, "payment_failed_count")),
		                 sums[k].payment_failed);
		assert_int_equal(json_integer_value(json_object_get(c, "expired_count")),
		                 sums[k].expired);
	}
	/* Currencies come in order, and this run wrote both. */
	for (i = 1; i < json_array_size(json_object_get(rec, "currencies")); i++)
		assert_true(strcmp(json_string_value(json_object_get(
		                       json_array_get(json_object_get(rec, "currencies"), i - 1),
		                       "currency")),
		                   json_string_value(json_object_get(
		                       json_array_get(json_object_get(rec, "currencies"), i),
		                       "currency"))) < 0);
	assert_true(nsums >= 2);
	json_decref(rec);

	/* A day without events: no currency, the same kind of last_seq. */
	assert_int_equal(feed_get("/v1/reconciliation?date=2001-01-01", 0, &r), 0);
	assert_int_equal(r.status, 200);
	rec = http_json(&r);
	http_response_release(&r);
	assert_int_equal(json_array_size(json_object_get(rec, "currencies")), 0);
	assert_true(json_integer_value(json_object_get(rec, "last_seq")) >= last_seq);
	json_decref(rec);
}

/* ---- setup ------------------------------------------------------------------------ */

static void at_exit_stop(void)
{
	extras_stop_all();
}

static int group_setup(void **state)
{
	(void)state;
	dsn = getenv("ORDERS_PG_DSN");
	if (!dsn || !*dsn)
		dsn = DEFAULT_DSN;
	pg = connect_pg();
	if (!pg)
		return -1;
	snprintf(run_id, sizeof(run_id), "%lld-%d", (long long)time(NULL), (int)getpid());
	e2e_find_root(root, sizeof(root));
	http_set_timeout_ms(30000);
	atexit(at_exit_stop);
	return 0;
}

static int group_teardown(void **state)
{
	(void)state;
	extras_stop_all();
	PQfinish(pg);
	return 0;
}

int main(void)
{
	const struct CMUnitTest tests[] = {
	    cmocka_unit_test(test_auth),
	    cmocka_unit_test(test_validation),
	    cmocka_unit_test(test_empty_page),
	    cmocka_unit_test(test_adversarial),
	    cmocka_unit_test(test_concurrent_sql_writers),
	    cmocka_unit_test(test_consumers_burst),
	    cmocka_unit_test(test_filters_limits_csv),
	    cmocka_unit_test(test_reconciliation),
	};

	return cmocka_run_group_tests(tests, group_setup, group_teardown);
}
