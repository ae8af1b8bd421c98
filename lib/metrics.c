/* metrics.c: Prometheus counters, gauges and histograms, rendered as text format 0.0.4. */
#include "metrics.h"

#include "err.h"
#include "log.h"

#include <math.h>
#include <pthread.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

/*
 * Label values are cut to this many bytes (on a UTF-8 boundary): labels are
 * meant to be short words such as a route or a status, and a long value
 * from a request must not grow every scrape.
 */
#define METRICS_VALUE_MAX 128
#define METRICS_NAME_MAX 200
#define METRICS_COLLECT_MAX 32
/* Power of two, at least twice METRICS_MAX_CHILDREN. */
#define METRICS_HASH_SIZE 512

enum metric_type { METRIC_COUNTER, METRIC_GAUGE, METRIC_HISTOGRAM };

static const char *const metric_type_names[] = {
    [METRIC_COUNTER] = "counter",
    [METRIC_GAUGE] = "gauge",
    [METRIC_HISTOGRAM] = "histogram",
};

const double metrics_latency_bounds[] = {0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05,
                                         0.1,    0.25,  0.5,    1,     2.5,  5,     10};
const size_t metrics_latency_nbounds =
    sizeof(metrics_latency_bounds) / sizeof(metrics_latency_bounds[0]);

struct metric_child {
	struct metric_child *hnext; /* next in the same hash slot */
	uint32_t hash;
	char *values[METRICS_MAX_LABELS];
	size_t lens[METRICS_MAX_LABELS];
	double value; /* counter or gauge */
	double sum;   /* histogram */
	uint64_t count;
	/* Histogram only: observations per bucket (not cumulative), the last
	 * one is +Inf. Sized nbounds + 1 at allocation. */
	uint64_t buckets[];
};

struct metric_family {
	struct metric_family *next; /* registration order */
	enum metric_type type;
	char *name;
	char *help;
	size_t nlabels;
	char *labels[METRICS_MAX_LABELS];
	size_t nbounds;
	double bounds[METRICS_MAX_BUCKETS];
	/* Guards everything below. Held only for a lookup and an update on the
	 * hot path, and while the family is rendered. */
	pthread_mutex_t lock;
	size_t nchildren;
	struct metric_child *children[METRICS_MAX_CHILDREN]; /* creation order */
	struct metric_child *other; /* the child whose values are all "other" */
	struct metric_child *table[METRICS_HASH_SIZE];
};

struct metrics_collector {
	metrics_collect_fn fn;
	void *arg;
};

struct metrics {
	/* Guards the family list and the collectors. */
	pthread_mutex_t lock;
	struct metric_family *head;
	struct metric_family *tail;
	size_t ncollect;
	struct metrics_collector collect[METRICS_COLLECT_MAX];
	/* Set by metrics_process(), read by its collector. */
	struct metric_family *proc_rss;
	struct metric_family *proc_cpu;
};

static const char metrics_other[] = "other";

struct metrics *metrics_new(void)
{
	struct metrics *m = calloc(1, sizeof(*m));

	if (!m)
		return NULL;
	if (pthread_mutex_init(&m->lock, NULL) != 0) {
		free(m);
		return NULL;
	}
	return m;
}

static void child_free(struct metric_child *c)
{
	size_t i;

	if (!c)
		return;
	for (i = 0; i < METRICS_MAX_LABELS; i++)
		free(c->values[i]);
	free(c);
}

static void family_free(struct metric_family *f)
{
	size_t i;

	if (!f)
		return;
	for (i = 0; i < f->nchildren; i++)
		child_free(f->children[i]);
	for (i = 0; i < f->nlabels; i++)
		free(f->labels[i]);
	free(f->name);
	free(f->help);
	pthread_mutex_destroy(&f->lock);
	free(f);
}

void metrics_free(struct metrics *m)
{
	struct metric_family *f, *next;

	if (!m)
		return;
	for (f = m->head; f; f = next) {
		next = f->next;
		family_free(f);
	}
	pthread_mutex_destroy(&m->lock);
	free(m);
}

/* ---- names ------------------------------------------------------------- */

static int is_alpha_(char ch)
{
	return (ch >= 'a' && ch <= 'z') || (ch >= 'A' && ch <= 'Z') || ch == '_';
}

static int is_digit(char ch)
{
	return ch >= '0' && ch <= '9';
}

/* Metric names: [a-zA-Z_:][a-zA-Z0-9_:]* */
static int metric_name_ok(const char *s)
{
	size_t i;

	if (!s || !s[0])
		return 0;
	for (i = 0; s[i]; i++) {
		if (i >= METRICS_NAME_MAX)
			return 0;
		if (!is_alpha_(s[i]) && s[i] != ':' && !(i > 0 && is_digit(s[i])))
			return 0;
	}
	return 1;
}

static int ends_with(const char *s, const char *suffix)
{
	size_t n = strlen(s), k = strlen(suffix);

	return n >= k && strcmp(s + n - k, suffix) == 0;
}

/*
 * The conventions promtool's linter holds an exposition to: "_total" on
 * counters and on nothing else, and the histogram sample suffixes on no
 * family name (a histogram's samples get them appended).
 */
static int name_fits_type(const char *name, enum metric_type type)
{
	static const char *const reserved[] = {"_bucket", "_count", "_sum"};
	size_t i;

	if ((type == METRIC_COUNTER) != ends_with(name, "_total"))
		return 0;
	for (i = 0; i < sizeof(reserved) / sizeof(reserved[0]); i++) {
		if (ends_with(name, reserved[i]))
			return 0;
	}
	return 1;
}

/* Label names: [a-zA-Z_][a-zA-Z0-9_]*, and names starting "__" are
 * reserved for Prometheus itself. */
static int label_name_ok(const char *s, size_t n)
{
	size_t i;

	if (n == 0 || n > METRICS_NAME_MAX)
		return 0;
	if (n >= 2 && s[0] == '_' && s[1] == '_')
		return 0;
	for (i = 0; i < n; i++) {
		if (!is_alpha_(s[i]) && !(i > 0 && is_digit(s[i])))
			return 0;
	}
	return 1;
}

/* Split "route, status" into f->labels; ERR_INVALID on a bad list. */
static int family_parse_labels(struct metric_family *f, const char *list)
{
	const char *p = list, *start, *end;
	size_t n, i;

	if (!list || !*list)
		return ERR_OK;
	for (;;) {
		while (*p == ' ')
			p++;
		start = p;
		while (*p && *p != ',')
			p++;
		end = p;
		while (end > start && end[-1] == ' ')
			end--;
		n = (size_t)(end - start);
		if (!label_name_ok(start, n))
			return ERR_INVALID;
		if (f->type == METRIC_HISTOGRAM && n == 2 && memcmp(start, "le", 2) == 0)
			return ERR_INVALID;
		for (i = 0; i < f->nlabels; i++) {
			if (strlen(f->labels[i]) == n && memcmp(f->labels[i], start, n) == 0)
				return ERR_INVALID;
		}
		if (f->nlabels == METRICS_MAX_LABELS)
			return ERR_INVALID;
		f->labels[f->nlabels] = strndup(start, n);
		if (!f->labels[f->nlabels])
			return ERR_NOMEM;
		f->nlabels++;
		if (!*p)
			return ERR_OK;
		p++; /* the comma */
	}
}

/* ---- children ---------------------------------------------------------- */

/* Length of a label value as stored: cut to METRICS_VALUE_MAX bytes without
 * splitting a UTF-8 sequence. */
static size_t value_len(const char *s)
{
	size_t n = strnlen(s, METRICS_VALUE_MAX + 1);

	if (n <= METRICS_VALUE_MAX)
		return n;
	n = METRICS_VALUE_MAX;
	while (n > 0 && ((unsigned char)s[n] & 0xC0) == 0x80)
		n--;
	return n;
}

/* FNV-1a over the values, with a separator so ("ab","c") != ("a","bc"). */
static uint32_t values_hash(const char *const *v, const size_t *lens, size_t n)
{
	uint32_t h = 2166136261u;
	size_t i, j;

	for (i = 0; i < n; i++) {
		for (j = 0; j < lens[i]; j++) {
			h ^= (unsigned char)v[i][j];
			h *= 16777619u;
		}
		h ^= 0xff;
		h *= 16777619u;
	}
	return h;
}

static int values_are_other(const char *const *v, const size_t *lens, size_t n)
{
	size_t i;

	for (i = 0; i < n; i++) {
		if (lens[i] != sizeof(metrics_other) - 1 ||
		    memcmp(v[i], metrics_other, lens[i]) != 0)
			return 0;
	}
	return 1;
}

/* Called with f->lock held. */
static struct metric_child *child_create(struct metric_family *f, const char *const *v,
                                         const size_t *lens, uint32_t hash)
{
	struct metric_child *c;
	size_t i, nb = f->type == METRIC_HISTOGRAM ? f->nbounds + 1 : 0;

	c = calloc(1, sizeof(*c) + nb * sizeof(c->buckets[0]));
	if (!c)
		return NULL;
	for (i = 0; i < f->nlabels; i++) {
		c->values[i] = strndup(v[i], lens[i]);
		if (!c->values[i]) {
			child_free(c);
			return NULL;
		}
		c->lens[i] = lens[i];
	}
	c->hash = hash;
	c->hnext = f->table[hash & (METRICS_HASH_SIZE - 1)];
	f->table[hash & (METRICS_HASH_SIZE - 1)] = c;
	f->children[f->nchildren++] = c;
	if (values_are_other(v, lens, f->nlabels))
		f->other = c;
	return c;
}

/*
 * The child for these label values, created on first use; called with
 * f->lock held. One slot is always kept for the "other" child, so the
 * family never holds more than METRICS_MAX_CHILDREN. NULL on ERR_NOMEM.
 */
static struct metric_child *family_child(struct metric_family *f, const char *const *values)
{
	const char *v[METRICS_MAX_LABELS];
	size_t lens[METRICS_MAX_LABELS];
	struct metric_child *c;
	uint32_t h;
	size_t i;

	for (i = 0; i < f->nlabels; i++) {
		/* A missing value is an empty one rather than a crash. */
		v[i] = values && values[i] ? values[i] : "";
		lens[i] = value_len(v[i]);
	}
	h = values_hash(v, lens, f->nlabels);
	for (c = f->table[h & (METRICS_HASH_SIZE - 1)]; c; c = c->hnext) {
		if (c->hash != h)
			continue;
		for (i = 0; i < f->nlabels; i++) {
			if (c->lens[i] != lens[i] || memcmp(c->values[i], v[i], lens[i]) != 0)
				break;
		}
		if (i == f->nlabels)
			return c;
	}
	if (f->nchildren + (f->other ? 0 : 1) < METRICS_MAX_CHILDREN ||
	    values_are_other(v, lens, f->nlabels))
		return child_create(f, v, lens, h);
	if (f->other)
		return f->other;
	for (i = 0; i < f->nlabels; i++) {
		v[i] = metrics_other;
		lens[i] = sizeof(metrics_other) - 1;
	}
	return child_create(f, v, lens, values_hash(v, lens, f->nlabels));
}

/* ---- registration ------------------------------------------------------ */

static struct metric_family *metrics_register(struct metrics *m, enum metric_type type,
                                              const char *name, const char *help,
                                              const char *labels, const double *bounds,
                                              size_t nbounds)
{
	struct metric_family *f, *it;
	size_t i;

	if (!m || !metric_name_ok(name) || !name_fits_type(name, type) || !help || !help[0])
		return NULL;
	if (nbounds > METRICS_MAX_BUCKETS || (nbounds > 0 && !bounds))
		return NULL;
	for (i = 0; i < nbounds; i++) {
		/* +Inf is implied; NaN and unordered bounds make no buckets. */
		if (!isfinite(bounds[i]) || (i > 0 && !(bounds[i] > bounds[i - 1])))
			return NULL;
	}
	f = calloc(1, sizeof(*f));
	if (!f)
		return NULL;
	f->type = type;
	if (pthread_mutex_init(&f->lock, NULL) != 0) {
		free(f);
		return NULL;
	}
	f->name = strdup(name);
	f->help = strdup(help);
	if (!f->name || !f->help)
		goto fail;
	if (family_parse_labels(f, labels) != ERR_OK)
		goto fail;
	f->nbounds = nbounds;
	for (i = 0; i < nbounds; i++)
		f->bounds[i] = bounds[i];
	/* A family without labels shows 0 from the start, as Prometheus
	 * clients do, so a rate() over it has a beginning. */
	if (f->nlabels == 0 && !family_child(f, NULL))
		goto fail;

	pthread_mutex_lock(&m->lock);
	for (it = m->head; it; it = it->next) {
		if (strcmp(it->name, name) == 0) {
			pthread_mutex_unlock(&m->lock);
			log_error("cannot register metric twice", LF_STR("metric", name));
			goto fail;
		}
	}
	if (m->tail)
		m->tail->next = f;
	else
		m->head = f;
	m->tail = f;
	pthread_mutex_unlock(&m->lock);
	return f;
fail:
	family_free(f);
	return NULL;
}

struct metric_family *metrics_counter(struct metrics *m, const char *name, const char *help,
                                      const char *labels)
{
	return metrics_register(m, METRIC_COUNTER, name, help, labels, NULL, 0);
}

struct metric_family *metrics_gauge(struct metrics *m, const char *name, const char *help,
                                    const char *labels)
{
	return metrics_register(m, METRIC_GAUGE, name, help, labels, NULL, 0);
}

struct metric_family *metrics_histogram(struct metrics *m, const char *name, const char *help,
                                        const char *labels, const double *bounds, size_t nbounds)
{
	return metrics_register(m, METRIC_HISTOGRAM, name, help, labels, bounds, nbounds);
}

/* ---- updates ----------------------------------------------------------- */

/* Counters only go up: a negative or NaN v is ignored. On a gauge v may be
 * negative. Ignored on a histogram. */
void metric_add(struct metric_family *f, const char *const *values, double v)
{
	struct metric_child *c;

	if (!f || f->type == METRIC_HISTOGRAM)
		return;
	if (f->type == METRIC_COUNTER && !(v >= 0))
		return;
	pthread_mutex_lock(&f->lock);
	c = family_child(f, values);
	if (c)
		c->value += v;
	pthread_mutex_unlock(&f->lock);
}

/* For gauges, and for counters that mirror a total kept elsewhere. Ignored
 * on a histogram. */
void metric_set(struct metric_family *f, const char *const *values, double v)
{
	struct metric_child *c;

	if (!f || f->type == METRIC_HISTOGRAM)
		return;
	pthread_mutex_lock(&f->lock);
	c = family_child(f, values);
	if (c)
		c->value = v;
	pthread_mutex_unlock(&f->lock);
}

/* Histograms only; NaN is ignored. */
void metric_observe(struct metric_family *f, const char *const *values, double v)
{
	struct metric_child *c;
	size_t i;

	if (!f || f->type != METRIC_HISTOGRAM || isnan(v))
		return;
	/* The bounds never change, so the bucket is found outside the lock. */
	for (i = 0; i < f->nbounds; i++) {
		if (v <= f->bounds[i])
			break;
	}
	pthread_mutex_lock(&f->lock);
	c = family_child(f, values);
	if (c) {
		c->buckets[i]++;
		c->count++;
		c->sum += v;
	}
	pthread_mutex_unlock(&f->lock);
}

void metrics_on_collect(struct metrics *m, metrics_collect_fn fn, void *arg)
{
	if (!m || !fn)
		return;
	pthread_mutex_lock(&m->lock);
	if (m->ncollect < METRICS_COLLECT_MAX) {
		m->collect[m->ncollect].fn = fn;
		m->collect[m->ncollect].arg = arg;
		m->ncollect++;
		fn = NULL;
	}
	pthread_mutex_unlock(&m->lock);
	if (fn)
		log_error("cannot add metrics collector", LF_STR("reason", "too many collectors"),
		          LF_INT("max", METRICS_COLLECT_MAX));
}

/* ---- rendering --------------------------------------------------------- */

/*
 * A sample value: integers print as integers ("3"), other numbers with the
 * fewest digits that read back as the same double, and the special values
 * as Prometheus spells them.
 */
static void format_double(char *out, size_t n, double v)
{
	if (isnan(v)) {
		snprintf(out, n, "NaN");
	} else if (isinf(v)) {
		snprintf(out, n, "%s", v > 0 ? "+Inf" : "-Inf");
	} else {
		snprintf(out, n, "%.15g", v);
		if (strtod(out, NULL) != v)
			snprintf(out, n, "%.17g", v);
	}
}

/* Append s with the given characters escaped: label values escape
 * backslash, quote and newline; HELP text only backslash and newline. */
static int append_escaped(struct buf *out, const char *s, size_t n, int quote)
{
	size_t i, run = 0;
	const char *esc;
	int rc;

	for (i = 0; i < n; i++) {
		if (s[i] == '\\')
			esc = "\\\\";
		else if (s[i] == '\n')
			esc = "\\n";
		else if (quote && s[i] == '"')
			esc = "\\\"";
		else
			continue;
		rc = buf_append(out, s + run, i - run);
		if (rc == ERR_OK)
			rc = buf_append(out, esc, 2);
		if (rc != ERR_OK)
			return rc;
		run = i + 1;
	}
	return buf_append(out, s + run, n - run);
}

/* name{a="x",b="y",le="0.5"} with le only when given; nothing when there is
 * no label at all. */
static int append_labels(struct buf *out, const struct metric_family *f,
                         const struct metric_child *c, const char *le)
{
	size_t i;
	int rc;

	if (f->nlabels == 0 && !le)
		return ERR_OK;
	rc = buf_append(out, "{", 1);
	for (i = 0; rc == ERR_OK && i < f->nlabels; i++) {
		rc = buf_printf(out, "%s%s=\"", i ? "," : "", f->labels[i]);
		if (rc == ERR_OK)
			rc = append_escaped(out, c->values[i], c->lens[i], 1);
		if (rc == ERR_OK)
			rc = buf_append(out, "\"", 1);
	}
	if (rc == ERR_OK && le)
		rc = buf_printf(out, "%sle=\"%s\"", f->nlabels ? "," : "", le);
	if (rc == ERR_OK)
		rc = buf_append(out, "}", 1);
	return rc;
}

static int append_sample(struct buf *out, const struct metric_family *f,
                         const struct metric_child *c, const char *suffix, const char *le,
                         const char *value)
{
	int rc = buf_printf(out, "%s%s", f->name, suffix);

	if (rc == ERR_OK)
		rc = append_labels(out, f, c, le);
	if (rc == ERR_OK)
		rc = buf_printf(out, " %s\n", value);
	return rc;
}

static int render_histogram_child(struct buf *out, const struct metric_family *f,
                                  const struct metric_child *c)
{
	char le[32], val[32];
	uint64_t cum = 0;
	size_t i;
	int rc = ERR_OK;

	for (i = 0; rc == ERR_OK && i <= f->nbounds; i++) {
		cum += c->buckets[i];
		if (i < f->nbounds)
			format_double(le, sizeof(le), f->bounds[i]);
		else
			snprintf(le, sizeof(le), "+Inf");
		snprintf(val, sizeof(val), "%llu", (unsigned long long)cum);
		rc = append_sample(out, f, c, "_bucket", le, val);
	}
	if (rc == ERR_OK) {
		format_double(val, sizeof(val), c->sum);
		rc = append_sample(out, f, c, "_sum", NULL, val);
	}
	if (rc == ERR_OK) {
		snprintf(val, sizeof(val), "%llu", (unsigned long long)c->count);
		rc = append_sample(out, f, c, "_count", NULL, val);
	}
	return rc;
}

/* Called with f->lock held. */
static int render_family(struct buf *out, const struct metric_family *f)
{
	char val[32];
	size_t i;
	int rc;

	rc = buf_printf(out, "# HELP %s ", f->name);
	if (rc == ERR_OK)
		rc = append_escaped(out, f->help, strlen(f->help), 0);
	if (rc == ERR_OK)
		rc = buf_append(out, "\n", 1);
	if (rc == ERR_OK)
		rc = buf_printf(out, "# TYPE %s %s\n", f->name, metric_type_names[f->type]);
	for (i = 0; rc == ERR_OK && i < f->nchildren; i++) {
		if (f->type == METRIC_HISTOGRAM) {
			rc = render_histogram_child(out, f, f->children[i]);
		} else {
			format_double(val, sizeof(val), f->children[i]->value);
			rc = append_sample(out, f, f->children[i], "", NULL, val);
		}
	}
	return rc;
}

int metrics_render(struct metrics *m, struct buf *out)
{
	struct metrics_collector collect[METRICS_COLLECT_MAX];
	struct metric_family *f;
	size_t i, ncollect, start;
	int rc = ERR_OK;

	if (!m || !out)
		return ERR_INVALID;
	start = out->len;

	/* Collectors run without our lock: they set gauges, which only takes
	 * the families' locks. */
	pthread_mutex_lock(&m->lock);
	ncollect = m->ncollect;
	memcpy(collect, m->collect, ncollect * sizeof(collect[0]));
	pthread_mutex_unlock(&m->lock);
	for (i = 0; i < ncollect; i++)
		collect[i].fn(collect[i].arg);

	pthread_mutex_lock(&m->lock);
	for (f = m->head; rc == ERR_OK && f; f = f->next) {
		pthread_mutex_lock(&f->lock);
		rc = render_family(out, f);
		pthread_mutex_unlock(&f->lock);
	}
	pthread_mutex_unlock(&m->lock);

	/* On failure, leave out as it was rather than with half a family. */
	if (rc != ERR_OK) {
		out->len = start;
		if (out->data)
			out->data[start] = '\0';
	}
	return rc;
}

/* ---- process metrics --------------------------------------------------- */

/*
 * utime, stime and starttime (fields 14, 15 and 22, in clock ticks) from
 * /proc/self/stat. The command name (field 2) may hold spaces and
 * parentheses, so the fields are counted from its last ')'.
 */
static int proc_self_stat(unsigned long long *utime, unsigned long long *stime,
                          unsigned long long *start)
{
	char line[1024];
	FILE *f = fopen("/proc/self/stat", "r");
	char *p;

	if (!f)
		return ERR_IO;
	p = fgets(line, sizeof(line), f);
	fclose(f);
	if (!p || !(p = strrchr(line, ')')))
		return ERR_PARSE;
	/* state, 5 ints (4-8), 5 counts (9-13), utime, stime, 6 ints (16-21), starttime */
	if (sscanf(p + 1,
	           " %*c %*d %*d %*d %*d %*d %*u %*u %*u %*u %*u %llu %llu %*d %*d %*d %*d %*d "
	           "%*d %llu",
	           utime, stime, start) != 3)
		return ERR_PARSE;
	return ERR_OK;
}

/* The system's boot time (Unix seconds) from /proc/stat. */
static int boot_time(unsigned long long *btime)
{
	char line[256];
	FILE *f = fopen("/proc/stat", "r");
	int rc = ERR_NOT_FOUND;

	if (!f)
		return ERR_IO;
	/* Long lines come in pieces; only a line's own start can say "btime". */
	while (fgets(line, sizeof(line), f)) {
		if (sscanf(line, "btime %llu", btime) == 1) {
			rc = ERR_OK;
			break;
		}
	}
	fclose(f);
	return rc;
}

/* When this process started, Unix seconds; now when /proc cannot say. */
static double process_start_time(void)
{
	unsigned long long ut, st, start, btime;
	long ticks = sysconf(_SC_CLK_TCK);
	struct timespec ts;

	if (ticks > 0 && proc_self_stat(&ut, &st, &start) == ERR_OK && boot_time(&btime) == ERR_OK)
		return (double)btime + (double)start / (double)ticks;
	clock_gettime(CLOCK_REALTIME, &ts);
	return (double)ts.tv_sec + (double)ts.tv_nsec / 1e9;
}

static void process_collect(void *arg)
{
	struct metrics *m = arg;
	unsigned long long ut, st, start, size, resident;
	long ticks = sysconf(_SC_CLK_TCK), page = sysconf(_SC_PAGESIZE);
	FILE *f;

	if (ticks > 0 && proc_self_stat(&ut, &st, &start) == ERR_OK)
		metric_set(m->proc_cpu, NULL, (double)(ut + st) / (double)ticks);
	f = fopen("/proc/self/statm", "r");
	if (!f)
		return;
	if (page > 0 && fscanf(f, "%llu %llu", &size, &resident) == 2)
		metric_set(m->proc_rss, NULL, (double)resident * (double)page);
	fclose(f);
}

int metrics_process(struct metrics *m, const char *version)
{
	struct metric_family *info, *start;
	const char *values[1] = {version};

	if (!m || !version || m->proc_rss)
		return ERR_INVALID;
	info = metrics_gauge(m, "orders_build_info", "Always 1; the version label names the build.",
	                     "version");
	start = metrics_gauge(m, "process_start_time_seconds",
	                      "When the process started, in seconds since the Unix epoch.", NULL);
	m->proc_rss = metrics_gauge(m, "process_resident_memory_bytes",
	                            "Resident memory of the process, in bytes.", NULL);
	m->proc_cpu =
	    metrics_counter(m, "process_cpu_seconds_total",
	                    "User and system CPU time the process has used, in seconds.", NULL);
	if (!info || !start || !m->proc_rss || !m->proc_cpu)
		return ERR_NOMEM;
	metric_set(info, values, 1);
	metric_set(start, NULL, process_start_time());
	metrics_on_collect(m, process_collect, m);
	return ERR_OK;
}
