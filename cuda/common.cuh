/*
 * Shared by the CUDA kernels: block geometry of the ggml types, fp16/bf16
 * conversions that round exactly as the CPU's (src/cpu/quant_impl.h),
 * float arithmetic that must not be contracted into FMAs, reads of
 * unaligned words from shared memory, warp reductions, and the argument
 * and launch checks every host entry point uses.
 */
#ifndef ORCD_CUDA_COMMON_CUH
#define ORCD_CUDA_COMMON_CUH

#include <cuda_runtime.h>
#include <cuda_fp16.h>
#include <math.h>
#include <stddef.h>
#include <stdint.h>

#include "orcd/dtype.h"

#define CUDA_WARP 32

/* Host entry points: an invalid argument is reported before any launch. */
#define CUDA_OPS_CHECK(cond)						\
	do {								\
		if (!(cond))						\
			return (int)cudaErrorInvalidValue;		\
	} while (0)

/* The status of the launch just made (configuration errors show here;
 * faults inside kernels surface at the next synchronizing call). */
static inline int
cuda_ops_launched(void)
{
	return (int)cudaGetLastError();
}

static inline cudaStream_t
cuda_ops_stream(void *s)
{
	return (cudaStream_t)s;
}

static inline bool
cuda_ops_aligned(const void *p, size_t a)
{
	return ((uintptr_t)p & (a - 1)) == 0;
}

/* Streaming multiprocessors of the current device (sizes the grids). */
static inline int
cuda_ops_sm_count(void)
{
	int dev = 0, n = 0;

	if (cudaGetDevice(&dev) != cudaSuccess ||
	    cudaDeviceGetAttribute(&n, cudaDevAttrMultiProcessorCount, dev) !=
	    cudaSuccess || n <= 0)
		n = 100;
	return n;
}

/* ------------------------------------------------------ block geometry */

__host__ __device__ constexpr int
cuda_blk_elems(int t)
{
	return t == ORCD_DTYPE_F32 || t == ORCD_DTYPE_F16 ||
	    t == ORCD_DTYPE_BF16 ? 1 :
	    t == ORCD_DTYPE_Q4_0 || t == ORCD_DTYPE_Q4_1 ||
	    t == ORCD_DTYPE_Q5_0 || t == ORCD_DTYPE_Q5_1 ||
	    t == ORCD_DTYPE_Q8_0 || t == ORCD_DTYPE_Q8_1 ? 32 :
	    t == ORCD_DTYPE_Q4_K || t == ORCD_DTYPE_Q5_K ||
	    t == ORCD_DTYPE_Q6_K || t == ORCD_DTYPE_Q8_K ? 256 : 0;
}

__host__ __device__ constexpr int
cuda_blk_bytes(int t)
{
	return t == ORCD_DTYPE_F32 ? 4 :
	    t == ORCD_DTYPE_F16 || t == ORCD_DTYPE_BF16 ? 2 :
	    t == ORCD_DTYPE_Q4_0 ? 18 : t == ORCD_DTYPE_Q4_1 ? 20 :
	    t == ORCD_DTYPE_Q5_0 ? 22 : t == ORCD_DTYPE_Q5_1 ? 24 :
	    t == ORCD_DTYPE_Q8_0 ? 34 : t == ORCD_DTYPE_Q8_1 ? 36 :
	    t == ORCD_DTYPE_Q4_K ? 144 : t == ORCD_DTYPE_Q5_K ? 176 :
	    t == ORCD_DTYPE_Q6_K ? 210 : t == ORCD_DTYPE_Q8_K ? 292 : 0;
}

__host__ __device__ constexpr bool
cuda_is_weight_type(int t)
{
	return t == ORCD_DTYPE_F32 || t == ORCD_DTYPE_F16 ||
	    t == ORCD_DTYPE_BF16 || t == ORCD_DTYPE_Q4_0 ||
	    t == ORCD_DTYPE_Q4_1 || t == ORCD_DTYPE_Q5_0 ||
	    t == ORCD_DTYPE_Q5_1 || t == ORCD_DTYPE_Q8_0 ||
	    t == ORCD_DTYPE_Q4_K || t == ORCD_DTYPE_Q5_K ||
	    t == ORCD_DTYPE_Q6_K;
}

/* quant_vec_dot_type */
__host__ __device__ constexpr int
cuda_dot_type(int t)
{
	return t == ORCD_DTYPE_Q4_0 || t == ORCD_DTYPE_Q5_0 ||
	    t == ORCD_DTYPE_Q8_0 ? ORCD_DTYPE_Q8_0 :
	    t == ORCD_DTYPE_Q4_1 || t == ORCD_DTYPE_Q5_1 ? ORCD_DTYPE_Q8_1 :
	    t == ORCD_DTYPE_Q4_K || t == ORCD_DTYPE_Q5_K ||
	    t == ORCD_DTYPE_Q6_K ? ORCD_DTYPE_Q8_K : t;
}

/* ------------------------------------------------- exact float helpers */

/* quant_float_to_half: F16C rounding, NaN keeps its top payload bits. */
__device__ __forceinline__ uint16_t
cuda_f32_to_f16(float f)
{
	const uint32_t x = __float_as_uint(f);

	if ((x & 0x7fffffffu) > 0x7f800000u)
		return (uint16_t)(((x >> 16) & 0x8000u) | 0x7e00u |
		    ((x >> 13) & 0x3ffu));
	return __half_as_ushort(__float2half_rn(f));
}

/* quant_half_to_float, NaN payload included (the hardware conversion is
 * exact for every other value). */
__device__ __forceinline__ float
cuda_f16_to_f32(uint16_t h)
{
	if ((h & 0x7c00u) == 0x7c00u && (h & 0x3ffu) != 0)
		return __uint_as_float(((uint32_t)(h & 0x8000u) << 16) |
		    0x7f800000u | ((uint32_t)(h & 0x3ffu) << 13));
	return __half2float(__ushort_as_half(h));
}

/* For the hot loops, where a NaN payload does not matter. */
__device__ __forceinline__ float
cuda_h2f(uint32_t h)
{
	return __half2float(__ushort_as_half((unsigned short)h));
}

/* quant_fp32_to_bf16 */
__device__ __forceinline__ uint16_t
cuda_f32_to_bf16(float f)
{
	const uint32_t u = __float_as_uint(f);

	if ((u & 0x7fffffffu) > 0x7f800000u)
		return (uint16_t)((u >> 16) | 64);
	return (uint16_t)((u + (0x7fffu + ((u >> 16) & 1))) >> 16);
}

__device__ __forceinline__ float
cuda_bf16_to_f32(uint32_t h)
{
	return __uint_as_float(h << 16);
}

/* The correctly rounded expf in all but rare cases (what glibc returns),
 * rather than CUDA's expf (up to 2 ulp away). */
__device__ __forceinline__ float
cuda_expf_exact(float x)
{
	return (float)exp((double)x);
}

/* ---------------------------------------------------- shared memory */

/*
 * n 32-bit words starting at byte offset o (any alignment) of a shared
 * buffer: aligned loads and funnel shifts, the same instructions whatever
 * the offset (no divergence between lanes of different alignment).  Reads
 * one word past the end; buffers keep slack for it.
 */
template <int N>
__device__ __forceinline__ void
cuda_lds_words(const uint32_t *buf, int o, uint32_t *out)
{
	const uint32_t *p = buf + (o >> 2);
	const unsigned sh = (unsigned)(o & 3) * 8;
	uint32_t w[N + 1];

#pragma unroll
	for (int i = 0; i <= N; i++)
		w[i] = p[i];
#pragma unroll
	for (int i = 0; i < N; i++)
		out[i] = __funnelshift_r(w[i], w[i + 1], sh);
}

__device__ __forceinline__ uint32_t
cuda_lds_u32(const uint32_t *buf, int o)
{
	uint32_t v;

	cuda_lds_words<1>(buf, o, &v);
	return v;
}

/* A 16-bit value at an even byte offset. */
__device__ __forceinline__ uint32_t
cuda_lds_u16(const uint32_t *buf, int o)
{
	return (buf[o >> 2] >> ((o & 2) * 8)) & 0xffffu;
}

__device__ __forceinline__ int
cuda_lds_s8(const uint32_t *buf, int o)
{
	return (int)(int8_t)((buf[o >> 2] >> ((o & 3) * 8)) & 0xffu);
}

/* Byte i (0..3) of w, i not known at compile time. */
__device__ __forceinline__ int
cuda_byte(uint32_t w, int i)
{
	return (int)((w >> (8 * i)) & 0xffu);
}

/* --------------------------------------------------------- reductions */

__device__ __forceinline__ float
cuda_warp_sum(float v)
{
#pragma unroll
	for (int o = 16; o > 0; o >>= 1)
		v += __shfl_xor_sync(0xffffffffu, v, o);
	return v;
}

__device__ __forceinline__ double
cuda_warp_sum_d(double v)
{
#pragma unroll
	for (int o = 16; o > 0; o >>= 1)
		v += __shfl_xor_sync(0xffffffffu, v, o);
	return v;
}

__device__ __forceinline__ float
cuda_warp_max(float v)
{
#pragma unroll
	for (int o = 16; o > 0; o >>= 1)
		v = fmaxf(v, __shfl_xor_sync(0xffffffffu, v, o));
	return v;
}

/*
 * Block-wide sum / max for blocks of up to 1024 threads; every thread
 * gets the result.  scratch: 32 elements of shared memory, reusable right
 * after the call returns.
 */
__device__ __forceinline__ double
cuda_block_sum_d(double v, double *scratch)
{
	const int lane = threadIdx.x & 31, warp = threadIdx.x >> 5;
	const int nw = (blockDim.x + 31) >> 5;

	v = cuda_warp_sum_d(v);
	__syncthreads();
	if (lane == 0)
		scratch[warp] = v;
	__syncthreads();
	v = lane < nw ? scratch[lane] : 0.0;
	return cuda_warp_sum_d(v);
}

__device__ __forceinline__ float
cuda_block_max(float v, float *scratch)
{
	const int lane = threadIdx.x & 31, warp = threadIdx.x >> 5;
	const int nw = (blockDim.x + 31) >> 5;

	v = cuda_warp_max(v);
	__syncthreads();
	if (lane == 0)
		scratch[warp] = v;
	__syncthreads();
	v = lane < nw ? scratch[lane] : -INFINITY;
	return cuda_warp_max(v);
}

#endif
