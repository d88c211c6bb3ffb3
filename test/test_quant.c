/*
 * Tests of the CPU quant module: block geometry, fp16/bf16 conversion edge
 * cases, dequantization against reference decoders written here from the
 * block-layout description (not the library's code), quantize/dequantize
 * round trips, activation quantizers against the ggml x86 semantics, and
 * quant_matmul for every weight type on every kernel set this CPU has,
 * against a double-precision reference.
 */
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <setjmp.h>
#include <cmocka.h>

#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "orcd/dtype.h"
#include "cpu/quant.h"

static const char *const isas[] = { "scalar", "avx2", "avx512", "avx512vnni" };
#define N_ISAS (sizeof(isas) / sizeof(isas[0]))

static const enum orcd_dtype weight_types[] = {
	ORCD_DTYPE_F32, ORCD_DTYPE_F16, ORCD_DTYPE_BF16, ORCD_DTYPE_Q4_0,
	ORCD_DTYPE_Q4_1, ORCD_DTYPE_Q5_0, ORCD_DTYPE_Q5_1, ORCD_DTYPE_Q8_0,
	ORCD_DTYPE_Q4_K, ORCD_DTYPE_Q5_K, ORCD_DTYPE_Q6_K,
};
#define N_WEIGHT_TYPES (sizeof(weight_types) / sizeof(weight_types[0]))

/* ------------------------------------------------------------- helpers */

static uint64_t rng_state = 0x9e3779b97f4a7c15ull;

static uint64_t
rng_next(void)
{
	uint64_t x = rng_state;

	x ^= x >> 12;
	x ^= x << 25;
	x ^= x >> 27;
	rng_state = x;
	return x * 0x2545f4914f6cdd1dull;
}

/* Uniform in [-1, 1). */
static float
rng_float(void)
{
	return (
	    float)((double)(rng_next() >> 11) / 9007199254740992.0 * 2.0 - 1.0);
}

/* Roughly normal, unit variance. */
static float
rng_normal(void)
{
	float s = 0.0f;

	for (int i = 0; i < 6; i++)
		s += rng_float();
	return s * 0.70710678f;
}

static void
rng_bytes(uint8_t *p, size_t n)
{
	for (size_t i = 0; i < n; i++)
		p[i] = (uint8_t)(rng_next() >> 56);
}

static uint16_t
get16(const uint8_t *p)
{
	return (uint16_t)(p[0] | (p[1] << 8));
}

static void
put16(uint8_t *p, uint16_t v)
{
	p[0] = (uint8_t)v;
	p[1] = (uint8_t)(v >> 8);
}

/* IEEE half to float from the definition (sign, 5-bit exponent, 10 bits). */
static float
ref_half(uint16_t h)
{
	int s = h >> 15, e = (h >> 10) & 31, m = h & 1023;
	double v;

	if (e == 31)
		v = m != 0 ? NAN : INFINITY;
	else if (e == 0)
		v = ldexp((double)m, -24);
	else
		v = ldexp(1.0 + m / 1024.0, e - 15);
	return (float)(s ? -v : v);
}

/* A random finite half with magnitude up to about `scale`. */
static uint16_t
rand_half(float scale)
{
	return quant_fp32_to_fp16(rng_float() * scale);
}

static float
bits_float(uint32_t u)
{
	float f;

	memcpy(&f, &u, sizeof(f));
	return f;
}

static uint32_t
float_bits(float f)
{
	uint32_t u;

	memcpy(&u, &f, sizeof(u));
	return u;
}

/*
 * Random blocks of type t: random bytes everywhere, then the fp16 (or f32)
 * scale fields replaced by finite values of moderate size.
 */
static void
rand_blocks(enum orcd_dtype t, uint8_t *p, int64_t n)
{
	const size_t be = dtype_block_elems(t), bb = dtype_block_bytes(t);
	const int64_t nb = n / (int64_t)be;

	rng_bytes(p, (size_t)nb * bb);
	for (int64_t i = 0; i < nb; i++) {
		uint8_t *b = p + (size_t)i * bb;

		switch (t) {
		case ORCD_DTYPE_F32:
			memcpy(b, &(float){ rng_float() * 2.0f }, 4);
			break;
		case ORCD_DTYPE_F16:
			put16(b, rand_half(2.0f));
			break;
		case ORCD_DTYPE_BF16:
			put16(b,
			    (uint16_t)(float_bits(rng_float() * 2.0f) >> 16));
			break;
		case ORCD_DTYPE_Q4_0:
		case ORCD_DTYPE_Q5_0:
		case ORCD_DTYPE_Q8_0:
			put16(b, rand_half(0.1f));
			break;
		case ORCD_DTYPE_Q4_1:
		case ORCD_DTYPE_Q5_1:
		case ORCD_DTYPE_Q8_1:
		case ORCD_DTYPE_Q4_K:
		case ORCD_DTYPE_Q5_K:
			put16(b, rand_half(0.1f));
			put16(b + 2, rand_half(0.1f));
			break;
		case ORCD_DTYPE_Q6_K:
			put16(b + 208, rand_half(0.01f));
			break;
		case ORCD_DTYPE_Q8_K:
			memcpy(b, &(float){ rng_float() * 0.01f }, 4);
			break;
		default:
			fail();
		}
	}
}

static void
assert_floats_identical(
    const float *a, const float *b, int64_t n, const char *what)
{
	for (int64_t i = 0; i < n; i++) {
		if (float_bits(a[i]) != float_bits(b[i]) &&
		    !(isnan(a[i]) && isnan(b[i]))) {
			print_error("%s: element %lld: %.9g != %.9g\n", what,
			    (long long)i, (double)a[i], (double)b[i]);
			fail();
		}
	}
}

/* ---------------------------------------- reference decoders (layouts) */

/* Q4_K / Q5_K 6-bit scale and min of sub-block j (12-byte packing). */
static void
ref_scale_min(const uint8_t *s, int j, int *sc, int *m)
{
	if (j < 4) {
		*sc = s[j] & 0x3f;
		*m = s[4 + j] & 0x3f;
	} else {
		*sc = (s[8 + j - 4] & 0x0f) + 16 * (s[j - 4] >> 6);
		*m = (s[8 + j - 4] >> 4) + 16 * (s[j] >> 6);
	}
}

static void
ref_dequantize(enum orcd_dtype t, const uint8_t *p, float *y, int64_t n)
{
	const int64_t be = (int64_t)dtype_block_elems(t);
	const size_t bb = dtype_block_bytes(t);

	for (int64_t i = 0; i < n / be; i++) {
		const uint8_t *b = p + (size_t)i * bb;
		float *o = y + i * be;

		switch (t) {
		case ORCD_DTYPE_F32:
			memcpy(o, b, 4);
			break;
		case ORCD_DTYPE_F16:
			o[0] = ref_half(get16(b));
			break;
		case ORCD_DTYPE_BF16:
			o[0] = bits_float((uint32_t)get16(b) << 16);
			break;
		case ORCD_DTYPE_Q4_0: /* d, 16 bytes: j low, j + 16 high */
			for (int e = 0; e < 32; e++) {
				int q = e < 16 ? b[2 + e] & 15 :
				    b[2 + e - 16] >> 4;

				o[e] = (float)(q - 8) * ref_half(get16(b));
			}
			break;
		case ORCD_DTYPE_Q4_1:	/* d, m, 16 bytes */
			for (int e = 0; e < 32; e++) {
				int q = e < 16 ? b[4 + e] & 15 :
				    b[4 + e - 16] >> 4;

				o[e] = (float)q * ref_half(get16(b)) +
				    ref_half(get16(b + 2));
			}
			break;
		case ORCD_DTYPE_Q5_0:	/* d, 32 high bits, 16 bytes */
		case ORCD_DTYPE_Q5_1: {	/* d, m, 32 high bits, 16 bytes */
			const int h = t == ORCD_DTYPE_Q5_0 ? 2 : 4;
			const uint32_t qh = (uint32_t)b[h] |
			    (uint32_t)b[h + 1] << 8 | (uint32_t)b[h + 2] << 16 |
			    (uint32_t)b[h + 3] << 24;

			for (int e = 0; e < 32; e++) {
				int q = e < 16 ? b[h + 4 + e] & 15 :
				    b[h + 4 + e - 16] >> 4;

				q += 16 * (int)((qh >> e) & 1);
				if (t == ORCD_DTYPE_Q5_0)
					o[e] = (float)(q - 16) *
					    ref_half(get16(b));
				else
					o[e] = (float)q * ref_half(get16(b)) +
					    ref_half(get16(b + 2));
			}
			break;
		}
		case ORCD_DTYPE_Q8_0:	/* d, 32 int8 */
			for (int e = 0; e < 32; e++)
				o[e] = (float)(int8_t)b[2 + e] *
				    ref_half(get16(b));
			break;
		case ORCD_DTYPE_Q8_1:	/* d, s, 32 int8 */
			for (int e = 0; e < 32; e++)
				o[e] = (float)(int8_t)b[4 + e] *
				    ref_half(get16(b));
			break;
		case ORCD_DTYPE_Q4_K:	/* d, dmin, 12 scale bytes, 128 bytes */
		case ORCD_DTYPE_Q5_K: {	/* ..., 32 high-bit bytes, 128 bytes */
			const float d = ref_half(get16(b)),
				    dmin = ref_half(get16(b + 2));
			const uint8_t *qh = b + 16;
			const uint8_t *qs =
			    b + (t == ORCD_DTYPE_Q4_K ? 16 : 48);

			for (int e = 0; e < 256; e++) {
				int pair = e / 64, l = e % 32,
				    upper = (e % 64) >= 32;
				int q = upper ? qs[32 * pair + l] >> 4 :
				    qs[32 * pair + l] & 15;
				int sc, m;

				if (t == ORCD_DTYPE_Q5_K)
					q += 16 *
					    ((qh[l] >> (2 * pair + upper)) & 1);
				ref_scale_min(b + 4, e / 32, &sc, &m);
				o[e] =
				    d * (float)sc * (float)q - dmin * (float)m;
			}
			break;
		}
		case ORCD_DTYPE_Q6_K: { /* 128 ql, 64 qh, 16 scales, d */
			const float d = ref_half(get16(b + 208));

			for (int e = 0; e < 256; e++) {
				int half = e / 128, quarter = (e % 128) / 32,
				    l = e % 32;
				int lo = b[64 * half + 32 * (quarter & 1) + l];
				int hi = b[128 + 32 * half + l];
				int q = (quarter < 2 ? lo & 15 : lo >> 4) |
				    (((hi >> (2 * quarter)) & 3) << 4);

				o[e] = d * (float)(int8_t)b[192 + e / 16] *
				    (float)(q - 32);
			}
			break;
		}
		case ORCD_DTYPE_Q8_K: {	/* float d, 256 int8, 16 int16 sums */
			float d;

			memcpy(&d, b, 4);
			for (int e = 0; e < 256; e++)
				o[e] = d * (float)(int8_t)b[4 + e];
			break;
		}
		default:
			fail();
		}
	}
}

/* --------------------------------------------------------------- tests */

static void
test_dtype_geometry(void **state)
{
	uint64_t bytes;

	(void)state;
	assert_int_equal(dtype_block_bytes(ORCD_DTYPE_Q4_0), 18);
	assert_int_equal(dtype_block_bytes(ORCD_DTYPE_Q4_1), 20);
	assert_int_equal(dtype_block_bytes(ORCD_DTYPE_Q5_0), 22);
	assert_int_equal(dtype_block_bytes(ORCD_DTYPE_Q5_1), 24);
	assert_int_equal(dtype_block_bytes(ORCD_DTYPE_Q8_0), 34);
	assert_int_equal(dtype_block_bytes(ORCD_DTYPE_Q8_1), 36);
	assert_int_equal(dtype_block_bytes(ORCD_DTYPE_Q4_K), 144);
	assert_int_equal(dtype_block_bytes(ORCD_DTYPE_Q5_K), 176);
	assert_int_equal(dtype_block_bytes(ORCD_DTYPE_Q6_K), 210);
	assert_int_equal(dtype_block_bytes(ORCD_DTYPE_Q8_K), 292);
	assert_int_equal(dtype_block_elems(ORCD_DTYPE_Q6_K), 256);
	assert_int_equal(dtype_block_elems(ORCD_DTYPE_F16), 1);
	assert_int_equal(dtype_block_bytes(4), 0); /* Q4_2: gone from ggml */
	assert_int_equal(dtype_block_bytes(-1), 0);
	assert_int_equal(dtype_block_bytes(ORCD_DTYPE_COUNT), 0);
	assert_null(dtype_name(10));	/* Q2_K: not supported */
	assert_string_equal(dtype_name(ORCD_DTYPE_Q4_K), "q4_K");
	assert_true(dtype_is_weight_type(ORCD_DTYPE_Q6_K));
	assert_false(dtype_is_weight_type(ORCD_DTYPE_Q8_K));
	assert_false(dtype_is_weight_type(ORCD_DTYPE_Q8_1));
	assert_true(dtype_row_bytes(ORCD_DTYPE_Q4_K, 4864, &bytes));
	assert_int_equal(bytes, 19 * 144);
	assert_false(dtype_row_bytes(ORCD_DTYPE_Q4_K, 896, &bytes));
	assert_true(dtype_row_bytes(ORCD_DTYPE_F16, 3, &bytes));
	assert_int_equal(bytes, 6);
	assert_false(dtype_row_bytes(ORCD_DTYPE_Q8_0, UINT64_MAX - 31, &bytes));
	assert_int_equal(quant_vec_dot_type(ORCD_DTYPE_Q5_0), ORCD_DTYPE_Q8_0);
	assert_int_equal(quant_vec_dot_type(ORCD_DTYPE_Q5_1), ORCD_DTYPE_Q8_1);
	assert_int_equal(quant_vec_dot_type(ORCD_DTYPE_Q6_K), ORCD_DTYPE_Q8_K);
	assert_int_equal(quant_vec_dot_type(ORCD_DTYPE_BF16), ORCD_DTYPE_BF16);
}

static void
test_fp16_edges(void **state)
{
	static const struct {
		uint32_t f;
		uint16_t h;
	} cases[] = {
		{ 0x00000000, 0x0000 },	/* +0 */
		{ 0x80000000, 0x8000 },	/* -0 */
		{ 0x3f800000, 0x3c00 },	/* 1 */
		{ 0xc0000000, 0xc000 },	/* -2 */
		{ 0x477fe000, 0x7bff },	/* 65504, largest half */
		{ 0x477fefff, 0x7bff },	/* just below the rounding point */
		{ 0x477ff000, 0x7c00 },	/* 65520 rounds to infinity */
		{ 0x7f7fffff, 0x7c00 },	/* FLT_MAX */
		{ 0x7f800000, 0x7c00 },	/* inf */
		{ 0xff800000, 0xfc00 },	/* -inf */
		{ 0x7fc00000, 0x7e00 },	/* quiet NaN */
		{ 0x33800000, 0x0001 },	/* 2^-24, smallest subnormal */
		{ 0x33000000, 0x0000 },	/* 2^-25: tie, to even (0) */
		{ 0x33000001, 0x0001 },	/* just above 2^-25 */
		{ 0x33c00000, 0x0002 },	/* 3 * 2^-25: tie, to even (2) */
		{ 0x38800000, 0x0400 },	/* 2^-14, smallest normal */
		{ 0x387fc000, 0x03ff },	/* largest subnormal */
		{ 0x387fe000, 0x0400 },	/* tie between 0x3ff and 0x400 */
		{ 0x3f801000, 0x3c00 },	/* 1 + 2^-11: tie, to even */
		{ 0x3f803000, 0x3c02 },	/* 1 + 3 * 2^-11: tie, to even */
		{ 0x3f801001, 0x3c01 },	/* just above the tie */
		{ 0x00000001, 0x0000 },	/* float subnormal */
		{ 0x80000001, 0x8000 },
	};

	(void)state;
	for (size_t i = 0; i < sizeof(cases) / sizeof(cases[0]); i++) {
		uint16_t h = quant_fp32_to_fp16(bits_float(cases[i].f));

		if (h != cases[i].h) {
			print_error("fp32 %08x -> %04x, want %04x\n",
			    cases[i].f, h, cases[i].h);
			fail();
		}
	}
	/* Every half converts exactly and converts back to itself. */
	for (uint32_t h = 0; h < 65536; h++) {
		const float f = quant_fp16_to_fp32((uint16_t)h);
		const float r = ref_half((uint16_t)h);

		if (isnan(r)) {
			assert_true(isnan(f));
			assert_true((quant_fp32_to_fp16(f) & 0x7e00) == 0x7e00);
			continue;
		}
		assert_true(float_bits(f) == float_bits(r));
		assert_int_equal(quant_fp32_to_fp16(f), h);
	}
}

static void
test_bf16_edges(void **state)
{
	(void)state;
	assert_int_equal(quant_fp32_to_bf16(1.0f), 0x3f80);
	assert_int_equal(quant_fp32_to_bf16(bits_float(0x3f808000)), 0x3f80);
	assert_int_equal(quant_fp32_to_bf16(bits_float(0x3f818000)), 0x3f82);
	assert_int_equal(quant_fp32_to_bf16(bits_float(0x3f808001)), 0x3f81);
	assert_int_equal(quant_fp32_to_bf16(bits_float(0x7f800000)), 0x7f80);
	assert_int_equal(quant_fp32_to_bf16(bits_float(0xff800000)), 0xff80);
	assert_int_equal(quant_fp32_to_bf16(bits_float(0x7f7fffff)), 0x7f80);
	assert_int_equal(quant_fp32_to_bf16(bits_float(0x7f800001)), 0x7fc0);
	assert_int_equal(quant_fp32_to_bf16(bits_float(0x00000001)), 0x0000);
	assert_int_equal(quant_fp32_to_bf16(bits_float(0x00018000)), 0x0002);
	assert_true(quant_bf16_to_fp32(0xc040) == -3.0f);
	assert_true(isnan(quant_bf16_to_fp32(0x7fc0)));
}

/* Row conversions of every kernel set agree with the scalar ones, bit for
 * bit, on random bit patterns (NaN, inf, subnormals included). */
static void
test_fp16_rows(void **state)
{
	enum { N = 65536 + 7 };
	float *f = malloc(N * sizeof(float)), *g = malloc(N * sizeof(float));
	float *back = malloc(N * sizeof(float));
	uint16_t *h = malloc(N * sizeof(uint16_t)),
		 *h2 = malloc(N * sizeof(uint16_t));
	uint16_t *all = malloc(N * sizeof(uint16_t));

	(void)state;
	for (int i = 0; i < N; i++) {
		uint32_t u = (uint32_t)rng_next();

		/* Bias towards the half range so rounding is exercised. */
		if (i % 2 == 0)
			u = (u & 0x807fffff) | ((uint32_t)(100 + i % 45) << 23);
		f[i] = bits_float(u);
		all[i] = (uint16_t)i;
	}
	for (int i = 0; i < N; i++) {
		h[i] = quant_fp32_to_fp16(f[i]);
		g[i] = quant_fp16_to_fp32(all[i]);
	}
	for (size_t k = 0; k < N_ISAS; k++) {
		if (quant_set_isa(isas[k]) != 0)
			continue;
		for (int n = 0; n < 40; n++) {
			memset(h2, 0xaa, 64 * sizeof(uint16_t));
			quant_fp16_row_from_fp32(f, h2, n);
			for (int i = 0; i < n; i++)
				assert_int_equal(h2[i], h[i]);
			assert_int_equal(h2[n], 0xaaaa);	/* no overrun */
		}
		quant_fp16_row_from_fp32(f, h2, N);
		for (int i = 0; i < N; i++) {
			if (h2[i] != h[i]) {
				print_error(
				    "%s: fp32 %08x -> %04x, scalar %04x\n",
				    isas[k], float_bits(f[i]), h2[i], h[i]);
				fail();
			}
		}
		quant_fp32_row_from_fp16(all, back, N);
		assert_floats_identical(back, g, N, isas[k]);
		quant_dequantize_row(ORCD_DTYPE_F16, all, back, N);
		assert_floats_identical(back, g, N, isas[k]);
	}
	quant_init();
	free(f);
	free(g);
	free(back);
	free(h);
	free(h2);
	free(all);
}

static const enum orcd_dtype all_types[] = {
	ORCD_DTYPE_F32, ORCD_DTYPE_F16, ORCD_DTYPE_BF16, ORCD_DTYPE_Q4_0,
	ORCD_DTYPE_Q4_1, ORCD_DTYPE_Q5_0, ORCD_DTYPE_Q5_1, ORCD_DTYPE_Q8_0,
	ORCD_DTYPE_Q8_1, ORCD_DTYPE_Q4_K, ORCD_DTYPE_Q5_K, ORCD_DTYPE_Q6_K,
	ORCD_DTYPE_Q8_K,
};

static void
test_dequantize_exact(void **state)
{
	enum { N = 256 * 16 };
	uint8_t *blocks = malloc(N * 4);
	float *want = malloc(N * sizeof(float));
	float *got = malloc(N * sizeof(float));

	(void)state;
	for (size_t k = 0; k < sizeof(all_types) / sizeof(all_types[0]); k++) {
		enum orcd_dtype t = all_types[k];

		for (int rep = 0; rep < 8; rep++) {
			rand_blocks(t, blocks, N);
			ref_dequantize(t, blocks, want, N);
			quant_dequantize_row(t, blocks, got, N);
			assert_floats_identical(got, want, N, dtype_name(t));
		}
	}
	free(blocks);
	free(want);
	free(got);
}

/* RMS of the round-trip error relative to the RMS of the data. */
static void
test_roundtrip(void **state)
{
	static const struct {
		enum orcd_dtype t;
		double max_rel_rms;
	} bounds[] = {
		{ ORCD_DTYPE_F16, 0.0005 }, { ORCD_DTYPE_BF16, 0.004 },
		{ ORCD_DTYPE_Q4_0, 0.12 }, { ORCD_DTYPE_Q4_1, 0.10 },
		{ ORCD_DTYPE_Q5_0, 0.06 }, { ORCD_DTYPE_Q5_1, 0.05 },
		{ ORCD_DTYPE_Q8_0, 0.008 }, { ORCD_DTYPE_Q8_1, 0.008 },
		{ ORCD_DTYPE_Q4_K, 0.12 }, { ORCD_DTYPE_Q5_K, 0.06 },
		{ ORCD_DTYPE_Q6_K, 0.035 }, { ORCD_DTYPE_Q8_K, 0.008 },
	};
	enum { N = 256 * 64 };
	float *x = malloc(N * sizeof(float)), *y = malloc(N * sizeof(float));
	uint8_t *q = malloc(N * 4);

	(void)state;
	for (int i = 0; i < N; i++)
		x[i] = rng_normal() * 0.02f + (i % 512 < 256 ? 0.01f : 0.0f);
	/* A block of zeros and a block of one repeated value. */
	for (int i = 0; i < 256; i++) {
		x[i] = 0.0f;
		x[256 + i] = -0.5f;
	}
	for (size_t k = 0; k < sizeof(bounds) / sizeof(bounds[0]); k++) {
		double err = 0.0, ref = 0.0;

		quant_quantize_row(bounds[k].t, x, q, N);
		quant_dequantize_row(bounds[k].t, q, y, N);
		for (int i = 0; i < 256; i++)
			assert_true(y[i] == 0.0f);
		for (int i = 512; i < N; i++) {
			err += ((double)y[i] - x[i]) * ((double)y[i] - x[i]);
			ref += (double)x[i] * x[i];
		}
		const double rel = sqrt(err / ref);
		for (int i = 256; i < 512; i++)
			assert_true(
			    fabs(y[i] + 0.5) < 0.5 * 3 * bounds[k].max_rel_rms);
		if (rel > bounds[k].max_rel_rms) {
			print_error("%s: relative rms error %g > %g\n",
			    dtype_name(bounds[k].t), rel,
			    bounds[k].max_rel_rms);
			fail();
		}
	}
	free(x);
	free(y);
	free(q);
}

/* Reference activation quantizers with ggml's x86 semantics. */
static void
ref_quantize_act(enum orcd_dtype t, const float *x, uint8_t *out, int64_t n)
{
	if (t == ORCD_DTYPE_Q8_K) {
		for (int64_t i = 0; i < n / 256; i++, x += 256, out += 292) {
			float amax = 0.0f, max = 0.0f, d = 0.0f;

			memset(out, 0, 292);
			for (int j = 0; j < 256; j++) {
				if (fabsf(x[j]) > amax) {
					amax = fabsf(x[j]);
					max = x[j];
				}
			}
			if (amax == 0.0f)
				continue;
			const float iscale = -127.0f / max;
			for (int j = 0; j < 256; j++) {
				long v = lrintf(iscale * x[j]);

				out[4 + j] =
				    (uint8_t)(int8_t)(v > 127 ? 127 : v);
			}
			for (int g = 0; g < 16; g++) {
				int s = 0;

				for (int j = 0; j < 16; j++)
					s += (int8_t)out[4 + 16 * g + j];
				out[260 + 2 * g] = (uint8_t)s;
				out[261 + 2 * g] = (uint8_t)(s >> 8);
			}
			d = 1.0f / iscale;
			memcpy(out, &d, 4);
		}
		return;
	}
	const int bb = t == ORCD_DTYPE_Q8_1 ? 36 : 34, qo = bb - 32;

	for (int64_t i = 0; i < n / 32; i++, x += 32, out += bb) {
		float amax = 0.0f;
		int sum = 0;

		for (int j = 0; j < 32; j++)
			amax = fmaxf(amax, fabsf(x[j]));
		const float d = amax / 127.0f;
		const float id = amax != 0.0f ? 127.0f / amax : 0.0f;

		for (int j = 0; j < 32; j++) {
			long v = lrintf(x[j] * id);

			out[qo + j] = (uint8_t)(int8_t)v;
			sum += (int)v;
		}
		put16(out, quant_fp32_to_fp16(d));
		if (t == ORCD_DTYPE_Q8_1)
			put16(out + 2, quant_fp32_to_fp16(d * (float)sum));
	}
}

static void
test_activation_quantizers(void **state)
{
	static const enum orcd_dtype types[] = {
		ORCD_DTYPE_Q8_0, ORCD_DTYPE_Q8_1, ORCD_DTYPE_Q8_K
	};
	enum { N = 256 * 32 };
	float *x = malloc(N * sizeof(float));
	uint8_t *want = malloc(N * 2), *got = malloc(N * 2);

	(void)state;
	for (int i = 0; i < N; i++) {
		/* Half-way points of the grid test the rounding. */
		x[i] = i % 7 == 0 ? (float)(i % 13) - 6.5f : rng_normal() *
		    (float)(1 + i / 1024);
	}
	for (int i = 0; i < 256; i++)
		x[512 + i] = 0.0f;	/* an all-zero block */
	x[1024 + 5] = -300.0f;	/* a negative maximum... */
	x[1024 + 9] = 300.0f;	/* ...tied with a positive one, later */
	for (size_t k = 0; k < sizeof(types) / sizeof(types[0]); k++) {
		const size_t bytes = N / dtype_block_elems(types[k]) *
		    dtype_block_bytes(types[k]);

		ref_quantize_act(types[k], x, want, N);
		for (size_t s = 0; s < N_ISAS; s++) {
			if (quant_set_isa(isas[s]) != 0)
				continue;
			memset(got, 0x55, bytes);
			quant_quantize_row(types[k], x, got, N);
			for (size_t b = 0; b < bytes; b++) {
				if (got[b] != want[b]) {
					print_error(
					    "%s %s: byte %zu: %02x != %02x\n",
					    isas[s], dtype_name(types[k]), b,
					    got[b], want[b]);
					fail();
				}
			}
		}
	}
	quant_init();
	free(x);
	free(want);
	free(got);
}

/*
 * quant_matmul against sum(dequant(w) * dequant(a)) in double.  The integer
 * block sums are exact, so the only error is float accumulation: bounded by
 * a small multiple of the sum of |w_i a_i|.
 */
static void
check_matmul(enum orcd_dtype t, int64_t n, int nr, int nc, const uint8_t *w,
    size_t ws, const float *wf, const uint8_t *a, size_t as, const float *af,
    float *out, size_t ldo, const char *isa)
{
	const double tol = n > 1024 ? 4e-6 : 1e-6;

	quant_matmul(t, n, w, ws, nr, a, as, nc, out, ldo);
	for (int c = 0; c < nc; c++) {
		for (int r = 0; r < nr; r++) {
			double ref = 0.0, mag = 0.0;

			for (int64_t i = 0; i < n; i++) {
				double p = (double)wf[(size_t)r * n + i] *
				    af[(size_t)c * n + i];

				ref += p;
				mag += fabs(p);
			}
			/* Q8_1 carries s = d * sum(q) rounded on its own; the
			 * weight's min multiplies that s, as in ggml. */
			if (quant_vec_dot_type(t) == ORCD_DTYPE_Q8_1) {
				const size_t wb = dtype_block_bytes(t);

				for (int64_t b = 0; b < n / 32; b++) {
					const uint8_t *wb_ =
					    w + r * ws + b * wb;
					const uint8_t *ab = a + c * as + b * 36;
					double sq = 0.0;

					for (int j = 0; j < 32; j++)
						sq += (int8_t)ab[4 + j];
					ref +=
					    (double)ref_half(get16(wb_ + 2)) *
					    ((double)ref_half(get16(ab + 2)) -
						(double)ref_half(get16(ab)) *
						    sq);
				}
			}
			const double got = out[(size_t)c * ldo + r];
			if (!(fabs(got - ref) <= tol * mag + 1e-30)) {
				print_error(
				    "%s %s n=%lld nr=%d nc=%d r=%d c=%d: "
				    "%.9g vs %.9g (mag %.3g)\n",
				    isa, dtype_name(t), (long long)n, nr, nc, r,
				    c, got, ref, mag);
				fail();
			}
		}
	}
}

static void
test_matmul(void **state)
{
	const int64_t sizes_legacy[] = { 32, 64, 96, 160, 4096 + 256,
		4096 + 256 + 96 };
	const int64_t sizes_k[] = { 256, 512, 768, 4096 + 256 };
	const int64_t sizes_float[] = { 1, 7, 16, 33, 96, 4096 + 256 + 5 };
	enum { MAXN = 4608, MAXR = 9 };
	/* Rows padded by 64 bytes: strides are not row sizes. */
	const size_t wcap = (size_t)MAXN * 4 + 64;
	uint8_t *w = malloc(wcap * MAXR), *a = malloc(wcap * MAXR);
	float *wf = malloc(sizeof(float) * MAXN * MAXR);
	float *x = malloc(sizeof(float) * MAXN * MAXR);
	float *af = malloc(sizeof(float) * MAXN * MAXR);
	float *out = malloc(sizeof(float) * 16 * MAXR);

	(void)state;
	for (size_t k = 0; k < N_WEIGHT_TYPES; k++) {
		const enum orcd_dtype t = weight_types[k];
		const enum orcd_dtype at = quant_vec_dot_type(t);
		const int64_t *sizes = dtype_block_elems(t) == 1 ? sizes_float :
		    dtype_block_elems(t) == 32 ? sizes_legacy : sizes_k;
		const int n_sizes = dtype_block_elems(t) == 256 ? 4 : 6;

		for (int si = 0; si < n_sizes; si++) {
			const int64_t n = sizes[si];
			uint64_t wrow, arow;

			assert_true(dtype_row_bytes(t, (uint64_t)n, &wrow));
			assert_true(dtype_row_bytes(at, (uint64_t)n, &arow));
			const size_t ws = wrow + 64, as = arow + 32;

			for (int r = 0; r < MAXR; r++) {
				rand_blocks(t, w + r * ws, n);
				ref_dequantize(
				    t, w + r * ws, wf + (size_t)r * n, n);
			}
			for (int c = 0; c < MAXR; c++)
				for (int64_t i = 0; i < n; i++)
					x[(size_t)c * n + i] = rng_normal();
			for (size_t s = 0; s < N_ISAS; s++) {
				if (quant_set_isa(isas[s]) != 0)
					continue;
				for (int c = 0; c < MAXR; c++) {
					quant_quantize_row(at,
					    x + (size_t)c * n, a + c * as, n);
					ref_dequantize(at, a + c * as,
					    af + (size_t)c * n, n);
				}
				for (int nr = 1; nr <= MAXR; nr++) {
					for (int nc = 1; nc <= MAXR; nc++) {
						/* Large rows: some shapes. */
						if (n > 1024 && nr % 4 != 1 &&
						    nr != 4 && nr != 8)
							continue;
						check_matmul(t, n, nr, nc, w,
						    ws, wf, a, as, af, out, 13,
						    isas[s]);
					}
				}
				/* nc = 1 with a zero activation stride, as the
				 * attention code calls it. */
				check_matmul(t, n, 7, 1, w, ws, wf, a, 0, af,
				    out, 16, isas[s]);
				float v = quant_vec_dot(t, n, w, a);
				quant_matmul(t, n, w, ws, 1, a, as, 1, out, 1);
				assert_true(v == out[0]);
			}
		}
	}
	quant_init();
	free(w);
	free(a);
	free(wf);
	free(x);
	free(af);
	free(out);
}

/* All kernel sets give nearly the same numbers as the scalar one for
 * weights made by the quantizers (the model generator's path). */
static void
test_matmul_isas_agree(void **state)
{
	enum { N = 4864, R = 11, C = 6 };
	float *x = malloc(sizeof(float) * N * R);
	float *y = malloc(sizeof(float) * N * C);
	uint8_t *w = malloc((size_t)N * 4 * R), *a = malloc((size_t)N * 4 * C);
	float *x2 = malloc(sizeof(float) * N), *y2 = malloc(sizeof(float) * N);
	float ref[R * C], got[R * C];
	double mag[R * C];

	(void)state;
	for (int i = 0; i < N * R; i++)
		x[i] = rng_normal() * 0.05f;
	for (int i = 0; i < N * C; i++)
		y[i] = rng_normal();
	for (size_t k = 0; k < N_WEIGHT_TYPES; k++) {
		const enum orcd_dtype t = weight_types[k];
		const enum orcd_dtype at = quant_vec_dot_type(t);
		const int64_t n = dtype_block_elems(t) == 256 ? 4864 :
		    4864 - 32;
		uint64_t ws, as;

		assert_true(dtype_row_bytes(t, (uint64_t)n, &ws));
		assert_true(dtype_row_bytes(at, (uint64_t)n, &as));
		for (int r = 0; r < R; r++)
			quant_quantize_row(t, x + r * N, w + r * ws, n);
		assert_int_equal(quant_set_isa("scalar"), 0);
		for (int c = 0; c < C; c++)
			quant_quantize_row(at, y + c * N, a + c * as, n);
		quant_matmul(t, n, w, ws, R, a, as, C, ref, R);
		/* Tolerances scale with sum |w_i a_i|: K-quant sums cancel. */
		for (int c = 0; c < C; c++) {
			quant_dequantize_row(at, a + c * as, y2, n);
			for (int r = 0; r < R; r++) {
				quant_dequantize_row(t, w + r * ws, x2, n);
				mag[c * R + r] = 0.0;
				for (int64_t i = 0; i < n; i++)
					mag[c * R + r] +=
					    fabs((double)x2[i] * y2[i]);
			}
		}
		for (size_t s = 1; s < N_ISAS; s++) {
			if (quant_set_isa(isas[s]) != 0)
				continue;
			quant_matmul(t, n, w, ws, R, a, as, C, got, R);
			for (int i = 0; i < R * C; i++) {
				const double scale = mag[i];

				if (fabs(got[i] - ref[i]) > 1e-5 * scale) {
					print_error("%s %s out %d: %.9g vs "
						    "scalar %.9g\n",
					    isas[s], dtype_name(t), i, got[i],
					    ref[i]);
					fail();
				}
			}
		}
	}
	quant_init();
	free(x);
	free(y);
	free(x2);
	free(y2);
	free(w);
	free(a);
}

static void
test_isa_selection(void **state)
{
	(void)state;
	assert_int_equal(quant_set_isa("scalar"), 0);
	assert_string_equal(quant_isa(), "scalar");
	assert_int_equal(quant_set_isa("no-such-isa"), -1);
	setenv("ORCD_CPU_ISA", "scalar", 1);
	quant_init();
	assert_string_equal(quant_isa(), "scalar");
	setenv("ORCD_CPU_ISA", "avx2", 1);
	quant_init();
	if (quant_set_isa("avx2") == 0) {
		quant_init();
		assert_string_equal(quant_isa(), "avx2");
	}
	unsetenv("ORCD_CPU_ISA");
	quant_init();
	/* With no cap the best set this CPU supports is chosen. */
	for (int s = (int)N_ISAS - 1; s >= 0; s--) {
		const char *best = quant_isa();

		if (quant_set_isa(isas[s]) == 0) {
			assert_string_equal(best, isas[s]);
			break;
		}
	}
	quant_init();
	print_message("kernel set: %s\n", quant_isa());
}

int
main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test(test_dtype_geometry),
		cmocka_unit_test(test_fp16_edges),
		cmocka_unit_test(test_bf16_edges),
		cmocka_unit_test(test_fp16_rows),
		cmocka_unit_test(test_dequantize_exact),
		cmocka_unit_test(test_roundtrip),
		cmocka_unit_test(test_activation_quantizers),
		cmocka_unit_test(test_matmul),
		cmocka_unit_test(test_matmul_isas_agree),
		cmocka_unit_test(test_isa_selection),
	};

	quant_init();
	return cmocka_run_group_tests(tests, NULL, NULL);
}
