/*
 * Activation conversion into the weights' dot-product types, bit for bit
 * as quant_quantize_row on the CPU (src/cpu/quant.c).  The block builders
 * are warp-cooperative device functions on values already in registers, so
 * a fused kernel (RMSNorm + quantize, SwiGLU + quantize) can call them on
 * its own results; quant_act.cu wraps them in stand-alone kernels.
 */
#ifndef ORCD_CUDA_QUANT_ACT_CUH
#define ORCD_CUDA_QUANT_ACT_CUH

#include "common.cuh"

/*
 * One Q8_0 (q8_1 = false) or Q8_1 block from the warp: lane j holds
 * element j.  dst: the 34- or 36-byte block, 2-byte aligned.  Scale
 * amax / 127, quants round(x * (127 / amax)) half to even.
 */
template <bool q8_1>
__device__ __forceinline__ void
cuda_q8_block_warp(float x, uint8_t *dst)
{
	const int lane = threadIdx.x & 31;
	const float amax = cuda_warp_max(fabsf(x));
	const float d = __fdiv_rn(amax, 127.0f);
	const float id = amax != 0.0f ? __fdiv_rn(127.0f, amax) : 0.0f;
	const int q = __float2int_rn(__fmul_rn(x, id));
	const int next = __shfl_down_sync(0xffffffffu, q, 1);
	uint8_t *qs = dst + (q8_1 ? 4 : 2);

	/* Even lanes store two quants as one 16-bit word. */
	if ((lane & 1) == 0)
		*(uint16_t *)(qs + lane) =
		    (uint16_t)((q & 0xff) | ((next & 0xff) << 8));
	if constexpr (q8_1) {
		const int sum = __reduce_add_sync(0xffffffffu, q);

		if (lane == 0) {
			((uint16_t *)dst)[0] = cuda_f32_to_f16(d);
			((uint16_t *)dst)[1] =
			    cuda_f32_to_f16(__fmul_rn(d, (float)sum));
		}
	} else if (lane == 0) {
		((uint16_t *)dst)[0] = cuda_f32_to_f16(d);
	}
}

/*
 * One Q8_K super-block from the warp: lane l holds elements 8l..8l+7.
 * dst: the 292-byte block, 4-byte aligned.  The scale comes from the
 * element of largest magnitude (the first one on ties, with its sign):
 * iscale = -127 / max, quants min(round(iscale * x), 127), d = 1 / iscale,
 * bsums the sums of 16 quants; an all-zero block is all zero bytes.
 */
__device__ __forceinline__ void
cuda_q8_K_block_warp(const float x[8], uint8_t *dst)
{
	const int lane = threadIdx.x & 31;
	float amax = 0.0f;

#pragma unroll
	for (int i = 0; i < 8; i++)
		amax = fmaxf(amax, fabsf(x[i]));
	amax = cuda_warp_max(amax);

	int first = 256;
	float cand = 0.0f;
#pragma unroll
	for (int i = 7; i >= 0; i--) {
		if (fabsf(x[i]) == amax) {
			first = 8 * lane + i;
			cand = x[i];
		}
	}
	first = (int)__reduce_min_sync(0xffffffffu, (unsigned)first);
	const float max = __shfl_sync(0xffffffffu, cand, (first >> 3) & 31);
	uint32_t *w = (uint32_t *)dst;

	if (amax == 0.0f) {
		w[1 + 2 * lane] = 0;
		w[2 + 2 * lane] = 0;
		if (lane < 8)
			w[65 + lane] = 0;	/* bsums: bytes 260..291 */
		if (lane == 0)
			w[0] = 0;
		return;
	}
	const float iscale = __fdiv_rn(-127.0f, max);
	uint32_t word[2] = { 0, 0 };
	int sum = 0;

#pragma unroll
	for (int i = 0; i < 8; i++) {
		int v = __float2int_rn(__fmul_rn(iscale, x[i]));

		v = v < 127 ? v : 127;
		sum += v;
		word[i >> 2] |= (uint32_t)(v & 0xff) << (8 * (i & 3));
	}
	w[1 + 2 * lane] = word[0];
	w[2 + 2 * lane] = word[1];
	sum += __shfl_xor_sync(0xffffffffu, sum, 1);
	if ((lane & 1) == 0)
		((int16_t *)(dst + 260))[lane >> 1] = (int16_t)sum;
	if (lane == 0)
		((float *)dst)[0] = __fdiv_rn(1.0f, iscale);
}

#endif
