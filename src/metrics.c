/*
 * Metrics registry and Prometheus text exposition (see metrics.h for the
 * contract and the consistency argument for histograms).
 *
 * Each counter and gauge gets a cache line of its own, so that hot
 * counters bumped by different threads do not bounce one line between
 * cores.  Doubles live in 64-bit atomics as their bit patterns; additions
 * are compare-and-swap loops.
 */
#include <inttypes.h>
#include <math.h>
#include <stdarg.h>
#include <stdatomic.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "metrics.h"

#define METRICS_CACHE_LINE 64
/* Labels per series; far more than any sane metric has. */
#define METRICS_MAX_LABELS 32

enum metrics_type {
	METRICS_COUNTER,
	METRICS_GAUGE,
	METRICS_HISTOGRAM,
};

static const char *const metrics_type_names[] = {
	[METRICS_COUNTER] = "counter",
	[METRICS_GAUGE] = "gauge",
	[METRICS_HISTOGRAM] = "histogram",
};

struct metric_counter {
	_Alignas(METRICS_CACHE_LINE) _Atomic uint64_t value;
};

struct metric_gauge {
	_Alignas(METRICS_CACHE_LINE) _Atomic uint64_t bits;	/* a double */
};

struct metric_histogram {
	_Alignas(METRICS_CACHE_LINE) _Atomic uint64_t sum_bits; /* a double */
	int n_bounds;
	double *bounds;
	/* n_bounds + 1 non-cumulative counts, the last for +Inf. */
	_Atomic uint64_t *buckets;
};

struct metrics_series {
	char *labels;			/* "" when none */
	union {
		struct metric_counter *counter;
		struct metric_gauge *gauge;
		struct metric_histogram *histogram;
	} u;
};

struct metrics_family {
	char *name;
	char *help;
	enum metrics_type type;
	struct metrics_series *series;
	int n_series;
	int cap_series;
};

struct metrics {
	struct metrics_family *families;
	int n_families;
	int cap_families;
};

/* A growing output buffer; failed latches the first allocation failure. */
struct metrics_buf {
	char *p;
	size_t len;
	size_t cap;
	int failed;
};

static uint64_t
metrics_double_bits(double v)
{
	uint64_t b;

	memcpy(&b, &v, sizeof(b));
	return b;
}

static double
metrics_bits_double(uint64_t b)
{
	double v;

	memcpy(&v, &b, sizeof(v));
	return v;
}

/* Adds v to the double stored in *bits. */
static void
metrics_atomic_add_double(_Atomic uint64_t *bits, double v)
{
	uint64_t old, new;

	old = atomic_load_explicit(bits, memory_order_relaxed);
	do {
		new = metrics_double_bits(metrics_bits_double(old) + v);
	} while (!atomic_compare_exchange_weak_explicit(bits, &old, new,
	    memory_order_relaxed, memory_order_relaxed));
}

/* ---------------------------------------------------------------- checks */

static int
metrics_is_alpha_(int c)
{
	return (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || c == '_';
}

static int
metrics_is_digit(int c)
{
	return c >= '0' && c <= '9';
}

/* Whether [s, s + n) is well-formed UTF-8 (no overlong forms, surrogates
 * or code points above U+10FFFF): Prometheus rejects anything else. */
static int
metrics_utf8_valid(const char *s, size_t n)
{
	const unsigned char *p = (const unsigned char *)s, *end = p + n;
	uint32_t cp, min;
	int more;

	while (p < end) {
		if (*p < 0x80) {
			p++;
			continue;
		}
		if ((*p & 0xe0) == 0xc0) {
			cp = *p & 0x1f;
			more = 1;
			min = 0x80;
		} else if ((*p & 0xf0) == 0xe0) {
			cp = *p & 0x0f;
			more = 2;
			min = 0x800;
		} else if ((*p & 0xf8) == 0xf0) {
			cp = *p & 0x07;
			more = 3;
			min = 0x10000;
		} else
			return 0;
		if (end - p <= more)
			return 0;
		for (p++; more > 0; more--, p++) {
			if ((*p & 0xc0) != 0x80)
				return 0;
			cp = (cp << 6) | (*p & 0x3f);
		}
		if (cp < min || cp > 0x10ffff || (cp >= 0xd800 && cp <= 0xdfff))
			return 0;
	}
	return 1;
}

int
metrics_name_check(const char *name, struct orcd_err *err)
{
	const char *p;

	if (name == NULL || *name == '\0')
		return orcd_errf(err, "metric name is empty");
	if (!metrics_is_alpha_(*name) && *name != ':')
		return orcd_errf(err, "metric name \"%s\": must start with a "
		    "letter, '_' or ':'", name);
	for (p = name + 1; *p != '\0'; p++) {
		if (!metrics_is_alpha_(*p) && !metrics_is_digit(*p) &&
		    *p != ':')
			return orcd_errf(err, "metric name \"%s\": bad character "
			    "at offset %zu", name, (size_t)(p - name));
	}
	return 0;
}

int
metrics_labels_check(const char *labels, int for_histogram,
    struct orcd_err *err)
{
	const char *p, *start, *value;
	const char *names[METRICS_MAX_LABELS];
	size_t lens[METRICS_MAX_LABELS], len;
	int n = 0, i;

	if (labels == NULL || *labels == '\0')
		return 0;
	p = labels;
	for (;;) {
		start = p;
		if (!metrics_is_alpha_(*p))
			return orcd_errf(err, "labels '%s': label name expected "
			    "at offset %zu", labels, (size_t)(p - labels));
		while (metrics_is_alpha_(*p) || metrics_is_digit(*p))
			p++;
		len = (size_t)(p - start);
		if (len >= 2 && start[0] == '_' && start[1] == '_')
			return orcd_errf(err, "labels '%s': label name at offset "
			    "%zu starts with the reserved \"__\"", labels,
			    (size_t)(start - labels));
		if (for_histogram && len == 2 && memcmp(start, "le", 2) == 0)
			return orcd_errf(err, "labels '%s': \"le\" is reserved "
			    "for histogram buckets", labels);
		for (i = 0; i < n; i++) {
			if (lens[i] == len && memcmp(names[i], start, len) == 0)
				return orcd_errf(err, "labels '%s': label \"%.*s\" "
				    "given twice", labels, (int)len, start);
		}
		if (n == METRICS_MAX_LABELS)
			return orcd_errf(err, "labels '%s': more than %d labels",
			    labels, METRICS_MAX_LABELS);
		names[n] = start;
		lens[n] = len;
		n++;
		if (*p != '=')
			return orcd_errf(err, "labels '%s': '=' expected at "
			    "offset %zu", labels, (size_t)(p - labels));
		p++;
		if (*p != '"')
			return orcd_errf(err, "labels '%s': '\"' expected at "
			    "offset %zu", labels, (size_t)(p - labels));
		value = ++p;
		while (*p != '"') {
			if (*p == '\0')
				return orcd_errf(err, "labels '%s': value of "
				    "\"%.*s\" is not terminated", labels,
				    (int)len, start);
			if (*p == '\n')
				return orcd_errf(err, "labels '%s': raw newline "
				    "at offset %zu (write \\n)", labels,
				    (size_t)(p - labels));
			if (*p == '\\') {
				p++;
				if (*p != '\\' && *p != '"' && *p != 'n')
					return orcd_errf(err, "labels '%s': bad "
					    "escape at offset %zu (only \\\\, "
					    "\\\" and \\n)", labels,
					    (size_t)(p - 1 - labels));
			}
			p++;
		}
		if (!metrics_utf8_valid(value, (size_t)(p - value)))
			return orcd_errf(err, "labels '%s': value of \"%.*s\" is "
			    "not valid UTF-8", labels, (int)len, start);
		p++;
		if (*p == '\0')
			return 0;
		if (*p != ',')
			return orcd_errf(err, "labels '%s': ',' or end expected "
			    "at offset %zu", labels, (size_t)(p - labels));
		p++;
	}
}

size_t
metrics_label_escape(char *dst, size_t size, const char *value)
{
	size_t need = 0, written = 0;
	const char *p;
	char esc[2];
	int n, full = size == 0;

	for (p = value; *p != '\0'; p++) {
		esc[0] = *p;
		n = 1;
		if (*p == '\\' || *p == '"' || *p == '\n') {
			esc[0] = '\\';
			esc[1] = *p == '\n' ? 'n' : *p;
			n = 2;
		}
		/* All of an escape or none of it, so a short buffer never
		 * ends in a lone backslash. */
		if (!full && written + (size_t)n < size) {
			memcpy(dst + written, esc, (size_t)n);
			written += (size_t)n;
		} else
			full = 1;
		need += (size_t)n;
	}
	if (size > 0)
		dst[written] = '\0';
	return need;
}

/* ---------------------------------------------------------- registration */

static void __attribute__((noreturn))
metrics_die(const char *name, const struct orcd_err *err)
{
	fprintf(stderr, "orcd: metrics: registering \"%s\": %s\n",
	    name != NULL ? name : "(null)", err->msg);
	abort();
}

/* Whether sample is one of the names histogram hname writes besides its
 * own: hname_bucket, hname_sum, hname_count. */
static int
metrics_is_histogram_sample(const char *sample, const char *hname)
{
	size_t n = strlen(hname);

	if (strncmp(sample, hname, n) != 0)
		return 0;
	sample += n;
	return strcmp(sample, "_bucket") == 0 || strcmp(sample, "_sum") == 0 ||
	    strcmp(sample, "_count") == 0;
}

static struct metrics_family *
metrics_find_family(struct metrics *m, const char *name)
{
	int i;

	for (i = 0; i < m->n_families; i++) {
		if (strcmp(m->families[i].name, name) == 0)
			return &m->families[i];
	}
	return NULL;
}

/*
 * Adds a series (labels, metric) to family name, creating the family if
 * needed.  metric is stored as is; the caller frees it on failure.
 */
static int
metrics_register(struct metrics *m, enum metrics_type type, const char *name,
    const char *help, const char *labels, void *metric, struct orcd_err *err)
{
	struct metrics_family *f, *nf;
	struct metrics_series *s, *ns;
	int i, cap;

	if (m == NULL)
		return orcd_errf(err, "no registry");
	if (metrics_name_check(name, err) == -1)
		return -1;
	if (help == NULL)
		return orcd_errf(err, "help text is NULL");
	if (!metrics_utf8_valid(help, strlen(help)))
		return orcd_errf(err, "help text is not valid UTF-8");
	if (labels == NULL)
		labels = "";
	if (metrics_labels_check(labels, type == METRICS_HISTOGRAM, err) == -1)
		return -1;

	f = metrics_find_family(m, name);
	if (f != NULL) {
		if (f->type != type)
			return orcd_errf(err, "registered before as a %s, now as "
			    "a %s", metrics_type_names[f->type],
			    metrics_type_names[type]);
		if (strcmp(f->help, help) != 0)
			return orcd_errf(err, "help text \"%s\" differs from "
			    "the earlier \"%s\"", help, f->help);
		for (i = 0; i < f->n_series; i++) {
			if (strcmp(f->series[i].labels, labels) == 0)
				return orcd_errf(err, "series {%s} registered "
				    "twice", labels);
		}
	} else {
		for (i = 0; i < m->n_families; i++) {
			nf = &m->families[i];
			if ((nf->type == METRICS_HISTOGRAM &&
			    metrics_is_histogram_sample(name, nf->name)) ||
			    (type == METRICS_HISTOGRAM &&
			    metrics_is_histogram_sample(nf->name, name)))
				return orcd_errf(err, "clashes with the samples "
				    "of histogram family \"%s\"",
				    type == METRICS_HISTOGRAM ? name :
				    nf->name);
		}
		if (m->n_families == m->cap_families) {
			cap = m->cap_families > 0 ? 2 * m->cap_families : 16;
			nf = realloc(m->families, (size_t)cap * sizeof(*nf));
			if (nf == NULL)
				goto nomem;
			m->families = nf;
			m->cap_families = cap;
		}
		f = &m->families[m->n_families];
		memset(f, 0, sizeof(*f));
		f->type = type;
		f->name = strdup(name);
		f->help = strdup(help);
		if (f->name == NULL || f->help == NULL) {
			free(f->name);
			free(f->help);
			goto nomem;
		}
		m->n_families++;
	}

	if (f->n_series == f->cap_series) {
		cap = f->cap_series > 0 ? 2 * f->cap_series : 4;
		ns = realloc(f->series, (size_t)cap * sizeof(*ns));
		if (ns == NULL)
			goto nomem;
		f->series = ns;
		f->cap_series = cap;
	}
	s = &f->series[f->n_series];
	s->labels = strdup(labels);
	if (s->labels == NULL)
		goto nomem;
	switch (type) {
	case METRICS_COUNTER:
		s->u.counter = metric;
		break;
	case METRICS_GAUGE:
		s->u.gauge = metric;
		break;
	case METRICS_HISTOGRAM:
		s->u.histogram = metric;
		break;
	}
	f->n_series++;
	return 0;

nomem:
	return orcd_errf(err, "out of memory");
}

static void
metrics_histogram_free(struct metric_histogram *h)
{
	if (h == NULL)
		return;
	free(h->bounds);
	free(h->buckets);
	free(h);
}

struct metrics *
metrics_new(void)
{
	return calloc(1, sizeof(struct metrics));
}

void
metrics_free(struct metrics *m)
{
	struct metrics_family *f;
	struct metrics_series *s;
	int i, j;

	if (m == NULL)
		return;
	for (i = 0; i < m->n_families; i++) {
		f = &m->families[i];
		for (j = 0; j < f->n_series; j++) {
			s = &f->series[j];
			switch (f->type) {
			case METRICS_COUNTER:
				free(s->u.counter);
				break;
			case METRICS_GAUGE:
				free(s->u.gauge);
				break;
			case METRICS_HISTOGRAM:
				metrics_histogram_free(s->u.histogram);
				break;
			}
			free(s->labels);
		}
		free(f->series);
		free(f->name);
		free(f->help);
	}
	free(m->families);
	free(m);
}

struct metric_counter *
metrics_counter(struct metrics *m, const char *name, const char *help,
    const char *labels)
{
	struct orcd_err err;
	struct metric_counter *c;

	c = aligned_alloc(METRICS_CACHE_LINE, sizeof(*c));
	if (c == NULL) {
		orcd_errf(&err, "out of memory");
		metrics_die(name, &err);
	}
	atomic_init(&c->value, 0);
	if (metrics_register(m, METRICS_COUNTER, name, help, labels, c,
	    &err) == -1) {
		free(c);
		metrics_die(name, &err);
	}
	return c;
}

struct metric_gauge *
metrics_gauge(struct metrics *m, const char *name, const char *help,
    const char *labels)
{
	struct orcd_err err;
	struct metric_gauge *g;

	g = aligned_alloc(METRICS_CACHE_LINE, sizeof(*g));
	if (g == NULL) {
		orcd_errf(&err, "out of memory");
		metrics_die(name, &err);
	}
	atomic_init(&g->bits, metrics_double_bits(0.0));
	if (metrics_register(m, METRICS_GAUGE, name, help, labels, g,
	    &err) == -1) {
		free(g);
		metrics_die(name, &err);
	}
	return g;
}

struct metric_histogram *
metrics_histogram(struct metrics *m, const char *name, const char *help,
    const char *labels, const double *bounds, int n_bounds)
{
	struct orcd_err err;
	struct metric_histogram *h = NULL;
	size_t size;
	int i;

	if (n_bounds < 0 || (n_bounds > 0 && bounds == NULL)) {
		orcd_errf(&err, "%d bounds at %p", n_bounds,
		    (const void *)bounds);
		goto fail;
	}
	for (i = 0; i < n_bounds; i++) {
		if (!isfinite(bounds[i])) {
			orcd_errf(&err, "bound %d is %g (+Inf is implicit)", i,
			    bounds[i]);
			goto fail;
		}
		if (i > 0 && !(bounds[i] > bounds[i - 1])) {
			orcd_errf(&err, "bound %d (%g) is not above bound %d "
			    "(%g)", i, bounds[i], i - 1, bounds[i - 1]);
			goto fail;
		}
	}
	h = aligned_alloc(METRICS_CACHE_LINE, sizeof(*h));
	if (h == NULL)
		goto nomem;
	memset(h, 0, sizeof(*h));
	h->n_bounds = n_bounds;
	h->bounds = malloc((size_t)(n_bounds > 0 ? n_bounds : 1) *
	    sizeof(*h->bounds));
	/* Buckets on whole cache lines: no false sharing with the heap
	 * neighbours. */
	size = (size_t)(n_bounds + 1) * sizeof(*h->buckets);
	size = (size + METRICS_CACHE_LINE - 1) / METRICS_CACHE_LINE *
	    METRICS_CACHE_LINE;
	h->buckets = aligned_alloc(METRICS_CACHE_LINE, size);
	if (h->bounds == NULL || h->buckets == NULL)
		goto nomem;
	if (n_bounds > 0)
		memcpy(h->bounds, bounds, (size_t)n_bounds * sizeof(*bounds));
	for (i = 0; i <= n_bounds; i++)
		atomic_init(&h->buckets[i], 0);
	atomic_init(&h->sum_bits, metrics_double_bits(0.0));
	if (metrics_register(m, METRICS_HISTOGRAM, name, help, labels, h,
	    &err) == -1)
		goto fail;
	return h;

nomem:
	orcd_errf(&err, "out of memory");
fail:
	metrics_histogram_free(h);
	metrics_die(name, &err);
}

/* v rounded to 15 significant digits. */
static double
metrics_round15(double v)
{
	char buf[METRICS_NUMBER_MAX];

	snprintf(buf, sizeof(buf), "%.15g", v);
	return strtod(buf, NULL);
}

int
metrics_buckets_exponential(double start, double factor, int n, double *out)
{
	double x;
	int i;

	if (!(start > 0) || !(factor > 1) || n < 1 || !isfinite(start) ||
	    !isfinite(factor))
		return -1;
	x = start;
	for (i = 0; i < n; i++) {
		out[i] = metrics_round15(x);
		if (!isfinite(out[i]) || (i > 0 && !(out[i] > out[i - 1])))
			return -1;
		x = out[i] * factor;
	}
	return 0;
}

int
metrics_buckets_linear(double start, double width, int n, double *out)
{
	int i;

	if (!isfinite(start) || !(width > 0) || !isfinite(width) || n < 1)
		return -1;
	for (i = 0; i < n; i++) {
		/* start + width * i, not a running sum: no drift. */
		out[i] = metrics_round15(start + width * i);
		if (!isfinite(out[i]) || (i > 0 && !(out[i] > out[i - 1])))
			return -1;
	}
	return 0;
}

/* --------------------------------------------------------------- updates */

void
metric_counter_inc(struct metric_counter *c)
{
	atomic_fetch_add_explicit(&c->value, 1, memory_order_relaxed);
}

void
metric_counter_add(struct metric_counter *c, uint64_t v)
{
	atomic_fetch_add_explicit(&c->value, v, memory_order_relaxed);
}

void
metric_gauge_set(struct metric_gauge *g, double v)
{
	atomic_store_explicit(&g->bits, metrics_double_bits(v),
	    memory_order_relaxed);
}

void
metric_gauge_add(struct metric_gauge *g, double v)
{
	metrics_atomic_add_double(&g->bits, v);
}

void
metric_histogram_observe(struct metric_histogram *h, double v)
{
	int lo = 0, hi = h->n_bounds, mid;

	/* The first bound >= v; NaN compares false everywhere and ends in
	 * the +Inf bucket. */
	while (lo < hi) {
		mid = lo + (hi - lo) / 2;
		if (v <= h->bounds[mid])
			hi = mid;
		else
			lo = mid + 1;
	}
	atomic_fetch_add_explicit(&h->buckets[lo], 1, memory_order_relaxed);
	metrics_atomic_add_double(&h->sum_bits, v);
}

uint64_t
metric_counter_value(const struct metric_counter *c)
{
	return atomic_load_explicit(&c->value, memory_order_relaxed);
}

double
metric_gauge_value(const struct metric_gauge *g)
{
	return metrics_bits_double(atomic_load_explicit(&g->bits,
	    memory_order_relaxed));
}

uint64_t
metric_histogram_count(const struct metric_histogram *h)
{
	uint64_t total = 0;
	int i;

	for (i = 0; i <= h->n_bounds; i++)
		total += atomic_load_explicit(&h->buckets[i],
		    memory_order_relaxed);
	return total;
}

double
metric_histogram_sum(const struct metric_histogram *h)
{
	return metrics_bits_double(atomic_load_explicit(&h->sum_bits,
	    memory_order_relaxed));
}

uint64_t
metric_histogram_bucket(const struct metric_histogram *h, int i)
{
	if (i < 0 || i > h->n_bounds)
		return 0;
	return atomic_load_explicit(&h->buckets[i], memory_order_relaxed);
}

double
metric_histogram_quantile(const struct metric_histogram *h, double q)
{
	uint64_t small[64], *cum, total;
	double rank, lower, upper, in_bucket, result;
	int i, n = h->n_bounds;

	if (isnan(q))
		return NAN;
	if (q < 0)
		return -INFINITY;
	if (q > 1)
		return INFINITY;
	if (n == 0)
		return NAN;
	/* One snapshot of the buckets, so the estimate is self-consistent
	 * while writers run. */
	cum = (size_t)n + 1 <= sizeof(small) / sizeof(small[0]) ? small :
	    malloc(((size_t)n + 1) * sizeof(*cum));
	if (cum == NULL)
		return NAN;
	total = 0;
	for (i = 0; i <= n; i++) {
		total += atomic_load_explicit(&h->buckets[i],
		    memory_order_relaxed);
		cum[i] = total;
	}
	if (total == 0) {
		result = NAN;
		goto out;
	}
	rank = q * (double)total;
	/* cum[i] > 0 only matters for rank 0: it skips empty low buckets. */
	for (i = 0; i < n; i++) {
		if ((double)cum[i] >= rank && cum[i] > 0)
			break;
	}
	if (i == n) {
		result = h->bounds[n - 1];
		goto out;
	}
	if (i == 0 && h->bounds[0] <= 0) {
		result = h->bounds[0];
		goto out;
	}
	upper = h->bounds[i];
	lower = i > 0 ? h->bounds[i - 1] : 0;
	in_bucket = (double)(cum[i] - (i > 0 ? cum[i - 1] : 0));
	if (i > 0)
		rank -= (double)cum[i - 1];
	result = lower + (upper - lower) * (rank / in_bucket);
out:
	if (cum != small)
		free(cum);
	return result;
}

/* ------------------------------------------------------------ exposition */

int
metrics_format_double(double v, char *buf)
{
	int n, prec;

	if (isnan(v))
		return snprintf(buf, METRICS_NUMBER_MAX, "NaN");
	if (isinf(v))
		return snprintf(buf, METRICS_NUMBER_MAX, v > 0 ? "+Inf" : "-Inf");
	/* Integral values as integers (exact; no exponent, no ".0"). */
	if (fabs(v) < 0x1p63 && (double)(int64_t)v == v)
		return snprintf(buf, METRICS_NUMBER_MAX, "%" PRId64, (int64_t)v);
	/* The shortest precision that reads back exactly: 0.1, not
	 * 0.10000000000000001.  (Assumes the C locale's decimal point.) */
	for (prec = 15;; prec++) {
		n = snprintf(buf, METRICS_NUMBER_MAX, "%.*g", prec, v);
		if (prec == 17 || strtod(buf, NULL) == v)
			return n;
	}
}

static void
metrics_buf_add(struct metrics_buf *b, const char *s, size_t n)
{
	size_t cap;
	char *p;

	if (b->failed)
		return;
	if (b->len + n + 1 > b->cap) {
		cap = b->cap > 0 ? b->cap : 4096;
		while (cap < b->len + n + 1)
			cap *= 2;
		p = realloc(b->p, cap);
		if (p == NULL) {
			b->failed = 1;
			return;
		}
		b->p = p;
		b->cap = cap;
	}
	memcpy(b->p + b->len, s, n);
	b->len += n;
	b->p[b->len] = '\0';
}

static void
metrics_buf_puts(struct metrics_buf *b, const char *s)
{
	metrics_buf_add(b, s, strlen(s));
}

static void
metrics_buf_u64(struct metrics_buf *b, uint64_t v)
{
	char num[METRICS_NUMBER_MAX];
	int n;

	n = snprintf(num, sizeof(num), "%" PRIu64, v);
	metrics_buf_add(b, num, (size_t)n);
}

static void
metrics_buf_double(struct metrics_buf *b, double v)
{
	char num[METRICS_NUMBER_MAX];
	int n;

	n = metrics_format_double(v, num);
	metrics_buf_add(b, num, (size_t)n);
}

/* HELP text with \ and newline escaped, as the text format asks. */
static void
metrics_buf_help(struct metrics_buf *b, const char *help)
{
	const char *p, *run = help;

	for (p = help; *p != '\0'; p++) {
		if (*p != '\\' && *p != '\n')
			continue;
		metrics_buf_add(b, run, (size_t)(p - run));
		metrics_buf_puts(b, *p == '\\' ? "\\\\" : "\\n");
		run = p + 1;
	}
	metrics_buf_add(b, run, (size_t)(p - run));
}

/* "name[suffix][{labels}] " */
static void
metrics_buf_sample(struct metrics_buf *b, const char *name,
    const char *suffix, const char *labels)
{
	metrics_buf_puts(b, name);
	metrics_buf_puts(b, suffix);
	if (*labels != '\0') {
		metrics_buf_puts(b, "{");
		metrics_buf_puts(b, labels);
		metrics_buf_puts(b, "}");
	}
	metrics_buf_puts(b, " ");
}

static void
metrics_render_histogram(struct metrics_buf *b, const char *name,
    const char *labels, const struct metric_histogram *h)
{
	uint64_t cum = 0;
	int i;

	/* Each bucket counter is loaded exactly once and the running sum of
	 * those loads is both the cumulative bucket value and, at the end,
	 * _count: monotone and consistent however writers interleave. */
	for (i = 0; i <= h->n_bounds; i++) {
		cum += atomic_load_explicit(&h->buckets[i],
		    memory_order_relaxed);
		metrics_buf_puts(b, name);
		metrics_buf_puts(b, "_bucket{");
		if (*labels != '\0') {
			metrics_buf_puts(b, labels);
			metrics_buf_puts(b, ",");
		}
		metrics_buf_puts(b, "le=\"");
		if (i < h->n_bounds)
			metrics_buf_double(b, h->bounds[i]);
		else
			metrics_buf_puts(b, "+Inf");
		metrics_buf_puts(b, "\"} ");
		metrics_buf_u64(b, cum);
		metrics_buf_puts(b, "\n");
	}
	metrics_buf_sample(b, name, "_sum", labels);
	metrics_buf_double(b, metric_histogram_sum(h));
	metrics_buf_puts(b, "\n");
	metrics_buf_sample(b, name, "_count", labels);
	metrics_buf_u64(b, cum);
	metrics_buf_puts(b, "\n");
}

ssize_t
metrics_render(const struct metrics *m, char **out)
{
	struct metrics_buf b = { NULL, 0, 0, 0 };
	const struct metrics_family *f;
	const struct metrics_series *s;
	int i, j;

	*out = NULL;
	metrics_buf_add(&b, "", 0);	/* an empty registry renders "" */
	for (i = 0; i < m->n_families; i++) {
		f = &m->families[i];
		if (f->help[0] != '\0') {
			metrics_buf_puts(&b, "# HELP ");
			metrics_buf_puts(&b, f->name);
			metrics_buf_puts(&b, " ");
			metrics_buf_help(&b, f->help);
			metrics_buf_puts(&b, "\n");
		}
		metrics_buf_puts(&b, "# TYPE ");
		metrics_buf_puts(&b, f->name);
		metrics_buf_puts(&b, " ");
		metrics_buf_puts(&b, metrics_type_names[f->type]);
		metrics_buf_puts(&b, "\n");
		for (j = 0; j < f->n_series; j++) {
			s = &f->series[j];
			switch (f->type) {
			case METRICS_COUNTER:
				metrics_buf_sample(&b, f->name, "", s->labels);
				metrics_buf_u64(&b,
				    metric_counter_value(s->u.counter));
				metrics_buf_puts(&b, "\n");
				break;
			case METRICS_GAUGE:
				metrics_buf_sample(&b, f->name, "", s->labels);
				metrics_buf_double(&b,
				    metric_gauge_value(s->u.gauge));
				metrics_buf_puts(&b, "\n");
				break;
			case METRICS_HISTOGRAM:
				metrics_render_histogram(&b, f->name,
				    s->labels, s->u.histogram);
				break;
			}
		}
	}
	if (b.failed) {
		free(b.p);
		return -1;
	}
	*out = b.p;
	return (ssize_t)b.len;
}
