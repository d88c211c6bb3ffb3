/*
 * Argmax per row (greedy decoding), one block per row.
 */
#include "orcd/cuda_ops.h"
#include "argmax.cuh"

#define ARGMAX_THREADS 1024

namespace {

__global__ void __launch_bounds__(ARGMAX_THREADS)
argmax_kernel(const float *x, size_t ldx, int n, int *out)
{
	__shared__ float sv[32];
	__shared__ int si[32];
	const float *row = x + (size_t)blockIdx.x * ldx;
	float best = -INFINITY;
	int bi = 0x7fffffff;

	/* Each thread sees its indices in increasing order, so the first of
	 * equal values stays. */
	for (int i = threadIdx.x; i < n; i += blockDim.x)
		cuda_argmax_merge(&best, &bi, row[i], i);
	bi = cuda_block_argmax(best, bi, sv, si);
	if (threadIdx.x == 0)
		out[blockIdx.x] = bi < n ? bi : 0;
}

} /* namespace */

extern "C" int
cuda_argmax(const float *x, size_t ldx, int rows, int n, int *out,
    void *stream)
{
	CUDA_OPS_CHECK(x != NULL && out != NULL && rows > 0 && n > 0);
	CUDA_OPS_CHECK(rows == 1 || ldx >= (size_t)n);
	argmax_kernel<<<rows, ARGMAX_THREADS, 0, cuda_ops_stream(stream)>>>(x,
	    ldx, n, out);
	return cuda_ops_launched();
}
