/* settle.c: the Redis records of confirmed checkouts, written for many at once, then resumed. */
#include "api.h"

#include <pthread.h>
#include <stdlib.h>

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
struct settler {
	struct cache *cache;
	pthread_t thread;
	pthread_mutex_t mu;
	pthread_cond_t cv;
	struct request *head, *tail; /* guarded by mu; linked by settle_next */
	int stop;                    /* guarded by mu */
};

/* Wake r's connection: from here on the request is its MHD thread's. */
static void resume(struct request *r)
{
	struct MHD_Connection *conn = r->conn;

	atomic_store(&r->state, REQ_CONFIRMED);
	MHD_resume_connection(conn);
}

/*
 * Write the commands of the requests from *list that fit in one batch, in
 * one round trip; then resume those requests. *list advances past them.
 */
static void settle_some(struct settler *s, struct request **list)
{
	struct request *group[CACHE_BATCH_MAX];
	size_t counts[CACHE_BATCH_MAX];
	redisReply *rep[CACHE_BATCH_MAX];
	struct cache_batch b;
	size_t n = 0, at = 0;
	int rc;

	cache_batch_init(&b);
	while (*list && n < CACHE_BATCH_MAX) {
		struct request *r = *list;
		size_t count = r->settle->n;

		if (cache_batch_take(&b, r->settle) != ERR_OK) {
			if (n > 0)
				break; /* the next batch takes it */
			/* Out of memory even alone: answered without its records. */
			*list = r->settle_next;
			r->settle_failed = 1;
			resume(r);
			continue;
		}
		group[n] = r;
		counts[n++] = count;
		*list = r->settle_next;
	}
	rc = cache_batch_run(s->cache, &b, rep);
	for (size_t i = 0; i < n; i++) {
		struct request *r = group[i];

		r->settle_failed = rc != ERR_OK;
		for (size_t k = 0; rc == ERR_OK && k < counts[i]; k++, at++) {
			if (rep[at]->type == REDIS_REPLY_ERROR)
				r->settle_failed = 1;
			freeReplyObject(rep[at]);
		}
		resume(r);
	}
	cache_batch_release(&b);
}

static void *settler_main(void *arg)
{
	struct settler *s = arg;

	for (;;) {
		struct request *list;
		int stop;

		pthread_mutex_lock(&s->mu);
		while (!s->head && !s->stop)
			pthread_cond_wait(&s->cv, &s->mu);
		list = s->head;
		s->head = s->tail = NULL;
		stop = s->stop;
		pthread_mutex_unlock(&s->mu);
		if (!list && stop)
			break;
		while (list)
			settle_some(s, &list);
	}
	return NULL;
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
	if (pthread_cond_init(&s->cv, NULL) != 0)
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

void settler_free(struct settler *s)
{
	if (!s)
		return;
	pthread_mutex_lock(&s->mu);
	s->stop = 1;
	pthread_cond_signal(&s->cv);
	pthread_mutex_unlock(&s->mu);
	/* The thread settles and resumes whatever is queued before it ends. */
	pthread_join(s->thread, NULL);
	pthread_cond_destroy(&s->cv);
	pthread_mutex_destroy(&s->mu);
	cache_free(s->cache);
	free(s);
}
