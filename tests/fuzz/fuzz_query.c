/*
 * fuzz_query.c: the query parameters and the Accept header the API parses.
 * The input's first byte says which of the fields are given (bit i for
 * field i; the others are NULL, as for a parameter not sent), the rest is
 * the fields, NUL-separated: GET /v1/order-events's after, limit and types,
 * GET /v1/reconciliation's date, the Accept header, GET /v1/products's limit
 * and after, and the name of an unknown query parameter.
 */
#include <ctype.h>
#include <time.h>

#include "fuzz.h"
#include "parse.h"

FUZZ_QUIET_INITIALIZE

static int digits(const char *s)
{
	if (!*s)
		return 0;
	for (; *s; s++)
		if (!isdigit((unsigned char)*s))
			return 0;
	return 1;
}

/* The types literal: {t1,t2,...}, each a known type once, in the order of the list. */
static void check_types(const char *lit, const char *given)
{
	static const char *const known[] = {"order.confirmed", "order.rejected",
	                                    "order.payment_failed", "order.expired"};
	size_t n = strlen(lit), k = 0;
	const char *p = lit + 1;

	FUZZ_CHECK(n >= 2 && lit[0] == '{' && lit[n - 1] == '}');
	while (*p != '}') {
		size_t len = strcspn(p, ",}");

		while (k < 4 && (strlen(known[k]) != len || strncmp(p, known[k], len) != 0))
			k++;
		FUZZ_CHECK(k < 4); /* known, and after the one before it */
		FUZZ_CHECK(strstr(given, known[k]));
		k++;
		p += len;
		if (*p == ',')
			p++;
	}
	FUZZ_CHECK(p == lit + n - 1 && n > 2);
}

/* A date that passed is one the calendar has: timegm() keeps it as it is. */
static void check_date(const char *s)
{
	struct tm tm, back;
	time_t t;

	FUZZ_CHECK(strlen(s) == 10);
	memset(&tm, 0, sizeof(tm));
	tm.tm_year = atoi(s) - 1900;
	tm.tm_mon = atoi(s + 5) - 1;
	tm.tm_mday = atoi(s + 8);
	tm.tm_hour = 12;
	t = timegm(&tm);
	FUZZ_CHECK(gmtime_r(&t, &back));
	FUZZ_CHECK(back.tm_year == atoi(s) - 1900 && back.tm_mon == atoi(s + 5) - 1 &&
	           back.tm_mday == atoi(s + 8));
	FUZZ_CHECK(atoi(s) >= 1 && atoi(s) <= 9999);
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	struct fuzz_fields ff;
	struct events_query q;
	struct api_error e;
	const char *f[8], *after;
	unsigned mask;
	long limit;
	int csv;

	if (size < 1)
		return 0;
	mask = data[0];
	fuzz_fields_split(&ff, data + 1, size - 1, 8);
	for (int i = 0; i < 8; i++)
		f[i] = mask & (1u << i) ? ff.f[i] : NULL;

	if (events_parse_query(f[0], f[1], f[2], &q, &e) == ERR_OK) {
		FUZZ_CHECK(q.after >= 0 && q.limit >= 1 && q.limit <= 1000);
		FUZZ_CHECK(!f[0] || (digits(f[0]) &&
		                     (unsigned long long)q.after == strtoull(f[0], NULL, 10)));
		FUZZ_CHECK(!f[1] || (digits(f[1]) && q.limit == strtoll(f[1], NULL, 10)));
		FUZZ_CHECK(!f[0] || q.after >= 0);
		FUZZ_CHECK(q.has_types == (f[2] != NULL));
		if (q.has_types)
			check_types(q.types, f[2]);
	} else {
		fuzz_check_error(&e, 1);
	}

	if (events_parse_date(f[3], &e) == ERR_OK)
		check_date(f[3]);
	else
		fuzz_check_error(&e, 1);

	csv = events_wants_csv(f[4]);
	FUZZ_CHECK(csv == 0 || csv == 1);
	FUZZ_CHECK(f[4] || !csv);

	if (catalog_parse_list(f[5], f[6], &limit, &after, &e) == ERR_OK) {
		FUZZ_CHECK(limit >= 1 && limit <= 200);
		FUZZ_CHECK(!after[0] || valid_sku(after));
		FUZZ_CHECK(f[6] || !after[0]);
	} else {
		fuzz_check_error(&e, 1);
	}

	if (f[7]) {
		query_arg_error(f[7], &e);
		fuzz_check_error(&e, 1);
	}
	free(ff.buf);
	return 0;
}
