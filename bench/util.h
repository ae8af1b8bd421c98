/*
 * util.h: small helpers the load generators share (orders-bench and
 * orders-bench-publisher here, tests/integration/loadgen.c's orders-loadgen):
 * numbers and card mixes from the command line, and clocks. Thread-safe.
 */
#ifndef ORDERS_BENCH_UTIL_H
#define ORDERS_BENCH_UTIL_H

#include <stddef.h>

/* One test card of a mix, drawn with probability weight / the mix's total. */
struct util_card {
	char number[20];
	char last4[5];
	unsigned weight;
};

/* util_parse_long / util_parse_double - all of s is a number within [min, max]:
 * 0 with *out set, else -1. */
int util_parse_long(const char *s, long min, long max, long *out);
int util_parse_double(const char *s, double min, double max, double *out);

/* util_parse_prefix - s is an Idempotency-Key prefix of 1 to size - 1 characters of
 * [A-Za-z0-9._-]: 0 with it copied to out, else -1. */
int util_parse_prefix(const char *s, char *out, size_t size);

/*
 * util_parse_cards - "number[:weight],..." (12-19 digits, weight 0-1000000,
 * default 1) into cards[0..max). 0 with *n and *total set when at least one
 * card weighs more than 0; -1 otherwise (cards may be partly written).
 */
int util_parse_cards(const char *mix, struct util_card *cards, int max, int *n, unsigned *total);

/* util_now - CLOCK_MONOTONIC in seconds; util_wall - the Unix time in seconds. */
double util_now(void);
double util_wall(void);

/* util_sleep - sleep s seconds (nothing when s <= 0), through signals. */
void util_sleep(double s);

#endif
