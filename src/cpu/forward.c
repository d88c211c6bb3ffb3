/*
 * CPU forward pass (see forward.h).  One call runs every layer over the whole
 * batch: matrix products are row-chunked over the pool (several matrices that
 * share an input run as one pool job, so a layer costs five pool barriers),
 * attention is split by (token, head).  The rounding points follow llama.cpp
 * so greedy tokens agree with it: K and V are stored as f16, q and the
 * softmax weights are rounded to f16 before their dot products, RMSNorm sums
 * in double, RoPE angles are built by repeated float multiplication.
 */
#include <errno.h>
#include <math.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>

#include "orcd/dtype.h"
#include "cpu/forward.h"
#include "cpu/pool.h"
#include "cpu/quant.h"
#include "model.h"

/* Least row stride (elements) of the gathered V in attention: 272 bytes,
 * above the 256 under which the kernels group rows differently. */
#define VT_MIN_LD 136

#define ACT_SLOTS 6       /* distinct activation types per input */
#define MM_MAX_JOBS 3

struct act_slot {
	int type;                 /* -1: empty */
	uint8_t *buf;
	size_t cap;
	size_t stride;
};

struct cpu_engine {
	const struct model *m;
	struct pool *pool;
	int n_threads;
	int cap_tokens;           /* scratch sized for this many tokens */
	int cap_ctx;              /* per-worker attention scratch positions */

	float *x;                 /* [cap][n_embd] residual stream */
	float *xn;                /* [cap][n_embd] normed input */
	float *q, *k, *v;         /* [cap][q_dim], [cap][kv_dim] x2 */
	float *att;               /* [cap][q_dim] attention output */
	float *proj;              /* [cap][n_embd] projection output */
	float *gate, *up;         /* [cap][n_ff] */
	float *out_rows;          /* [cap][n_embd] rows that need logits */

	/* activations converted to each weight's dot-product type */
	const float *act_src;
	int act_n, act_rows;
	struct act_slot act[ACT_SLOTS];

	/* per worker attention scratch */
	float *w_scores;          /* [n_threads][cap_ctx] */
	uint16_t *w_p16;          /* [n_threads][cap_ctx] */
	uint16_t *w_vt;           /* [n_threads][head_dim][cap_ctx]: V gathered
	                           * from the blocks into one transposed row set */
	uint16_t *w_q16;          /* [n_threads][head_dim] */

	float *rope_cos, *rope_sin; /* [cap][n_rot/2] */
};

/* ------------------------------------------------------------ KV cache */

uint64_t
cpu_kv_bytes(const struct model *m, int n_ctx)
{
	const struct model_hparams *hp = &m->hp;

	return 2ull * (uint64_t)hp->n_layer * (uint64_t)n_ctx *
	    (uint64_t)hp->n_head_kv * (uint64_t)hp->head_dim * sizeof(uint16_t);
}

uint64_t
cpu_kv_block_bytes(const struct model *m, int block_tokens)
{
	return cpu_kv_bytes(m, block_tokens);
}

static void
pool_arrays_free(struct cpu_kv_pool *p)
{
	free(p->free_ids);
	free(p->ref);
	free(p->hash);
	free(p->tokens);
	free(p->lru_prev);
	free(p->lru_next);
	free(p->map);
	free(p);
}

/* ---- the prefix cache (loop thread) */

static uint64_t
chain_hash(uint64_t prev, const int32_t *t, int n)
{
	uint64_t h = prev ^ 0x9e3779b97f4a7c15ull;

	for (int i = 0; i < n; i++) {
		h ^= (uint32_t)t[i];
		h *= 0x100000001b3ull;
		h ^= h >> 29;
	}
	return h == 0 ? 1 : h;   /* 0 marks "not published" */
}

static void
lru_remove(struct cpu_kv_pool *p, int b)
{
	int pr = p->lru_prev[b], nx = p->lru_next[b];

	if (pr >= 0)
		p->lru_next[pr] = nx;
	else
		p->lru_head = nx;
	if (nx >= 0)
		p->lru_prev[nx] = pr;
	else
		p->lru_tail = pr;
	p->n_cached--;
}

static void
lru_push(struct cpu_kv_pool *p, int b)
{
	p->lru_prev[b] = p->lru_tail;
	p->lru_next[b] = -1;
	if (p->lru_tail >= 0)
		p->lru_next[p->lru_tail] = b;
	else
		p->lru_head = b;
	p->lru_tail = b;
	p->n_cached++;
}

static int
map_find(const struct cpu_kv_pool *p, uint64_t h, const int32_t *t)
{
	for (uint32_t i = (uint32_t)h & (uint32_t)(p->map_cap - 1);; i = (i + 1) & (uint32_t)(p->map_cap - 1)) {
		int b = p->map[i];

		if (b < 0)
			return -1;
		if (p->hash[b] == h && memcmp(p->tokens + (size_t)b * p->block_tokens, t,
		    (size_t)p->block_tokens * sizeof(int32_t)) == 0)
			return b;
	}
}

static void
map_insert(struct cpu_kv_pool *p, int b)
{
	uint32_t i = (uint32_t)p->hash[b] & (uint32_t)(p->map_cap - 1);

	while (p->map[i] >= 0)
		i = (i + 1) & (uint32_t)(p->map_cap - 1);
	p->map[i] = b;
}

/* Removes block b from the map (backward-shift deletion keeps probe
 * chains intact) and marks it unpublished. */
static void
map_erase(struct cpu_kv_pool *p, int b)
{
	uint32_t mask = (uint32_t)(p->map_cap - 1), i = (uint32_t)p->hash[b] & mask, j;

	while (p->map[i] != b)
		i = (i + 1) & mask;
	p->map[i] = -1;
	for (j = (i + 1) & mask; p->map[j] >= 0; j = (j + 1) & mask) {
		int c = p->map[j];
		uint32_t home = (uint32_t)p->hash[c] & mask;

		/* c may move to the hole at i if its home is not in (i, j] */
		if (((j - home) & mask) >= ((j - i) & mask)) {
			p->map[i] = c;
			p->map[j] = -1;
			i = j;
		}
	}
	p->hash[b] = 0;
}

/* A block for a sequence: a free one, else the oldest cached one. */
static int
pool_take(struct cpu_kv_pool *p)
{
	int b;

	if (p->n_free > 0) {
		b = p->free_ids[--p->n_free];
	} else if (p->lru_head >= 0) {
		b = p->lru_head;
		lru_remove(p, b);
		map_erase(p, b);
	} else {
		return -1;
	}
	p->ref[b] = 1;
	__atomic_add_fetch(&p->n_used_atomic, 1, __ATOMIC_RELAXED);
	return b;
}

static void
pool_put(struct cpu_kv_pool *p, int b)
{
	if (--p->ref[b] > 0)
		return;
	__atomic_sub_fetch(&p->n_used_atomic, 1, __ATOMIC_RELAXED);
	if (p->hash[b] != 0)
		lru_push(p, b);      /* published: keep it for reuse */
	else
		p->free_ids[p->n_free++] = b;
}

int
cpu_kv_attach_prefix(struct cpu_kv *kv, const int32_t *tokens, int n)
{
	struct cpu_kv_pool *p = kv->pool;
	int bt = p->block_tokens, got = 0;
	uint64_t h = 0;

	if (kv->n_blocks != 0)
		return 0;
	for (int i = 0; (i + 1) * bt <= n && (i + 1) * bt <= kv->n_ctx; i++) {
		uint64_t hi = chain_hash(h, tokens + (size_t)i * bt, bt);
		int b = map_find(p, hi, tokens + (size_t)i * bt);

		if (b < 0)
			break;
		if (p->ref[b]++ == 0) {
			lru_remove(p, b);
			__atomic_add_fetch(&p->n_used_atomic, 1, __ATOMIC_RELAXED);
		}
		kv->blocks[kv->n_blocks++] = b;
		h = hi;
		got += bt;
	}
	kv->n_published = kv->n_blocks;
	kv->chain = h;
	kv->n_used = got;
	p->n_reused += (uint64_t)got;
	return got;
}

void
cpu_kv_publish(struct cpu_kv *kv, const int32_t *tokens, int n_done)
{
	struct cpu_kv_pool *p = kv->pool;
	int bt = p->block_tokens;

	while ((kv->n_published + 1) * bt <= n_done && kv->n_published < kv->n_blocks) {
		int i = kv->n_published, b = kv->blocks[i];
		uint64_t h = chain_hash(kv->chain, tokens + (size_t)i * bt, bt);

		kv->chain = h;
		kv->n_published++;
		if (p->hash[b] != 0 || map_find(p, h, tokens + (size_t)i * bt) >= 0)
			continue;   /* already there (this block or an equal one) */
		p->hash[b] = h;
		memcpy(p->tokens + (size_t)b * bt, tokens + (size_t)i * bt,
		    (size_t)bt * sizeof(int32_t));
		map_insert(p, b);
	}
}

int
cpu_kv_pool_new(const struct model *m, int n_blocks, int block_tokens,
    struct cpu_kv_pool **out, struct orcd_err *err)
{
	const struct model_hparams *hp = &m->hp;
	struct cpu_kv_pool *p;
	size_t half;
	void *map;

	*out = NULL;
	if (n_blocks <= 0 || block_tokens <= 0)
		return orcd_errf(err, "kv: pool of %d blocks of %d positions is empty",
		    n_blocks, block_tokens);
	p = calloc(1, sizeof(*p));
	if (p == NULL)
		return orcd_errf(err, "kv: out of memory");
	for (p->map_cap = 16; p->map_cap < 2 * n_blocks && p->map_cap < (1 << 30);)
		p->map_cap *= 2;
	p->free_ids = malloc((size_t)n_blocks * sizeof(int32_t));
	p->ref = calloc((size_t)n_blocks, sizeof(int32_t));
	p->hash = calloc((size_t)n_blocks, sizeof(uint64_t));
	p->tokens = malloc((size_t)n_blocks * (size_t)block_tokens * sizeof(int32_t));
	p->lru_prev = malloc((size_t)n_blocks * sizeof(int32_t));
	p->lru_next = malloc((size_t)n_blocks * sizeof(int32_t));
	p->map = malloc((size_t)p->map_cap * sizeof(int32_t));
	if (p->free_ids == NULL || p->ref == NULL || p->hash == NULL || p->tokens == NULL ||
	    p->lru_prev == NULL || p->lru_next == NULL || p->map == NULL) {
		pool_arrays_free(p);
		return orcd_errf(err, "kv: out of memory for a pool of %d blocks", n_blocks);
	}
	memset(p->map, 0xff, (size_t)p->map_cap * sizeof(int32_t));
	p->lru_head = p->lru_tail = -1;
	p->block_tokens = block_tokens;
	p->n_blocks = n_blocks;
	p->kv_dim = hp->n_head_kv * hp->head_dim;
	p->n_layer = hp->n_layer;
	p->block_elems = (size_t)hp->n_layer * (size_t)block_tokens * (size_t)p->kv_dim;
	half = (size_t)n_blocks * p->block_elems * sizeof(uint16_t);
	p->map_bytes = 2 * half;
	/* zero pages committed on first touch: a large pool costs nothing
	 * until sequences use it */
	map = mmap(NULL, p->map_bytes, PROT_READ | PROT_WRITE,
	    MAP_PRIVATE | MAP_ANONYMOUS | MAP_NORESERVE, -1, 0);
	if (map == MAP_FAILED) {
		pool_arrays_free(p);
		return orcd_errf(err, "kv: cannot map a pool of %d blocks (%.1f MB): %s",
		    n_blocks, (double)(2 * half) / 1e6, strerror(errno));
	}
	p->k = map;
	p->v = (uint16_t *)((char *)map + half);
	/* lowest ids on top: a lightly used pool touches little memory */
	for (int i = 0; i < n_blocks; i++)
		p->free_ids[i] = n_blocks - 1 - i;
	p->n_free = n_blocks;
	*out = p;
	return 0;
}

void
cpu_kv_pool_free(struct cpu_kv_pool *p)
{
	if (p == NULL)
		return;
	munmap(p->k, p->map_bytes);
	pool_arrays_free(p);
}

int
cpu_kv_pool_used(const struct cpu_kv_pool *p)
{
	return __atomic_load_n(&p->n_used_atomic, __ATOMIC_RELAXED);
}

int
cpu_kv_init(struct cpu_kv_pool *p, int n_ctx, struct cpu_kv *kv, struct orcd_err *err)
{
	int n_tab;

	memset(kv, 0, sizeof(*kv));
	if (n_ctx <= 0)
		return orcd_errf(err, "kv: context size %d must be positive", n_ctx);
	n_tab = (int)(((int64_t)n_ctx + p->block_tokens - 1) / p->block_tokens);
	kv->blocks = malloc((size_t)n_tab * sizeof(int32_t));
	if (kv->blocks == NULL)
		return orcd_errf(err, "kv: out of memory for a table of %d blocks", n_tab);
	kv->pool = p;
	kv->n_ctx = n_ctx;
	return 0;
}

int
cpu_kv_reserve(struct cpu_kv *kv, int n_pos, struct orcd_err *err)
{
	struct cpu_kv_pool *p = kv->pool;
	int need;

	if (n_pos > kv->n_ctx)
		return orcd_errf(err, "kv: %d positions exceed the sequence's context of %d",
		    n_pos, kv->n_ctx);
	need = (n_pos + p->block_tokens - 1) / p->block_tokens;
	while (kv->n_blocks < need) {
		int b = pool_take(p);

		if (b < 0)
			return orcd_errf(err, "kv: the pool's %d blocks are all in use",
			    p->n_blocks);
		kv->blocks[kv->n_blocks++] = b;
	}
	return 0;
}

void
cpu_kv_release(struct cpu_kv *kv)
{
	struct cpu_kv_pool *p = kv->pool;

	if (p != NULL)
		for (int i = kv->n_blocks - 1; i >= 0; i--)
			pool_put(p, kv->blocks[i]);
	free(kv->blocks);
	memset(kv, 0, sizeof(*kv));
}

/* Where position pos of a layer lives: K row (kv_dim elements) and the
 * first V element of the block's transposed rows. */
static inline uint16_t *
kv_k_row(const struct cpu_kv *kv, int layer, int pos)
{
	const struct cpu_kv_pool *p = kv->pool;
	int bt = p->block_tokens;

	return p->k + (size_t)kv->blocks[pos / bt] * p->block_elems +
	    ((size_t)layer * bt + (size_t)(pos % bt)) * p->kv_dim;
}

static inline uint16_t *
kv_v_block(const struct cpu_kv *kv, int layer, int block)
{
	const struct cpu_kv_pool *p = kv->pool;

	return p->v + (size_t)kv->blocks[block] * p->block_elems +
	    (size_t)layer * p->kv_dim * p->block_tokens;
}

/* ------------------------------------------------------------ engine */

static void
engine_free_scratch(struct cpu_engine *e)
{
	free(e->x); free(e->xn); free(e->q); free(e->k); free(e->v);
	free(e->att); free(e->proj); free(e->gate); free(e->up);
	free(e->out_rows); free(e->rope_cos); free(e->rope_sin);
	e->x = e->xn = e->q = e->k = e->v = e->att = e->proj = NULL;
	e->gate = e->up = e->out_rows = e->rope_cos = e->rope_sin = NULL;
	e->cap_tokens = 0;
}

static int
engine_reserve_tokens(struct cpu_engine *e, int n, struct orcd_err *err)
{
	const struct model_hparams *hp = &e->m->hp;
	size_t q_dim = (size_t)hp->n_head * hp->head_dim;
	size_t kv_dim = (size_t)hp->n_head_kv * hp->head_dim;
	size_t nn;

	if (n <= e->cap_tokens)
		return 0;
	engine_free_scratch(e);
	nn = (size_t)n;
	e->x = malloc(nn * hp->n_embd * sizeof(float));
	e->xn = malloc(nn * hp->n_embd * sizeof(float));
	e->q = malloc(nn * q_dim * sizeof(float));
	e->k = malloc(nn * kv_dim * sizeof(float));
	e->v = malloc(nn * kv_dim * sizeof(float));
	e->att = malloc(nn * q_dim * sizeof(float));
	e->proj = malloc(nn * hp->n_embd * sizeof(float));
	e->gate = malloc(nn * hp->n_ff * sizeof(float));
	e->up = malloc(nn * hp->n_ff * sizeof(float));
	e->out_rows = malloc(nn * hp->n_embd * sizeof(float));
	e->rope_cos = malloc(nn * (hp->n_rot / 2 + 1) * sizeof(float));
	e->rope_sin = malloc(nn * (hp->n_rot / 2 + 1) * sizeof(float));
	if (!e->x || !e->xn || !e->q || !e->k || !e->v || !e->att || !e->proj ||
	    !e->gate || !e->up || !e->out_rows || !e->rope_cos || !e->rope_sin) {
		engine_free_scratch(e);
		return orcd_errf(err, "cpu: out of memory for a batch of %d tokens", n);
	}
	e->cap_tokens = n;
	return 0;
}

static int
engine_reserve_ctx(struct cpu_engine *e, int n_ctx, struct orcd_err *err)
{
	size_t nt = (size_t)e->n_threads;

	if (n_ctx <= e->cap_ctx)
		return 0;
	free(e->w_scores);
	free(e->w_p16);
	free(e->w_vt);
	e->w_scores = malloc(nt * (size_t)n_ctx * sizeof(float));
	e->w_p16 = malloc(nt * (size_t)n_ctx * sizeof(uint16_t));
	e->w_vt = malloc(nt * (size_t)(n_ctx > VT_MIN_LD ? n_ctx : VT_MIN_LD) *
	    (size_t)e->m->hp.head_dim * sizeof(uint16_t));
	if (e->w_scores == NULL || e->w_p16 == NULL || e->w_vt == NULL) {
		free(e->w_scores);
		free(e->w_p16);
		free(e->w_vt);
		e->w_scores = NULL;
		e->w_p16 = NULL;
		e->w_vt = NULL;
		e->cap_ctx = 0;
		return orcd_errf(err, "cpu: out of memory for attention scratch");
	}
	e->cap_ctx = n_ctx;
	return 0;
}

int
cpu_engine_new(const struct model *m, int n_threads, struct cpu_engine **out,
    struct orcd_err *err)
{
	struct cpu_engine *e;

	*out = NULL;
	quant_init();
	e = calloc(1, sizeof(*e));
	if (e == NULL)
		return orcd_errf(err, "cpu: out of memory");
	e->m = m;
	e->pool = pool_new(n_threads);
	if (e->pool == NULL) {
		free(e);
		return orcd_errf(err, "cpu: cannot start the thread pool");
	}
	e->n_threads = pool_size(e->pool);
	for (int i = 0; i < ACT_SLOTS; i++)
		e->act[i].type = -1;
	e->w_q16 = malloc((size_t)e->n_threads * (size_t)m->hp.head_dim * sizeof(uint16_t));
	if (e->w_q16 == NULL || engine_reserve_tokens(e, 1, err) != 0 ||
	    engine_reserve_ctx(e, 256, err) != 0) {
		cpu_engine_free(e);
		return orcd_errf(err, "cpu: out of memory");
	}
	*out = e;
	return 0;
}

void
cpu_engine_free(struct cpu_engine *e)
{
	if (e == NULL)
		return;
	pool_free(e->pool);
	engine_free_scratch(e);
	for (int i = 0; i < ACT_SLOTS; i++)
		free(e->act[i].buf);
	free(e->w_scores);
	free(e->w_p16);
	free(e->w_vt);
	free(e->w_q16);
	free(e);
}

int
cpu_engine_threads(const struct cpu_engine *e)
{
	return e->n_threads;
}

struct pool *
cpu_engine_pool(struct cpu_engine *e)
{
	return e->pool;
}

/* ------------------------------------------------------------ activations */

struct act_job {
	struct cpu_engine *e;
	struct act_slot *slot;
	const float *src;
	int n;
};

static void
act_task(void *arg, int row, int worker)
{
	struct act_job *j = arg;

	quant_quantize_row(j->slot->type, j->src + (size_t)row * j->n,
	    j->slot->buf + (size_t)row * j->slot->stride, j->n);
}

/* Sets the input rows (rows x n floats) the next matrix products read. */
static void
act_set_input(struct cpu_engine *e, const float *src, int rows, int n)
{
	e->act_src = src;
	e->act_rows = rows;
	e->act_n = n;
	for (int i = 0; i < ACT_SLOTS; i++)
		e->act[i].type = -1;
}

/* Returns the input converted to type vt (computed once per input). */
static const uint8_t *
act_get(struct cpu_engine *e, int vt, size_t *stride)
{
	struct act_slot *s = NULL;
	uint64_t row;

	if (vt == ORCD_DTYPE_F32) {
		*stride = (size_t)e->act_n * sizeof(float);
		return (const uint8_t *)e->act_src;
	}
	for (int i = 0; i < ACT_SLOTS; i++) {
		if (e->act[i].type == vt) {
			*stride = e->act[i].stride;
			return e->act[i].buf;
		}
		if (s == NULL && e->act[i].type == -1)
			s = &e->act[i];
	}
	if (!dtype_row_bytes(vt, (uint64_t)e->act_n, &row))
		abort(); /* model validation guarantees whole blocks */
	if (s->cap < row * (size_t)e->act_rows) {
		free(s->buf);
		s->cap = row * (size_t)e->act_rows;
		s->buf = malloc(s->cap);
		if (s->buf == NULL)
			abort();
	}
	s->type = vt;
	s->stride = row;
	struct act_job j = { .e = e, .slot = s, .src = e->act_src, .n = e->act_n };
	if (e->act_rows >= 4)
		pool_run(e->pool, act_task, &j, e->act_rows);
	else
		for (int r = 0; r < e->act_rows; r++)
			act_task(&j, r, 0);
	*stride = s->stride;
	return s->buf;
}

/* ------------------------------------------------------------ matmul */

struct mm_job {
	const struct model_weight *w;
	const uint8_t *act;
	size_t act_stride;
	float *out;               /* [n_cols][ldo] */
	size_t ldo;
	int rows_per_task;
	int row_tasks;
	int first_task;
};

struct mm_run {
	struct mm_job jobs[MM_MAX_JOBS];
	int n_jobs;
	int n_cols;
	int col_chunk;
	int col_tasks;
	int n_tasks;
};

static void
mm_task(void *arg, int task, int worker)
{
	struct mm_run *r = arg;
	int ct = task % r->col_tasks;
	int rt = task / r->col_tasks;
	struct mm_job *j = &r->jobs[0];

	for (int i = 1; i < r->n_jobs; i++)
		if (rt >= r->jobs[i].first_task)
			j = &r->jobs[i];
	rt -= j->first_task;
	int r0 = rt * j->rows_per_task;
	int nr = j->rows_per_task;
	if (r0 + nr > j->w->ne1)
		nr = (int)j->w->ne1 - r0;
	int c0 = ct * r->col_chunk;
	int nc = r->col_chunk;
	if (c0 + nc > r->n_cols)
		nc = r->n_cols - c0;
	quant_matmul(j->w->type, j->w->ne0,
	    (const uint8_t *)j->w->data + (size_t)r0 * j->w->row_bytes, j->w->row_bytes, nr,
	    j->act + (size_t)c0 * j->act_stride, j->act_stride, nc,
	    j->out + (size_t)c0 * j->ldo + r0, j->ldo);
}

/*
 * out_i = W_i * input for up to three weights sharing the current input
 * (act_set_input).  outs[i] has n_cols rows of W_i->ne1 floats.
 */
static void
matmul_multi(struct cpu_engine *e, int n, const struct model_weight *const *w,
    float *const *outs)
{
	struct mm_run r;
	int64_t total_rows = 0;
	int n_cols = e->act_rows;

	memset(&r, 0, sizeof(r));
	r.n_jobs = n;
	r.n_cols = n_cols;
	r.col_chunk = n_cols <= 64 ? n_cols : 64;
	r.col_tasks = (n_cols + r.col_chunk - 1) / r.col_chunk;
	for (int i = 0; i < n; i++)
		total_rows += w[i]->ne1;

	/* Enough row tasks to balance the pool, in multiples of 8 rows. */
	int target = e->n_threads * (n_cols == 1 ? 8 : 4);
	int64_t rpt = (total_rows * r.col_tasks + target - 1) / target;
	if (n_cols > 1 && rpt > 64)
		rpt = 64;
	rpt = (rpt + 7) / 8 * 8;
	if (rpt < 16)
		rpt = 16;

	int t = 0;
	for (int i = 0; i < n; i++) {
		struct mm_job *j = &r.jobs[i];

		j->w = w[i];
		j->act = act_get(e, quant_vec_dot_type(w[i]->type), &j->act_stride);
		j->out = outs[i];
		j->ldo = (size_t)w[i]->ne1;
		j->rows_per_task = (int)rpt;
		j->row_tasks = (int)((w[i]->ne1 + rpt - 1) / rpt);
		j->first_task = t;
		t += j->row_tasks;
	}
	r.n_tasks = t * r.col_tasks;
	pool_run(e->pool, mm_task, &r, r.n_tasks);
}

static void
matmul(struct cpu_engine *e, const struct model_weight *w, float *out)
{
	matmul_multi(e, 1, &w, &out);
}

/* ------------------------------------------------------------ small ops */

static void
rmsnorm(float *dst, const float *x, const float *w, int n, float eps)
{
	double sum = 0.0;

	for (int i = 0; i < n; i++)
		sum += (double)(x[i] * x[i]);
	const float mean = (float)(sum / n);
	const float scale = 1.0f / sqrtf(mean + eps);
	for (int i = 0; i < n; i++)
		dst[i] = (x[i] * scale) * w[i];
}

static void
rope_tables(const struct model_hparams *hp, int pos, float *c, float *s)
{
	const float theta_scale = powf(hp->rope_freq_base, -2.0f / (float)hp->n_rot);
	float theta = (float)pos;

	for (int i = 0; i < hp->n_rot / 2; i++) {
		float t = hp->rope_freq_scale * theta;

		c[i] = cosf(t);
		s[i] = sinf(t);
		theta *= theta_scale;
	}
}

static void
rope_apply(const struct model_hparams *hp, float *head, const float *c, const float *s)
{
	int half = hp->n_rot / 2;

	if (hp->rope_type == MODEL_ROPE_NORM) {
		for (int i = 0; i < half; i++) {
			float x0 = head[2 * i], x1 = head[2 * i + 1];

			head[2 * i] = x0 * c[i] - x1 * s[i];
			head[2 * i + 1] = x0 * s[i] + x1 * c[i];
		}
	} else {
		for (int i = 0; i < half; i++) {
			float x0 = head[i], x1 = head[i + half];

			head[i] = x0 * c[i] - x1 * s[i];
			head[i + half] = x0 * s[i] + x1 * c[i];
		}
	}
}

/* ------------------------------------------------------------ attention */

struct att_job {
	struct cpu_engine *e;
	const struct cpu_batch *b;
	int layer;
};

static void
att_task(void *arg, int task, int worker)
{
	struct att_job *j = arg;
	struct cpu_engine *e = j->e;
	const struct model_hparams *hp = &e->m->hp;
	int hd = hp->head_dim;
	int t = task / hp->n_head;
	int h = task % hp->n_head;
	int g = h / (hp->n_head / hp->n_head_kv);
	struct cpu_kv *kv = j->b->kv[t];
	int n = j->b->pos[t] + 1;
	size_t q_dim = (size_t)hp->n_head * hd;
	const float *q = e->q + (size_t)t * q_dim + (size_t)h * hd;
	float *out = e->att + (size_t)t * q_dim + (size_t)h * hd;
	float *sc = e->w_scores + (size_t)worker * e->cap_ctx;
	uint16_t *p16 = e->w_p16 + (size_t)worker * e->cap_ctx;
	uint16_t *q16 = e->w_q16 + (size_t)worker * hd;
	const struct cpu_kv_pool *kp = kv->pool;
	int bt = kp->block_tokens;
	uint16_t *vt = e->w_vt + (size_t)worker * e->cap_ctx * hd;
	const float scale = 1.0f / sqrtf((float)hd);
	float max = -INFINITY;
	double sum = 0.0;

	/* Scores block by block (each is its own dot product, so the result
	 * is the same as over one contiguous cache). */
	quant_fp16_row_from_fp32(q, q16, hd);
	for (int b0 = 0; b0 < n; b0 += bt) {
		int nb = n - b0 < bt ? n - b0 : bt;

		quant_matmul(ORCD_DTYPE_F16, hd, kv_k_row(kv, j->layer, b0) + (size_t)g * hd,
		    (size_t)kp->kv_dim * sizeof(uint16_t), nb, q16, 0, 1, sc + b0, (size_t)n);
	}
	for (int i = 0; i < n; i++) {
		sc[i] *= scale;
		if (sc[i] > max)
			max = sc[i];
	}
	for (int i = 0; i < n; i++) {
		sc[i] = expf(sc[i] - max);
		sum += (double)sc[i];
	}
	const float inv = (float)(1.0 / sum);
	for (int i = 0; i < n; i++)
		sc[i] *= inv;
	quant_fp16_row_from_fp32(sc, p16, n);
	/* V rows of this head gathered into [hd][ld], then one product: the
	 * same sums in the same order as a contiguous cache gives.  The row
	 * stride stays above 256 bytes, as a contiguous cache's does: the
	 * kernels group rows (and so order their sums) by the stride. */
	const int ld = n > VT_MIN_LD ? n : VT_MIN_LD;

	for (int b0 = 0, blk = 0; b0 < n; b0 += bt, blk++) {
		int nb = n - b0 < bt ? n - b0 : bt;
		const uint16_t *vb = kv_v_block(kv, j->layer, blk) + (size_t)g * hd * bt;

		for (int d = 0; d < hd; d++)
			memcpy(vt + (size_t)d * ld + b0, vb + (size_t)d * bt,
			    (size_t)nb * sizeof(uint16_t));
	}
	quant_matmul(ORCD_DTYPE_F16, n, vt, (size_t)ld * sizeof(uint16_t), hd,
	    p16, 0, 1, out, (size_t)hd);
}

/* ------------------------------------------------------------ forward */

static void
add_bias(float *x, const float *bias, int rows, int n)
{
	if (bias == NULL)
		return;
	for (int r = 0; r < rows; r++)
		for (int i = 0; i < n; i++)
			x[(size_t)r * n + i] += bias[i];
}

int
cpu_forward(struct cpu_engine *e, const struct cpu_batch *b, float *logits,
    struct orcd_err *err)
{
	const struct model *m = e->m;
	const struct model_hparams *hp = &m->hp;
	int nt = b->n_tokens;
	int n_embd = hp->n_embd;
	int hd = hp->head_dim;
	size_t q_dim = (size_t)hp->n_head * hd;
	size_t kv_dim = (size_t)hp->n_head_kv * hd;
	int half = hp->n_rot / 2;
	int max_ctx = 0;

	if (nt <= 0)
		return orcd_errf(err, "cpu: empty batch");
	for (int t = 0; t < nt; t++) {
		if (b->tokens[t] < 0 || b->tokens[t] >= hp->n_vocab)
			return orcd_errf(err, "cpu: token id %d at batch index %d is "
			    "outside the vocabulary (0..%d)", b->tokens[t], t,
			    hp->n_vocab - 1);
		if (b->pos[t] < 0 || b->pos[t] >= b->kv[t]->n_ctx)
			return orcd_errf(err, "cpu: position %d at batch index %d is "
			    "outside the context (%d)", b->pos[t], t, b->kv[t]->n_ctx);
		if (b->pos[t] >= b->kv[t]->n_blocks * b->kv[t]->pool->block_tokens)
			return orcd_errf(err, "cpu: position %d at batch index %d has no "
			    "KV block reserved", b->pos[t], t);
		if (b->pos[t] + 1 > max_ctx)
			max_ctx = b->pos[t] + 1;
	}
	if (engine_reserve_tokens(e, nt, err) != 0 ||
	    engine_reserve_ctx(e, max_ctx, err) != 0)
		return -1;

	/* Embeddings and rope tables. */
	for (int t = 0; t < nt; t++) {
		quant_dequantize_row(m->tok_embd.type, (const uint8_t *)m->tok_embd.data +
		    (size_t)b->tokens[t] * m->tok_embd.row_bytes, e->x + (size_t)t * n_embd,
		    n_embd);
		rope_tables(hp, b->pos[t], e->rope_cos + (size_t)t * half,
		    e->rope_sin + (size_t)t * half);
	}

	for (int il = 0; il < hp->n_layer; il++) {
		const struct model_layer *L = &m->layers[il];

		/* attention block */
		for (int t = 0; t < nt; t++)
			rmsnorm(e->xn + (size_t)t * n_embd, e->x + (size_t)t * n_embd,
			    L->attn_norm, n_embd, hp->rms_eps);
		act_set_input(e, e->xn, nt, n_embd);
		{
			const struct model_weight *w[3] = { &L->wq, &L->wk, &L->wv };
			float *o[3] = { e->q, e->k, e->v };
			matmul_multi(e, 3, w, o);
		}
		add_bias(e->q, L->bq, nt, (int)q_dim);
		add_bias(e->k, L->bk, nt, (int)kv_dim);
		add_bias(e->v, L->bv, nt, (int)kv_dim);
		for (int t = 0; t < nt; t++) {
			const float *c = e->rope_cos + (size_t)t * half;
			const float *s = e->rope_sin + (size_t)t * half;
			struct cpu_kv *kv = b->kv[t];
			int p = b->pos[t];

			for (int h = 0; h < hp->n_head; h++)
				rope_apply(hp, e->q + (size_t)t * q_dim + (size_t)h * hd, c, s);
			for (int h = 0; h < hp->n_head_kv; h++)
				rope_apply(hp, e->k + (size_t)t * kv_dim + (size_t)h * hd, c, s);
			int bt = kv->pool->block_tokens;
			uint16_t *kd = kv_k_row(kv, il, p);
			quant_fp16_row_from_fp32(e->k + (size_t)t * kv_dim, kd, (int64_t)kv_dim);
			uint16_t *vd = kv_v_block(kv, il, p / bt) + p % bt;
			const float *vs = e->v + (size_t)t * kv_dim;
			for (size_t d = 0; d < kv_dim; d++)
				vd[d * bt] = quant_fp32_to_fp16(vs[d]);
			if (p + 1 > kv->n_used)
				kv->n_used = p + 1;
		}
		struct att_job aj = { .e = e, .b = b, .layer = il };
		pool_run(e->pool, att_task, &aj, nt * hp->n_head);
		act_set_input(e, e->att, nt, (int)q_dim);
		matmul(e, &L->wo, e->proj);
		for (size_t i = 0; i < (size_t)nt * n_embd; i++)
			e->x[i] += e->proj[i];

		/* feed-forward block */
		for (int t = 0; t < nt; t++)
			rmsnorm(e->xn + (size_t)t * n_embd, e->x + (size_t)t * n_embd,
			    L->ffn_norm, n_embd, hp->rms_eps);
		act_set_input(e, e->xn, nt, n_embd);
		{
			const struct model_weight *w[2] = { &L->w_gate, &L->w_up };
			float *o[2] = { e->gate, e->up };
			matmul_multi(e, 2, w, o);
		}
		for (size_t i = 0; i < (size_t)nt * hp->n_ff; i++) {
			float g = e->gate[i];

			e->gate[i] = (g / (1.0f + expf(-g))) * e->up[i];
		}
		act_set_input(e, e->gate, nt, hp->n_ff);
		matmul(e, &L->w_down, e->proj);
		for (size_t i = 0; i < (size_t)nt * n_embd; i++)
			e->x[i] += e->proj[i];
	}

	/* Output head, only for the rows that need logits. */
	int n_out = 0;
	for (int t = 0; t < nt; t++) {
		bool want = b->logits ? b->logits[t] : t == nt - 1;

		if (!want)
			continue;
		rmsnorm(e->out_rows + (size_t)n_out * n_embd, e->x + (size_t)t * n_embd,
		    m->output_norm, n_embd, hp->rms_eps);
		n_out++;
	}
	if (n_out > 0) {
		act_set_input(e, e->out_rows, n_out, n_embd);
		matmul(e, &m->output, logits);
	}
	return 0;
}
