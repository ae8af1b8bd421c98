/* loadgen.c: orders-loadgen, a burst of checkouts that retries like a real client. */
#include <errno.h>
#include <getopt.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include "http_client.h"
#include "util.h"

#define MAX_SKUS 64
#define MAX_CARDS 16
#define MAX_THREADS 512
#define MAX_COUNT 1000000
#define BODY_MAX 1024
#define KEY_MAX 128
#define BACKOFF_MIN_MS 100
#define BACKOFF_MAX_MS 2000
/* A Retry-After longer than this is not waited for in full: it is a test. */
#define RETRY_AFTER_MAX_MS 5000
#define PROGRESS_EVERY_S 10

static const char default_cards[] = "4242424242424242:50,5555555555554444:20,"
                                    "4000000000000002:10,4000000000009995:10,"
                                    "4000000000000119:10";

struct options {
	long count;
	int concurrency;
	const char *skus[MAX_SKUS];
	unsigned sku_weights[MAX_SKUS];
	unsigned sku_total;
	int nskus;
	struct util_card cards[MAX_CARDS];
	int ncards;
	unsigned card_total;
	const char *out_path;
	char prefix[64];
	int max_qty;
	int two_line_pct;
	double rate;       /* new checkouts per second, 0 = as fast as possible */
	double deadline_s; /* per checkout, from its first attempt */
	int timeout_ms;    /* per request */
	uint64_t seed;
};

/* What happened to one checkout. */
struct result {
	int status; /* the last HTTP status; 0 when the last attempt got none */
	int done;   /* 1 when the status is final (202 or a 4xx other than 409/429) */
	int n503;
	int n409;
	int n429;
	int n5xx;  /* 5xx other than 503 */
	int nconn; /* connection errors and timeouts */
	int attempts;
	long long accepted_ms; /* wall clock (Unix ms) when the 202 arrived */
	long long first503_ms; /* wall clock (Unix ms) of the first and the last 503, or 0 */
	long long last503_ms;
	char last4[5];
	char order_id[40];
};

struct loadgen {
	struct options o;
	struct result *results;
	atomic_long next;
	atomic_long finished;
	atomic_long accepted;
	atomic_long seen503;
	double t0;
};

/* splitmix64: a small, good generator; one state per checkout or thread. */
static uint64_t rnd_next(uint64_t *s)
{
	uint64_t z = (*s += 0x9e3779b97f4a7c15ULL);

	z = (z ^ (z >> 30)) * 0xbf58476d1ce4e5b9ULL;
	z = (z ^ (z >> 27)) * 0x94d049bb133111ebULL;
	return z ^ (z >> 31);
}

static unsigned rnd_below(uint64_t *s, unsigned n)
{
	return (unsigned)(rnd_next(s) % n);
}

/* An index into weights[n] (total = their sum), drawn by weight. */
static int rnd_weighted(uint64_t *s, const unsigned *weights, int n, unsigned total)
{
	unsigned pick = rnd_below(s, total);
	int k;

	for (k = 0; k < n - 1; k++) {
		if (pick < weights[k])
			break;
		pick -= weights[k];
	}
	return k;
}

/* ---- one checkout ---------------------------------------------------------- */

/* The checkout's body, chosen from its index alone, so a run is repeatable. */
static const struct util_card *build_body(const struct options *o, long i, char *body, size_t len)
{
	uint64_t s = o->seed ^ ((uint64_t)i * 0x2545f4914f6cdd1dULL);
	const struct util_card *card;
	unsigned card_weights[MAX_CARDS];
	unsigned qa, qb;
	int a, b, k;
	char items[256];

	for (k = 0; k < o->ncards; k++)
		card_weights[k] = o->cards[k].weight;
	card = &o->cards[rnd_weighted(&s, card_weights, o->ncards, o->card_total)];
	a = rnd_weighted(&s, o->sku_weights, o->nskus, o->sku_total);
	b = a;
	/* A second, different SKU; a few draws, since one SKU may weigh most. */
	if (o->nskus > 1 && (int)rnd_below(&s, 100) < o->two_line_pct) {
		for (k = 0; k < 8 && b == a; k++)
			b = rnd_weighted(&s, o->sku_weights, o->nskus, o->sku_total);
	}
	qa = 1 + rnd_below(&s, (unsigned)o->max_qty);
	qb = 1 + rnd_below(&s, (unsigned)o->max_qty);
	if (b != a)
		snprintf(items, sizeof(items),
		         "{\"sku\":\"%s\",\"quantity\":%u},{\"sku\":\"%s\",\"quantity\":%u}",
		         o->skus[a], qa, o->skus[b], qb);
	else
		snprintf(items, sizeof(items), "{\"sku\":\"%s\",\"quantity\":%u}", o->skus[a], qa);
	snprintf(body, len,
	         "{\"items\":[%s],\"currency\":\"USD\","
	         "\"customer\":{\"id\":\"lg-%ld\",\"email\":\"lg%ld@example.com\"},"
	         "\"shipping_address\":{\"name\":\"Load Gen\",\"line1\":\"1 Main St\","
	         "\"city\":\"Springfield\",\"postal_code\":\"12345\",\"country\":\"US\"},"
	         "\"payment\":{\"card\":{\"number\":\"%s\",\"exp_month\":12,"
	         "\"exp_year\":2030,\"cvc\":\"123\"}}}",
	         items, i % 500, i % 500, card->number);
	return card;
}

/* 1 when a client should send the same request again later. */
static int retryable(int status)
{
	return status == 0 || status == 409 || status == 429 || status >= 500;
}

static double backoff_s(uint64_t *s, int attempt, const struct http_response *r)
{
	char value[32];
	long ms = BACKOFF_MIN_MS;
	double jittered;
	int k;

	for (k = 1; k < attempt && ms < BACKOFF_MAX_MS; k++)
		ms *= 2;
	if (ms > BACKOFF_MAX_MS)
		ms = BACKOFF_MAX_MS;
	/* Full jitter over the upper half, so that clients spread out. */
	jittered = (double)ms * (0.5 + (double)rnd_below(s, 1000) / 2000.0);
	if (r->status && http_header(r, "Retry-After", value, sizeof(value)) == 0) {
		long ra = strtol(value, NULL, 10) * 1000;

		if (ra > RETRY_AFTER_MAX_MS)
			ra = RETRY_AFTER_MAX_MS;
		/* Retry-After is when to come back, at the earliest; the jitter
		 * keeps everyone told "1" from coming back in the same ms. */
		if ((double)ra > jittered)
			jittered = (double)ra + (double)rnd_below(s, 250);
	}
	return jittered / 1000.0;
}

/* The order id of a 202 into out; "" when the body has none. */
static void accepted_order_id(const struct http_response *r, char *out, size_t len)
{
	json_t *j = http_json(r);
	const char *id = json_string_value(json_object_get(j, "order_id"));

	snprintf(out, len, "%s", id ? id : "");
	json_decref(j);
}

static void run_checkout(struct loadgen *lg, long i, uint64_t *rs)
{
	const struct options *o = &lg->o;
	struct result *res = &lg->results[i];
	char body[BODY_MAX], key[KEY_MAX], idem[KEY_MAX + 32];
	const char *headers[] = {"Authorization: Bearer dev-client",
	                         "Content-Type: application/json", idem, NULL};
	const struct util_card *card;
	double start = util_now();

	snprintf(key, sizeof(key), "%s-%06ld", o->prefix, i);
	snprintf(idem, sizeof(idem), "Idempotency-Key: %s", key);
	card = build_body(o, i, body, sizeof(body));
	memcpy(res->last4, card->last4, sizeof(res->last4));
	for (;;) {
		struct http_response r;
		int rc;

		res->attempts++;
		rc = http_request("POST", "/v1/checkouts", headers, body, strlen(body), &r);
		res->status = rc == 0 ? r.status : 0;
		if (res->status == 202) {
			res->accepted_ms = (long long)(util_wall() * 1000.0);
			accepted_order_id(&r, res->order_id, sizeof(res->order_id));
			res->done = 1;
			atomic_fetch_add(&lg->accepted, 1);
		} else if (!retryable(res->status)) {
			res->done = 1;
		} else if (res->status == 0) {
			res->nconn++;
		} else if (res->status == 503) {
			res->last503_ms = (long long)(util_wall() * 1000.0);
			if (!res->n503)
				res->first503_ms = res->last503_ms;
			res->n503++;
			atomic_fetch_add(&lg->seen503, 1);
		} else if (res->status == 409) {
			res->n409++;
		} else if (res->status == 429) {
			res->n429++;
		} else {
			res->n5xx++;
		}
		if (!res->done && util_now() - start < o->deadline_s)
			util_sleep(backoff_s(rs, res->attempts, &r));
		http_response_release(&r);
		if (res->done || util_now() - start >= o->deadline_s)
			break;
	}
	atomic_fetch_add(&lg->finished, 1);
}

static void *worker(void *arg)
{
	struct loadgen *lg = arg;
	uint64_t rs = lg->o.seed ^ (uint64_t)(uintptr_t)&rs;

	for (;;) {
		long i = atomic_fetch_add(&lg->next, 1);

		if (i >= lg->o.count)
			break;
		/* Checkout i starts no earlier than its slot; retries are not paced. */
		if (lg->o.rate > 0)
			util_sleep(lg->t0 + (double)i / lg->o.rate - util_now());
		run_checkout(lg, i, &rs);
	}
	return NULL;
}

/* ---- options --------------------------------------------------------------- */

static void usage(FILE *f)
{
	fprintf(f,
	        "usage: orders-loadgen [options] -s SKU[:WEIGHT][,...] -o FILE\n"
	        "Sends checkouts to the API on 127.0.0.1:$ORDERS_HTTP_PORT, each with its own\n"
	        "Idempotency-Key, retrying the same key and body with back-off on 503, 409,\n"
	        "429, other 5xx, a connection error or a timeout, until a 202 or another 4xx,\n"
	        "or until the per-checkout deadline passes.\n"
	        "\n"
	        "  -n, --count N         checkouts (default 2000)\n"
	        "  -c, --concurrency N   client threads (default 32)\n"
	        "  -s, --skus LIST       SKU[:weight],... to buy (required; weight 1)\n"
	        "  -q, --max-qty N       quantity per line, 1..N (default 2)\n"
	        "  -l, --two-lines PCT   percentage of checkouts with two SKUs (default 25)\n"
	        "  -m, --cards MIX       card:weight,... (default %s)\n"
	        "  -r, --rate R          start at most R checkouts a second (default: no limit)\n"
	        "  -d, --deadline S      give a checkout up after S seconds (default 120)\n"
	        "  -t, --timeout MS      one request's timeout (default 15000)\n"
	        "  -k, --key-prefix P    Idempotency-Key prefix (default lg-<pid>-<time>)\n"
	        "  -S, --seed N          choice of SKUs, quantities and cards (default 1)\n"
	        "  -o, --out FILE        one line per checkout (required):\n"
	        "                        key, last HTTP status, order_id or -, 503s seen,\n"
	        "                        the card's last4, Unix ms of the 202 or 0, Unix ms of\n"
	        "                        the first and the last 503 or 0 (tabs)\n"
	        "\n"
	        "Exit status: 0 when every checkout got a 202, 3 when some did not, 2 on a\n"
	        "usage error, 1 on another error.\n",
	        default_cards);
}

/* "SKU[:weight],..." in place: the SKUs point into list. */
static int parse_skus(struct options *o, char *list)
{
	char *save = NULL, *s, *colon;
	long w;

	o->nskus = 0;
	o->sku_total = 0;
	for (s = strtok_r(list, ",", &save); s; s = strtok_r(NULL, ",", &save)) {
		w = 1;
		colon = strchr(s, ':');
		if (colon) {
			*colon = '\0';
			if (util_parse_long(colon + 1, 0, 1000000, &w) != 0)
				return -1;
		}
		if (o->nskus == MAX_SKUS || !s[0] || strlen(s) > 64)
			return -1;
		o->skus[o->nskus] = s;
		o->sku_weights[o->nskus++] = (unsigned)w;
		o->sku_total += (unsigned)w;
	}
	return o->nskus > 0 && o->sku_total > 0 ? 0 : -1;
}

static int parse_options(struct options *o, int argc, char **argv)
{
	static const struct option longs[] = {
	    {"count", required_argument, NULL, 'n'},
	    {"concurrency", required_argument, NULL, 'c'},
	    {"skus", required_argument, NULL, 's'},
	    {"max-qty", required_argument, NULL, 'q'},
	    {"two-lines", required_argument, NULL, 'l'},
	    {"cards", required_argument, NULL, 'm'},
	    {"rate", required_argument, NULL, 'r'},
	    {"deadline", required_argument, NULL, 'd'},
	    {"timeout", required_argument, NULL, 't'},
	    {"key-prefix", required_argument, NULL, 'k'},
	    {"seed", required_argument, NULL, 'S'},
	    {"out", required_argument, NULL, 'o'},
	    {"help", no_argument, NULL, 'h'},
	    {NULL, 0, NULL, 0},
	};
	long v;
	int opt;

	memset(o, 0, sizeof(*o));
	o->count = 2000;
	o->concurrency = 32;
	o->max_qty = 2;
	o->two_line_pct = 25;
	o->deadline_s = 120;
	o->timeout_ms = 15000;
	o->seed = 1;
	snprintf(o->prefix, sizeof(o->prefix), "lg-%ld-%ld", (long)getpid(), (long)time(NULL));
	util_parse_cards(default_cards, o->cards, MAX_CARDS, &o->ncards, &o->card_total);
	while ((opt = getopt_long(argc, argv, "n:c:s:q:l:m:r:d:t:k:S:o:h", longs, NULL)) != -1) {
		switch (opt) {
		case 'n':
			if (util_parse_long(optarg, 1, MAX_COUNT, &o->count))
				goto bad;
			break;
		case 'c':
			if (util_parse_long(optarg, 1, MAX_THREADS, &v))
				goto bad;
			o->concurrency = (int)v;
			break;
		case 's':
			if (parse_skus(o, optarg))
				goto bad;
			break;
		case 'q':
			if (util_parse_long(optarg, 1, 999, &v))
				goto bad;
			o->max_qty = (int)v;
			break;
		case 'l':
			if (util_parse_long(optarg, 0, 100, &v))
				goto bad;
			o->two_line_pct = (int)v;
			break;
		case 'm':
			if (util_parse_cards(optarg, o->cards, MAX_CARDS, &o->ncards,
			                     &o->card_total))
				goto bad;
			break;
		case 'r':
			o->rate = strtod(optarg, NULL);
			if (!(o->rate >= 0 && o->rate <= 1e6))
				goto bad;
			break;
		case 'd':
			o->deadline_s = strtod(optarg, NULL);
			if (!(o->deadline_s > 0 && o->deadline_s <= 86400))
				goto bad;
			break;
		case 't':
			if (util_parse_long(optarg, 1, 600000, &v))
				goto bad;
			o->timeout_ms = (int)v;
			break;
		case 'k':
			if (util_parse_prefix(optarg, o->prefix, sizeof(o->prefix)))
				goto bad;
			break;
		case 'S':
			o->seed = strtoull(optarg, NULL, 10);
			break;
		case 'o':
			o->out_path = optarg;
			break;
		case 'h':
			usage(stdout);
			exit(0);
		default:
			goto usage;
		}
	}
	if (optind != argc || !o->nskus || !o->out_path)
		goto usage;
	return 0;
bad:
	fprintf(stderr, "orders-loadgen: bad value for -%c: '%s'\n", opt, optarg);
usage:
	usage(stderr);
	return -1;
}

/* ---- report ------------------------------------------------------------------ */

static int write_results(const struct loadgen *lg)
{
	FILE *f = fopen(lg->o.out_path, "w");
	long i;

	if (!f) {
		fprintf(stderr, "orders-loadgen: cannot write '%s': %s\n", lg->o.out_path,
		        strerror(errno));
		return -1;
	}
	for (i = 0; i < lg->o.count; i++) {
		const struct result *r = &lg->results[i];

		fprintf(f, "%s-%06ld\t%d\t%s\t%d\t%s\t%lld\t%lld\t%lld\n", lg->o.prefix, i,
		        r->status, r->order_id[0] ? r->order_id : "-", r->n503, r->last4,
		        r->accepted_ms, r->first503_ms, r->last503_ms);
	}
	if (fclose(f) != 0) {
		fprintf(stderr, "orders-loadgen: cannot write '%s': %s\n", lg->o.out_path,
		        strerror(errno));
		return -1;
	}
	return 0;
}

static void summary(const struct loadgen *lg, double elapsed)
{
	long accepted = 0, unfinished = 0, others = 0, n503 = 0, n409 = 0, n429 = 0, n5xx = 0;
	long nconn = 0, attempts = 0, retried = 0, i;
	long by_status[600] = {0};

	for (i = 0; i < lg->o.count; i++) {
		const struct result *r = &lg->results[i];

		if (r->status == 202)
			accepted++;
		else if (!r->done)
			unfinished++;
		else
			others++;
		if (r->status > 0 && r->status < 600 && r->status != 202)
			by_status[r->status]++;
		n503 += r->n503;
		n409 += r->n409;
		n429 += r->n429;
		n5xx += r->n5xx;
		nconn += r->nconn;
		attempts += r->attempts;
		retried += r->attempts > 1;
	}
	printf("loadgen: %ld checkouts in %.1f s (%.1f checkouts/s), %d threads\n", lg->o.count,
	       elapsed, elapsed > 0 ? (double)lg->o.count / elapsed : 0.0, lg->o.concurrency);
	printf("loadgen: 202: %ld; other final statuses: %ld; given up at the deadline: %ld\n",
	       accepted, others, unfinished);
	for (i = 0; i < 600; i++) {
		if (by_status[i])
			printf("loadgen:   last status %ld: %ld checkout(s)\n", i, by_status[i]);
	}
	printf("loadgen: %ld requests; %ld checkouts retried; 503: %ld, 409: %ld, 429: %ld, "
	       "other 5xx: %ld, connection errors or timeouts: %ld\n",
	       attempts, retried, n503, n409, n429, n5xx, nconn);
}

int main(int argc, char **argv)
{
	struct loadgen lg;
	pthread_t threads[MAX_THREADS];
	double last, elapsed;
	int n = 0, i, rc = 1;

	memset(&lg, 0, sizeof(lg));
	if (parse_options(&lg.o, argc, argv))
		return 2;
	lg.results = calloc((size_t)lg.o.count, sizeof(*lg.results));
	if (!lg.results) {
		fprintf(stderr, "orders-loadgen: out of memory\n");
		return 1;
	}
	http_set_timeout_ms(lg.o.timeout_ms);
	atomic_init(&lg.next, 0);
	atomic_init(&lg.finished, 0);
	atomic_init(&lg.accepted, 0);
	atomic_init(&lg.seen503, 0);
	lg.t0 = util_now();
	last = lg.t0;
	for (i = 0; i < lg.o.concurrency && i < lg.o.count; i++) {
		if (pthread_create(&threads[i], NULL, worker, &lg) != 0) {
			fprintf(stderr, "orders-loadgen: cannot start thread %d\n", i);
			break;
		}
		n++;
	}
	/* With no thread at all nothing would ever finish. */
	if (n == 0)
		goto out;
	/* Every thread takes indices until none is left, so one is enough. */
	while (atomic_load(&lg.finished) < lg.o.count) {
		util_sleep(0.2);
		if (util_now() - last >= PROGRESS_EVERY_S) {
			last = util_now();
			fprintf(stderr,
			        "loadgen: %.0f s: %ld/%ld finished, %ld accepted, %ld 503s\n",
			        last - lg.t0, atomic_load(&lg.finished), lg.o.count,
			        atomic_load(&lg.accepted), atomic_load(&lg.seen503));
		}
	}
	for (i = 0; i < n; i++)
		pthread_join(threads[i], NULL);
	elapsed = util_now() - lg.t0;
	if (write_results(&lg) != 0)
		goto out;
	summary(&lg, elapsed);
	rc = atomic_load(&lg.accepted) == lg.o.count ? 0 : 3;
out:
	free(lg.results);
	return rc;
}
