/*
 * RMSNorm kernel (see norm.cuh): one block per row.
 */
#include "orcd/cuda_ops.h"
#include "norm.cuh"

#define NORM_THREADS 256

namespace {

__global__ void __launch_bounds__(NORM_THREADS)
rmsnorm_kernel(const float *x, size_t ldx, const float *w, int n, float eps,
    float *y, size_t ldy)
{
	__shared__ double scratch[32];
	const float *xr = x + (size_t)blockIdx.x * ldx;
	float *yr = y + (size_t)blockIdx.x * ldy;
	/* The whole row is read for the scale before any thread writes, so
	 * y may be x. */
	const float scale = cuda_rmsnorm_scale(xr, n, eps, scratch);

	for (int i = threadIdx.x; i < n; i += blockDim.x)
		yr[i] = cuda_rmsnorm_apply(xr[i], scale, w[i]);
}

} /* namespace */

extern "C" int
cuda_rmsnorm(const float *x, size_t ldx, const float *weight, int rows, int n,
    float eps, float *y, size_t ldy, void *stream)
{
	CUDA_OPS_CHECK(x != NULL && weight != NULL && y != NULL);
	CUDA_OPS_CHECK(rows > 0 && rows <= 0x7fffffff && n > 0);
	CUDA_OPS_CHECK(rows == 1 || (ldx >= (size_t)n && ldy >= (size_t)n));
	/* In place only row for row. */
	CUDA_OPS_CHECK(x != y || ldx == ldy);
	rmsnorm_kernel<<<rows, NORM_THREADS, 0, cuda_ops_stream(stream)>>>(x,
	    ldx, weight, n, eps, y, ldy);
	return cuda_ops_launched();
}
