/*
 * Building blocks of the matrix-product kernels (matmul.cu), in a header so
 * later fused kernels can reuse them: the argument block, staging of weight
 * bytes through shared memory with 16-byte loads whatever the block size,
 * and the activation repacking into an aligned shared-memory layout.
 *
 * Shared-memory layout of one token's activations for a chunk of the k
 * range holding nbm blocks of the activation type (32-bit words):
 *   Q8_0: qs [0, 8 nbm), d (float) [8 nbm, 9 nbm), sum of qs [9 nbm, 10 nbm)
 *   Q8_1: qs [0, 8 nbm), d [8 nbm, 9 nbm), s [9 nbm, 10 nbm)
 *   Q8_K: qs [0, 64 nbm), d [64 nbm, 65 nbm), bsums [65 nbm, 81 nbm)
 *   F16, BF16: the raw 16-bit values, two per word; F32: the floats
 *   (for float types nbm counts elements).
 */
#ifndef ORCD_CUDA_MATMUL_CUH
#define ORCD_CUDA_MATMUL_CUH

#include "common.cuh"
#include "dequant.cuh"

struct cuda_mm_args {
	const uint8_t *w;
	size_t w_stride;
	int n_rows, n_in;
	const uint8_t *w_lo, *w_hi;	/* the bytes of the whole matrix */
	const uint8_t *act;
	size_t act_stride;
	int n_tok;
	float *out;
	size_t ldo;
	const float *bias;
	const float *residual;
	int kc;			/* elements per k chunk */
	int n_chunks;
	int nbm;		/* activation blocks (float types: elements) per chunk */
	int tok_words;		/* shared words per token */
	int rows_per_cta;
	int wpr;		/* GEMV: warps sharing a row (1, 2, 4, 8) */
	int kpart;		/* GEMV: elements of k per warp when wpr > 1 */
};

/* Words per token of the layout above for nbm blocks / elements. */
__host__ __device__ constexpr int
cuda_act_words(int at, int nbm)
{
	return at == ORCD_DTYPE_Q8_0 || at == ORCD_DTYPE_Q8_1 ? 10 * nbm :
	    at == ORCD_DTYPE_Q8_K ? 81 * nbm :
	    at == ORCD_DTYPE_F16 || at == ORCD_DTYPE_BF16 ? (nbm + 1) / 2 : nbm;
}

/* Elements per activation block (float types: 1). */
__host__ __device__ constexpr int
cuda_act_qk(int at)
{
	return at == ORCD_DTYPE_Q8_K ? 256 :
	    at == ORCD_DTYPE_Q8_0 || at == ORCD_DTYPE_Q8_1 ? 32 : 1;
}

/*
 * 16 bytes at the 16-byte aligned p: one vector load when they lie inside
 * [lo, hi), else 16-bit loads of the bytes that do (zeros for the rest),
 * so nothing outside the matrix is ever read.
 */
__device__ __forceinline__ uint4
cuda_mm_ld16(const uint8_t *p, const uint8_t *lo, const uint8_t *hi)
{
	if (p >= lo && p + 16 <= hi)
		return __ldg((const uint4 *)p);

	uint32_t w[4];

#pragma unroll
	for (int i = 0; i < 4; i++) {
		const uint8_t *a = p + 4 * i, *b = a + 2;
		const uint32_t h0 = a >= lo && a + 2 <= hi ?
		    __ldg((const unsigned short *)a) : 0;
		const uint32_t h1 = b >= lo && b + 2 <= hi ?
		    __ldg((const unsigned short *)b) : 0;

		w[i] = h0 | (h1 << 16);
	}
	return make_uint4(w[0], w[1], w[2], w[3]);
}

/*
 * The warp copies nbytes at g (2-byte aligned) into buf with 16-byte
 * loads (at most MAXB bytes); returns where g's first byte landed.
 */
template <int MAXB>
__device__ __forceinline__ int
cuda_mm_stage_warp(uint32_t *buf, const uint8_t *g, int nbytes,
    const uint8_t *lo, const uint8_t *hi)
{
	constexpr int PER_LANE = ((15 + MAXB + 15) / 16 + 31) / 32;
	const int lane = threadIdx.x & 31;
	const int head = (int)((uintptr_t)g & 15);
	const uint8_t *base = g - head;
	const int nch = (head + nbytes + 15) >> 4;
	uint4 v[PER_LANE];

#pragma unroll
	for (int i = 0; i < PER_LANE; i++) {
		const int c = lane + 32 * i;

		if (c < nch)
			v[i] = cuda_mm_ld16(base + 16 * c, lo, hi);
	}
#pragma unroll
	for (int i = 0; i < PER_LANE; i++) {
		const int c = lane + 32 * i;

		if (c < nch)
			((uint4 *)buf)[c] = v[i];
	}
	return head;
}

/*
 * The whole block (all threads) repacks the activations of tokens
 * t0 .. t0 + n_t - 1, k range [kc0, kc1), into act_s (layout above,
 * tok_words per token).  Must be called by every thread of the block.
 */
template <int AT>
__device__ __forceinline__ void
cuda_mm_stage_act(uint32_t *act_s, int tok_words, int nbm, const uint8_t *act,
    size_t act_stride, int t0, int n_t, int kc0, int kc1)
{
	const int tid = threadIdx.x, nthr = blockDim.x;

	if constexpr (AT == ORCD_DTYPE_Q8_0 || AT == ORCD_DTYPE_Q8_1) {
		constexpr int BB = AT == ORCD_DTYPE_Q8_0 ? 34 : 36;
		constexpr int QOFF = AT == ORCD_DTYPE_Q8_0 ? 2 : 4;
		const int nb = (kc1 - kc0) / 32, b0 = kc0 / 32;
		const int total = n_t * nb * 2;

		/* One half block (16 quants) per thread; the two halves of a
		 * block are neighbouring lanes, which add their sums. */
		for (int base = 0; base < total; base += nthr) {
			const int i = base + tid;
			const bool valid = i < total;
			int sum = 0, t = 0, b = 0, h = 0;
			const uint8_t *blk = NULL;

			if (valid) {
				t = i / (2 * nb);
				b = (i % (2 * nb)) >> 1;
				h = i & 1;
				blk = act + (size_t)(t0 + t) * act_stride +
				    (size_t)(b0 + b) * BB;

				const unsigned short *p =
				    (const unsigned short *)(blk + QOFF + 16 * h);
				uint32_t *R = act_s + t * tok_words;

#pragma unroll
				for (int k = 0; k < 4; k++) {
					const uint32_t wv = (uint32_t)__ldg(p + 2 * k) |
					    ((uint32_t)__ldg(p + 2 * k + 1) << 16);

					R[8 * b + 4 * h + k] = wv;
					sum = __dp4a((int)wv, 0x01010101, sum);
				}
				if (h == 0) {
					R[8 * nbm + b] = __float_as_uint(cuda_h2f(
					    __ldg((const unsigned short *)blk)));
					if constexpr (AT == ORCD_DTYPE_Q8_1)
						R[9 * nbm + b] = __float_as_uint(
						    cuda_h2f(__ldg((const unsigned
						    short *)blk + 1)));
				}
			}
			if constexpr (AT == ORCD_DTYPE_Q8_0) {
				sum += __shfl_xor_sync(0xffffffffu, sum, 1);
				if (valid && h == 0)
					act_s[t * tok_words + 9 * nbm + b] =
					    (uint32_t)sum;
			}
		}
	} else if constexpr (AT == ORCD_DTYPE_Q8_K) {
		const int nb = (kc1 - kc0) / 256, b0 = kc0 / 256;
		const int total = n_t * nb * 16;

		for (int i = tid; i < total; i += nthr) {
			const int t = i / (16 * nb), b = (i % (16 * nb)) >> 4;
			const int g = i & 15;
			const uint8_t *blk = act + (size_t)(t0 + t) * act_stride +
			    (size_t)(b0 + b) * 292;
			const uint32_t *p = (const uint32_t *)(blk + 4 + 16 * g);
			uint32_t *R = act_s + t * tok_words;

#pragma unroll
			for (int k = 0; k < 4; k++)
				R[64 * b + 4 * g + k] = __ldg(p + k);
			R[65 * nbm + 16 * b + g] = (uint32_t)(int)
			    (short)__ldg((const unsigned short *)(blk + 260) + g);
			if (g == 0)
				R[64 * nbm + b] = __ldg((const uint32_t *)blk);
		}
	} else {
		/* Float types: word k of the token holds elements kc0 + 2k,
		 * kc0 + 2k + 1 (F16, BF16) or kc0 + k (F32); the tail up to
		 * nbm elements is zero. */
		constexpr int EPW = AT == ORCD_DTYPE_F32 ? 1 : 2;
		const int nw = (nbm + EPW - 1) / EPW;
		const int total = n_t * nw;

		for (int i = tid; i < total; i += nthr) {
			const int t = i / nw, k = i % nw;
			const uint8_t *row = act + (size_t)(t0 + t) * act_stride;
			uint32_t v;

			if constexpr (EPW == 1) {
				v = kc0 + k < kc1 ?
				    __ldg((const uint32_t *)row + kc0 + k) : 0;
			} else {
				const int e = kc0 + 2 * k;
				const unsigned short *p = (const unsigned short *)row;

				v = (e < kc1 ? (uint32_t)__ldg(p + e) : 0) |
				    (e + 1 < kc1 ? (uint32_t)__ldg(p + e + 1) << 16 : 0);
			}
			act_s[t * tok_words + k] = v;
		}
	}
}

/* out = dot (+ bias), then residual + that, as the CPU adds them. */
__device__ __forceinline__ void
cuda_mm_store(const cuda_mm_args &a, int t, int r, float v)
{
	const size_t i = (size_t)t * a.ldo + r;

	if (a.bias != NULL)
		v = __fadd_rn(v, a.bias[r]);
	if (a.residual != NULL)
		v = __fadd_rn(a.residual[i], v);
	a.out[i] = v;
}

#endif
