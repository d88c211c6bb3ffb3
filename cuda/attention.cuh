/*
 * Pieces of attention with the CPU's rounding points (att_task in
 * src/cpu/forward.c), as device functions for the kernels in attention.cu
 * and later fused ones: q rounded to f16, a score is an f16 x f16 dot
 * summed in f32 (every product is exact in f32) times 1/sqrt(head_dim);
 * probabilities e^(s - max) / sum rounded to f16; the output sums
 * f16(v) * f16(p) in f32.
 */
#ifndef ORCD_CUDA_ATTENTION_CUH
#define ORCD_CUDA_ATTENTION_CUH

#include "common.cuh"

/* q (head_dim floats) rounded to f16, as floats in shared memory. */
__device__ __forceinline__ void
cuda_att_load_q(const float *q, int hd, float *qf)
{
	for (int d = threadIdx.x; d < hd; d += blockDim.x)
		qf[d] = cuda_h2f(cuda_f32_to_f16(q[d]));
}

/* The scaled score of one cache row (hd f16 values, 16-byte aligned). */
__device__ __forceinline__ float
cuda_att_score(const float *qf, const uint16_t *krow, int hd, float scale)
{
	const uint4 *k = (const uint4 *)krow;
	float acc = 0.0f;

	for (int c = 0; c < hd / 8; c++) {
		const uint4 v = __ldg(k + c);
		const uint32_t w[4] = { v.x, v.y, v.z, v.w };

#pragma unroll
		for (int i = 0; i < 4; i++) {
			acc = fmaf(qf[8 * c + 2 * i], cuda_h2f(w[i] & 0xffffu), acc);
			acc = fmaf(qf[8 * c + 2 * i + 1], cuda_h2f(w[i] >> 16), acc);
		}
	}
	return __fmul_rn(acc, scale);
}

/* A probability as the CPU stores it: e * inv rounded to f16. */
__device__ __forceinline__ float
cuda_att_p16(float e, float inv)
{
	return cuda_h2f(cuda_f32_to_f16(__fmul_rn(e, inv)));
}

/*
 * Where cache row j is: contiguous (tab NULL: base + j * kv_dim) or paged
 * (base is the pool plus the layer and head offset inside a block; block
 * tab[j >> bt_shift], row j & (block_tokens - 1) of it).
 */
struct cuda_kv_rows {
	const uint16_t *base;
	const int32_t *tab;
	size_t kv_dim;
	size_t bstride;		/* elements per block */
	int bt_shift;
};

__device__ __forceinline__ const uint16_t *
cuda_kv_row(const cuda_kv_rows &r, int j)
{
	if (r.tab == NULL)
		return r.base + (size_t)j * r.kv_dim;
	return r.base + (size_t)__ldg(r.tab + (j >> r.bt_shift)) * r.bstride +
	    (size_t)(j & ((1 << r.bt_shift) - 1)) * r.kv_dim;
}

/*
 * sum_j v[j][d] * p[j] for j in [j0, j1) (p indexed from j0), d < hd,
 * by the whole block: hd / 4 threads per cache row (8-byte loads), the
 * other threads on other rows; partial sums meet in red (256 * 4 floats
 * of shared memory) and are added in a fixed order.  Thread d < hd gets
 * out[d] returned (others 0).  blockDim.x must be 256.
 */
__device__ __forceinline__ float
cuda_att_pv(const cuda_kv_rows &rows, const float *p, int j0, int j1, int hd,
    float *red)
{
	const int tpr = hd / 4, rp = 256 / tpr;
	const int slot = threadIdx.x / tpr, c = threadIdx.x % tpr;
	float acc[4] = { 0.0f, 0.0f, 0.0f, 0.0f };

	if (slot < rp) {
		for (int j = j0 + slot; j < j1; j += rp) {
			const uint2 v = __ldg((const uint2 *)cuda_kv_row(rows, j) + c);
			const float pj = p[j - j0];

			acc[0] = fmaf(cuda_h2f(v.x & 0xffffu), pj, acc[0]);
			acc[1] = fmaf(cuda_h2f(v.x >> 16), pj, acc[1]);
			acc[2] = fmaf(cuda_h2f(v.y & 0xffffu), pj, acc[2]);
			acc[3] = fmaf(cuda_h2f(v.y >> 16), pj, acc[3]);
		}
#pragma unroll
		for (int i = 0; i < 4; i++)
			red[slot * hd + 4 * c + i] = acc[i];
	}
	__syncthreads();

	float out = 0.0f;

	if (threadIdx.x < hd) {
		const int d = threadIdx.x;

		for (int s = 0; s < rp; s++)
			out += red[s * hd + d];
	}
	__syncthreads();
	return out;
}

#endif
