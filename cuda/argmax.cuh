/*
 * Greedy sampling on the GPU: the index of a row's largest value, ties to
 * the lowest index, NaN never chosen.  The pair reduction is a device
 * function for a later fused sampler.
 */
#ifndef ORCD_CUDA_ARGMAX_CUH
#define ORCD_CUDA_ARGMAX_CUH

#include "common.cuh"

/* (v, i) becomes the better of itself and (v2, i2). */
__device__ __forceinline__ void
cuda_argmax_merge(float *v, int *i, float v2, int i2)
{
	if (v2 > *v || (v2 == *v && i2 < *i)) {
		*v = v2;
		*i = i2;
	}
}

/* Block-wide argmax of per-thread candidates; every thread gets it.
 * scratch_v / scratch_i: 32 entries of shared memory. */
__device__ __forceinline__ int
cuda_block_argmax(float v, int i, float *scratch_v, int *scratch_i)
{
	const int lane = threadIdx.x & 31, warp = threadIdx.x >> 5;
	const int nw = (blockDim.x + 31) >> 5;

#pragma unroll
	for (int o = 16; o > 0; o >>= 1)
		cuda_argmax_merge(&v, &i, __shfl_xor_sync(0xffffffffu, v, o),
		    __shfl_xor_sync(0xffffffffu, i, o));
	__syncthreads();
	if (lane == 0) {
		scratch_v[warp] = v;
		scratch_i[warp] = i;
	}
	__syncthreads();
	v = lane < nw ? scratch_v[lane] : -INFINITY;
	i = lane < nw ? scratch_i[lane] : 0x7fffffff;
#pragma unroll
	for (int o = 16; o > 0; o >>= 1)
		cuda_argmax_merge(&v, &i, __shfl_xor_sync(0xffffffffu, v, o),
		    __shfl_xor_sync(0xffffffffu, i, o));
	return i;
}

#endif
