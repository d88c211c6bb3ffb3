/*
 * Sampler tests: greedy and its tie rule, top-k/top-p/min-p keep exactly
 * the tokens they should (sampled many times from logits with known
 * probabilities, the kept ones at their renormalized frequencies within a
 * few standard deviations), temperature, the repetition penalty and its
 * window, seed determinism with pinned token sequences (so a change of
 * machine or of the code shows), pinned bits of the draw number and of the
 * exponential, every fast path against a plain implementation of the
 * definition in sampler.h, parameter validation, and the per-token cost at
 * a 152k vocabulary (printed).
 */
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <setjmp.h>
#include <cmocka.h>

#include <math.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "sampler.h"

/* cmocka's test signature; the state is not used. */
#define UNUSED __attribute__((unused))

#define BIG_VOCAB 152064	/* Qwen2's */
#define MID_VOCAB 4096		/* big enough for the bucket paths */

/* Deterministic pseudo-random numbers for building logits (no libm, no
 * rand(): the same on every machine). */
static uint64_t
test_hash(uint64_t x)
{
	x += 0x9e3779b97f4a7c15ULL;
	x = (x ^ (x >> 30)) * 0xbf58476d1ce4e5b9ULL;
	x = (x ^ (x >> 27)) * 0x94d049bb133111ebULL;
	return x ^ (x >> 31);
}

/* Roughly normal(0, 1) from the sum of four uniforms, exact in float. */
static float
test_normal(uint64_t x)
{
	uint64_t h = test_hash(x);
	int sum = 0, i;

	for (i = 0; i < 4; i++)
		sum += (int)((h >> (16 * i)) & 0xffff);
	return (float)(sum - 2 * 65535) / 37837.0f;
}

/* LLM-like logits: a normal body and a few strong tokens on top. */
static void
fill_logits(float *l, int n, uint64_t salt)
{
	int i;

	for (i = 0; i < n; i++)
		l[i] = 2.5f * test_normal(salt * 1000003 + i);
	for (i = 0; i < 8; i++)
		l[test_hash(salt + 77 * i) % n] += 9.0f - i;
}

static struct sampler *
new_sampler(const struct sampler_params *p, int n_vocab)
{
	struct orcd_err err = { "" };
	struct sampler *s = sampler_new(p, n_vocab, &err);

	if (s == NULL)
		fail_msg("sampler_new: %s", err.msg);
	return s;
}

static void
params_off(struct sampler_params *p, float temperature)
{
	sampler_params_default(p);
	p->temperature = temperature;
	p->top_k = 0;
	p->top_p = 1.0f;
	p->min_p = 0.0f;
}

/* Logits whose softmax at temperature 1 is exactly probs[] (up to float
 * rounding); the n - n_probs other tokens share what is left. */
static void
logits_for(float *l, int n, const double *probs, int n_probs)
{
	double rest = 1;
	int i;

	for (i = 0; i < n_probs; i++)
		rest -= probs[i];
	for (i = 0; i < n; i++)
		l[i] = i < n_probs ? (float)log(probs[i]) :
		    (float)log(rest / (n - n_probs));
}

/*
 * Samples n_draws times and checks: tokens with expect[i] == 0 never come,
 * the others within 5 standard deviations of expect[i] (normalized here).
 * Tokens >= n_expect must never appear.
 */
static void
check_frequencies(const struct sampler_params *p, const float *l, int n,
    const double *expect, int n_expect, int n_draws)
{
	struct sampler *s = new_sampler(p, n);
	int *count = calloc(n, sizeof(*count));
	double total = 0, q, sd;
	int i, t;

	assert_non_null(count);
	for (i = 0; i < n_expect; i++)
		total += expect[i];
	for (i = 0; i < n_draws; i++) {
		t = sampler_sample(s, l);
		assert_true(t >= 0 && t < n);
		count[t]++;
	}
	for (i = 0; i < n; i++) {
		q = i < n_expect ? expect[i] / total : 0;
		if (q == 0) {
			if (count[i] != 0)
				fail_msg("token %d excluded but drawn %d times",
				    i, count[i]);
			continue;
		}
		sd = sqrt(q * (1 - q) / n_draws);
		if (fabs((double)count[i] / n_draws - q) > 5 * sd + 1e-9)
			fail_msg("token %d: frequency %.5f, expected %.5f "
			    "(sd %.5f)", i, (double)count[i] / n_draws, q, sd);
	}
	free(count);
	sampler_free(s);
}

static void
test_defaults_and_validation(void **state UNUSED)
{
	enum field { TEMP, TOP_P, MIN_P, PENALTY, LAST_N };
	static const struct {
		const char *name;
		enum field field;
		float value;
	} cases[] = {
		{ "temperature", TEMP, -0.5f },
		{ "temperature", TEMP, NAN },
		{ "temperature", TEMP, INFINITY },
		{ "temperature", TEMP, 1000.0f },
		{ "top_p", TOP_P, 0.0f },
		{ "top_p", TOP_P, -0.1f },
		{ "top_p", TOP_P, 1.5f },
		{ "top_p", TOP_P, NAN },
		{ "min_p", MIN_P, -0.01f },
		{ "min_p", MIN_P, 1.0f },
		{ "min_p", MIN_P, NAN },
		{ "repeat_penalty", PENALTY, 0.0f },
		{ "repeat_penalty", PENALTY, -1.0f },
		{ "repeat_penalty", PENALTY, INFINITY },
		{ "repeat_penalty", PENALTY, NAN },
		{ "repeat_penalty", PENALTY, 1e-39f },	/* 1/p is inf */
		{ "repeat_last_n", LAST_N, -1 },
		{ "repeat_last_n", LAST_N, 1 << 21 },
	};
	struct sampler_params p;
	struct orcd_err err;
	size_t i;

	sampler_params_default(&p);
	assert_true(p.temperature == 0.8f);
	assert_int_equal(p.top_k, 40);
	assert_true(p.top_p == 0.95f);
	assert_true(p.min_p == 0.05f);
	assert_true(p.repeat_penalty == 1.0f);
	assert_int_equal(p.repeat_last_n, 64);
	assert_true(p.seed == 0);
	assert_int_equal(sampler_params_validate(&p, &err), 0);

	/* Boundary values that are allowed. */
	p.temperature = 0;
	p.top_k = -1;
	p.top_p = 1.0f;
	p.min_p = 0.0f;
	p.repeat_last_n = 0;
	assert_int_equal(sampler_params_validate(&p, &err), 0);

	for (i = 0; i < sizeof(cases) / sizeof(cases[0]); i++) {
		sampler_params_default(&p);
		switch (cases[i].field) {
		case TEMP:
			p.temperature = cases[i].value;
			break;
		case TOP_P:
			p.top_p = cases[i].value;
			break;
		case MIN_P:
			p.min_p = cases[i].value;
			break;
		case PENALTY:
			p.repeat_penalty = cases[i].value;
			break;
		case LAST_N:
			p.repeat_last_n = (int)cases[i].value;
			break;
		}
		memset(&err, 0, sizeof(err));
		assert_int_equal(sampler_params_validate(&p, &err), -1);
		if (strstr(err.msg, cases[i].name) == NULL)
			fail_msg("case %zu: '%s' does not name %s", i, err.msg,
			    cases[i].name);
		assert_null(sampler_new(&p, 100, &err));
		assert_non_null(strstr(err.msg, cases[i].name));
	}
	sampler_params_default(&p);
	assert_null(sampler_new(&p, 0, &err));
	assert_non_null(strstr(err.msg, "n_vocab"));
	/* NULL err is allowed. */
	assert_null(sampler_new(&p, -5, NULL));
}

static void
test_uniform_and_exp(void **state UNUSED)
{
	double u, sum = 0, maxerr = 0, e;
	float d;
	int i;

	/* Pinned values (checked against an independent implementation of
	 * the formula in sampler.h). */
	assert_true(sampler_uniform(0, 0) == 0.8833108082136426);
	assert_true(sampler_uniform(0, 1) == 0.43152799704850997);
	assert_true(sampler_uniform(12345, 2) == 0.538326766414223);
	assert_true(sampler_uniform(24690, 1) == 0.15407841608166484);
	for (i = 0; i < 1000000; i++) {
		u = sampler_uniform(7, i);
		assert_true(u >= 0 && u < 1);
		sum += u;
	}
	assert_true(fabs(sum / 1000000 - 0.5) < 0.002);

	assert_true(sampler_exp_neg(0) == 1.0f);
	assert_true(sampler_exp_neg(-3) == 1.0f);
	assert_true(sampler_exp_neg(87.5f) == 0.0f);
	assert_true(sampler_exp_neg(INFINITY) == 0.0f);
	assert_true(sampler_exp_neg(NAN) == 0.0f);
	for (d = 0; d <= 87.0f; d += 0.00037f) {
		e = exp(-(double)d);
		if (fabs(sampler_exp_neg(d) - e) / e > maxerr)
			maxerr = fabs(sampler_exp_neg(d) - e) / e;
	}
	print_message("exp_neg max relative error %.3g\n", maxerr);
	assert_true(maxerr < 3e-7);

	/* The exact bits are part of the definition: a build that fuses
	 * multiply-adds (or any other change) shows here. */
	{
		static const struct { float d; uint32_t bits; } pinned[] = {
			{ 0.00030449999f, 0x3f7fec0c },
			{ 10.8753042f, 0x379eb5da },
			{ 21.7503052f, 0x2fc4d93e },
			{ 76.1253052f, 0x08907284 },
		};
		uint32_t bits, hash = 0;
		float f;

		for (i = 0; i < 4; i++) {
			f = sampler_exp_neg(pinned[i].d);
			memcpy(&bits, &f, sizeof(bits));
			if (bits != pinned[i].bits)
				fail_msg("sampler_exp_neg(%.9g) is %08x, not "
				    "%08x: fused multiply-add?  Build "
				    "sampler.c with -ffp-contract=off",
				    (double)pinned[i].d, bits, pinned[i].bits);
		}
		for (i = 0; i < 2000000; i++) {
			f = sampler_exp_neg(i * 0.0000435f);
			memcpy(&bits, &f, sizeof(bits));
			hash ^= bits * (uint32_t)(i + 1);
		}
		if (hash != 0xa970a4a1)
			fail_msg("sampler_exp_neg bits differ (hash %08x): "
			    "fused multiply-add?  Build sampler.c with "
			    "-ffp-contract=off", hash);
	}
}

static void
test_greedy(void **state UNUSED)
{
	struct sampler_params p;
	struct sampler *s;
	float *l = malloc(BIG_VOCAB * sizeof(*l));
	int i, j, best;

	assert_non_null(l);
	sampler_params_default(&p);
	p.temperature = 0;
	s = new_sampler(&p, BIG_VOCAB);
	for (j = 0; j < 20; j++) {
		fill_logits(l, BIG_VOCAB, j);
		best = 0;
		for (i = 1; i < BIG_VOCAB; i++)
			if (l[i] > l[best])
				best = i;
		assert_int_equal(sampler_sample(s, l), best);
	}
	/* Ties go to the lowest id, wherever they are. */
	for (i = 0; i < BIG_VOCAB; i++)
		l[i] = -1.0f;
	l[100000] = 3.0f;
	l[70000] = 3.0f;
	l[150000] = 3.0f;
	assert_int_equal(sampler_sample(s, l), 70000);
	l[5] = 3.0f;
	assert_int_equal(sampler_sample(s, l), 5);
	/* -0 and +0 are equal; NaN is -inf. */
	for (i = 0; i < BIG_VOCAB; i++)
		l[i] = NAN;
	assert_int_equal(sampler_sample(s, l), 0);
	l[9] = -0.0f;
	l[8] = -INFINITY;
	l[12] = 0.0f;
	assert_int_equal(sampler_sample(s, l), 9);
	l[3] = INFINITY;
	l[2] = INFINITY;
	assert_int_equal(sampler_sample(s, l), 2);
	sampler_free(s);

	/* A temperature too small to invert is greedy too. */
	p.temperature = 1e-40f;
	s = new_sampler(&p, 16);
	for (i = 0; i < 16; i++)
		l[i] = (float)(i % 5);
	assert_int_equal(sampler_sample(s, l), 4);
	sampler_free(s);
	free(l);
}

static void
test_top_k_one_is_greedy(void **state UNUSED)
{
	static const float temps[] = { 0.05f, 0.8f, 1.0f, 5.0f, 100.0f };
	struct sampler_params p;
	struct sampler *s;
	float *l = malloc(BIG_VOCAB * sizeof(*l));
	size_t t;
	int i, j, best;

	assert_non_null(l);
	for (t = 0; t < sizeof(temps) / sizeof(temps[0]); t++) {
		sampler_params_default(&p);
		p.top_k = 1;
		p.temperature = temps[t];
		p.seed = t;
		s = new_sampler(&p, BIG_VOCAB);
		for (j = 0; j < 5; j++) {
			/* A flat distribution: without the cut any token
			 * would be likely. */
			for (i = 0; i < BIG_VOCAB; i++)
				l[i] = 0.001f * test_normal(j * 7919 + i);
			l[1234 + j] = 0.01f;
			best = 0;
			for (i = 1; i < BIG_VOCAB; i++)
				if (l[i] > l[best])
					best = i;
			assert_int_equal(sampler_sample(s, l), best);
		}
		sampler_free(s);
	}
	free(l);
}

static void
test_top_k_frequencies(void **state UNUSED)
{
	static const double probs[] = { 0.3, 0.2, 0.15, 0.1, 0.05 };
	/* top_k 3: only 0, 1, 2, in proportion. */
	static const double expect[] = { 0.3, 0.2, 0.15 };
	struct sampler_params p;
	float l[64];

	logits_for(l, 64, probs, 5);
	params_off(&p, 1.0f);
	p.top_k = 3;
	p.seed = 11;
	check_frequencies(&p, l, 64, expect, 3, 200000);
}

static void
test_top_p(void **state UNUSED)
{
	static const double probs[] = { 0.5, 0.25, 0.15, 0.06, 0.03 };
	/* Running sums 0.5 0.75 0.9: top_p 0.8 keeps three tokens (the one
	 * that crosses is kept), 0.75 two, 0.5 one. */
	static const double keep3[] = { 0.5, 0.25, 0.15 };
	static const double keep2[] = { 0.5, 0.25 };
	struct sampler_params p;
	float *l = malloc(BIG_VOCAB * sizeof(*l));
	int n, path;

	assert_non_null(l);
	/* Path 0: whole vocabulary (buckets); path 1: after a top-k. */
	for (path = 0; path < 2; path++) {
		n = path == 0 ? MID_VOCAB : 1000;
		logits_for(l, n, probs, 5);
		params_off(&p, 1.0f);
		p.top_k = path == 0 ? 0 : 100;
		p.seed = 3 + path;
		/* top-k 100 of 1000 leaves 0.1% of the mass; renormalized,
		 * the sums still cross at the same tokens. */
		p.top_p = 0.8f;
		check_frequencies(&p, l, n, keep3, 3, path ? 200000 : 20000);
		p.top_p = 0.7f;
		check_frequencies(&p, l, n, keep2, 2, path ? 200000 : 20000);
		p.top_p = 0.4f;
		check_frequencies(&p, l, n, keep2, 1, 2000);
	}
	free(l);
}

static void
test_min_p(void **state UNUSED)
{
	static const double probs[] = { 0.4, 0.3, 0.1, 0.05, 0.03, 0.02 };
	/* min_p 0.1: p >= 0.04 kept, so 0..3; with top_p 0.75 only 0, 1. */
	static const double keep4[] = { 0.4, 0.3, 0.1, 0.05 };
	static const double keep2[] = { 0.4, 0.3 };
	struct sampler_params p;
	float *l = malloc(BIG_VOCAB * sizeof(*l));
	int n, path;

	assert_non_null(l);
	for (path = 0; path < 2; path++) {
		n = path == 0 ? MID_VOCAB : 500;
		logits_for(l, n, probs, 6);
		params_off(&p, 1.0f);
		p.top_k = path == 0 ? 0 : 40;
		p.min_p = 0.1f;
		p.seed = 99 + path;
		check_frequencies(&p, l, n, keep4, 4, path ? 200000 : 20000);
		p.top_p = 0.65f;
		check_frequencies(&p, l, n, keep2, 2, path ? 200000 : 20000);
		/* The order of the two cuts does not matter: min-p that
		 * cuts first. */
		p.top_p = 0.95f;
		p.min_p = 0.3f;
		check_frequencies(&p, l, n, keep2, 2, path ? 200000 : 20000);
	}
	free(l);
}

static void
test_temperature(void **state UNUSED)
{
	static const float temps[] = { 0.5f, 1.0f, 2.0f };
	struct sampler_params p;
	double expect[2];
	float l[2000];
	size_t t;
	int i, path;

	/* Token 0 one nat above token 1: p0 = 1 / (1 + e^(-1/T)).  The
	 * other tokens are -inf and can never be drawn. */
	for (i = 0; i < 2000; i++)
		l[i] = -INFINITY;
	l[0] = 1.0f;
	l[1] = 0.0f;
	for (t = 0; t < sizeof(temps) / sizeof(temps[0]); t++) {
		expect[0] = 1.0 / (1.0 + exp(-1.0 / temps[t]));
		expect[1] = 1.0 - expect[0];
		/* Path 0: whole vocabulary, no cut; 1: top-k. */
		for (path = 0; path < 2; path++) {
			params_off(&p, temps[t]);
			p.top_k = path == 0 ? 0 : 5;
			p.seed = t * 2 + path;
			check_frequencies(&p, l, 2000, expect, 2, 100000);
		}
	}
	/* Temperature comes after the cuts: top_p 0.6 at T=1 keeps only
	 * token 0 (p 0.73), however hot the draw. */
	params_off(&p, 100.0f);
	p.top_p = 0.6f;
	expect[0] = 1;
	check_frequencies(&p, l, 2000, expect, 1, 2000);
}

/* The whole vocabulary without cuts against the explicit softmax. */
static void
test_full_vocabulary(void **state UNUSED)
{
	struct sampler_params p;
	struct sampler *full;
	float *l = malloc(MID_VOCAB * sizeof(*l));
	double *expect = malloc(MID_VOCAB * sizeof(*expect)), sum = 0;
	int i;

	assert_non_null(l);
	assert_non_null(expect);
	for (i = 0; i < MID_VOCAB; i++)
		l[i] = 1.5f * test_normal(i);
	for (i = 0; i < 6; i++)
		l[i * 500] = 7.0f - i;
	for (i = 0; i < MID_VOCAB; i++)
		sum += expect[i] = exp(l[i] / 0.7);
	/* Frequencies of the six strong tokens and of the rest. */
	params_off(&p, 0.7f);
	p.seed = 5;
	full = new_sampler(&p, MID_VOCAB);
	{
		int count[7] = { 0 }, t, n_draws = 20000;
		double q, rest = 1;

		for (i = 0; i < n_draws; i++) {
			t = sampler_sample(full, l);
			count[t % 500 == 0 && t < 3000 ? t / 500 : 6]++;
		}
		for (i = 0; i < 7; i++) {
			q = i < 6 ? expect[i * 500] / sum : rest;
			if (i < 6)
				rest -= q;
			if (fabs((double)count[i] / n_draws - q) >
			    5 * sqrt(q * (1 - q) / n_draws))
				fail_msg("group %d: %.4f, expected %.4f", i,
				    (double)count[i] / n_draws, q);
		}
	}
	sampler_free(full);
	free(l);
	free(expect);
}

/*
 * Straightforward implementations of the definition in sampler.h (a full
 * sort, sequential sums), to check that the fast paths compute exactly it.
 */
struct ref_token {
	float logit;
	int32_t id;
};

static int
ref_compare(const void *a, const void *b)
{
	const struct ref_token *x = a, *y = b;

	if (x->logit != y->logit)
		return x->logit > y->logit ? -1 : 1;
	return x->id < y->id ? -1 : x->id > y->id;
}

static int32_t
ref_sample_sorted(const struct sampler_params *p, const float *l, int n,
    double u, struct ref_token *t)
{
	double S = 0, V = 0, c = 0, target;
	float m, w, inv = 1.0f / p->temperature;
	int i, k, kept, last = 0;

	for (i = 0; i < n; i++) {
		t[i].logit = isnan(l[i]) ? -INFINITY : l[i] + 0.0f;
		t[i].id = i;
	}
	qsort(t, n, sizeof(*t), ref_compare);
	k = p->top_k > 0 && p->top_k < n ? p->top_k : n;
	m = t[0].logit;
	if (p->temperature <= 0 || k == 1 || !isfinite(m))
		return t[0].id;
	for (i = 0; i < k; i++)
		S += sampler_exp_neg(m - t[i].logit);
	target = (double)p->top_p * S;
	for (kept = k, i = 0; i < k; i++) {
		w = sampler_exp_neg(m - t[i].logit);
		if (p->min_p > 0 && i > 0 && w < p->min_p) {
			kept = i;
			break;
		}
		c += w;
		if (p->top_p < 1 && c >= target) {
			kept = i + 1;
			break;
		}
	}
	for (i = 0; i < kept; i++)
		V += sampler_exp_neg((m - t[i].logit) * inv);
	for (c = 0, i = 0; i < kept; i++) {
		w = sampler_exp_neg((m - t[i].logit) * inv);
		if (w > 0)
			last = i;
		c += w;
		if (c > u * V)
			return t[i].id;
	}
	return t[last].id;
}

/* 7' of sampler.h: no cut, id order, block sums. */
static int32_t
ref_sample_full(float temperature, const float *l, int n, double u)
{
	double B[BIG_VOCAB / 16 + 1], V = 0, c = 0, v[16], sc[4];
	float m = -INFINITY, inv = 1.0f / temperature;
	int i, j, b, nb = 0, last = 0;

	for (i = 0; i < n; i++)
		if (l[i] > m)
			m = l[i];
	for (i = 0; i < n; i += 16, nb++) {
		if (i + 16 <= n) {
			for (j = 0; j < 16; j++)
				v[j] = sampler_exp_neg((m - l[i + j]) * inv);
			for (j = 0; j < 4; j++)
				sc[j] = (v[j] + v[j + 4]) +
				    (v[j + 8] + v[j + 12]);
			B[nb] = (sc[0] + sc[1]) + (sc[2] + sc[3]);
		} else
			for (B[nb] = 0, j = i; j < n; j++)
				B[nb] += sampler_exp_neg((m - l[j]) * inv);
		V += B[nb];
	}
	for (b = 0; b < nb; b++) {
		if (c + B[b] <= u * V) {
			c += B[b];
			continue;
		}
		for (i = b * 16; i < n && i < b * 16 + 16; i++) {
			float w = sampler_exp_neg((m - l[i]) * inv);

			if (w > 0)
				last = i;
			c += w;
			if (c > u * V)
				return i;
		}
	}
	return last;
}

static const struct {
	int top_k;
	float top_p, min_p, temp;
} definition_cases[] = {
	{ 40, 0.95f, 0.05f, 0.8f },	/* defaults, heap top-k */
	{ 40, 1.0f, 0.0f, 1.5f },
	{ 5, 0.5f, 0.0f, 0.3f },
	{ 128, 0.9f, 0.1f, 1.0f },
	{ 129, 0.9f, 0.1f, 1.0f },	/* bucket top-k */
	{ 3000, 0.99f, 0.0f, 2.0f },
	{ 19999, 1.0f, 0.0f, 0.7f },
	{ 20000, 1.0f, 0.0f, 0.7f },	/* = n: no cut */
	{ 0, 0.95f, 0.05f, 0.8f },	/* buckets: top-p and min-p */
	{ 0, 0.9f, 0.0f, 1.0f },
	{ 0, 0.999f, 0.0f, 1.0f },
	{ 0, 1.0f, 0.01f, 1.3f },
	{ 0, 1.0f, 0.0f, 1.0f },	/* no cut: id order */
	{ 0, 1.0f, 0.0f, 0.25f },
	{ 0, 1.0f, 0.0f, 4.0f },
};

static void
check_definition(int n, int steps, float *l, struct ref_token *t)
{
	struct sampler_params p;
	struct sampler *s;
	int32_t want, got;
	size_t c;
	int step, i;

	for (c = 0; c < sizeof(definition_cases) /
	    sizeof(definition_cases[0]); c++) {
		params_off(&p, definition_cases[c].temp);
		p.top_k = definition_cases[c].top_k;
		p.top_p = definition_cases[c].top_p;
		p.min_p = definition_cases[c].min_p;
		p.seed = 31 * c;
		s = new_sampler(&p, n);
		for (step = 0; step < steps; step++) {
			fill_logits(l, n, step);
			/* Flat steps too, and exact ties. */
			if (step % 3 == 1)
				for (i = 0; i < n; i++)
					l[i] = 0.25f * l[i];
			if (step % 5 == 2)
				for (i = 0; i < n; i++)
					l[i] = (float)(int)l[i];
			got = sampler_sample(s, l);
			/* top_k >= n is no cut either. */
			want = (p.top_k <= 0 || p.top_k >= n) &&
			    p.top_p >= 1 && p.min_p <= 0 ?
			    ref_sample_full(p.temperature, l, n,
			    sampler_uniform(p.seed, step)) :
			    ref_sample_sorted(&p, l, n,
			    sampler_uniform(p.seed, step), t);
			if (got != want)
				fail_msg("n %d case %zu step %d: sampled %d, "
				    "the definition gives %d", n, c, step, got,
				    want);
		}
		sampler_free(s);
	}
}

static void
test_matches_definition(void **state UNUSED)
{
	/* Sizes that are not a multiple of the blocks, and tiny ones. */
	static const int sizes[] = { 20000, 1, 2, 15, 17, 300, 4099 };
	struct ref_token *t = malloc(20000 * sizeof(*t));
	float *l = malloc(20000 * sizeof(*l));
	size_t z;

	assert_non_null(t);
	assert_non_null(l);
	for (z = 0; z < sizeof(sizes) / sizeof(sizes[0]); z++)
		check_definition(sizes[z], sizes[z] == 20000 ? 40 : 10, l, t);
	free(t);
	free(l);
}

static void
test_penalty_semantics(void **state UNUSED)
{
	struct sampler_params p;
	struct sampler *s;
	float l[16];
	int i;

	sampler_params_default(&p);
	p.temperature = 0;
	p.repeat_penalty = 1.1f;
	p.repeat_last_n = 3;
	s = new_sampler(&p, 16);
	for (i = 0; i < 16; i++)
		l[i] = -5.0f;
	/* Positive logits are divided: 2.0 / 1.1 = 1.82 < 1.9. */
	l[0] = 2.0f;
	l[1] = 1.9f;
	assert_int_equal(sampler_sample(s, l), 0);
	sampler_accept(s, 0);
	assert_int_equal(sampler_sample(s, l), 1);
	/* Applied once, however often the token repeats (1.82 > 1.8). */
	l[1] = 1.8f;
	sampler_accept(s, 0);
	sampler_accept(s, 0);
	assert_int_equal(sampler_sample(s, l), 0);
	/* Negative logits are multiplied: -1.0 * 1.1 = -1.1 < -1.05. */
	for (i = 0; i < 16; i++)
		l[i] = -5.0f;
	l[4] = -1.0f;
	l[5] = -1.05f;
	assert_int_equal(sampler_sample(s, l), 4);
	sampler_accept(s, 4);
	assert_int_equal(sampler_sample(s, l), 5);
	/* The window is the last 3 accepted tokens: 4 falls out. */
	sampler_accept(s, 7);
	sampler_accept(s, 8);
	assert_int_equal(sampler_sample(s, l), 5);
	sampler_accept(s, 9);
	assert_int_equal(sampler_sample(s, l), 4);
	/* Out of range ids are ignored; reset forgets the history. */
	sampler_accept(s, -1);
	sampler_accept(s, 16);
	sampler_accept(s, 4);
	assert_int_equal(sampler_sample(s, l), 5);
	sampler_reset(s);
	assert_int_equal(sampler_sample(s, l), 4);
	sampler_free(s);

	/* A penalty below 1 favours repeats. */
	p.repeat_penalty = 0.5f;
	s = new_sampler(&p, 16);
	l[6] = -1.9f;
	sampler_accept(s, 6);
	assert_int_equal(sampler_sample(s, l), 6);
	sampler_free(s);
}

/*
 * Every path: a sampler with the penalty and a history draws exactly the
 * tokens one without the penalty draws from logits penalized by hand.
 */
static void
test_penalty_all_paths(void **state UNUSED)
{
	static const struct { int top_k; float top_p, min_p, temp; } paths[] = {
		{ 0, 1.0f, 0.0f, 0.0f },	/* greedy */
		{ 40, 0.95f, 0.05f, 0.8f },	/* defaults: top-k */
		{ 500, 0.95f, 0.0f, 0.8f },	/* top-k by buckets */
		{ 0, 0.9f, 0.0f, 1.0f },	/* top-p, buckets */
		{ 0, 1.0f, 0.02f, 1.2f },	/* min-p, buckets */
		{ 0, 1.0f, 0.0f, 1.0f },	/* whole vocabulary */
	};
	const int n = 20000, last_n = 64;
	struct sampler_params p, q;
	struct sampler *with, *by_hand;
	float *l = malloc(n * sizeof(*l)), *pl = malloc(n * sizeof(*pl));
	float *orig = malloc(n * sizeof(*orig));
	int32_t hist[200];
	int k, i, j, step, a, b, n_hist;

	assert_non_null(l);
	assert_non_null(pl);
	assert_non_null(orig);
	for (k = 0; k < (int)(sizeof(paths) / sizeof(paths[0])); k++) {
		params_off(&p, paths[k].temp);
		p.top_k = paths[k].top_k;
		p.top_p = paths[k].top_p;
		p.min_p = paths[k].min_p;
		p.repeat_penalty = 1.3f;
		p.repeat_last_n = last_n;
		p.seed = 1000 + k;
		q = p;
		q.repeat_penalty = 1.0f;
		with = new_sampler(&p, n);
		by_hand = new_sampler(&q, n);
		n_hist = 0;
		for (step = 0; step < 150; step++) {
			fill_logits(l, n, step);
			/* Make the strong tokens (penalized most often)
			 * sometimes negative, to test both rules. */
			for (i = 0; i < n; i++)
				if (l[i] > 4 && step % 2)
					l[i] = -l[i] + 4.0f;
			memcpy(pl, l, n * sizeof(*l));
			for (i = n_hist - last_n < 0 ? 0 : n_hist - last_n;
			    i < n_hist; i++) {
				for (j = n_hist - last_n < 0 ? 0 :
				    n_hist - last_n; j < i; j++)
					if (hist[j % 200] == hist[i % 200])
						break;
				if (j < i)
					continue;	/* seen: once only */
				pl[hist[i % 200]] = pl[hist[i % 200]] > 0 ?
				    pl[hist[i % 200]] / 1.3f :
				    pl[hist[i % 200]] * 1.3f;
			}
			memcpy(orig, l, n * sizeof(*l));
			a = sampler_sample(with, l);
			b = sampler_sample(by_hand, pl);
			/* The logits are read only. */
			assert_memory_equal(orig, l, n * sizeof(*l));
			if (a != b)
				fail_msg("path %d step %d: %d != %d", k, step,
				    a, b);
			sampler_accept(with, a);
			hist[n_hist++ % 200] = a;
		}
		sampler_free(with);
		sampler_free(by_hand);
	}
	free(l);
	free(pl);
	free(orig);
}

/* Default params on a fixed logits sequence: the first tokens of seed 0,
 * pinned, so another machine or a change of code that alters results
 * shows up here. */
static void
run_sequence(const struct sampler_params *p, int n, int32_t *out, int len)
{
	struct sampler *s = new_sampler(p, n);
	float *l = malloc(n * sizeof(*l));
	int i;

	assert_non_null(l);
	for (i = 0; i < len; i++) {
		fill_logits(l, n, 500 + (i % 7));
		/* Flatten so that the draw has real choices. */
		for (int j = 0; j < n; j++)
			l[j] *= 0.3f;
		out[i] = sampler_sample(s, l);
		sampler_accept(s, out[i]);
	}
	free(l);
	sampler_free(s);
}

static void
test_seed_determinism(void **state UNUSED)
{
	enum { LEN = 40 };
	/* Seed 42, repeat penalty 1.1, per path. */
	static const int32_t pinned[3][LEN] = {
		/* top-k path (defaults) */
		{ 3069, 3608, 2027, 4734, 751, 1831, 4066, 1434, 3764, 4690,
		    602, 1163, 477, 3455, 3432, 4656, 1632, 139, 102, 3124,
		    4294, 1434, 2529, 1857, 2099, 1584, 289, 4784, 2917, 595,
		    2942, 4755, 102, 1831, 93, 4725, 3352, 4341, 3345, 3737, },
		/* top-p/min-p buckets */
		{ 4131, 1011, 3318, 3345, 751, 3559, 3171, 4887, 2958, 3017,
		    4879, 1163, 599, 773, 4616, 3119, 3540, 766, 102, 1104,
		    4443, 1693, 668, 2220, 3380, 2255, 4759, 1084, 1977, 3394,
		    3168, 3737, 102, 609, 4973, 1382, 1186, 464, 2507, 4217, },
		/* no cut: id order */
		{ 3037, 809, 814, 228, 4883, 1216, 1390, 760, 3779, 1211,
		    3775, 4334, 4499, 372, 203, 4270, 336, 1111, 145, 3319,
		    1700, 1176, 2815, 2095, 2312, 4743, 581, 3220, 4765, 103,
		    348, 2829, 740, 1851, 1801, 4788, 2577, 1900, 2311, 3400, },
	};
	struct sampler_params p;
	struct sampler *s;
	int32_t a[LEN], b[LEN], c[LEN];
	float *l;
	int i, differ = 0, path;

	for (path = 0; path < 3; path++) {
		sampler_params_default(&p);
		if (path == 1)
			p.top_k = 0;	/* top-p, min-p buckets */
		if (path == 2) {
			p.top_k = 0;
			p.top_p = 1.0f;
			p.min_p = 0.0f;	/* whole vocabulary */
		}
		p.repeat_penalty = 1.1f;
		p.seed = 42;
		run_sequence(&p, 5000, a, LEN);
		run_sequence(&p, 5000, b, LEN);
		assert_memory_equal(a, b, sizeof(a));
		assert_memory_equal(a, pinned[path], sizeof(a));
		p.seed = 43;
		run_sequence(&p, 5000, c, LEN);
		for (i = 0; i < LEN; i++)
			differ += a[i] != c[i];
		if (differ < LEN / 4)
			fail_msg("path %d: seeds 42 and 43 agree on %d of %d",
			    path, LEN - differ, LEN);
	}

	/* reset restarts the draw counter: same tokens again. */
	sampler_params_default(&p);
	p.top_k = 0;
	l = malloc(1000 * sizeof(*l));
	assert_non_null(l);
	for (i = 0; i < 1000; i++)
		l[i] = 0.2f * test_normal(i);
	s = new_sampler(&p, 1000);
	for (i = 0; i < LEN; i++)
		a[i] = sampler_sample(s, l);
	sampler_reset(s);
	for (i = 0; i < LEN; i++)
		b[i] = sampler_sample(s, l);
	assert_memory_equal(a, b, sizeof(a));
	sampler_free(s);
	free(l);
}

static double
now_us(void)
{
	struct timespec ts;

	clock_gettime(CLOCK_MONOTONIC, &ts);
	return ts.tv_sec * 1e6 + ts.tv_nsec / 1e3;
}

/*
 * Per-token cost at 152k: printed, not asserted (machines differ).  Two
 * kinds of logits: "peaked" like most LLM steps (a few tokens hold most of
 * the mass), and "flat" (fill_logits: the body of the vocabulary holds
 * most of it, so top-p alone keeps a large part of the vocabulary).
 */
static void
test_cost(void **state UNUSED)
{
	static const struct {
		const char *name;
		int top_k;
		float top_p, min_p, temp, penalty;
	} cases[] = {
		{ "greedy", 40, 0.95f, 0.05f, 0.0f, 1.0f },
		{ "defaults (k40 p.95 min.05 t.8)", 40, 0.95f, 0.05f, 0.8f,
		    1.0f },
		{ "defaults + repeat 1.1/64", 40, 0.95f, 0.05f, 0.8f, 1.1f },
		{ "top_k 1000", 1000, 1.0f, 0.0f, 0.8f, 1.0f },
		{ "top_p .95 min_p .05 (no top_k)", 0, 0.95f, 0.05f, 0.8f,
		    1.0f },
		{ "top_p .95 only", 0, 0.95f, 0.0f, 0.8f, 1.0f },
		{ "min_p .05 only", 0, 1.0f, 0.05f, 0.8f, 1.0f },
		{ "temperature only", 0, 1.0f, 0.0f, 0.8f, 1.0f },
		{ "temperature only + repeat", 0, 1.0f, 0.0f, 0.8f, 1.1f },
	};
	enum { N_LOGITS = 8, ROUNDS = 100 };
	struct sampler_params p;
	struct sampler *s;
	float *l[2][N_LOGITS];
	double t0, t[2];
	size_t c;
	int i, j, shape;

	for (i = 0; i < N_LOGITS; i++) {
		for (shape = 0; shape < 2; shape++) {
			l[shape][i] = malloc(BIG_VOCAB * sizeof(*l[0][i]));
			assert_non_null(l[shape][i]);
		}
		fill_logits(l[1][i], BIG_VOCAB, 900 + i);
		for (j = 0; j < BIG_VOCAB; j++)
			l[0][i][j] = 2.0f * test_normal(i * 1000003 + j);
		for (j = 0; j < 16; j++)
			l[0][i][test_hash(i + 77 * j) % BIG_VOCAB] +=
			    16.0f - 1.2f * j;
	}
	print_message("sampler cost at vocab %d, us/token: %8s %8s\n",
	    BIG_VOCAB, "peaked", "flat");
	for (c = 0; c < sizeof(cases) / sizeof(cases[0]); c++) {
		sampler_params_default(&p);
		p.top_k = cases[c].top_k;
		p.top_p = cases[c].top_p;
		p.min_p = cases[c].min_p;
		p.temperature = cases[c].temp;
		p.repeat_penalty = cases[c].penalty;
		for (shape = 0; shape < 2; shape++) {
			s = new_sampler(&p, BIG_VOCAB);
			for (i = 0; i < 64; i++)
				sampler_accept(s,
				    (int32_t)(test_hash(i) % BIG_VOCAB));
			sampler_sample(s, l[shape][0]);
			t0 = now_us();
			for (i = 0; i < ROUNDS; i++)
				sampler_sample(s, l[shape][i % N_LOGITS]);
			t[shape] = (now_us() - t0) / ROUNDS;
			sampler_free(s);
		}
		print_message("  %-38s %8.1f %8.1f\n", cases[c].name, t[0],
		    t[1]);
	}
	for (i = 0; i < N_LOGITS; i++) {
		free(l[0][i]);
		free(l[1][i]);
	}
}

int
main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test(test_defaults_and_validation),
		cmocka_unit_test(test_uniform_and_exp),
		cmocka_unit_test(test_greedy),
		cmocka_unit_test(test_top_k_one_is_greedy),
		cmocka_unit_test(test_top_k_frequencies),
		cmocka_unit_test(test_top_p),
		cmocka_unit_test(test_min_p),
		cmocka_unit_test(test_temperature),
		cmocka_unit_test(test_full_vocabulary),
		cmocka_unit_test(test_matches_definition),
		cmocka_unit_test(test_penalty_semantics),
		cmocka_unit_test(test_penalty_all_paths),
		cmocka_unit_test(test_seed_determinism),
		cmocka_unit_test(test_cost),
	};

	return cmocka_run_group_tests(tests, NULL, NULL);
}
