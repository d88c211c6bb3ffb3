/*
 * Attention over the f16 KV caches (cuda_attention in orcd/cuda_ops.h).
 *
 * Short contexts, or enough (token, head) pairs to fill the GPU: one block
 * per (token, head) keeps all scores in shared memory (up to ~56K
 * positions on an H100/H200) and does max, exponentials, sum, f16
 * probabilities and the weighted sum of V in one kernel.
 *
 * Otherwise the context is split, flash-decoding style, but in an order
 * that keeps the CPU's rounding points: the probabilities are rounded to
 * f16 after normalization by the global maximum and sum, so those must be
 * known first.  Four kernels, each over (split, head, token):
 *   A  scores of the split into the workspace, the split's maximum;
 *   B  global maximum (exact: a max of maxima), e = exp(s - max) in place,
 *      the split's sum in double;
 *   C  global sum (splits added in order), p = f16(e / sum), the split's
 *      weighted sum of V;
 *   D  the splits' partial outputs added in order.
 */
#include "orcd/cuda_ops.h"
#include "attention.cuh"

#define ATT_THREADS 256
#define ATT_MIN_SPLIT 64	/* positions per split at least */
#define ATT_SPLIT_FROM 256	/* contexts up to this are never split */
#define ATT_SPLIT_MAX 8192	/* positions per split at most */

namespace {

struct att_args {
	int n_head, group, hd, n_ctx, max_len;
	float scale;
	const int *pos;
	const float *q;
	size_t ldq;
	const uint16_t *const *k_cache;	/* paged: the per-token tables */
	const uint16_t *const *v_cache;
	size_t layer_off;
	/* paged caches (k_pool NULL: contiguous) */
	const uint16_t *k_pool, *v_pool;
	size_t bstride;
	int bt_shift;
	float *out;
	size_t ldo;
	/* split path */
	int ns, sl;
	float *sc;		/* [n_tok][n_head][ns * sl] */
	float *smax;		/* [n_tok][n_head][ns] */
	double *ssum;		/* [n_tok][n_head][ns] */
	float *sout;		/* [n_tok][n_head][ns][hd] */
};

/* Positions token t attends to. */
__device__ __forceinline__ int
att_len(const att_args &a, int t)
{
	int n = a.pos[t] + 1;

	n = n < a.max_len ? n : a.max_len;
	n = n < a.n_ctx ? n : a.n_ctx;
	return n > 0 ? n : 0;
}

__device__ __forceinline__ size_t
att_kv_off(const att_args &a, int h)
{
	return a.layer_off + (size_t)(h / a.group) * a.hd;
}

/* The K (or V) rows of token t, head h. */
__device__ __forceinline__ cuda_kv_rows
att_rows(const att_args &a, int t, int h, bool v)
{
	cuda_kv_rows r;

	r.kv_dim = (size_t)(a.n_head / a.group) * a.hd;
	r.bstride = a.bstride;
	r.bt_shift = a.bt_shift;
	if (a.k_pool == NULL) {
		r.base = (v ? a.v_cache[t] : a.k_cache[t]) + att_kv_off(a, h);
		r.tab = NULL;
	} else {
		r.base = (v ? a.v_pool : a.k_pool) + att_kv_off(a, h);
		r.tab = (const int32_t *)a.k_cache[t];
	}
	return r;
}

__global__ void __launch_bounds__(ATT_THREADS)
att_single(const att_args a)
{
	extern __shared__ float att_smem[];
	__shared__ double dscratch[32];
	__shared__ float fscratch[32];
	__shared__ float red[1024];
	const int h = blockIdx.x, t = blockIdx.y, hd = a.hd;
	float *qf = att_smem, *sc = att_smem + hd;
	float *o = a.out + (size_t)t * a.ldo + (size_t)h * hd;
	const int n = att_len(a, t);

	if (n == 0) {
		for (int d = threadIdx.x; d < hd; d += blockDim.x)
			o[d] = 0.0f;
		return;
	}
	const cuda_kv_rows kr = att_rows(a, t, h, false);
	const cuda_kv_rows vr = att_rows(a, t, h, true);
	float lmax = -INFINITY;

	cuda_att_load_q(a.q + (size_t)t * a.ldq + (size_t)h * hd, hd, qf);
	__syncthreads();
	for (int j = threadIdx.x; j < n; j += blockDim.x) {
		const float s = cuda_att_score(qf, cuda_kv_row(kr, j), hd,
		    a.scale);

		sc[j] = s;
		lmax = fmaxf(lmax, s);
	}
	const float max = cuda_block_max(lmax, fscratch);
	double sum = 0.0;

	for (int j = threadIdx.x; j < n; j += blockDim.x) {
		const float e = cuda_expf_exact(__fsub_rn(sc[j], max));

		sc[j] = e;
		sum += (double)e;
	}
	sum = cuda_block_sum_d(sum, dscratch);

	const float inv = (float)(1.0 / sum);

	for (int j = threadIdx.x; j < n; j += blockDim.x)
		sc[j] = cuda_att_p16(sc[j], inv);
	__syncthreads();

	const float r = cuda_att_pv(vr, sc, 0, n, hd, red);

	if (threadIdx.x < hd)
		o[threadIdx.x] = r;
}

/* The split's range [*j0, *j1) of token t; false if empty. */
__device__ __forceinline__ bool
att_split_range(const att_args &a, int t, int s, int *j0, int *j1, int *nvalid)
{
	const int n = att_len(a, t);

	*nvalid = (n + a.sl - 1) / a.sl;
	*j0 = s * a.sl;
	*j1 = min(*j0 + a.sl, n);
	return *j0 < *j1;
}

__global__ void __launch_bounds__(ATT_THREADS)
att_split_scores(const att_args a)
{
	__shared__ float qf[256];
	__shared__ float fscratch[32];
	const int s = blockIdx.x, h = blockIdx.y, t = blockIdx.z, hd = a.hd;
	const size_t th = (size_t)t * a.n_head + h;
	int j0, j1, nv;

	if (!att_split_range(a, t, s, &j0, &j1, &nv))
		return;

	const cuda_kv_rows kr = att_rows(a, t, h, false);
	float *sc = a.sc + th * a.ns * a.sl;
	float lmax = -INFINITY;

	cuda_att_load_q(a.q + (size_t)t * a.ldq + (size_t)h * hd, hd, qf);
	__syncthreads();
	for (int j = j0 + threadIdx.x; j < j1; j += blockDim.x) {
		const float v = cuda_att_score(qf, cuda_kv_row(kr, j), hd,
		    a.scale);

		sc[j] = v;
		lmax = fmaxf(lmax, v);
	}
	lmax = cuda_block_max(lmax, fscratch);
	if (threadIdx.x == 0)
		a.smax[th * a.ns + s] = lmax;
}

__global__ void __launch_bounds__(ATT_THREADS)
att_split_exp(const att_args a)
{
	__shared__ double dscratch[32];
	const int s = blockIdx.x, h = blockIdx.y, t = blockIdx.z;
	const size_t th = (size_t)t * a.n_head + h;
	int j0, j1, nv;

	if (!att_split_range(a, t, s, &j0, &j1, &nv))
		return;

	float max = -INFINITY;

	for (int i = 0; i < nv; i++)
		max = fmaxf(max, a.smax[th * a.ns + i]);

	float *sc = a.sc + th * a.ns * a.sl;
	double sum = 0.0;

	for (int j = j0 + threadIdx.x; j < j1; j += blockDim.x) {
		const float e = cuda_expf_exact(__fsub_rn(sc[j], max));

		sc[j] = e;
		sum += (double)e;
	}
	sum = cuda_block_sum_d(sum, dscratch);
	if (threadIdx.x == 0)
		a.ssum[th * a.ns + s] = sum;
}

__global__ void __launch_bounds__(ATT_THREADS)
att_split_pv(const att_args a)
{
	__shared__ float red[1024];
	extern __shared__ float att_smem[];	/* sl probabilities */
	const int s = blockIdx.x, h = blockIdx.y, t = blockIdx.z, hd = a.hd;
	const size_t th = (size_t)t * a.n_head + h;
	int j0, j1, nv;

	if (!att_split_range(a, t, s, &j0, &j1, &nv))
		return;

	double sum = 0.0;

	for (int i = 0; i < nv; i++)
		sum += a.ssum[th * a.ns + i];

	const float inv = (float)(1.0 / sum);
	const float *sc = a.sc + th * a.ns * a.sl;

	for (int j = j0 + threadIdx.x; j < j1; j += blockDim.x)
		att_smem[j - j0] = cuda_att_p16(sc[j], inv);
	__syncthreads();

	const float r = cuda_att_pv(att_rows(a, t, h, true), att_smem, j0, j1, hd,
	    red);

	if (threadIdx.x < hd)
		a.sout[(th * a.ns + s) * hd + threadIdx.x] = r;
}

__global__ void __launch_bounds__(ATT_THREADS)
att_split_reduce(const att_args a)
{
	const int h = blockIdx.x, t = blockIdx.y, hd = a.hd;
	const size_t th = (size_t)t * a.n_head + h;
	const int n = att_len(a, t), nv = (n + a.sl - 1) / a.sl;
	float *o = a.out + (size_t)t * a.ldo + (size_t)h * hd;

	for (int d = threadIdx.x; d < hd; d += blockDim.x) {
		float r = 0.0f;

		for (int s = 0; s < nv; s++)
			r += a.sout[(th * a.ns + s) * hd + d];
		o[d] = r;
	}
}

/* Static shared memory of att_single, next to its dynamic part. */
constexpr size_t ATT_SINGLE_STATIC = 32 * 8 + 32 * 4 + 1024 * 4;

/* Longest context the single-block kernel holds in shared memory. */
int
att_single_max(int hd)
{
	int dev = 0, optin = 48 * 1024;

	if (cudaGetDevice(&dev) != cudaSuccess ||
	    cudaDeviceGetAttribute(&optin,
	    cudaDevAttrMaxSharedMemoryPerBlockOptin, dev) != cudaSuccess)
		optin = 48 * 1024;
	return (int)(((size_t)optin - ATT_SINGLE_STATIC - 1024) / 4) - hd;
}

struct att_plan {
	bool split;
	int ns, sl;
	int ns_bound;	/* >= ns, and >= ns of any shorter context */
};

int
round_up(int x, int m)
{
	return (x + m - 1) / m * m;
}

/* How a call is run; the same for the same arguments on the same device. */
att_plan
att_plan_for(int n_tok, int n_head, int hd, int max_len, int split_len,
    int sms, int single_max)
{
	att_plan p;
	int ns = 1;

	if (split_len >= max_len && max_len <= single_max) {
		ns = 1;			/* forced: no split */
	} else if (split_len > 0) {
		int sl = split_len < ATT_MIN_SPLIT ? ATT_MIN_SPLIT : split_len;

		sl = round_up(sl < ATT_SPLIT_MAX ? sl : ATT_SPLIT_MAX, 32);
		ns = (max_len + sl - 1) / sl;
	} else {
		const long long pairs = (long long)n_tok * n_head;

		if (pairs < sms && max_len > ATT_SPLIT_FROM) {
			const int want = (int)((2LL * sms + pairs - 1) / pairs);
			const int most = (max_len + ATT_SPLIT_FROM - 1) /
			    ATT_SPLIT_FROM;

			ns = want < most ? want : most;
		}
		if (max_len > single_max) {
			const int need = (max_len + single_max - 1) / single_max;

			ns = ns > need ? ns : need;
		}
	}
	ns = ns < 1 ? 1 : ns;
	p.split = ns > 1 || max_len > single_max;
	/* A split's probabilities sit in shared memory (att_split_pv). */
	if (p.split && ns < (max_len + ATT_SPLIT_MAX - 1) / ATT_SPLIT_MAX)
		ns = (max_len + ATT_SPLIT_MAX - 1) / ATT_SPLIT_MAX;
	p.ns_bound = ns;
	p.sl = round_up((max_len + ns - 1) / ns, 32);
	p.ns = (max_len + p.sl - 1) / p.sl;
	(void)hd;
	return p;
}

/* Workspace sections, each 256-byte aligned. */
struct att_layout {
	size_t sc, smax, ssum, sout, total;
};

size_t
align256(size_t x)
{
	return (x + 255) & ~(size_t)255;
}

att_layout
att_layout_for(int n_tok, int n_head, int hd, int ns, size_t ls)
{
	const size_t th = (size_t)n_tok * n_head;
	att_layout l;

	l.sc = 0;
	l.smax = align256(th * ls * sizeof(float));
	l.ssum = l.smax + align256(th * ns * sizeof(float));
	l.sout = l.ssum + align256(th * ns * sizeof(double));
	l.total = l.sout + align256(th * ns * hd * sizeof(float));
	return l;
}

} /* namespace */

extern "C" size_t
cuda_attention_workspace_bytes(int n_tok, int n_head, int head_dim,
    int max_len, int split_len)
{
	if (n_tok <= 0 || n_head <= 0 || head_dim <= 0 || max_len <= 0)
		return 0;

	const int sms = cuda_ops_sm_count(), single = att_single_max(head_dim);
	size_t most = 0;

	/*
	 * The most any call with at most n_tok tokens and at most max_len
	 * positions needs: the number of splits only grows with max_len and
	 * n * sl <= max_len + 32 n, so the plan at max_len bounds every
	 * shorter one; fewer tokens may split more, so all counts are tried.
	 */
	for (int n = 1; n <= n_tok; n++) {
		const att_plan p = att_plan_for(n, n_head, head_dim, max_len,
		    split_len, sms, single);

		if (!p.split)
			continue;

		const size_t ls = (size_t)max_len + 32 * (size_t)p.ns_bound;
		const att_layout l = att_layout_for(n, n_head, head_dim,
		    p.ns_bound, ls);

		most = l.total > most ? l.total : most;
	}
	return most;
}

static int
attention_impl(int n_tok, int n_head, int n_head_kv, int head_dim,
    const int *pos, const float *q, size_t ldq,
    const uint16_t *const *k_cache, const uint16_t *const *v_cache,
    const uint16_t *k_pool, const uint16_t *v_pool, int bt_shift, size_t bstride,
    size_t layer_off, int n_ctx, int max_len, int split_len, void *workspace,
    size_t workspace_bytes, float *out, size_t ldo, void *stream)
{
	cudaStream_t s = cuda_ops_stream(stream);
	att_args a;

	CUDA_OPS_CHECK(n_tok > 0 && n_tok <= 65535 && n_head > 0 &&
	    n_head <= 65535 && n_head_kv > 0 && n_head % n_head_kv == 0);
	CUDA_OPS_CHECK(head_dim > 0 && head_dim % 8 == 0 && head_dim <= 256);
	CUDA_OPS_CHECK(n_ctx > 0 && max_len > 0);
	CUDA_OPS_CHECK(pos != NULL && q != NULL && k_cache != NULL &&
	    v_cache != NULL && out != NULL);
	CUDA_OPS_CHECK(n_tok == 1 || (ldq >= (size_t)n_head * head_dim &&
	    ldo >= (size_t)n_head * head_dim));
	/* 16-byte rows: every head's slice of a cache row stays aligned. */
	CUDA_OPS_CHECK(layer_off % 8 == 0);

	if (max_len > n_ctx)
		max_len = n_ctx;

	const int sms = cuda_ops_sm_count(), single = att_single_max(head_dim);
	const att_plan p = att_plan_for(n_tok, n_head, head_dim, max_len,
	    split_len, sms, single);

	a.n_head = n_head;
	a.group = n_head / n_head_kv;
	a.hd = head_dim;
	a.n_ctx = n_ctx;
	a.max_len = max_len;
	a.scale = 1.0f / sqrtf((float)head_dim);
	a.pos = pos;
	a.q = q;
	a.ldq = ldq;
	a.k_cache = k_cache;
	a.v_cache = v_cache;
	a.layer_off = layer_off;
	a.k_pool = k_pool;
	a.v_pool = v_pool;
	a.bstride = bstride;
	a.bt_shift = bt_shift;
	a.out = out;
	a.ldo = ldo;
	a.ns = p.ns;
	a.sl = p.sl;
	a.sc = a.smax = a.sout = NULL;
	a.ssum = NULL;

	if (!p.split) {
		const size_t smem = ((size_t)head_dim + (size_t)max_len) *
		    sizeof(float);
		cudaError_t e;

		/* the 48 KB default covers static and dynamic shared memory
		 * together: opt in beyond it */
		if (smem + ATT_SINGLE_STATIC > 48 * 1024 && (e = cudaFuncSetAttribute(att_single,
		    cudaFuncAttributeMaxDynamicSharedMemorySize, (int)smem)) !=
		    cudaSuccess)
			return (int)e;
		att_single<<<dim3(n_head, n_tok), ATT_THREADS, smem, s>>>(a);
		return cuda_ops_launched();
	}

	const att_layout l = att_layout_for(n_tok, n_head, head_dim, p.ns,
	    (size_t)p.ns * p.sl);
	uint8_t *ws = (uint8_t *)workspace;
	const dim3 grid(p.ns, n_head, n_tok);
	int rc;

	CUDA_OPS_CHECK(workspace != NULL && workspace_bytes >= l.total &&
	    cuda_ops_aligned(workspace, 16));
	a.sc = (float *)(ws + l.sc);
	a.smax = (float *)(ws + l.smax);
	a.ssum = (double *)(ws + l.ssum);
	a.sout = (float *)(ws + l.sout);
	att_split_scores<<<grid, ATT_THREADS, 0, s>>>(a);
	if ((rc = cuda_ops_launched()) != 0)
		return rc;
	att_split_exp<<<grid, ATT_THREADS, 0, s>>>(a);
	if ((rc = cuda_ops_launched()) != 0)
		return rc;
	att_split_pv<<<grid, ATT_THREADS, p.sl * sizeof(float), s>>>(a);
	if ((rc = cuda_ops_launched()) != 0)
		return rc;
	att_split_reduce<<<dim3(n_head, n_tok), ATT_THREADS, 0, s>>>(a);
	return cuda_ops_launched();
}

extern "C" int
cuda_attention(int n_tok, int n_head, int n_head_kv, int head_dim,
    const int *pos, const float *q, size_t ldq,
    const uint16_t *const *k_cache, const uint16_t *const *v_cache,
    size_t layer_off, int n_ctx, int max_len, int split_len, void *workspace,
    size_t workspace_bytes, float *out, size_t ldo, void *stream)
{
	return attention_impl(n_tok, n_head, n_head_kv, head_dim, pos, q, ldq, k_cache,
	    v_cache, NULL, NULL, 0, 0, layer_off, n_ctx, max_len, split_len, workspace,
	    workspace_bytes, out, ldo, stream);
}

extern "C" int
cuda_attention_paged(int n_tok, int n_head, int n_head_kv, int head_dim,
    const int *pos, const float *q, size_t ldq, const int32_t *const *tables,
    const uint16_t *k_pool, const uint16_t *v_pool, int block_tokens,
    size_t block_elems, size_t layer_off, int n_ctx, int max_len, int split_len,
    void *workspace, size_t workspace_bytes, float *out, size_t ldo, void *stream)
{
	int shift = 0;

	CUDA_OPS_CHECK(tables != NULL && k_pool != NULL && v_pool != NULL);
	CUDA_OPS_CHECK(block_tokens > 0 && (block_tokens & (block_tokens - 1)) == 0);
	CUDA_OPS_CHECK(block_elems % 8 == 0);
	while ((1 << shift) < block_tokens)
		shift++;
	return attention_impl(n_tok, n_head, n_head_kv, head_dim, pos, q, ldq,
	    (const uint16_t *const *)tables, (const uint16_t *const *)tables, k_pool,
	    v_pool, shift, block_elems, layer_off, n_ctx, max_len, split_len, workspace,
	    workspace_bytes, out, ldo, stream);
}
