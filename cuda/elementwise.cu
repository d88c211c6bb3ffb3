/*
 * Residual add, SwiGLU and the embedding lookup (dequantized rows of the
 * token table, exactly as quant_dequantize_row).
 */
#include "orcd/cuda_ops.h"
#include "dequant.cuh"
#include "elementwise.cuh"

#define EW_THREADS 256

namespace {

int
ew_grid(long long items)
{
	long long g = (items + EW_THREADS - 1) / EW_THREADS;
	const long long cap = (long long)cuda_ops_sm_count() * 32;

	if (g > cap)
		g = cap;
	return g < 1 ? 1 : (int)g;
}

__global__ void __launch_bounds__(EW_THREADS)
add_kernel(float *y, const float *a, const float *b, size_t n)
{
	const size_t step = (size_t)gridDim.x * EW_THREADS;

	for (size_t i = (size_t)blockIdx.x * EW_THREADS + threadIdx.x; i < n;
	    i += step)
		y[i] = __fadd_rn(a[i], b[i]);
}

__global__ void __launch_bounds__(EW_THREADS)
swiglu_kernel(float *y, size_t ldy, const float *g, size_t ldg,
    const float *u, size_t ldu, int rows, int n)
{
	const long long total = (long long)rows * n;
	const long long step = (long long)gridDim.x * EW_THREADS;

	for (long long i = (long long)blockIdx.x * EW_THREADS + threadIdx.x;
	    i < total; i += step) {
		const size_t r = (size_t)(i / n), c = (size_t)(i % n);

		y[r * ldy + c] = cuda_swiglu1(g[r * ldg + c], u[r * ldu + c]);
	}
}

template <int T>
__global__ void __launch_bounds__(EW_THREADS)
embed_kernel(const uint8_t *table, size_t row_bytes, int n_vocab, int n_embd,
    const int *tokens, float *out, size_t ldo)
{
	const int id = tokens[blockIdx.x];
	float *o = out + (size_t)blockIdx.x * ldo;

	if (id < 0 || id >= n_vocab) {
		for (int i = threadIdx.x; i < n_embd; i += blockDim.x)
			o[i] = 0.0f;
		return;
	}
	const uint8_t *row = table + (size_t)id * row_bytes;

	for (int i = threadIdx.x; i < n_embd; i += blockDim.x)
		o[i] = cuda_dequant_elem<T>(row, i);
}

} /* namespace */

extern "C" int
cuda_add(float *y, const float *a, const float *b, size_t n, void *stream)
{
	CUDA_OPS_CHECK(y != NULL && a != NULL && b != NULL && n > 0);
	add_kernel<<<ew_grid((long long)n), EW_THREADS, 0,
	    cuda_ops_stream(stream)>>>(y, a, b, n);
	return cuda_ops_launched();
}

extern "C" int
cuda_swiglu(float *y, size_t ldy, const float *gate, size_t ldg,
    const float *up, size_t ldu, int rows, int n, void *stream)
{
	CUDA_OPS_CHECK(y != NULL && gate != NULL && up != NULL);
	CUDA_OPS_CHECK(rows > 0 && n > 0);
	CUDA_OPS_CHECK(rows == 1 || (ldy >= (size_t)n && ldg >= (size_t)n &&
	    ldu >= (size_t)n));
	swiglu_kernel<<<ew_grid((long long)rows * n), EW_THREADS, 0,
	    cuda_ops_stream(stream)>>>(y, ldy, gate, ldg, up, ldu, rows, n);
	return cuda_ops_launched();
}

extern "C" int
cuda_embed(int wtype, const void *table, size_t row_bytes, int n_vocab,
    int n_embd, const int *tokens, int n_tok, float *out, size_t ldo,
    void *stream)
{
	cudaStream_t s = cuda_ops_stream(stream);
	const uint8_t *t = (const uint8_t *)table;

	CUDA_OPS_CHECK(wtype >= 0 && wtype < ORCD_DTYPE_COUNT &&
	    cuda_is_weight_type(wtype));
	CUDA_OPS_CHECK(table != NULL && tokens != NULL && out != NULL);
	CUDA_OPS_CHECK(n_vocab > 0 && n_tok > 0 && n_tok <= 0x7fffffff);
	CUDA_OPS_CHECK(cuda_row_bytes(wtype, n_embd) != 0 &&
	    row_bytes >= cuda_row_bytes(wtype, n_embd));
	CUDA_OPS_CHECK(n_tok == 1 || ldo >= (size_t)n_embd);
	CUDA_OPS_CHECK(cuda_ops_aligned(table, 2) && row_bytes % 2 == 0);

#define EMBED(T)							\
	case T:								\
		embed_kernel<T><<<n_tok, EW_THREADS, 0, s>>>(t, row_bytes,	\
		    n_vocab, n_embd, tokens, out, ldo);			\
		break;
	switch (wtype) {
	EMBED(ORCD_DTYPE_F32)
	EMBED(ORCD_DTYPE_F16)
	EMBED(ORCD_DTYPE_BF16)
	EMBED(ORCD_DTYPE_Q4_0)
	EMBED(ORCD_DTYPE_Q4_1)
	EMBED(ORCD_DTYPE_Q5_0)
	EMBED(ORCD_DTYPE_Q5_1)
	EMBED(ORCD_DTYPE_Q8_0)
	EMBED(ORCD_DTYPE_Q4_K)
	EMBED(ORCD_DTYPE_Q5_K)
	EMBED(ORCD_DTYPE_Q6_K)
	default:
		return (int)cudaErrorInvalidValue;
	}
#undef EMBED
	return cuda_ops_launched();
}
