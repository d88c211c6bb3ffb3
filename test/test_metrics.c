/*
 * Metrics tests: registration into families and series, name and label
 * validation (and that programming errors abort, in a child process),
 * exact totals from 4 threads updating at once, histogram bucket placement
 * at the boundaries (le is inclusive), quantile estimates, number
 * formatting, a golden rendering of a small registry, label value
 * escaping, scrapes racing writers never showing decreasing buckets or a
 * _count other than the +Inf bucket, `promtool check metrics` on the text
 * of a registry with every kind of metric (skipped without promtool), and
 * the cost of an update (printed).
 */
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <setjmp.h>
#include <cmocka.h>

#include <math.h>
#include <pthread.h>
#include <signal.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include "metrics.h"

/* cmocka's test signature; the state is not used. */
#define UNUSED __attribute__((unused))

#define N_THREADS 4
#define PER_THREAD 200000

static char *
render_or_fail(const struct metrics *m)
{
	char *text;
	ssize_t n;

	n = metrics_render(m, &text);
	assert_true(n >= 0);
	assert_non_null(text);
	assert_int_equal((size_t)n, strlen(text));
	return text;
}

/* --------------------------------------------------------- registration */

static void
test_register(void **state UNUSED)
{
	struct metrics *m = metrics_new();
	struct metric_counter *a, *b;
	struct metric_gauge *g;
	struct metric_histogram *h;
	const double bounds[] = { 1, 2 };
	char *text;

	assert_non_null(m);
	a = metrics_counter(m, "x_total", "X.", "k=\"a\"");
	b = metrics_counter(m, "x_total", "X.", "k=\"b\"");
	g = metrics_gauge(m, "y", "Y.", NULL);
	h = metrics_histogram(m, "z_seconds", "Z.", "", bounds, 2);
	assert_ptr_not_equal(a, b);

	assert_int_equal(metric_counter_value(a), 0);
	metric_counter_inc(a);
	metric_counter_add(a, 41);
	metric_counter_add(b, 7);
	assert_int_equal(metric_counter_value(a), 42);
	assert_int_equal(metric_counter_value(b), 7);

	assert_true(metric_gauge_value(g) == 0.0);
	metric_gauge_set(g, 1.5);
	metric_gauge_add(g, -4);
	assert_true(metric_gauge_value(g) == -2.5);

	assert_int_equal(metric_histogram_count(h), 0);
	metric_histogram_observe(h, 1.5);
	metric_histogram_observe(h, 7);
	assert_int_equal(metric_histogram_count(h), 2);
	assert_true(metric_histogram_sum(h) == 8.5);

	/* One family, two series: HELP and TYPE once. */
	text = render_or_fail(m);
	assert_non_null(strstr(text, "x_total{k=\"a\"} 42\n"
	    "x_total{k=\"b\"} 7\n"));
	assert_null(strstr(strstr(text, "# TYPE x_total") + 1,
	    "# TYPE x_total"));
	assert_null(strstr(strstr(text, "# HELP x_total") + 1,
	    "# HELP x_total"));
	free(text);
	metrics_free(m);

	/* An empty registry renders as nothing. */
	m = metrics_new();
	text = render_or_fail(m);
	assert_string_equal(text, "");
	free(text);
	metrics_free(m);
	metrics_free(NULL);
}

static void
test_name_check(void **state UNUSED)
{
	static const char *const good[] = {
		"a", "_", ":", "orcd_requests_total", "job:rate5m",
		"A9_:x", "__x",
	};
	static const char *const bad[] = {
		"", "9a", "a-b", "a b", "a.b", "a{", "é",
	};
	struct orcd_err err;
	size_t i;

	for (i = 0; i < sizeof(good) / sizeof(good[0]); i++)
		assert_int_equal(metrics_name_check(good[i], &err), 0);
	for (i = 0; i < sizeof(bad) / sizeof(bad[0]); i++) {
		err.msg[0] = '\0';
		assert_int_equal(metrics_name_check(bad[i], &err), -1);
		assert_true(err.msg[0] != '\0');
	}
	assert_int_equal(metrics_name_check(NULL, &err), -1);
	metrics_name_check("a-b", &err);
	assert_non_null(strstr(err.msg, "offset 1"));
}

static void
test_labels_check(void **state UNUSED)
{
	static const char *const good[] = {
		"a=\"b\"",
		"reason=\"cancel\",phase=\"prefill\"",
		"a=\"\"",
		"_a9=\"x\\\\y\"",
		"a=\"say \\\"hi\\\"\"",
		"a=\"line\\nbreak\"",
		"a=\"h\xc3\xa9llo \xe2\x82\xac \xf0\x9f\x98\x80\"",
		"a=\"=,{}\"",
		"le=\"1\"",		/* fine outside histograms */
	};
	static const struct {
		const char *labels;
		const char *msg;	/* part of the message */
	} bad[] = {
		{ "1a=\"b\"", "label name expected at offset 0" },
		{ "a:b=\"c\"", "'=' expected at offset 1" },
		{ "a=b", "'\"' expected at offset 2" },
		{ "a=\"b", "not terminated" },
		{ "a=\"b\",", "label name expected at offset 6" },
		{ ",a=\"b\"", "label name expected at offset 0" },
		{ "a=\"b\" ", "',' or end expected at offset 5" },
		{ "a=\"b\"c=\"d\"", "',' or end expected" },
		{ "a=\"b\", c=\"d\"", "label name expected at offset 6" },
		{ "__name__=\"x\"", "reserved" },
		{ "a=\"b\",a=\"c\"", "given twice" },
		{ "a=\"\\x\"", "bad escape at offset 3" },
		{ "a=\"\\", "bad escape" },
		{ "a=\"b\nc\"", "raw newline" },
		{ "a=\"\xff\"", "UTF-8" },
		{ "a=\"\xc0\xaf\"", "UTF-8" },		/* overlong '/' */
		{ "a=\"\xed\xa0\x80\"", "UTF-8" },	/* a surrogate */
		{ "a=\"\xe2\x82\"", "UTF-8" },		/* truncated */
		{ "a=", "'\"' expected" },
	};
	struct orcd_err err;
	size_t i;

	assert_int_equal(metrics_labels_check(NULL, 1, &err), 0);
	assert_int_equal(metrics_labels_check("", 1, &err), 0);
	for (i = 0; i < sizeof(good) / sizeof(good[0]); i++) {
		if (metrics_labels_check(good[i], 0, &err) != 0)
			fail_msg("'%s' rejected: %s", good[i], err.msg);
	}
	for (i = 0; i < sizeof(bad) / sizeof(bad[0]); i++) {
		err.msg[0] = '\0';
		if (metrics_labels_check(bad[i].labels, 0, &err) != -1)
			fail_msg("'%s' accepted", bad[i].labels);
		if (strstr(err.msg, bad[i].msg) == NULL)
			fail_msg("'%s': message \"%s\" lacks \"%s\"",
			    bad[i].labels, err.msg, bad[i].msg);
	}
	assert_int_equal(metrics_labels_check("le=\"1\"", 1, &err), -1);
	assert_non_null(strstr(err.msg, "reserved for histogram"));
	assert_int_equal(metrics_labels_check("a=\"1\",le=\"1\"", 1, &err), -1);
	assert_int_equal(metrics_labels_check("lex=\"1\"", 1, &err), 0);
}

/* Each case ends in a registration that must abort. */
static void
abort_case(int k)
{
	struct metrics *m = metrics_new();
	const double bounds[] = { 1, 2 }, unsorted[] = { 2, 1 };
	const double same[] = { 1, 1 }, nan_bound[] = { 1, NAN };
	const double inf_bound[] = { 1, INFINITY };

	switch (k) {
	case 0:
		metrics_counter(m, "bad-name", "x", NULL);
		break;
	case 1:
		metrics_counter(m, "a_total", "x", "a=b");
		break;
	case 2:
		metrics_counter(m, "a", "x", NULL);
		metrics_gauge(m, "a", "x", "k=\"v\"");
		break;
	case 3:
		metrics_counter(m, "a", "x", "k=\"1\"");
		metrics_counter(m, "a", "y", "k=\"2\"");
		break;
	case 4:
		metrics_counter(m, "a", "x", "k=\"1\"");
		metrics_counter(m, "a", "x", "k=\"1\"");
		break;
	case 5:
		metrics_counter(m, "a", "x", NULL);
		metrics_counter(m, "a", "x", "");
		break;
	case 6:
		metrics_histogram(m, "h", "x", NULL, unsorted, 2);
		break;
	case 7:
		metrics_histogram(m, "h", "x", NULL, same, 2);
		break;
	case 8:
		metrics_histogram(m, "h", "x", NULL, nan_bound, 2);
		break;
	case 9:
		metrics_histogram(m, "h", "x", NULL, inf_bound, 2);
		break;
	case 10:
		metrics_histogram(m, "h", "x", "le=\"3\"", bounds, 2);
		break;
	case 11:
		metrics_histogram(m, "h", "x", NULL, bounds, 2);
		metrics_counter(m, "h_count", "x", NULL);
		break;
	case 12:
		metrics_gauge(m, "h_sum", "x", NULL);
		metrics_histogram(m, "h", "x", NULL, bounds, 2);
		break;
	case 13:
		metrics_histogram(m, "h", "x", NULL, bounds, -1);
		break;
	case 14:
		metrics_counter(m, "a", NULL, NULL);
		break;
	case 15:
		metrics_gauge(m, "a", "bad \xff help", NULL);
		break;
	}
	metrics_free(m);
}
#define N_ABORT_CASES 16

static void
test_register_aborts(void **state UNUSED)
{
	char msg[1024];
	ssize_t n;
	size_t len;
	int k, fds[2], status;
	pid_t pid;

	for (k = 0; k < N_ABORT_CASES; k++) {
		assert_int_equal(pipe(fds), 0);
		fflush(NULL);
		pid = fork();
		assert_true(pid >= 0);
		if (pid == 0) {
			dup2(fds[1], STDERR_FILENO);
			close(fds[0]);
			close(fds[1]);
			abort_case(k);
			_exit(0);
		}
		close(fds[1]);
		len = 0;
		while (len < sizeof(msg) - 1 &&
		    (n = read(fds[0], msg + len, sizeof(msg) - 1 - len)) > 0)
			len += (size_t)n;
		msg[len] = '\0';
		close(fds[0]);
		assert_int_equal(waitpid(pid, &status, 0), pid);
		if (!WIFSIGNALED(status) || WTERMSIG(status) != SIGABRT)
			fail_msg("case %d did not abort (status %#x)", k,
			    status);
		if (strstr(msg, "orcd: metrics: registering \"") == NULL)
			fail_msg("case %d: message \"%s\"", k, msg);
	}

	/* The same name with other labels and the same help is fine, as are
	 * names that only look like a histogram's samples. */
	{
		struct metrics *m = metrics_new();
		const double bounds[] = { 1 };

		metrics_counter(m, "a", "x", "k=\"1\"");
		metrics_counter(m, "a", "x", "k=\"2\"");
		metrics_counter(m, "a", "x", NULL);
		metrics_histogram(m, "h", "x", NULL, bounds, 1);
		metrics_counter(m, "h_total", "x", NULL);
		metrics_counter(m, "hx_count", "x", NULL);
		metrics_histogram(m, "h", "x", "k=\"1\"", NULL, 0);
		metrics_free(m);
	}
}

/* ----------------------------------------------------------- concurrency */

struct shared {
	struct metric_counter *c_inc, *c_add;
	struct metric_gauge *g_up, *g_down;
	struct metric_histogram *h;
};

/* Dyadic values (sums stay exact) on and around the bounds 1, 2, 4. */
static const double obs_values[8] = { 0.5, 1, 1.5, 2, 3, 4, 4.25, 100 };
static const int obs_bucket[8] = { 0, 0, 1, 1, 2, 2, 3, 3 };

static void *
writer(void *arg)
{
	struct shared *s = arg;
	int i;

	for (i = 0; i < PER_THREAD; i++) {
		metric_counter_inc(s->c_inc);
		metric_counter_add(s->c_add, 3);
		metric_gauge_add(s->g_up, 1.0);
		metric_gauge_add(s->g_down, -0.5);
		metric_histogram_observe(s->h, obs_values[i % 8]);
	}
	return NULL;
}

static void
test_concurrent_updates(void **state UNUSED)
{
	struct metrics *m = metrics_new();
	const double bounds[] = { 1, 2, 4 };
	pthread_t t[N_THREADS];
	struct shared s;
	double sum = 0;
	uint64_t expect[4] = { 0, 0, 0, 0 };
	int i;

	s.c_inc = metrics_counter(m, "inc_total", "x", NULL);
	s.c_add = metrics_counter(m, "add_total", "x", NULL);
	s.g_up = metrics_gauge(m, "up", "x", NULL);
	s.g_down = metrics_gauge(m, "down", "x", NULL);
	s.h = metrics_histogram(m, "h", "x", NULL, bounds, 3);
	for (i = 0; i < N_THREADS; i++)
		assert_int_equal(pthread_create(&t[i], NULL, writer, &s), 0);
	for (i = 0; i < N_THREADS; i++)
		assert_int_equal(pthread_join(t[i], NULL), 0);

	assert_int_equal(metric_counter_value(s.c_inc),
	    (uint64_t)N_THREADS * PER_THREAD);
	assert_int_equal(metric_counter_value(s.c_add),
	    (uint64_t)N_THREADS * PER_THREAD * 3);
	assert_true(metric_gauge_value(s.g_up) ==
	    (double)N_THREADS * PER_THREAD);
	assert_true(metric_gauge_value(s.g_down) ==
	    -0.5 * N_THREADS * PER_THREAD);
	assert_int_equal(metric_histogram_count(s.h),
	    (uint64_t)N_THREADS * PER_THREAD);
	for (i = 0; i < PER_THREAD; i++) {
		expect[obs_bucket[i % 8]] += N_THREADS;
		sum += N_THREADS * obs_values[i % 8];
	}
	for (i = 0; i < 4; i++)
		assert_int_equal(metric_histogram_bucket(s.h, i), expect[i]);
	assert_true(metric_histogram_sum(s.h) == sum);
	metrics_free(m);
}

struct scrape_writer {
	struct metric_histogram *h;
	struct metric_counter *c;
	_Atomic int *stop;
	unsigned seed;
};

static void *
scrape_writer_main(void *arg)
{
	struct scrape_writer *w = arg;
	unsigned x = w->seed;

	while (!atomic_load(w->stop)) {
		x = x * 1103515245 + 12345;
		metric_histogram_observe(w->h, (double)(x >> 16 & 0xff) / 16);
		metric_counter_inc(w->c);
	}
	return NULL;
}

/* The value after "prefix" at the start of a line. */
static uint64_t
sample_value(const char *text, const char *prefix, const char **next)
{
	const char *p = strstr(text, prefix);
	char *end;
	uint64_t v;

	if (p == NULL)
		fail_msg("no \"%s\" in:\n%s", prefix, text);
	v = strtoull(p + strlen(prefix), &end, 10);
	assert_true(*end == '\n');
	if (next != NULL)
		*next = end;
	return v;
}

static void
test_scrape_consistent(void **state UNUSED)
{
	struct metrics *m = metrics_new();
	double bounds[12];
	struct scrape_writer w[2];
	pthread_t t[2];
	_Atomic int stop = 0;
	uint64_t prev_count = 0, prev_c = 0, v, last, count, c;
	const char *p;
	char *text, prefix[64];
	int i, k;

	assert_int_equal(metrics_buckets_linear(1, 1, 12, bounds), 0);
	for (i = 0; i < 2; i++) {
		w[i].h = metrics_histogram(m, "h_seconds", "x",
		    i == 0 ? "w=\"0\"" : "w=\"1\"", bounds, 12);
		w[i].c = metrics_counter(m, "c_total", "x",
		    i == 0 ? "w=\"0\"" : "w=\"1\"");
		w[i].stop = &stop;
		w[i].seed = 17 + (unsigned)i;
	}
	for (i = 0; i < 2; i++)
		assert_int_equal(pthread_create(&t[i], NULL,
		    scrape_writer_main, &w[i]), 0);
	/* At least 300 scrapes, and on until the writers have been at it
	 * for a while (thread start-up can take longer than 300 scrapes). */
	for (k = 0; k < 300 || prev_count < 200000; k++) {
		text = render_or_fail(m);
		/* Writer 0's series: buckets never decrease, _count is the
		 * +Inf bucket, and both only grow from scrape to scrape. */
		p = text;
		last = 0;
		for (i = 0; i <= 12; i++) {
			if (i < 12)
				snprintf(prefix, sizeof(prefix),
				    "h_seconds_bucket{w=\"0\",le=\"%d\"} ",
				    i + 1);
			else
				snprintf(prefix, sizeof(prefix),
				    "h_seconds_bucket{w=\"0\",le=\"+Inf\"} ");
			v = sample_value(p, prefix, &p);
			if (v < last)
				fail_msg("scrape %d: bucket %d went down", k, i);
			last = v;
		}
		count = sample_value(p, "h_seconds_count{w=\"0\"} ", NULL);
		assert_int_equal(count, last);
		assert_true(count >= prev_count);
		prev_count = count;
		c = sample_value(text, "c_total{w=\"0\"} ", NULL);
		assert_true(c >= prev_c);
		prev_c = c;
		free(text);
	}
	atomic_store(&stop, 1);
	for (i = 0; i < 2; i++)
		assert_int_equal(pthread_join(t[i], NULL), 0);
	print_message("%d scrapes while writing; last _count %llu\n", k,
	    (unsigned long long)prev_count);
	metrics_free(m);
}

/* ------------------------------------------------------------ histograms */

static void
test_bucket_boundaries(void **state UNUSED)
{
	struct metrics *m = metrics_new();
	const double bounds[] = { -1, 0, 1, 2.5 };
	struct metric_histogram *h, *h0, *big;
	double many[100], v;
	uint64_t want[101];
	int i, j, k;

	h = metrics_histogram(m, "h", "x", NULL, bounds, 4);
	/* le is inclusive: each bound lands in its own bucket. */
	metric_histogram_observe(h, -1);		/* 0 */
	metric_histogram_observe(h, -INFINITY);		/* 0 */
	metric_histogram_observe(h, -1e300);		/* 0 */
	metric_histogram_observe(h, nextafter(-1, 0));	/* 1 */
	metric_histogram_observe(h, 0);			/* 1 */
	metric_histogram_observe(h, -0.0);		/* 1 */
	metric_histogram_observe(h, nextafter(0, 1));	/* 2 */
	metric_histogram_observe(h, 1);			/* 2 */
	metric_histogram_observe(h, nextafter(1, 2));	/* 3 */
	metric_histogram_observe(h, 2.5);		/* 3 */
	metric_histogram_observe(h, nextafter(2.5, 3));	/* 4 */
	metric_histogram_observe(h, INFINITY);		/* 4 */
	metric_histogram_observe(h, NAN);		/* 4 */
	assert_int_equal(metric_histogram_bucket(h, 0), 3);
	assert_int_equal(metric_histogram_bucket(h, 1), 3);
	assert_int_equal(metric_histogram_bucket(h, 2), 2);
	assert_int_equal(metric_histogram_bucket(h, 3), 2);
	assert_int_equal(metric_histogram_bucket(h, 4), 3);
	assert_int_equal(metric_histogram_bucket(h, 5), 0);
	assert_int_equal(metric_histogram_bucket(h, -1), 0);
	assert_int_equal(metric_histogram_count(h), 13);
	assert_true(isnan(metric_histogram_sum(h)));

	/* No finite bounds: everything is +Inf. */
	h0 = metrics_histogram(m, "h0", "x", NULL, NULL, 0);
	metric_histogram_observe(h0, -5);
	metric_histogram_observe(h0, 5);
	assert_int_equal(metric_histogram_bucket(h0, 0), 2);
	assert_true(isnan(metric_histogram_quantile(h0, 0.5)));

	/* The binary search against a linear scan, 100 bounds, on and
	 * between the bounds. */
	assert_int_equal(metrics_buckets_exponential(0.001, 1.2, 100, many), 0);
	big = metrics_histogram(m, "big", "x", NULL, many, 100);
	memset(want, 0, sizeof(want));
	for (i = 0; i < 100; i++) {
		for (k = 0; k < 3; k++) {
			v = k == 0 ? many[i] : k == 1 ? nextafter(many[i], 0) :
			    nextafter(many[i], INFINITY);
			for (j = 0; j < 100 && !(v <= many[j]); j++)
				;
			want[j]++;
			metric_histogram_observe(big, v);
		}
	}
	for (i = 0; i <= 100; i++)
		assert_int_equal(metric_histogram_bucket(big, i), want[i]);
	assert_int_equal(want[100], 1);	/* just above the last bound */
	metrics_free(m);
}

static void
test_quantile(void **state UNUSED)
{
	struct metrics *m = metrics_new();
	const double b1[] = { 1, 2, 4, 8 }, bneg[] = { -2, 1 };
	double lin[10];
	struct metric_histogram *h, *u, *neg, *e;
	int i;

	h = metrics_histogram(m, "h", "x", NULL, b1, 4);
	e = metrics_histogram(m, "e", "x", NULL, b1, 4);
	/* 10 in (0,1], 10 in (1,2], 20 in (2,4], none in (4,8], 10 above. */
	for (i = 0; i < 10; i++) {
		metric_histogram_observe(h, 0.5);
		metric_histogram_observe(h, 1.5);
		metric_histogram_observe(h, 3);
		metric_histogram_observe(h, 3);
		metric_histogram_observe(h, 50);
	}
	assert_true(metric_histogram_quantile(h, 0.1) == 0.5);	/* rank 5 */
	assert_true(metric_histogram_quantile(h, 0.2) == 1);	/* rank 10 */
	assert_true(metric_histogram_quantile(h, 0.3) == 1.5);	/* rank 15 */
	assert_true(metric_histogram_quantile(h, 0.5) == 2.5);	/* rank 25 */
	assert_true(metric_histogram_quantile(h, 0.8) == 4);	/* rank 40 */
	/* Ranks in the +Inf bucket: the highest finite bound. */
	assert_true(metric_histogram_quantile(h, 0.9) == 8);
	assert_true(metric_histogram_quantile(h, 1) == 8);
	assert_true(metric_histogram_quantile(h, 0) == 0);
	assert_true(metric_histogram_quantile(h, -0.1) == -INFINITY);
	assert_true(metric_histogram_quantile(h, 1.1) == INFINITY);
	assert_true(isnan(metric_histogram_quantile(h, NAN)));
	assert_true(isnan(metric_histogram_quantile(e, 0.5)));

	/* q = 0 skips empty low buckets. */
	metric_histogram_observe(e, 3);
	assert_true(metric_histogram_quantile(e, 0) == 2);
	assert_true(metric_histogram_quantile(e, 0.5) == 3);

	/* 100 observations spread evenly over (0, 100] with 10-wide
	 * buckets: the estimates are exact. */
	assert_int_equal(metrics_buckets_linear(10, 10, 10, lin), 0);
	u = metrics_histogram(m, "u", "x", NULL, lin, 10);
	for (i = 0; i < 100; i++)
		metric_histogram_observe(u, i + 0.5);
	assert_true(fabs(metric_histogram_quantile(u, 0.5) - 50) < 1e-9);
	assert_true(fabs(metric_histogram_quantile(u, 0.95) - 95) < 1e-9);
	assert_true(fabs(metric_histogram_quantile(u, 0.99) - 99) < 1e-9);
	assert_true(fabs(metric_histogram_quantile(u, 0.25) - 25) < 1e-9);

	/* A lowest bound <= 0 is returned as is (no lower edge known). */
	neg = metrics_histogram(m, "neg", "x", NULL, bneg, 2);
	metric_histogram_observe(neg, -3);
	metric_histogram_observe(neg, 0.5);
	assert_true(metric_histogram_quantile(neg, 0.25) == -2);
	assert_true(metric_histogram_quantile(neg, 0.75) == -2 + 3 * 0.5);
	metrics_free(m);
}

static void
test_buckets_helpers(void **state UNUSED)
{
	double b[8];

	assert_int_equal(metrics_buckets_exponential(0.001, 10, 5, b), 0);
	assert_true(b[0] == 0.001 && b[1] == 0.01 && b[2] == 0.1 &&
	    b[3] == 1 && b[4] == 10);
	assert_int_equal(metrics_buckets_exponential(1, 2, 5, b), 0);
	assert_true(b[0] == 1 && b[1] == 2 && b[2] == 4 && b[3] == 8 &&
	    b[4] == 16);
	assert_int_equal(metrics_buckets_exponential(0.005, 2.5, 3, b), 0);
	assert_true(b[0] == 0.005 && b[1] == 0.0125 && b[2] == 0.03125);
	assert_int_equal(metrics_buckets_linear(0.1, 0.1, 5, b), 0);
	assert_true(b[0] == 0.1 && b[1] == 0.2 && b[2] == 0.3 &&
	    b[3] == 0.4 && b[4] == 0.5);
	assert_int_equal(metrics_buckets_linear(-1, 0.5, 3, b), 0);
	assert_true(b[0] == -1 && b[1] == -0.5 && b[2] == 0);

	assert_int_equal(metrics_buckets_exponential(0, 2, 3, b), -1);
	assert_int_equal(metrics_buckets_exponential(-1, 2, 3, b), -1);
	assert_int_equal(metrics_buckets_exponential(1, 1, 3, b), -1);
	assert_int_equal(metrics_buckets_exponential(1, 2, 0, b), -1);
	assert_int_equal(metrics_buckets_exponential(NAN, 2, 3, b), -1);
	assert_int_equal(metrics_buckets_exponential(1e300, 1e10, 3, b), -1);
	assert_int_equal(metrics_buckets_linear(0, 0, 3, b), -1);
	assert_int_equal(metrics_buckets_linear(0, -1, 3, b), -1);
	assert_int_equal(metrics_buckets_linear(INFINITY, 1, 3, b), -1);
	assert_int_equal(metrics_buckets_linear(0, 1, 0, b), -1);
}

/* ------------------------------------------------------------ exposition */

static void
test_format_double(void **state UNUSED)
{
	static const struct {
		double v;
		const char *text;
	} cases[] = {
		{ 0, "0" },
		{ 1, "1" },
		{ -3, "-3" },
		{ 2.5, "2.5" },
		{ 0.1, "0.1" },
		{ 0.3, "0.3" },
		{ 0.1 + 0.2, "0.30000000000000004" },
		{ 1.0 / 3, "0.3333333333333333" },
		{ 1e-05, "1e-05" },
		{ 123456789012345678.0, "123456789012345680" },
		{ 9007199254740993.0, "9007199254740992" },
		{ 0x1p62, "4611686018427387904" },
		{ -0x1p62, "-4611686018427387904" },
		{ 0x1p63, "9.223372036854776e+18" },
		{ 1e21, "1e+21" },
		{ 1e300, "1e+300" },
		{ -1.5e-300, "-1.5e-300" },
		/* 15 digits already read back as the smallest denormal. */
		{ 5e-324, "4.94065645841247e-324" },
		{ 1.7976931348623157e308, "1.7976931348623157e+308" },
	};
	char buf[METRICS_NUMBER_MAX];
	size_t i;
	int n;

	for (i = 0; i < sizeof(cases) / sizeof(cases[0]); i++) {
		n = metrics_format_double(cases[i].v, buf);
		if (strcmp(buf, cases[i].text) != 0)
			fail_msg("%.17g formats as \"%s\", want \"%s\"",
			    cases[i].v, buf, cases[i].text);
		assert_int_equal(n, strlen(buf));
		assert_true(strtod(buf, NULL) == cases[i].v);
	}
	metrics_format_double(NAN, buf);
	assert_string_equal(buf, "NaN");
	metrics_format_double(INFINITY, buf);
	assert_string_equal(buf, "+Inf");
	metrics_format_double(-INFINITY, buf);
	assert_string_equal(buf, "-Inf");
	metrics_format_double(-0.0, buf);
	assert_string_equal(buf, "0");
}

static const char golden[] =
	"# HELP orcd_requests_total Requests handled.\n"
	"# TYPE orcd_requests_total counter\n"
	"orcd_requests_total{endpoint=\"execute\",code=\"200\"} 3\n"
	"orcd_requests_total{endpoint=\"health\",code=\"200\"} 0\n"
	"orcd_requests_total 18446744073709551615\n"
	"# HELP orcd_ttft_seconds Time to first token.\n"
	"# TYPE orcd_ttft_seconds histogram\n"
	"orcd_ttft_seconds_bucket{model=\"tiny\",le=\"0.25\"} 1\n"
	"orcd_ttft_seconds_bucket{model=\"tiny\",le=\"0.5\"} 3\n"
	"orcd_ttft_seconds_bucket{model=\"tiny\",le=\"1\"} 3\n"
	"orcd_ttft_seconds_bucket{model=\"tiny\",le=\"+Inf\"} 4\n"
	"orcd_ttft_seconds_sum{model=\"tiny\"} 4.125\n"
	"orcd_ttft_seconds_count{model=\"tiny\"} 4\n"
	"# HELP orcd_queue_depth Requests waiting.\\nSecond line, "
	    "a \\\\ and a \".\n"
	"# TYPE orcd_queue_depth gauge\n"
	"orcd_queue_depth 2.5\n"
	"# TYPE orcd_no_help gauge\n"
	"orcd_no_help{which=\"big\"} 1e+21\n"
	"orcd_no_help{which=\"nan\"} NaN\n"
	"orcd_no_help{which=\"-inf\"} -Inf\n"
	"# HELP orcd_empty_seconds Never observed.\n"
	"# TYPE orcd_empty_seconds histogram\n"
	"orcd_empty_seconds_bucket{le=\"0.001\"} 0\n"
	"orcd_empty_seconds_bucket{le=\"0.01\"} 0\n"
	"orcd_empty_seconds_bucket{le=\"0.1\"} 0\n"
	"orcd_empty_seconds_bucket{le=\"+Inf\"} 0\n"
	"orcd_empty_seconds_sum 0\n"
	"orcd_empty_seconds_count 0\n";

static void
test_render_golden(void **state UNUSED)
{
	struct metrics *m = metrics_new();
	struct metric_counter *c1, *c3;
	struct metric_histogram *h;
	struct metric_gauge *g, *big, *nan, *ninf;
	const double bounds[] = { 0.25, 0.5, 1 };
	double exp_bounds[3];
	char *text;
	ssize_t n;

	c1 = metrics_counter(m, "orcd_requests_total", "Requests handled.",
	    "endpoint=\"execute\",code=\"200\"");
	h = metrics_histogram(m, "orcd_ttft_seconds", "Time to first token.",
	    "model=\"tiny\"", bounds, 3);
	metrics_counter(m, "orcd_requests_total", "Requests handled.",
	    "endpoint=\"health\",code=\"200\"");
	c3 = metrics_counter(m, "orcd_requests_total", "Requests handled.",
	    NULL);
	g = metrics_gauge(m, "orcd_queue_depth",
	    "Requests waiting.\nSecond line, a \\ and a \".", NULL);
	big = metrics_gauge(m, "orcd_no_help", "", "which=\"big\"");
	nan = metrics_gauge(m, "orcd_no_help", "", "which=\"nan\"");
	ninf = metrics_gauge(m, "orcd_no_help", "", "which=\"-inf\"");
	assert_int_equal(metrics_buckets_exponential(0.001, 10, 3,
	    exp_bounds), 0);
	metrics_histogram(m, "orcd_empty_seconds", "Never observed.", NULL,
	    exp_bounds, 3);

	metric_counter_add(c1, 3);
	metric_counter_add(c3, UINT64_MAX);
	metric_histogram_observe(h, 0.25);
	metric_histogram_observe(h, 0.375);
	metric_histogram_observe(h, 0.5);
	metric_histogram_observe(h, 3);
	metric_gauge_set(g, 2.5);
	metric_gauge_set(big, 1e21);
	metric_gauge_set(nan, NAN);
	metric_gauge_set(ninf, -INFINITY);

	n = metrics_render(m, &text);
	assert_int_equal(n, sizeof(golden) - 1);
	assert_string_equal(text, golden);
	free(text);
	metrics_free(m);
}

static void
test_label_escape(void **state UNUSED)
{
	const char *raw = "C:\\models\\\"q\"\nx";
	const char *escaped = "C:\\\\models\\\\\\\"q\\\"\\nx";
	struct metrics *m = metrics_new();
	struct metric_counter *c;
	struct orcd_err err;
	char buf[64], labels[96], *text, line[160];
	size_t n;

	n = metrics_label_escape(buf, sizeof(buf), raw);
	assert_string_equal(buf, escaped);
	assert_int_equal(n, strlen(escaped));
	assert_int_equal(metrics_label_escape(NULL, 0, raw), strlen(escaped));
	assert_int_equal(metrics_label_escape(buf, sizeof(buf), ""), 0);
	assert_string_equal(buf, "");
	assert_int_equal(metrics_label_escape(buf, sizeof(buf), "plain"), 5);
	assert_string_equal(buf, "plain");

	/* Short buffers keep whole escapes: "C:\" has room for "C:" and
	 * not half of "\\". */
	assert_int_equal(metrics_label_escape(buf, 4, raw), strlen(escaped));
	assert_string_equal(buf, "C:");
	assert_int_equal(metrics_label_escape(buf, 5, raw), strlen(escaped));
	assert_string_equal(buf, "C:\\\\");
	assert_int_equal(metrics_label_escape(buf, 1, raw), strlen(escaped));
	assert_string_equal(buf, "");

	/* An escaped value passes the check and renders untouched. */
	snprintf(labels, sizeof(labels), "path=\"%s\",q=\"\\\"\"", escaped);
	assert_int_equal(metrics_labels_check(labels, 1, &err), 0);
	c = metrics_counter(m, "loads_total", "Loads.", labels);
	metric_counter_inc(c);
	text = render_or_fail(m);
	snprintf(line, sizeof(line), "\nloads_total{%s} 1\n", labels);
	assert_non_null(strstr(text, line));
	assert_non_null(strstr(text, "{path=\"C:\\\\models\\\\\\\"q\\\"\\nx\","
	    "q=\"\\\"\"} 1\n"));
	/* No raw newline inside the sample line. */
	assert_non_null(strstr(text, "\nloads_total{path=\"C:"));
	free(text);
	metrics_free(m);
}

/* ------------------------------------------------------------- promtool */

static int
promtool_on_path(void)
{
	const char *path = getenv("PATH");
	char dir[4096], file[4200];
	const char *p, *end;
	size_t n;

	if (path == NULL)
		return 0;
	for (p = path; *p != '\0'; p = *end != '\0' ? end + 1 : end) {
		end = strchr(p, ':');
		if (end == NULL)
			end = p + strlen(p);
		n = (size_t)(end - p);
		if (n == 0 || n >= sizeof(dir))
			continue;
		memcpy(dir, p, n);
		dir[n] = '\0';
		snprintf(file, sizeof(file), "%s/promtool", dir);
		if (access(file, X_OK) == 0)
			return 1;
	}
	return 0;
}

static void
test_promtool(void **state UNUSED)
{
	struct metrics *m;
	struct metric_counter *c;
	struct metric_gauge *g;
	struct metric_histogram *h, *h2;
	double bounds[8];
	char *text, esc[64], labels[128];
	FILE *pipe;
	int status, i;

	if (!promtool_on_path()) {
		print_message("promtool not on PATH (Debian: prometheus)\n");
		skip();
	}
	m = metrics_new();
	c = metrics_counter(m, "orcd_requests_total", "Requests handled.",
	    "endpoint=\"execute\",code=\"200\"");
	metric_counter_add(c, 12);
	metrics_counter(m, "orcd_requests_total", "Requests handled.",
	    "endpoint=\"health\",code=\"200\"");
	metrics_label_escape(esc, sizeof(esc), "a \\ \"quoted\"\nname");
	snprintf(labels, sizeof(labels), "model=\"%s\"", esc);
	c = metrics_counter(m, "orcd_tokens_generated_total",
	    "Tokens generated.\nAcross all requests, with a \\.", labels);
	metric_counter_add(c, UINT64_MAX);
	g = metrics_gauge(m, "orcd_queue_depth", "Requests waiting.", NULL);
	metric_gauge_set(g, 3);
	g = metrics_gauge(m, "orcd_kv_cache_usage_ratio", "KV cache in use.",
	    "device=\"cpu\"");
	metric_gauge_set(g, 0.1 + 0.2);
	g = metrics_gauge(m, "orcd_kv_cache_usage_ratio", "KV cache in use.",
	    "device=\"cuda0\"");
	metric_gauge_set(g, NAN);
	g = metrics_gauge(m, "orcd_last_error_timestamp_seconds",
	    "Unix time of the last error.", NULL);
	metric_gauge_set(g, -INFINITY);
	assert_int_equal(metrics_buckets_exponential(0.001, 4, 8, bounds), 0);
	h = metrics_histogram(m, "orcd_time_to_first_token_seconds",
	    "Time to first token.", "phase=\"prefill\"", bounds, 8);
	h2 = metrics_histogram(m, "orcd_time_to_first_token_seconds",
	    "Time to first token.", "phase=\"decode\"", bounds, 8);
	for (i = 0; i < 1000; i++) {
		metric_histogram_observe(h, i * 0.001);
		metric_histogram_observe(h2, i * 0.1);
	}
	metrics_histogram(m, "orcd_request_size_bytes", "Request body sizes.",
	    NULL, NULL, 0);
	text = render_or_fail(m);

	fflush(NULL);
	pipe = popen("promtool check metrics", "w");
	assert_non_null(pipe);
	assert_int_equal(fputs(text, pipe) >= 0, 1);
	status = pclose(pipe);
	if (!WIFEXITED(status) || WEXITSTATUS(status) != 0)
		fail_msg("promtool check metrics: status %#x on:\n%s", status,
		    text);
	free(text);
	metrics_free(m);
}

/* ----------------------------------------------------------- benchmark */

static double
now_ns(void)
{
	struct timespec ts;

	clock_gettime(CLOCK_MONOTONIC, &ts);
	return ts.tv_sec * 1e9 + ts.tv_nsec;
}

static void
print_cpu(void)
{
	char line[256];
	FILE *f = fopen("/proc/cpuinfo", "r");

	if (f == NULL)
		return;
	while (fgets(line, sizeof(line), f) != NULL) {
		if (strncmp(line, "model name", 10) == 0) {
			print_message("machine:%s", strchr(line, ':') + 1);
			break;
		}
	}
	fclose(f);
}

struct bench_arg {
	struct metric_counter *c;
	int n;
};

static void *
bench_counter(void *arg)
{
	struct bench_arg *a = arg;
	int i;

	for (i = 0; i < a->n; i++)
		metric_counter_inc(a->c);
	return NULL;
}

static void
test_benchmark(void **state UNUSED)
{
	struct metrics *m = metrics_new();
	struct metric_counter *c;
	struct metric_gauge *g;
	struct metric_histogram *h;
	struct bench_arg arg;
	double bounds[20], t, t_inc, t_obs, t_gauge, t_two, t_render;
	pthread_t th[2];
	const int n = 5000000;
	char *text;
	int i;

	c = metrics_counter(m, "bench_total", "x", NULL);
	g = metrics_gauge(m, "bench_gauge", "x", NULL);
	assert_int_equal(metrics_buckets_exponential(0.0001, 2, 20, bounds), 0);
	h = metrics_histogram(m, "bench_seconds", "x", NULL, bounds, 20);

	t = now_ns();
	for (i = 0; i < n; i++)
		metric_counter_inc(c);
	t_inc = (now_ns() - t) / n;
	t = now_ns();
	for (i = 0; i < n; i++)
		metric_gauge_add(g, 1.0);
	t_gauge = (now_ns() - t) / n;
	t = now_ns();
	for (i = 0; i < n; i++)
		metric_histogram_observe(h, (i & 1023) * 1e-4);
	t_obs = (now_ns() - t) / n;

	/* Two threads on one counter: the cost of a contended line. */
	arg.c = c;
	arg.n = n / 2;
	t = now_ns();
	for (i = 0; i < 2; i++)
		assert_int_equal(pthread_create(&th[i], NULL, bench_counter,
		    &arg), 0);
	for (i = 0; i < 2; i++)
		assert_int_equal(pthread_join(th[i], NULL), 0);
	t_two = (now_ns() - t) / n;

	t = now_ns();
	for (i = 0; i < 100; i++) {
		assert_true(metrics_render(m, &text) > 0);
		free(text);
	}
	t_render = (now_ns() - t) / 100;

	assert_int_equal(metric_counter_value(c), (uint64_t)n + (n / 2) * 2);
	assert_int_equal(metric_histogram_count(h), (uint64_t)n);
	print_cpu();
	print_message("counter inc %.2f ns, gauge add %.2f ns, histogram "
	    "observe (20 bounds) %.2f ns, counter inc from 2 threads %.2f ns "
	    "per inc, render of 3 families %.0f ns\n", t_inc, t_gauge, t_obs,
	    t_two, t_render);
	metrics_free(m);
}

int
main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test(test_register),
		cmocka_unit_test(test_name_check),
		cmocka_unit_test(test_labels_check),
		cmocka_unit_test(test_register_aborts),
		cmocka_unit_test(test_concurrent_updates),
		cmocka_unit_test(test_scrape_consistent),
		cmocka_unit_test(test_bucket_boundaries),
		cmocka_unit_test(test_quantile),
		cmocka_unit_test(test_buckets_helpers),
		cmocka_unit_test(test_format_double),
		cmocka_unit_test(test_render_golden),
		cmocka_unit_test(test_label_escape),
		cmocka_unit_test(test_promtool),
		cmocka_unit_test(test_benchmark),
	};

	return cmocka_run_group_tests(tests, NULL, NULL);
}
