/* cache.c: Redis connections (hiredis, synchronous) that reconnect once on failure, and a pool. */
#include "cache.h"

#include "err.h"
#include "log.h"
#include "pool.h"

#include <errno.h>
#include <stdarg.h>
#include <stdlib.h>
#include <string.h>
#include <sys/time.h>
#include <time.h>

#define CACHE_HOST_MAX 256
#define CACHE_DEFAULT_HOST "127.0.0.1"
#define CACHE_DEFAULT_PORT 6379
/* Redis's own ceiling on "databases" is configurable; this only stops junk. */
#define CACHE_DB_MAX 65535
/* A Redis that is down warns at most this often per connection. */
#define CACHE_WARN_EVERY_S 10

struct cache {
	char host[CACHE_HOST_MAX];
	int port;
	int db;
	redisContext *ctx; /* NULL while not connected */
	time_t last_warn;  /* CLOCK_MONOTONIC seconds of the last warning */
	long suppressed;   /* warnings not written since */
};

/* The pool mechanism is pool.c's; this only adds the URL to open with. */
struct cache_pool {
	struct pool *pool;
	char url[]; /* the open callback's argument; lives as long as pool */
};

/* ---- URL --------------------------------------------------------------- */

/* Digits only, within [min, max]; ERR_INVALID otherwise. */
static int parse_int(const char *s, size_t n, int min, int max, int *out)
{
	long v = 0;
	size_t i;

	if (n == 0 || n > 9)
		return ERR_INVALID;
	for (i = 0; i < n; i++) {
		if (s[i] < '0' || s[i] > '9')
			return ERR_INVALID;
		v = v * 10 + (s[i] - '0');
	}
	if (v < min || v > max)
		return ERR_INVALID;
	*out = (int)v;
	return ERR_OK;
}

static int host_char_ok(char ch)
{
	return (ch >= 'a' && ch <= 'z') || (ch >= 'A' && ch <= 'Z') || (ch >= '0' && ch <= '9') ||
	       ch == '.' || ch == '-' || ch == '_';
}

/*
 * redis://[host][:port][/db], host a name, an IPv4 address or [an IPv6
 * one]. Anything else (a password, a query, another scheme) is refused
 * rather than half understood.
 */
static int cache_parse_url(const char *url, char *host, int *port, int *db)
{
	static const char scheme[] = "redis://";
	const char *p, *start;
	size_t n;
	int rc;

	if (!url || strncmp(url, scheme, sizeof(scheme) - 1) != 0)
		return ERR_INVALID;
	p = url + sizeof(scheme) - 1;
	*port = CACHE_DEFAULT_PORT;
	*db = 0;

	if (*p == '[') {
		start = ++p;
		while (*p && *p != ']') {
			if (!host_char_ok(*p) && *p != ':')
				return ERR_INVALID;
			p++;
		}
		if (*p != ']' || p == start)
			return ERR_INVALID;
		n = (size_t)(p - start);
		p++;
	} else {
		start = p;
		while (host_char_ok(*p))
			p++;
		n = (size_t)(p - start);
	}
	if (n >= CACHE_HOST_MAX)
		return ERR_INVALID;
	if (n == 0) {
		memcpy(host, CACHE_DEFAULT_HOST, sizeof(CACHE_DEFAULT_HOST));
	} else {
		memcpy(host, start, n);
		host[n] = '\0';
	}

	if (*p == ':') {
		start = ++p;
		while (*p && *p != '/')
			p++;
		rc = parse_int(start, (size_t)(p - start), 1, 65535, port);
		if (rc != ERR_OK)
			return rc;
	}
	if (*p == '/') {
		start = ++p;
		while (*p)
			p++;
		/* "redis://host:port/" means db 0. */
		if (p > start) {
			rc = parse_int(start, (size_t)(p - start), 0, CACHE_DB_MAX, db);
			if (rc != ERR_OK)
				return rc;
		}
	}
	return *p ? ERR_INVALID : ERR_OK;
}

/* ---- connection -------------------------------------------------------- */

static time_t cache_now(void)
{
	struct timespec ts;

	clock_gettime(CLOCK_MONOTONIC, &ts);
	return ts.tv_sec;
}

/* A warning about this connection, unless one was written in the last
 * CACHE_WARN_EVERY_S seconds: a Redis outage would otherwise write a line
 * per request. */
static void cache_warn(struct cache *c, const char *msg, const char *reason)
{
	time_t now = cache_now();

	if (c->last_warn != 0 && now - c->last_warn < CACHE_WARN_EVERY_S) {
		c->suppressed++;
		return;
	}
	log_warn(msg, LF_STR("reason", reason ? reason : "unknown"), LF_STR("host", c->host),
	         LF_INT("port", c->port), LF_INT("warnings_suppressed", c->suppressed));
	c->last_warn = now;
	c->suppressed = 0;
}

static void cache_disconnect(struct cache *c)
{
	redisFree(c->ctx);
	c->ctx = NULL;
}

static int cache_connect(struct cache *c)
{
	const struct timeval tv = {.tv_sec = 1, .tv_usec = 0};
	redisReply *r;

	cache_disconnect(c);
	c->ctx = redisConnectWithTimeout(c->host, c->port, tv);
	if (!c->ctx) {
		cache_warn(c, "cannot connect to redis", "out of memory");
		return ERR_UNAVAILABLE;
	}
	if (c->ctx->err) {
		cache_warn(c, "cannot connect to redis", c->ctx->errstr);
		goto fail;
	}
	/* The connect timeout covers connecting only; commands get their own. */
	if (redisSetTimeout(c->ctx, tv) != REDIS_OK) {
		cache_warn(c, "cannot connect to redis", "cannot set the command timeout");
		goto fail;
	}
	/* Notices a peer that vanished without closing (failover, NAT). */
	redisEnableKeepAlive(c->ctx);
	if (c->db != 0) {
		r = redisCommand(c->ctx, "SELECT %d", c->db);
		if (!r || r->type == REDIS_REPLY_ERROR) {
			cache_warn(c, "cannot select redis database", r ? r->str : c->ctx->errstr);
			freeReplyObject(r);
			goto fail;
		}
		freeReplyObject(r);
	}
	if (c->last_warn != 0) {
		log_info("reconnected to redis", LF_STR("host", c->host), LF_INT("port", c->port),
		         LF_INT("warnings_suppressed", c->suppressed));
		c->last_warn = 0;
		c->suppressed = 0;
	}
	return ERR_OK;
fail:
	cache_disconnect(c);
	return ERR_UNAVAILABLE;
}

struct cache *cache_new(const char *url)
{
	struct cache *c;

	c = calloc(1, sizeof(*c));
	if (!c)
		return NULL;
	if (cache_parse_url(url, c->host, &c->port, &c->db) != ERR_OK) {
		/* The URL is not logged: a bad one may hold a password. */
		log_error("cannot use redis url", LF_STR("reason", "not redis://host:port/db"));
		free(c);
		return NULL;
	}
	/* A failure here is logged and retried by the first command. */
	cache_connect(c);
	return c;
}

void cache_free(struct cache *c)
{
	if (!c)
		return;
	cache_disconnect(c);
	free(c);
}

void cache_batch_init(struct cache_batch *b)
{
	b->n = 0;
	b->cap = 0;
	b->cmd = NULL;
	b->len = NULL;
	b->broken = 0;
	b->borrowed = 0;
}

void cache_batch_release(struct cache_batch *b)
{
	for (size_t i = 0; !b->borrowed && i < b->n; i++)
		redisFreeCommand(b->cmd[i]);
	free(b->cmd);
	free(b->len);
	cache_batch_init(b);
}

/* Room for n commands in all. */
static int batch_reserve(struct cache_batch *b, size_t n)
{
	size_t cap = b->cap ? b->cap : 4;
	char **cmd;
	size_t *len;

	if (n > CACHE_BATCH_MAX)
		return ERR_TOO_BIG;
	if (n <= b->cap)
		return ERR_OK;
	while (cap < n)
		cap *= 2;
	if (cap > CACHE_BATCH_MAX)
		cap = CACHE_BATCH_MAX;
	cmd = realloc(b->cmd, cap * sizeof(*cmd));
	if (!cmd)
		return ERR_NOMEM;
	b->cmd = cmd;
	len = realloc(b->len, cap * sizeof(*len));
	if (!len)
		return ERR_NOMEM;
	b->len = len;
	b->cap = cap;
	return ERR_OK;
}

/* Append cmd (len bytes, formatted, malloc'd; NULL: formatting failed). */
static int batch_push(struct cache_batch *b, char *cmd, int len)
{
	int rc = b->borrowed ? ERR_INVALID : batch_reserve(b, b->n + 1);

	if (rc == ERR_OK && (len < 0 || !cmd))
		rc = ERR_NOMEM;
	if (rc != ERR_OK) {
		if (cmd)
			redisFreeCommand(cmd);
		b->broken = 1;
		return rc;
	}
	b->cmd[b->n] = cmd;
	b->len[b->n] = (size_t)len;
	b->n++;
	return ERR_OK;
}

static int batch_vadd(struct cache_batch *b, const char *fmt, va_list ap)
{
	char *cmd = NULL;
	int len = redisvFormatCommand(&cmd, fmt, ap);

	return batch_push(b, cmd, len);
}

int cache_batch_add_argv(struct cache_batch *b, int argc, const char **argv, const size_t *argvlen)
{
	char *cmd = NULL;
	int len = redisFormatCommandArgv(&cmd, argc, argv, argvlen);

	return batch_push(b, cmd, len);
}

int cache_batch_add(struct cache_batch *b, const char *fmt, ...)
{
	va_list ap;
	int rc;

	va_start(ap, fmt);
	rc = batch_vadd(b, fmt, ap);
	va_end(ap);
	return rc;
}

int cache_batch_borrow(struct cache_batch *dst, const struct cache_batch *src)
{
	int rc;

	if (dst->n > 0 && !dst->borrowed)
		return ERR_INVALID;
	rc = batch_reserve(dst, dst->n + src->n);
	if (rc != ERR_OK)
		return rc;
	dst->borrowed = 1;
	dst->broken |= src->broken;
	memcpy(dst->cmd + dst->n, src->cmd, src->n * sizeof(src->cmd[0]));
	memcpy(dst->len + dst->n, src->len, src->n * sizeof(src->len[0]));
	dst->n += src->n;
	return ERR_OK;
}

/* One try on the current connection: write all, then read n replies. */
static int batch_send(struct cache *c, const struct cache_batch *b, redisReply **replies)
{
	size_t i;

	for (i = 0; i < b->n; i++)
		if (redisAppendFormattedCommand(c->ctx, b->cmd[i], b->len[i]) != REDIS_OK)
			return -1;
	for (i = 0; i < b->n; i++) {
		void *rep = NULL;

		if (redisGetReply(c->ctx, &rep) != REDIS_OK || !rep) {
			while (i > 0)
				freeReplyObject(replies[--i]);
			return -1;
		}
		replies[i] = rep;
	}
	return 0;
}

int cache_batch_run(struct cache *c, const struct cache_batch *b, redisReply **replies)
{
	int saved_errno;

	if (!c || !b || b->broken)
		return ERR_INVALID;
	if (b->n == 0)
		return ERR_OK;
	if (c->ctx && !c->ctx->err) {
		errno = 0;
		if (batch_send(c, b, replies) == 0)
			return ERR_OK;
		saved_errno = errno;
		/*
		 * A timeout means Redis is slow, not gone, and the commands may
		 * still run: sending them again could apply them twice and would
		 * double the wait, so they are not retried. Either way the
		 * connection is out of step with its replies now.
		 */
		if (c->ctx->err == REDIS_ERR_IO &&
		    (saved_errno == EAGAIN || saved_errno == EWOULDBLOCK)) {
			cache_warn(c, "redis command timed out", c->ctx->errstr);
			cache_disconnect(c);
			return ERR_UNAVAILABLE;
		}
		cache_warn(c, "lost connection to redis",
		           c->ctx->err ? c->ctx->errstr : "no reply");
	}
	/* Not connected, or the connection just broke: one new one, one try. */
	if (cache_connect(c) != ERR_OK)
		return ERR_UNAVAILABLE;
	if (batch_send(c, b, replies) == 0)
		return ERR_OK;
	cache_warn(c, "redis command failed", c->ctx->err ? c->ctx->errstr : "no reply");
	cache_disconnect(c);
	return ERR_UNAVAILABLE;
}

/* A batch of one: the same write, read and retry rules. */
redisReply *cache_command(struct cache *c, const char *fmt, ...)
{
	struct cache_batch b;
	redisReply *r = NULL;
	va_list ap;

	if (!c || !fmt)
		return NULL;
	cache_batch_init(&b);
	va_start(ap, fmt);
	batch_vadd(&b, fmt, ap);
	va_end(ap);
	if (cache_batch_run(c, &b, &r) != ERR_OK)
		r = NULL;
	cache_batch_release(&b);
	return r;
}

int cache_ping(struct cache *c)
{
	redisReply *r = cache_command(c, "PING");
	int rc;

	if (!r)
		return ERR_UNAVAILABLE;
	rc = r->type == REDIS_REPLY_STATUS && r->str && strcmp(r->str, "PONG") == 0 ? ERR_OK
	                                                                            : ERR_CACHE;
	freeReplyObject(r);
	return rc;
}

/* ---- pool -------------------------------------------------------------- */

/* A cache whose connection failed is still handed out and reconnects on
 * use: only a bad URL (checked by cache_pool_new) or ERR_NOMEM is NULL. */
static void *cache_pool_open(void *arg)
{
	return cache_new(arg);
}

static void cache_pool_close(void *conn, void *arg)
{
	(void)arg;
	cache_free(conn);
}

static const struct pool_ops cache_pool_ops = {
    .open = cache_pool_open,
    .close = cache_pool_close,
    .reset = NULL,
};

/* NULL on a bad URL (checked here, so a daemon fails at start) or ERR_NOMEM. */
struct cache_pool *cache_pool_new(const char *url, int size)
{
	char host[CACHE_HOST_MAX];
	struct cache_pool *p;
	int port, db;
	size_t n;

	if (size < 1 || cache_parse_url(url, host, &port, &db) != ERR_OK) {
		log_error("cannot use redis url", LF_STR("reason", "not redis://host:port/db"));
		return NULL;
	}
	n = strlen(url) + 1;
	p = malloc(sizeof(*p) + n);
	if (!p)
		return NULL;
	memcpy(p->url, url, n);
	p->pool = pool_new(size, &cache_pool_ops, p->url);
	if (!p->pool) {
		free(p);
		return NULL;
	}
	return p;
}

/* Every connection must have been put back first. */
void cache_pool_free(struct cache_pool *p)
{
	if (!p)
		return;
	pool_free(p->pool);
	free(p);
}

struct cache *cache_pool_get(struct cache_pool *p)
{
	return p ? pool_get(p->pool) : NULL;
}

/* A connection must come back with no reply pending (every
 * redisAppendCommand matched by a redisGetReply). */
void cache_pool_put(struct cache_pool *p, struct cache *c)
{
	if (p)
		pool_put(p->pool, c);
}
