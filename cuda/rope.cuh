/*
 * RoPE with the CPU's angles and rounding (rope_tables / rope_apply in
 * src/cpu/forward.c): theta_i = pos * theta_scale^i by i float
 * multiplications, angle = freq_scale * theta_i; cos and sin are computed
 * in double and rounded (glibc's cosf / sinf are correctly rounded in all
 * but rare cases; CUDA's float versions are not); the rotation has no FMA
 * contraction.  Device functions, so a fused QKV kernel can use them.
 */
#ifndef ORCD_CUDA_ROPE_CUH
#define ORCD_CUDA_ROPE_CUH

#include "common.cuh"

/* cos and sin of rotary pair i at position pos. */
__device__ __forceinline__ void
cuda_rope_cs(int pos, int i, float theta_scale, float freq_scale, float *c,
    float *s)
{
	float theta = (float)pos;
	double sd, cd;

	for (int k = 0; k < i; k++)
		theta = __fmul_rn(theta, theta_scale);
	sincos((double)__fmul_rn(freq_scale, theta), &sd, &cd);
	*c = (float)cd;
	*s = (float)sd;
}

/* (x0, x1) rotated by the angle with cosine c and sine s. */
__device__ __forceinline__ void
cuda_rope_rotate(float x0, float x1, float c, float s, float *y0, float *y1)
{
	*y0 = __fsub_rn(__fmul_rn(x0, c), __fmul_rn(x1, s));
	*y1 = __fadd_rn(__fmul_rn(x0, s), __fmul_rn(x1, c));
}

#endif
