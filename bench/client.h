/*
 * client.h: orders-bench's HTTP/1.1 keep-alive client: a few threads, each with
 * its own epoll set and share of the connections, firing POST /v1/checkouts
 * either closed loop (a connection sends its next checkout once the last is
 * answered) or open loop (checkout i is due at t0 + i / rate, whatever the
 * server does; its latency counts from then, so a stall is not hidden).
 *
 * The caller fills in struct bench's options, calls client_run, and reads the
 * figures afterwards: client_stats, the per-request latencies and, per key,
 * the order its first 202 named. Nothing here is thread-safe for the caller:
 * one run at a time, and the figures only once client_run has returned.
 */
#ifndef ORDERS_BENCH_CLIENT_H
#define ORDERS_BENCH_CLIENT_H

#include <pthread.h>
#include <stdatomic.h>
#include <stdint.h>
#include <stdio.h>

#include <netinet/in.h>

#include "follow.h"
#include "util.h"

#define MAX_THREADS 64
#define MAX_CONNS 100000
#define MAX_COUNT 20000000L
#define MAX_SKUS 256
#define MAX_CARDS 16
#define STATUS_MAX 600
#define KEY_LOCKS 256
/* A request's latency slot before (or without) an answer. */
#define NO_ANSWER UINT32_MAX

struct options {
	long count;
	int conns;
	int threads;
	double rate; /* open loop: requests per second; 0 = closed loop */
	double repeat_ratio;
	double duration_s; /* send no new checkout after this long */
	struct in_addr host;
	int port;
	char auth[160]; /* "Bearer <key>" */
	char prefix[48];
	const char *skus[MAX_SKUS];
	int nskus;
	struct util_card cards[MAX_CARDS];
	int ncards;
	unsigned card_total;
	int two_line_pct;
	int timeout_ms;
	double follow_stall_s; /* > 0: follow the accepted orders; give up after this long idle */
	double follow_max_s;   /* > 0: stop following after this long in all */
	const char *json_path;
	const char *ids_path;
	uint64_t seed;
};

struct stats {
	long sent;
	long answered;
	long ok;       /* 2xx */
	long accepted; /* 202 */
	long non2xx;
	long sock_errors; /* resets, early closes, bad responses */
	long timeouts;
	long connect_errors;
	long idle_closes; /* idle keep-alive connections the server closed */
	long dup_answers; /* 202s naming another order than the key's first 202 */
	long status[STATUS_MAX];
};

/* What the 202s said for one key. */
struct key_slot {
	char order_id[FOLLOW_ID_LEN + 1];
	int accepted;
};

struct worker;

struct bench {
	struct options o;
	struct worker *workers;
	struct key_slot *keys; /* o.count of them, by key index (client_key_of) */
	uint32_t *lat;         /* per request: microseconds from due to answer; NO_ANSWER if none */
	uint32_t *svc;         /* per request: microseconds from send to answer */
	pthread_mutex_t key_locks[KEY_LOCKS];
	atomic_long next;     /* closed loop: the next request to send */
	atomic_int connected; /* workers done opening their connections */
	atomic_int go;        /* 1 once t0 is set */
	atomic_int stop;      /* 1 on a fatal error */
	double t0;            /* CLOCK_MONOTONIC seconds when sending began */
};

/*
 * client_run - open o.conns connections (all before t0, at most 256 per
 * thread connecting at once), send the checkouts, wait for every answer or
 * timeout, close. A progress line goes to progress every second. 0, or -1
 * when it could not start (memory, threads); failed requests are figures, not
 * errors. Free what it allocated with client_release, also after -1.
 */
int client_run(struct bench *b, FILE *progress);

/* client_release - free the threads' state, keys and latencies. */
void client_release(struct bench *b);

/* client_stats - the sum of every thread's counters. */
void client_stats(const struct bench *b, struct stats *s);

/* client_key_of - the key index request i uses (its own, or a repeated one's). */
long client_key_of(const struct options *o, long i);

/* client_key_text - the Idempotency-Key of key index k. */
void client_key_text(const struct options *o, long k, char *out, size_t len);

#endif
