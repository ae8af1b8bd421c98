/*
 * metrics.h: Prometheus metrics (text exposition format 0.0.4).
 *
 * Families have fixed label names; children are found by label values and
 * created on first use, at most METRICS_MAX_CHILDREN per family (values
 * past that are counted under the label value "other": labels must be
 * bounded anyway). Updates are thread-safe.
 */
#ifndef ORDERS_METRICS_H
#define ORDERS_METRICS_H

#include <stddef.h>

#include "buf.h"

#define METRICS_MAX_CHILDREN 256
#define METRICS_MAX_LABELS 4
#define METRICS_MAX_BUCKETS 16

struct metrics;
struct metric_family;

/* Called at the start of each render, to set gauges read from elsewhere. */
typedef void (*metrics_collect_fn)(void *arg);

struct metrics *metrics_new(void);
void metrics_free(struct metrics *m);

/*
 * metrics_counter / _gauge / _histogram - register a family. labels is a
 * comma list of label names ("route,status") or NULL. bounds are the
 * histogram's upper bounds in ascending order (+Inf is implied). help is
 * required (one sentence: what is counted or measured). The name follows
 * Prometheus' conventions, which promtool checks: a counter's ends in
 * "_total", no other's does, and none but a histogram's sample names end in
 * "_bucket", "_count" or "_sum". Returns NULL on a bad name, label list or
 * help, a name registered before, or ERR_NOMEM. The family lives as long
 * as m.
 */
struct metric_family *metrics_counter(struct metrics *m, const char *name, const char *help,
                                      const char *labels);
struct metric_family *metrics_gauge(struct metrics *m, const char *name, const char *help,
                                    const char *labels);
struct metric_family *metrics_histogram(struct metrics *m, const char *name, const char *help,
                                        const char *labels, const double *bounds, size_t nbounds);

/* values has one string per label name (NULL when the family has none). */
void metric_add(struct metric_family *f, const char *const *values, double v);
void metric_set(struct metric_family *f, const char *const *values, double v);
void metric_observe(struct metric_family *f, const char *const *values, double v);

/* metrics_on_collect - call fn(arg) before every render. */
void metrics_on_collect(struct metrics *m, metrics_collect_fn fn, void *arg);

/* metrics_render - append the exposition text to out; ERR_TOO_BIG, ERR_NOMEM. */
int metrics_render(struct metrics *m, struct buf *out);

/*
 * metrics_process - register the families every daemon shows, as the
 * Prometheus client libraries name them: orders_build_info{version} (1),
 * process_start_time_seconds (Unix time), process_resident_memory_bytes
 * and process_cpu_seconds_total (read from /proc/self at every render).
 * Call once per m. ERR_OK, ERR_INVALID (NULL m or version, or called
 * twice) or ERR_NOMEM.
 */
int metrics_process(struct metrics *m, const char *version);

/* Latency buckets in seconds, 0.5 ms to 10 s, for every _seconds histogram. */
extern const double metrics_latency_bounds[];
extern const size_t metrics_latency_nbounds;

#endif
