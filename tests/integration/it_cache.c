/* it_cache.c: the Redis module against a real server (ORDERS_REDIS_URL), and the API's
 * product cache: what GET /v1/products serves lags the database by at most a second. */
#include <stdarg.h>
#include <stddef.h>
#include <setjmp.h>
#include <stdint.h>
#include <cmocka.h>

#include <pthread.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "cache.h"
#include "db.h"
#include "e2e.h"
#include "err.h"

#define DEFAULT_URL "redis://127.0.0.1:6389/0"
#define DEFAULT_DSN "postgresql://orders@127.0.0.1:5442/orders"
/* The contract: `available` lags the database by at most this. */
#define CACHE_LAG_MS 1000
/* Our clock and Redis's may differ a little. */
#define CLOCK_SLACK_MS 50
/* Port 1 on loopback: nothing listens, so connecting is refused at once. */
#define DEAD_URL "redis://127.0.0.1:1/0"
#define POOL_SIZE 2
#define POOL_THREADS 4
#define POOL_INCRS 500

static const char *url;
static struct cache *c;
static char prefix[64]; /* test:<pid>: - every key this test makes starts with it */

/* prefix + name, in a static buffer per slot. */
static const char *key(const char *name)
{
	static char bufs[4][128];
	static int next;
	char *b = bufs[next++ % 4];

	snprintf(b, sizeof(bufs[0]), "%s%s", prefix, name);
	return b;
}

static void del_keys(struct cache *cc)
{
	redisReply *r, *k;
	size_t i;

	r = cache_command(cc, "KEYS %s*", prefix);
	if (!r)
		return;
	if (r->type == REDIS_REPLY_ARRAY) {
		for (i = 0; i < r->elements; i++) {
			k = cache_command(cc, "DEL %b", r->element[i]->str, r->element[i]->len);
			freeReplyObject(k);
		}
	}
	freeReplyObject(r);
}

static int group_setup(void **state)
{
	(void)state;
	url = getenv("ORDERS_REDIS_URL");
	if (!url || !*url)
		url = DEFAULT_URL;
	snprintf(prefix, sizeof(prefix), "test:%ld:", (long)getpid());
	c = cache_new(url);
	if (!c || cache_ping(c) != ERR_OK) {
		fprintf(stderr, "it_cache: cannot reach ORDERS_REDIS_URL (is redis up?)\n");
		cache_free(c);
		c = NULL;
		return -1;
	}
	return 0;
}

static int group_teardown(void **state)
{
	redisReply *r;
	int left = -1;

	(void)state;
	del_keys(c);
	r = cache_command(c, "KEYS %s*", prefix);
	if (r && r->type == REDIS_REPLY_ARRAY)
		left = (int)r->elements;
	freeReplyObject(r);
	cache_free(c);
	if (left != 0) {
		fprintf(stderr, "it_cache: %d test keys left behind\n", left);
		return -1;
	}
	return 0;
}

static void test_ping(void **state)
{
	(void)state;
	assert_int_equal(cache_ping(c), ERR_OK);
	assert_int_not_equal(cache_ping(NULL), ERR_OK);
	assert_null(cache_command(NULL, "PING"));
	assert_null(cache_command(c, NULL));
}

static void test_set_get(void **state)
{
	redisReply *r;

	(void)state;
	r = cache_command(c, "SET %s %s", key("greeting"), "hello world");
	assert_non_null(r);
	assert_int_equal(r->type, REDIS_REPLY_STATUS);
	assert_string_equal(r->str, "OK");
	freeReplyObject(r);

	r = cache_command(c, "GET %s", key("greeting"));
	assert_non_null(r);
	assert_int_equal(r->type, REDIS_REPLY_STRING);
	assert_int_equal(r->len, 11);
	assert_string_equal(r->str, "hello world");
	freeReplyObject(r);

	r = cache_command(c, "GET %s", key("missing"));
	assert_non_null(r);
	assert_int_equal(r->type, REDIS_REPLY_NIL);
	freeReplyObject(r);

	/* SET NX on an existing key does nothing and says so with nil. */
	r = cache_command(c, "SET %s %s NX EX %d", key("greeting"), "other", 60);
	assert_non_null(r);
	assert_int_equal(r->type, REDIS_REPLY_NIL);
	freeReplyObject(r);

	r = cache_command(c, "DEL %s", key("greeting"));
	assert_non_null(r);
	assert_int_equal(r->type, REDIS_REPLY_INTEGER);
	assert_int_equal(r->integer, 1);
	freeReplyObject(r);
}

/* %b values may hold NULs, spaces, CR LF and high bytes: all must survive. */
static void test_binary_values(void **state)
{
	uint8_t v[300];
	char bkey[128];
	redisReply *r;
	size_t i, n;

	(void)state;
	for (i = 0; i < sizeof(v); i++)
		v[i] = (uint8_t)(i * 37 + 11);
	v[0] = 0;
	v[1] = '\r';
	v[2] = '\n';
	v[3] = ' ';
	v[sizeof(v) - 1] = 0;

	r = cache_command(c, "SET %s %b", key("bin"), v, sizeof(v));
	assert_non_null(r);
	assert_int_equal(r->type, REDIS_REPLY_STATUS);
	freeReplyObject(r);

	r = cache_command(c, "GET %s", key("bin"));
	assert_non_null(r);
	assert_int_equal(r->type, REDIS_REPLY_STRING);
	assert_int_equal(r->len, sizeof(v));
	assert_memory_equal(r->str, v, sizeof(v));
	freeReplyObject(r);

	r = cache_command(c, "STRLEN %s", key("bin"));
	assert_non_null(r);
	assert_int_equal(r->integer, (long long)sizeof(v));
	freeReplyObject(r);

	/* A binary key too, and an empty value. */
	n = (size_t)snprintf(bkey, sizeof(bkey), "%sk", prefix);
	memcpy(bkey + n, "\0ey", 3);
	n += 3;
	r = cache_command(c, "SET %b %b", bkey, n, "", (size_t)0);
	assert_non_null(r);
	assert_int_equal(r->type, REDIS_REPLY_STATUS);
	freeReplyObject(r);
	r = cache_command(c, "GET %b", bkey, n);
	assert_non_null(r);
	assert_int_equal(r->type, REDIS_REPLY_STRING);
	assert_int_equal(r->len, 0);
	freeReplyObject(r);
	/* Only the full binary key finds it: the NUL is part of the key. */
	r = cache_command(c, "EXISTS %b", bkey, n - 3);
	assert_non_null(r);
	assert_int_equal(r->integer, 0);
	freeReplyObject(r);
}

/* An error reply is a reply: handed back as is, and the connection stays usable. */
static void test_error_reply(void **state)
{
	redisReply *r;

	(void)state;
	r = cache_command(c, "SET %s %s", key("word"), "not-a-number");
	assert_non_null(r);
	freeReplyObject(r);

	r = cache_command(c, "INCR %s", key("word"));
	assert_non_null(r);
	assert_int_equal(r->type, REDIS_REPLY_ERROR);
	assert_non_null(strstr(r->str, "not an integer"));
	freeReplyObject(r);

	r = cache_command(c, "NOSUCHCOMMAND %s", key("word"));
	assert_non_null(r);
	assert_int_equal(r->type, REDIS_REPLY_ERROR);
	freeReplyObject(r);

	/* The value was not touched, and the next command works. */
	r = cache_command(c, "GET %s", key("word"));
	assert_non_null(r);
	assert_string_equal(r->str, "not-a-number");
	freeReplyObject(r);
	assert_int_equal(cache_ping(c), ERR_OK);
}

/* The /db part of the URL selects the database. */
static void test_select_db(void **state)
{
	char other_url[256];
	struct cache *o;
	redisReply *r;
	const char *slash;

	(void)state;
	/* redis://host:port/db or redis://host:port: swap or add the db part. */
	slash = strrchr(url, '/');
	assert_non_null(slash);
	if (slash < url + 8)
		snprintf(other_url, sizeof(other_url), "%s/15", url);
	else
		snprintf(other_url, sizeof(other_url), "%.*s/%d", (int)(slash - url), url,
		         atoi(slash + 1) == 15 ? 14 : 15);
	o = cache_new(other_url);
	assert_non_null(o);
	r = cache_command(o, "SET %s %s", key("elsewhere"), "1");
	assert_non_null(r);
	assert_int_equal(r->type, REDIS_REPLY_STATUS);
	freeReplyObject(r);

	r = cache_command(c, "EXISTS %s", key("elsewhere"));
	assert_non_null(r);
	assert_int_equal(r->integer, 0);
	freeReplyObject(r);

	del_keys(o);
	r = cache_command(o, "EXISTS %s", key("elsewhere"));
	assert_non_null(r);
	assert_int_equal(r->integer, 0);
	freeReplyObject(r);
	cache_free(o);
}

/* The server drops our connection (a restart, a timeout): the next command reconnects once. */
/* Have the server drop c's connection; returns the connection's id. */
static long long kill_connection(void)
{
	struct cache *killer;
	redisReply *r;
	long long id;

	r = cache_command(c, "CLIENT ID");
	assert_non_null(r);
	assert_int_equal(r->type, REDIS_REPLY_INTEGER);
	id = r->integer;
	freeReplyObject(r);

	killer = cache_new(url);
	assert_non_null(killer);
	r = cache_command(killer, "CLIENT KILL ID %lld", id);
	assert_non_null(r);
	assert_int_equal(r->type, REDIS_REPLY_INTEGER);
	assert_int_equal(r->integer, 1);
	freeReplyObject(r);
	cache_free(killer);
	return id;
}

static void test_reconnect(void **state)
{
	redisReply *r;
	long long id;

	(void)state;
	id = kill_connection();
	r = cache_command(c, "SET %s %s", key("after"), "yes");
	assert_non_null(r);
	assert_int_equal(r->type, REDIS_REPLY_STATUS);
	freeReplyObject(r);
	r = cache_command(c, "CLIENT ID");
	assert_non_null(r);
	assert_true(r->integer != id);
	freeReplyObject(r);
}

static void test_bad_urls(void **state)
{
	static const char *const bad[] = {
	    "http://127.0.0.1:6389/0",
	    "redis:/127.0.0.1:6389",
	    "redis://127.0.0.1:0/0",
	    "redis://127.0.0.1:65536/0",
	    "redis://127.0.0.1:port/0",
	    "redis://127.0.0.1:6389/x",
	    "redis://127.0.0.1:6389/-1",
	    "redis://secret@127.0.0.1:6389/0",
	    "redis://:@127.0.0.1:6389/0",
	    "redis://:a%zz@127.0.0.1:6389/0",
	    "rediss:/127.0.0.1:6389/0",
	    "redis://127.0.0.1:6389/0?timeout=1",
	    "redis://[::1/0",
	    "",
	};
	size_t i;

	(void)state;
	for (i = 0; i < sizeof(bad) / sizeof(bad[0]); i++) {
		assert_null(cache_new(bad[i]));
		assert_null(cache_pool_new(bad[i], 2));
	}
	assert_null(cache_new(NULL));
	assert_null(cache_pool_new(NULL, 2));
	assert_null(cache_pool_new(url, 0));
	cache_free(NULL);
	cache_pool_free(NULL);
	assert_null(cache_pool_get(NULL));
	cache_pool_put(NULL, NULL);
}

/* A well-formed URL with nothing behind it: an object, but every use says unavailable. */
static void test_dead_server(void **state)
{
	struct cache *d;

	(void)state;
	d = cache_new(DEAD_URL);
	assert_non_null(d);
	assert_null(cache_command(d, "PING"));
	assert_int_equal(cache_ping(d), ERR_UNAVAILABLE);
	cache_free(d);
}

/* ---- batches -------------------------------------------------------------- */

/* Replies come back one per command, in order, an error reply among them. */
static void test_batch(void **state)
{
	struct cache_batch b;
	redisReply *rep[4];

	(void)state;
	cache_batch_init(&b);
	assert_int_equal(cache_batch_add(&b, "SET %s %s", key("b1"), "one"), ERR_OK);
	assert_int_equal(cache_batch_add(&b, "INCR %s", key("b1")), ERR_OK);
	assert_int_equal(cache_batch_add(&b, "GET %s", key("b1")), ERR_OK);
	assert_int_equal(cache_batch_add(&b, "HMGET %s a b", key("nothing")), ERR_OK);
	assert_int_equal(cache_batch_run(c, &b, rep), ERR_OK);
	assert_int_equal(rep[0]->type, REDIS_REPLY_STATUS);
	assert_int_equal(rep[1]->type, REDIS_REPLY_ERROR);
	assert_int_equal(rep[2]->type, REDIS_REPLY_STRING);
	assert_string_equal(rep[2]->str, "one");
	assert_int_equal(rep[3]->type, REDIS_REPLY_ARRAY);
	assert_int_equal(rep[3]->elements, 2);
	assert_int_equal(rep[3]->element[0]->type, REDIS_REPLY_NIL);
	for (int i = 0; i < 4; i++)
		freeReplyObject(rep[i]);

	/* A batch may run again; the connection stays in step. */
	assert_int_equal(cache_batch_run(c, &b, rep), ERR_OK);
	assert_string_equal(rep[2]->str, "one");
	for (int i = 0; i < 4; i++)
		freeReplyObject(rep[i]);
	cache_batch_release(&b);
	assert_int_equal(cache_ping(c), ERR_OK);

	/* Empty: nothing to send, nothing to read. */
	assert_int_equal(cache_batch_run(c, &b, rep), ERR_OK);
}

/* Commands given as arguments: strings, or bytes with their lengths. */
static void test_batch_argv(void **state)
{
	static const char bin[] = {'a', '\0', ' ', 'b'};
	char k1[128], k2[128];
	const char *set[] = {"SET", k1, "two words"};
	const char *setb[] = {"SET", k2, bin};
	size_t setb_len[] = {3, 0, sizeof(bin)};
	const char *get[] = {"MGET", k1, k2};
	struct cache_batch b;
	redisReply *rep[3];

	(void)state;
	snprintf(k1, sizeof(k1), "%s", key("argv"));
	snprintf(k2, sizeof(k2), "%s", key("argvb"));
	setb_len[1] = strlen(k2);
	cache_batch_init(&b);
	assert_int_equal(cache_batch_add_argv(&b, 3, set, NULL), ERR_OK);
	assert_int_equal(cache_batch_add_argv(&b, 3, setb, setb_len), ERR_OK);
	assert_int_equal(cache_batch_add_argv(&b, 3, get, NULL), ERR_OK);
	assert_int_equal(cache_batch_run(c, &b, rep), ERR_OK);
	assert_int_equal(rep[2]->type, REDIS_REPLY_ARRAY);
	assert_string_equal(rep[2]->element[0]->str, "two words");
	assert_int_equal(rep[2]->element[1]->len, sizeof(bin));
	assert_memory_equal(rep[2]->element[1]->str, bin, sizeof(bin));
	for (int i = 0; i < 3; i++)
		freeReplyObject(rep[i]);
	cache_batch_release(&b);
}

/* Past CACHE_BATCH_MAX the batch is refused whole, never half sent. */
static void test_batch_full(void **state)
{
	struct cache_batch b;
	redisReply *rep[1];

	(void)state;
	cache_batch_init(&b);
	for (int i = 0; i < CACHE_BATCH_MAX; i++)
		assert_int_equal(cache_batch_add(&b, "INCR %s", key("full")), ERR_OK);
	assert_int_equal(cache_batch_add(&b, "INCR %s", key("full")), ERR_TOO_BIG);
	assert_int_equal(cache_batch_run(c, &b, rep), ERR_INVALID);
	cache_batch_release(&b);
	rep[0] = cache_command(c, "EXISTS %s", key("full"));
	assert_non_null(rep[0]);
	assert_int_equal(rep[0]->integer, 0);
	freeReplyObject(rep[0]);
}

/*
 * One batch borrows the commands of others and runs them in order; the
 * lenders keep theirs, to run again. A batch that owns commands cannot
 * borrow, nor add once it has borrowed.
 */
static void test_batch_borrow(void **state)
{
	struct cache_batch a, b, all, big;
	redisReply *rep[3];

	(void)state;
	cache_batch_init(&a);
	cache_batch_init(&b);
	cache_batch_init(&all);
	cache_batch_add(&a, "SET %s %s", key("t1"), "x");
	cache_batch_add(&b, "APPEND %s %s", key("t1"), "y");
	cache_batch_add(&b, "GET %s", key("t1"));
	assert_int_equal(cache_batch_borrow(&all, &a), ERR_OK);
	assert_int_equal(cache_batch_borrow(&all, &b), ERR_OK);
	assert_int_equal(all.n, 3);
	assert_int_equal(b.n, 2);
	assert_int_equal(cache_batch_run(c, &all, rep), ERR_OK);
	assert_string_equal(rep[2]->str, "xy");
	for (int i = 0; i < 3; i++)
		freeReplyObject(rep[i]);
	/* Released, the borrower leaves the lenders' commands alone. */
	cache_batch_release(&all);
	assert_int_equal(cache_batch_run(c, &b, rep), ERR_OK);
	assert_string_equal(rep[1]->str, "xyy");
	freeReplyObject(rep[0]);
	freeReplyObject(rep[1]);

	assert_int_equal(cache_batch_borrow(&a, &b), ERR_INVALID);
	assert_int_equal(a.n, 1);
	assert_int_equal(cache_batch_borrow(&all, &a), ERR_OK);
	assert_int_equal(cache_batch_add(&all, "PING"), ERR_INVALID);

	/* Too many: nothing is appended. */
	cache_batch_release(&all);
	cache_batch_init(&big);
	for (int i = 0; i < CACHE_BATCH_MAX - 1; i++)
		cache_batch_add(&big, "PING");
	assert_int_equal(cache_batch_borrow(&all, &b), ERR_OK);
	assert_int_equal(cache_batch_borrow(&all, &big), ERR_TOO_BIG);
	assert_int_equal(all.n, 2);
	cache_batch_release(&all);
	cache_batch_release(&big);
	cache_batch_release(&a);
	cache_batch_release(&b);
}

/* A dropped connection is reconnected and the batch sent again, once. */
static void test_batch_reconnect(void **state)
{
	struct cache_batch b;
	struct cache *dead;
	redisReply *rep[2];
	long long id;

	(void)state;
	id = kill_connection();
	cache_batch_init(&b);
	cache_batch_add(&b, "SET %s %s", key("b2"), "two");
	cache_batch_add(&b, "CLIENT ID");
	assert_int_equal(cache_batch_run(c, &b, rep), ERR_OK);
	assert_int_equal(rep[0]->type, REDIS_REPLY_STATUS);
	assert_int_equal(rep[1]->type, REDIS_REPLY_INTEGER);
	assert_true(rep[1]->integer != id);
	freeReplyObject(rep[0]);
	freeReplyObject(rep[1]);
	cache_batch_release(&b);

	/* Nothing behind the URL: unavailable, no reply. */
	dead = cache_new(DEAD_URL);
	cache_batch_init(&b);
	cache_batch_add(&b, "PING");
	assert_int_equal(cache_batch_run(dead, &b, rep), ERR_UNAVAILABLE);
	cache_batch_release(&b);
	cache_free(dead);
}

/* ---- pool ---------------------------------------------------------------- */

struct pool_run {
	struct cache_pool *pool;
	const char *counter; /* the key, made on the main thread: key() is not thread-safe */
	atomic_int *in_use;
	atomic_int *max_in_use;
	atomic_int *ok;
};

/* No cmocka asserts off the main thread: failures are counted instead. */
static void *pool_worker(void *arg)
{
	struct pool_run *run = arg;
	struct cache *cc;
	redisReply *r;
	int i, now, max;

	for (i = 0; i < POOL_INCRS; i++) {
		cc = cache_pool_get(run->pool);
		if (!cc)
			continue;
		now = atomic_fetch_add(run->in_use, 1) + 1;
		max = atomic_load(run->max_in_use);
		while (now > max && !atomic_compare_exchange_weak(run->max_in_use, &max, now))
			;
		r = cache_command(cc, "INCR %s", run->counter);
		if (r && r->type == REDIS_REPLY_INTEGER)
			atomic_fetch_add(run->ok, 1);
		freeReplyObject(r);
		atomic_fetch_sub(run->in_use, 1);
		cache_pool_put(run->pool, cc);
	}
	return NULL;
}

static void test_pool_threads(void **state)
{
	struct pool_run run;
	pthread_t tids[POOL_THREADS];
	atomic_int in_use = 0, max_in_use = 0, ok = 0;
	struct cache_pool *p;
	char counter[128];
	redisReply *r;
	int i;

	(void)state;
	snprintf(counter, sizeof(counter), "%scounter", prefix);
	p = cache_pool_new(url, POOL_SIZE);
	assert_non_null(p);
	run = (struct pool_run){
	    .pool = p, .counter = counter, .in_use = &in_use, .max_in_use = &max_in_use, .ok = &ok};
	for (i = 0; i < POOL_THREADS; i++)
		assert_int_equal(pthread_create(&tids[i], NULL, pool_worker, &run), 0);
	for (i = 0; i < POOL_THREADS; i++)
		assert_int_equal(pthread_join(tids[i], NULL), 0);

	assert_int_equal(atomic_load(&ok), POOL_THREADS * POOL_INCRS);
	assert_true(atomic_load(&max_in_use) >= 1 && atomic_load(&max_in_use) <= POOL_SIZE);
	r = cache_command(c, "GET %s", counter);
	assert_non_null(r);
	assert_int_equal(r->type, REDIS_REPLY_STRING);
	assert_int_equal(strtol(r->str, NULL, 10), POOL_THREADS * POOL_INCRS);
	freeReplyObject(r);
	cache_pool_free(p);
}

/* Connections put back are handed out again, not made anew. */
static void test_pool_reuse(void **state)
{
	struct cache_pool *p;
	struct cache *a, *b, *x;

	(void)state;
	p = cache_pool_new(url, 2);
	assert_non_null(p);
	a = cache_pool_get(p);
	b = cache_pool_get(p);
	assert_non_null(a);
	assert_non_null(b);
	assert_ptr_not_equal(a, b);
	cache_pool_put(p, a);
	x = cache_pool_get(p);
	assert_ptr_equal(x, a);
	assert_int_equal(cache_ping(x), ERR_OK);
	cache_pool_put(p, x);
	cache_pool_put(p, b);
	cache_pool_free(p);
}

/* ---- the API's product cache ------------------------------------------------ */

/* What a catalog test works on: one product alone on a page of its own. */
struct catalog_case {
	char after[64]; /* the page starts after this */
	char sku[80];   /* the page's only product */
	char page_key[128];
	char available_key[128];
	struct db *db;
};

static void catalog_case_init(struct catalog_case *cc, const char *what)
{
	const char *dsn = getenv("ORDERS_PG_DSN");

	/* No other test's SKU starts like this, so it sorts right after. */
	snprintf(cc->after, sizeof(cc->after), "CACHE-%s-%ld-%ld-", what, (long)time(NULL),
	         (long)getpid());
	snprintf(cc->sku, sizeof(cc->sku), "%sA", cc->after);
	snprintf(cc->page_key, sizeof(cc->page_key), "products:page:1:%s", cc->after);
	snprintf(cc->available_key, sizeof(cc->available_key), "available:%s", cc->sku);
	cc->db = db_new(dsn && *dsn ? dsn : DEFAULT_DSN);
	assert_non_null(cc->db);
}

/* The page after cc->after, limit 1, as served; its one product's available. */
static long list_available(struct catalog_case *cc)
{
	const char *h[] = {E2E_CLIENT, NULL};
	struct http_response r;
	char path[160];
	json_t *j, *p;
	long v;

	snprintf(path, sizeof(path), "/v1/products?limit=1&after=%s", cc->after);
	assert_int_equal(http_request("GET", path, h, NULL, 0, &r), 0);
	assert_int_equal(r.status, 200);
	j = http_json(&r);
	assert_non_null(j);
	p = json_array_get(json_object_get(j, "products"), 0);
	assert_non_null(p);
	assert_string_equal(json_string_value(json_object_get(p, "sku")), cc->sku);
	v = (long)json_integer_value(json_object_get(p, "available"));
	json_decref(j);
	http_response_release(&r);
	return v;
}

static long single_available(struct catalog_case *cc)
{
	return e2e_available(cc->sku);
}

/* Milliseconds key has left; -2 when it does not exist. */
static long long pttl(const char *k)
{
	redisReply *r = cache_command(c, "PTTL %s", k);
	long long v;

	assert_non_null(r);
	assert_int_equal(r->type, REDIS_REPLY_INTEGER);
	v = r->integer;
	freeReplyObject(r);
	return v;
}

/* Change the stock behind the API's back, as another writer would. */
static void set_stock(struct catalog_case *cc, long stock)
{
	char s[24];
	const char *p[2] = {cc->sku, s};

	snprintf(s, sizeof(s), "%ld", stock);
	assert_int_equal(
	    db_exec(cc->db, "UPDATE products SET stock = $2::bigint WHERE sku = $1", 2, p, NULL),
	    ERR_OK);
}

/*
 * Poll fetch until it shows want, the stock set at changed_ms (taken before
 * the change, after the last answer cached the old figure). Until then it
 * must show old; an answer given while the key cached before the change
 * still lived must show old (it came from Redis, not the database); and
 * any request sent CACHE_LAG_MS after the change must show want. Returns
 * how many answers came from the old key.
 */
static int watch_change(struct catalog_case *cc, long (*fetch)(struct catalog_case *),
                        const char *k, long old, long want, double changed_ms)
{
	int from_cache = 0;

	for (;;) {
		double t0 = e2e_now_ms();
		long long left = pttl(k);
		long v = fetch(cc);
		double took = e2e_now_ms() - t0;

		if (left > 0 && took + CLOCK_SLACK_MS < (double)left) {
			assert_int_equal(v, old);
			from_cache++;
		}
		if (v == want)
			return from_cache;
		assert_int_equal(v, old);
		if (t0 - changed_ms >= CACHE_LAG_MS + CLOCK_SLACK_MS)
			fail_msg("%s: still %ld, not %ld, %.0f ms after the change", k, v, want,
			         t0 - changed_ms);
		usleep(50000);
	}
}

/* A page is cached for at most a second and served from Redis meanwhile. */
static void test_catalog_list_cached(void **state)
{
	struct catalog_case cc;
	redisReply *r;
	json_t *j;
	long long left;
	long stock = 10;
	int attempt, from_cache = 0;

	(void)state;
	catalog_case_init(&cc, "L");
	e2e_put_product(cc.sku, (int)stock, 100);
	assert_int_equal(list_available(&cc), stock);
	left = pttl(cc.page_key);
	assert_true(left > 0 && left <= CACHE_LAG_MS);
	/* What is cached is the page as served. */
	r = cache_command(c, "GET %s", cc.page_key);
	assert_non_null(r);
	if (r->type == REDIS_REPLY_STRING) {
		j = json_loads(r->str, 0, NULL);
		assert_non_null(j);
		assert_string_equal(json_string_value(json_object_get(
		                        json_array_get(json_object_get(j, "products"), 0), "sku")),
		                    cc.sku);
		json_decref(j);
	}
	freeReplyObject(r);

	/*
	 * The database changes while the page is cached: not visible until the
	 * key expires, then at once. A very slow machine may let the key expire
	 * before the first look; then try again with a fresh page.
	 */
	for (attempt = 0; attempt < 3 && !from_cache; attempt++) {
		double changed;

		assert_int_equal(list_available(&cc), stock);
		changed = e2e_now_ms();
		set_stock(&cc, stock - 3);
		from_cache =
		    watch_change(&cc, list_available, cc.page_key, stock, stock - 3, changed);
		stock -= 3;
	}
	if (!from_cache)
		fprintf(stderr, "it_cache: no list answer came from the cached page\n");
	assert_true(from_cache > 0);
	db_free(cc.db);
}

/* A stock change in the database reaches the single GET and the list within a second. */
static void test_catalog_db_change_visible(void **state)
{
	struct catalog_case cc;
	double changed;

	(void)state;
	catalog_case_init(&cc, "D");
	e2e_put_product(cc.sku, 20, 100);
	assert_int_equal(single_available(&cc), 20);
	assert_int_equal(list_available(&cc), 20);
	assert_true(pttl(cc.available_key) <= CACHE_LAG_MS);
	changed = e2e_now_ms();
	set_stock(&cc, 12);
	watch_change(&cc, single_available, cc.available_key, 20, 12, changed);
	watch_change(&cc, list_available, cc.page_key, 20, 12, changed);
	db_free(cc.db);
}

/* After a PUT the single GET shows the new figure at once, the list within a second. */
static void test_catalog_put_visible(void **state)
{
	struct catalog_case cc;
	double changed;

	(void)state;
	catalog_case_init(&cc, "P");
	e2e_put_product(cc.sku, 8, 100);
	assert_int_equal(single_available(&cc), 8);
	assert_int_equal(list_available(&cc), 8);
	changed = e2e_now_ms();
	e2e_put_product(cc.sku, 3, 100);
	assert_int_equal(single_available(&cc), 3);
	watch_change(&cc, list_available, cc.page_key, 8, 3, changed);
	db_free(cc.db);
}

int main(void)
{
	const struct CMUnitTest tests[] = {
	    cmocka_unit_test(test_ping),
	    cmocka_unit_test(test_set_get),
	    cmocka_unit_test(test_binary_values),
	    cmocka_unit_test(test_error_reply),
	    cmocka_unit_test(test_select_db),
	    cmocka_unit_test(test_reconnect),
	    cmocka_unit_test(test_batch),
	    cmocka_unit_test(test_batch_argv),
	    cmocka_unit_test(test_batch_full),
	    cmocka_unit_test(test_batch_borrow),
	    cmocka_unit_test(test_batch_reconnect),
	    cmocka_unit_test(test_bad_urls),
	    cmocka_unit_test(test_dead_server),
	    cmocka_unit_test(test_pool_threads),
	    cmocka_unit_test(test_pool_reuse),
	    cmocka_unit_test(test_catalog_list_cached),
	    cmocka_unit_test(test_catalog_db_change_visible),
	    cmocka_unit_test(test_catalog_put_visible),
	};

	return cmocka_run_group_tests(tests, group_setup, group_teardown);
}
