/* pool.c: a bounded, lazily filled pool of connections shared by threads (see pool.h). */
#include "pool.h"

#include <pthread.h>
#include <stdlib.h>

struct pool {
	pthread_mutex_t lock;
	pthread_cond_t cond; /* signalled when a connection is put back or a slot frees */
	struct pool_ops ops;
	void *arg;
	int size;
	int opened; /* connections that exist, idle or handed out, or being opened */
	int nidle;
	void **idle; /* size entries, the first nidle in use */
};

struct pool *pool_new(int size, const struct pool_ops *ops, void *arg)
{
	struct pool *p;

	if (size < 1 || !ops || !ops->open || !ops->close)
		return NULL;
	p = calloc(1, sizeof(*p));
	if (!p)
		return NULL;
	p->ops = *ops;
	p->arg = arg;
	p->size = size;
	p->idle = calloc((size_t)size, sizeof(*p->idle));
	if (!p->idle)
		goto fail;
	if (pthread_mutex_init(&p->lock, NULL) != 0)
		goto fail;
	if (pthread_cond_init(&p->cond, NULL) != 0) {
		pthread_mutex_destroy(&p->lock);
		goto fail;
	}
	return p;
fail:
	free(p->idle);
	free(p);
	return NULL;
}

void pool_free(struct pool *p)
{
	int i;

	if (!p)
		return;
	for (i = 0; i < p->nidle; i++)
		p->ops.close(p->idle[i], p->arg);
	pthread_cond_destroy(&p->cond);
	pthread_mutex_destroy(&p->lock);
	free(p->idle);
	free(p);
}

void *pool_get(struct pool *p)
{
	void *conn;

	if (!p)
		return NULL;
	pthread_mutex_lock(&p->lock);
	for (;;) {
		if (p->nidle > 0) {
			conn = p->idle[--p->nidle];
			pthread_mutex_unlock(&p->lock);
			return conn;
		}
		if (p->opened < p->size)
			break;
		pthread_cond_wait(&p->cond, &p->lock);
	}
	/* Take the slot, then open without the lock: opening takes a round
	 * trip or a timeout, and others may be putting back meanwhile. */
	p->opened++;
	pthread_mutex_unlock(&p->lock);
	conn = p->ops.open(p->arg);
	if (conn)
		return conn;
	pthread_mutex_lock(&p->lock);
	p->opened--;
	/* The slot is free again; a waiter may try its own luck. */
	pthread_cond_signal(&p->cond);
	pthread_mutex_unlock(&p->lock);
	return NULL;
}

void pool_put(struct pool *p, void *conn)
{
	if (!p || !conn)
		return;
	/* Outside the lock: a reset may be a round trip (a ROLLBACK). */
	if (p->ops.reset)
		p->ops.reset(conn, p->arg);
	pthread_mutex_lock(&p->lock);
	if (p->nidle < p->size) {
		p->idle[p->nidle++] = conn;
		conn = NULL;
	} else if (p->opened > 0) {
		/* More put back than taken: a caller bug; do not overflow. */
		p->opened--;
	}
	pthread_cond_signal(&p->cond);
	pthread_mutex_unlock(&p->lock);
	if (conn)
		p->ops.close(conn, p->arg);
}
