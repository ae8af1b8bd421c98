/* watchdog.c: closes connections that take too long over one request (slow clients). */
#include "api.h"

#include <pthread.h>
#include <stdlib.h>
#include <sys/socket.h>
#include <time.h>

#include "log.h"

/* How often the deadlines are looked at. */
#define WATCHDOG_PERIOD_MS 250

/*
 * One connection, from MHD's "started" to its "closed" notification: its
 * socket and when it must be done with the request it is on (0: no
 * deadline). The list is guarded by the watchdog's lock; the deadline is
 * atomic, so that arming it per request takes no lock.
 */
struct wd_conn {
	struct wd_conn *prev, *next;
	MHD_socket fd;
	_Atomic int64_t deadline_ms;
};

struct watchdog {
	pthread_mutex_t lock;
	pthread_cond_t wake;
	pthread_t thread;
	int stop;
	int64_t budget_ms;
	struct wd_conn head; /* the list's sentinel */
	struct metric_family *closed;
};

static int64_t mono_ms(void)
{
	struct timespec ts;

	clock_gettime(CLOCK_MONOTONIC, &ts);
	return (int64_t)ts.tv_sec * 1000 + ts.tv_nsec / 1000000;
}

/*
 * Every connection past its deadline is shut down, not closed: its file
 * descriptor stays MHD's, which sees the end of the stream and closes the
 * connection itself. MHD reports "closed" (and so unlinks the entry under
 * the lock held here) before it closes the descriptor, so the descriptor
 * shut down is never one that has been reused for another connection.
 */
static int sweep(struct watchdog *w, int64_t now)
{
	int n = 0;

	pthread_mutex_lock(&w->lock);
	for (struct wd_conn *c = w->head.next; c != &w->head; c = c->next) {
		int64_t d = atomic_load_explicit(&c->deadline_ms, memory_order_relaxed);

		if (d && d <= now) {
			shutdown(c->fd, SHUT_RDWR);
			atomic_store_explicit(&c->deadline_ms, 0, memory_order_relaxed);
			n++;
		}
	}
	pthread_mutex_unlock(&w->lock);
	return n;
}

static void *watchdog_run(void *arg)
{
	struct watchdog *w = arg;

	pthread_mutex_lock(&w->lock);
	while (!w->stop) {
		struct timespec ts;
		int n;

		clock_gettime(CLOCK_REALTIME, &ts);
		ts.tv_nsec += WATCHDOG_PERIOD_MS * 1000000L;
		if (ts.tv_nsec >= 1000000000L) {
			ts.tv_sec++;
			ts.tv_nsec -= 1000000000L;
		}
		pthread_cond_timedwait(&w->wake, &w->lock, &ts);
		if (w->stop)
			break;
		pthread_mutex_unlock(&w->lock);
		n = sweep(w, mono_ms());
		if (n) {
			metric_add(w->closed, NULL, n);
			/* One line per sweep at most, whatever a flood does. */
			log_warn("closed connections past their request deadline",
			         LF_INT("connections", n));
		}
		pthread_mutex_lock(&w->lock);
	}
	pthread_mutex_unlock(&w->lock);
	return NULL;
}

struct watchdog *watchdog_new(int budget_s, struct metric_family *closed)
{
	struct watchdog *w = calloc(1, sizeof(*w));

	if (!w)
		return NULL;
	w->budget_ms = (int64_t)budget_s * 1000;
	w->closed = closed;
	w->head.next = w->head.prev = &w->head;
	if (pthread_mutex_init(&w->lock, NULL) != 0) {
		free(w);
		return NULL;
	}
	if (pthread_cond_init(&w->wake, NULL) != 0 ||
	    pthread_create(&w->thread, NULL, watchdog_run, w) != 0) {
		pthread_mutex_destroy(&w->lock);
		free(w);
		return NULL;
	}
	return w;
}

void watchdog_free(struct watchdog *w)
{
	if (!w)
		return;
	pthread_mutex_lock(&w->lock);
	w->stop = 1;
	pthread_cond_signal(&w->wake);
	pthread_mutex_unlock(&w->lock);
	pthread_join(w->thread, NULL);
	/* MHD has stopped: its "closed" notifications have emptied the list. */
	pthread_cond_destroy(&w->wake);
	pthread_mutex_destroy(&w->lock);
	free(w);
}

void watchdog_notify(void *cls, struct MHD_Connection *conn, void **socket_context,
                     enum MHD_ConnectionNotificationCode code)
{
	struct watchdog *w = cls;
	struct wd_conn *c = *socket_context;

	if (code == MHD_CONNECTION_NOTIFY_STARTED) {
		const union MHD_ConnectionInfo *fd =
		    MHD_get_connection_info(conn, MHD_CONNECTION_INFO_CONNECTION_FD);

		c = fd ? calloc(1, sizeof(*c)) : NULL;
		if (!c)
			return; /* unwatched: the idle timeout still applies */
		c->fd = fd->connect_fd;
		atomic_init(&c->deadline_ms, mono_ms() + w->budget_ms);
		pthread_mutex_lock(&w->lock);
		c->next = w->head.next;
		c->prev = &w->head;
		w->head.next->prev = c;
		w->head.next = c;
		pthread_mutex_unlock(&w->lock);
		*socket_context = c;
		return;
	}
	if (!c)
		return;
	pthread_mutex_lock(&w->lock);
	c->prev->next = c->next;
	c->next->prev = c->prev;
	pthread_mutex_unlock(&w->lock);
	*socket_context = NULL;
	free(c);
}

static struct wd_conn *conn_of(struct MHD_Connection *conn)
{
	const union MHD_ConnectionInfo *info =
	    MHD_get_connection_info(conn, MHD_CONNECTION_INFO_SOCKET_CONTEXT);

	return info ? info->socket_context : NULL;
}

void watchdog_arm(struct watchdog *w, struct MHD_Connection *conn)
{
	struct wd_conn *c = conn_of(conn);

	if (c)
		atomic_store_explicit(&c->deadline_ms, mono_ms() + w->budget_ms,
		                      memory_order_relaxed);
}

void watchdog_disarm(struct MHD_Connection *conn)
{
	struct wd_conn *c = conn_of(conn);

	if (c)
		atomic_store_explicit(&c->deadline_ms, 0, memory_order_relaxed);
}
