/*
 * AVX2 + FMA + F16C kernels: activation quantizers, fp16 rows, and the
 * matmul for every weight type, for x86 CPUs without AVX-512.  Same plan
 * as the AVX-512 set (quant_avx512.c) at half the width and with 16
 * vector registers: activation columns are packed 4 at a time, weight rows
 * stream past them one by one, integer block sums are exact and each
 * block's scale is applied once per (row, column) in float.
 */
#include <immintrin.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "cpu/quant_impl.h"

#define AVX2_COLS 4

/* ------------------------------------------------------------ helpers */

static inline uint16_t
load_u16(const uint8_t *p)
{
	uint16_t v;

	memcpy(&v, p, sizeof(v));
	return v;
}

static inline uint32_t
load_u32(const uint8_t *p)
{
	uint32_t v;

	memcpy(&v, p, sizeof(v));
	return v;
}

/* One fp16 to float with the F16C instruction (same result as
 * quant_half_to_float, without its branches). */
static inline float
half_f16c(uint16_t h)
{
	return _mm_cvtss_f32(_mm_cvtph_ps(_mm_cvtsi32_si128(h)));
}

QUANT_INLINE float
hsum8(__m256 v)
{
	__m128 x =
	    _mm_add_ps(_mm256_castps256_ps128(v), _mm256_extractf128_ps(v, 1));

	x = _mm_add_ps(x, _mm_movehl_ps(x, x));
	x = _mm_add_ss(x, _mm_movehdup_ps(x));
	return _mm_cvtss_f32(x);
}

/* [sum a, sum b, sum c, sum d] */
QUANT_INLINE __m128
hsum4x8(__m256 a, __m256 b, __m256 c, __m256 d)
{
	__m256 t = _mm256_hadd_ps(_mm256_hadd_ps(a, b), _mm256_hadd_ps(c, d));

	return _mm_add_ps(
	    _mm256_castps256_ps128(t), _mm256_extractf128_ps(t, 1));
}

QUANT_INLINE int
hsum_i32x8(__m256i v)
{
	__m128i x = _mm_add_epi32(_mm256_castsi256_si128(v),
	    _mm256_extracti128_si256(v, 1));

	x = _mm_add_epi32(x, _mm_shuffle_epi32(x, 0x4e));
	x = _mm_add_epi32(x, _mm_shuffle_epi32(x, 0xb1));
	return _mm_cvtsi128_si32(x);
}

/* 16 bytes at p and at p + stride, one per 128-bit lane. */
QUANT_INLINE __m256i
load2x128(const uint8_t *p, int stride)
{
	return _mm256_inserti128_si256(_mm256_castsi128_si256(
	    _mm_loadu_si128((const __m128i *)p)),
	    _mm_loadu_si128((const __m128i *)(p + stride)), 1);
}

/* The fp16 at p and p + stride as floats, 4 lanes each; with once, only
 * in the first lane of each half (a per-block term). */
QUANT_INLINE __m256
scales2(const uint8_t *p, int stride, int once)
{
	const __m128 f = _mm_cvtph_ps(_mm_cvtsi32_si128((int)(load_u16(p) |
	    (uint32_t)load_u16(p + stride) << 16)));
	const __m256 v = _mm256_permutevar8x32_ps(_mm256_castps128_ps256(f),
	    _mm256_setr_epi32(0, 0, 0, 0, 1, 1, 1, 1));

	return once ? _mm256_blend_ps(_mm256_setzero_ps(), v, 0x11) : v;
}

/* One output row r against C columns, reduced from the accumulators. */
QUANT_INLINE void
store_row(const struct mm_args *p, int r, int c0, int C, const __m256 *acc)
{
	float *o = p->out + (size_t)c0 * p->ldo + r;
	float s[AVX2_COLS];

	if (C == 4) {
		_mm_storeu_ps(s, hsum4x8(acc[0], acc[1], acc[2], acc[3]));
	} else {
		for (int c = 0; c < C; c++)
			s[c] = hsum8(acc[c]);
	}
	for (int c = 0; c < C; c++) {
		if (p->accumulate)
			o[(size_t)c * p->ldo] += s[c];
		else
			o[(size_t)c * p->ldo] = s[c];
	}
}

/* Byte i of lane k is 0xff where bit i of the 16-bit value sits, for the
 * two 16-bit values (of the two lanes) selected by ctl. */
QUANT_INLINE __m256i
bits_to_bytes(__m256i src, __m256i ctl)
{
	const __m256i bit =
	    _mm256_set1_epi64x((long long)0x8040201008040201ull);

	return _mm256_cmpeq_epi8(_mm256_and_si256(_mm256_shuffle_epi8(src, ctl),
	    bit), bit);
}

/* ------------------------------------------------- activation quantizers */

QUANT_INLINE __m256i
pack_i32x32_to_i8(__m256i i0, __m256i i1, __m256i i2, __m256i i3)
{
	/* packs work per 128-bit lane; the permute restores element order */
	const __m256i p = _mm256_packs_epi16(_mm256_packs_epi32(i0, i1),
	    _mm256_packs_epi32(i2, i3));

	return _mm256_permutevar8x32_epi32(
	    p, _mm256_setr_epi32(0, 4, 1, 5, 2, 6, 3, 7));
}

QUANT_INLINE float
absmax32(const float *x)
{
	const __m256 sign = _mm256_set1_ps(-0.0f);
	__m256 m = _mm256_andnot_ps(sign, _mm256_loadu_ps(x));

	m = _mm256_max_ps(m, _mm256_andnot_ps(sign, _mm256_loadu_ps(x + 8)));
	m = _mm256_max_ps(m, _mm256_andnot_ps(sign, _mm256_loadu_ps(x + 16)));
	m = _mm256_max_ps(m, _mm256_andnot_ps(sign, _mm256_loadu_ps(x + 24)));
	__m128 h =
	    _mm_max_ps(_mm256_castps256_ps128(m), _mm256_extractf128_ps(m, 1));
	h = _mm_max_ps(h, _mm_movehl_ps(h, h));
	h = _mm_max_ss(h, _mm_movehdup_ps(h));
	return _mm_cvtss_f32(h);
}

static void
quantize_q8_0_avx2(const float *x, void *dst, int64_t n)
{
	struct quant_block_q8_0 *y = dst;

	for (int64_t i = 0; i < n / QUANT_QK; i++, x += QUANT_QK) {
		const float amax = absmax32(x);
		const __m256 id =
		    _mm256_set1_ps(amax != 0.0f ? 127.0f / amax : 0.0f);
		__m256i q[4];

		y[i].d = quant_float_to_half(amax / 127.0f);
		/* cvtps rounds to nearest even, as ggml's _mm256_round_ps. */
		for (int j = 0; j < 4; j++)
			q[j] = _mm256_cvtps_epi32(
			    _mm256_mul_ps(_mm256_loadu_ps(x + 8 * j), id));
		_mm256_storeu_si256((__m256i *)y[i].qs,
		    pack_i32x32_to_i8(q[0], q[1], q[2], q[3]));
	}
}

static void
quantize_q8_1_avx2(const float *x, void *dst, int64_t n)
{
	struct quant_block_q8_1 *y = dst;

	for (int64_t i = 0; i < n / QUANT_QK; i++, x += QUANT_QK) {
		const float amax = absmax32(x);
		const float d = amax / 127.0f;
		const __m256 id =
		    _mm256_set1_ps(amax != 0.0f ? 127.0f / amax : 0.0f);
		__m256i q[4];

		for (int j = 0; j < 4; j++)
			q[j] = _mm256_cvtps_epi32(
			    _mm256_mul_ps(_mm256_loadu_ps(x + 8 * j), id));
		const int sum =
		    hsum_i32x8(_mm256_add_epi32(_mm256_add_epi32(q[0], q[1]),
			_mm256_add_epi32(q[2], q[3])));

		y[i].d = quant_float_to_half(d);
		y[i].s = quant_float_to_half(d * (float)sum);
		_mm256_storeu_si256((__m256i *)y[i].qs,
		    pack_i32x32_to_i8(q[0], q[1], q[2], q[3]));
	}
}

static void
quantize_q8_K_avx2(const float *x, void *dst, int64_t n)
{
	struct quant_block_q8_K *y = dst;

	for (int64_t i = 0; i < n / QUANT_QK_K; i++, x += QUANT_QK_K) {
		float amax = 0.0f, max = 0.0f;

		for (int j = 0; j < QUANT_QK_K; j += 32) {
			const float m = absmax32(x + j);

			amax = m > amax ? m : amax;
		}
		if (amax == 0.0f) {
			memset(&y[i], 0, sizeof(y[i]));
			continue;
		}
		/* The first element of largest magnitude gives the sign. */
		const __m256 vamax = _mm256_set1_ps(amax);
		const __m256 sign = _mm256_set1_ps(-0.0f);
		for (int j = 0; j < QUANT_QK_K; j += 8) {
			const int k = _mm256_movemask_ps(_mm256_cmp_ps(
			    _mm256_andnot_ps(sign, _mm256_loadu_ps(x + j)),
			    vamax, _CMP_EQ_OQ));

			if (k != 0) {
				max = x[j + __builtin_ctz((unsigned)k)];
				break;
			}
		}
		const float iscale = -127.0f / max;
		const __m256 vis = _mm256_set1_ps(iscale);
		const __m256i top = _mm256_set1_epi32(127);

		for (int g = 0; g < QUANT_QK_K; g += 32) {
			__m256i q[4];

			for (int j = 0; j < 4; j++)
				q[j] = _mm256_min_epi32(
				    _mm256_cvtps_epi32(_mm256_mul_ps(
					vis, _mm256_loadu_ps(x + g + 8 * j))),
				    top);
			_mm256_storeu_si256((__m256i *)(y[i].qs + g),
			    pack_i32x32_to_i8(q[0], q[1], q[2], q[3]));
			y[i].bsums[g / 16] =
			    (int16_t)hsum_i32x8(_mm256_add_epi32(q[0], q[1]));
			y[i].bsums[g / 16 + 1] =
			    (int16_t)hsum_i32x8(_mm256_add_epi32(q[2], q[3]));
		}
		y[i].d = 1.0f / iscale;
	}
}

static void
fp16_from_fp32_avx2(const float *src, uint16_t *dst, int64_t n)
{
	int64_t i = 0;

	for (; i + 8 <= n; i += 8)
		_mm_storeu_si128((__m128i *)(dst + i), _mm256_cvtps_ph(
		    _mm256_loadu_ps(src + i), _MM_FROUND_TO_NEAREST_INT));
	quant_scalar_fp16_from_fp32(src + i, dst + i, n - i);
}

static void
fp32_from_fp16_avx2(const uint16_t *src, float *dst, int64_t n)
{
	int64_t i = 0;

	for (; i + 8 <= n; i += 8)
		_mm256_storeu_ps(dst + i, _mm256_cvtph_ps(
		    _mm_loadu_si128((const __m128i *)(src + i))));
	quant_scalar_fp32_from_fp16(src + i, dst + i, n - i);
}

/* ------------------------------------------------- float weight types */

enum { FT_F32, FT_F16, FT_BF16 };

/* Eight elements of a float-like row from k. */
QUANT_INLINE __m256
float_load(int ft, const uint8_t *p, int64_t k)
{
	switch (ft) {
	case FT_F32:
		return _mm256_loadu_ps((const float *)p + k);
	case FT_F16:
		return _mm256_cvtph_ps(_mm_loadu_si128((const __m128i *)
		    ((const uint16_t *)p + k)));
	default:
		return _mm256_castsi256_ps(_mm256_slli_epi32(
		    _mm256_cvtepu16_epi32(_mm_loadu_si128(
			(const __m128i *)((const uint16_t *)p + k))),
		    16));
	}
}

/* The last n % 8 elements, zero-padded to eight. */
QUANT_INLINE __m256
float_load_tail(int ft, const uint8_t *p, int64_t k, int64_t left)
{
	const size_t es = ft == FT_F32 ? 4 : 2;
	uint8_t tmp[32];

	memset(tmp, 0, sizeof(tmp));
	memcpy(tmp, p + (size_t)k * es, (size_t)left * es);
	return float_load(ft, tmp, 0);
}

/* One step of eight elements (left of them, zero-padded, when left). */
QUANT_INLINE void
float_step(int ft, const struct mm_args *p, int r0, int c0, int R, int C,
    int64_t k, int64_t left, __m256 acc[4][2])
{
	__m256 a[2];

#pragma GCC unroll 2
	for (int c = 0; c < C; c++) {
		const uint8_t *ap = p->a + (size_t)(c0 + c) * p->as;

		a[c] = left ? float_load_tail(ft, ap, k, left) :
		    float_load(ft, ap, k);
	}
#pragma GCC unroll 4
	for (int r = 0; r < R; r++) {
		const uint8_t *wp = p->w + (size_t)(r0 + r) * p->ws;
		const __m256 w = left ? float_load_tail(ft, wp, k, left) :
		    float_load(ft, wp, k);

#pragma GCC unroll 2
		for (int c = 0; c < C; c++)
			acc[r][c] = _mm256_fmadd_ps(w, a[c], acc[r][c]);
	}
}

QUANT_INLINE void
float_tile(int ft, const struct mm_args *p, int r0, int c0, int R, int C)
{
	__m256 acc[4][2];
	int64_t k = 0;

#pragma GCC unroll 4
	for (int r = 0; r < R; r++)
#pragma GCC unroll 2
		for (int c = 0; c < C; c++)
			acc[r][c] = _mm256_setzero_ps();
	if (R == 1 && C == 1) {
		/* A lone dot product: four chains hide the FMA latency. */
		const uint8_t *w = p->w + (size_t)r0 * p->ws;
		const uint8_t *a = p->a + (size_t)c0 * p->as;
		__m256 e1 = _mm256_setzero_ps(), e2 = e1, e3 = e1;

		const int es = ft == FT_F32 ? 4 : 2;

		for (; k + 32 <= p->n; k += 32) {
			quant_prefetch(w + (size_t)k * (size_t)es, 32 * es);
			acc[0][0] = _mm256_fmadd_ps(float_load(ft, w, k),
			    float_load(ft, a, k), acc[0][0]);
			e1 = _mm256_fmadd_ps(float_load(ft, w, k + 8),
			    float_load(ft, a, k + 8), e1);
			e2 = _mm256_fmadd_ps(float_load(ft, w, k + 16),
			    float_load(ft, a, k + 16), e2);
			e3 = _mm256_fmadd_ps(float_load(ft, w, k + 24),
			    float_load(ft, a, k + 24), e3);
		}
		acc[0][0] = _mm256_add_ps(_mm256_add_ps(acc[0][0], e1),
		    _mm256_add_ps(e2, e3));
	}
	for (; k + 8 <= p->n; k += 8)
		float_step(ft, p, r0, c0, R, C, k, 0, acc);
	if (k < p->n)
		float_step(ft, p, r0, c0, R, C, k, p->n - k, acc);
	for (int c = 0; c < C; c++) {
		float *o = p->out + (size_t)(c0 + c) * p->ldo + r0;

		if (R == 4)
			_mm_storeu_ps(o,
			    hsum4x8(
				acc[0][c], acc[1][c], acc[2][c], acc[3][c]));
		else
			for (int r = 0; r < R; r++)
				o[r] = hsum8(acc[r][c]);
	}
}

/* Tiles of at most two columns: 4 x 2 accumulators plus operands fit. */
#define FLOAT_TILE_SET(name, FT)					\
	QUANT_INLINE void						\
	name##_body(const struct mm_args *p, int r0, int c0, int R,	\
	    int C)							\
	{								\
		float_tile(FT, p, r0, c0, R, C);			\
	}								\
	MM_TILE_ONE(name, name##_body, 1, 1)				\
	MM_TILE_ONE(name, name##_body, 1, 2)				\
	MM_TILE_ONE(name, name##_body, 2, 1)				\
	MM_TILE_ONE(name, name##_body, 2, 2)				\
	MM_TILE_ONE(name, name##_body, 3, 1)				\
	MM_TILE_ONE(name, name##_body, 3, 2)				\
	MM_TILE_ONE(name, name##_body, 4, 1)				\
	MM_TILE_ONE(name, name##_body, 4, 2)				\
	static mm_tile_fn *const name##_tiles[4][4] = {			\
		{ name##_1x1, name##_1x2, NULL, NULL },			\
		{ name##_2x1, name##_2x2, NULL, NULL },			\
		{ name##_3x1, name##_3x2, NULL, NULL },			\
		{ name##_4x1, name##_4x2, NULL, NULL },			\
	};								\
	MM_FLOAT_ENTRY(matmul_##name, name##_tiles, 2)

FLOAT_TILE_SET(f32_avx2, FT_F32)
FLOAT_TILE_SET(f16_avx2, FT_F16)

/* Also the F16 kernel of the AVX-512 sets (see there). */
void
quant_avx2_matmul_f16(int64_t n, const void *w, size_t w_stride, int nr,
    const void *a, size_t a_stride, int nc, float *out, size_t ldo)
{
	matmul_f16_avx2(n, w, w_stride, nr, a, a_stride, nc, out, ldo);
}
FLOAT_TILE_SET(bf16_avx2, FT_BF16)

/* --------------------------------------------- legacy 32-element blocks */

/*
 * A unit is two consecutive blocks, held as two vectors: 128-bit lane k
 * of the first has elements 0-15 of block k, of the second elements
 * 16-31, so both halves of a block land in the same int32 lanes.  Weights
 * are unsigned bytes q with an offset o (value q - o) taken out through
 * the packed activation sums, except Q8_0, which multiplies |w| by the
 * activation with w's sign (VPSIGNB).
 */

static inline int
lg_wbytes(enum orcd_dtype t)
{
	switch (t) {
	case ORCD_DTYPE_Q4_0: return 18;
	case ORCD_DTYPE_Q4_1: return 20;
	case ORCD_DTYPE_Q5_0: return 22;
	case ORCD_DTYPE_Q5_1: return 24;
	default: return 34;
	}
}

static inline int
lg_offset(enum orcd_dtype t)
{
	return t == ORCD_DTYPE_Q4_0 ? 8 : t == ORCD_DTYPE_Q5_0 ? 16 : 0;
}

static inline int
lg_has_min(enum orcd_dtype t)
{
	return t == ORCD_DTYPE_Q4_1 || t == ORCD_DTYPE_Q5_1;
}

/* Packed per unit and column: bytes (2 x 32), correction, d, (s). */
static inline size_t
lg_unit_bytes(enum orcd_dtype t)
{
	return lg_has_min(t) ? 160 : 128;
}

/* The last block of an odd row, padded with a zero block. */
QUANT_INLINE const uint8_t *
lg_tail(const uint8_t *x, int64_t nb, int64_t u, int bb, uint8_t *tmp)
{
	if (2 * u + 2 <= nb)
		return x;
	memset(tmp, 0, (size_t)2 * (size_t)bb);
	memcpy(tmp, x, (size_t)bb);
	return tmp;
}

QUANT_INLINE void
lg_pack(
    enum orcd_dtype t, const struct mm_args *p, int c0, int C, uint8_t *pack)
{
	const int64_t nb = p->n / QUANT_QK, nu = (nb + 1) / 2;
	const size_t ub = lg_unit_bytes(t);
	const int ab = lg_has_min(t) ? 36 : 34;
	const int qoff = ab - 32;
	const int o = lg_offset(t);
	uint8_t tmp[2 * 36];

	for (int c = 0; c < C; c++) {
		const uint8_t *col = p->a + (size_t)(c0 + c) * p->as;

		for (int64_t u = 0; u < nu; u++) {
			const uint8_t *y = lg_tail(
			    col + (size_t)u * 2 * (size_t)ab, nb, u, ab, tmp);
			uint8_t *d =
			    pack + ((size_t)u * (size_t)C + (size_t)c) * ub;
			const __m256i a0 = load2x128(y + qoff, ab);
			const __m256i a1 = load2x128(y + qoff + 16, ab);
			__m256i corr = _mm256_setzero_si256();

			if (o != 0) {
				const __m256i vo = _mm256_set1_epi8((char)o);
				const __m256i m1 = _mm256_set1_epi16(-1);

				corr = _mm256_add_epi32(
				    _mm256_madd_epi16(
					_mm256_maddubs_epi16(vo, a0), m1),
				    _mm256_madd_epi16(
					_mm256_maddubs_epi16(vo, a1), m1));
			}
			_mm256_store_si256((__m256i *)d, a0);
			_mm256_store_si256((__m256i *)(d + 32), a1);
			_mm256_store_si256((__m256i *)(d + 64), corr);
			_mm256_store_ps((float *)(d + 96), scales2(y, ab, 0));
			if (lg_has_min(t))
				_mm256_store_ps(
				    (float *)(d + 128), scales2(y + 2, ab, 0));
		}
	}
}

struct lg_row {
	__m256i q[2];	/* unsigned bytes; Q8_0: |w| */
	__m256i w[2];	/* Q8_0: the signed weights, for the sign */
	__m256 d;
	__m256 m;	/* Q4_1 / Q5_1: the block min, once per block */
};

QUANT_INLINE void
lg_load_row(enum orcd_dtype t, const uint8_t *x, struct lg_row *row)
{
	const int wb = lg_wbytes(t);
	const __m256i m4 = _mm256_set1_epi8(0x0f);

	row->d = scales2(x, wb, 0);
	row->m = _mm256_setzero_ps();
	switch (t) {
	case ORCD_DTYPE_Q4_0:
	case ORCD_DTYPE_Q4_1: {
		const __m256i z =
		    load2x128(x + (t == ORCD_DTYPE_Q4_0 ? 2 : 4), wb);

		row->q[0] = _mm256_and_si256(z, m4);
		row->q[1] = _mm256_and_si256(_mm256_srli_epi16(z, 4), m4);
		if (t == ORCD_DTYPE_Q4_1)
			row->m = scales2(x + 2, wb, 1);
		break;
	}
	case ORCD_DTYPE_Q5_0:
	case ORCD_DTYPE_Q5_1: {
		const int hoff = t == ORCD_DTYPE_Q5_0 ? 2 : 4;
		const __m256i z = load2x128(x + hoff + 4, wb);
		/* qh of both blocks: bits 0-15 for the low nibbles of each
		 * lane, 16-31 for the high ones. */
		const __m256i qh =
		    _mm256_set1_epi64x((long long)(load_u32(x + hoff) |
			(uint64_t)load_u32(x + wb + hoff) << 32));
		const __m256i ctl0 = _mm256_setr_epi8(0, 0, 0, 0, 0, 0, 0, 0, 1,
		    1, 1, 1, 1, 1, 1, 1, 4, 4, 4, 4, 4, 4, 4, 4, 5, 5, 5, 5, 5,
		    5, 5, 5);
		const __m256i ctl1 = _mm256_add_epi8(ctl0, _mm256_set1_epi8(2));
		const __m256i sixteen = _mm256_set1_epi8(16);

		row->q[0] = _mm256_or_si256(_mm256_and_si256(z, m4),
		    _mm256_and_si256(bits_to_bytes(qh, ctl0), sixteen));
		row->q[1] = _mm256_or_si256(
		    _mm256_and_si256(_mm256_srli_epi16(z, 4), m4),
		    _mm256_and_si256(bits_to_bytes(qh, ctl1), sixteen));
		if (t == ORCD_DTYPE_Q5_1)
			row->m = scales2(x + 2, wb, 1);
		break;
	}
	default:
		for (int i = 0; i < 2; i++) {
			row->w[i] = load2x128(x + 2 + 16 * i, wb);
			row->q[i] = _mm256_abs_epi8(row->w[i]);
		}
		break;
	}
}

QUANT_INLINE __m256i
lg_dot(enum orcd_dtype t, const struct lg_row *row, const uint8_t *d)
{
	const __m256i a0 = _mm256_load_si256((const __m256i *)d);
	const __m256i a1 = _mm256_load_si256((const __m256i *)(d + 32));
	const __m256i ones = _mm256_set1_epi16(1);

	if (t == ORCD_DTYPE_Q8_0)
		return _mm256_add_epi32(
		    _mm256_madd_epi16(_mm256_maddubs_epi16(row->q[0],
		    _mm256_sign_epi8(a0, row->w[0])), ones),
		    _mm256_madd_epi16(_mm256_maddubs_epi16(row->q[1],
		    _mm256_sign_epi8(a1, row->w[1])), ones));
	/* q < 32: both halves' pair sums add up within int16. */
	return _mm256_add_epi32(_mm256_load_si256((const __m256i *)(d + 64)),
	    _mm256_madd_epi16(
		_mm256_add_epi16(_mm256_maddubs_epi16(row->q[0], a0),
		    _mm256_maddubs_epi16(row->q[1], a1)),
		ones));
}

QUANT_INLINE void
lg_row_kernel(enum orcd_dtype t, const struct mm_args *p, int r, int c0, int C)
{
	const int64_t nb = p->n / QUANT_QK;
	const size_t ub = lg_unit_bytes(t);
	const int wb = lg_wbytes(t);
	const uint8_t *x =
	    p->w + (size_t)r * p->ws + (size_t)p->u0 * 2 * (size_t)wb;
	const uint8_t *pk = p->pack + (size_t)p->u0 * (size_t)C * ub;
	uint8_t tmp[2 * 34];
	__m256 acc[AVX2_COLS];

#pragma GCC unroll 4
	for (int c = 0; c < C; c++)
		acc[c] = _mm256_setzero_ps();
	for (int64_t u = p->u0; u < p->u1; u++) {
		struct lg_row row;

		quant_prefetch(x, 2 * wb);
		lg_load_row(t, lg_tail(x, nb, u, wb, tmp), &row);
#pragma GCC unroll 4
		for (int c = 0; c < C; c++) {
			const uint8_t *d = pk + (size_t)c * ub;

			acc[c] = _mm256_fmadd_ps(
			    _mm256_cvtepi32_ps(lg_dot(t, &row, d)),
			    _mm256_mul_ps(
				row.d, _mm256_load_ps((const float *)(d + 96))),
			    acc[c]);
			if (lg_has_min(t))
				acc[c] = _mm256_fmadd_ps(row.m,
				    _mm256_load_ps((const float *)(d + 128)),
				    acc[c]);
		}
		x += 2 * wb;
		pk += (size_t)C * ub;
	}
	store_row(p, r, c0, C, acc);
}

#define LG_SET(tname, T)						\
	QUANT_INLINE void						\
	tname##_row_avx2(const struct mm_args *p, int r, int c0, int C)	\
	{								\
		lg_row_kernel(T, p, r, c0, C);				\
	}								\
	static void							\
	tname##_pack_avx2(const struct mm_args *p, int c0, int C, uint8_t *pk) \
	{								\
		lg_pack(T, p, c0, C, pk);				\
	}								\
	MM_ROW_SET4(tname##_avx2, tname##_row_avx2)			\
	MM_PACKED_ENTRY(matmul_##tname##_avx2, AVX2_COLS,		\
	    tname##_avx2_rows, NULL, tname##_pack_avx2,			\
	    (size_t)(n / 64 + 1) * lg_unit_bytes(T), 64, lg_unit_bytes(T), \
	    quant_scalar_matmul_##tname)

LG_SET(q4_0, ORCD_DTYPE_Q4_0)
LG_SET(q4_1, ORCD_DTYPE_Q4_1)
LG_SET(q5_0, ORCD_DTYPE_Q5_0)
LG_SET(q5_1, ORCD_DTYPE_Q5_1)
LG_SET(q8_0, ORCD_DTYPE_Q8_0)

/* ------------------------------------------------ K-quant super-blocks */

/* Packed per super-block and column: the 8 sums of a per 32-element
 * sub-block (int16, for the Q4_K / Q5_K mins), then d. */
#define K_PACK 32

static void
k_pack(const struct mm_args *p, int c0, int C, uint8_t *pack)
{
	const int64_t nb = p->n / QUANT_QK_K;

	for (int c = 0; c < C; c++) {
		const struct quant_block_q8_K *y =
		    (const struct quant_block_q8_K *)(p->a +
			(size_t)(c0 + c) * p->as);

		for (int64_t i = 0; i < nb; i++) {
			uint8_t *d =
			    pack + ((size_t)i * (size_t)C + (size_t)c) * K_PACK;
			const __m256i s32 = _mm256_madd_epi16(
			    _mm256_loadu_si256((const __m256i *)y[i].bsums),
			    _mm256_set1_epi16(1));

			_mm_store_si128((__m128i *)d,
			    _mm_packs_epi32(_mm256_castsi256_si128(s32),
				_mm256_extracti128_si256(s32, 1)));
			memcpy(d + 16, &y[i].d, sizeof(float));
		}
	}
}

/* int16 lanes all equal to element e of the 16 int16 in v. */
QUANT_INLINE __m256i
bcast_i16(__m256i v, int e)
{
	const __m256i dw =
	    _mm256_permutevar8x32_epi32(v, _mm256_set1_epi32(e / 2));

	return _mm256_shuffle_epi8(dw, e % 2 ? _mm256_set1_epi16(0x0302) :
	    _mm256_set1_epi16(0x0100));
}

/*
 * Q4_K / Q5_K: sub-block s (32 elements) is the low (s even) or high
 * nibbles of qs[32 (s / 2) ..]; maddubs gives 16 int16 pair sums, a
 * multiply-add with the broadcast 6-bit scale folds them into int32.
 */
QUANT_INLINE void
k45_row(enum orcd_dtype t, const struct mm_args *p, int r, int c0, int C)
{
	const size_t wb = t == ORCD_DTYPE_Q4_K ?
	    sizeof(struct quant_block_q4_K) : sizeof(struct quant_block_q5_K);
	const __m256i m4 = _mm256_set1_epi8(0x0f);
	const uint8_t *x = p->w + (size_t)r * p->ws + (size_t)p->u0 * wb;
	const uint8_t *pk = p->pack + (size_t)p->u0 * (size_t)C * K_PACK;
	const struct quant_block_q8_K *ac[AVX2_COLS];
	__m256 acc[AVX2_COLS];

#pragma GCC unroll 4
	for (int c = 0; c < C; c++) {
		acc[c] = _mm256_setzero_ps();
		ac[c] = (const struct quant_block_q8_K *)(p->a +
		    (size_t)(c0 + c) * p->as);
	}
	for (int64_t i = p->u0; i < p->u1; i++) {
		quant_prefetch(x, (int)wb);
		const uint8_t *qs = x + (t == ORCD_DTYPE_Q4_K ? 16 : 48);
		const uint32_t x0 = load_u32(x + 4), x1 = load_u32(x + 8);
		const uint32_t x2 = load_u32(x + 12);
		/* 6-bit scales and mins: bytes [sc0..sc7, m0..m7] */
		const __m256i sm = _mm256_cvtepu8_epi16(_mm_set_epi32(
		    (int)(((x2 >> 4) & 0x0f0f0f0f) | ((x1 >> 2) & 0x30303030)),
		    (int)(x1 & 0x3f3f3f3f),
		    (int)((x2 & 0x0f0f0f0f) | ((x0 >> 2) & 0x30303030)),
		    (int)(x0 & 0x3f3f3f3f)));
		const __m128i mins = _mm256_extracti128_si256(sm, 1);
		const __m256 vd = _mm256_set1_ps(half_f16c(load_u16(x)));
		const float dmin = half_f16c(load_u16(x + 2));
		__m256i qh = _mm256_setzero_si256(), sum[AVX2_COLS];

		if (t == ORCD_DTYPE_Q5_K)
			qh = _mm256_loadu_si256((const __m256i *)(x + 16));
#pragma GCC unroll 8
		for (int s = 0; s < 8; s++) {
			const __m256i z = _mm256_loadu_si256(
			    (const __m256i *)(qs + 32 * (s / 2)));
			__m256i q = s % 2 ?
			    _mm256_and_si256(_mm256_srli_epi16(z, 4), m4) :
			    _mm256_and_si256(z, m4);
			const __m256i sc = bcast_i16(sm, s);

			if (t == ORCD_DTYPE_Q5_K) {
				/* bit s of qh[l] to bit 4 of element l */
				__m256i h = _mm256_and_si256(
				    qh, _mm256_set1_epi8((char)(1 << s)));

				h = s <= 4 ? _mm256_slli_epi16(h, 4 - s) :
				    _mm256_srli_epi16(h, s - 4);
				q = _mm256_or_si256(q, h);
			}
#pragma GCC unroll 4
			for (int c = 0; c < C; c++) {
				const __m256i prod = _mm256_madd_epi16(
				    _mm256_maddubs_epi16(q,
					_mm256_loadu_si256(
					    (const __m256i *)(ac[c][i].qs +
						32 * s))),
				    sc);

				sum[c] = s == 0 ? prod :
				    _mm256_add_epi32(sum[c], prod);
			}
		}
#pragma GCC unroll 4
		for (int c = 0; c < C; c++) {
			const uint8_t *d = pk + (size_t)c * K_PACK;
			float ad;

			memcpy(&ad, d + 16, sizeof(ad));
			const __m256 m = _mm256_castps128_ps256(
			    _mm_cvtepi32_ps(_mm_madd_epi16(
				mins, _mm_load_si128((const __m128i *)d))));

			/* d * sumi - dmin * summins, both times ad */
			acc[c] = _mm256_fmadd_ps(_mm256_cvtepi32_ps(sum[c]),
			    _mm256_mul_ps(vd, _mm256_set1_ps(ad)), acc[c]);
			acc[c] = _mm256_fmadd_ps(
			    _mm256_blend_ps(_mm256_setzero_ps(), m, 0x0f),
			    _mm256_set1_ps(-dmin * ad), acc[c]);
		}
		x += wb;
		pk += (size_t)C * K_PACK;
	}
	store_row(p, r, c0, C, acc);
}

/*
 * Q6_K: chunk j (32 elements) of half h = j / 4 takes its low 4 bits from
 * ql (low or high nibbles of one of two 32-byte runs) and 2 bits from qh;
 * its two 16-element groups have int8 scales.  The -32 offset goes
 * through the activation's per-16 sums.
 */
QUANT_INLINE void
q6k_row(const struct mm_args *p, int r, int c0, int C)
{
	const __m256i m4 = _mm256_set1_epi8(0x0f);
	const __m256i m30 = _mm256_set1_epi8(0x30);
	const struct quant_block_q6_K *x =
	    (const struct quant_block_q6_K *)(p->w + (size_t)r * p->ws) + p->u0;
	const struct quant_block_q8_K *ac[AVX2_COLS];
	__m256 acc[AVX2_COLS];

#pragma GCC unroll 4
	for (int c = 0; c < C; c++) {
		acc[c] = _mm256_setzero_ps();
		ac[c] = (const struct quant_block_q8_K *)(p->a +
		    (size_t)(c0 + c) * p->as);
	}
	for (int64_t i = p->u0; i < p->u1; i++, x++) {
		quant_prefetch(x, (int)sizeof(*x));
		const __m256i sc16 = _mm256_cvtepi8_epi16(
		    _mm_loadu_si128((const __m128i *)x->scales));
		const __m256 vd = _mm256_set1_ps(half_f16c(x->d));
		__m256i sum[AVX2_COLS];

#pragma GCC unroll 8
		for (int j = 0; j < 8; j++) {
			const int h = j / 4, qq = j % 4;
			const __m256i l = _mm256_loadu_si256((const __m256i *)
			    (x->ql + 64 * h + 32 * (qq % 2)));
			const __m256i hb = _mm256_loadu_si256(
			    (const __m256i *)(x->qh + 32 * h));
			const __m256i lo = qq < 2 ? _mm256_and_si256(l, m4) :
			    _mm256_and_si256(_mm256_srli_epi16(l, 4), m4);
			/* qh bits 2qq, 2qq+1 to bits 4, 5 */
			const __m256i hi = _mm256_and_si256(2 * qq <= 4 ?
			    _mm256_slli_epi16(hb, 4 - 2 * qq) :
			    _mm256_srli_epi16(hb, 2 * qq - 4), m30);
			const __m256i q = _mm256_or_si256(lo, hi);
			/* groups 2j (lanes 0-7) and 2j + 1 (lanes 8-15) */
			const __m256i dw = _mm256_permutevar8x32_epi32(sc16,
			    _mm256_set1_epi32(j));
			const __m256i sc = _mm256_shuffle_epi8(dw,
			    _mm256_setr_epi8(0, 1, 0, 1, 0, 1, 0, 1, 0, 1, 0, 1,
				0, 1, 0, 1, 2, 3, 2, 3, 2, 3, 2, 3, 2, 3, 2, 3,
				2, 3, 2, 3));

#pragma GCC unroll 4
			for (int c = 0; c < C; c++) {
				const __m256i prod = _mm256_madd_epi16(
				    _mm256_maddubs_epi16(q,
					_mm256_loadu_si256(
					    (const __m256i *)(ac[c][i].qs +
						32 * j))),
				    sc);

				sum[c] = j == 0 ? prod :
				    _mm256_add_epi32(sum[c], prod);
			}
		}
#pragma GCC unroll 4
		for (int c = 0; c < C; c++) {
			/* -32 * sum_g sc_g * bsum_g */
			const __m256i corr = _mm256_madd_epi16(sc16,
			    _mm256_loadu_si256(
				(const __m256i *)ac[c][i].bsums));

			sum[c] = _mm256_sub_epi32(
			    sum[c], _mm256_slli_epi32(corr, 5));
			acc[c] = _mm256_fmadd_ps(_mm256_cvtepi32_ps(sum[c]),
			    _mm256_mul_ps(vd, _mm256_set1_ps(ac[c][i].d)),
			    acc[c]);
		}
	}
	store_row(p, r, c0, C, acc);
}

static void
no_pack(const struct mm_args *p, int c0, int C, uint8_t *pack)
{
	(void)p;
	(void)c0;
	(void)C;
	(void)pack;
}

#define Q4_K_ROW(p, r, c0, C) k45_row(ORCD_DTYPE_Q4_K, p, r, c0, C)
#define Q5_K_ROW(p, r, c0, C) k45_row(ORCD_DTYPE_Q5_K, p, r, c0, C)
MM_ROW_SET4(q4_K_avx2, Q4_K_ROW)
MM_ROW_SET4(q5_K_avx2, Q5_K_ROW)
MM_ROW_SET4(q6_K_avx2, q6k_row)

MM_PACKED_ENTRY(matmul_q4_K_avx2, AVX2_COLS, q4_K_avx2_rows, NULL, k_pack,
    (size_t)(n / QUANT_QK_K) * K_PACK, QUANT_QK_K,
    sizeof(struct quant_block_q8_K) + K_PACK, quant_scalar_matmul_q4_K)
MM_PACKED_ENTRY(matmul_q5_K_avx2, AVX2_COLS, q5_K_avx2_rows, NULL, k_pack,
    (size_t)(n / QUANT_QK_K) * K_PACK, QUANT_QK_K,
    sizeof(struct quant_block_q8_K) + K_PACK, quant_scalar_matmul_q5_K)
MM_PACKED_ENTRY(matmul_q6_K_avx2, AVX2_COLS, q6_K_avx2_rows, NULL, no_pack, 0,
    QUANT_QK_K, sizeof(struct quant_block_q8_K), quant_scalar_matmul_q6_K)

const struct quant_kernels quant_kernels_avx2 = {
	.name = "avx2",
	.matmul = {
		[ORCD_DTYPE_F32] = matmul_f32_avx2,
		[ORCD_DTYPE_F16] = matmul_f16_avx2,
		[ORCD_DTYPE_BF16] = matmul_bf16_avx2,
		[ORCD_DTYPE_Q4_0] = matmul_q4_0_avx2,
		[ORCD_DTYPE_Q4_1] = matmul_q4_1_avx2,
		[ORCD_DTYPE_Q5_0] = matmul_q5_0_avx2,
		[ORCD_DTYPE_Q5_1] = matmul_q5_1_avx2,
		[ORCD_DTYPE_Q8_0] = matmul_q8_0_avx2,
		[ORCD_DTYPE_Q4_K] = matmul_q4_K_avx2,
		[ORCD_DTYPE_Q5_K] = matmul_q5_K_avx2,
		[ORCD_DTYPE_Q6_K] = matmul_q6_K_avx2,
	},
	.quantize_q8_0 = quantize_q8_0_avx2,
	.quantize_q8_1 = quantize_q8_1_avx2,
	.quantize_q8_K = quantize_q8_K_avx2,
	.fp16_from_fp32 = fp16_from_fp32_avx2,
	.fp32_from_fp16 = fp32_from_fp16_avx2,
};
