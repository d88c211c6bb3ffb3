/*
 * Quantized tensor formats on the CPU: the scalar reference kernels,
 * dequantization, the weight quantizers used by the model generator, and
 * the choice of SIMD kernel set (quant_init).
 *
 * Numerics follow llama.cpp's CPU backend: activations are quantized the
 * way ggml's x86 code does it (Q8_0/Q8_1: scale amax/127, multiplier
 * 127/amax, round half to even; Q8_K: scale from the signed maximum), the
 * integer part of every block dot product is exact, and dequantization
 * evaluates ggml's dequantize_row_* expressions in the same order.
 */

/* ggml's dequantizers are built without FMA contraction; so are these. */
#pragma GCC optimize("fp-contract=off")

#include <math.h>
#include <stdlib.h>
#include <string.h>

#include "cpu/quant.h"
#include "cpu/quant_impl.h"

/* The kernel set in use; written by quant_init / quant_set_isa only. */
static const struct quant_kernels *quant_current = &quant_kernels_scalar;

static const struct quant_kernels *
quant_kernels_get(void)
{
	return __atomic_load_n(&quant_current, __ATOMIC_RELAXED);
}

/* ------------------------------------------------------------ fp16, bf16 */

uint16_t
quant_fp32_to_fp16(float f)
{
	return quant_float_to_half(f);
}

float
quant_fp16_to_fp32(uint16_t h)
{
	return quant_half_to_float(h);
}

uint16_t
quant_fp32_to_bf16(float f)
{
	uint32_t u;

	memcpy(&u, &f, sizeof(u));
	if ((u & 0x7fffffff) > 0x7f800000) /* NaN: keep it, make it quiet */
		return (uint16_t)((u >> 16) | 64);
	return (uint16_t)((u + (0x7fff + ((u >> 16) & 1))) >> 16);
}

float
quant_bf16_to_fp32(uint16_t h)
{
	uint32_t u = (uint32_t)h << 16;
	float f;

	memcpy(&f, &u, sizeof(f));
	return f;
}

void
quant_scalar_fp16_from_fp32(const float *src, uint16_t *dst, int64_t n)
{
	for (int64_t i = 0; i < n; i++)
		dst[i] = quant_float_to_half(src[i]);
}

void
quant_scalar_fp32_from_fp16(const uint16_t *src, float *dst, int64_t n)
{
	for (int64_t i = 0; i < n; i++)
		dst[i] = quant_half_to_float(src[i]);
}

void
quant_fp16_row_from_fp32(const float *src, uint16_t *dst, int64_t n)
{
	quant_kernels_get()->fp16_from_fp32(src, dst, n);
}

void
quant_fp32_row_from_fp16(const uint16_t *src, float *dst, int64_t n)
{
	quant_kernels_get()->fp32_from_fp16(src, dst, n);
}

/* ------------------------------------------------- activation quantizers */

void
quant_scalar_quantize_q8_0(const float *src, void *dst, int64_t n)
{
	struct quant_block_q8_0 *y = dst;

	for (int64_t i = 0; i < n / QUANT_QK; i++, src += QUANT_QK) {
		float amax = 0.0f;

		for (int j = 0; j < QUANT_QK; j++)
			amax = fabsf(src[j]) > amax ? fabsf(src[j]) : amax;
		/* ggml's x86 path multiplies by 127/amax, not by 1/d. */
		const float d = amax / 127.0f;
		const float id = amax != 0.0f ? 127.0f / amax : 0.0f;

		y[i].d = quant_float_to_half(d);
		for (int j = 0; j < QUANT_QK; j++)
			y[i].qs[j] = (int8_t)quant_nearest_int(src[j] * id);
	}
}

void
quant_scalar_quantize_q8_1(const float *src, void *dst, int64_t n)
{
	struct quant_block_q8_1 *y = dst;

	for (int64_t i = 0; i < n / QUANT_QK; i++, src += QUANT_QK) {
		float amax = 0.0f;
		int sum = 0;

		for (int j = 0; j < QUANT_QK; j++)
			amax = fabsf(src[j]) > amax ? fabsf(src[j]) : amax;
		const float d = amax / 127.0f;
		const float id = amax != 0.0f ? 127.0f / amax : 0.0f;

		for (int j = 0; j < QUANT_QK; j++) {
			int q = quant_nearest_int(src[j] * id);

			y[i].qs[j] = (int8_t)q;
			sum += q;
		}
		y[i].d = quant_float_to_half(d);
		y[i].s = quant_float_to_half(d * (float)sum);
	}
}

void
quant_scalar_quantize_q8_K(const float *src, void *dst, int64_t n)
{
	struct quant_block_q8_K *y = dst;

	for (int64_t i = 0; i < n / QUANT_QK_K; i++, src += QUANT_QK_K) {
		float amax = 0.0f, max = 0.0f;

		for (int j = 0; j < QUANT_QK_K; j++) {
			float ax = fabsf(src[j]);

			if (ax > amax) {
				amax = ax;
				max = src[j];
			}
		}
		if (amax == 0.0f) {
			memset(&y[i], 0, sizeof(y[i]));
			continue;
		}
		/* -127 (not -128) keeps every quant in [-127, 127]. */
		const float iscale = -127.0f / max;

		for (int j = 0; j < QUANT_QK_K; j++) {
			int v = quant_nearest_int(iscale * src[j]);

			y[i].qs[j] = (int8_t)(v < 127 ? v : 127);
		}
		for (int g = 0; g < QUANT_QK_K / 16; g++) {
			int sum = 0;

			for (int j = 0; j < 16; j++)
				sum += y[i].qs[g * 16 + j];
			y[i].bsums[g] = (int16_t)sum;
		}
		y[i].d = 1.0f / iscale;
	}
}

/* ----------------------------------------------------- weight quantizers */

/*
 * Simple per-block schemes (max-abs or min-max), not ggml's error search:
 * they are used to make model files from random weights, so they need to be
 * fast and produce valid blocks with a sensible error.
 */

static int
clampi(int v, int lo, int hi)
{
	return v < lo ? lo : v > hi ? hi : v;
}

/* The element of largest magnitude, with its sign. */
static float
signed_absmax(const float *x, int n)
{
	float amax = 0.0f, max = 0.0f;

	for (int j = 0; j < n; j++) {
		float ax = fabsf(x[j]);

		if (ax > amax) {
			amax = ax;
			max = x[j];
		}
	}
	return max;
}

static void
minmax(const float *x, int n, float *mn, float *mx)
{
	float lo = x[0], hi = x[0];

	/* Plain compares: fminf/fmaxf are library calls without -ffast-math. */
	for (int j = 1; j < n; j++) {
		lo = x[j] < lo ? x[j] : lo;
		hi = x[j] > hi ? x[j] : hi;
	}
	*mn = lo;
	*mx = hi;
}

/* Symmetric 4- or 5-bit block: the extreme value maps to -half. */
static void
quantize_sym(const float *x, int nlevels, uint16_t *dh, uint8_t *q)
{
	const int half = nlevels / 2;
	const float max = signed_absmax(x, QUANT_QK);

	*dh = quant_float_to_half(max / (float)-half);
	const float d = quant_half_to_float(*dh);
	const float id = d != 0.0f ? 1.0f / d : 0.0f;

	for (int j = 0; j < QUANT_QK; j++)
		q[j] = (uint8_t)clampi(quant_nearest_int(x[j] * id) + half, 0,
		    nlevels - 1);
}

/* Asymmetric block: x = d * q + m. */
static void
quantize_asym(const float *x, int nlevels, uint16_t *dh, uint16_t *mh,
    uint8_t *q)
{
	float mn, mx;

	minmax(x, QUANT_QK, &mn, &mx);
	*dh = quant_float_to_half((mx - mn) / (float)(nlevels - 1));
	*mh = quant_float_to_half(mn);
	const float d = quant_half_to_float(*dh);
	const float m = quant_half_to_float(*mh);
	const float id = d != 0.0f ? 1.0f / d : 0.0f;

	for (int j = 0; j < QUANT_QK; j++)
		q[j] = (uint8_t)clampi(quant_nearest_int((x[j] - m) * id), 0,
		    nlevels - 1);
}

static void
pack_nibbles(const uint8_t *q, uint8_t *qs)
{
	for (int j = 0; j < QUANT_QK / 2; j++)
		qs[j] = (uint8_t)((q[j] & 0x0f) |
		    ((q[j + QUANT_QK / 2] & 0x0f) << 4));
}

static uint32_t
pack_high_bits(const uint8_t *q)
{
	uint32_t qh = 0;

	for (int j = 0; j < QUANT_QK; j++)
		qh |= (uint32_t)((q[j] >> 4) & 1) << j;
	return qh;
}

static void
quantize_q4_0(const float *x, void *dst, int64_t n)
{
	struct quant_block_q4_0 *y = dst;
	uint8_t q[QUANT_QK];

	for (int64_t i = 0; i < n / QUANT_QK; i++, x += QUANT_QK) {
		quantize_sym(x, 16, &y[i].d, q);
		pack_nibbles(q, y[i].qs);
	}
}

static void
quantize_q4_1(const float *x, void *dst, int64_t n)
{
	struct quant_block_q4_1 *y = dst;
	uint8_t q[QUANT_QK];

	for (int64_t i = 0; i < n / QUANT_QK; i++, x += QUANT_QK) {
		quantize_asym(x, 16, &y[i].d, &y[i].m, q);
		pack_nibbles(q, y[i].qs);
	}
}

static void
quantize_q5_0(const float *x, void *dst, int64_t n)
{
	struct quant_block_q5_0 *y = dst;
	uint8_t q[QUANT_QK];

	for (int64_t i = 0; i < n / QUANT_QK; i++, x += QUANT_QK) {
		quantize_sym(x, 32, &y[i].d, q);
		pack_nibbles(q, y[i].qs);
		uint32_t qh = pack_high_bits(q);
		memcpy(y[i].qh, &qh, sizeof(qh));
	}
}

static void
quantize_q5_1(const float *x, void *dst, int64_t n)
{
	struct quant_block_q5_1 *y = dst;
	uint8_t q[QUANT_QK];

	for (int64_t i = 0; i < n / QUANT_QK; i++, x += QUANT_QK) {
		quantize_asym(x, 32, &y[i].d, &y[i].m, q);
		pack_nibbles(q, y[i].qs);
		uint32_t qh = pack_high_bits(q);
		memcpy(y[i].qh, &qh, sizeof(qh));
	}
}

/*
 * Q4_K / Q5_K: min-max per sub-block of 32, then the 8 scales and 8 mins
 * quantized to 6 bits against the super-block's d and dmin.  The elements
 * are quantized against the scales as stored, so the 6-bit rounding does
 * not add to the error twice.
 */
static void
quantize_k_scales(const float *x, int nlevels, uint16_t *dh, uint16_t *dminh,
    uint8_t *scales, uint8_t *q)
{
	float sub_scale[8], sub_min[8], max_scale = 0.0f, max_min = 0.0f;
	int sc[8], m[8];

	for (int s = 0; s < 8; s++) {
		float mn, mx;

		minmax(x + 32 * s, 32, &mn, &mx);
		if (mn > 0.0f)
			mn = 0.0f;	/* mins are stored non-negative */
		sub_scale[s] = (mx - mn) / (float)(nlevels - 1);
		sub_min[s] = -mn;
		max_scale = sub_scale[s] > max_scale ? sub_scale[s] : max_scale;
		max_min = sub_min[s] > max_min ? sub_min[s] : max_min;
	}
	*dh = quant_float_to_half(max_scale / 63.0f);
	*dminh = quant_float_to_half(max_min / 63.0f);
	const float d = quant_half_to_float(*dh);
	const float dmin = quant_half_to_float(*dminh);
	const float id = d != 0.0f ? 1.0f / d : 0.0f;
	const float idmin = dmin != 0.0f ? 1.0f / dmin : 0.0f;

	for (int s = 0; s < 8; s++) {
		sc[s] = clampi(quant_nearest_int(sub_scale[s] * id), 0, 63);
		/* Round the min up so that x + min never goes negative. */
		m[s] = clampi((int)ceilf(sub_min[s] * idmin), 0, 63);
	}
	for (int j = 0; j < 4; j++) {
		scales[j] = (uint8_t)sc[j];
		scales[j + 4] = (uint8_t)m[j];
	}
	for (int j = 4; j < 8; j++) {
		scales[j + 4] =
		    (uint8_t)((sc[j] & 0x0f) | ((m[j] & 0x0f) << 4));
		scales[j - 4] |= (uint8_t)((sc[j] >> 4) << 6);
		scales[j] |= (uint8_t)((m[j] >> 4) << 6);
	}
	for (int s = 0; s < 8; s++) {
		const float ds = d * (float)sc[s];
		const float ms = dmin * (float)m[s];
		const float ids = ds != 0.0f ? 1.0f / ds : 0.0f;

		for (int j = 0; j < 32; j++)
			q[32 * s + j] = (uint8_t)clampi(quant_nearest_int(
			    (x[32 * s + j] + ms) * ids), 0, nlevels - 1);
	}
}

static void
quantize_q4_K(const float *x, void *dst, int64_t n)
{
	struct quant_block_q4_K *y = dst;
	uint8_t q[QUANT_QK_K];

	for (int64_t i = 0; i < n / QUANT_QK_K; i++, x += QUANT_QK_K) {
		quantize_k_scales(x, 16, &y[i].d, &y[i].dmin, y[i].scales, q);
		for (int p = 0; p < 4; p++)
			for (int l = 0; l < 32; l++)
				y[i].qs[32 * p + l] = (uint8_t)(q[64 * p + l] |
				    (q[64 * p + 32 + l] << 4));
	}
}

static void
quantize_q5_K(const float *x, void *dst, int64_t n)
{
	struct quant_block_q5_K *y = dst;
	uint8_t q[QUANT_QK_K];

	for (int64_t i = 0; i < n / QUANT_QK_K; i++, x += QUANT_QK_K) {
		quantize_k_scales(x, 32, &y[i].d, &y[i].dmin, y[i].scales, q);
		memset(y[i].qh, 0, sizeof(y[i].qh));
		for (int p = 0; p < 4; p++) {
			for (int l = 0; l < 32; l++) {
				int lo = q[64 * p + l], hi = q[64 * p + 32 + l];

				y[i].qs[32 * p + l] = (uint8_t)((lo & 0x0f) |
				    ((hi & 0x0f) << 4));
				y[i].qh[l] |= (uint8_t)(((lo >> 4) << (2 * p)) |
				    ((hi >> 4) << (2 * p + 1)));
			}
		}
	}
}

static void
quantize_q6_K(const float *x, void *dst, int64_t n)
{
	struct quant_block_q6_K *y = dst;
	uint8_t q[QUANT_QK_K];

	for (int64_t i = 0; i < n / QUANT_QK_K; i++, x += QUANT_QK_K) {
		float gscale[16], amax = 0.0f;

		for (int g = 0; g < 16; g++) {
			gscale[g] = signed_absmax(x + 16 * g, 16) / -32.0f;
			if (fabsf(gscale[g]) > amax)
				amax = fabsf(gscale[g]);
		}
		y[i].d = quant_float_to_half(amax / 127.0f);
		const float d = quant_half_to_float(y[i].d);
		const float id = d != 0.0f ? 1.0f / d : 0.0f;

		for (int g = 0; g < 16; g++) {
			int sc = clampi(
			    quant_nearest_int(gscale[g] * id), -127, 127);
			const float ds = d * (float)sc;
			const float ids = ds != 0.0f ? 1.0f / ds : 0.0f;

			y[i].scales[g] = (int8_t)sc;
			for (int j = 0; j < 16; j++)
				q[16 * g + j] = (uint8_t)clampi(
				    quant_nearest_int(x[16 * g + j] * ids) + 32,
				    0, 63);
		}
		for (int h = 0; h < 2; h++) {
			const uint8_t *qq = q + 128 * h;

			for (int l = 0; l < 32; l++) {
				int q1 = qq[l], q2 = qq[l + 32];
				int q3 = qq[l + 64], q4 = qq[l + 96];

				y[i].ql[64 * h + l] = (uint8_t)((q1 & 0x0f) |
				    ((q3 & 0x0f) << 4));
				y[i].ql[64 * h + l + 32] =
				    (uint8_t)((q2 & 0x0f) | ((q4 & 0x0f) << 4));
				y[i].qh[32 * h + l] = (uint8_t)((q1 >> 4) |
				    ((q2 >> 4) << 2) | ((q3 >> 4) << 4) |
				    ((q4 >> 4) << 6));
			}
		}
	}
}

/* ------------------------------------------------------- dequantization */

/*
 * Q6_K element l (0..31) of quarter k (0..3) of a 128-element half: the
 * low 4 bits from ql (low nibbles of bytes 0-31 or 32-63, then the high
 * nibbles), the high 2 bits from qh[l], minus 32.
 */
static inline int
q6_value(const uint8_t *ql, const uint8_t *qh, int l, int k)
{
	const int lo = ql[l + 32 * (k & 1)];

	const int hi = (qh[l] >> (2 * k)) & 3;

	return ((k < 2 ? lo & 0x0f : lo >> 4) | (hi << 4)) - 32;
}

/* The fifth bit of Q5 element j, from the 32-bit qh. */
static inline int
q5_high(uint32_t qh, int j)
{
	return (int)((qh >> j) & 1) << 4;
}

static void
dequantize_q4_0(const void *src, float *y, int64_t n)
{
	const struct quant_block_q4_0 *x = src;

	for (int64_t i = 0; i < n / QUANT_QK; i++, y += QUANT_QK) {
		const float d = quant_half_to_float(x[i].d);

		for (int j = 0; j < QUANT_QK / 2; j++) {
			y[j] = (float)((x[i].qs[j] & 0x0f) - 8) * d;
			y[j + QUANT_QK / 2] =
			    (float)((x[i].qs[j] >> 4) - 8) * d;
		}
	}
}

static void
dequantize_q4_1(const void *src, float *y, int64_t n)
{
	const struct quant_block_q4_1 *x = src;

	for (int64_t i = 0; i < n / QUANT_QK; i++, y += QUANT_QK) {
		const float d = quant_half_to_float(x[i].d);
		const float m = quant_half_to_float(x[i].m);

		for (int j = 0; j < QUANT_QK / 2; j++) {
			y[j] = (float)(x[i].qs[j] & 0x0f) * d + m;
			y[j + QUANT_QK / 2] = (float)(x[i].qs[j] >> 4) * d + m;
		}
	}
}

static void
dequantize_q5_0(const void *src, float *y, int64_t n)
{
	const struct quant_block_q5_0 *x = src;

	for (int64_t i = 0; i < n / QUANT_QK; i++, y += QUANT_QK) {
		const float d = quant_half_to_float(x[i].d);
		uint32_t qh;

		memcpy(&qh, x[i].qh, sizeof(qh));
		for (int j = 0; j < QUANT_QK / 2; j++) {
			const int q0 = (x[i].qs[j] & 0x0f) | q5_high(qh, j);
			const int q1 = (x[i].qs[j] >> 4) | q5_high(qh, j + 16);

			y[j] = (float)(q0 - 16) * d;
			y[j + QUANT_QK / 2] = (float)(q1 - 16) * d;
		}
	}
}

static void
dequantize_q5_1(const void *src, float *y, int64_t n)
{
	const struct quant_block_q5_1 *x = src;

	for (int64_t i = 0; i < n / QUANT_QK; i++, y += QUANT_QK) {
		const float d = quant_half_to_float(x[i].d);
		const float m = quant_half_to_float(x[i].m);
		uint32_t qh;

		memcpy(&qh, x[i].qh, sizeof(qh));
		for (int j = 0; j < QUANT_QK / 2; j++) {
			const int q0 = (x[i].qs[j] & 0x0f) | q5_high(qh, j);
			const int q1 = (x[i].qs[j] >> 4) | q5_high(qh, j + 16);

			y[j] = (float)q0 * d + m;
			y[j + QUANT_QK / 2] = (float)q1 * d + m;
		}
	}
}

static void
dequantize_q8_0(const void *src, float *y, int64_t n)
{
	const struct quant_block_q8_0 *x = src;

	for (int64_t i = 0; i < n / QUANT_QK; i++, y += QUANT_QK) {
		const float d = quant_half_to_float(x[i].d);

		for (int j = 0; j < QUANT_QK; j++)
			y[j] = (float)x[i].qs[j] * d;
	}
}

static void
dequantize_q8_1(const void *src, float *y, int64_t n)
{
	const struct quant_block_q8_1 *x = src;

	for (int64_t i = 0; i < n / QUANT_QK; i++, y += QUANT_QK) {
		const float d = quant_half_to_float(x[i].d);

		for (int j = 0; j < QUANT_QK; j++)
			y[j] = (float)x[i].qs[j] * d;
	}
}

static void
dequantize_q4_K(const void *src, float *y, int64_t n)
{
	const struct quant_block_q4_K *x = src;

	for (int64_t i = 0; i < n / QUANT_QK_K; i++) {
		const float d = quant_half_to_float(x[i].d);
		const float dmin = quant_half_to_float(x[i].dmin);
		const uint8_t *q = x[i].qs;

		for (int p = 0; p < 4; p++, q += 32) {
			int sc, m;

			quant_k_scale_min(2 * p, x[i].scales, &sc, &m);
			const float d1 = d * (float)sc, m1 = dmin * (float)m;
			quant_k_scale_min(2 * p + 1, x[i].scales, &sc, &m);
			const float d2 = d * (float)sc, m2 = dmin * (float)m;

			for (int l = 0; l < 32; l++)
				*y++ = d1 * (float)(q[l] & 0x0f) - m1;
			for (int l = 0; l < 32; l++)
				*y++ = d2 * (float)(q[l] >> 4) - m2;
		}
	}
}

static void
dequantize_q5_K(const void *src, float *y, int64_t n)
{
	const struct quant_block_q5_K *x = src;

	for (int64_t i = 0; i < n / QUANT_QK_K; i++) {
		const float d = quant_half_to_float(x[i].d);
		const float dmin = quant_half_to_float(x[i].dmin);
		const uint8_t *ql = x[i].qs, *qh = x[i].qh;

		for (int p = 0; p < 4; p++, ql += 32) {
			int sc, m;

			quant_k_scale_min(2 * p, x[i].scales, &sc, &m);
			const float d1 = d * (float)sc, m1 = dmin * (float)m;
			quant_k_scale_min(2 * p + 1, x[i].scales, &sc, &m);
			const float d2 = d * (float)sc, m2 = dmin * (float)m;

			for (int l = 0; l < 32; l++) {
				const int q = (ql[l] & 0x0f) +
				    (((qh[l] >> (2 * p)) & 1) << 4);

				*y++ = d1 * (float)q - m1;
			}
			for (int l = 0; l < 32; l++) {
				const int q = (ql[l] >> 4) +
				    (((qh[l] >> (2 * p + 1)) & 1) << 4);

				*y++ = d2 * (float)q - m2;
			}
		}
	}
}

static void
dequantize_q6_K(const void *src, float *y, int64_t n)
{
	const struct quant_block_q6_K *x = src;

	for (int64_t i = 0; i < n / QUANT_QK_K; i++) {
		const float d = quant_half_to_float(x[i].d);
		const uint8_t *ql = x[i].ql, *qh = x[i].qh;
		const int8_t *sc = x[i].scales;

		for (int h = 0; h < 2; h++) {
			for (int l = 0; l < 32; l++) {
				const int is = l / 16;

				/* d * sc * q, in that order, as ggml */
				for (int k = 0; k < 4; k++)
					y[l + 32 * k] = d *
					    (float)sc[is + 2 * k] *
					    (float)q6_value(ql, qh, l, k);
			}
			y += 128;
			ql += 64;
			qh += 32;
			sc += 8;
		}
	}
}

static void
dequantize_q8_K(const void *src, float *y, int64_t n)
{
	const struct quant_block_q8_K *x = src;

	for (int64_t i = 0; i < n / QUANT_QK_K; i++, y += QUANT_QK_K)
		for (int j = 0; j < QUANT_QK_K; j++)
			y[j] = x[i].d * (float)x[i].qs[j];
}

/* ---------------------------------------------------- scalar dot kernels */

/*
 * One weight row times one activation row.  Block sums are exact integers;
 * the float accumulation runs block by block, like ggml's generic code.
 */

static float
dot_f32(int64_t n, const void *wv, const void *av)
{
	const float *w = wv, *a = av;
	double sum = 0.0;

	for (int64_t i = 0; i < n; i++)
		sum += (double)(w[i] * a[i]);
	return (float)sum;
}

static float
dot_f16(int64_t n, const void *wv, const void *av)
{
	const uint16_t *w = wv, *a = av;
	double sum = 0.0;

	for (int64_t i = 0; i < n; i++)
		sum += (double)(quant_half_to_float(w[i]) *
		    quant_half_to_float(a[i]));
	return (float)sum;
}

static float
dot_bf16(int64_t n, const void *wv, const void *av)
{
	const uint16_t *w = wv, *a = av;
	double sum = 0.0;

	for (int64_t i = 0; i < n; i++)
		sum += (double)(quant_bf16_to_fp32(w[i]) *
		    quant_bf16_to_fp32(a[i]));
	return (float)sum;
}

static float
dot_q4_0(int64_t n, const void *wv, const void *av)
{
	const struct quant_block_q4_0 *w = wv;
	const struct quant_block_q8_0 *a = av;
	float sum = 0.0f;

	for (int64_t i = 0; i < n / QUANT_QK; i++) {
		int sumi = 0;

		for (int j = 0; j < QUANT_QK / 2; j++)
			sumi += ((w[i].qs[j] & 0x0f) - 8) * a[i].qs[j] +
			    ((w[i].qs[j] >> 4) - 8) * a[i].qs[j + QUANT_QK / 2];
		sum += (float)sumi * (quant_half_to_float(w[i].d) *
		    quant_half_to_float(a[i].d));
	}
	return sum;
}

static float
dot_q4_1(int64_t n, const void *wv, const void *av)
{
	const struct quant_block_q4_1 *w = wv;
	const struct quant_block_q8_1 *a = av;
	float sum = 0.0f;

	for (int64_t i = 0; i < n / QUANT_QK; i++) {
		int sumi = 0;

		for (int j = 0; j < QUANT_QK / 2; j++)
			sumi += (w[i].qs[j] & 0x0f) * a[i].qs[j] +
			    (w[i].qs[j] >> 4) * a[i].qs[j + QUANT_QK / 2];
		sum += (float)sumi * (quant_half_to_float(w[i].d) *
		    quant_half_to_float(a[i].d)) +
		    quant_half_to_float(w[i].m) * quant_half_to_float(a[i].s);
	}
	return sum;
}

static float
dot_q5_0(int64_t n, const void *wv, const void *av)
{
	const struct quant_block_q5_0 *w = wv;
	const struct quant_block_q8_0 *a = av;
	float sum = 0.0f;

	for (int64_t i = 0; i < n / QUANT_QK; i++) {
		uint32_t qh;
		int sumi = 0;

		memcpy(&qh, w[i].qh, sizeof(qh));
		for (int j = 0; j < QUANT_QK / 2; j++) {
			const int q0 =
			    ((w[i].qs[j] & 0x0f) | q5_high(qh, j)) - 16;
			const int q1 =
			    ((w[i].qs[j] >> 4) | q5_high(qh, j + 16)) - 16;

			sumi +=
			    q0 * a[i].qs[j] + q1 * a[i].qs[j + QUANT_QK / 2];
		}
		sum += (float)sumi * (quant_half_to_float(w[i].d) *
		    quant_half_to_float(a[i].d));
	}
	return sum;
}

static float
dot_q5_1(int64_t n, const void *wv, const void *av)
{
	const struct quant_block_q5_1 *w = wv;
	const struct quant_block_q8_1 *a = av;
	float sum = 0.0f;

	for (int64_t i = 0; i < n / QUANT_QK; i++) {
		uint32_t qh;
		int sumi = 0;

		memcpy(&qh, w[i].qh, sizeof(qh));
		for (int j = 0; j < QUANT_QK / 2; j++) {
			const int q0 = (w[i].qs[j] & 0x0f) | q5_high(qh, j);
			const int q1 = (w[i].qs[j] >> 4) | q5_high(qh, j + 16);

			sumi +=
			    q0 * a[i].qs[j] + q1 * a[i].qs[j + QUANT_QK / 2];
		}
		sum += (float)sumi * (quant_half_to_float(w[i].d) *
		    quant_half_to_float(a[i].d)) +
		    quant_half_to_float(w[i].m) * quant_half_to_float(a[i].s);
	}
	return sum;
}

static float
dot_q8_0(int64_t n, const void *wv, const void *av)
{
	const struct quant_block_q8_0 *w = wv;
	const struct quant_block_q8_0 *a = av;
	float sum = 0.0f;

	for (int64_t i = 0; i < n / QUANT_QK; i++) {
		int sumi = 0;

		for (int j = 0; j < QUANT_QK; j++)
			sumi += w[i].qs[j] * a[i].qs[j];
		sum += (float)sumi * (quant_half_to_float(w[i].d) *
		    quant_half_to_float(a[i].d));
	}
	return sum;
}

static float
dot_q4_K(int64_t n, const void *wv, const void *av)
{
	const struct quant_block_q4_K *w = wv;
	const struct quant_block_q8_K *a = av;
	float sum = 0.0f;

	for (int64_t i = 0; i < n / QUANT_QK_K; i++) {
		const uint8_t *q = w[i].qs;
		const int8_t *y = a[i].qs;
		const int16_t *bs = a[i].bsums;
		int sumi = 0, summ = 0;

		for (int p = 0; p < 4; p++, q += 32, y += 64) {
			int sc0, m0, sc1, m1, s0 = 0, s1 = 0;

			quant_k_scale_min(2 * p, w[i].scales, &sc0, &m0);
			quant_k_scale_min(2 * p + 1, w[i].scales, &sc1, &m1);
			for (int l = 0; l < 32; l++) {
				s0 += (q[l] & 0x0f) * y[l];
				s1 += (q[l] >> 4) * y[l + 32];
			}
			sumi += sc0 * s0 + sc1 * s1;
			summ += m0 * (bs[4 * p] + bs[4 * p + 1]) +
			    m1 * (bs[4 * p + 2] + bs[4 * p + 3]);
		}
		sum += a[i].d * (quant_half_to_float(w[i].d) * (float)sumi -
		    quant_half_to_float(w[i].dmin) * (float)summ);
	}
	return sum;
}

static float
dot_q5_K(int64_t n, const void *wv, const void *av)
{
	const struct quant_block_q5_K *w = wv;
	const struct quant_block_q8_K *a = av;
	float sum = 0.0f;

	for (int64_t i = 0; i < n / QUANT_QK_K; i++) {
		const uint8_t *q = w[i].qs, *qh = w[i].qh;
		const int8_t *y = a[i].qs;
		const int16_t *bs = a[i].bsums;
		int sumi = 0, summ = 0;

		for (int p = 0; p < 4; p++, q += 32, y += 64) {
			int sc0, m0, sc1, m1, s0 = 0, s1 = 0;

			quant_k_scale_min(2 * p, w[i].scales, &sc0, &m0);
			quant_k_scale_min(2 * p + 1, w[i].scales, &sc1, &m1);
			for (int l = 0; l < 32; l++) {
				const int h0 = ((qh[l] >> (2 * p)) & 1) << 4;
				const int h1 =
				    ((qh[l] >> (2 * p + 1)) & 1) << 4;

				s0 += ((q[l] & 0x0f) | h0) * y[l];
				s1 += ((q[l] >> 4) | h1) * y[l + 32];
			}
			sumi += sc0 * s0 + sc1 * s1;
			summ += m0 * (bs[4 * p] + bs[4 * p + 1]) +
			    m1 * (bs[4 * p + 2] + bs[4 * p + 3]);
		}
		sum += a[i].d * (quant_half_to_float(w[i].d) * (float)sumi -
		    quant_half_to_float(w[i].dmin) * (float)summ);
	}
	return sum;
}

static float
dot_q6_K(int64_t n, const void *wv, const void *av)
{
	const struct quant_block_q6_K *w = wv;
	const struct quant_block_q8_K *a = av;
	float sum = 0.0f;

	for (int64_t i = 0; i < n / QUANT_QK_K; i++) {
		const uint8_t *ql = w[i].ql, *qh = w[i].qh;
		const int8_t *y = a[i].qs, *sc = w[i].scales;
		int sumi = 0;

		for (int h = 0; h < 2; h++) {
			int g[8] = { 0 };

			for (int l = 0; l < 32; l++)
				for (int k = 0; k < 4; k++)
					g[l / 16 + 2 * k] +=
					    q6_value(ql, qh, l, k) *
					    y[l + 32 * k];
			for (int k = 0; k < 8; k++)
				sumi += sc[k] * g[k];
			ql += 64;
			qh += 32;
			y += 128;
			sc += 8;
		}
		sum += a[i].d * quant_half_to_float(w[i].d) * (float)sumi;
	}
	return sum;
}

#define QUANT_SCALAR_MATMUL(name, dot)					\
void									\
name(int64_t n, const void *w, size_t w_stride, int nr, const void *a,	\
    size_t a_stride, int nc, float *out, size_t ldo)			\
{									\
	for (int c = 0; c < nc; c++)					\
		for (int r = 0; r < nr; r++)				\
			out[(size_t)c * ldo + r] = dot(n,		\
			    (const uint8_t *)w + (size_t)r * w_stride,	\
			    (const uint8_t *)a + (size_t)c * a_stride);	\
}

QUANT_SCALAR_MATMUL(quant_scalar_matmul_f32, dot_f32)
QUANT_SCALAR_MATMUL(quant_scalar_matmul_f16, dot_f16)
QUANT_SCALAR_MATMUL(quant_scalar_matmul_bf16, dot_bf16)
QUANT_SCALAR_MATMUL(quant_scalar_matmul_q4_0, dot_q4_0)
QUANT_SCALAR_MATMUL(quant_scalar_matmul_q4_1, dot_q4_1)
QUANT_SCALAR_MATMUL(quant_scalar_matmul_q5_0, dot_q5_0)
QUANT_SCALAR_MATMUL(quant_scalar_matmul_q5_1, dot_q5_1)
QUANT_SCALAR_MATMUL(quant_scalar_matmul_q8_0, dot_q8_0)
QUANT_SCALAR_MATMUL(quant_scalar_matmul_q4_K, dot_q4_K)
QUANT_SCALAR_MATMUL(quant_scalar_matmul_q5_K, dot_q5_K)
QUANT_SCALAR_MATMUL(quant_scalar_matmul_q6_K, dot_q6_K)

const struct quant_kernels quant_kernels_scalar = {
	.name = "scalar",
	.matmul = {
		[ORCD_DTYPE_F32] = quant_scalar_matmul_f32,
		[ORCD_DTYPE_F16] = quant_scalar_matmul_f16,
		[ORCD_DTYPE_BF16] = quant_scalar_matmul_bf16,
		[ORCD_DTYPE_Q4_0] = quant_scalar_matmul_q4_0,
		[ORCD_DTYPE_Q4_1] = quant_scalar_matmul_q4_1,
		[ORCD_DTYPE_Q5_0] = quant_scalar_matmul_q5_0,
		[ORCD_DTYPE_Q5_1] = quant_scalar_matmul_q5_1,
		[ORCD_DTYPE_Q8_0] = quant_scalar_matmul_q8_0,
		[ORCD_DTYPE_Q4_K] = quant_scalar_matmul_q4_K,
		[ORCD_DTYPE_Q5_K] = quant_scalar_matmul_q5_K,
		[ORCD_DTYPE_Q6_K] = quant_scalar_matmul_q6_K,
	},
	.quantize_q8_0 = quant_scalar_quantize_q8_0,
	.quantize_q8_1 = quant_scalar_quantize_q8_1,
	.quantize_q8_K = quant_scalar_quantize_q8_K,
	.fp16_from_fp32 = quant_scalar_fp16_from_fp32,
	.fp32_from_fp16 = quant_scalar_fp32_from_fp16,
};

/* ------------------------------------------------------------- dispatch */

enum orcd_dtype
quant_vec_dot_type(enum orcd_dtype t)
{
	switch (t) {
	case ORCD_DTYPE_Q4_0:
	case ORCD_DTYPE_Q5_0:
	case ORCD_DTYPE_Q8_0:
		return ORCD_DTYPE_Q8_0;
	case ORCD_DTYPE_Q4_1:
	case ORCD_DTYPE_Q5_1:
		return ORCD_DTYPE_Q8_1;
	case ORCD_DTYPE_Q4_K:
	case ORCD_DTYPE_Q5_K:
	case ORCD_DTYPE_Q6_K:
		return ORCD_DTYPE_Q8_K;
	default:
		return t;
	}
}

void
quant_dequantize_row(enum orcd_dtype t, const void *src, float *dst, int64_t n)
{
	switch (t) {
	case ORCD_DTYPE_F32:
		memcpy(dst, src, (size_t)n * sizeof(float));
		break;
	case ORCD_DTYPE_F16:
		quant_kernels_get()->fp32_from_fp16(src, dst, n);
		break;
	case ORCD_DTYPE_BF16:
		for (int64_t i = 0; i < n; i++)
			dst[i] = quant_bf16_to_fp32(((const uint16_t *)src)[i]);
		break;
	case ORCD_DTYPE_Q4_0:
		dequantize_q4_0(src, dst, n);
		break;
	case ORCD_DTYPE_Q4_1:
		dequantize_q4_1(src, dst, n);
		break;
	case ORCD_DTYPE_Q5_0:
		dequantize_q5_0(src, dst, n);
		break;
	case ORCD_DTYPE_Q5_1:
		dequantize_q5_1(src, dst, n);
		break;
	case ORCD_DTYPE_Q8_0:
		dequantize_q8_0(src, dst, n);
		break;
	case ORCD_DTYPE_Q8_1:
		dequantize_q8_1(src, dst, n);
		break;
	case ORCD_DTYPE_Q4_K:
		dequantize_q4_K(src, dst, n);
		break;
	case ORCD_DTYPE_Q5_K:
		dequantize_q5_K(src, dst, n);
		break;
	case ORCD_DTYPE_Q6_K:
		dequantize_q6_K(src, dst, n);
		break;
	case ORCD_DTYPE_Q8_K:
		dequantize_q8_K(src, dst, n);
		break;
	default:
		abort();	/* the loader only admits the types above */
	}
}

void
quant_quantize_row(enum orcd_dtype t, const float *src, void *dst, int64_t n)
{
	const struct quant_kernels *k = quant_kernels_get();

	switch (t) {
	case ORCD_DTYPE_F32:
		memcpy(dst, src, (size_t)n * sizeof(float));
		break;
	case ORCD_DTYPE_F16:
		k->fp16_from_fp32(src, dst, n);
		break;
	case ORCD_DTYPE_BF16:
		for (int64_t i = 0; i < n; i++)
			((uint16_t *)dst)[i] = quant_fp32_to_bf16(src[i]);
		break;
	case ORCD_DTYPE_Q4_0:
		quantize_q4_0(src, dst, n);
		break;
	case ORCD_DTYPE_Q4_1:
		quantize_q4_1(src, dst, n);
		break;
	case ORCD_DTYPE_Q5_0:
		quantize_q5_0(src, dst, n);
		break;
	case ORCD_DTYPE_Q5_1:
		quantize_q5_1(src, dst, n);
		break;
	case ORCD_DTYPE_Q8_0:
		k->quantize_q8_0(src, dst, n);
		break;
	case ORCD_DTYPE_Q8_1:
		k->quantize_q8_1(src, dst, n);
		break;
	case ORCD_DTYPE_Q4_K:
		quantize_q4_K(src, dst, n);
		break;
	case ORCD_DTYPE_Q5_K:
		quantize_q5_K(src, dst, n);
		break;
	case ORCD_DTYPE_Q6_K:
		quantize_q6_K(src, dst, n);
		break;
	case ORCD_DTYPE_Q8_K:
		k->quantize_q8_K(src, dst, n);
		break;
	default:
		abort();
	}
}

void
quant_matmul(enum orcd_dtype t, int64_t n, const void *w, size_t w_stride,
    int nr, const void *a, size_t a_stride, int nc, float *out, size_t ldo)
{
	quant_matmul_fn *fn;

	if (nr <= 0 || nc <= 0)
		return;
	if ((unsigned)t >= ORCD_DTYPE_COUNT ||
	    (fn = quant_kernels_get()->matmul[t]) == NULL)
		abort();
	fn(n, w, w_stride, nr, a, a_stride, nc, out, ldo);
}

float
quant_vec_dot(enum orcd_dtype t, int64_t n, const void *w, const void *a)
{
	float out;

	quant_matmul(t, n, w, 0, 1, a, 0, 1, &out, 1);
	return out;
}

/* ------------------------------------------------------ choosing an ISA */

/* Kernel sets from least to most capable. */
static const struct quant_kernels *
quant_isa_lookup(const char *name, int *rank)
{
	static const struct quant_kernels *const sets[] = {
		&quant_kernels_scalar,
#if defined(__x86_64__) || defined(__i386__)
		&quant_kernels_avx2,
		&quant_kernels_avx512,
		&quant_kernels_avx512vnni,
#endif
	};

	for (size_t i = 0; i < sizeof(sets) / sizeof(sets[0]); i++) {
		if (strcmp(sets[i]->name, name) == 0) {
			*rank = (int)i;
			return sets[i];
		}
	}
	return NULL;
}

static bool
quant_isa_supported(const struct quant_kernels *k)
{
#if defined(__x86_64__) || defined(__i386__)
	__builtin_cpu_init();
	if (k == &quant_kernels_avx2)
		return __builtin_cpu_supports("avx2") &&
		    __builtin_cpu_supports("fma") &&
		    __builtin_cpu_supports("f16c");
	if (k == &quant_kernels_avx512 || k == &quant_kernels_avx512vnni) {
		if (!quant_isa_supported(&quant_kernels_avx2) ||
		    !__builtin_cpu_supports("avx512f") ||
		    !__builtin_cpu_supports("avx512bw") ||
		    !__builtin_cpu_supports("avx512vl") ||
		    !__builtin_cpu_supports("avx512dq"))
			return false;
		return k == &quant_kernels_avx512 ||
		    __builtin_cpu_supports("avx512vnni");
	}
#endif
	return k == &quant_kernels_scalar;
}

int
quant_set_isa(const char *name)
{
	int rank;
	const struct quant_kernels *k = quant_isa_lookup(name, &rank);

	if (k == NULL || !quant_isa_supported(k))
		return -1;
	__atomic_store_n(&quant_current, k, __ATOMIC_RELAXED);
	return 0;
}

void
quant_init(void)
{
	static const char *const order[] = {
		"avx512vnni", "avx512", "avx2", "scalar"
	};
	const char *cap = getenv("ORCD_CPU_ISA");
	int cap_rank = 1 << 30, rank;

	/* "avx512" as a cap admits the VNNI variant of the same set. */
	if (cap != NULL && strcmp(cap, "avx512") == 0)
		cap = "avx512vnni";
	if (cap != NULL && quant_isa_lookup(cap, &rank) != NULL)
		cap_rank = rank;
	for (size_t i = 0; i < sizeof(order) / sizeof(order[0]); i++) {
		const struct quant_kernels *k =
		    quant_isa_lookup(order[i], &rank);

		if (k != NULL && rank <= cap_rank && quant_isa_supported(k)) {
			__atomic_store_n(&quant_current, k, __ATOMIC_RELAXED);
			return;
		}
	}
}

const char *
quant_isa(void)
{
	return quant_kernels_get()->name;
}
