/*
 * Metrics registry and Prometheus text exposition (format 0.0.4) for
 * GET /metrics.
 *
 * Metrics are registered once at startup, before any thread that updates
 * them starts; after that the registry's shape never changes.  Updates are
 * lock-free C11 atomics with relaxed ordering, safe from any thread (loop,
 * engine workers, CUDA bridge), and cost O(1) for counters and gauges and
 * O(log n_bounds) for histograms.  metrics_render() may run concurrently
 * with updates from any thread; it takes no lock either.
 *
 * A metric family is one name with one type and one help text; every
 * registration of the same name with a different label set adds a series
 * to that family.  Label sets are given preformatted, exactly as they will
 * appear between the braces, e.g.
 *
 *	reason="cancel",phase="prefill"
 *
 * They are checked at registration (label names, quoting, escapes, UTF-8);
 * metrics_label_escape() builds a value from run-time text such as a model
 * name.
 *
 * Registration problems (bad name or labels, a type or help text that
 * disagrees with an earlier registration of the family, the same series
 * twice, a name that clashes with another family's samples, out of memory)
 * are programming errors: the registration functions print a message and
 * abort().  metrics_name_check() and metrics_labels_check() are the same
 * checks with an error return, for labels built from run-time data.
 *
 * Histogram consistency under concurrent updates: a histogram keeps one
 * non-cumulative counter per bucket and no separate count.  A scrape loads
 * each bucket counter exactly once, builds the cumulative counts from that
 * snapshot and prints _count as the +Inf bucket's cumulative count.  So the
 * printed buckets never decrease and _count always equals the +Inf bucket,
 * whatever the writers do meanwhile.  _sum is a separate atomic and may
 * include an observation or two more or fewer than the buckets (the usual
 * trade-off of lock-free client libraries; Prometheus tolerates it).
 */
#ifndef ORCD_METRICS_H
#define ORCD_METRICS_H

#include <stddef.h>
#include <stdint.h>
#include <sys/types.h>

#include "err.h"

/* The Content-Type of metrics_render()'s output. */
#define METRICS_CONTENT_TYPE "text/plain; version=0.0.4; charset=utf-8"

/* Enough for any number metrics_format_double() writes, with the NUL. */
#define METRICS_NUMBER_MAX 32

struct metrics;
struct metric_counter;
struct metric_gauge;
struct metric_histogram;

struct metrics *metrics_new(void);
void metrics_free(struct metrics *m);

/*
 * Registration (startup, single-threaded; aborts on a programming error).
 * name: [a-zA-Z_:][a-zA-Z0-9_:]*.  help: non-NULL, may be empty (then no
 * HELP line).  labels: NULL, "" or a label set as above.
 */
struct metric_counter *metrics_counter(struct metrics *m, const char *name,
	    const char *help, const char *labels);
struct metric_gauge *metrics_gauge(struct metrics *m, const char *name,
	    const char *help, const char *labels);
/* bounds: n_bounds (>= 0) finite upper bounds, strictly ascending; the +Inf
 * bucket is implicit.  An observation v lands in the first bucket with
 * v <= bound (le is inclusive); NaN lands in +Inf only.  The bounds are
 * copied.  A histogram's labels may not use "le". */
struct metric_histogram *metrics_histogram(struct metrics *m,
	    const char *name, const char *help, const char *labels,
	    const double *bounds, int n_bounds);

/* Bucket layouts: start * factor^i, and start + width * i, for i in
 * [0, n), each rounded to 15 significant digits so le labels read cleanly
 * (0.001 * 10 is not 0.01 in binary).  Return 0, or -1 when the arguments
 * give no ascending finite sequence (start <= 0 or factor <= 1 for the
 * exponential one, width <= 0, n < 1). */
int metrics_buckets_exponential(double start, double factor, int n,
	    double *out);
int metrics_buckets_linear(double start, double width, int n, double *out);

/* Updates: lock-free, relaxed, from any thread. */
void metric_counter_inc(struct metric_counter *c);
void metric_counter_add(struct metric_counter *c, uint64_t v);
void metric_gauge_set(struct metric_gauge *g, double v);
/* A CAS loop on the double's bit pattern. */
void metric_gauge_add(struct metric_gauge *g, double v);
void metric_histogram_observe(struct metric_histogram *h, double v);

/* Reads (relaxed; a snapshot of a moving value). */
uint64_t metric_counter_value(const struct metric_counter *c);
double metric_gauge_value(const struct metric_gauge *g);
/* The total of the bucket counters. */
uint64_t metric_histogram_count(const struct metric_histogram *h);
double metric_histogram_sum(const struct metric_histogram *h);
/* Observations in bucket i alone (not cumulative): i in [0, n_bounds),
 * n_bounds for +Inf; 0 for any other i. */
uint64_t metric_histogram_bucket(const struct metric_histogram *h, int i);
/*
 * Quantile estimate from the buckets, as Prometheus' histogram_quantile()
 * computes it: the rank q * count is located in the first bucket whose
 * cumulative count reaches it and interpolated linearly inside that bucket
 * (the lowest bucket spans [0, bound] when bound > 0, else it returns its
 * bound; a rank in the +Inf bucket returns the highest finite bound).
 * NaN when empty or without finite bounds; -Inf for q < 0, +Inf for q > 1.
 */
double metric_histogram_quantile(const struct metric_histogram *h, double q);

/*
 * Exposition: families in registration order, series in registration order
 * within a family, HELP (\ and newline escaped) and TYPE lines, histograms
 * as cumulative _bucket{le="..."} lines then _sum and _count.  Writes a
 * malloc'd NUL-terminated buffer to *out and returns its length, or returns
 * -1 (out of memory) with *out NULL.
 */
ssize_t metrics_render(const struct metrics *m, char **out);

/*
 * A number as Prometheus writes it: NaN, +Inf, -Inf; an integral value
 * below 2^63 in magnitude as a plain integer; otherwise the shortest of
 * %.15g, %.16g, %.17g that reads back as the same double.  buf holds at
 * least METRICS_NUMBER_MAX bytes.  Returns the length.  (Uses printf and
 * strtod, so it assumes the C locale's '.'; orcd never calls setlocale.)
 */
int metrics_format_double(double v, char *buf);

/* Escapes a label value (\ -> \\, " -> \", newline -> \n) like snprintf:
 * writes at most size bytes including the NUL and returns the length the
 * whole escaped value needs (without the NUL). */
size_t metrics_label_escape(char *dst, size_t size, const char *value);

/* The registration checks, with an error return: 0, or -1 and err filled.
 * for_histogram also rejects the label name "le". */
int metrics_name_check(const char *name, struct orcd_err *err);
int metrics_labels_check(const char *labels, int for_histogram,
	    struct orcd_err *err);

#endif
