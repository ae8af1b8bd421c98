/*
 * addrlimit.h: a limit on events per client address and second, kept in
 * this process only (the API counts failed authentications with it).
 *
 * Each address may have `limit` events in each one-second window (the
 * current epoch second); from the next one on it is over the limit until
 * the window ends. Counts live in a fixed table of `slots` entries (sets of
 * four, placed by a keyed hash of the address, so that nobody can aim many
 * addresses at one set): memory is fixed however many addresses come. When
 * a set is full, the entry with the fewest events is reused, so the
 * addresses that send the most are the ones kept; a flood from more
 * addresses than the table holds is under-counted, never over-counted. An
 * address is therefore never refused for another's events.
 *
 * addrlimit_busy() and addrlimit_over() cost one atomic load while no
 * address is over the limit, so they can be asked about every request.
 *
 * Thread-safety: every function but new/free may be called from any number
 * of threads at once.
 */
#ifndef ORDERS_ADDRLIMIT_H
#define ORDERS_ADDRLIMIT_H

#include <stddef.h>
#include <stdint.h>

#include "netaddr.h"

struct addrlimit;

/*
 * addrlimit_new - a table of about slots entries (rounded up to a power of
 * two, at least 64) allowing limit (> 0) events per address and second.
 * NULL on ERR_NOMEM or a bad argument. Needs sodium_init() done.
 */
struct addrlimit *addrlimit_new(long limit, size_t slots);

/* addrlimit_free - NULL is a no-op. */
void addrlimit_free(struct addrlimit *l);

/*
 * addrlimit_over - 1 when a has had more than limit events in the window of
 * now_ms (milliseconds since the epoch), else 0. Counts nothing.
 */
int addrlimit_over(struct addrlimit *l, const struct netaddr *a, int64_t now_ms);

/*
 * addrlimit_add - count one event of a in the window of now_ms; 1 when a is
 * over the limit with it (it is the limit + 1st or later), else 0. When it
 * is the event that crosses the limit, *crossed (may be NULL) is set to 1.
 */
int addrlimit_add(struct addrlimit *l, const struct netaddr *a, int64_t now_ms, int *crossed);

/* addrlimit_busy - 1 when some address has gone over the limit in the window
 * of now_ms: only then can addrlimit_over() say 1. One atomic load. */
int addrlimit_busy(struct addrlimit *l, int64_t now_ms);

/* addrlimit_retry_after - whole seconds from now_ms to the next window (>= 1). */
int addrlimit_retry_after(int64_t now_ms);

#endif
