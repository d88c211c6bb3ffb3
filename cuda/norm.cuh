/*
 * RMSNorm as the CPU computes it (rmsnorm in src/cpu/forward.c): the
 * squares rounded to float, summed in double, mean = (float)(sum / n),
 * scale = 1 / sqrtf(mean + eps), y = (x * scale) * w.  The block-wide
 * scale is a device function so a fused kernel (norm + quantize) can
 * compute it on a row it already holds.
 */
#ifndef ORCD_CUDA_NORM_CUH
#define ORCD_CUDA_NORM_CUH

#include "common.cuh"

/* The scale of row x (n floats); every thread of the block calls it and
 * gets the result.  scratch: 32 doubles of shared memory. */
__device__ __forceinline__ float
cuda_rmsnorm_scale(const float *x, int n, float eps, double *scratch)
{
	double sum = 0.0;

	for (int i = threadIdx.x; i < n; i += blockDim.x) {
		const float v = x[i];

		sum += (double)__fmul_rn(v, v);
	}
	sum = cuda_block_sum_d(sum, scratch);

	const float mean = (float)(sum / (double)n);

	return __fdiv_rn(1.0f, __fsqrt_rn(__fadd_rn(mean, eps)));
}

/* y = (x * scale) * w, one element. */
__device__ __forceinline__ float
cuda_rmsnorm_apply(float x, float scale, float w)
{
	return __fmul_rn(__fmul_rn(x, scale), w);
}

#endif
