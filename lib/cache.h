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
