/*
 * Private to the quant module (quant.c and the per-ISA kernel files): the
 * ggml block layouts, scalar fp16 helpers, and the table of kernels each
 * instruction set provides.  quant_init() picks one table; everything a
 * table does not accelerate points at the scalar reference functions.
 */
#ifndef ORCD_CPU_QUANT_IMPL_H
#define ORCD_CPU_QUANT_IMPL_H

#include <stddef.h>
#include <stdint.h>
#include <string.h>

#include "orcd/dtype.h"

#define QUANT_QK ORCD_QK
#define QUANT_QK_K ORCD_QK_K

/* Block layouts, byte for byte those of ggml (ggml-common.h). */
struct quant_block_q4_0 {
	uint16_t d;
	uint8_t qs[QUANT_QK / 2];
};
struct quant_block_q4_1 {
	uint16_t d;
	uint16_t m;
	uint8_t qs[QUANT_QK / 2];
};
struct quant_block_q5_0 {
	uint16_t d;
	uint8_t qh[4];
	uint8_t qs[QUANT_QK / 2];
};
struct quant_block_q5_1 {
	uint16_t d;
	uint16_t m;
	uint8_t qh[4];
	uint8_t qs[QUANT_QK / 2];
};
struct quant_block_q8_0 {
	uint16_t d;
	int8_t qs[QUANT_QK];
};
struct quant_block_q8_1 {
	uint16_t d;
	uint16_t s;	/* d * sum(qs) */
	int8_t qs[QUANT_QK];
};
struct quant_block_q4_K {
	uint16_t d;
	uint16_t dmin;
	uint8_t scales[12];	/* 8 scales and 8 mins, 6 bits each */
	uint8_t qs[QUANT_QK_K / 2];
};
struct quant_block_q5_K {
	uint16_t d;
	uint16_t dmin;
	uint8_t scales[12];
	uint8_t qh[QUANT_QK_K / 8];
	uint8_t qs[QUANT_QK_K / 2];
};
struct quant_block_q6_K {
	uint8_t ql[QUANT_QK_K / 2];
	uint8_t qh[QUANT_QK_K / 4];
	int8_t scales[QUANT_QK_K / 16];
	uint16_t d;
};
struct quant_block_q8_K {
	float d;
	int8_t qs[QUANT_QK_K];
	int16_t bsums[QUANT_QK_K / 16];	/* sums of qs in groups of 16 */
};

_Static_assert(sizeof(struct quant_block_q4_0) == 18, "q4_0 layout");
_Static_assert(sizeof(struct quant_block_q4_1) == 20, "q4_1 layout");
_Static_assert(sizeof(struct quant_block_q5_0) == 22, "q5_0 layout");
_Static_assert(sizeof(struct quant_block_q5_1) == 24, "q5_1 layout");
_Static_assert(sizeof(struct quant_block_q8_0) == 34, "q8_0 layout");
_Static_assert(sizeof(struct quant_block_q8_1) == 36, "q8_1 layout");
_Static_assert(sizeof(struct quant_block_q4_K) == 144, "q4_K layout");
_Static_assert(sizeof(struct quant_block_q5_K) == 176, "q5_K layout");
_Static_assert(sizeof(struct quant_block_q6_K) == 210, "q6_K layout");
_Static_assert(sizeof(struct quant_block_q8_K) == 292, "q8_K layout");

/* Scalar IEEE half <-> single, round to nearest even like F16C. */
static inline float
quant_half_to_float(uint16_t h)
{
	uint32_t sign = (uint32_t)(h & 0x8000) << 16;
	uint32_t exp = (h >> 10) & 0x1f;
	uint32_t mant = h & 0x3ff;
	uint32_t bits;
	float f;

	if (exp == 0x1f) {
		bits = sign | 0x7f800000 | (mant << 13);
	} else if (exp != 0) {
		bits = sign | ((exp + 112) << 23) | (mant << 13);
	} else if (mant == 0) {
		bits = sign;
	} else {
		/* Subnormal half: normalise into a float. */
		int e = 113;
		while ((mant & 0x400) == 0) {
			mant <<= 1;
			e--;
		}
		bits = sign | ((uint32_t)e << 23) | ((mant & 0x3ff) << 13);
	}
	memcpy(&f, &bits, sizeof(f));
	return f;
}

static inline uint16_t
quant_float_to_half(float f)
{
	uint32_t x, ax, sign, h, rem;

	memcpy(&x, &f, sizeof(x));
	sign = (x >> 16) & 0x8000;
	ax = x & 0x7fffffff;
	if (ax > 0x7f800000)	/* NaN: keep the top payload bits, make it quiet */
		return (uint16_t)(sign | 0x7e00 | ((ax >> 13) & 0x3ff));
	if (ax >= 0x477ff000)	/* rounds to >= 65520: infinity */
		return (uint16_t)(sign | 0x7c00);
	if (ax < 0x38800000) {	/* below the smallest normal half */
		uint32_t e = ax >> 23, shift = 126 - e, mant, q, half;

		if (shift > 24)
			return (uint16_t)sign;
		mant = (ax & 0x7fffff) | 0x800000;
		q = mant >> shift;
		rem = mant & ((1u << shift) - 1);
		half = 1u << (shift - 1);
		if (rem > half || (rem == half && (q & 1)))
			q++;
		return (uint16_t)(sign | q);
	}
	h = (ax - (112u << 23)) >> 13;
	rem = ax & 0x1fff;
	if (rem > 0x1000 || (rem == 0x1000 && (h & 1)))
		h++;
	return (uint16_t)(sign | h);
}

/* Round to nearest, ties to even, for |x| < 2^22 (the quantizers' range). */
static inline int
quant_nearest_int(float x)
{
	float v = x + 12582912.0f;
	int32_t i;

	memcpy(&i, &v, sizeof(i));
	return (i & 0x007fffff) - 0x00400000;
}

/* The 6-bit scale and min of sub-block j of a Q4_K / Q5_K super-block. */
static inline void
quant_k_scale_min(int j, const uint8_t *s, int *sc, int *m)
{
	if (j < 4) {
		*sc = s[j] & 63;
		*m = s[j + 4] & 63;
	} else {
		*sc = (s[j + 4] & 0x0f) | ((s[j - 4] >> 6) << 4);
		*m = (s[j + 4] >> 4) | ((s[j] >> 6) << 4);
	}
}

typedef void quant_matmul_fn(int64_t n, const void *w, size_t w_stride, int nr,
    const void *a, size_t a_stride, int nc, float *out, size_t ldo);
typedef void quant_row_fn(const float *src, void *dst, int64_t n);

/* What one instruction set provides.  Every entry is set. */
struct quant_kernels {
	const char *name;
	quant_matmul_fn *matmul[ORCD_DTYPE_COUNT];
	quant_row_fn *quantize_q8_0;
	quant_row_fn *quantize_q8_1;
	quant_row_fn *quantize_q8_K;
	void (*fp16_from_fp32)(const float *src, uint16_t *dst, int64_t n);
	void (*fp32_from_fp16)(const uint16_t *src, float *dst, int64_t n);
};

/* Scalar reference kernels (quant.c), also the fallbacks of the SIMD sets. */
quant_matmul_fn quant_scalar_matmul_f32, quant_scalar_matmul_f16,
    quant_scalar_matmul_bf16, quant_scalar_matmul_q4_0,
    quant_scalar_matmul_q4_1, quant_scalar_matmul_q5_0,
    quant_scalar_matmul_q5_1, quant_scalar_matmul_q8_0,
    quant_scalar_matmul_q4_K, quant_scalar_matmul_q5_K,
    quant_scalar_matmul_q6_K;
quant_row_fn quant_scalar_quantize_q8_0, quant_scalar_quantize_q8_1,
    quant_scalar_quantize_q8_K;
void quant_scalar_fp16_from_fp32(const float *src, uint16_t *dst, int64_t n);
void quant_scalar_fp32_from_fp16(const uint16_t *src, float *dst, int64_t n);

extern const struct quant_kernels quant_kernels_scalar;
#if defined(__x86_64__) || defined(__i386__)
extern const struct quant_kernels quant_kernels_avx2;
extern const struct quant_kernels quant_kernels_avx512;
extern const struct quant_kernels quant_kernels_avx512vnni;
#endif

#endif
