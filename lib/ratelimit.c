/* ratelimit.c: per-key rate limits from leases of a shared per-second counter. */
#include "ratelimit.h"

#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "cache.h"
#include "err.h"
#include "log.h"

/*
 * One key's local state. Everything but name, limit and batch (fixed by
 * ratelimit_add) is guarded by lock. At most one thread leases for a key
 * at a time (leasing); the others wait on leased rather than claiming a
 * second batch the key may not need.
 */
struct rl_key {
	pthread_mutex_t lock;
	pthread_cond_t leased;
	char name[RATELIMIT_NAME_MAX + 1];
	long limit; /* 0: none */
	long batch;
	int64_t window;     /* the epoch second tokens belong to */
	long tokens;        /* leased for window and not used yet */
	int exhausted;      /* window's quota is leased out: refuse until the next */
	int leasing;        /* a thread is asking the counter */
	int64_t open_until; /* ms; after a failed lease, admit unchecked until then */
};

struct ratelimit {
	struct ratelimit_options o;
	size_t nkeys, max_keys;
	struct rl_key keys[];
};

static int64_t realtime_ms(void *arg)
{
	struct timespec ts;
	(void)arg;

	clock_gettime(CLOCK_REALTIME, &ts);
	return (int64_t)ts.tv_sec * 1000 + ts.tv_nsec / 1000000;
}

struct ratelimit *ratelimit_new(const struct ratelimit_options *o, size_t max_keys)
{
	struct ratelimit *rl;

	if (!o || !o->lease || max_keys > 4096)
		return NULL;
	rl = calloc(1, sizeof(*rl) + max_keys * sizeof(rl->keys[0]));
	if (!rl)
		return NULL;
	rl->o = *o;
	if (!rl->o.clock)
		rl->o.clock = realtime_ms;
	rl->max_keys = max_keys;
	return rl;
}

void ratelimit_free(struct ratelimit *rl)
{
	size_t i;

	if (!rl)
		return;
	for (i = 0; i < rl->nkeys; i++) {
		pthread_mutex_destroy(&rl->keys[i].lock);
		pthread_cond_destroy(&rl->keys[i].leased);
	}
	free(rl);
}

static int valid_name(const char *s)
{
	size_t n = 0;

	for (; s[n]; n++) {
		char c = s[n];

		if (!((c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9') ||
		      c == '_' || c == '-'))
			return 0;
	}
	return n >= 1 && n <= RATELIMIT_NAME_MAX;
}

int ratelimit_add(struct ratelimit *rl, const char *name, long limit, size_t *index)
{
	struct rl_key *k;

	if (!rl || !name || !valid_name(name) || limit < 0)
		return ERR_INVALID;
	if (rl->nkeys == rl->max_keys)
		return ERR_TOO_BIG;
	k = &rl->keys[rl->nkeys];
	if (pthread_mutex_init(&k->lock, NULL) != 0)
		return ERR_NOMEM;
	if (pthread_cond_init(&k->leased, NULL) != 0) {
		pthread_mutex_destroy(&k->lock);
		return ERR_NOMEM;
	}
	memcpy(k->name, name, strlen(name) + 1);
	k->limit = limit;
	k->batch = limit / RATELIMIT_LEASE_PARTS > 1 ? limit / RATELIMIT_LEASE_PARTS : 1;
	k->window = -1;
	*index = rl->nkeys++;
	return ERR_OK;
}

static int retry_after(int64_t now_ms)
{
	int64_t next = (now_ms / 1000 + 1) * 1000;
	int s = (int)((next - now_ms + 999) / 1000);

	return s < 1 ? 1 : s;
}

/*
 * Claim a batch of window's quota, with the lock released meanwhile (the
 * caller set k->leasing). Returns the lock held and k->leasing cleared, and
 * the verdict for the calling request: it takes the lease's first token.
 */
static enum ratelimit_verdict lease(struct ratelimit *rl, struct rl_key *k, int64_t window,
                                    int64_t now)
{
	char counter[RATELIMIT_NAME_MAX + 32];
	long long total = 0, before;
	long granted;
	int rc;

	pthread_mutex_unlock(&k->lock);
	snprintf(counter, sizeof(counter), "rl:%s:%lld", k->name, (long long)window);
	rc = rl->o.lease(rl->o.lease_arg, counter, k->batch, RATELIMIT_COUNTER_TTL_S, &total);
	pthread_mutex_lock(&k->lock);
	k->leasing = 0;
	pthread_cond_broadcast(&k->leased);

	if (rc != ERR_OK) {
		k->open_until = now + RATELIMIT_FAIL_OPEN_MS;
		log_warn("cannot lease rate-limit quota, admitting unchecked for a second",
		         LF_STR("key", k->name), LF_STR("reason", err_str(rc)));
		return RATELIMIT_UNCHECKED;
	}
	/* Only what was left below the limit before this claim is ours. */
	before = total - k->batch;
	granted = before >= k->limit ? 0 : (long)(k->limit - before);
	if (granted > k->batch)
		granted = k->batch;
	/* The window may have ended meanwhile: then the rest is of no use. */
	if (k->window == window) {
		if (total >= k->limit)
			k->exhausted = 1;
		if (granted > 1)
			k->tokens += granted - 1;
	}
	return granted > 0 ? RATELIMIT_ALLOW : RATELIMIT_DENY;
}

enum ratelimit_verdict ratelimit_take(struct ratelimit *rl, size_t index, int *retry_after_s)
{
	struct rl_key *k;
	enum ratelimit_verdict v;
	int64_t now, window;

	if (!rl || index >= rl->nkeys || rl->keys[index].limit == 0)
		return RATELIMIT_ALLOW;
	k = &rl->keys[index];
	pthread_mutex_lock(&k->lock);
	for (;;) {
		now = rl->o.clock(rl->o.clock_arg);
		window = now / 1000;
		if (k->window != window) {
			/* A new window: whatever was left of the last is void. */
			k->window = window;
			k->tokens = 0;
			k->exhausted = 0;
		}
		if (k->tokens > 0) {
			k->tokens--;
			v = RATELIMIT_ALLOW;
			goto out;
		}
		if (k->exhausted) {
			v = RATELIMIT_DENY;
			goto out;
		}
		if (now < k->open_until) {
			v = RATELIMIT_UNCHECKED;
			goto out;
		}
		if (!k->leasing)
			break;
		pthread_cond_wait(&k->leased, &k->lock);
	}
	k->leasing = 1;
	v = lease(rl, k, window, now);
out:
	pthread_mutex_unlock(&k->lock);
	if (v == RATELIMIT_DENY && retry_after_s)
		*retry_after_s = retry_after(now);
	return v;
}

int ratelimit_redis_lease(void *arg, const char *counter, long long n, int ttl_s, long long *total)
{
	/* One round trip, atomic in Redis: the claim and the counter's lifetime. */
	static const char script[] = "local v = redis.call('INCRBY', KEYS[1], ARGV[1]) "
	                             "redis.call('EXPIRE', KEYS[1], ARGV[2]) return v";
	struct cache_pool *pool = arg;
	struct cache *c = cache_pool_get(pool);
	redisReply *r;
	int rc = ERR_CACHE;

	if (!c)
		return ERR_UNAVAILABLE;
	r = cache_command(c, "EVAL %s 1 %s %lld %d", script, counter, n, ttl_s);
	cache_pool_put(pool, c);
	if (!r)
		return ERR_UNAVAILABLE;
	if (r->type == REDIS_REPLY_INTEGER) {
		*total = r->integer;
		rc = ERR_OK;
	}
	freeReplyObject(r);
	return rc;
}
