/*
 * AVX-512 (F/BW/VL/DQ) kernels: activation quantizers, fp16 rows, and the
 * matmul for every weight type.  The integer kernels exist twice
 * (quant_avx512_body.h is included two times): once with plain AVX-512BW
 * arithmetic and once, under a target pragma, with the VNNI dot-product
 * instructions; quant_init() picks the second only when the CPU reports
 * AVX512_VNNI.
 *
 * Quantized types run through mm_drive_packed (quant_impl.h): up to 8
 * activation columns are packed into vectors the kernels load whole, then
 * each weight row is unpacked once per block and multiplied with every
 * packed column, one 16-lane float accumulator per column, reduced when
 * the row is done.  F32 and BF16 use R x C register tiles (R, C <= 4);
 * F16 uses the AVX2 kernel (512-bit fp16 conversion is slow on Zen 4).
 */
#include <immintrin.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "cpu/quant_impl.h"

/* ------------------------------------------------------------ helpers */

/* Sums of four vectors, as [sum a, sum b, sum c, sum d]. */
QUANT_INLINE __m128
hsum4(__m512 a, __m512 b, __m512 c, __m512 d)
{
	__m512 ab = _mm512_add_ps(_mm512_shuffle_f32x4(a, b, 0x44),
	    _mm512_shuffle_f32x4(a, b, 0xee));
	__m512 cd = _mm512_add_ps(_mm512_shuffle_f32x4(c, d, 0x44),
	    _mm512_shuffle_f32x4(c, d, 0xee));
	/* 128-bit lane k now holds four partial sums of the k-th input. */
	__m512 x = _mm512_add_ps(_mm512_shuffle_f32x4(ab, cd, 0x88),
	    _mm512_shuffle_f32x4(ab, cd, 0xdd));
	/* hadd twice: lane 0 of t = [a, c, a, c], lane 1 = [b, d, b, d]. */
	__m256 t = _mm256_hadd_ps(_mm512_castps512_ps256(x),
	    _mm512_extractf32x8_ps(x, 1));
	t = _mm256_hadd_ps(t, t);
	return _mm_unpacklo_ps(_mm256_castps256_ps128(t),
	    _mm256_extractf128_ps(t, 1));
}

/* Writes the reduced accumulators of an R x C tile. */
QUANT_INLINE void
store_tile(const struct mm_args *p, int r0, int c0, int R, int C,
    __m512 acc[4][4])
{
	for (int c = 0; c < C; c++) {
		float *o = p->out + (size_t)(c0 + c) * p->ldo + r0;

		if (R == 4) {
			_mm_storeu_ps(o, hsum4(acc[0][c], acc[1][c], acc[2][c],
			    acc[3][c]));
		} else {
			for (int r = 0; r < R; r++)
				o[r] = _mm512_reduce_add_ps(acc[r][c]);
		}
	}
}

/* Writes the reduced accumulators of one row against C columns. */
QUANT_INLINE void
store_row(const struct mm_args *p, int r, int c0, int C, const __m512 *acc)
{
	float *o = p->out + (size_t)c0 * p->ldo + r;
	float s[MM_PACK_COLS];
	int c = 0;

	for (; c + 4 <= C; c += 4)
		_mm_storeu_ps(
		    s + c, hsum4(acc[c], acc[c + 1], acc[c + 2], acc[c + 3]));
	for (; c < C; c++)
		s[c] = _mm512_reduce_add_ps(acc[c]);
	for (c = 0; c < C; c++) {
		if (p->accumulate)
			o[(size_t)c * p->ldo] += s[c];
		else
			o[(size_t)c * p->ldo] = s[c];
	}
}

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

/* 16 bytes at p + k * stride in 128-bit lane k, k = 0..3. */
QUANT_INLINE __m512i
load4x128(const uint8_t *p, int stride)
{
	__m512i z = _mm512_castsi128_si512(_mm_loadu_si128((const __m128i *)p));

	z = _mm512_inserti32x4(
	    z, _mm_loadu_si128((const __m128i *)(p + stride)), 1);
	z = _mm512_inserti32x4(
	    z, _mm_loadu_si128((const __m128i *)(p + 2 * stride)), 2);
	return _mm512_inserti32x4(
	    z, _mm_loadu_si128((const __m128i *)(p + 3 * stride)), 3);
}

/*
 * The fp16 at p + k * stride (k = 0..3) as floats in 128-bit lane k; with
 * once, only in the first float of each lane (a per-block term).
 */
QUANT_INLINE __m512
scales4(const uint8_t *p, int stride, int once)
{
	const uint64_t h = (uint64_t)load_u16(p) |
	    (uint64_t)load_u16(p + stride) << 16 |
	    (uint64_t)load_u16(p + 2 * stride) << 32 |
	    (uint64_t)load_u16(p + 3 * stride) << 48;
	const __m512 f = _mm512_castps128_ps512(_mm_cvtph_ps(
	    _mm_cvtsi64_si128((long long)h)));
	const __m512i idx = _mm512_set_epi32(3, 3, 3, 3, 2, 2, 2, 2, 1, 1, 1, 1,
	    0, 0, 0, 0);

	return once ? _mm512_maskz_permutexvar_ps(0x1111, idx, f) :
	    _mm512_permutexvar_ps(idx, f);
}

/* Q4_K / Q5_K: the 8 scales and 8 mins of a super-block, as bytes. */
QUANT_INLINE __m128i
k_scale_min_bytes(const uint8_t *s)
{
	const uint32_t x0 = load_u32(s), x1 = load_u32(s + 4);
	const uint32_t x2 = load_u32(s + 8);
	const uint32_t sc_lo = x0 & 0x3f3f3f3f, m_lo = x1 & 0x3f3f3f3f;
	const uint32_t sc_hi = (x2 & 0x0f0f0f0f) | ((x0 >> 2) & 0x30303030);
	const uint32_t m_hi = ((x2 >> 4) & 0x0f0f0f0f) |
	    ((x1 >> 2) & 0x30303030);

	return _mm_set_epi32((int)m_hi, (int)m_lo, (int)sc_hi, (int)sc_lo);
}

/* ------------------------------------------------- activation quantizers */

static void
quantize_q8_0_avx512(const float *x, void *dst, int64_t n)
{
	struct quant_block_q8_0 *y = dst;

	for (int64_t i = 0; i < n / QUANT_QK; i++, x += QUANT_QK) {
		__m512 v0 = _mm512_loadu_ps(x), v1 = _mm512_loadu_ps(x + 16);
		const float amax = _mm512_reduce_max_ps(_mm512_max_ps(
		    _mm512_abs_ps(v0), _mm512_abs_ps(v1)));
		const float d = amax / 127.0f;
		const __m512 id =
		    _mm512_set1_ps(amax != 0.0f ? 127.0f / amax : 0.0f);

		y[i].d = quant_float_to_half(d);
		/* cvtps rounds to nearest even, as ggml's _mm256_round_ps. */
		_mm_storeu_si128((__m128i *)y[i].qs, _mm512_cvtepi32_epi8(
		    _mm512_cvtps_epi32(_mm512_mul_ps(v0, id))));
		_mm_storeu_si128((__m128i *)(y[i].qs + 16),
		    _mm512_cvtepi32_epi8(
			_mm512_cvtps_epi32(_mm512_mul_ps(v1, id))));
	}
}

static void
quantize_q8_1_avx512(const float *x, void *dst, int64_t n)
{
	struct quant_block_q8_1 *y = dst;

	for (int64_t i = 0; i < n / QUANT_QK; i++, x += QUANT_QK) {
		__m512 v0 = _mm512_loadu_ps(x), v1 = _mm512_loadu_ps(x + 16);
		const float amax = _mm512_reduce_max_ps(_mm512_max_ps(
		    _mm512_abs_ps(v0), _mm512_abs_ps(v1)));
		const float d = amax / 127.0f;
		const __m512 id =
		    _mm512_set1_ps(amax != 0.0f ? 127.0f / amax : 0.0f);
		__m512i q0 = _mm512_cvtps_epi32(_mm512_mul_ps(v0, id));
		__m512i q1 = _mm512_cvtps_epi32(_mm512_mul_ps(v1, id));
		const int sum =
		    _mm512_reduce_add_epi32(_mm512_add_epi32(q0, q1));

		y[i].d = quant_float_to_half(d);
		y[i].s = quant_float_to_half(d * (float)sum);
		_mm_storeu_si128((__m128i *)y[i].qs, _mm512_cvtepi32_epi8(q0));
		_mm_storeu_si128(
		    (__m128i *)(y[i].qs + 16), _mm512_cvtepi32_epi8(q1));
	}
}

static void
quantize_q8_K_avx512(const float *x, void *dst, int64_t n)
{
	struct quant_block_q8_K *y = dst;

	for (int64_t i = 0; i < n / QUANT_QK_K; i++, x += QUANT_QK_K) {
		__m512 m = _mm512_setzero_ps();
		float amax, max = 0.0f;

		for (int j = 0; j < QUANT_QK_K; j += 16)
			m = _mm512_max_ps(
			    m, _mm512_abs_ps(_mm512_loadu_ps(x + j)));
		amax = _mm512_reduce_max_ps(m);
		if (amax == 0.0f) {
			memset(&y[i], 0, sizeof(y[i]));
			continue;
		}
		/* The first element of largest magnitude gives the sign. */
		const __m512 vamax = _mm512_set1_ps(amax);
		for (int j = 0; j < QUANT_QK_K; j += 16) {
			__mmask16 k = _mm512_cmp_ps_mask(_mm512_abs_ps(
			    _mm512_loadu_ps(x + j)), vamax, _CMP_EQ_OQ);

			if (k != 0) {
				max = x[j + __builtin_ctz(k)];
				break;
			}
		}
		const float iscale = -127.0f / max;
		const __m512 vis = _mm512_set1_ps(iscale);
		const __m512i top = _mm512_set1_epi32(127);

		for (int g = 0; g < QUANT_QK_K / 16; g++) {
			__m512i q = _mm512_min_epi32(
			    _mm512_cvtps_epi32(_mm512_mul_ps(
				vis, _mm512_loadu_ps(x + 16 * g))),
			    top);

			_mm_storeu_si128((__m128i *)(y[i].qs + 16 * g),
			    _mm512_cvtepi32_epi8(q));
			y[i].bsums[g] = (int16_t)_mm512_reduce_add_epi32(q);
		}
		y[i].d = 1.0f / iscale;
	}
}

static void
fp16_from_fp32_avx512(const float *src, uint16_t *dst, int64_t n)
{
	int64_t i = 0;

	for (; i + 16 <= n; i += 16)
		_mm256_storeu_si256((__m256i *)(dst + i), _mm512_cvtps_ph(
		    _mm512_loadu_ps(src + i), _MM_FROUND_TO_NEAREST_INT));
	if (i < n) {
		__mmask16 k = (__mmask16)((1u << (n - i)) - 1);

		_mm256_mask_storeu_epi16(dst + i, k,
		    _mm512_cvtps_ph(_mm512_maskz_loadu_ps(k, src + i),
			_MM_FROUND_TO_NEAREST_INT));
	}
}

static void
fp32_from_fp16_avx512(const uint16_t *src, float *dst, int64_t n)
{
	int64_t i = 0;

	for (; i + 16 <= n; i += 16)
		_mm512_storeu_ps(dst + i, _mm512_cvtph_ps(
		    _mm256_loadu_si256((const __m256i *)(src + i))));
	if (i < n) {
		__mmask16 k = (__mmask16)((1u << (n - i)) - 1);

		_mm512_mask_storeu_ps(dst + i, k, _mm512_cvtph_ps(
		    _mm256_maskz_loadu_epi16(k, src + i)));
	}
}

/* ------------------------------------------------- float weight types */

/* F32 and BF16 (F16 uses the AVX2 kernel, see the kernel tables). */
enum { FT_F32, FT_BF16 };

/* 16 elements (fewer under mask k) of a float-like row as floats. */
QUANT_INLINE __m512
float_load(int ft, const uint8_t *p, int64_t k, __mmask16 mask, int masked)
{
	const float *pf = (const float *)p + k;
	const uint16_t *ph = (const uint16_t *)p + k;

	if (ft == FT_F32)
		return masked ? _mm512_maskz_loadu_ps(mask, pf) :
		    _mm512_loadu_ps(pf);
	return _mm512_castsi512_ps(_mm512_slli_epi32(_mm512_cvtepu16_epi32(
	    masked ? _mm256_maskz_loadu_epi16(mask, ph) :
	    _mm256_loadu_si256((const __m256i *)ph)), 16));
}

QUANT_INLINE void
float_step(int ft, const struct mm_args *p, int r0, int c0, int R, int C,
    int64_t k, __mmask16 mask, int masked, __m512 acc[4][4])
{
	__m512 a[4];

#pragma GCC unroll 4
	for (int c = 0; c < C; c++)
		a[c] = float_load(
		    ft, p->a + (size_t)(c0 + c) * p->as, k, mask, masked);
#pragma GCC unroll 4
	for (int r = 0; r < R; r++) {
		__m512 w = float_load(
		    ft, p->w + (size_t)(r0 + r) * p->ws, k, mask, masked);

#pragma GCC unroll 4
		for (int c = 0; c < C; c++)
			acc[r][c] = _mm512_fmadd_ps(w, a[c], acc[r][c]);
	}
}

QUANT_INLINE void
float_tile(int ft, const struct mm_args *p, int r0, int c0, int R, int C)
{
	__m512 acc[4][4];
	int64_t k = 0;

#pragma GCC unroll 4
	for (int r = 0; r < R; r++)
#pragma GCC unroll 4
		for (int c = 0; c < C; c++)
			acc[r][c] = _mm512_setzero_ps();
	if (R == 1 && C == 1) {
		/* A lone dot product: four chains hide the FMA latency. */
		const uint8_t *w = p->w + (size_t)r0 * p->ws;
		const uint8_t *a = p->a + (size_t)c0 * p->as;
		__m512 e1 = _mm512_setzero_ps(), e2 = e1, e3 = e1;

		const int es = ft == FT_F32 ? 4 : 2;

		for (; k + 64 <= p->n; k += 64) {
			quant_prefetch(w + (size_t)k * (size_t)es, 64 * es);
			acc[0][0] = _mm512_fmadd_ps(float_load(ft, w, k, 0, 0),
			    float_load(ft, a, k, 0, 0), acc[0][0]);
			e1 = _mm512_fmadd_ps(float_load(ft, w, k + 16, 0, 0),
			    float_load(ft, a, k + 16, 0, 0), e1);
			e2 = _mm512_fmadd_ps(float_load(ft, w, k + 32, 0, 0),
			    float_load(ft, a, k + 32, 0, 0), e2);
			e3 = _mm512_fmadd_ps(float_load(ft, w, k + 48, 0, 0),
			    float_load(ft, a, k + 48, 0, 0), e3);
		}
		acc[0][0] = _mm512_add_ps(_mm512_add_ps(acc[0][0], e1),
		    _mm512_add_ps(e2, e3));
	}
	for (; k + 16 <= p->n; k += 16)
		float_step(ft, p, r0, c0, R, C, k, 0, 0, acc);
	if (k < p->n)
		float_step(ft, p, r0, c0, R, C, k,
		    (__mmask16)((1u << (p->n - k)) - 1), 1, acc);
	store_tile(p, r0, c0, R, C, acc);
}

#define F32_TILE(p, r0, c0, R, C) float_tile(FT_F32, p, r0, c0, R, C)
#define BF16_TILE(p, r0, c0, R, C) float_tile(FT_BF16, p, r0, c0, R, C)
MM_TILE_SET(f32_avx512, F32_TILE)
MM_TILE_SET(bf16_avx512, BF16_TILE)

MM_FLOAT_ENTRY(matmul_f32_avx512, f32_avx512_tiles, 4)
MM_FLOAT_ENTRY(matmul_bf16_avx512, bf16_avx512_tiles, 4)

/* ------------------------------------------------- integer weight types */

#define QUANT_VNNI 0
#define QUANT_SUFFIX _avx512
#include "cpu/quant_avx512_body.h"
#undef QUANT_VNNI
#undef QUANT_SUFFIX

#pragma GCC push_options
#pragma GCC target("avx512vnni")
#define QUANT_VNNI 1
#define QUANT_SUFFIX _avx512vnni
#include "cpu/quant_avx512_body.h"
#undef QUANT_VNNI
#undef QUANT_SUFFIX
#pragma GCC pop_options
