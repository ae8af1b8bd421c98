/*
 * cache.h: Redis (hiredis 0.14) connections with reconnect, and a pool.
 *
 * A struct cache is one synchronous connection used by one thread at a
 * time. Redis is a cache and a fast path, never the only copy of anything.
 */
#ifndef ORDERS_CACHE_H
#define ORDERS_CACHE_H

#include <hiredis/hiredis.h>

struct cache;

/* cache_new - parse redis://host:port/db and connect (timeout 1 s). NULL
 * when the URL is bad; a connection that fails is retried on first use. */
struct cache *cache_new(const char *url);
void cache_free(struct cache *c);

/*
 * cache_command - like redisCommand (same format), reconnecting once if the
 * connection was lost. Returns the reply (freeReplyObject it) or NULL when
 * Redis cannot be reached; a REDIS_REPLY_ERROR reply is returned as is.
 */
redisReply *cache_command(struct cache *c, const char *fmt, ...);

/*
 * A batch of commands written to Redis together and answered in one round
 * trip (pipelining): a handful of commands cost about what one does. At
 * most CACHE_BATCH_MAX commands; the arrays grow with the batch, so a small
 * one is small. Caller-owned; init, add, run (any number of times), release.
 */
#define CACHE_BATCH_MAX 128

struct cache_batch {
	size_t n, cap;
	char **cmd;   /* n commands formatted for the wire, each malloc'd */
	size_t *len;  /* their lengths */
	int broken;   /* an add failed: run refuses the batch */
	int borrowed; /* the commands are other batches' (cache_batch_borrow) */
};

void cache_batch_init(struct cache_batch *b);
void cache_batch_release(struct cache_batch *b);

/* cache_batch_add - append a command (redisCommand's format). ERR_OK;
 * ERR_TOO_BIG when the batch is full, ERR_NOMEM; either way run fails. */
int cache_batch_add(struct cache_batch *b, const char *fmt, ...);

/* cache_batch_add_argv - the same with the command as argc arguments
 * (argvlen[i] bytes of argv[i]; argvlen NULL: NUL-terminated strings):
 * no format to parse, for commands on a hot path. */
int cache_batch_add_argv(struct cache_batch *b, int argc, const char **argv, const size_t *argvlen);

/*
 * cache_batch_borrow - append src's commands to dst without copying them, so
 * that the commands of many batches go in one round trip while each batch
 * keeps its own (to run again should that round trip fail). src must outlive
 * dst's runs; releasing dst frees only its arrays. A batch either borrows or
 * adds commands of its own, never both. ERR_OK; ERR_TOO_BIG when they do not
 * all fit, ERR_NOMEM, ERR_INVALID when dst has commands of its own (nothing
 * is appended in any of these cases).
 */
int cache_batch_borrow(struct cache_batch *dst, const struct cache_batch *src);

/*
 * cache_batch_run - send every command and read one reply each into
 * replies[0..n-1], in order (freeReplyObject each; an error reply is
 * returned as is). A lost connection is reconnected and the whole batch
 * sent once more, as cache_command does; a timeout is not retried.
 * ERR_OK, or ERR_UNAVAILABLE / ERR_INVALID (a failed add) with no reply set.
 */
int cache_batch_run(struct cache *c, const struct cache_batch *b, redisReply **replies);

/* cache_ping - ERR_OK when PING answers PONG. */
int cache_ping(struct cache *c);

struct cache_pool;
struct cache_pool *cache_pool_new(const char *url, int size);
void cache_pool_free(struct cache_pool *p);
/* cache_pool_get - a connection for this thread's exclusive use (waits while
 * all are taken); NULL only on a bad URL. Give it back with put. */
struct cache *cache_pool_get(struct cache_pool *p);
void cache_pool_put(struct cache_pool *p, struct cache *c);

#endif
