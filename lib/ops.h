/*
 * ops.h: the operations endpoints every consumer daemon serves on a port of
 * its own: GET /healthz, GET /readyz, GET /metrics (libmicrohttpd, one
 * internal thread). The API serves the same paths on its main port. Also
 * the queue gauges every daemon, the API included, shows.
 */
#ifndef ORDERS_OPS_H
#define ORDERS_OPS_H

#include <stddef.h>

#include "metrics.h"
#include "mq.h"

/* Readiness check: ERR_OK when ready, else write what is failing into why. */
typedef int (*ops_ready_fn)(void *arg, char *why, size_t whylen);

struct ops;

/* ops_new - listen on bind:port (an IPv4 address: 127.0.0.1 locally,
 * 0.0.0.0 in containers). ready may be NULL (always ready). NULL on failure. */
struct ops *ops_new(const char *bind, int port, struct metrics *m, ops_ready_fn ready, void *arg);
void ops_free(struct ops *o);

/*
 * The ready-message and consumer counts of every queue in mq_stat_queues
 * (the work queues and their dead-letter queues), as a publisher that polls
 * them (poll_queue_stats_ms > 0) last read them:
 * orders_queue_messages_ready{queue} and orders_queue_consumers{queue}.
 * Caller-owned. The caller updates them from a collector of its own
 * (metrics_on_collect), which knows whether its publisher is still there.
 */
struct ops_queue_gauges {
	struct metric_family *ready;
	struct metric_family *consumers;
};

/* ops_queue_gauges_init - register both families on m. ERR_NOMEM. */
int ops_queue_gauges_init(struct ops_queue_gauges *g, struct metrics *m);

/*
 * ops_queue_gauges_update - set both from p's last poll. A queue the
 * publisher has no numbers for (not polled yet, or disconnected) keeps its
 * last values. p NULL is a no-op. Thread-safe.
 */
void ops_queue_gauges_update(const struct ops_queue_gauges *g, const struct mq_publisher *p);

#endif
