/*
 * it_cache_tls.c: lib/cache over rediss:// with AUTH, against two Redis servers of its own
 * beside the stack: one that speaks only TLS (port 0, tls-port 18682+offset, the stack's
 * certificate from ORDERS_LOCAL_TLS_DIR) and one plain (19682+offset), both with requirepass
 * and an ACL user. Also the whole orders-api on rediss:// serving a checkout end to end.
 */
#include <stdarg.h>
#include <stddef.h>
#include <setjmp.h>
#include <stdint.h>
#include <cmocka.h>

#include <pthread.h>
#include <stdatomic.h>

#include "cache.h"
#include "e2e.h"
#include "err.h"
#include "log.h"

/* Distinctive, so that a search of the log cannot miss them; '%' and '@' written encoded. */
#define PASSWORD "it-tls-pw-7Qx%@9"
#define PASSWORD_URL "it-tls-pw-7Qx%25%409"
#define APP_USER "orders-app"
#define APP_PASSWORD "it-tls-app-pw-3Kd"
#define WRONG_PASSWORD "it-tls-wrong-pw-5Zy"
#define THREADS 4
#define THREAD_CONNECTS 10

static char tls_dir[512];
static char ca[600];
static char work[64]; /* mkdtemp: the servers' files, the other CA, the log */
static char log_path[128];
static int offset;
static int tls_port, plain_port;
static pid_t api_pid;       /* test_api_over_tls's orders-api while it runs */
static char tls_url[256];   /* rediss://:PASSWORD@127.0.0.1:tls_port/0 */
static char plain_url[256]; /* redis://:PASSWORD@127.0.0.1:plain_port/0 */

/* The redis-server of work/<name>.conf: its pid, or 0 when it is not running. */
static pid_t server_pid(const char *name)
{
	char path[128];
	pid_t pid;

	snprintf(path, sizeof(path), "%s/%s.pid", work, name);
	pid = e2e_read_pid(path);
	return pid > 0 && kill(pid, 0) == 0 ? pid : 0;
}

/* Stop it (SIGTERM, SIGKILL after 10 s) and wait until it is gone. */
static void server_stop(const char *name)
{
	pid_t pid = server_pid(name);

	if (!pid)
		return;
	kill(pid, SIGTERM);
	for (int i = 0; i < 100 && kill(pid, 0) == 0; i++)
		usleep(100000);
	if (kill(pid, 0) == 0)
		kill(pid, SIGKILL);
	for (int i = 0; i < 50 && kill(pid, 0) == 0; i++)
		usleep(100000);
}

/* Start redis-server on work/<name>.conf and wait until url answers PING (10 s). */
static int server_start(const char *name, const char *url)
{
	struct cache *c;
	int ok = 0;

	if (!e2e_sh("redis-server %s/%s.conf", work, name))
		return 0;
	for (int i = 0; i < 100 && !ok; i++) {
		c = cache_new(url);
		ok = c && cache_ping(c) == ERR_OK;
		cache_free(c);
		if (!ok)
			usleep(100000);
	}
	if (!ok)
		e2e_sh("tail -n 5 %s/%s.log >&2", work, name);
	return ok;
}

/* A server's configuration: requirepass, an ACL user, no persistence; TLS or plain. */
static int write_conf(const char *name, int tls)
{
	char path[128];
	FILE *f;

	snprintf(path, sizeof(path), "%s/%s.conf", work, name);
	f = fopen(path, "w");
	if (!f)
		return 0;
	fprintf(f, "bind 127.0.0.1\nprotected-mode yes\ndaemonize yes\n");
	fprintf(f, "pidfile %s/%s.pid\nlogfile %s/%s.log\ndir %s\n", work, name, work, name, work);
	fprintf(f, "save \"\"\nappendonly no\n");
	fprintf(f, "requirepass \"%s\"\n", PASSWORD);
	fprintf(f, "user %s on >%s ~* &* +@all\n", APP_USER, APP_PASSWORD);
	if (tls)
		fprintf(f,
		        "port 0\ntls-port %d\ntls-cert-file %s/server.pem\n"
		        "tls-key-file %s/server.key\ntls-ca-cert-file %s\ntls-auth-clients no\n",
		        tls_port, tls_dir, tls_dir, ca);
	else
		fprintf(f, "port %d\n", plain_port);
	return fclose(f) == 0;
}

/* The whole log this test wrote so far (free it). */
static char *read_log(void)
{
	FILE *f = fopen(log_path, "r");
	char *buf = calloc(1, 1024 * 1024);
	size_t n;

	assert_non_null(f);
	assert_non_null(buf);
	n = fread(buf, 1, 1024 * 1024 - 1, f);
	buf[n] = '\0';
	fclose(f);
	return buf;
}

/* The log holds want (after mark bytes), and none of the passwords anywhere. */
static void expect_logged(size_t mark, const char *want)
{
	char *log = read_log();

	if (!strstr(log + mark, want))
		fail_msg("no '%s' in the log: %s", want, log + mark);
	assert_null(strstr(log, PASSWORD));
	assert_null(strstr(log, PASSWORD_URL));
	assert_null(strstr(log, APP_PASSWORD));
	assert_null(strstr(log, WRONG_PASSWORD));
	free(log);
}

static size_t log_mark(void)
{
	char *log = read_log();
	size_t n = strlen(log);

	free(log);
	return n;
}

static int configure(const char *ca_file)
{
	char reason[256];
	int rc = cache_tls_configure(ca_file, reason, sizeof(reason));

	if (rc)
		fprintf(stderr, "it_cache_tls: cache_tls_configure: %s\n", reason);
	return rc;
}

static int group_setup(void **state)
{
	const char *dir = getenv("ORDERS_LOCAL_TLS_DIR"), *http = getenv("ORDERS_HTTP_PORT");
	int fd;

	(void)state;
	if (!dir || !*dir || !http) {
		fprintf(stderr,
		        "it_cache_tls: ORDERS_LOCAL_TLS_DIR and ORDERS_HTTP_PORT are not set "
		        "(. .local/env after make up)\n");
		return -1;
	}
	/* A server that closes while a TLS write is under way must not kill the test. */
	signal(SIGPIPE, SIG_IGN);
	snprintf(tls_dir, sizeof(tls_dir), "%s", dir);
	snprintf(ca, sizeof(ca), "%s/ca.pem", tls_dir);
	offset = atoi(http) - 8080;
	/* Families of their own (see deploy/local/lib.sh): no other offset's ports. */
	tls_port = 18682 + offset;
	plain_port = 19682 + offset;
	snprintf(tls_url, sizeof(tls_url), "rediss://:%s@127.0.0.1:%d/0", PASSWORD_URL, tls_port);
	snprintf(plain_url, sizeof(plain_url), "redis://:%s@127.0.0.1:%d/0", PASSWORD_URL,
	         plain_port);
	if (!e2e_mkdtemp("it_cache_tls", work, sizeof(work)))
		return -1;
	snprintf(log_path, sizeof(log_path), "%s/test.log", work);
	fd = open(log_path, O_WRONLY | O_CREAT | O_TRUNC | O_APPEND, 0600);
	if (fd < 0)
		return -1;
	log_init("it_cache_tls", LOG_INFO);
	log_set_fd(fd);
	if (!e2e_sh("cd %s && openssl req -x509 -new -newkey ec -pkeyopt ec_paramgen_curve:P-256 "
	            "-nodes -keyout other-ca.key -out other-ca.pem -days 2 -subj '/CN=other CA' "
	            "2>/dev/null",
	            work)) {
		fprintf(stderr, "it_cache_tls: openssl cannot make the other CA\n");
		return -1;
	}
	if (configure(ca) != ERR_OK || !write_conf("tls", 1) || !write_conf("plain", 0))
		return -1;
	if (!server_start("tls", tls_url) || !server_start("plain", plain_url)) {
		fprintf(stderr,
		        "it_cache_tls: the test's redis servers do not start (ports %d, %d)\n",
		        tls_port, plain_port);
		return -1;
	}
	return 0;
}

static int group_teardown(void **state)
{
	(void)state;
	/* A failed check in test_api_over_tls leaves its API running. */
	e2e_api_stop(api_pid);
	if (!work[0])
		return 0;
	server_stop("tls");
	server_stop("plain");
	e2e_sh("rm -rf %s", work);
	return 0;
}

/* A SET and a GET in one batch and a command alone, over url; db checks the SELECT. */
static void expect_works(const char *url, int db)
{
	struct cache_batch b;
	redisReply *rep[3], *r;
	struct cache *c = cache_new(url);
	char key[64];

	assert_non_null(c);
	snprintf(key, sizeof(key), "it_cache_tls:%ld", (long)getpid());
	cache_batch_init(&b);
	assert_int_equal(cache_batch_add(&b, "SET %s %s", key, "over tls"), ERR_OK);
	assert_int_equal(cache_batch_add(&b, "GET %s", key), ERR_OK);
	assert_int_equal(cache_batch_add(&b, "CLIENT INFO"), ERR_OK);
	assert_int_equal(cache_batch_run(c, &b, rep), ERR_OK);
	assert_int_equal(rep[0]->type, REDIS_REPLY_STATUS);
	assert_int_equal(rep[1]->type, REDIS_REPLY_STRING);
	assert_string_equal(rep[1]->str, "over tls");
	assert_int_equal(rep[2]->type, REDIS_REPLY_STRING);
	{
		char want[32];

		snprintf(want, sizeof(want), " db=%d ", db);
		if (!strstr(rep[2]->str, want))
			fail_msg("CLIENT INFO says '%s', want%s", rep[2]->str, want);
	}
	for (int i = 0; i < 3; i++)
		freeReplyObject(rep[i]);
	cache_batch_release(&b);
	r = cache_command(c, "DEL %s", key);
	assert_non_null(r);
	assert_int_equal(r->type, REDIS_REPLY_INTEGER);
	assert_int_equal(r->integer, 1);
	freeReplyObject(r);
	cache_free(c);
}

/* The default user's password (percent-encoded in the URL), by address and by name. */
static void test_tls_password(void **state)
{
	char url[256];

	(void)state;
	expect_works(tls_url, 0);
	snprintf(url, sizeof(url), "rediss://:%s@localhost:%d/3", PASSWORD_URL, tls_port);
	expect_works(url, 3);
}

/* Redis 6 ACL: AUTH user password; the connection is that user's. */
static void test_tls_acl_user(void **state)
{
	struct cache *c;
	redisReply *r;
	char url[256];

	(void)state;
	snprintf(url, sizeof(url), "rediss://%s:%s@localhost:%d/1", APP_USER, APP_PASSWORD,
	         tls_port);
	expect_works(url, 1);
	c = cache_new(url);
	r = cache_command(c, "ACL WHOAMI");
	assert_non_null(r);
	assert_string_equal(r->str, APP_USER);
	freeReplyObject(r);
	cache_free(c);
}

/* A connection to the URL fmt makes: made, but every use says unavailable. */
static void expect_unavailable(const char *fmt, ...) __attribute__((format(printf, 1, 2)));

static void expect_unavailable(const char *fmt, ...)
{
	struct cache *c;
	char url[512];
	va_list ap;

	va_start(ap, fmt);
	vsnprintf(url, sizeof(url), fmt, ap);
	va_end(ap);
	c = cache_new(url);
	assert_non_null(c);
	assert_int_equal(cache_ping(c), ERR_UNAVAILABLE);
	assert_null(cache_command(c, "PING"));
	cache_free(c);
}

/* A wrong password: unavailable, and the warning names the host and Redis's words only. */
static void test_wrong_password(void **state)
{
	size_t mark = log_mark();

	(void)state;
	expect_unavailable("rediss://:%s@127.0.0.1:%d/0", WRONG_PASSWORD, tls_port);
	expect_logged(mark, "\"msg\":\"redis refused the password\",\"reason\":\"WRONGPASS");
	expect_logged(mark, "\"host\":\"127.0.0.1\"");
	/* The right user with another's password, on the plain server too. */
	mark = log_mark();
	expect_unavailable("redis://%s:%s@127.0.0.1:%d/0", APP_USER, WRONG_PASSWORD, plain_port);
	expect_logged(mark, "WRONGPASS");
}

/* A server whose certificate another CA signed, and one that does not bear the URL's name. */
static void test_wrong_ca_and_host(void **state)
{
	char other[128];
	size_t mark = log_mark();

	(void)state;
	snprintf(other, sizeof(other), "%s/other-ca.pem", work);
	assert_int_equal(configure(other), ERR_OK);
	expect_unavailable("%s", tls_url);
	expect_logged(mark, "certificate verification failed");
	/* The system's trust store knows no local CA either. */
	assert_int_equal(configure(NULL), ERR_OK);
	expect_unavailable("%s", tls_url);
	assert_int_equal(configure(ca), ERR_OK);

	/* The certificate names localhost and 127.0.0.1; 127.1 is the same address. */
	mark = log_mark();
	expect_unavailable("rediss://:%s@127.1:%d/0", PASSWORD_URL, tls_port);
	expect_logged(mark, "certificate verification failed: hostname mismatch");
}

/* Plain redis:// to the TLS port, and rediss:// to the plain one: unavailable, not a hang. */
static void test_scheme_mismatch(void **state)
{
	double start = e2e_now_ms();

	(void)state;
	expect_unavailable("redis://:%s@127.0.0.1:%d/0", PASSWORD_URL, tls_port);
	expect_unavailable("rediss://:%s@127.0.0.1:%d/0", PASSWORD_URL, plain_port);
	/* Each try is bounded by the 1 s timeouts; this is far above them all. */
	assert_true(e2e_now_ms() - start < 30000);
}

/* A plain server with requirepass: the password works, none gets NOAUTH. */
static void test_plain_password(void **state)
{
	struct cache *c;
	redisReply *r;
	char url[256];

	(void)state;
	expect_works(plain_url, 0);
	snprintf(url, sizeof(url), "redis://127.0.0.1:%d/0", plain_port);
	c = cache_new(url);
	r = cache_command(c, "PING");
	assert_non_null(r);
	assert_int_equal(r->type, REDIS_REPLY_ERROR);
	assert_non_null(strstr(r->str, "NOAUTH"));
	freeReplyObject(r);
	assert_int_equal(cache_ping(c), ERR_CACHE);
	cache_free(c);
}

/* After the server restarts, the same connection object works again, over TLS. */
static void test_reconnect_after_restart(void **state)
{
	struct cache *c = cache_new(tls_url);
	redisReply *r;
	long long id;
	size_t mark;
	int ok = 0;

	(void)state;
	r = cache_command(c, "CLIENT ID");
	assert_non_null(r);
	id = r->integer;
	freeReplyObject(r);
	server_stop("tls");
	assert_int_equal(server_pid("tls"), 0);
	assert_int_equal(cache_ping(c), ERR_UNAVAILABLE);
	mark = log_mark();
	assert_true(server_start("tls", tls_url));
	for (int i = 0; i < 20 && !ok; i++) {
		ok = cache_ping(c) == ERR_OK;
		if (!ok)
			usleep(100000);
	}
	assert_true(ok);
	r = cache_command(c, "CLIENT ID");
	assert_non_null(r);
	assert_int_equal(r->type, REDIS_REPLY_INTEGER);
	/* A new server counts its clients from 1 again: only "another one" is sure. */
	assert_true(r->integer != id || id == 1);
	freeReplyObject(r);
	cache_free(c);
	expect_logged(mark, "\"msg\":\"reconnected to redis\",\"host\":\"127.0.0.1\"");
}

static atomic_int thread_ok, thread_fail;

/* Connections made and used while the main thread replaces the TLS settings. */
static void *connector(void *arg)
{
	struct cache_pool *pool = arg;

	for (int i = 0; i < THREAD_CONNECTS; i++) {
		struct cache *c = cache_new(tls_url), *pc;
		redisReply *r;

		if (c && cache_ping(c) == ERR_OK)
			atomic_fetch_add(&thread_ok, 1);
		else
			atomic_fetch_add(&thread_fail, 1);
		cache_free(c);
		pc = cache_pool_get(pool);
		r = pc ? cache_command(pc, "INCR it_cache_tls:threads") : NULL;
		if (r && r->type == REDIS_REPLY_INTEGER)
			atomic_fetch_add(&thread_ok, 1);
		else
			atomic_fetch_add(&thread_fail, 1);
		freeReplyObject(r);
		cache_pool_put(pool, pc);
	}
	return NULL;
}

/*
 * Threads make TLS connections of their own and use a pool's while the
 * shared context is replaced: every connection works (the settings stay the
 * same CA), and ThreadSanitizer (tsan/it_cache_tls) sees no race.
 */
static void test_threads(void **state)
{
	struct cache_pool *pool = cache_pool_new(tls_url, 2);
	pthread_t tids[THREADS];

	(void)state;
	assert_non_null(pool);
	atomic_store(&thread_ok, 0);
	atomic_store(&thread_fail, 0);
	for (int i = 0; i < THREADS; i++)
		assert_int_equal(pthread_create(&tids[i], NULL, connector, pool), 0);
	for (int i = 0; i < 5; i++) {
		assert_int_equal(configure(ca), ERR_OK);
		usleep(20000);
	}
	for (int i = 0; i < THREADS; i++)
		pthread_join(tids[i], NULL);
	cache_pool_free(pool);
	assert_int_equal(atomic_load(&thread_fail), 0);
	assert_int_equal(atomic_load(&thread_ok), THREADS * THREAD_CONNECTS * 2);
}

/* The extra API's order, from that API, once final (decref it). */
static json_t *wait_final(int port, const char *id)
{
	const char *h[] = {E2E_CLIENT, NULL};
	double start = e2e_now_ms();
	char path[96];

	snprintf(path, sizeof(path), "/v1/orders/%s", id);
	for (;;) {
		struct http_response r;
		json_t *j;

		assert_int_equal(http_request_to(port, "GET", path, h, NULL, 0, &r), 0);
		assert_int_equal(r.status, 200);
		j = http_json(&r);
		http_response_release(&r);
		assert_non_null(j);
		if (e2e_is_final(json_string_value(json_object_get(j, "status"))))
			return j;
		json_decref(j);
		assert_true(e2e_now_ms() - start < E2E_FINAL_TIMEOUT_MS);
		usleep(100000);
	}
}

/*
 * The whole API on rediss:// as the ACL user (ORDERS_REDIS_CA_FILE the local
 * CA): ready, a checkout answered 202 and confirmed, its records in the TLS
 * server. A CA file that cannot be read stops it at start, naming the file.
 */
static void test_api_over_tls(void **state)
{
	char root[PATH_MAX], url[300], ca_env[700], url_env[320], body[1024], idem[64];
	char idem_h[96], sku[48], bin[PATH_MAX + 16], cmd[PATH_MAX * 2];
	const char *env[3] = {url_env, ca_env, NULL};
	const char *h[] = {E2E_CLIENT, E2E_JSON, idem_h, NULL};
	struct http_response r;
	struct cache *c;
	redisReply *rep;
	json_t *j;
	int port;
	FILE *p;

	(void)state;
	e2e_find_root(root, sizeof(root));
	snprintf(url, sizeof(url), "rediss://%s:%s@localhost:%d/5", APP_USER, APP_PASSWORD,
	         tls_port);
	snprintf(url_env, sizeof(url_env), "ORDERS_REDIS_URL=%s", url);
	snprintf(ca_env, sizeof(ca_env), "ORDERS_REDIS_CA_FILE=%s", ca);

	e2e_api_binary(root, bin, sizeof(bin));
	snprintf(cmd, sizeof(cmd),
	         "ORDERS_REDIS_URL='%s' ORDERS_REDIS_CA_FILE=%s/nonexistent.pem "
	         "ORDERS_HTTP_PORT=%d timeout 30 %s 2>&1",
	         url, work, e2e_free_port(), bin);
	p = popen(cmd, "r");
	assert_non_null(p);
	{
		char out[8192];
		size_t n = fread(out, 1, sizeof(out) - 1, p);
		int st = pclose(p);

		out[n] = '\0';
		assert_true(WIFEXITED(st) && WEXITSTATUS(st) != 0 && WEXITSTATUS(st) != 124);
		if (!strstr(out, "cannot use the redis tls settings") ||
		    !strstr(out, "nonexistent.pem"))
			fail_msg("a bad ORDERS_REDIS_CA_FILE was not named: %s", out);
		assert_null(strstr(out, APP_PASSWORD));
	}

	api_pid = e2e_api_start(root, "orders-api-redis-tls.log", env, &port);
	snprintf(sku, sizeof(sku), "REDIS-TLS-%ld", (long)getpid());
	e2e_put_product(sku, 5, 1200);
	e2e_checkout_body(body, sizeof(body), sku, 1, "4242424242424242");
	snprintf(idem, sizeof(idem), "redis-tls-%ld", (long)getpid());
	snprintf(idem_h, sizeof(idem_h), "Idempotency-Key: %s", idem);
	assert_int_equal(http_request_to(port, "POST", "/v1/checkouts", h, body, strlen(body), &r),
	                 0);
	if (r.status != 202)
		fprintf(stderr, "checkout answered %d: %s\n", r.status, r.body);
	assert_int_equal(r.status, 202);
	j = http_json(&r);
	http_response_release(&r);
	assert_non_null(j);
	{
		char *id = strdup(json_string_value(json_object_get(j, "order_id")));
		json_t *o;

		json_decref(j);
		assert_non_null(id);
		o = wait_final(port, id);
		assert_string_equal(json_string_value(json_object_get(o, "status")), "confirmed");
		json_decref(o);
		free(id);
	}
	/* A replay is answered from the idempotency record, which lives in the TLS server. */
	assert_int_equal(http_request_to(port, "POST", "/v1/checkouts", h, body, strlen(body), &r),
	                 0);
	assert_int_equal(r.status, 202);
	http_response_release(&r);
	e2e_api_stop(api_pid);
	api_pid = 0;
	c = cache_new(url);
	rep = cache_command(c, "DBSIZE");
	assert_non_null(rep);
	assert_int_equal(rep->type, REDIS_REPLY_INTEGER);
	assert_true(rep->integer > 0);
	freeReplyObject(rep);
	cache_free(c);
	assert_false(
	    e2e_sh("grep -qF '%s' %s/.local/log/orders-api-redis-tls.log", APP_PASSWORD, root));
}

int main(void)
{
	const struct CMUnitTest tests[] = {
	    cmocka_unit_test(test_tls_password),
	    cmocka_unit_test(test_tls_acl_user),
	    cmocka_unit_test(test_wrong_password),
	    cmocka_unit_test(test_wrong_ca_and_host),
	    cmocka_unit_test(test_scheme_mismatch),
	    cmocka_unit_test(test_plain_password),
	    cmocka_unit_test(test_reconnect_after_restart),
	    cmocka_unit_test(test_threads),
	    cmocka_unit_test(test_api_over_tls),
	};

	return cmocka_run_group_tests(tests, group_setup, group_teardown);
}
