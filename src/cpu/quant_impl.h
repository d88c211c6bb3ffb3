/*
 * Private to the quant module (quant.c and the per-ISA kernel files): the
 * ggml block layouts, scalar fp16 helpers, the table of kernels each
 * instruction set provides, and the loop drivers the SIMD kernel files
 * share.  quant_init() picks one table; everything a table does not
 * accelerate points at the scalar reference functions.
 */
#ifndef ORCD_CPU_QUANT_IMPL_H
#define ORCD_CPU_QUANT_IMPL_H

#include <stddef.h>
#include <stdint.h>
#include <stdlib.h>
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
	if (ax > 0x7f800000) /* NaN: keep the top payload bits, make it quiet */
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

/* ------------------------------------------- shared by the SIMD kernels */

#define QUANT_INLINE static inline __attribute__((always_inline))

/*
 * The weight-streaming loops prefetch this far ahead of what they read:
 * the hardware prefetcher alone left up to half the DRAM bandwidth unused
 * for some block sizes on the machine measured (Q4_0 GEMV 11 -> 20 GB/s).
 */
#define QUANT_PREFETCH_AHEAD 256

/* Prefetches the cache lines of the bytes QUANT_PREFETCH_AHEAD past p. */
QUANT_INLINE void
quant_prefetch(const void *p, int bytes)
{
	const char *c = (const char *)p + QUANT_PREFETCH_AHEAD;

	for (int o = 0; o < bytes; o += 64)
		__builtin_prefetch(c + o, 0, 3);
}

struct mm_args {
	int64_t n;
	const uint8_t *w;
	size_t ws;
	const uint8_t *a;
	size_t as;
	float *out;
	size_t ldo;
	const uint8_t *pack;	/* packed activation columns */
	int64_t u0, u1;		/* the k range, in kernel units, of this pass */
	int accumulate;		/* add into out instead of storing */
};

/* An R x C tile at rows r0.., columns c0.. (float types), or one row r0
 * against the C packed columns starting at c0 (quantized types). */
typedef void mm_tile_fn(const struct mm_args *p, int r0, int c0);
typedef void mm_pack_fn(const struct mm_args *p, int c0, int C, uint8_t *pack);

/*
 * Float weight types: rows in steps of 4, columns in steps of ct (at
 * most 4).  With one or two columns (memory-bound) the weights are read
 * one row at a time, as one sequential stream: interleaving several rows'
 * streams costs up to half the memory bandwidth on the machines measured,
 * except when the rows are short enough that the tile spans 512 bytes
 * (the attention scores: 64 or 128 fp16 per row).
 */
static inline void
mm_drive(const struct mm_args *p, int nr, int nc, mm_tile_fn *const tiles[4][4],
    int ct)
{
	/* Rows within 512 bytes of each other still stream well. */
	const int rstep = nc > 2 || p->ws <= 128 ? 4 : p->ws <= 256 ? 2 : 1;

	for (int cg = 0; cg < nc; cg += 64) {	/* 64 columns stay in L2 */
		const int ce = nc - cg > 64 ? cg + 64 : nc;

		for (int r0 = 0; r0 < nr; r0 += rstep) {
			const int R = nr - r0 < rstep ? nr - r0 : rstep;

			for (int c0 = cg; c0 < ce; c0 += ct) {
				const int C = ce - c0 < ct ? ce - c0 : ct;

				tiles[R - 1][C - 1](p, r0, c0);
			}
		}
	}
}

/* Packed activations up to this size live on the stack. */
#define MM_PACK_STACK (24 * 1024)
#define MM_PACK_COLS 8
/* Weight rows per block, and activation bytes per k-chunk, of a GEMM. */
#define MM_ROW_BLOCK_BYTES (256 * 1024)
#define MM_L1_BUDGET (16 * 1024)

/*
 * Quantized weight types: the activation columns are packed ct at a time
 * into the layout the kernels load directly (pack_bytes per column), then
 * every weight row streams past them, one row at a time: interleaving
 * several rows' streams costs half the memory bandwidth on the machines
 * measured.
 *
 * With several columns (compute-bound) the work is blocked for the
 * caches instead: rows in blocks that stay in L2 while every column tile
 * passes over them, and the k range in chunks whose activations stay in
 * L1 (unit_col_bytes: activation bytes one column reads per unit of
 * unit_elems elements); the row kernels then add into out, and where
 * rows2 is given they take two rows at a time.
 */
static inline void
mm_drive_packed(struct mm_args *p, int nr, int nc, int ct,
    mm_tile_fn *const rows[8], mm_tile_fn *const rows2[8], mm_pack_fn *pack,
    size_t pack_bytes, int64_t unit_elems, size_t unit_col_bytes,
    quant_matmul_fn *fallback)
{
	_Alignas(64) uint8_t stack[MM_PACK_STACK];
	const size_t need = pack_bytes * (size_t)(nc < ct ? nc : ct);
	const int64_t nu = (p->n + unit_elems - 1) / unit_elems;
	uint8_t *buf = stack, *heap = NULL;
	int rb = nr;

	if (need > sizeof(stack)) {
		heap = aligned_alloc(64, (need + 63) & ~(size_t)63);
		if (heap == NULL) {
			fallback(p->n, p->w, p->ws, nr, p->a, p->as, nc, p->out,
			    p->ldo);
			return;
		}
		buf = heap;
	}
	const int blocked = nc >= 4;
	if (blocked) {
		rb = (int)(MM_ROW_BLOCK_BYTES / (p->ws != 0 ? p->ws : 1));
		rb = rb < 1 ? 1 : rb > nr ? nr : rb;
	}
	for (int r0 = 0; r0 < nr; r0 += rb) {
		const int re = nr - r0 < rb ? nr : r0 + rb;

		for (int c0 = 0; c0 < nc; c0 += ct) {
			const int C = nc - c0 < ct ? nc - c0 : ct;
			int64_t ku = nu;

			if (blocked) {
				ku = (int64_t)(MM_L1_BUDGET /
				    ((size_t)C * unit_col_bytes));
				ku = ku < 1 ? 1 : ku > nu ? nu : ku;
			}
			pack(p, c0, C, buf);
			p->pack = buf;
			for (int64_t u0 = 0; u0 < nu; u0 += ku) {
				p->u0 = u0;
				p->u1 = nu - u0 < ku ? nu : u0 + ku;
				p->accumulate = u0 > 0;
				int r = r0;

				/* Rows from L2 may go two at a time,
				 * sharing the activation loads. */
				if (blocked && rows2 != NULL)
					for (; r + 2 <= re; r += 2)
						rows2[C - 1](p, r, c0);
				for (; r < re; r++)
					rows[C - 1](p, r, c0);
			}
		}
	}
	free(heap);
}

/* Instantiates tile functions for every R, C in 1..4 and their table
 * (the extra level expands a macro-built name before pasting). */
#define MM_TILE_SET(name, body) MM_TILE_SET_(name, body)
#define MM_TILE_SET_(name, body)					\
	MM_TILE_ROW(name, body, 1) MM_TILE_ROW(name, body, 2)		\
	MM_TILE_ROW(name, body, 3) MM_TILE_ROW(name, body, 4)		\
	static mm_tile_fn *const name##_tiles[4][4] = {			\
		{ name##_1x1, name##_1x2, name##_1x3, name##_1x4 },	\
		{ name##_2x1, name##_2x2, name##_2x3, name##_2x4 },	\
		{ name##_3x1, name##_3x2, name##_3x3, name##_3x4 },	\
		{ name##_4x1, name##_4x2, name##_4x3, name##_4x4 },	\
	};
#define MM_TILE_ROW(name, body, R)					\
	MM_TILE_ONE(name, body, R, 1) MM_TILE_ONE(name, body, R, 2)	\
	MM_TILE_ONE(name, body, R, 3) MM_TILE_ONE(name, body, R, 4)
#define MM_TILE_ONE(name, body, R, C)					\
	static void							\
	name##_##R##x##C(const struct mm_args *p, int r0, int c0)	\
	{								\
		body(p, r0, c0, R, C);					\
	}

/* Kernels for two rows against C = 1..8 packed columns. */
#define MM_ROW2_SET(name, body) MM_ROW2_SET_(name, body)
#define MM_ROW2_SET_(name, body)					\
	MM_ROW2_ONE(name, body, 1) MM_ROW2_ONE(name, body, 2)		\
	MM_ROW2_ONE(name, body, 3) MM_ROW2_ONE(name, body, 4)		\
	MM_ROW2_ONE(name, body, 5) MM_ROW2_ONE(name, body, 6)		\
	MM_ROW2_ONE(name, body, 7) MM_ROW2_ONE(name, body, 8)		\
	static mm_tile_fn *const name##_rows2[8] = {			\
		name##_r2c1, name##_r2c2, name##_r2c3, name##_r2c4,	\
		name##_r2c5, name##_r2c6, name##_r2c7, name##_r2c8,	\
	};
#define MM_ROW2_ONE(name, body, C)					\
	static void							\
	name##_r2c##C(const struct mm_args *p, int r, int c0)		\
	{								\
		body(p, r, c0, 2, C);					\
	}

/* Row kernels for C = 1..8 packed columns, and their table. */
#define MM_ROW_SET(name, body) MM_ROW_SET_(name, body)
#define MM_ROW_SET_(name, body)						\
	MM_ROW_ONE(name, body, 1) MM_ROW_ONE(name, body, 2)		\
	MM_ROW_ONE(name, body, 3) MM_ROW_ONE(name, body, 4)		\
	MM_ROW_ONE(name, body, 5) MM_ROW_ONE(name, body, 6)		\
	MM_ROW_ONE(name, body, 7) MM_ROW_ONE(name, body, 8)		\
	static mm_tile_fn *const name##_rows[8] = {			\
		name##_c1, name##_c2, name##_c3, name##_c4,		\
		name##_c5, name##_c6, name##_c7, name##_c8,		\
	};
/* The same for C = 1..4 only (kernel sets with 16 vector registers). */
#define MM_ROW_SET4(name, body) MM_ROW_SET4_(name, body)
#define MM_ROW_SET4_(name, body)					\
	MM_ROW_ONE(name, body, 1) MM_ROW_ONE(name, body, 2)		\
	MM_ROW_ONE(name, body, 3) MM_ROW_ONE(name, body, 4)		\
	static mm_tile_fn *const name##_rows[8] = {			\
		name##_c1, name##_c2, name##_c3, name##_c4,		\
		NULL, NULL, NULL, NULL,					\
	};
#define MM_ROW_ONE(name, body, C)					\
	static void							\
	name##_c##C(const struct mm_args *p, int r, int c0)		\
	{								\
		body(p, r, c0, C);					\
	}

#define MM_FLOAT_ENTRY(name, tiles, ct)					\
static void								\
name(int64_t n, const void *w, size_t w_stride, int nr, const void *a,	\
    size_t a_stride, int nc, float *out, size_t ldo)			\
{									\
	const struct mm_args p = { n, w, w_stride, a, a_stride, out, ldo, \
	    NULL, 0, 0, 0 };						\
									\
	mm_drive(&p, nr, nc, tiles, ct);				\
}

/* Quantized types: pack, then rows (fallback: the scalar kernel). */
#define MM_PACKED_ENTRY(name, ct, rows, rows2, pack, pack_bytes,	\
    unit_elems, unit_col_bytes, fallback)				\
static void								\
name(int64_t n, const void *w, size_t w_stride, int nr, const void *a,	\
    size_t a_stride, int nc, float *out, size_t ldo)			\
{									\
	struct mm_args p = { n, w, w_stride, a, a_stride, out, ldo,	\
	    NULL, 0, 0, 0 };						\
									\
	mm_drive_packed(&p, nr, nc, ct, rows, rows2, pack, pack_bytes,	\
	    unit_elems, unit_col_bytes, fallback);			\
}

extern const struct quant_kernels quant_kernels_scalar;
#if defined(__x86_64__) || defined(__i386__)
quant_matmul_fn quant_avx2_matmul_f16;
extern const struct quant_kernels quant_kernels_avx2;
extern const struct quant_kernels quant_kernels_avx512;
extern const struct quant_kernels quant_kernels_avx512vnni;
#endif

#endif
