/*
 * Stand-alone activation conversion kernels (see quant_act.cuh): one warp
 * per quantization block, one thread per element for F16 / BF16 / F32.
 */
#include "orcd/cuda_ops.h"
#include "quant_act.cuh"

#define QA_THREADS 256

namespace {

template <int AT>
__global__ void __launch_bounds__(QA_THREADS)
quant_act_blocks(const float *x, size_t ldx, int rows, int nb,
    uint8_t *dst, size_t dst_stride)
{
	const long long warps = (long long)gridDim.x * (QA_THREADS / 32);
	const long long total = (long long)rows * nb;
	const int lane = threadIdx.x & 31;

	for (long long i = (long long)blockIdx.x * (QA_THREADS / 32) +
	    (threadIdx.x >> 5); i < total; i += warps) {
		const int r = (int)(i / nb), b = (int)(i % nb);
		const float *src = x + (size_t)r * ldx;
		uint8_t *row = dst + (size_t)r * dst_stride;

		if constexpr (AT == ORCD_DTYPE_Q8_K) {
			float v[8];

#pragma unroll
			for (int j = 0; j < 8; j++)
				v[j] = src[(size_t)b * 256 + 8 * lane + j];
			cuda_q8_K_block_warp(v, row + (size_t)b * 292);
		} else {
			cuda_q8_block_warp<AT == ORCD_DTYPE_Q8_1>(
			    src[(size_t)b * 32 + lane],
			    row + (size_t)b * cuda_blk_bytes(AT));
		}
	}
}

template <int AT>
__global__ void __launch_bounds__(QA_THREADS)
quant_act_elems(const float *x, size_t ldx, int rows, int n, uint8_t *dst,
    size_t dst_stride)
{
	const long long total = (long long)rows * n;
	const long long step = (long long)gridDim.x * QA_THREADS;

	for (long long i = (long long)blockIdx.x * QA_THREADS + threadIdx.x;
	    i < total; i += step) {
		const int r = (int)(i / n), e = (int)(i % n);
		const float f = x[(size_t)r * ldx + e];
		uint8_t *row = dst + (size_t)r * dst_stride;

		if constexpr (AT == ORCD_DTYPE_F16)
			((uint16_t *)row)[e] = cuda_f32_to_f16(f);
		else if constexpr (AT == ORCD_DTYPE_BF16)
			((uint16_t *)row)[e] = cuda_f32_to_bf16(f);
		else
			((float *)row)[e] = f;
	}
}

int
grid_for(long long items, int per_block)
{
	long long g = (items + per_block - 1) / per_block;
	const long long cap = (long long)cuda_ops_sm_count() * 16;

	if (g > cap)
		g = cap;
	return g < 1 ? 1 : (int)g;
}

} /* namespace */

extern "C" int
cuda_act_type(int wtype)
{
	return cuda_is_weight_type(wtype) ? cuda_dot_type(wtype) : -1;
}

extern "C" size_t
cuda_row_bytes(int t, int n)
{
	const int be = t >= 0 && t < ORCD_DTYPE_COUNT ? cuda_blk_elems(t) : 0;

	if (be == 0 || n <= 0 || n % be != 0)
		return 0;
	return (size_t)(n / be) * (size_t)cuda_blk_bytes(t);
}

extern "C" int
cuda_quantize_act(int act_type, const float *x, size_t ldx, int rows, int n,
    void *dst, size_t dst_stride, void *stream)
{
	const size_t rb = cuda_row_bytes(act_type, n);
	const size_t align = act_type == ORCD_DTYPE_Q8_K ||
	    act_type == ORCD_DTYPE_F32 ? 4 : 2;
	cudaStream_t s = cuda_ops_stream(stream);
	uint8_t *d = (uint8_t *)dst;

	CUDA_OPS_CHECK(x != NULL && dst != NULL && rows > 0 && rb != 0);
	CUDA_OPS_CHECK(rows == 1 || ldx >= (size_t)n);
	CUDA_OPS_CHECK(rows == 1 || dst_stride >= rb);
	CUDA_OPS_CHECK(cuda_ops_aligned(x, 4) && cuda_ops_aligned(dst, align) &&
	    dst_stride % align == 0);

	const int nb = n / cuda_blk_elems(act_type);
	const long long blocks = (long long)rows * nb;
	const long long elems = (long long)rows * n;

	switch (act_type) {
	case ORCD_DTYPE_Q8_0:
		quant_act_blocks<ORCD_DTYPE_Q8_0><<<grid_for(blocks, 8),
		    QA_THREADS, 0, s>>>(x, ldx, rows, nb, d, dst_stride);
		break;
	case ORCD_DTYPE_Q8_1:
		quant_act_blocks<ORCD_DTYPE_Q8_1><<<grid_for(blocks, 8),
		    QA_THREADS, 0, s>>>(x, ldx, rows, nb, d, dst_stride);
		break;
	case ORCD_DTYPE_Q8_K:
		quant_act_blocks<ORCD_DTYPE_Q8_K><<<grid_for(blocks, 8),
		    QA_THREADS, 0, s>>>(x, ldx, rows, nb, d, dst_stride);
		break;
	case ORCD_DTYPE_F16:
		quant_act_elems<ORCD_DTYPE_F16><<<grid_for(elems, QA_THREADS),
		    QA_THREADS, 0, s>>>(x, ldx, rows, n, d, dst_stride);
		break;
	case ORCD_DTYPE_BF16:
		quant_act_elems<ORCD_DTYPE_BF16><<<grid_for(elems, QA_THREADS),
		    QA_THREADS, 0, s>>>(x, ldx, rows, n, d, dst_stride);
		break;
	case ORCD_DTYPE_F32:
		quant_act_elems<ORCD_DTYPE_F32><<<grid_for(elems, QA_THREADS),
		    QA_THREADS, 0, s>>>(x, ldx, rows, n, d, dst_stride);
		break;
	default:
		return (int)cudaErrorInvalidValue;
	}
	return cuda_ops_launched();
}
