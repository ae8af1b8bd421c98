/*
 * e2e.h: checkout helpers shared by the end-to-end tests that drive the API
 * over HTTP (include after cmocka.h). Each helper asserts what it needs, so
 * a test reads as the steps it takes.
 */
#ifndef ORDERS_TEST_E2E_H
#define ORDERS_TEST_E2E_H

#include <fcntl.h>
#include <limits.h>
#include <signal.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include <arpa/inet.h>
#include <netinet/in.h>

#include <amqp.h>
#include <amqp_tcp_socket.h>

#include "http_client.h"
#include "mq.h"

#define E2E_CLIENT "Authorization: Bearer dev-client"
#define E2E_ADMIN "Authorization: Bearer dev-admin"
#define E2E_JSON "Content-Type: application/json"
#define E2E_AMQP_URL "amqp://guest:guest@127.0.0.1:5682/"
#define E2E_AMQP_CHANNEL 1

/* Final statuses must arrive within this (the machine is shared and busy). */
#define E2E_FINAL_TIMEOUT_MS 30000

/*
 * The CVC every end-to-end checkout sends. Three digits occur everywhere,
 * so the card-leak search (no_card_leak.sh) looks for CVCs where they would
 * stand if one leaked: after a "cvc" key and inside a card record.
 */
#define E2E_CVC "737"

static inline double e2e_now_ms(void)
{
	struct timespec ts;

	clock_gettime(CLOCK_MONOTONIC, &ts);
	return ts.tv_sec * 1e3 + ts.tv_nsec / 1e6;
}

/* Milliseconds since the epoch (the clock the server's per-second windows use). */
static inline int64_t e2e_wall_ms(void)
{
	struct timespec ts;

	clock_gettime(CLOCK_REALTIME, &ts);
	return (int64_t)ts.tv_sec * 1000 + ts.tv_nsec / 1000000;
}

/* Sleep until ms into the next epoch second; returns that second. */
static inline int64_t e2e_next_window(int ms)
{
	int64_t now = e2e_wall_ms(), start = (now / 1000 + 1) * 1000 + ms;

	usleep((useconds_t)((start - now) * 1000));
	return start / 1000;
}

/*
 * The repository root into out (the stack's .local/ is there):
 * ORDERS_SOURCE_DIR, else where this file was compiled from, else ".".
 */
static inline void e2e_find_root(char *out, size_t n)
{
	const char *env = getenv("ORDERS_SOURCE_DIR");
	char *cut;

	if (env && *env) {
		snprintf(out, n, "%s", env);
		return;
	}
	snprintf(out, n, "%s", __FILE__);
	cut = strstr(out, "/tests/integration/");
	if (cut)
		*cut = '\0';
	else
		snprintf(out, n, ".");
}

/* The value of one series ("name{labels}") of the /metrics of the API on port
 * (0: the stack's); 0 when it is absent. */
static inline double e2e_metric(int port, const char *series)
{
	struct http_response r;
	char needle[256];
	const char *p;
	double v = 0;

	assert_int_equal(http_request_to(port, "GET", "/metrics", NULL, NULL, 0, &r), 0);
	assert_int_equal(r.status, 200);
	snprintf(needle, sizeof(needle), "\n%s ", series);
	p = strstr(r.body, needle);
	if (p)
		v = strtod(p + strlen(needle), NULL);
	http_response_release(&r);
	return v;
}

/* A TCP port on loopback that nothing listens on right now. */
static inline int e2e_free_port(void)
{
	struct sockaddr_in a;
	socklen_t len = sizeof(a);
	int fd = socket(AF_INET, SOCK_STREAM, 0), port;

	assert_true(fd >= 0);
	memset(&a, 0, sizeof(a));
	a.sin_family = AF_INET;
	a.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
	assert_int_equal(bind(fd, (struct sockaddr *)&a, sizeof(a)), 0);
	assert_int_equal(getsockname(fd, (struct sockaddr *)&a, &len), 0);
	port = ntohs(a.sin_port);
	close(fd);
	return port;
}

/* The orders-api binary to start: ORDERS_API_BIN when set, else the one the
 * stack runs (up.sh records its build directory). */
static inline void e2e_api_binary(const char *root, char *out, size_t n)
{
	const char *bin = getenv("ORDERS_API_BIN");
	char path[PATH_MAX + 32], dir[PATH_MAX];
	FILE *f;

	/* The ThreadSanitizer run of make test names its own build's. */
	if (bin && *bin) {
		snprintf(out, n, "%s", bin);
		assert_int_equal(access(out, X_OK), 0);
		return;
	}

	snprintf(path, sizeof(path), "%s/.local/run/build-dir", root);
	f = fopen(path, "r");
	assert_non_null(f);
	assert_non_null(fgets(dir, sizeof(dir), f));
	fclose(f);
	dir[strcspn(dir, "\n")] = '\0';
	snprintf(out, n, "%s/api/orders-api", dir);
	assert_int_equal(access(out, X_OK), 0);
}

static inline int e2e_ready_status(int port)
{
	struct http_response r;
	int status;

	if (http_request_to(port, "GET", "/readyz", NULL, NULL, 0, &r) != 0)
		return 0;
	status = r.status;
	http_response_release(&r);
	return status;
}

/*
 * One more orders-api beside the stack's: its binary, this process's
 * environment plus env (a NULL-terminated list of "NAME=value", may be
 * NULL), on a free port (*port), logging to .local/log/<log_name> beside
 * the others (make test looks there for sanitizer reports). Returns its pid
 * once /readyz answers 200; fails the test if it exits or is not ready
 * within 60 s. Stop it with e2e_api_stop().
 */
static inline pid_t e2e_api_start(const char *root, const char *log_name, const char *const *env,
                                  int *port)
{
	char bin[PATH_MAX + 16], log[PATH_MAX + 64], port_s[16];
	double start;
	pid_t pid;
	int fd;

	e2e_api_binary(root, bin, sizeof(bin));
	*port = e2e_free_port();
	snprintf(port_s, sizeof(port_s), "%d", *port);
	snprintf(log, sizeof(log), "%s/.local/log/%s", root, log_name);
	fd = open(log, O_WRONLY | O_CREAT | O_TRUNC, 0644);
	assert_true(fd >= 0);
	pid = fork();
	assert_true(pid >= 0);
	if (pid == 0) {
		dup2(fd, STDOUT_FILENO);
		dup2(fd, STDERR_FILENO);
		for (; env && *env; env++)
			putenv((char *)*env);
		setenv("ORDERS_HTTP_PORT", port_s, 1);
		execl(bin, bin, (char *)NULL);
		_exit(127);
	}
	close(fd);
	start = e2e_now_ms();
	while (e2e_ready_status(*port) != 200) {
		int st;

		if (waitpid(pid, &st, WNOHANG) == pid)
			fail_msg("the extra orders-api exited; see %s", log);
		if (e2e_now_ms() - start > 60000) {
			kill(pid, SIGKILL);
			waitpid(pid, &st, 0);
			fail_msg("the extra orders-api is not ready after 60 s; see %s", log);
		}
		usleep(100000);
	}
	return pid;
}

/* Stop an e2e_api_start() instance: SIGTERM, SIGKILL after 15 s. <= 0 is a no-op. */
static inline void e2e_api_stop(pid_t pid)
{
	int st, i;

	if (pid <= 0)
		return;
	kill(pid, SIGTERM);
	for (i = 0; i < 150; i++) {
		if (waitpid(pid, &st, WNOHANG) == pid)
			return;
		usleep(100000);
	}
	fprintf(stderr, "the extra orders-api (pid %d) ignored SIGTERM; killing it\n", (int)pid);
	kill(pid, SIGKILL);
	waitpid(pid, &st, 0);
}

static inline void e2e_put_product(const char *sku, int stock, int price)
{
	struct http_response r;
	const char *h[] = {E2E_ADMIN, E2E_JSON, NULL};
	char path[128], body[256];

	snprintf(path, sizeof(path), "/v1/products/%s", sku);
	snprintf(body, sizeof(body),
	         "{\"name\":\"Test %s\",\"price_cents\":%d,\"currency\":\"USD\",\"stock\":%d}", sku,
	         price, stock);
	assert_int_equal(http_request("PUT", path, h, body, strlen(body), &r), 0);
	assert_true(r.status == 200 || r.status == 201);
	http_response_release(&r);
}

static inline long e2e_available(const char *sku)
{
	struct http_response r;
	const char *h[] = {E2E_CLIENT, NULL};
	char path[128];
	json_t *j;
	long v;

	snprintf(path, sizeof(path), "/v1/products/%s", sku);
	assert_int_equal(http_request("GET", path, h, NULL, 0, &r), 0);
	assert_int_equal(r.status, 200);
	j = http_json(&r);
	assert_non_null(j);
	v = (long)json_integer_value(json_object_get(j, "available"));
	json_decref(j);
	http_response_release(&r);
	return v;
}

/* Wait until the served figure is want (the cache may lag by a second). */
static inline void e2e_wait_available(const char *sku, long want)
{
	double start = e2e_now_ms();
	long got;

	while ((got = e2e_available(sku)) != want) {
		if (e2e_now_ms() - start > 5000)
			fprintf(stderr, "%s: available %ld, want %ld\n", sku, got, want);
		assert_true(e2e_now_ms() - start < 5000);
		usleep(100000);
	}
}

static inline void e2e_checkout_body(char *out, size_t n, const char *sku, int qty,
                                     const char *card)
{
	snprintf(out, n,
	         "{\"items\":[{\"sku\":\"%s\",\"quantity\":%d}],\"currency\":\"USD\","
	         "\"customer\":{\"id\":\"c-42\",\"email\":\"ada@example.com\"},"
	         "\"shipping_address\":{\"name\":\"Ada\",\"line1\":\"1 Main St\","
	         "\"city\":\"Springfield\",\"postal_code\":\"12345\",\"country\":\"US\"},"
	         "\"payment\":{\"card\":{\"number\":\"%s\",\"exp_month\":12,"
	         "\"exp_year\":2030,\"cvc\":\"" E2E_CVC "\"}}}",
	         sku, qty, card);
}

static inline int e2e_post_checkout(const char *idem, const char *body, struct http_response *r)
{
	char idem_h[300];
	const char *h[] = {E2E_CLIENT, E2E_JSON, idem_h, NULL};

	snprintf(idem_h, sizeof(idem_h), "Idempotency-Key: %s", idem);
	return http_request("POST", "/v1/checkouts", h, body, strlen(body), r);
}

/*
 * Check out and return the order id (free it); when want_status is not NULL,
 * the 202's body must carry that status.
 */
static inline char *e2e_checkout_status(const char *idem, const char *body, const char *want_status)
{
	struct http_response r;
	json_t *j;
	char *id;

	assert_int_equal(e2e_post_checkout(idem, body, &r), 0);
	if (r.status != 202)
		fprintf(stderr, "checkout answered %d: %s\n", r.status, r.body);
	assert_int_equal(r.status, 202);
	j = http_json(&r);
	assert_non_null(j);
	if (want_status)
		assert_string_equal(json_string_value(json_object_get(j, "status")), want_status);
	id = strdup(json_string_value(json_object_get(j, "order_id")));
	assert_non_null(id);
	assert_int_equal(strlen(id), 36);
	json_decref(j);
	http_response_release(&r);
	return id;
}

/* Check out and return the order id (free it). */
static inline char *e2e_checkout_ok(const char *idem, const char *body)
{
	return e2e_checkout_status(idem, body, NULL);
}

static inline json_t *e2e_get_order(const char *id)
{
	struct http_response r;
	const char *h[] = {E2E_CLIENT, NULL};
	char path[96];
	json_t *j;

	snprintf(path, sizeof(path), "/v1/orders/%s", id);
	assert_int_equal(http_request("GET", path, h, NULL, 0, &r), 0);
	if (r.status != 200)
		fprintf(stderr, "GET %s answered %d: %s\n", path, r.status, r.body);
	assert_int_equal(r.status, 200);
	j = http_json(&r);
	assert_non_null(j);
	http_response_release(&r);
	return j;
}

static inline int e2e_is_final(const char *status)
{
	return strcmp(status, "confirmed") == 0 || strcmp(status, "rejected") == 0 ||
	       strcmp(status, "payment_failed") == 0 || strcmp(status, "expired") == 0;
}

/*
 * Wait up to timeout_ms for a final status; returns the order (decref it)
 * and, when elapsed_ms is not NULL, how long the wait took.
 */
static inline json_t *e2e_wait_final_timed(const char *id, double timeout_ms, double *elapsed_ms)
{
	double start = e2e_now_ms();

	for (;;) {
		json_t *j = e2e_get_order(id);
		const char *st = json_string_value(json_object_get(j, "status"));

		assert_non_null(st);
		if (e2e_is_final(st)) {
			if (elapsed_ms)
				*elapsed_ms = e2e_now_ms() - start;
			return j;
		}
		if (e2e_now_ms() - start >= timeout_ms)
			fprintf(stderr, "order %s still %s after %.0f ms\n", id, st, timeout_ms);
		json_decref(j);
		assert_true(e2e_now_ms() - start < timeout_ms);
		usleep(50000);
	}
}

/* Wait up to timeout_ms for a final status; returns the order (decref it). */
static inline json_t *e2e_wait_final(const char *id, double timeout_ms)
{
	return e2e_wait_final_timed(id, timeout_ms, NULL);
}

/* Wait for the final status and check it. */
static inline void e2e_expect_final(const char *id, const char *want, double timeout_ms)
{
	json_t *o = e2e_wait_final(id, timeout_ms);

	assert_string_equal(json_string_value(json_object_get(o, "status")), want);
	json_decref(o);
}

/* ---- RabbitMQ, for looking at what the daemons publish ---------------------- */

static inline int e2e_amqp_ok(amqp_connection_state_t c, const char *what)
{
	amqp_rpc_reply_t r = amqp_get_rpc_reply(c);

	if (r.reply_type != AMQP_RESPONSE_NORMAL) {
		fprintf(stderr, "rabbitmq: %s failed (reply type %d)\n", what, (int)r.reply_type);
		return 0;
	}
	return 1;
}

/* A plain connection to ORDERS_AMQP_URL with channel E2E_AMQP_CHANNEL open, or NULL. */
static inline amqp_connection_state_t e2e_amqp_connect(void)
{
	const char *url = getenv("ORDERS_AMQP_URL");
	struct amqp_connection_info ci;
	amqp_connection_state_t c;
	amqp_socket_t *sock;
	amqp_rpc_reply_t r;
	char *buf = strdup(url && *url ? url : E2E_AMQP_URL);

	if (!buf || amqp_parse_url(buf, &ci) != AMQP_STATUS_OK) {
		free(buf);
		return NULL;
	}
	if (!ci.vhost[0])
		ci.vhost = "/";
	c = amqp_new_connection();
	sock = amqp_tcp_socket_new(c);
	if (!sock || amqp_socket_open(sock, ci.host, ci.port) != AMQP_STATUS_OK) {
		free(buf);
		amqp_destroy_connection(c);
		return NULL;
	}
	r = amqp_login(c, ci.vhost, 0, AMQP_DEFAULT_FRAME_SIZE, 0, AMQP_SASL_METHOD_PLAIN, ci.user,
	               ci.password);
	free(buf);
	if (r.reply_type != AMQP_RESPONSE_NORMAL) {
		amqp_destroy_connection(c);
		return NULL;
	}
	amqp_channel_open(c, E2E_AMQP_CHANNEL);
	if (!e2e_amqp_ok(c, "channel.open")) {
		amqp_destroy_connection(c);
		return NULL;
	}
	return c;
}

static inline void e2e_amqp_close(amqp_connection_state_t c)
{
	if (!c)
		return;
	amqp_connection_close(c, AMQP_REPLY_SUCCESS);
	amqp_destroy_connection(c);
}

/* A private queue on "order-events" with every type bound, consumed without acks. */
static inline amqp_connection_state_t e2e_events_watch(void)
{
	amqp_connection_state_t c = e2e_amqp_connect();
	amqp_queue_declare_ok_t *ok;
	amqp_bytes_t q;

	assert_non_null(c);
	ok =
	    amqp_queue_declare(c, E2E_AMQP_CHANNEL, amqp_empty_bytes, 0, 0, 1, 1, amqp_empty_table);
	assert_true(e2e_amqp_ok(c, "queue.declare"));
	q = amqp_bytes_malloc_dup(ok->queue);
	amqp_queue_bind(c, E2E_AMQP_CHANNEL, q, amqp_cstring_bytes(MQ_EXCHANGE_EVENTS),
	                amqp_cstring_bytes("#"), amqp_empty_table);
	assert_true(e2e_amqp_ok(c, "queue.bind"));
	amqp_basic_consume(c, E2E_AMQP_CHANNEL, q, amqp_empty_bytes, 0, 1, 1, amqp_empty_table);
	assert_true(e2e_amqp_ok(c, "basic.consume"));
	amqp_bytes_free(q);
	return c;
}

/* e2e_sh - a shell command (printf-style); 1 when it exits 0. Its output goes
 * where the test's does. */
static inline int e2e_sh(const char *fmt, ...) __attribute__((format(printf, 1, 2)));

static inline int e2e_sh(const char *fmt, ...)
{
	char cmd[2048];
	va_list ap;

	va_start(ap, fmt);
	vsnprintf(cmd, sizeof(cmd), fmt, ap);
	va_end(ap);
	return system(cmd) == 0;
}

/* e2e_read_pid - the positive number a pid file at path holds; 0 when there
 * is no such file or it holds none. Whether that process lives is the
 * caller's question. */
static inline pid_t e2e_read_pid(const char *path)
{
	long pid = 0;
	FILE *f = fopen(path, "r");

	if (!f)
		return 0;
	if (fscanf(f, "%ld", &pid) != 1)
		pid = 0;
	fclose(f);
	return pid > 0 ? (pid_t)pid : 0;
}

/* e2e_mkdtemp - a new private directory /tmp/<name>.<random> into out (n
 * bytes); 1 on success, else 0 with out empty, so that a teardown can tell
 * whether there is a directory to remove from out[0] alone. */
static inline int e2e_mkdtemp(const char *name, char *out, size_t n)
{
	snprintf(out, n, "/tmp/%s.XXXXXX", name);
	if (mkdtemp(out))
		return 1;
	out[0] = '\0';
	return 0;
}

/* e2e_rabbitmqctl - rabbitmqctl ARGS for the stack's node (deploy/local/services.sh ctl),
 * its output into out (size bytes); 1 when it exits 0. */
static inline int e2e_rabbitmqctl(const char *args, char *out, size_t size)
{
	const char *port = getenv("ORDERS_HTTP_PORT");
	char root[PATH_MAX], cmd[PATH_MAX + 256];
	FILE *f;
	size_t n;

	e2e_find_root(root, sizeof(root));
	snprintf(cmd, sizeof(cmd), "ORDERS_LOCAL_PORT_OFFSET=%d %s/deploy/local/services.sh ctl %s",
	         port ? atoi(port) - 8080 : 0, root, args);
	f = popen(cmd, "r");
	if (!f)
		return 0;
	n = fread(out, 1, size - 1, f);
	out[n] = '\0';
	return pclose(f) == 0;
}

/*
 * e2e_block_publishers - a memory alarm (a high watermark of 0): the broker
 * stops reading from every connection that publishes, the daemons' too, so
 * a test that does this runs alone (RUN_SERIAL). The watermark it had goes
 * to saved (size bytes) for e2e_unblock_publishers. 1 on success.
 */
static inline int e2e_block_publishers(char *saved, size_t size)
{
	char out[256];
	size_t n;

	if (!e2e_rabbitmqctl("eval 'vm_memory_monitor:get_vm_memory_high_watermark().'", out,
	                     sizeof(out)))
		return 0;
	n = strspn(out, "0123456789.");
	if (n == 0 || n >= size)
		return 0;
	memcpy(saved, out, n);
	saved[n] = '\0';
	return e2e_rabbitmqctl("set_vm_memory_high_watermark 0", out, sizeof(out));
}

/* e2e_unblock_publishers - the watermark saved by e2e_block_publishers back, once (saved
 * is emptied; an empty one is a no-op). 1 on success. */
static inline int e2e_unblock_publishers(char *saved)
{
	char args[128], out[256];

	if (!saved[0])
		return 1;
	snprintf(args, sizeof(args), "set_vm_memory_high_watermark %s", saved);
	saved[0] = '\0';
	return e2e_rabbitmqctl(args, out, sizeof(out));
}

/*
 * A publisher on url that declares the topology, once it is connected (15 s
 * at most); NULL if it cannot be made or does not connect. who names the
 * test in the message.
 */
static inline struct mq_publisher *e2e_publisher_connect(const char *url, const char *who)
{
	struct mq_publisher_options o;
	struct mq_publisher *pub;
	double start = e2e_now_ms();

	memset(&o, 0, sizeof(o));
	o.url = url;
	o.confirm_timeout_ms = 15000;
	o.declare_topology = 1;
	pub = mq_publisher_new(&o);
	if (!pub)
		return NULL;
	while (!mq_publisher_connected(pub)) {
		if (e2e_now_ms() - start > 15000) {
			fprintf(stderr, "%s: cannot connect to ORDERS_AMQP_URL (make up?)\n", who);
			mq_publisher_free(pub);
			return NULL;
		}
		usleep(50000);
	}
	return pub;
}

#endif
