/* addrlimit.c: events per client address and second, in a fixed-size table. */
#include "addrlimit.h"

#include <pthread.h>
#include <stdatomic.h>
#include <stdlib.h>
#include <string.h>

#include <sodium.h>

#define WAYS 4

struct entry {
	struct netaddr addr;
	int64_t window; /* epoch second of count; -1: unused */
	long count;
};

struct set {
	pthread_mutex_t lock;
	struct entry e[WAYS];
};

struct addrlimit {
	long limit;
	size_t nsets; /* a power of two */
	uint8_t hash_key[crypto_shorthash_KEYBYTES];
	/* The latest window in which some address went over: while it is not
	 * the current one, nobody is over and nothing needs looking up. */
	_Atomic int64_t over_window;
	struct set sets[];
};

struct addrlimit *addrlimit_new(long limit, size_t slots)
{
	struct addrlimit *l;
	size_t nsets = 16, i, k;

	if (limit <= 0 || slots > ((size_t)1 << 24))
		return NULL;
	while (nsets * WAYS < slots)
		nsets *= 2;
	l = calloc(1, sizeof(*l) + nsets * sizeof(l->sets[0]));
	if (!l)
		return NULL;
	l->limit = limit;
	l->nsets = nsets;
	randombytes_buf(l->hash_key, sizeof(l->hash_key));
	atomic_init(&l->over_window, -1);
	for (i = 0; i < nsets; i++) {
		if (pthread_mutex_init(&l->sets[i].lock, NULL) != 0) {
			while (i--)
				pthread_mutex_destroy(&l->sets[i].lock);
			free(l);
			return NULL;
		}
		for (k = 0; k < WAYS; k++)
			l->sets[i].e[k].window = -1;
	}
	return l;
}

void addrlimit_free(struct addrlimit *l)
{
	if (!l)
		return;
	for (size_t i = 0; i < l->nsets; i++)
		pthread_mutex_destroy(&l->sets[i].lock);
	free(l);
}

static struct set *set_of(struct addrlimit *l, const struct netaddr *a)
{
	uint8_t h[crypto_shorthash_BYTES];
	uint64_t v;

	crypto_shorthash(h, a->b, sizeof(a->b), l->hash_key);
	memcpy(&v, h, sizeof(v));
	return &l->sets[v & (l->nsets - 1)];
}

/* a's entry in s for window, or NULL; s is locked. */
static struct entry *find(struct set *s, const struct netaddr *a, int64_t window)
{
	for (int k = 0; k < WAYS; k++)
		if (s->e[k].window == window && memcmp(&s->e[k].addr, a, sizeof(*a)) == 0)
			return &s->e[k];
	return NULL;
}

int addrlimit_busy(struct addrlimit *l, int64_t now_ms)
{
	return atomic_load_explicit(&l->over_window, memory_order_relaxed) == now_ms / 1000;
}

int addrlimit_over(struct addrlimit *l, const struct netaddr *a, int64_t now_ms)
{
	int64_t window = now_ms / 1000;
	struct entry *e;
	struct set *s;
	int over;

	if (!addrlimit_busy(l, now_ms))
		return 0;
	s = set_of(l, a);
	pthread_mutex_lock(&s->lock);
	e = find(s, a, window);
	over = e && e->count > l->limit;
	pthread_mutex_unlock(&s->lock);
	return over;
}

int addrlimit_add(struct addrlimit *l, const struct netaddr *a, int64_t now_ms, int *crossed)
{
	int64_t window = now_ms / 1000;
	struct set *s = set_of(l, a);
	struct entry *e;
	long count;

	pthread_mutex_lock(&s->lock);
	e = find(s, a, window);
	if (!e) {
		/* An entry of an older window, else the one with the fewest events. */
		e = &s->e[0];
		for (int k = 0; k < WAYS; k++) {
			struct entry *c = &s->e[k];

			if (c->window != window) {
				e = c;
				break;
			}
			if (c->count < e->count)
				e = c;
		}
		e->addr = *a;
		e->window = window;
		e->count = 0;
	}
	count = ++e->count;
	pthread_mutex_unlock(&s->lock);
	if (count == l->limit + 1)
		atomic_store(&l->over_window, window);
	if (crossed)
		*crossed = count == l->limit + 1;
	return count > l->limit;
}

int addrlimit_retry_after(int64_t now_ms)
{
	int64_t next = (now_ms / 1000 + 1) * 1000;
	int s = (int)((next - now_ms + 999) / 1000);

	return s < 1 ? 1 : s;
}
