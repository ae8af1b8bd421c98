/* loadgen.c: orders-bench, the checkout load generator of `make bench` (keep-alive, epoll). */
#include <errno.h>
#include <getopt.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include <arpa/inet.h>

#include <jansson.h>

#include "client.h"
#include "follow.h"
#include "util.h"

static const char default_cards[] = "4242424242424242:85,5555555555554444:10,"
                                    "4000000000000002:5";

#define MAX_FOLLOW_FILES 16

/* ---- options ------------------------------------------------------------------- */

static void usage(FILE *f)
{
	fprintf(f,
	        "usage: orders-bench [options] -s SKU[,SKU...]\n"
	        "       orders-bench -F FILE [-f S] [-j FILE]\n"
	        "Fires checkouts at POST /v1/checkouts over keep-alive connections, then\n"
	        "optionally follows every accepted order to its final status in PostgreSQL\n"
	        "($ORDERS_PG_DSN) and counts lost and duplicated orders.\n"
	        "\n"
	        "  -n, --count N          checkouts to send (default 1000)\n"
	        "  -c, --connections C    keep-alive connections (default 100)\n"
	        "  -r, --rate R           open loop: R checkouts a second at fixed times over\n"
	        "                         the C connections, latency counted from each one's\n"
	        "                         scheduled time; default 0 = closed loop (a connection\n"
	        "                         sends its next checkout once the last is answered)\n"
	        "  -d, --duration S       start no checkout after S seconds (default: none)\n"
	        "  -T, --threads N        epoll threads (default 2)\n"
	        "  -R, --repeat-ratio P   share 0..1 of checkouts that repeat an earlier one's\n"
	        "                         Idempotency-Key and body (default 0: all unique)\n"
	        "  -s, --skus LIST        SKUs to buy, comma-separated (required to send)\n"
	        "  -m, --cards MIX        card:weight,... (default %s)\n"
	        "  -l, --two-lines PCT    checkouts with two SKUs, percent (default 25)\n"
	        "  -k, --key-prefix P     Idempotency-Key prefix (default bench-<pid>-<time>)\n"
	        "  -a, --api-key K        bearer token (default dev-client)\n"
	        "  -H, --host ADDR        API address (default 127.0.0.1)\n"
	        "  -p, --port N           API port (default $ORDERS_HTTP_PORT or 8080)\n"
	        "  -t, --timeout MS       one request's timeout (default 30000)\n"
	        "  -f, --follow S         follow the accepted orders until all are final, or\n"
	        "                         until S seconds pass with none becoming final (lost)\n"
	        "  -M, --follow-max S     stop following after S seconds in all (default none);\n"
	        "                         orders not final then are reported, not counted lost\n"
	        "  -F, --follow-ids FILE  send nothing; follow the orders FILE lists (written\n"
	        "                         by --ids-out; repeat -F for several files)\n"
	        "  -i, --ids-out FILE     write key<TAB>order_id of every accepted checkout\n"
	        "  -j, --json FILE        write the summary as JSON\n"
	        "  -S, --seed N           choice of SKUs, cards and repeats (default 1)\n"
	        "\n"
	        "Exit status: 0 when no accepted order was lost or duplicated (as far as\n"
	        "checked), 3 when some was, 2 on a usage error, 1 on another error.\n",
	        default_cards);
}

/* "SKU,SKU,..." in place: the SKUs point into list. */
static int parse_skus(struct options *o, char *list)
{
	char *save = NULL, *s;

	o->nskus = 0;
	for (s = strtok_r(list, ",", &save); s; s = strtok_r(NULL, ",", &save)) {
		if (o->nskus == MAX_SKUS || !follow_key_ok(s) || strlen(s) > 64)
			return -1;
		o->skus[o->nskus++] = s;
	}
	return o->nskus > 0 ? 0 : -1;
}

static int parse_options(struct options *o, const char **follow_files, int *nfollow, int argc,
                         char **argv)
{
	static const struct option longs[] = {
	    {"count", required_argument, NULL, 'n'},
	    {"connections", required_argument, NULL, 'c'},
	    {"rate", required_argument, NULL, 'r'},
	    {"duration", required_argument, NULL, 'd'},
	    {"follow-max", required_argument, NULL, 'M'},
	    {"threads", required_argument, NULL, 'T'},
	    {"repeat-ratio", required_argument, NULL, 'R'},
	    {"skus", required_argument, NULL, 's'},
	    {"cards", required_argument, NULL, 'm'},
	    {"two-lines", required_argument, NULL, 'l'},
	    {"key-prefix", required_argument, NULL, 'k'},
	    {"api-key", required_argument, NULL, 'a'},
	    {"host", required_argument, NULL, 'H'},
	    {"port", required_argument, NULL, 'p'},
	    {"timeout", required_argument, NULL, 't'},
	    {"follow", required_argument, NULL, 'f'},
	    {"follow-ids", required_argument, NULL, 'F'},
	    {"ids-out", required_argument, NULL, 'i'},
	    {"json", required_argument, NULL, 'j'},
	    {"seed", required_argument, NULL, 'S'},
	    {"help", no_argument, NULL, 'h'},
	    {NULL, 0, NULL, 0},
	};
	const char *port = getenv("ORDERS_HTTP_PORT");
	long v;
	int opt;

	memset(o, 0, sizeof(*o));
	o->count = 1000;
	o->conns = 100;
	o->threads = 2;
	o->two_line_pct = 25;
	o->timeout_ms = 30000;
	o->seed = 1;
	o->port = port && *port ? atoi(port) : 8080;
	inet_pton(AF_INET, "127.0.0.1", &o->host);
	snprintf(o->auth, sizeof(o->auth), "Bearer dev-client");
	snprintf(o->prefix, sizeof(o->prefix), "bench-%ld-%ld", (long)getpid(), (long)time(NULL));
	util_parse_cards(default_cards, o->cards, MAX_CARDS, &o->ncards, &o->card_total);
	*nfollow = 0;
	while ((opt = getopt_long(argc, argv, "n:c:r:d:T:R:s:m:l:k:a:H:p:t:f:M:F:i:j:S:h", longs,
	                          NULL)) != -1) {
		switch (opt) {
		case 'n':
			if (util_parse_long(optarg, 1, MAX_COUNT, &o->count))
				goto bad;
			break;
		case 'c':
			if (util_parse_long(optarg, 1, MAX_CONNS, &v))
				goto bad;
			o->conns = (int)v;
			break;
		case 'r':
			if (util_parse_double(optarg, 0, 1e7, &o->rate))
				goto bad;
			break;
		case 'd':
			if (util_parse_double(optarg, 0.1, 86400, &o->duration_s))
				goto bad;
			break;
		case 'M':
			if (util_parse_double(optarg, 1, 86400, &o->follow_max_s))
				goto bad;
			break;
		case 'T':
			if (util_parse_long(optarg, 1, MAX_THREADS, &v))
				goto bad;
			o->threads = (int)v;
			break;
		case 'R':
			if (util_parse_double(optarg, 0, 1, &o->repeat_ratio))
				goto bad;
			break;
		case 's':
			if (parse_skus(o, optarg))
				goto bad;
			break;
		case 'm':
			if (util_parse_cards(optarg, o->cards, MAX_CARDS, &o->ncards,
			                     &o->card_total))
				goto bad;
			break;
		case 'l':
			if (util_parse_long(optarg, 0, 100, &v))
				goto bad;
			o->two_line_pct = (int)v;
			break;
		case 'k':
			if (!follow_key_ok(optarg) || strlen(optarg) >= sizeof(o->prefix))
				goto bad;
			snprintf(o->prefix, sizeof(o->prefix), "%s", optarg);
			break;
		case 'a':
			if (!optarg[0] || strlen(optarg) > 128 || strpbrk(optarg, " \r\n"))
				goto bad;
			snprintf(o->auth, sizeof(o->auth), "Bearer %s", optarg);
			break;
		case 'H':
			if (inet_pton(AF_INET, optarg, &o->host) != 1)
				goto bad;
			break;
		case 'p':
			if (util_parse_long(optarg, 1, 65535, &v))
				goto bad;
			o->port = (int)v;
			break;
		case 't':
			if (util_parse_long(optarg, 1, 600000, &v))
				goto bad;
			o->timeout_ms = (int)v;
			break;
		case 'f':
			if (util_parse_double(optarg, 0.5, 86400, &o->follow_stall_s))
				goto bad;
			break;
		case 'F':
			if (*nfollow == MAX_FOLLOW_FILES)
				goto bad;
			follow_files[(*nfollow)++] = optarg;
			break;
		case 'i':
			o->ids_path = optarg;
			break;
		case 'j':
			o->json_path = optarg;
			break;
		case 'S':
			o->seed = strtoull(optarg, NULL, 10);
			break;
		case 'h':
			usage(stdout);
			exit(0);
		default:
			goto usage;
		}
	}
	if (optind != argc || (!*nfollow && !o->nskus))
		goto usage;
	if (o->threads > o->conns)
		o->threads = o->conns;
	if (o->duration_s <= 0)
		o->duration_s = 1e9;
	if (*nfollow && o->follow_stall_s <= 0)
		o->follow_stall_s = 60;
	return 0;
bad:
	fprintf(stderr, "orders-bench: bad value for -%c: '%s'\n", opt, optarg);
usage:
	usage(stderr);
	return -1;
}

/* Three decimals are plenty in a report, and keep the JSON readable. */
static double round3(double v)
{
	return round(v * 1000.0) / 1000.0;
}

static int by_u32(const void *a, const void *b)
{
	uint32_t x = *(const uint32_t *)a, y = *(const uint32_t *)b;

	return x < y ? -1 : x > y;
}

/* Percentiles of the answered requests' latencies, in milliseconds, as JSON. */
static json_t *latency_json(const uint32_t *all, long count)
{
	static const double ps[] = {50, 90, 95, 99, 99.9};
	static const char *const names[] = {"p50", "p90", "p95", "p99", "p99_9"};
	uint32_t *v = malloc((size_t)(count ? count : 1) * sizeof(*v));
	json_t *j = json_object();
	double sum = 0;
	long n = 0;

	if (!v || !j) {
		free(v);
		return j;
	}
	for (long i = 0; i < count; i++) {
		if (all[i] != NO_ANSWER) {
			v[n++] = all[i];
			sum += all[i];
		}
	}
	qsort(v, (size_t)n, sizeof(*v), by_u32);
	for (size_t k = 0; k < sizeof(ps) / sizeof(ps[0]); k++) {
		long at = n ? (long)ceil(ps[k] / 100.0 * (double)n) - 1 : 0;

		json_object_set_new(j, names[k],
		                    json_real(n ? round3(v[at < 0 ? 0 : at] / 1000.0) : 0));
	}
	json_object_set_new(j, "max", json_real(n ? round3(v[n - 1] / 1000.0) : 0));
	json_object_set_new(j, "mean", json_real(n ? round3(sum / (double)n / 1000.0) : 0));
	json_object_set_new(j, "count", json_integer(n));
	free(v);
	return j;
}

static json_t *follow_json(const struct follow_result *f, double drain_from, const char *from)
{
	json_t *statuses = json_object(), *j;
	double span = f->last_final - f->first_created;

	for (int k = 0; k < FOLLOW_STATUSES; k++)
		json_object_set_new(statuses, follow_status_names[k], json_integer(f->statuses[k]));
	j = json_pack("{s:I, s:I, s:I, s:b}", "orders", (json_int_t)f->orders, "final",
	              (json_int_t)f->final, "not_final", (json_int_t)f->not_final, "complete",
	              !f->capped);
	/* Capped while orders still completed: how many were lost is not known. */
	json_object_set_new(j, "lost", f->capped ? json_null() : json_integer(f->lost));
	json_object_set_new(j, "duplicated", json_integer(f->duplicated));
	json_object_set_new(j, "dup_events", json_integer(f->dup_events));
	json_object_set_new(j, "final_without_event", json_integer(f->no_event));
	json_object_set_new(j, "statuses", statuses);
	json_object_set_new(j, "span_s", json_real(round3(span > 0 ? span : 0)));
	json_object_set_new(j, "completed_per_s",
	                    json_real(round3(span > 0 ? (double)f->final / span : 0)));
	json_object_set_new(
	    j, "drain_s",
	    json_real(round3(f->last_final > drain_from ? f->last_final - drain_from : 0)));
	json_object_set_new(j, "drain_from", json_string(from));
	json_object_set_new(j, "follow_s", json_real(round3(f->elapsed_s)));
	return j;
}

static int write_json(const char *path, json_t *j)
{
	if (json_dump_file(j, path, JSON_INDENT(2) | JSON_PRESERVE_ORDER) != 0) {
		fprintf(stderr, "orders-bench: cannot write '%s'\n", path);
		return -1;
	}
	return 0;
}

static void print_follow(const struct follow_result *f)
{
	double span = f->last_final - f->first_created;

	printf("orders-bench: follow: %ld/%ld final in %.1f s (%.0f completed/s over %.1f s from "
	       "the first accept to the last final); lost %ld, duplicated %ld, orders with two "
	       "final events %ld, final without event %ld\n",
	       f->final, f->orders, f->elapsed_s, span > 0 ? (double)f->final / span : 0.0,
	       span > 0 ? span : 0.0, f->lost, f->duplicated, f->dup_events, f->no_event);
}

/* --follow-ids: follow the orders of earlier runs, timed from now. */
static int follow_only(const struct options *o, const char **files, int nfiles)
{
	struct follow_order *orders = NULL;
	struct follow_result f;
	double from = util_wall();
	long n = 0;
	json_t *j;
	int rc = 1;

	for (int k = 0; k < nfiles; k++) {
		if (follow_read_ids(files[k], &orders, &n) != 0)
			goto out;
	}
	if (follow_run(getenv("ORDERS_PG_DSN"), orders, n, o->follow_stall_s, o->follow_max_s,
	               stderr, &f) != 0)
		goto out;
	print_follow(&f);
	j = json_pack("{s:s, s:o}", "tool", "orders-bench", "follow",
	              follow_json(&f, from, "follow_start"));
	json_object_set_new(j, "lost", f.capped ? json_null() : json_integer(f.lost));
	json_object_set_new(j, "duplicated", json_integer(f.duplicated + f.dup_events));
	if (o->json_path && write_json(o->json_path, j) != 0) {
		json_decref(j);
		goto out;
	}
	json_decref(j);
	rc = f.lost || f.duplicated || f.dup_events ? 3 : 0;
out:
	free(orders);
	return rc;
}

/* The accepted keys with the order each one's 202 named. */
static struct follow_order *accepted_orders(const struct bench *b, long *n)
{
	struct follow_order *list = malloc((size_t)b->o.count * sizeof(*list));

	*n = 0;
	if (!list)
		return NULL;
	for (long k = 0; k < b->o.count; k++) {
		if (!b->keys[k].accepted)
			continue;
		client_key_text(&b->o, k, list[*n].key, sizeof(list[*n].key));
		memcpy(list[*n].order_id, b->keys[k].order_id, sizeof(list[*n].order_id));
		list[*n].final = 0;
		(*n)++;
	}
	return list;
}

static json_t *run_json(const struct bench *b, const struct stats *s, double elapsed,
                        long unique_keys, long accepted_keys)
{
	const struct options *o = &b->o;
	json_t *status = json_object(), *j;
	char code[8];

	for (int k = 0; k < STATUS_MAX; k++) {
		if (s->status[k]) {
			snprintf(code, sizeof(code), "%d", k);
			json_object_set_new(status, code, json_integer(s->status[k]));
		}
	}
	j = json_pack("{s:s, s:s, s:I, s:i, s:i, s:f, s:f, s:s, s:f}", "tool", "orders-bench",
	              "mode", o->rate > 0 ? "open" : "closed", "count", (json_int_t)o->count,
	              "connections", o->conns, "threads", o->threads, "rate", o->rate,
	              "repeat_ratio", o->repeat_ratio, "key_prefix", o->prefix, "duration_s",
	              round3(elapsed));
	json_object_set_new(j, "sent", json_integer(s->sent));
	/* With --duration, count is only an upper bound. */
	json_object_set_new(j, "unsent",
	                    json_integer(o->duration_s < 1e9 ? 0 : o->count - s->sent));
	json_object_set_new(j, "answered", json_integer(s->answered));
	json_object_set_new(j, "ok_2xx", json_integer(s->ok));
	json_object_set_new(j, "accepted", json_integer(s->accepted));
	json_object_set_new(j, "accepted_per_s",
	                    json_real(round3(elapsed > 0 ? (double)s->accepted / elapsed : 0)));
	json_object_set_new(j, "answered_per_s",
	                    json_real(round3(elapsed > 0 ? (double)s->answered / elapsed : 0)));
	json_object_set_new(j, "non_2xx", json_integer(s->non2xx));
	json_object_set_new(j, "status", status);
	json_object_set_new(j, "socket_errors",
	                    json_integer(s->sock_errors + s->timeouts + s->connect_errors));
	json_object_set_new(j, "timeouts", json_integer(s->timeouts));
	json_object_set_new(j, "connect_errors", json_integer(s->connect_errors));
	json_object_set_new(j, "idle_closes", json_integer(s->idle_closes));
	json_object_set_new(j, "unique_keys", json_integer(unique_keys));
	json_object_set_new(j, "accepted_keys", json_integer(accepted_keys));
	json_object_set_new(j, "dup_answers", json_integer(s->dup_answers));
	json_object_set_new(j, "latency_ms", latency_json(b->lat, o->count));
	json_object_set_new(j, "service_ms", latency_json(b->svc, o->count));
	return j;
}

static void print_run(const struct bench *b, const struct stats *s, double elapsed, json_t *lat)
{
	const struct options *o = &b->o;

	if (o->rate > 0)
		printf("orders-bench: open loop, %.0f/s over %d connections: %ld checkouts in "
		       "%.1f s\n",
		       o->rate, o->conns, s->sent, elapsed);
	else
		printf("orders-bench: closed loop, %d connections: %ld checkouts in %.1f s\n",
		       o->conns, s->sent, elapsed);
	printf("orders-bench: 202 %ld (%.0f/s), non-2xx %ld, socket errors %ld (timeouts %ld, "
	       "connect %ld), unsent %ld, replays naming another order %ld\n",
	       s->accepted, elapsed > 0 ? (double)s->accepted / elapsed : 0.0, s->non2xx,
	       s->sock_errors + s->timeouts + s->connect_errors, s->timeouts, s->connect_errors,
	       o->duration_s < 1e9 ? 0 : o->count - s->sent, s->dup_answers);
	for (int k = 0; k < STATUS_MAX; k++) {
		if (s->status[k] && (k < 200 || k >= 300))
			printf("orders-bench:   status %d: %ld\n", k, s->status[k]);
	}
	printf("orders-bench: latency ms%s: p50 %.1f, p95 %.1f, p99 %.1f, max %.1f\n",
	       o->rate > 0 ? " (from the scheduled send time)" : "",
	       json_real_value(json_object_get(lat, "p50")),
	       json_real_value(json_object_get(lat, "p95")),
	       json_real_value(json_object_get(lat, "p99")),
	       json_real_value(json_object_get(lat, "max")));
}

static int run(struct bench *b)
{
	const struct options *o = &b->o;
	struct follow_order *accepted = NULL;
	struct follow_result f;
	struct stats s;
	double elapsed, send_end;
	long naccepted = 0, unique = 0;
	int rc = 1;
	json_t *j = NULL;

	if (client_run(b, stderr) != 0)
		return 1;
	elapsed = util_now() - b->t0;
	send_end = util_wall();
	client_stats(b, &s);
	for (long k = 0; k < o->count; k++)
		unique += client_key_of(o, k) == k;
	accepted = accepted_orders(b, &naccepted);
	if (!accepted) {
		fprintf(stderr, "orders-bench: out of memory\n");
		goto out;
	}
	j = run_json(b, &s, elapsed, unique, naccepted);
	print_run(b, &s, elapsed, json_object_get(j, "latency_ms"));
	if (o->ids_path && follow_write_ids(o->ids_path, accepted, naccepted) != 0)
		goto out;
	rc = s.dup_answers ? 3 : 0;
	json_object_set_new(j, "lost", json_null());
	json_object_set_new(j, "duplicated", json_integer(s.dup_answers));
	if (o->follow_stall_s > 0) {
		if (follow_run(getenv("ORDERS_PG_DSN"), accepted, naccepted, o->follow_stall_s,
		               o->follow_max_s, stderr, &f) != 0) {
			rc = 1;
			goto out;
		}
		print_follow(&f);
		json_object_set_new(j, "follow", follow_json(&f, send_end, "send_end"));
		json_object_set_new(j, "lost", f.capped ? json_null() : json_integer(f.lost));
		json_object_set_new(j, "duplicated",
		                    json_integer(s.dup_answers + f.duplicated + f.dup_events));
		if (f.lost || f.duplicated || f.dup_events)
			rc = 3;
	}
	if (o->json_path && write_json(o->json_path, j) != 0)
		rc = 1;
out:
	json_decref(j);
	free(accepted);
	return rc;
}

int main(int argc, char **argv)
{
	static struct bench b;
	const char *follow_files[MAX_FOLLOW_FILES];
	int nfollow, rc;

	setvbuf(stdout, NULL, _IOLBF, 0);
	if (parse_options(&b.o, follow_files, &nfollow, argc, argv) != 0)
		return 2;
	if (nfollow)
		return follow_only(&b.o, follow_files, nfollow);
	rc = run(&b);
	client_release(&b);
	return rc;
}
