/*
 * ops.h: the operations endpoints every consumer daemon serves on a port of
 * its own: GET /healthz, GET /readyz, GET /metrics (libmicrohttpd, one
 * internal thread). The API serves the same paths on its main port.
 */
#ifndef ORDERS_OPS_H
#define ORDERS_OPS_H

#include <stddef.h>

#include "metrics.h"

/* Readiness check: ERR_OK when ready, else write what is failing into why. */
typedef int (*ops_ready_fn)(void *arg, char *why, size_t whylen);

struct ops;

/* ops_new - listen on bind:port (an IPv4 address: 127.0.0.1 locally,
 * 0.0.0.0 in containers). ready may be NULL (always ready). NULL on failure. */
struct ops *ops_new(const char *bind, int port, struct metrics *m, ops_ready_fn ready, void *arg);
void ops_free(struct ops *o);

#endif
