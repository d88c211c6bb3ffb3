/*
 * Elementwise pieces of the forward pass as device functions (for fused
 * kernels): the residual add and SwiGLU with the CPU's rounding.
 */
#ifndef ORCD_CUDA_ELEMENTWISE_CUH
#define ORCD_CUDA_ELEMENTWISE_CUH

#include "common.cuh"

/* silu(g) * u = (g / (1 + expf(-g))) * u, in the CPU's order. */
__device__ __forceinline__ float
cuda_swiglu1(float g, float u)
{
	return __fmul_rn(__fdiv_rn(g, __fadd_rn(1.0f, cuda_expf_exact(-g))), u);
}

#endif
