/* cache_rtt.c: orders-bench-cache, round trips of lib/cache's batches to a Redis (plain or TLS). */
#include <stdio.h>
#include <sys/resource.h>
#include <stdlib.h>
#include <string.h>

#include "cache.h"
#include "err.h"
#include "log.h"
#include "util.h"

#define MAX_ROUNDS 10000000L

/* This process's CPU time (user and system), in seconds. */
static double cpu_now(void)
{
	struct rusage ru;

	getrusage(RUSAGE_SELF, &ru);
	return (double)ru.ru_utime.tv_sec + (double)ru.ru_stime.tv_sec +
	       ((double)ru.ru_utime.tv_usec + (double)ru.ru_stime.tv_usec) / 1e6;
}

/*
 * One batch run rounds times: the mean microseconds per round trip, or -1 when
 * one failed, and in *cpu_us the CPU time this process spent per round trip
 * (what the client code costs, whatever else the machine is doing).
 */
static double rounds_of(struct cache *c, const struct cache_batch *b, long rounds, double *cpu_us)
{
	redisReply *rep[CACHE_BATCH_MAX];
	double start = util_now(), cpu = cpu_now();

	for (long i = 0; i < rounds; i++) {
		if (cache_batch_run(c, b, rep) != ERR_OK)
			return -1;
		for (size_t k = 0; k < b->n; k++)
			freeReplyObject(rep[k]);
	}
	*cpu_us = (cpu_now() - cpu) * 1e6 / (double)rounds;
	return (util_now() - start) * 1e6 / (double)rounds;
}

/*
 * orders-bench-cache URL [ROUNDS]: ROUNDS (default 20000) batches of one PING,
 * of one SET of a 64-byte value and of PING+SET+GET, each run one after the
 * other on one connection; one line per kind with the mean round trip and
 * the client's CPU time per round trip.
 * ORDERS_REDIS_CA_FILE is the CA for a rediss:// URL.
 */
int main(int argc, char **argv)
{
	static const char value[] =
	    "0123456789abcdef0123456789abcdef0123456789abcdef0123456789abcdef";
	const char *ca = getenv("ORDERS_REDIS_CA_FILE");
	struct cache_batch ping, set, three;
	char reason[256];
	long rounds = 20000;
	struct cache *c;
	int rc = 1;

	if (argc < 2 || argc > 3 ||
	    (argc == 3 && util_parse_long(argv[2], 1, MAX_ROUNDS, &rounds) != 0)) {
		fprintf(stderr, "usage: %s redis[s]://... [ROUNDS]\n", argv[0]);
		return 2;
	}
	log_init("orders-bench-cache", LOG_WARN);
	if (cache_tls_configure(ca, reason, sizeof(reason)) != ERR_OK) {
		fprintf(stderr, "orders-bench-cache: %s\n", reason);
		return 2;
	}
	c = cache_new(argv[1]);
	if (!c || cache_ping(c) != ERR_OK) {
		fprintf(stderr, "orders-bench-cache: cannot reach redis\n");
		cache_free(c);
		return 1;
	}
	cache_batch_init(&ping);
	cache_batch_init(&set);
	cache_batch_init(&three);
	cache_batch_add(&ping, "PING");
	cache_batch_add(&set, "SET bench:cache:rtt %s", value);
	cache_batch_add(&three, "PING");
	cache_batch_add(&three, "SET bench:cache:rtt %s", value);
	cache_batch_add(&three, "GET bench:cache:rtt");
	/* A warm-up, so that the first connection's costs are not counted. */
	double cpu_us;

	if (rounds_of(c, &ping, 1000, &cpu_us) < 0)
		goto out;
	struct {
		const char *name;
		const struct cache_batch *b;
	} kinds[] = {{"ping", &ping}, {"set", &set}, {"ping+set+get", &three}};
	for (size_t k = 0; k < sizeof(kinds) / sizeof(kinds[0]); k++) {
		double us = rounds_of(c, kinds[k].b, rounds, &cpu_us);

		if (us < 0)
			goto out;
		printf("%-13s %8ld rounds  %7.2f us per round trip  %6.2f us CPU\n", kinds[k].name,
		       rounds, us, cpu_us);
	}
	rc = 0;
out:
	if (rc)
		fprintf(stderr, "orders-bench-cache: a batch failed\n");
	cache_batch_release(&ping);
	cache_batch_release(&set);
	cache_batch_release(&three);
	cache_free(c);
	return rc;
}
