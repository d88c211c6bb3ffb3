/*
 * The ggml weight blocks on the GPU, in two forms:
 *
 * - cuda_wq<T>: integer decoding of a block staged in shared memory (at
 *   any byte offset), 32 elements at a time as 8 words of packed bytes in
 *   element order, plus the block's scales, for the dp4a dot products of
 *   the matrix kernels.  Values are unsigned where the format stores an
 *   offset (Q4_0 -8, Q5_0 -16, Q6_K -32): the kernels subtract
 *   OFF * sum(activations), which gives the CPU's integer sums exactly.
 * - cuda_dequant_elem<T>: one element of a row in global memory as a float,
 *   evaluating ggml's dequantize_row expressions in the CPU's order and
 *   without FMA contraction (src/cpu/quant.c), for the embedding lookup.
 */
#ifndef ORCD_CUDA_DEQUANT_CUH
#define ORCD_CUDA_DEQUANT_CUH

#include "common.cuh"

/* Bits 0..3 of b to bit 0 of bytes 0..3 (no carries: distinct products). */
__device__ __forceinline__ uint32_t
cuda_spread4(uint32_t b)
{
	return ((b & 0xfu) * 0x00204081u) & 0x01010101u;
}

/* The 6-bit scale and min of sub-block j of a Q4_K / Q5_K block, from its
 * 12 scale bytes as three words (quant_k_scale_min, without indexing an
 * array by j so nothing spills to local memory). */
__device__ __forceinline__ void
cuda_k_scale_min(const uint32_t sw[3], int j, int *sc, int *m)
{
	if (j < 4) {
		*sc = cuda_byte(sw[0], j) & 63;
		*m = cuda_byte(sw[1], j) & 63;
	} else {
		const int k = j - 4, b = cuda_byte(sw[2], k);

		*sc = (b & 0x0f) | ((cuda_byte(sw[0], k) >> 6) << 4);
		*m = (b >> 4) | ((cuda_byte(sw[1], k) >> 6) << 4);
	}
}

template <int T> struct cuda_wq;

/* Legacy 32-element blocks: SUBS = 1, sub-block 0 is the block. */
template <> struct cuda_wq<ORCD_DTYPE_Q4_0> {
	static constexpr int QK = 32, BB = 18, OFF = 8;
	static constexpr bool MIN = false;

	static __device__ __forceinline__ void
	q32(const uint32_t *b, int o, int, uint32_t q[8])
	{
		uint32_t w[4];

		cuda_lds_words<4>(b, o + 2, w);
#pragma unroll
		for (int j = 0; j < 4; j++) {
			q[j] = w[j] & 0x0f0f0f0fu;
			q[j + 4] = (w[j] >> 4) & 0x0f0f0f0fu;
		}
	}
	static __device__ __forceinline__ float
	d(const uint32_t *b, int o) { return cuda_h2f(cuda_lds_u16(b, o)); }
	static __device__ __forceinline__ float
	m(const uint32_t *, int) { return 0.0f; }
};

template <> struct cuda_wq<ORCD_DTYPE_Q4_1> {
	static constexpr int QK = 32, BB = 20, OFF = 0;
	static constexpr bool MIN = true;

	static __device__ __forceinline__ void
	q32(const uint32_t *b, int o, int, uint32_t q[8])
	{
		uint32_t w[4];

		cuda_lds_words<4>(b, o + 4, w);
#pragma unroll
		for (int j = 0; j < 4; j++) {
			q[j] = w[j] & 0x0f0f0f0fu;
			q[j + 4] = (w[j] >> 4) & 0x0f0f0f0fu;
		}
	}
	static __device__ __forceinline__ float
	d(const uint32_t *b, int o) { return cuda_h2f(cuda_lds_u16(b, o)); }
	static __device__ __forceinline__ float
	m(const uint32_t *b, int o) { return cuda_h2f(cuda_lds_u16(b, o + 2)); }
};

template <> struct cuda_wq<ORCD_DTYPE_Q5_0> {
	static constexpr int QK = 32, BB = 22, OFF = 16;
	static constexpr bool MIN = false;

	static __device__ __forceinline__ void
	q32(const uint32_t *b, int o, int, uint32_t q[8])
	{
		uint32_t w[4];
		const uint32_t qh = cuda_lds_u32(b, o + 2);

		cuda_lds_words<4>(b, o + 6, w);
#pragma unroll
		for (int j = 0; j < 4; j++) {
			q[j] = (w[j] & 0x0f0f0f0fu) |
			    (cuda_spread4(qh >> (4 * j)) << 4);
			q[j + 4] = ((w[j] >> 4) & 0x0f0f0f0fu) |
			    (cuda_spread4(qh >> (16 + 4 * j)) << 4);
		}
	}
	static __device__ __forceinline__ float
	d(const uint32_t *b, int o) { return cuda_h2f(cuda_lds_u16(b, o)); }
	static __device__ __forceinline__ float
	m(const uint32_t *, int) { return 0.0f; }
};

template <> struct cuda_wq<ORCD_DTYPE_Q5_1> {
	static constexpr int QK = 32, BB = 24, OFF = 0;
	static constexpr bool MIN = true;

	static __device__ __forceinline__ void
	q32(const uint32_t *b, int o, int, uint32_t q[8])
	{
		uint32_t w[4];
		const uint32_t qh = cuda_lds_u32(b, o + 4);

		cuda_lds_words<4>(b, o + 8, w);
#pragma unroll
		for (int j = 0; j < 4; j++) {
			q[j] = (w[j] & 0x0f0f0f0fu) |
			    (cuda_spread4(qh >> (4 * j)) << 4);
			q[j + 4] = ((w[j] >> 4) & 0x0f0f0f0fu) |
			    (cuda_spread4(qh >> (16 + 4 * j)) << 4);
		}
	}
	static __device__ __forceinline__ float
	d(const uint32_t *b, int o) { return cuda_h2f(cuda_lds_u16(b, o)); }
	static __device__ __forceinline__ float
	m(const uint32_t *b, int o) { return cuda_h2f(cuda_lds_u16(b, o + 2)); }
};

template <> struct cuda_wq<ORCD_DTYPE_Q8_0> {
	static constexpr int QK = 32, BB = 34, OFF = 0;
	static constexpr bool MIN = false;

	static __device__ __forceinline__ void
	q32(const uint32_t *b, int o, int, uint32_t q[8])
	{
		cuda_lds_words<8>(b, o + 2, q);
	}
	static __device__ __forceinline__ float
	d(const uint32_t *b, int o) { return cuda_h2f(cuda_lds_u16(b, o)); }
	static __device__ __forceinline__ float
	m(const uint32_t *, int) { return 0.0f; }
};

/*
 * K-quant super-blocks of 256: sub-block s holds elements 32s..32s+31.
 * Q4_K / Q5_K: integer scale and min per sub-block (scale_min); Q6_K:
 * an int8 scale per 16 elements (scale16: sub-block s has 2s and 2s+1).
 */
template <> struct cuda_wq<ORCD_DTYPE_Q4_K> {
	static constexpr int QK = 256, BB = 144, OFF = 0;

	static __device__ __forceinline__ void
	q32(const uint32_t *b, int o, int s, uint32_t q[8])
	{
		uint32_t w[8];

		cuda_lds_words<8>(b, o + 16 + 32 * (s >> 1), w);
#pragma unroll
		for (int j = 0; j < 8; j++)
			q[j] = (w[j] >> (4 * (s & 1))) & 0x0f0f0f0fu;
	}
	static __device__ __forceinline__ void
	scale_min(const uint32_t *b, int o, int s, int *sc, int *m)
	{
		uint32_t sw[3];

		cuda_lds_words<3>(b, o + 4, sw);
		cuda_k_scale_min(sw, s, sc, m);
	}
	static __device__ __forceinline__ float
	d(const uint32_t *b, int o) { return cuda_h2f(cuda_lds_u16(b, o)); }
	static __device__ __forceinline__ float
	dmin(const uint32_t *b, int o) { return cuda_h2f(cuda_lds_u16(b, o + 2)); }
};

template <> struct cuda_wq<ORCD_DTYPE_Q5_K> {
	static constexpr int QK = 256, BB = 176, OFF = 0;

	static __device__ __forceinline__ void
	q32(const uint32_t *b, int o, int s, uint32_t q[8])
	{
		uint32_t w[8], h[8];

		cuda_lds_words<8>(b, o + 48 + 32 * (s >> 1), w);
		cuda_lds_words<8>(b, o + 16, h);
#pragma unroll
		for (int j = 0; j < 8; j++)
			q[j] = ((w[j] >> (4 * (s & 1))) & 0x0f0f0f0fu) |
			    (((h[j] >> s) & 0x01010101u) << 4);
	}
	static __device__ __forceinline__ void
	scale_min(const uint32_t *b, int o, int s, int *sc, int *m)
	{
		uint32_t sw[3];

		cuda_lds_words<3>(b, o + 4, sw);
		cuda_k_scale_min(sw, s, sc, m);
	}
	static __device__ __forceinline__ float
	d(const uint32_t *b, int o) { return cuda_h2f(cuda_lds_u16(b, o)); }
	static __device__ __forceinline__ float
	dmin(const uint32_t *b, int o) { return cuda_h2f(cuda_lds_u16(b, o + 2)); }
};

template <> struct cuda_wq<ORCD_DTYPE_Q6_K> {
	static constexpr int QK = 256, BB = 210, OFF = 32;

	/* s = 4h + k: elements 128h + 32k + l take the low (k < 2) or high
	 * nibble of ql[64h + 32(k & 1) + l] and bits 2k of qh[32h + l]. */
	static __device__ __forceinline__ void
	q32(const uint32_t *b, int o, int s, uint32_t q[8])
	{
		const int h = s >> 2, k = s & 3;
		uint32_t l[8], hb[8];

		cuda_lds_words<8>(b, o + 64 * h + 32 * (k & 1), l);
		cuda_lds_words<8>(b, o + 128 + 32 * h, hb);
#pragma unroll
		for (int j = 0; j < 8; j++)
			q[j] = ((l[j] >> (4 * (k >> 1))) & 0x0f0f0f0fu) |
			    (((hb[j] >> (2 * k)) & 0x03030303u) << 4);
	}
	/* Scales of elements 32s..32s+15 and 32s+16..32s+31. */
	static __device__ __forceinline__ void
	scale16(const uint32_t *b, int o, int s, int *lo, int *hi)
	{
		const int h = s >> 2, k = s & 3;

		*lo = cuda_lds_s8(b, o + 192 + 8 * h + 2 * k);
		*hi = cuda_lds_s8(b, o + 192 + 8 * h + 2 * k + 1);
	}
	static __device__ __forceinline__ float
	d(const uint32_t *b, int o) { return cuda_h2f(cuda_lds_u16(b, o + 208)); }
};

/* ------------------------------------------------- element dequantization */

__device__ __forceinline__ uint32_t
cuda_ldg_u8(const uint8_t *p)
{
	return __ldg(p);
}

__device__ __forceinline__ uint32_t
cuda_ldg_u16(const uint8_t *p)
{
	return __ldg((const unsigned short *)p);
}

__device__ __forceinline__ float
cuda_ldg_f16(const uint8_t *p)
{
	return cuda_f16_to_f32((uint16_t)cuda_ldg_u16(p));
}

/* Scale and min of sub-block j of a Q4_K / Q5_K block in global memory. */
__device__ __forceinline__ void
cuda_k_scale_min_g(const uint8_t *s, int j, int *sc, int *m)
{
	if (j < 4) {
		*sc = (int)(cuda_ldg_u8(s + j) & 63);
		*m = (int)(cuda_ldg_u8(s + j + 4) & 63);
	} else {
		const int b = (int)cuda_ldg_u8(s + j + 4);

		*sc = (b & 0x0f) | (((int)cuda_ldg_u8(s + j - 4) >> 6) << 4);
		*m = (b >> 4) | (((int)cuda_ldg_u8(s + j) >> 6) << 4);
	}
}

/* Element i of a row of type T (2-byte aligned), as quant_dequantize_row. */
template <int T>
__device__ __forceinline__ float
cuda_dequant_elem(const uint8_t *row, int i)
{
	if constexpr (T == ORCD_DTYPE_F32) {
		return __uint_as_float(cuda_ldg_u16(row + 4 * i) |
		    (cuda_ldg_u16(row + 4 * i + 2) << 16));
	} else if constexpr (T == ORCD_DTYPE_F16) {
		return cuda_ldg_f16(row + 2 * i);
	} else if constexpr (T == ORCD_DTYPE_BF16) {
		return cuda_bf16_to_f32(cuda_ldg_u16(row + 2 * i));
	} else if constexpr (T == ORCD_DTYPE_Q4_0 || T == ORCD_DTYPE_Q4_1 ||
	    T == ORCD_DTYPE_Q5_0 || T == ORCD_DTYPE_Q5_1 ||
	    T == ORCD_DTYPE_Q8_0) {
		constexpr int BB = cuda_blk_bytes(T);
		const uint8_t *b = row + (size_t)(i / 32) * BB;
		const int j = i % 32;
		const float d = cuda_ldg_f16(b);

		if constexpr (T == ORCD_DTYPE_Q8_0)
			return __fmul_rn((float)(int8_t)cuda_ldg_u8(b + 2 + j), d);
		constexpr int QS = T == ORCD_DTYPE_Q4_0 ? 2 :
		    T == ORCD_DTYPE_Q4_1 ? 4 : T == ORCD_DTYPE_Q5_0 ? 6 : 8;
		const uint32_t byte = cuda_ldg_u8(b + QS + (j & 15));
		int q = (int)(j < 16 ? byte & 0x0f : byte >> 4);

		if constexpr (T == ORCD_DTYPE_Q5_0 || T == ORCD_DTYPE_Q5_1) {
			const uint8_t *qh = b + (T == ORCD_DTYPE_Q5_0 ? 2 : 4);
			const uint32_t h = cuda_ldg_u16(qh) |
			    (cuda_ldg_u16(qh + 2) << 16);

			q |= (int)((h >> j) & 1) << 4;
		}
		if constexpr (T == ORCD_DTYPE_Q4_0)
			return __fmul_rn((float)(q - 8), d);
		if constexpr (T == ORCD_DTYPE_Q5_0)
			return __fmul_rn((float)(q - 16), d);
		/* Q4_1 / Q5_1: q * d + m */
		return __fadd_rn(__fmul_rn((float)q, d), cuda_ldg_f16(b + 2));
	} else if constexpr (T == ORCD_DTYPE_Q4_K || T == ORCD_DTYPE_Q5_K) {
		constexpr int BB = cuda_blk_bytes(T);
		const uint8_t *b = row + (size_t)(i / 256) * BB;
		const int e = i % 256, p = e / 64, l = e % 64, sub = 2 * p + l / 32;
		const uint8_t *qs = b + (T == ORCD_DTYPE_Q4_K ? 16 : 48) + 32 * p;
		const uint32_t byte = cuda_ldg_u8(qs + (l & 31));
		int q = (int)(l < 32 ? byte & 0x0f : byte >> 4), sc, m;

		if constexpr (T == ORCD_DTYPE_Q5_K)
			q += (int)((cuda_ldg_u8(b + 16 + (l & 31)) >> sub) & 1) << 4;
		cuda_k_scale_min_g(b + 4, sub, &sc, &m);
		const float d1 = __fmul_rn(cuda_ldg_f16(b), (float)sc);
		const float m1 = __fmul_rn(cuda_ldg_f16(b + 2), (float)m);

		return __fsub_rn(__fmul_rn(d1, (float)q), m1);
	} else if constexpr (T == ORCD_DTYPE_Q6_K) {
		const uint8_t *b = row + (size_t)(i / 256) * 210;
		const int e = i % 256, h = e / 128, r = e % 128;
		const int k = r / 32, l = r % 32;
		const uint32_t lo = cuda_ldg_u8(b + 64 * h + l + 32 * (k & 1));
		const uint32_t hi = (cuda_ldg_u8(b + 128 + 32 * h + l) >>
		    (2 * k)) & 3;
		const int q = (int)((k < 2 ? lo & 0x0f : lo >> 4) | (hi << 4)) - 32;
		const int sc = (int)(int8_t)cuda_ldg_u8(b + 192 + 8 * h + l / 16 +
		    2 * k);

		return __fmul_rn(__fmul_rn(cuda_ldg_f16(b + 208), (float)sc),
		    (float)q);
	}
	return 0.0f;
}

#endif
