/*
 * ratelimit.h: per-key request rate limits shared by every API instance.
 *
 * A key may make `limit` requests in each fixed one-second window (the
 * current epoch second). The count lives in Redis, in a counter named
 * "rl:<key name>:<epoch second>" that expires a few seconds later, so every
 * instance draws from the same quota. Asking Redis for every request would
 * put a round trip on each one, so an instance leases a batch instead: one
 * atomic INCRBY (with its EXPIRE) claims `batch` requests of the window's
 * quota, and requests are then admitted from that lease locally, under a
 * mutex, until it is used up. batch = max(1, limit / 50), so a key costs
 * at most 50 leases a second across all instances (plus one per instance
 * that finds the quota gone), however fast it is used.
 *
 * What the counter says after a lease tells how much of the claim was
 * really left: an instance keeps only min(batch, limit - count before its
 * claim) of it, and once the counter has reached the limit, the instance
 * refuses the key's requests until the next window without asking again.
 *
 * Bounds, per key and window, with N instances:
 *   - over-admission: none; every admitted request was leased from the
 *     shared counter, and leases never exceed the limit. Two effects of
 *     fixed windows remain: a burst at the end of one window and the start
 *     of the next can admit up to 2 x limit within one sliding second, and
 *     instances whose clocks differ by d < 1 s may serve adjacent windows
 *     at the same moment (same 2 x limit bound). Keep clocks synchronised.
 *   - under-admission: a lease not used up when its window ends is lost,
 *     at most batch - 1 requests per instance, so a key whose traffic moves
 *     between instances may be refused after limit - N x (batch - 1)
 *     admissions (about 2% of the limit per instance).
 *   - Redis unreachable: the request is admitted unchecked (fail open) and
 *     the key is not checked again for one second; then Redis is asked
 *     again. No request ever fails because of the limiter.
 *
 * Thread-safety: ratelimit_take may be called from any number of threads
 * at once; ratelimit_add must finish before the first take. While one
 * thread leases for a key, the key's other requests that find no tokens
 * wait for that lease (as long as the store's own timeouts allow) rather
 * than claiming batches the key may not need.
 */
#ifndef ORDERS_RATELIMIT_H
#define ORDERS_RATELIMIT_H

#include <stddef.h>
#include <stdint.h>

#define RATELIMIT_NAME_MAX 64
/* A lease is limit / RATELIMIT_LEASE_PARTS of the window's quota. */
#define RATELIMIT_LEASE_PARTS 50
/* How long a window's counter outlives the window, in seconds. */
#define RATELIMIT_COUNTER_TTL_S 5
/* After a failed lease, a key is admitted unchecked for this long. */
#define RATELIMIT_FAIL_OPEN_MS 1000

/*
 * ratelimit_lease_fn - add n to the counter named counter, creating it when
 * missing, (re)set its lifetime to ttl_s seconds, and give its new value in
 * *total; ERR_OK, or another code when the store cannot be reached or
 * answers something else (the limiter then fails open). Called from the
 * request threads, several at once, never with the limiter's lock held.
 */
typedef int (*ratelimit_lease_fn)(void *arg, const char *counter, long long n, int ttl_s,
                                  long long *total);

/* ratelimit_clock_fn - milliseconds since the epoch. */
typedef int64_t (*ratelimit_clock_fn)(void *arg);

struct ratelimit_options {
	ratelimit_lease_fn lease; /* required */
	void *lease_arg;
	ratelimit_clock_fn clock; /* NULL: CLOCK_REALTIME */
	void *clock_arg;
};

enum ratelimit_verdict {
	RATELIMIT_ALLOW = 0, /* within the limit (or the key has none) */
	RATELIMIT_DENY,      /* over the limit for this window */
	RATELIMIT_UNCHECKED, /* admitted because the counter could not be reached */
};

struct ratelimit;

/* ratelimit_new - a limiter for up to max_keys keys; NULL on ERR_NOMEM or
 * without a lease function. o is copied. */
struct ratelimit *ratelimit_new(const struct ratelimit_options *o, size_t max_keys);

/* ratelimit_free - NULL is a no-op; no take may be running. */
void ratelimit_free(struct ratelimit *rl);

/*
 * ratelimit_add - a key named name (1 to RATELIMIT_NAME_MAX characters of
 * [A-Za-z0-9_-], it becomes part of the counter's name) allowed limit
 * requests a second, 0 for no limit. Its index for ratelimit_take goes in
 * *index. ERR_INVALID on a bad name or a negative limit, ERR_TOO_BIG past
 * max_keys.
 */
int ratelimit_add(struct ratelimit *rl, const char *name, long limit, size_t *index);

/*
 * ratelimit_take - count one request of key index. On RATELIMIT_DENY,
 * *retry_after_s (may be NULL) is set to the whole seconds until the next
 * window, at least 1. An unknown index is allowed.
 */
enum ratelimit_verdict ratelimit_take(struct ratelimit *rl, size_t index, int *retry_after_s);

/*
 * ratelimit_redis_lease - the lease function for Redis; arg is a struct
 * cache_pool. One EVAL of INCRBY and EXPIRE, atomic in Redis. ERR_UNAVAILABLE
 * when Redis cannot be reached, ERR_CACHE when it answers with an error.
 */
int ratelimit_redis_lease(void *arg, const char *counter, long long n, int ttl_s, long long *total);

#endif
