/*
 * follow.h: following accepted checkouts to their final status in PostgreSQL, in
 * bulk, for orders-bench; then the checks that no order was lost or duplicated.
 *
 * Reading the orders table by primary key, a few thousand ids per query, is far
 * cheaper than GET /v1/orders/{id} per order, and it does not load the API that
 * is being measured. Single-threaded: one caller at a time.
 */
#ifndef ORDERS_BENCH_FOLLOW_H
#define ORDERS_BENCH_FOLLOW_H

#include <stdio.h>

/* Idempotency-Keys orders-bench makes are shorter than this. */
#define FOLLOW_KEY_MAX 96
#define FOLLOW_ID_LEN 36

/* One accepted checkout: its key and the order id its 202 named. */
struct follow_order {
	char key[FOLLOW_KEY_MAX];
	char order_id[FOLLOW_ID_LEN + 1];
	int final; /* set by follow_run once the order has a final status */
};

/* The final statuses, in the order of follow_result.statuses. */
#define FOLLOW_STATUSES 4
extern const char *const follow_status_names[FOLLOW_STATUSES];

struct follow_result {
	long orders;     /* accepted orders followed */
	long final;      /* of those, with a final status */
	long not_final;  /* accepted, not final when following ended */
	long lost;       /* not final, and none became final for stall_s: stuck */
	int capped;      /* following stopped at max_s while orders still completed */
	long duplicated; /* keys with another order than their 202 named, or two */
	long dup_events; /* orders with more than one final event */
	long no_event;   /* final orders without a final event (yet) */
	long statuses[FOLLOW_STATUSES];
	double first_created; /* Unix seconds: the earliest order's created_at */
	double last_final;    /* Unix seconds: the latest final order's updated_at */
	double elapsed_s;     /* wall time spent following */
};

/*
 * follow_run - poll the database at dsn until every one of the n orders has a
 * final status, or stall_s seconds pass with none becoming final (those left
 * are lost), or max_s seconds pass in all (those left are only not final yet:
 * capped); then count the duplicates (see struct follow_result). A progress line goes to progress
 * (may be NULL) about once a second. Reorders orders. 0 with *out filled, or -1 when the database
 * cannot be used (the reason is printed on stderr).
 */
int follow_run(const char *dsn, struct follow_order *orders, long n, double stall_s, double max_s,
               FILE *progress, struct follow_result *out);

/*
 * follow_read_ids / follow_write_ids - the "key<TAB>order_id" lines orders-bench
 * writes with --ids-out and reads with --follow-ids. follow_read_ids appends to
 * *orders (a malloc'd array of *n, grown as needed; free it) and refuses a line
 * with a key outside [A-Za-z0-9._-] or an id that is no UUID. 0 or -1 (reason
 * printed on stderr).
 */
int follow_read_ids(const char *path, struct follow_order **orders, long *n);
int follow_write_ids(const char *path, const struct follow_order *orders, long n);

/* follow_key_ok - 1 when s is a key follow can pass to PostgreSQL unquoted. */
int follow_key_ok(const char *s);

#endif
