/*
 * Bias add, RoPE and the f16 KV-cache write for a batch of tokens (see
 * cuda_rope_kv in orcd/cuda_ops.h): one block per token; the token's cos
 * and sin table is built once in shared memory.
 */
#include <math.h>

#include "orcd/cuda_ops.h"
#include "rope.cuh"

#define ROPE_THREADS 256
#define ROPE_MAX_HALF 128

namespace {

struct rope_args {
	int n_head, n_head_kv, head_dim, n_rot, neox;
	float theta_scale, freq_scale;
	const int *pos;
	float *q;
	size_t ldq;
	const float *k;
	size_t ldk;
	const float *v;
	size_t ldv;
	const float *bq, *bk, *bv;
	uint16_t *const *k_cache;	/* paged: the per-token tables */
	uint16_t *const *v_cache;
	size_t layer_off;
	int n_ctx;
	uint16_t *k_pool, *v_pool;	/* NULL: contiguous caches */
	size_t bstride;
	int bt_shift;
};

__device__ __forceinline__ float
biased(const float *x, const float *b, int i)
{
	return b != NULL ? __fadd_rn(x[i], b[i]) : x[i];
}

__global__ void __launch_bounds__(ROPE_THREADS)
rope_kernel(const rope_args a)
{
	__shared__ float cs[ROPE_MAX_HALF], sn[ROPE_MAX_HALF];
	const int t = blockIdx.x, p = a.pos[t];
	const int hd = a.head_dim, half = a.n_rot / 2;
	const int units = half + (hd - a.n_rot);	/* per head */
	const int kv_dim = a.n_head_kv * hd;
	const bool write = p >= 0 && p < a.n_ctx;
	uint16_t *kc = NULL, *vc = NULL;

	if (write && a.k_pool == NULL) {
		kc = a.k_cache[t] + a.layer_off + (size_t)p * kv_dim;
		vc = a.v_cache[t] + a.layer_off + (size_t)p * kv_dim;
	} else if (write) {
		const size_t off = (size_t)((const int32_t *)a.k_cache[t])[p >> a.bt_shift] *
		    a.bstride + a.layer_off +
		    (size_t)(p & ((1 << a.bt_shift) - 1)) * kv_dim;

		kc = a.k_pool + off;
		vc = a.v_pool + off;
	}

	for (int i = threadIdx.x; i < half; i += blockDim.x)
		cuda_rope_cs(p, i, a.theta_scale, a.freq_scale, &cs[i], &sn[i]);
	__syncthreads();

	/* q: a unit is a rotary pair or one dimension past n_rot */
	for (int u = threadIdx.x; u < a.n_head * units; u += blockDim.x) {
		const int h = u / units, i = u % units;
		float *x = a.q + (size_t)t * a.ldq + (size_t)h * hd;
		const float *b = a.bq != NULL ? a.bq + (size_t)h * hd : NULL;

		if (i < half) {
			const int i0 = a.neox ? i : 2 * i;
			const int i1 = a.neox ? i + half : 2 * i + 1;
			float y0, y1;

			cuda_rope_rotate(biased(x, b, i0), biased(x, b, i1), cs[i],
			    sn[i], &y0, &y1);
			x[i0] = y0;
			x[i1] = y1;
		} else if (b != NULL) {
			const int d = a.n_rot + (i - half);

			x[d] = __fadd_rn(x[d], b[d]);
		}
	}
	if (!write)
		return;
	for (int u = threadIdx.x; u < a.n_head_kv * units; u += blockDim.x) {
		const int h = u / units, i = u % units;
		const float *x = a.k + (size_t)t * a.ldk + (size_t)h * hd;
		const float *b = a.bk != NULL ? a.bk + (size_t)h * hd : NULL;
		uint16_t *o = kc + (size_t)h * hd;

		if (i < half) {
			const int i0 = a.neox ? i : 2 * i;
			const int i1 = a.neox ? i + half : 2 * i + 1;
			float y0, y1;

			cuda_rope_rotate(biased(x, b, i0), biased(x, b, i1), cs[i],
			    sn[i], &y0, &y1);
			o[i0] = cuda_f32_to_f16(y0);
			o[i1] = cuda_f32_to_f16(y1);
		} else {
			const int d = a.n_rot + (i - half);

			o[d] = cuda_f32_to_f16(biased(x, b, d));
		}
	}
	for (int d = threadIdx.x; d < kv_dim; d += blockDim.x)
		vc[d] = cuda_f32_to_f16(biased(a.v + (size_t)t * a.ldv, a.bv, d));
}

} /* namespace */

static int
rope_impl(int n_tok, int n_head, int n_head_kv, int head_dim, int n_rot,
    int neox, float freq_base, float freq_scale, const int *pos, float *q,
    size_t ldq, const float *k, size_t ldk, const float *v, size_t ldv,
    const float *bq, const float *bk, const float *bv,
    uint16_t *const *k_cache, uint16_t *const *v_cache, uint16_t *k_pool,
    uint16_t *v_pool, int bt_shift, size_t bstride, size_t layer_off,
    int n_ctx, void *stream)
{
	rope_args a;

	CUDA_OPS_CHECK(n_tok > 0 && n_head > 0 && n_head_kv > 0 &&
	    head_dim > 0 && n_ctx > 0);
	CUDA_OPS_CHECK(n_rot >= 0 && n_rot % 2 == 0 && n_rot <= head_dim &&
	    n_rot / 2 <= ROPE_MAX_HALF);
	CUDA_OPS_CHECK(pos != NULL && q != NULL && k != NULL && v != NULL &&
	    k_cache != NULL && v_cache != NULL);
	CUDA_OPS_CHECK(n_tok == 1 || (ldq >= (size_t)n_head * head_dim &&
	    ldk >= (size_t)n_head_kv * head_dim &&
	    ldv >= (size_t)n_head_kv * head_dim));
	a.n_head = n_head;
	a.n_head_kv = n_head_kv;
	a.head_dim = head_dim;
	a.n_rot = n_rot;
	a.neox = neox != 0;
	/* On the host with the C library, exactly as the CPU engine. */
	a.theta_scale = n_rot > 0 ? powf(freq_base, -2.0f / (float)n_rot) : 1.0f;
	a.freq_scale = freq_scale;
	a.pos = pos;
	a.q = q;
	a.ldq = ldq;
	a.k = k;
	a.ldk = ldk;
	a.v = v;
	a.ldv = ldv;
	a.bq = bq;
	a.bk = bk;
	a.bv = bv;
	a.k_cache = k_cache;
	a.v_cache = v_cache;
	a.layer_off = layer_off;
	a.n_ctx = n_ctx;
	a.k_pool = k_pool;
	a.v_pool = v_pool;
	a.bt_shift = bt_shift;
	a.bstride = bstride;
	rope_kernel<<<n_tok, ROPE_THREADS, 0, cuda_ops_stream(stream)>>>(a);
	return cuda_ops_launched();
}

extern "C" int
cuda_rope_kv(int n_tok, int n_head, int n_head_kv, int head_dim, int n_rot,
    int neox, float freq_base, float freq_scale, const int *pos, float *q,
    size_t ldq, const float *k, size_t ldk, const float *v, size_t ldv,
    const float *bq, const float *bk, const float *bv,
    uint16_t *const *k_cache, uint16_t *const *v_cache, size_t layer_off,
    int n_ctx, void *stream)
{
	return rope_impl(n_tok, n_head, n_head_kv, head_dim, n_rot, neox, freq_base,
	    freq_scale, pos, q, ldq, k, ldk, v, ldv, bq, bk, bv, k_cache, v_cache, NULL,
	    NULL, 0, 0, layer_off, n_ctx, stream);
}

extern "C" int
cuda_rope_kv_paged(int n_tok, int n_head, int n_head_kv, int head_dim, int n_rot,
    int neox, float freq_base, float freq_scale, const int *pos, float *q,
    size_t ldq, const float *k, size_t ldk, const float *v, size_t ldv,
    const float *bq, const float *bk, const float *bv,
    const int32_t *const *tables, uint16_t *k_pool, uint16_t *v_pool,
    int block_tokens, size_t block_elems, size_t layer_off, int n_ctx, void *stream)
{
	int shift = 0;

	CUDA_OPS_CHECK(tables != NULL && k_pool != NULL && v_pool != NULL);
	CUDA_OPS_CHECK(block_tokens > 0 && (block_tokens & (block_tokens - 1)) == 0);
	while ((1 << shift) < block_tokens)
		shift++;
	return rope_impl(n_tok, n_head, n_head_kv, head_dim, n_rot, neox, freq_base,
	    freq_scale, pos, q, ldq, k, ldk, v, ldv, bq, bk, bv,
	    (uint16_t *const *)tables, (uint16_t *const *)tables, k_pool, v_pool, shift,
	    block_elems, layer_off, n_ctx, stream);
}
