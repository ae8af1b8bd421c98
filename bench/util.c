/* util.c: command-line numbers, card mixes and clocks for the load generators. */
#include "util.h"

#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

int util_parse_long(const char *s, long min, long max, long *out)
{
	char *end;
	long v;

	errno = 0;
	v = strtol(s, &end, 10);
	if (errno || end == s || *end || v < min || v > max)
		return -1;
	*out = v;
	return 0;
}

int util_parse_double(const char *s, double min, double max, double *out)
{
	char *end;
	double v;

	errno = 0;
	v = strtod(s, &end);
	if (errno || end == s || *end || !(v >= min && v <= max))
		return -1;
	*out = v;
	return 0;
}

int util_parse_prefix(const char *s, char *out, size_t size)
{
	size_t n = strlen(s);

	if (n == 0 || n >= size ||
	    strspn(s, "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789._-") != n)
		return -1;
	memcpy(out, s, n + 1);
	return 0;
}

int util_parse_cards(const char *mix, struct util_card *cards, int max, int *n, unsigned *total)
{
	char list[512], *save = NULL, *item;
	unsigned sum = 0;
	int k = 0;

	if (strlen(mix) >= sizeof(list))
		return -1;
	snprintf(list, sizeof(list), "%s", mix);
	for (item = strtok_r(list, ",", &save); item; item = strtok_r(NULL, ",", &save)) {
		struct util_card *c = &cards[k];
		char *colon = strchr(item, ':');
		size_t len = colon ? (size_t)(colon - item) : strlen(item);
		long w = 1;

		if (k == max || len < 12 || len >= sizeof(c->number) ||
		    strspn(item, "0123456789") != len ||
		    (colon && util_parse_long(colon + 1, 0, 1000000, &w) != 0))
			return -1;
		memcpy(c->number, item, len);
		c->number[len] = '\0';
		memcpy(c->last4, c->number + len - 4, 5);
		c->weight = (unsigned)w;
		sum += c->weight;
		k++;
	}
	if (k == 0 || sum == 0)
		return -1;
	*n = k;
	*total = sum;
	return 0;
}

static double clock_s(clockid_t id)
{
	struct timespec ts;

	clock_gettime(id, &ts);
	return (double)ts.tv_sec + (double)ts.tv_nsec / 1e9;
}

double util_now(void)
{
	return clock_s(CLOCK_MONOTONIC);
}

double util_wall(void)
{
	return clock_s(CLOCK_REALTIME);
}

void util_sleep(double s)
{
	struct timespec ts;

	if (s <= 0)
		return;
	ts.tv_sec = (time_t)s;
	ts.tv_nsec = (long)((s - (double)ts.tv_sec) * 1e9);
	while (nanosleep(&ts, &ts) != 0 && errno == EINTR)
		;
}
