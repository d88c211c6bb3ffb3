/*
 * Matrix products y[t][r] = dot(weight row r, activation row t) for every
 * weight type, with the CPU's block semantics (quant_vec_dot): exact
 * integer dots per block against the Q8 activations, scaled per block in
 * the CPU's order without FMA contraction; F16 / BF16 / F32 with f32
 * accumulation.  Only the order of the float sums over blocks differs.
 *
 * Two kernels:
 * - GEMV (n_tok <= 8, decode): a warp per weight row; the row streams
 *   through a per-warp shared buffer with coalesced 16-byte loads (blocks
 *   of 18, 22 or 34 bytes are not 16-byte aligned in memory, so no lane
 *   could load its block with vector loads directly); each weight block is
 *   decoded once and used for all tokens.  Legacy types: a lane per block;
 *   K-quants: eight lanes per super-block, one per 32-element sub-block,
 *   whose integer sums are added across the eight lanes before the float
 *   scaling, as the CPU does.
 * - Tile (n_tok > 8, prefill): a 64-row x 64-token tile per block.  The
 *   weights of the tile's rows and the activations of its tokens are
 *   staged chunk by chunk along k; a lane is a token, so every weight word
 *   is a shared-memory broadcast decoded once per warp for 32 tokens, and
 *   the weights are read from memory once per 64 tokens.
 */
#include <stdlib.h>

#include "orcd/cuda_ops.h"
#include "matmul.cuh"

#define MM_THREADS 256
#define MM_WARPS (MM_THREADS / 32)

/* GEMV: bytes of one row per pass through a warp's buffer, the buffer
 * (slack for the 16-byte alignment of the start, the rounding of the
 * end and the one-word over-read of cuda_lds_words), and the shared
 * memory the activations may take. */
#define GEMV_PASS 2048
#define GEMV_WBUF (GEMV_PASS + 64)
#define GEMV_ACT_BUDGET (30 * 1024)

/* Tile kernel geometry: 64 rows (16 per warp) x 64 tokens (32 per warp). */
#define TILE_ROWS 64
#define TILE_TOKS 64
#define TILE_RM 16

namespace {

__host__ __device__ constexpr bool
mm_is_float(int wt)
{
	return wt == ORCD_DTYPE_F32 || wt == ORCD_DTYPE_F16 ||
	    wt == ORCD_DTYPE_BF16;
}

__host__ __device__ constexpr bool
mm_is_k(int wt)
{
	return wt == ORCD_DTYPE_Q4_K || wt == ORCD_DTYPE_Q5_K ||
	    wt == ORCD_DTYPE_Q6_K;
}

/* GEMV blocks per pass: whole steps (32 blocks, or 4 super-blocks). */
__host__ __device__ constexpr int
gemv_pass_blocks(int wt)
{
	return mm_is_k(wt) ?
	    (GEMV_PASS / (4 * cuda_blk_bytes(wt)) > 0 ?
	    GEMV_PASS / (4 * cuda_blk_bytes(wt)) * 4 : 4) :
	    (GEMV_PASS / (32 * cuda_blk_bytes(wt)) > 0 ?
	    GEMV_PASS / (32 * cuda_blk_bytes(wt)) * 32 : 32);
}

/* Tile kernel: elements of k per chunk. */
__host__ __device__ constexpr int
tile_kc(int wt)
{
	return wt == ORCD_DTYPE_F32 ? 64 : mm_is_float(wt) ? 128 : 256;
}

__host__ __device__ constexpr int
tile_chunk_bytes(int wt)
{
	return tile_kc(wt) / cuda_blk_elems(wt) * cuda_blk_bytes(wt);
}

/* 16-byte units per staged row (one more for the over-read). */
__host__ __device__ constexpr int
tile_row16(int wt)
{
	return (15 + tile_chunk_bytes(wt) + 15) / 16 + 1;
}

__host__ __device__ constexpr int
tile_tok_words(int wt)
{
	return cuda_act_words(cuda_dot_type(wt),
	    tile_kc(wt) / cuda_act_qk(cuda_dot_type(wt))) | 1;
}

__host__ __device__ constexpr int
tile_smem_bytes(int wt)
{
	return TILE_TOKS * tile_tok_words(wt) * 4 +
	    TILE_ROWS * tile_row16(wt) * 16 + TILE_ROWS * 4;
}

/* ------------------------------------------------------ block products */

/* Q8 activations of one block in registers. */
struct mm_act_blk {
	uint32_t q[8];
	float d;
	uint32_t x;	/* Q8_0: sum of the quants; Q8_1: s as float bits */
};

/* A legacy block's contribution, as dot_q4_0 .. dot_q8_0 on the CPU. */
template <int WT>
__device__ __forceinline__ float
mm_legacy_dot(const uint32_t q[8], float wd, float wm, const mm_act_blk &a)
{
	int sumi = 0;

#pragma unroll
	for (int j = 0; j < 8; j++)
		sumi = __dp4a((int)q[j], (int)a.q[j], sumi);
	if constexpr (cuda_wq<WT>::OFF != 0)
		sumi -= cuda_wq<WT>::OFF * (int)a.x;

	float c = __fmul_rn((float)sumi, __fmul_rn(wd, a.d));

	if constexpr (cuda_wq<WT>::MIN)
		c = __fadd_rn(c, __fmul_rn(wm, __uint_as_float(a.x)));
	return c;
}

/*
 * Integer parts of sub-block s of a K-quant super-block against the
 * activations av (its 32 quants) and bs0, bs1 (their two bsums): isum
 * gets the scaled dot, msum the min term (Q4_K, Q5_K).
 */
template <int WT>
__device__ __forceinline__ void
mm_k_sub(const uint32_t *wb, int o, int s, const uint32_t av[8], int bs0,
    int bs1, int *isum, int *msum)
{
	uint32_t q[8];
	int d0 = 0, d1 = 0;

	cuda_wq<WT>::q32(wb, o, s, q);
#pragma unroll
	for (int j = 0; j < 4; j++) {
		d0 = __dp4a((int)q[j], (int)av[j], d0);
		d1 = __dp4a((int)q[j + 4], (int)av[j + 4], d1);
	}
	if constexpr (WT == ORCD_DTYPE_Q6_K) {
		int lo, hi;

		cuda_wq<ORCD_DTYPE_Q6_K>::scale16(wb, o, s, &lo, &hi);
		*isum += lo * (d0 - 32 * bs0) + hi * (d1 - 32 * bs1);
	} else {
		int sc, m;

		cuda_wq<WT>::scale_min(wb, o, s, &sc, &m);
		*isum += sc * (d0 + d1);
		*msum += m * (bs0 + bs1);
	}
}

/* A super-block's contribution from its integer sums (dot_q4_K ..). */
template <int WT>
__device__ __forceinline__ float
mm_k_final(const uint32_t *wb, int o, int isum, int msum, float ad)
{
	if constexpr (WT == ORCD_DTYPE_Q6_K)
		return __fmul_rn(__fmul_rn(ad, cuda_wq<WT>::d(wb, o)),
		    (float)isum);
	else
		return __fmul_rn(ad, __fsub_rn(
		    __fmul_rn(cuda_wq<WT>::d(wb, o), (float)isum),
		    __fmul_rn(cuda_wq<WT>::dmin(wb, o), (float)msum)));
}

/* Float weights: G elements from 4 words at byte offset o. */
template <int WT>
__device__ __forceinline__ void
mm_float_w(const uint32_t *wb, int o, float *f)
{
	uint32_t w[4];

	cuda_lds_words<4>(wb, o, w);
#pragma unroll
	for (int i = 0; i < 4; i++) {
		if constexpr (WT == ORCD_DTYPE_F32) {
			f[i] = __uint_as_float(w[i]);
		} else if constexpr (WT == ORCD_DTYPE_F16) {
			f[2 * i] = cuda_h2f(w[i] & 0xffffu);
			f[2 * i + 1] = cuda_h2f(w[i] >> 16);
		} else {
			f[2 * i] = cuda_bf16_to_f32(w[i] & 0xffffu);
			f[2 * i + 1] = cuda_bf16_to_f32(w[i] >> 16);
		}
	}
}

/* Activation words of a float type to G floats. */
template <int WT>
__device__ __forceinline__ void
mm_float_a(const uint32_t w[4], float *f)
{
#pragma unroll
	for (int i = 0; i < 4; i++) {
		if constexpr (WT == ORCD_DTYPE_F32) {
			f[i] = __uint_as_float(w[i]);
		} else if constexpr (WT == ORCD_DTYPE_F16) {
			f[2 * i] = cuda_h2f(w[i] & 0xffffu);
			f[2 * i + 1] = cuda_h2f(w[i] >> 16);
		} else {
			f[2 * i] = cuda_bf16_to_f32(w[i] & 0xffffu);
			f[2 * i + 1] = cuda_bf16_to_f32(w[i] >> 16);
		}
	}
}

/* ------------------------------------------------------------- GEMV */

/*
 * acc[t] += this lane's part of dot(row, token t) over k in [kc0, kc1),
 * inside the staged activation chunk that starts at kbase.
 */
template <int WT, int NT>
__device__ __forceinline__ void
gemv_row(const cuda_mm_args &a, const uint32_t *act_s, uint32_t *wbuf,
    const uint8_t *row, int kbase, int kc0, int kc1, float acc[NT])
{
	const int lane = threadIdx.x & 31;
	const int nbm = a.nbm, tw = a.tok_words;

	if constexpr (mm_is_float(WT)) {
		constexpr int ES = cuda_blk_bytes(WT), G = 16 / ES;
		constexpr int PE = GEMV_PASS / ES;

		for (int pe = kc0; pe < kc1; pe += PE) {
			const int ne = min(PE, kc1 - pe);
			const int head = cuda_mm_stage_warp<GEMV_PASS>(wbuf,
			    row + (size_t)pe * ES, ne * ES, a.w_lo, a.w_hi);

			__syncwarp();
			for (int st = 0; st < ne; st += 32 * G) {
				const int e = st + lane * G;

				if (e >= ne)
					continue;
				float wf[G];
				mm_float_w<WT>(wbuf, head + e * ES, wf);
				/* word offset of element pe + e in the chunk */
				const int ao = (pe - kbase + e) / (ES == 4 ? 1 : 2);
#pragma unroll
				for (int t = 0; t < NT; t++) {
					const uint4 v = *(const uint4 *)(act_s +
					    t * tw + ao);
					const uint32_t vw[4] = { v.x, v.y, v.z, v.w };
					float af[G];

					mm_float_a<WT>(vw, af);
					if (e + G <= ne) {
#pragma unroll
						for (int i = 0; i < G; i++)
							acc[t] = fmaf(wf[i], af[i], acc[t]);
					} else {
#pragma unroll
						for (int i = 0; i < G; i++)
							if (e + i < ne)
								acc[t] = fmaf(wf[i], af[i],
								    acc[t]);
					}
				}
			}
			__syncwarp();
		}
	} else if constexpr (!mm_is_k(WT)) {
		constexpr int BB = cuda_blk_bytes(WT), PB = gemv_pass_blocks(WT);
		const int b0 = kc0 / 32, nb = (kc1 - kc0) / 32;
		const int ab0 = (kc0 - kbase) / 32;

		for (int pb = 0; pb < nb; pb += PB) {
			const int nbp = min(PB, nb - pb);
			const int head = cuda_mm_stage_warp<PB * BB>(wbuf,
			    row + (size_t)(b0 + pb) * BB, nbp * BB, a.w_lo,
			    a.w_hi);

			__syncwarp();
			for (int st = 0; st < nbp; st += 32) {
				const int blk = st + lane;

				if (blk >= nbp)
					continue;
				const int o = head + blk * BB, ab = ab0 + pb + blk;
				uint32_t q[8];

				cuda_wq<WT>::q32(wbuf, o, 0, q);
				const float wd = cuda_wq<WT>::d(wbuf, o);
				const float wm = cuda_wq<WT>::m(wbuf, o);
#pragma unroll
				for (int t = 0; t < NT; t++) {
					const uint32_t *R = act_s + t * tw;
					const uint4 x0 = *(const uint4 *)(R + 8 * ab);
					const uint4 x1 = *(const uint4 *)(R + 8 * ab + 4);
					mm_act_blk ab_ = {
					    { x0.x, x0.y, x0.z, x0.w,
					      x1.x, x1.y, x1.z, x1.w },
					    __uint_as_float(R[8 * nbm + ab]),
					    R[9 * nbm + ab] };

					acc[t] += mm_legacy_dot<WT>(q, wd, wm, ab_);
				}
			}
			__syncwarp();
		}
	} else {
		constexpr int BB = cuda_blk_bytes(WT), PB = gemv_pass_blocks(WT);
		const int b0 = kc0 / 256, nb = (kc1 - kc0) / 256;
		const int ab0 = (kc0 - kbase) / 256;
		const int s = lane & 7;

		for (int pb = 0; pb < nb; pb += PB) {
			const int nbp = min(PB, nb - pb);
			const int head = cuda_mm_stage_warp<PB * BB>(wbuf,
			    row + (size_t)(b0 + pb) * BB, nbp * BB, a.w_lo,
			    a.w_hi);

			__syncwarp();
			for (int st = 0; st < nbp; st += 4) {
				const int blk = st + (lane >> 3);
				const bool valid = blk < nbp;
				const int o = head + (valid ? blk : 0) * BB;
				const int ab = ab0 + pb + (valid ? blk : 0);

#pragma unroll
				for (int t = 0; t < NT; t++) {
					const uint32_t *R = act_s + t * tw;
					const uint4 x0 = *(const uint4 *)(R + 64 * ab + 8 * s);
					const uint4 x1 = *(const uint4 *)(R + 64 * ab + 8 * s + 4);
					const uint32_t av[8] = { x0.x, x0.y, x0.z,
					    x0.w, x1.x, x1.y, x1.z, x1.w };
					const int *bs = (const int *)R + 65 * nbm +
					    16 * ab + 2 * s;
					int isum = 0, msum = 0;

					mm_k_sub<WT>(wbuf, o, s, av, bs[0], bs[1],
					    &isum, &msum);
					if (!valid)
						isum = msum = 0;
#pragma unroll
					for (int x = 4; x > 0; x >>= 1) {
						isum += __shfl_xor_sync(0xffffffffu,
						    isum, x);
						msum += __shfl_xor_sync(0xffffffffu,
						    msum, x);
					}
					if (valid && s == 0)
						acc[t] += mm_k_final<WT>(wbuf, o, isum,
						    msum, __uint_as_float(
						    R[64 * nbm + ab]));
				}
			}
			__syncwarp();
		}
	}
}

/*
 * Rows are spread over the warps, one row per warp at a time (wpr = 1),
 * or a row over wpr warps, each taking a part of k, when there are too few
 * rows to keep the GPU busy; the parts meet in shared memory and are added
 * in order.  A long k is staged in chunks (then wpr = 1 and each warp has
 * one row, so its partial sums carry over between chunks).
 */
template <int WT, int NT>
__global__ void __launch_bounds__(MM_THREADS, NT <= 2 ? 4 : 2)
gemv_kernel(const cuda_mm_args a)
{
	extern __shared__ uint4 mm_smem4[];
	__shared__ float part_sum[MM_WARPS][NT];
	uint32_t *smem = (uint32_t *)mm_smem4;
	constexpr int AT = cuda_dot_type(WT);
	const int warp = threadIdx.x >> 5, lane = threadIdx.x & 31;
	uint32_t *act_s = smem;
	uint32_t *wbuf = smem + NT * a.tok_words + warp * (GEMV_WBUF / 4);
	const int wpr = a.wpr, part = warp % wpr, slot = warp / wpr;
	const int row0 = blockIdx.x * a.rows_per_cta;
	const int row_end = min(row0 + a.rows_per_cta, a.n_rows);
	const int n_t = min(a.n_tok, NT);
	float acc[NT];

#pragma unroll
	for (int t = 0; t < NT; t++)
		acc[t] = 0.0f;
	for (int c = 0; c < a.n_chunks; c++) {
		const int kc0 = c * a.kc, kc1 = min(kc0 + a.kc, a.n_in);
		const int k0 = wpr > 1 ? min(kc0 + part * a.kpart, kc1) : kc0;
		const int k1 = wpr > 1 ? min(k0 + a.kpart, kc1) : kc1;

		if (c > 0)
			__syncthreads();
		cuda_mm_stage_act<AT>(act_s, a.tok_words, a.nbm, a.act,
		    a.act_stride, 0, n_t, kc0, kc1);
		__syncthreads();
		for (int r = row0 + slot; r < row_end; r += MM_WARPS / wpr) {
			if (a.n_chunks == 1) {
#pragma unroll
				for (int t = 0; t < NT; t++)
					acc[t] = 0.0f;
			}
			gemv_row<WT, NT>(a, act_s, wbuf,
			    a.w + (size_t)r * a.w_stride, kc0, k0, k1, acc);
			if (c < a.n_chunks - 1)
				continue;
#pragma unroll
			for (int t = 0; t < NT; t++) {
				const float v = cuda_warp_sum(acc[t]);

				if (lane == t && t < a.n_tok) {
					if (wpr == 1)
						cuda_mm_store(a, t, r, v);
					else
						part_sum[warp][t] = v;
				}
			}
		}
	}
	if (wpr == 1)
		return;
	/* wpr > 1: one row per slot (the host ensures it). */
	__syncthreads();
	if (threadIdx.x < (MM_WARPS / wpr) * NT) {
		const int s = threadIdx.x / NT, t = threadIdx.x % NT;
		const int r = row0 + s;

		if (r < row_end && t < a.n_tok) {
			float v = part_sum[s * wpr][t];

			for (int p = 1; p < wpr; p++)
				v += part_sum[s * wpr + p][t];
			cuda_mm_store(a, t, r, v);
		}
	}
}

/* ------------------------------------------------------------- tile */

template <int WT>
__global__ void __launch_bounds__(MM_THREADS)
tile_kernel(const cuda_mm_args a)
{
	extern __shared__ uint4 mm_smem4[];
	constexpr int AT = cuda_dot_type(WT);
	constexpr int KC = tile_kc(WT), R16 = tile_row16(WT);
	constexpr int RB = R16 * 16, NCH = R16 - 1;
	constexpr int TW = tile_tok_words(WT);
	constexpr int NBM = KC / cuda_act_qk(AT);
	constexpr int ITEMS = (TILE_ROWS * NCH + MM_THREADS - 1) / MM_THREADS;
	uint32_t *act_s = (uint32_t *)mm_smem4;
	uint32_t *w_s = act_s + TILE_TOKS * TW;
	int *heads = (int *)(w_s + TILE_ROWS * RB / 4);
	const int tid = threadIdx.x, warp = tid >> 5, lane = tid & 31;
	const int row0 = blockIdx.x * TILE_ROWS, t0 = blockIdx.y * TILE_TOKS;
	const int tok = (warp & 1) * 32 + lane, rb = (warp >> 1) * TILE_RM;
	const int n_t = min(TILE_TOKS, a.n_tok - t0);
	const uint32_t *R = act_s + tok * TW;
	float acc[TILE_RM];

#pragma unroll
	for (int r = 0; r < TILE_RM; r++)
		acc[r] = 0.0f;
	for (int kc0 = 0; kc0 < a.n_in; kc0 += KC) {
		const int kc1 = min(kc0 + KC, a.n_in);
		const int nbytes = (kc1 - kc0) / cuda_blk_elems(WT) *
		    cuda_blk_bytes(WT);
		const size_t koff = (size_t)kc0 / cuda_blk_elems(WT) *
		    cuda_blk_bytes(WT);
		uint4 v[ITEMS];

#pragma unroll
		for (int it = 0; it < ITEMS; it++)
			v[it] = make_uint4(0, 0, 0, 0);
		__syncthreads();
		/* Weights: row rr's bytes land at rr * RB + heads[rr]. */
#pragma unroll
		for (int it = 0; it < ITEMS; it++) {
			const int i = tid + it * MM_THREADS;
			const int rr = i / NCH, c = i % NCH;
			const int row = row0 + rr;

			if (i >= TILE_ROWS * NCH || row >= a.n_rows)
				continue;
			const uint8_t *g = a.w + (size_t)row * a.w_stride + koff;
			const int head = (int)((uintptr_t)g & 15);

			if (c < (head + nbytes + 15) >> 4)
				v[it] = cuda_mm_ld16(g - head + 16 * c, a.w_lo,
				    a.w_hi);
		}
#pragma unroll
		for (int it = 0; it < ITEMS; it++) {
			const int i = tid + it * MM_THREADS;
			const int rr = i / NCH, c = i % NCH;
			const int row = row0 + rr;

			if (i >= TILE_ROWS * NCH)
				continue;
			if (row >= a.n_rows) {
				if (c == 0)
					heads[rr] = 0;
				continue;
			}
			const uint8_t *g = a.w + (size_t)row * a.w_stride + koff;
			const int head = (int)((uintptr_t)g & 15);

			if (c == 0)
				heads[rr] = head;
			if (c < (head + nbytes + 15) >> 4)
				((uint4 *)w_s)[rr * R16 + c] = v[it];
		}
		cuda_mm_stage_act<AT>(act_s, TW, NBM, a.act, a.act_stride, t0,
		    n_t, kc0, kc1);
		__syncthreads();

		int ho[TILE_RM];
#pragma unroll
		for (int r = 0; r < TILE_RM; r++)
			ho[r] = (rb + r) * RB + heads[rb + r];

		if constexpr (mm_is_float(WT)) {
			constexpr int ES = cuda_blk_bytes(WT), G = 16 / ES;
			const int ne = kc1 - kc0;

			for (int e = 0; e < ne; e += G) {
				const int ao = e / (ES == 4 ? 1 : 2);
				const uint32_t aw[4] = { R[ao], R[ao + 1],
				    R[ao + 2], R[ao + 3] };
				float af[G];

				mm_float_a<WT>(aw, af);
#pragma unroll
				for (int r = 0; r < TILE_RM; r++) {
					float wf[G];

					mm_float_w<WT>(w_s, ho[r] + e * ES, wf);
					if (e + G <= ne) {
#pragma unroll
						for (int i = 0; i < G; i++)
							acc[r] = fmaf(wf[i], af[i], acc[r]);
					} else {
#pragma unroll
						for (int i = 0; i < G; i++)
							if (e + i < ne)
								acc[r] = fmaf(wf[i], af[i],
								    acc[r]);
					}
				}
			}
		} else if constexpr (!mm_is_k(WT)) {
			constexpr int BB = cuda_blk_bytes(WT);
			const int nbc = (kc1 - kc0) / 32;

			for (int b = 0; b < nbc; b++) {
				mm_act_blk ab;

#pragma unroll
				for (int j = 0; j < 8; j++)
					ab.q[j] = R[8 * b + j];
				ab.d = __uint_as_float(R[8 * NBM + b]);
				ab.x = R[9 * NBM + b];
#pragma unroll
				for (int r = 0; r < TILE_RM; r++) {
					const int o = ho[r] + b * BB;
					uint32_t q[8];

					cuda_wq<WT>::q32(w_s, o, 0, q);
					acc[r] += mm_legacy_dot<WT>(q,
					    cuda_wq<WT>::d(w_s, o),
					    cuda_wq<WT>::m(w_s, o), ab);
				}
			}
		} else {
			/* One super-block per chunk (KC = 256). */
			int isum[TILE_RM], msum[TILE_RM];

#pragma unroll
			for (int r = 0; r < TILE_RM; r++)
				isum[r] = msum[r] = 0;
#pragma unroll 1
			for (int s = 0; s < 8; s++) {
				uint32_t av[8];

#pragma unroll
				for (int j = 0; j < 8; j++)
					av[j] = R[8 * s + j];
				const int bs0 = (int)R[65 + 2 * s];
				const int bs1 = (int)R[65 + 2 * s + 1];
#pragma unroll
				for (int r = 0; r < TILE_RM; r++)
					mm_k_sub<WT>(w_s, ho[r], s, av, bs0, bs1,
					    &isum[r], &msum[r]);
			}
			const float ad = __uint_as_float(R[64]);
#pragma unroll
			for (int r = 0; r < TILE_RM; r++)
				acc[r] += mm_k_final<WT>(w_s, ho[r], isum[r],
				    msum[r], ad);
		}
	}
	if (tok < n_t) {
#pragma unroll
		for (int r = 0; r < TILE_RM; r++) {
			const int row = row0 + rb + r;

			if (row < a.n_rows)
				cuda_mm_store(a, t0 + tok, row, acc[r]);
		}
	}
}

/* ------------------------------------------------------------- host */

template <int WT, int NT>
int
gemv_launch(cuda_mm_args a, cudaStream_t s)
{
	constexpr int AT = cuda_dot_type(WT);
	constexpr int QKA = cuda_act_qk(AT);
	const int max_words = GEMV_ACT_BUDGET / 4 / NT;
	int nbm;

	/* The largest chunk of k whose activations fit the budget, in
	 * whole blocks (float types: multiples of 8 elements), with the
	 * per-token region a multiple of 4 words for vector loads. */
	if constexpr (mm_is_float(WT)) {
		const int epw = WT == ORCD_DTYPE_F32 ? 1 : 2;

		nbm = (a.n_in + 7) / 8 * 8;
		if (nbm > max_words * epw / 8 * 8)
			nbm = max_words * epw / 8 * 8;
		a.kc = nbm;
	} else {
		const int per = cuda_act_words(AT, 1);

		nbm = a.n_in / QKA;
		if (nbm > (max_words - 3) / per)
			nbm = (max_words - 3) / per;
		a.kc = nbm * QKA;
	}
	a.nbm = nbm;
	a.tok_words = (cuda_act_words(AT, nbm) + 3) / 4 * 4;
	a.n_chunks = (a.n_in + a.kc - 1) / a.kc;

	/*
	 * One row per warp, or several (fewer activation stagings) when
	 * that still leaves about 8 blocks per SM; with too few rows for 4
	 * blocks per SM, 2, 4 or 8 warps share a row, as long as each part
	 * keeps a whole step of work (32 blocks, 4 super-blocks, 256
	 * elements) for the warp.
	 */
	const int sms = cuda_ops_sm_count();
	const int step = mm_is_float(WT) ? 256 : 1024;
	int rpw = 1;

	a.wpr = 1;
	a.kpart = 0;
	if (a.n_chunks == 1) {
		const long long target = 8LL * sms * MM_WARPS;

		rpw = (int)((a.n_rows + target - 1) / target);
		rpw = rpw < 1 ? 1 : rpw;
		while (a.wpr < MM_WARPS &&
		    (long long)(a.n_rows + MM_WARPS - 1) / MM_WARPS * a.wpr <
		    4LL * sms && a.n_in / (2 * a.wpr) >= step)
			a.wpr *= 2;
		if (a.wpr > 1) {
			const int q = mm_is_float(WT) ? 8 : cuda_blk_elems(WT);
			const int per = (a.n_in + a.wpr - 1) / a.wpr;

			rpw = 1;
			a.kpart = (per + q - 1) / q * q;
		}
	}
	a.rows_per_cta = rpw * (MM_WARPS / a.wpr);

	const int grid = (a.n_rows + a.rows_per_cta - 1) / a.rows_per_cta;
	const size_t smem = (size_t)NT * a.tok_words * 4 +
	    (size_t)MM_WARPS * GEMV_WBUF;

	gemv_kernel<WT, NT><<<grid, MM_THREADS, smem, s>>>(a);
	return cuda_ops_launched();
}

/* The most tokens a GEMV takes (ORCD_CUDA_GEMV_TOKENS, 8 or 32). */
int
mm_gemv_tokens(void)
{
	static int n = -1;

	if (n < 0) {
		const char *e = getenv("ORCD_CUDA_GEMV_TOKENS");

		n = e != NULL && atoi(e) >= 32 ? 32 : 8;
	}
	return n;
}

template <int WT>
int
mm_launch(cuda_mm_args a, cudaStream_t s)
{
	static_assert(tile_smem_bytes(WT) <= 48 * 1024, "tile smem");

	if (a.n_tok <= 1)
		return gemv_launch<WT, 1>(a, s);
	if (a.n_tok <= 2)
		return gemv_launch<WT, 2>(a, s);
	if (a.n_tok <= 4)
		return gemv_launch<WT, 4>(a, s);
	if (a.n_tok <= 8)
		return gemv_launch<WT, 8>(a, s);
	/* batched decode of 9 .. 32 streams through the GEMV (one pass over
	 * the weights per row, activations staged in k chunks) instead of the
	 * tile kernel, which the device profile shows 5x slower there: not
	 * yet validated on a GPU, so only with ORCD_CUDA_GEMV_TOKENS=32 */
	if (a.n_tok <= 32 && mm_gemv_tokens() >= a.n_tok)
		return a.n_tok <= 16 ? gemv_launch<WT, 16>(a, s) : gemv_launch<WT, 32>(a, s);

	const dim3 grid((a.n_rows + TILE_ROWS - 1) / TILE_ROWS,
	    (a.n_tok + TILE_TOKS - 1) / TILE_TOKS);

	if (grid.y > 65535)
		return (int)cudaErrorInvalidValue;
	tile_kernel<WT><<<grid, MM_THREADS, tile_smem_bytes(WT), s>>>(a);
	return cuda_ops_launched();
}

} /* namespace */

extern "C" int
cuda_matmul(int wtype, const void *w, size_t w_stride, int n_rows, int n_in,
    const void *act, size_t act_stride, int n_tok, float *out, size_t ldo,
    const float *bias, const float *residual, void *stream)
{
	cudaStream_t s = cuda_ops_stream(stream);
	cuda_mm_args a;

	CUDA_OPS_CHECK(wtype >= 0 && wtype < ORCD_DTYPE_COUNT &&
	    cuda_is_weight_type(wtype));
	const int at = cuda_dot_type(wtype);
	const size_t wrb = cuda_row_bytes(wtype, n_in);
	const size_t arb = cuda_row_bytes(at, n_in);
	const size_t aalign = at == ORCD_DTYPE_Q8_K || at == ORCD_DTYPE_F32 ?
	    4 : 2;

	CUDA_OPS_CHECK(n_rows > 0 && n_tok > 0 && wrb != 0 && arb != 0);
	CUDA_OPS_CHECK(w != NULL && act != NULL && out != NULL);
	CUDA_OPS_CHECK(n_rows == 1 || w_stride >= wrb);
	CUDA_OPS_CHECK(n_tok == 1 || act_stride >= arb);
	CUDA_OPS_CHECK(n_tok == 1 || ldo >= (size_t)n_rows);
	CUDA_OPS_CHECK(cuda_ops_aligned(w, 2) && w_stride % 2 == 0);
	CUDA_OPS_CHECK(cuda_ops_aligned(act, aalign) &&
	    act_stride % aalign == 0);
	CUDA_OPS_CHECK(cuda_ops_aligned(out, 4) &&
	    (residual == NULL || cuda_ops_aligned(residual, 4)) &&
	    (bias == NULL || cuda_ops_aligned(bias, 4)));

	a.w = (const uint8_t *)w;
	a.w_stride = n_rows == 1 ? wrb : w_stride;
	a.n_rows = n_rows;
	a.n_in = n_in;
	a.w_lo = a.w;
	a.w_hi = a.w + (size_t)(n_rows - 1) * a.w_stride + wrb;
	a.act = (const uint8_t *)act;
	a.act_stride = n_tok == 1 ? arb : act_stride;
	a.n_tok = n_tok;
	a.out = out;
	a.ldo = n_tok == 1 ? (size_t)n_rows : ldo;
	a.bias = bias;
	a.residual = residual;
	a.kc = a.n_chunks = a.nbm = a.tok_words = a.rows_per_cta = 0;
	a.wpr = 1;
	a.kpart = 0;

	switch (wtype) {
	case ORCD_DTYPE_F32: return mm_launch<ORCD_DTYPE_F32>(a, s);
	case ORCD_DTYPE_F16: return mm_launch<ORCD_DTYPE_F16>(a, s);
	case ORCD_DTYPE_BF16: return mm_launch<ORCD_DTYPE_BF16>(a, s);
	case ORCD_DTYPE_Q4_0: return mm_launch<ORCD_DTYPE_Q4_0>(a, s);
	case ORCD_DTYPE_Q4_1: return mm_launch<ORCD_DTYPE_Q4_1>(a, s);
	case ORCD_DTYPE_Q5_0: return mm_launch<ORCD_DTYPE_Q5_0>(a, s);
	case ORCD_DTYPE_Q5_1: return mm_launch<ORCD_DTYPE_Q5_1>(a, s);
	case ORCD_DTYPE_Q8_0: return mm_launch<ORCD_DTYPE_Q8_0>(a, s);
	case ORCD_DTYPE_Q4_K: return mm_launch<ORCD_DTYPE_Q4_K>(a, s);
	case ORCD_DTYPE_Q5_K: return mm_launch<ORCD_DTYPE_Q5_K>(a, s);
	case ORCD_DTYPE_Q6_K: return mm_launch<ORCD_DTYPE_Q6_K>(a, s);
	default: return (int)cudaErrorInvalidValue;
	}
}
