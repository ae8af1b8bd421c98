/* settle.c: the Redis records of confirmed checkouts, written for many at once, then resumed. */
#include "api.h"

#include <pthread.h>
#include <stdlib.h>
#include <time.h>

#include "err.h"
#include "log.h"

/*
 * What a request must have in Redis before its answer (a checkout's
 * idempotency record) used to cost each request a round trip of its own on
 * an HTTP thread, which blocked that thread for it. The broker confirms
 * messages in bursts (one basic.ack covers hundreds), so the settler takes
 * every confirmed request queued so far, writes all their commands in one
 * pipelined batch on a connection of its own, and then resumes them.
 */
/*
 * A 202 promises that GET /v1/orders shows the order at once, so a request
 * is answered only once its records are in Redis. When Redis fails, the
 * settler keeps the requests and tries again, backing off from
 * RETRY_FIRST_MS to RETRY_MAX_MS, until the request's settle_by (its key's
 * in-flight record expires just after: past it, a retry with another body
 * could take the key), at most GIVE_UP_MS after the confirm. A request it
 * gives up on (or holds when the API stops) is resumed with settle_failed
 * set, and its connection is closed without an answer: the client retries
 * with its Idempotency-Key and gets the same order.
 */
#define RETRY_FIRST_MS 50
#define RETRY_MAX_MS 1000
#define GIVE_UP_MS 30000

struct settler {
	struct cache *cache;
	pthread_t thread;
	pthread_mutex_t mu;
	pthread_cond_t cv;           /* on CLOCK_MONOTONIC */
	struct request *head, *tail; /* guarded by mu; linked by settle_next */
	int stop;                    /* guarded by mu */
	int joined;                  /* the owner's: settler_stop has joined the thread */
	/* The thread's own: requests whose records failed, and when to retry. */
	struct request *retry, *retry_tail;
	int64_t retry_at_ms;
	int backoff_ms;
};

static int64_t now_ms(void)
{
	return api_now_ns() / 1000000;
}

/* Wake r's connection: from here on the request is its MHD thread's. */
static void resume(struct request *r, int failed)
{
	struct MHD_Connection *conn = r->conn;

	r->settle_failed = failed;
	atomic_store(&r->state, REQ_CONFIRMED);
	MHD_resume_connection(conn);
}

/* r's records were not written: keep it for another try, or give up. */
static void failed(struct settler *s, struct request *r, int stopping)
{
	int64_t now = now_ms();

	if (stopping || now - r->settle_since_ms >= GIVE_UP_MS ||
	    (r->settle_by_ms && now >= r->settle_by_ms)) {
		resume(r, 1);
		return;
	}
	r->settle_next = NULL;
	if (s->retry_tail)
		s->retry_tail->settle_next = r;
	else
		s->retry = r;
	s->retry_tail = r;
}

enum settled { SETTLED_ALL, SETTLED_SOME, SETTLED_NONE };

/*
 * Write the commands of the requests from *list that fit in one batch, in
 * one round trip; then resume those written and keep the others for a
 * retry. *list advances past them. SETTLED_NONE when Redis could not be
 * reached (nothing was written).
 */
static enum settled settle_some(struct settler *s, struct request **list, int stopping)
{
	struct request *group[CACHE_BATCH_MAX];
	size_t counts[CACHE_BATCH_MAX];
	redisReply *rep[CACHE_BATCH_MAX];
	struct cache_batch b;
	size_t n = 0, at = 0;
	enum settled out = SETTLED_ALL;
	int rc;

	cache_batch_init(&b);
	while (*list && n < CACHE_BATCH_MAX) {
		struct request *r = *list;
		size_t count = r->settle->n;

		if (cache_batch_borrow(&b, r->settle) != ERR_OK) {
			if (n > 0)
				break; /* the next batch takes it */
			/* Out of memory even alone. */
			*list = r->settle_next;
			failed(s, r, stopping);
			out = SETTLED_SOME;
			continue;
		}
		group[n] = r;
		counts[n++] = count;
		*list = r->settle_next;
	}
	rc = n ? cache_batch_run(s->cache, &b, rep) : ERR_OK;
	if (rc != ERR_OK)
		out = SETTLED_NONE;
	for (size_t i = 0; i < n; i++) {
		struct request *r = group[i];
		int ok = rc == ERR_OK;

		/* An error reply (a replica that turned read-only during a
		 * failover, out of memory) fails only its own request. */
		for (size_t k = 0; rc == ERR_OK && k < counts[i]; k++, at++) {
			if (rep[at]->type == REDIS_REPLY_ERROR)
				ok = 0;
			freeReplyObject(rep[at]);
		}
		if (ok) {
			resume(r, 0);
		} else {
			failed(s, r, stopping);
			if (out == SETTLED_ALL)
				out = SETTLED_SOME;
		}
	}
	cache_batch_release(&b);
	return out;
}

/*
 * Settle list; schedule the next retry from the outcome. Once Redis cannot
 * be reached, the rest of the list is not tried in this round: each try
 * would wait for the command timeout, holding back new confirms (and, when
 * stopping, the API's exit).
 */
static void settle_list(struct settler *s, struct request *list, int stopping)
{
	enum settled worst = SETTLED_ALL;

	while (list) {
		enum settled got = settle_some(s, &list, stopping);

		if (got > worst)
			worst = got;
		if (got == SETTLED_NONE) {
			while (list) {
				struct request *r = list;

				list = r->settle_next;
				failed(s, r, stopping);
			}
		}
	}
	if (worst == SETTLED_ALL && s->backoff_ms) {
		log_info("redis takes confirmed checkouts' records again");
		s->backoff_ms = 0;
	} else if (worst != SETTLED_ALL) {
		if (!s->backoff_ms)
			log_warn("cannot record confirmed checkouts in redis; their answers wait",
			         LF_INT("retry_ms", RETRY_FIRST_MS));
		s->backoff_ms = s->backoff_ms ? s->backoff_ms * 2 : RETRY_FIRST_MS;
		if (s->backoff_ms > RETRY_MAX_MS)
			s->backoff_ms = RETRY_MAX_MS;
		s->retry_at_ms = now_ms() + s->backoff_ms;
	}
}

/* Wait on s->cv until at_ms (CLOCK_MONOTONIC); mu held. */
static void wait_until(struct settler *s, int64_t at_ms)
{
	struct timespec ts = {.tv_sec = at_ms / 1000, .tv_nsec = (at_ms % 1000) * 1000000};

	pthread_cond_timedwait(&s->cv, &s->mu, &ts);
}

static void *settler_main(void *arg)
{
	struct settler *s = arg;

	for (;;) {
		struct request *list;
		int stop;

		pthread_mutex_lock(&s->mu);
		while (!s->head && !s->stop) {
			if (!s->retry)
				pthread_cond_wait(&s->cv, &s->mu);
			else if (now_ms() < s->retry_at_ms)
				wait_until(s, s->retry_at_ms);
			else
				break;
		}
		list = s->head;
		s->head = s->tail = NULL;
		stop = s->stop;
		pthread_mutex_unlock(&s->mu);
		/* Retries go first, in the order they were confirmed. */
		if (s->retry && (stop || now_ms() >= s->retry_at_ms)) {
			s->retry_tail->settle_next = list;
			list = s->retry;
			s->retry = s->retry_tail = NULL;
		}
		if (!list && stop && !s->retry)
			break;
		settle_list(s, list, stop);
	}
	return NULL;
}

static int cond_init_monotonic(pthread_cond_t *cv)
{
	pthread_condattr_t attr;
	int rc;

	if (pthread_condattr_init(&attr) != 0)
		return -1;
	rc = pthread_condattr_setclock(&attr, CLOCK_MONOTONIC);
	if (rc == 0)
		rc = pthread_cond_init(cv, &attr);
	pthread_condattr_destroy(&attr);
	return rc;
}

struct settler *settler_new(const char *redis_url)
{
	struct settler *s = calloc(1, sizeof(*s));

	if (!s)
		return NULL;
	s->cache = cache_new(redis_url);
	if (!s->cache)
		goto fail;
	if (pthread_mutex_init(&s->mu, NULL) != 0)
		goto fail_cache;
	if (cond_init_monotonic(&s->cv) != 0)
		goto fail_mu;
	if (pthread_create(&s->thread, NULL, settler_main, s) != 0)
		goto fail_cv;
	return s;
fail_cv:
	pthread_cond_destroy(&s->cv);
fail_mu:
	pthread_mutex_destroy(&s->mu);
fail_cache:
	cache_free(s->cache);
fail:
	free(s);
	return NULL;
}

int settler_push(struct settler *s, struct request *r)
{
	int was_empty;

	if (!s || !r->settle || r->settle->n == 0 || r->settle->n > CACHE_BATCH_MAX)
		return ERR_INVALID;
	pthread_mutex_lock(&s->mu);
	if (s->stop) {
		pthread_mutex_unlock(&s->mu);
		return ERR_CLOSED;
	}
	r->settle_next = NULL;
	r->settle_since_ms = now_ms();
	was_empty = !s->head;
	if (s->tail)
		s->tail->settle_next = r;
	else
		s->head = r;
	s->tail = r;
	if (was_empty)
		pthread_cond_signal(&s->cv);
	pthread_mutex_unlock(&s->mu);
	return ERR_OK;
}

void settler_stop(struct settler *s)
{
	if (!s || s->joined)
		return;
	pthread_mutex_lock(&s->mu);
	s->stop = 1;
	pthread_cond_signal(&s->cv);
	pthread_mutex_unlock(&s->mu);
	/* The thread tries once more to settle whatever it holds, resumes
	 * all of it, and ends. */
	pthread_join(s->thread, NULL);
	s->joined = 1;
}

void settler_free(struct settler *s)
{
	if (!s)
		return;
	settler_stop(s);
	pthread_cond_destroy(&s->cv);
	pthread_mutex_destroy(&s->mu);
	cache_free(s->cache);
	free(s);
}
