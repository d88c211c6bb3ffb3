/*
 * The CUDA backend (include/orcd/backend.h): weights, KV cache and
 * activations in VRAM only, every allocation through the VRAM tracker.
 *
 * Threads: the loop thread only queues steps (no CUDA call there, so it
 * never blocks on the GPU); an enqueue thread (worker.h) launches a step's kernels on
 * one stream and ends it with cudaLaunchHostFunc, whose callback samples
 * (greedy on the GPU; other samplers on the host from the copied logits,
 * with the very sampler the CPU backend uses, so the same seed gives the
 * same tokens) and pushes the completion into the loop's queue.
 *
 * KV: one pool allocated at load, cut into slots of ctx positions; a
 * sequence takes a slot (no cudaMalloc/cudaFree while serving).
 */
#include <cuda_runtime.h>

#include <atomic>
#include <pthread.h>
#include <new>

#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

extern "C" {
#include "orcd/backend.h"
#include "orcd/cuda_ops.h"
#include "orcd/dtype.h"
#include "orcd/vram.h"
#include "err.h"
#include "gguf.h"
#include "log.h"
#include "model.h"
#include "seal.h"
#include "cpu/quant.h"
#include "orcd.h"
#include "sampler.h"
#include "worker.h"
}

#define STAGING_BYTES (32u << 20)
/* Steps of at most GRAPH_MAX_TOKENS tokens (decode and small prompt
 * chunks) run as CUDA graphs, one per shape (tokens, sampled rows,
 * context bucket, logits copied or not), at most GRAPH_CACHE of them. */
#define GRAPH_MAX_TOKENS 64
#define GRAPH_CACHE 128
/* Attention is planned for the longest context rounded up to this, so one
 * graph serves LEN_BUCKET consecutive positions. */
#define LEN_BUCKET 256
#define PROF_MAX 2048
#define PROF_ROWS 48

struct cuda_weight {
	int type;
	int ne0, ne1;
	size_t row_bytes;
	void *d;
};

struct cuda_layer {
	float *attn_norm, *ffn_norm, *bq, *bk, *bv;
	cuda_weight wq, wk, wv, wo, gate, up, down;
};

struct backend_seq {
	int slot;
	int n_blocks;        /* paged: blocks held (the loop thread) */
	int n_uploaded;      /* of them, in the device table (the engine thread) */
};

struct cuda_job {
	struct backend_step *st;
	struct cuda_backend *cb;
};

struct cuda_backend {
	struct backend b;
	struct vram *vram;
	int device;
	cudaStream_t stream;
	const struct model *m;

	cuda_weight tok_embd, output;
	float *output_norm;
	cuda_layer *layers;

	/* KV pool */
	int n_slots, slot_ctx, kv_dim;
	uint16_t *kv_k, *kv_v;
	size_t slot_elems;          /* n_layer * slot_ctx * kv_dim */
	bool *slot_used;            /* loop thread */
	/* paged KV (kv_bt > 0): blocks of kv_bt positions of every layer in
	 * kv_k / kv_v; each slot is a block table row (d_tab, mirrored in
	 * pinned h_tab), blocks are handed out from a free list on the loop */
	int kv_bt;
	size_t block_elems;         /* n_layer * kv_bt * kv_dim */
	int n_kv_blocks, max_blocks;
	int32_t *free_blocks;       /* stack, loop thread */
	int n_free_blocks;
	std::atomic<int> n_blocks_used{0};
	int32_t *d_tab, *h_tab;
	std::atomic<int> n_slots_used{0};

	/* scratch for max_tokens tokens and max_out logits rows */
	int max_tokens, max_out;
	float *x, *xn, *q, *k, *v, *att, *gate, *up, *xo, *logits;
	void *act[2];
	size_t act_cap;
	void *att_ws;
	size_t att_ws_bytes;
	int *d_ids;

	/* A step's inputs, packed for one copy: kptr[n] | vptr[n] | tok[n] |
	 * pos[n] | rows[n_out] (io_layout); the same layout in pinned host
	 * memory (h_in) and device memory (d_in).  One step in flight at a
	 * time, so one of each. */
	struct io_in {
		int *tok, *pos, *rows;
		uint16_t **kptr, **vptr;
	} h, d;
	void *h_in, *d_in;
	size_t h_in_bytes;

	/* CUDA graphs of small steps (decode), by shape */
	bool graphs;
	unsigned long graph_fallbacks;   /* steps run eagerly: no graph */
	struct nograph {                 /* shapes that failed to capture */
		int n, n_out, len;
		bool want_logits;
	} nograph[16];
	int n_nograph;
	struct graph_entry {
		int n, n_out, len;
		bool want_logits;
		cudaGraphExec_t exec;
		uint64_t used;
	} graph[GRAPH_CACHE];

	/* Seal digests (doc/seal.md): where each byte range of the file's
	 * tensor data lives in VRAM, sorted by host address.  raw: the device
	 * holds the file's bytes; else a float conversion of them (norms and
	 * biases of F16/BF16 files), checked against the host instead. */
	struct seal_region {
		const uint8_t *host;
		uint64_t nbytes;
		uint8_t *dev;
		bool raw;
		int type;
		int64_t n;
		char name[96];
	} *regions;
	int n_regions;
	cudaStream_t seal_stream;    /* lowest priority: beside decode */
	pthread_mutex_t seal_mu;     /* one digest at a time */
	int seal_cap;                /* chunks the device arrays hold */
	void *seal_dev;              /* ptr[cap] | digests[cap][32] | len[cap] */
	void *seal_host;             /* the same, pinned: staged for one copy */

	/* ORCD_CUDA_PROFILE=1 (eager steps only): device time of every
	 * kernel of forward(), by label, from events around each; the table
	 * goes to the log when the backend is destroyed */
	struct prof {
		bool on;
		int n;                   /* events recorded in this step */
		cudaEvent_t ev[PROF_MAX + 1];
		const char *label[PROF_MAX];
		struct prof_row {
			const char *label;
			double ms;
			unsigned long calls;
		} rows[PROF_ROWS];
		int n_rows;
		unsigned long steps;
		double step_ms;
	} prof;
	uint64_t graph_clock;
	std::atomic<unsigned long> graph_launches, graph_captures;
	int *h_ids;
	float *h_logits;            /* rows of sampled (non-greedy) sequences */
	int max_host_logits;

	struct worker *thread;      /* the enqueue thread */

	/* residency: set by load and the monitor thread, read by /health */
	std::atomic<bool> resident;
	std::atomic<double> t_checked;
	double load_seconds, load_gbps;
};

static int
cuda_fail(struct orcd_err *err, cudaError_t e, const char *what)
{
	return orcd_errf(err, "cuda: %s: %s", what, cudaGetErrorString(e));
}

#define CK(call, what) do { cudaError_t e_ = (cudaError_t)(call); \
	if (e_ != cudaSuccess) return cuda_fail(err, e_, what); } while (0)

/* ------------------------------------------------------------ upload */

struct staging {
	void *buf[2];
	cudaEvent_t done[2];
	int next;
	uint64_t bytes;
};

/* Copies n bytes from the mmap to device memory through the two pinned
 * staging buffers: the host copy into one overlaps the transfer of the
 * other. */
static int
upload(struct cuda_backend *cb, struct staging *sg, void *dst, const void *src, size_t n,
    struct orcd_err *err)
{
	for (size_t off = 0; off < n;) {
		size_t c = n - off < STAGING_BYTES ? n - off : STAGING_BYTES;
		int i = sg->next;

		CK(cudaEventSynchronize(sg->done[i]), "staging wait");
		memcpy(sg->buf[i], (const uint8_t *)src + off, c);
		CK(cudaMemcpyAsync((uint8_t *)dst + off, sg->buf[i], c, cudaMemcpyHostToDevice,
		    cb->stream), "weight upload");
		CK(cudaEventRecord(sg->done[i], cb->stream), "staging event");
		sg->next ^= 1;
		off += c;
		sg->bytes += c;
	}
	return 0;
}

static int
upload_weight(struct cuda_backend *cb, struct staging *sg, const struct model_weight *w,
    cuda_weight *out, struct orcd_err *err)
{
	out->type = w->type;
	out->ne0 = (int)w->ne0;
	out->ne1 = (int)w->ne1;
	out->row_bytes = w->row_bytes;
	if (cuda_act_type(w->type) < 0)
		return orcd_errf(err, "cuda: tensor %s has type %s, which the GPU kernels do not "
		    "support", w->name, dtype_name(w->type));
	if (vram_alloc(cb->vram, w->nbytes, VRAM_WEIGHTS, w->name, &out->d, err) != 0)
		return -1;
	return upload(cb, sg, out->d, w->data, w->nbytes, err);
}

static int
upload_floats(struct cuda_backend *cb, const float *src, int n, const char *label,
    float **out, struct orcd_err *err)
{
	*out = NULL;
	if (src == NULL)
		return 0;
	if (vram_alloc(cb->vram, (size_t)n * sizeof(float), VRAM_WEIGHTS, label, (void **)out,
	    err) != 0)
		return -1;
	CK(cudaMemcpy(*out, src, (size_t)n * sizeof(float), cudaMemcpyHostToDevice), label);
	return 0;
}

static int
region_add(struct cuda_backend *cb, const char *name, const void *host_hint, void *dev,
    struct orcd_err *err)
{
	const struct gguf_tensor *t = gguf_find_tensor(cb->m->gguf, name);
	struct cuda_backend::seal_region *r;

	if (dev == NULL)
		return 0;   /* an optional tensor this model lacks */
	if (t == NULL)
		return orcd_errf(err, "cuda: tensor '%s' is in VRAM but not in the file", name);
	for (int i = 0; i < cb->n_regions; i++)
		if (cb->regions[i].host == (const uint8_t *)t->data)
			return 0;   /* tied output: the embedding already */
	r = &cb->regions[cb->n_regions++];
	r->host = (const uint8_t *)t->data;
	r->nbytes = t->nbytes;
	r->dev = (uint8_t *)dev;
	r->type = t->type;
	r->n = (int64_t)t->ne[0];
	/* a matrix is uploaded as the file's bytes; a vector as floats, which
	 * are the file's bytes only for an F32 tensor */
	r->raw = host_hint == t->data || t->type == ORCD_DTYPE_F32;
	snprintf(r->name, sizeof(r->name), "%s", name);
	return 0;
}

static int
region_cmp(const void *a, const void *b)
{
	const uint8_t *x = ((const cuda_backend::seal_region *)a)->host;
	const uint8_t *y = ((const cuda_backend::seal_region *)b)->host;

	return x < y ? -1 : x > y;
}

/* The map from the file's tensor bytes to their copies in VRAM. */
static int
seal_regions_build(struct cuda_backend *cb, struct orcd_err *err)
{
	const struct model *m = cb->m;
	char name[96];

	cb->regions = (cuda_backend::seal_region *)calloc((size_t)m->hp.n_layer * 12 + 3,
	    sizeof(*cb->regions));
	if (cb->regions == NULL)
		return orcd_errf(err, "cuda: out of memory");
	if (region_add(cb, "token_embd.weight", m->tok_embd.data, cb->tok_embd.d, err) != 0 ||
	    (!m->tied_output && region_add(cb, "output.weight", m->output.data, cb->output.d,
	    err) != 0) ||
	    region_add(cb, "output_norm.weight", NULL, cb->output_norm, err) != 0)
		return -1;
	for (int il = 0; il < m->hp.n_layer; il++) {
		const struct model_layer *L = &m->layers[il];
		const cuda_layer *D = &cb->layers[il];
		static const char *wn[] = { "attn_q.weight", "attn_k.weight", "attn_v.weight",
		    "attn_output.weight", "ffn_gate.weight", "ffn_up.weight", "ffn_down.weight" };
		const model_weight *hw[] = { &L->wq, &L->wk, &L->wv, &L->wo, &L->w_gate,
		    &L->w_up, &L->w_down };
		const cuda_weight *dw[] = { &D->wq, &D->wk, &D->wv, &D->wo, &D->gate, &D->up,
		    &D->down };
		static const char *vn[] = { "attn_norm.weight", "ffn_norm.weight", "attn_q.bias",
		    "attn_k.bias", "attn_v.bias" };
		float *dv[] = { D->attn_norm, D->ffn_norm, D->bq, D->bk, D->bv };

		for (int k = 0; k < 7; k++) {
			snprintf(name, sizeof(name), "blk.%d.%s", il, wn[k]);
			if (region_add(cb, name, hw[k]->data, dw[k]->d, err) != 0)
				return -1;
		}
		for (int k = 0; k < 5; k++) {
			snprintf(name, sizeof(name), "blk.%d.%s", il, vn[k]);
			if (region_add(cb, name, NULL, dv[k], err) != 0)
				return -1;
		}
	}
	qsort(cb->regions, (size_t)cb->n_regions, sizeof(*cb->regions), region_cmp);
	return 0;
}

static const cuda_backend::seal_region *
region_find(const struct cuda_backend *cb, const uint8_t *p)
{
	int lo = 0, hi = cb->n_regions - 1;

	while (lo <= hi) {
		int mid = (lo + hi) / 2;
		const cuda_backend::seal_region *r = &cb->regions[mid];

		if (p < r->host)
			hi = mid - 1;
		else if (p >= r->host + r->nbytes)
			lo = mid + 1;
		else
			return r;
	}
	return NULL;
}

static int
upload_model(struct cuda_backend *cb, struct orcd_err *err)
{
	const struct model *m = cb->m;
	const struct model_hparams *hp = &m->hp;
	struct staging sg;
	char label[64];
	double t0 = orcd_now();
	int rc = -1;

	memset(&sg, 0, sizeof(sg));
	for (int i = 0; i < 2; i++) {
		if (vram_alloc_io_pinned(cb->vram, STAGING_BYTES, "upload staging", &sg.buf[i],
		    err) != 0)
			goto out;
		CK(cudaEventCreateWithFlags(&sg.done[i], cudaEventDisableTiming), "event");
	}
	cb->layers = (cuda_layer *)calloc((size_t)hp->n_layer, sizeof(cuda_layer));
	if (cb->layers == NULL) {
		orcd_errf(err, "cuda: out of memory");
		goto out;
	}
	if (upload_weight(cb, &sg, &m->tok_embd, &cb->tok_embd, err) != 0)
		goto out;
	if (m->tied_output)
		cb->output = cb->tok_embd;
	else if (upload_weight(cb, &sg, &m->output, &cb->output, err) != 0)
		goto out;
	if (upload_floats(cb, m->output_norm, hp->n_embd, "output_norm", &cb->output_norm, err) != 0)
		goto out;
	for (int il = 0; il < hp->n_layer; il++) {
		const struct model_layer *L = &m->layers[il];
		cuda_layer *D = &cb->layers[il];
		int qd = hp->n_head * hp->head_dim, kd = hp->n_head_kv * hp->head_dim;

		snprintf(label, sizeof(label), "blk.%d norms/biases", il);
		if (upload_floats(cb, L->attn_norm, hp->n_embd, label, &D->attn_norm, err) != 0 ||
		    upload_floats(cb, L->ffn_norm, hp->n_embd, label, &D->ffn_norm, err) != 0 ||
		    upload_floats(cb, L->bq, qd, label, &D->bq, err) != 0 ||
		    upload_floats(cb, L->bk, kd, label, &D->bk, err) != 0 ||
		    upload_floats(cb, L->bv, kd, label, &D->bv, err) != 0 ||
		    upload_weight(cb, &sg, &L->wq, &D->wq, err) != 0 ||
		    upload_weight(cb, &sg, &L->wk, &D->wk, err) != 0 ||
		    upload_weight(cb, &sg, &L->wv, &D->wv, err) != 0 ||
		    upload_weight(cb, &sg, &L->wo, &D->wo, err) != 0 ||
		    upload_weight(cb, &sg, &L->w_gate, &D->gate, err) != 0 ||
		    upload_weight(cb, &sg, &L->w_up, &D->up, err) != 0 ||
		    upload_weight(cb, &sg, &L->w_down, &D->down, err) != 0)
			goto out;
	}
	{
		cudaError_t e = cudaStreamSynchronize(cb->stream);
		if (e != cudaSuccess) {
			cuda_fail(err, e, "weight upload");
			goto out;
		}
	}
	cb->load_seconds = orcd_now() - t0;
	cb->load_gbps = cb->load_seconds > 0 ? (double)sg.bytes / cb->load_seconds / 1e9 : 0;
	rc = 0;
out:
	for (int i = 0; i < 2; i++) {
		if (sg.done[i] != NULL)
			cudaEventDestroy(sg.done[i]);
		if (sg.buf[i] != NULL)
			vram_free(cb->vram, sg.buf[i], NULL);
	}
	return rc;
}

/* ------------------------------------------------------------ scratch */

static int
alloc_dev(struct cuda_backend *cb, size_t bytes, enum vram_purpose p, const char *label,
    void **out, struct orcd_err *err)
{
	return vram_alloc(cb->vram, bytes ? bytes : VRAM_ALIGN, p, label, out, err);
}

static int
alloc_scratch(struct cuda_backend *cb, struct orcd_err *err)
{
	const struct model_hparams *hp = &cb->m->hp;
	size_t T = (size_t)cb->max_tokens, L = (size_t)cb->max_out;
	size_t qd = (size_t)hp->n_head * hp->head_dim, kd = (size_t)hp->n_head_kv * hp->head_dim;
	size_t widest = (size_t)hp->n_embd;

	if ((size_t)hp->n_ff > widest)
		widest = (size_t)hp->n_ff;
	if (qd > widest)
		widest = qd;
	cb->act_cap = T * widest * sizeof(float);
	cb->att_ws_bytes = cuda_attention_workspace_bytes(cb->max_tokens, hp->n_head,
	    hp->head_dim, cb->slot_ctx, 0);
	if (alloc_dev(cb, T * hp->n_embd * 4, VRAM_ACTIVATIONS, "x", (void **)&cb->x, err) ||
	    alloc_dev(cb, T * hp->n_embd * 4, VRAM_ACTIVATIONS, "xn", (void **)&cb->xn, err) ||
	    alloc_dev(cb, T * qd * 4, VRAM_ACTIVATIONS, "q", (void **)&cb->q, err) ||
	    alloc_dev(cb, T * kd * 4, VRAM_ACTIVATIONS, "k", (void **)&cb->k, err) ||
	    alloc_dev(cb, T * kd * 4, VRAM_ACTIVATIONS, "v", (void **)&cb->v, err) ||
	    alloc_dev(cb, T * qd * 4, VRAM_ACTIVATIONS, "att", (void **)&cb->att, err) ||
	    alloc_dev(cb, T * hp->n_ff * 4, VRAM_ACTIVATIONS, "gate", (void **)&cb->gate, err) ||
	    alloc_dev(cb, T * hp->n_ff * 4, VRAM_ACTIVATIONS, "up", (void **)&cb->up, err) ||
	    alloc_dev(cb, L * hp->n_embd * 4, VRAM_ACTIVATIONS, "xo", (void **)&cb->xo, err) ||
	    alloc_dev(cb, L * (size_t)hp->n_vocab * 4, VRAM_ACTIVATIONS, "logits",
	    (void **)&cb->logits, err) ||
	    alloc_dev(cb, cb->act_cap, VRAM_SCRATCH, "act0", &cb->act[0], err) ||
	    alloc_dev(cb, cb->act_cap, VRAM_SCRATCH, "act1", &cb->act[1], err) ||
	    alloc_dev(cb, cb->att_ws_bytes, VRAM_SCRATCH, "attention workspace", &cb->att_ws, err) ||
	    alloc_dev(cb, L * 4, VRAM_IO, "sampled ids", (void **)&cb->d_ids, err))
		return -1;
	/* the step inputs, pinned on the host and on the device */
	cb->h_in_bytes = T * (4 + 4 + 2 * sizeof(void *)) + L * 4;
	if (alloc_dev(cb, cb->h_in_bytes, VRAM_IO, "step inputs", &cb->d_in, err) != 0 ||
	    vram_alloc_io_pinned(cb->vram, cb->h_in_bytes, "step inputs", &cb->h_in, err) != 0 ||
	    vram_alloc_io_pinned(cb->vram, L * 4, "sampled ids", (void **)&cb->h_ids, err) != 0)
		return -1;
	/* host copies of logits for host-side sampling (rare: non-greedy) */
	cb->max_host_logits = cb->max_out;
	CK(cudaMallocHost((void **)&cb->h_logits, L * (size_t)hp->n_vocab * 4), "pinned logits");
	return 0;
}

/* The packed step inputs for n tokens at base (see struct io_in). */
static void
io_layout(void *base, int n, struct cuda_backend::io_in *io)
{
	uint8_t *p = (uint8_t *)base;

	io->kptr = (uint16_t **)p; p += (size_t)n * sizeof(void *);
	io->vptr = (uint16_t **)p; p += (size_t)n * sizeof(void *);
	io->tok = (int *)p; p += (size_t)n * 4;
	io->pos = (int *)p; p += (size_t)n * 4;
	io->rows = (int *)p;
}

/* ------------------------------------------------------------ forward */

__global__ void
gather_rows(const float *x, size_t ldx, const int *rows, int n_rows, int n, float *y)
{
	int r = blockIdx.x;

	if (r >= n_rows)
		return;
	const float *s = x + (size_t)rows[r] * ldx;
	float *d = y + (size_t)r * n;
	for (int i = threadIdx.x; i < n; i += blockDim.x)
		d[i] = s[i];
}

/* act_for(): the current input (rows x n floats at src) in the act type of
 * w, converted at most once per type. */
struct act_cache {
	const float *src;
	size_t ld;
	int rows, n;
	int type[2];
	void *buf[2];
};

static void
prof_mark(struct cuda_backend *cb, const char *label)
{
	struct cuda_backend::prof *p = &cb->prof;

	if (!p->on || p->n >= PROF_MAX)
		return;
	p->label[p->n] = label;
	cudaEventRecord(p->ev[p->n + 1], cb->stream);
	p->n++;
}

/* After the step's work is enqueued: waits for it (profiling only) and
 * adds each kernel's time to its label's row. */
static void
prof_collect(struct cuda_backend *cb)
{
	struct cuda_backend::prof *p = &cb->prof;
	float ms;

	if (!p->on || p->n == 0)
		return;
	cudaEventSynchronize(p->ev[p->n]);
	for (int i = 0; i < p->n; i++) {
		int r;

		if (cudaEventElapsedTime(&ms, p->ev[i], p->ev[i + 1]) != cudaSuccess)
			continue;
		for (r = 0; r < p->n_rows && strcmp(p->rows[r].label, p->label[i]) != 0; r++)
			;
		if (r == p->n_rows) {
			if (r == PROF_ROWS)
				continue;
			p->rows[p->n_rows++].label = p->label[i];
		}
		p->rows[r].ms += ms;
		p->rows[r].calls++;
	}
	if (cudaEventElapsedTime(&ms, p->ev[0], p->ev[p->n]) == cudaSuccess)
		p->step_ms += ms;
	p->steps++;
	p->n = 0;
}

static void
prof_report(struct cuda_backend *cb)
{
	struct cuda_backend::prof *p = &cb->prof;

	if (!p->on || p->steps == 0)
		return;
	log_info("cuda profile: %lu eager steps, %.3f ms of device time per step", p->steps,
	    p->step_ms / p->steps);
	for (int r = 0; r < p->n_rows; r++)
		log_info("cuda profile: %-14s %8.2f us per step, %6.2f us per call, %4.1f%%",
		    p->rows[r].label, p->rows[r].ms * 1e3 / p->steps,
		    p->rows[r].ms * 1e3 / p->rows[r].calls, 100.0 * p->rows[r].ms / p->step_ms);
}

static int
act_for(struct cuda_backend *cb, struct act_cache *ac, const cuda_weight *w, const void **out,
    size_t *stride)
{
	int t = cuda_act_type(w->type);

	if (t == ORCD_DTYPE_F32) {
		*out = ac->src;
		*stride = ac->ld * sizeof(float);
		return 0;
	}
	*stride = cuda_row_bytes(t, ac->n);
	/* keep rows 16-byte aligned */
	*stride = (*stride + 15) & ~(size_t)15;
	for (int i = 0; i < 2; i++)
		if (ac->type[i] == t) {
			*out = ac->buf[i];
			return 0;
		}
	int slot = ac->type[0] < 0 ? 0 : 1;
	ac->type[slot] = t;
	*out = ac->buf[slot];
	int rc = cuda_quantize_act(t, ac->src, ac->ld, ac->rows, ac->n, ac->buf[slot], *stride,
	    cb->stream);

	prof_mark(cb, "quant act");
	return rc;
}

static void
act_set(struct cuda_backend *cb, struct act_cache *ac, const float *src, size_t ld, int rows,
    int n)
{
	ac->src = src;
	ac->ld = ld;
	ac->rows = rows;
	ac->n = n;
	ac->type[0] = ac->type[1] = -1;
	ac->buf[0] = cb->act[0];
	ac->buf[1] = cb->act[1];
}

static int
mm(struct cuda_backend *cb, struct act_cache *ac, const cuda_weight *w, float *out, size_t ldo,
    const float *residual)
{
	const void *a;
	size_t as;
	int rc = act_for(cb, ac, w, &a, &as);

	if (rc != 0)
		return rc;
	return cuda_matmul(w->type, w->d, w->row_bytes, w->ne1, w->ne0, a, as, ac->rows, out, ldo,
	    NULL, residual, cb->stream);
}

/* Enqueues the whole step; returns a cudaError_t value. */
static int
forward(struct cuda_backend *cb, int n_tok, int n_out, int max_len)
{
	const struct model_hparams *hp = &cb->m->hp;
	const int E = hp->n_embd, F = hp->n_ff;
	const int qd = hp->n_head * hp->head_dim, kd = hp->n_head_kv * hp->head_dim;
	cudaStream_t s = cb->stream;
	struct act_cache ac;
	int rc;

#define R(x) do { if ((rc = (x)) != 0) return rc; } while (0)
#define P(label, x) do { if ((rc = (x)) != 0) { \
		log_error("cuda: %s (%d tokens, context %d) failed: %s", label, n_tok, \
		    max_len, cudaGetErrorString((cudaError_t)rc)); \
		return rc; } \
	prof_mark(cb, label); } while (0)
	if (cb->prof.on && cb->prof.n == 0)
		cudaEventRecord(cb->prof.ev[0], s);
	P("embed", cuda_embed(cb->tok_embd.type, cb->tok_embd.d, cb->tok_embd.row_bytes, hp->n_vocab, E,
	    cb->d.tok, n_tok, cb->x, E, s));
	for (int il = 0; il < hp->n_layer; il++) {
		const cuda_layer *L = &cb->layers[il];
		size_t layer_off = cb->kv_bt > 0 ? (size_t)il * cb->kv_bt * cb->kv_dim :
		    (size_t)il * cb->slot_ctx * cb->kv_dim;

		P("rmsnorm", cuda_rmsnorm(cb->x, E, L->attn_norm, n_tok, E, hp->rms_eps, cb->xn, E, s));
		act_set(cb, &ac, cb->xn, E, n_tok, E);
		P("mm q", mm(cb, &ac, &L->wq, cb->q, qd, NULL));
		P("mm k", mm(cb, &ac, &L->wk, cb->k, kd, NULL));
		P("mm v", mm(cb, &ac, &L->wv, cb->v, kd, NULL));
		if (cb->kv_bt > 0) {
			/* paged: d.kptr holds each token's block table */
			const int32_t *const *tabs = (const int32_t *const *)cb->d.kptr;

			P("rope+kv", cuda_rope_kv_paged(n_tok, hp->n_head, hp->n_head_kv,
			    hp->head_dim, hp->n_rot, hp->rope_type == MODEL_ROPE_NEOX,
			    hp->rope_freq_base, hp->rope_freq_scale, cb->d.pos, cb->q, qd, cb->k,
			    kd, cb->v, kd, L->bq, L->bk, L->bv, tabs, cb->kv_k, cb->kv_v,
			    cb->kv_bt, cb->block_elems, layer_off, cb->slot_ctx, s));
			P("attention", cuda_attention_paged(n_tok, hp->n_head, hp->n_head_kv,
			    hp->head_dim, cb->d.pos, cb->q, qd, tabs, cb->kv_k, cb->kv_v, cb->kv_bt,
			    cb->block_elems, layer_off, cb->slot_ctx, max_len, 0, cb->att_ws,
			    cb->att_ws_bytes, cb->att, qd, s));
		} else {
			P("rope+kv", cuda_rope_kv(n_tok, hp->n_head, hp->n_head_kv, hp->head_dim,
			    hp->n_rot, hp->rope_type == MODEL_ROPE_NEOX, hp->rope_freq_base,
			    hp->rope_freq_scale, cb->d.pos, cb->q, qd, cb->k, kd, cb->v, kd, L->bq,
			    L->bk, L->bv, cb->d.kptr, cb->d.vptr, layer_off, cb->slot_ctx, s));
			P("attention", cuda_attention(n_tok, hp->n_head, hp->n_head_kv,
			    hp->head_dim, cb->d.pos, cb->q, qd, cb->d.kptr, cb->d.vptr, layer_off,
			    cb->slot_ctx, max_len, 0, cb->att_ws, cb->att_ws_bytes, cb->att, qd, s));
		}
		act_set(cb, &ac, cb->att, qd, n_tok, qd);
		P("mm o", mm(cb, &ac, &L->wo, cb->x, E, cb->x));
		P("rmsnorm", cuda_rmsnorm(cb->x, E, L->ffn_norm, n_tok, E, hp->rms_eps, cb->xn, E, s));
		act_set(cb, &ac, cb->xn, E, n_tok, E);
		P("mm gate", mm(cb, &ac, &L->gate, cb->gate, F, NULL));
		P("mm up", mm(cb, &ac, &L->up, cb->up, F, NULL));
		P("swiglu", cuda_swiglu(cb->gate, F, cb->gate, F, cb->up, F, n_tok, F, s));
		act_set(cb, &ac, cb->gate, F, n_tok, F);
		P("mm down", mm(cb, &ac, &L->down, cb->x, E, cb->x));
	}
	if (n_out == 0)
		return 0; /* a step of prompt chunks that sample nothing yet */
	gather_rows<<<n_out, 256, 0, s>>>(cb->x, E, cb->d.rows, n_out, E, cb->xo);
	P("gather", cudaGetLastError());
	P("rmsnorm out", cuda_rmsnorm(cb->xo, E, cb->output_norm, n_out, E, hp->rms_eps, cb->xo, E, s));
	act_set(cb, &ac, cb->xo, E, n_out, E);
	P("mm output", mm(cb, &ac, &cb->output, cb->logits, hp->n_vocab, NULL));
	P("argmax", cuda_argmax(cb->logits, hp->n_vocab, n_out, hp->n_vocab, cb->d_ids, s));
#undef P
#undef R
	return 0;
}

/* ------------------------------------------------------------ steps */

static void CUDART_CB
step_done(void *arg)
{
	struct cuda_job *j = (struct cuda_job *)arg;
	struct cuda_backend *cb = j->cb;
	struct backend_step *st = j->st;
	int k = 0;
	int n_vocab = cb->m->hp.n_vocab;

	for (int i = 0; i < st->n_seqs; i++) {
		struct backend_step_seq *s = &st->seqs[i];

		if (s->sampler == NULL)
			continue;
		if (sampler_is_greedy(s->sampler))
			s->out_token = cb->h_ids[k];
		else /* the same sampler as the CPU backend, on the same logits */
			s->out_token = sampler_sample(s->sampler, cb->h_logits + (size_t)k * n_vocab);
		k++;
	}
	if (st->logits_out != NULL)
		memcpy(st->logits_out, cb->h_logits, (size_t)k * n_vocab * sizeof(float));
	st->t_end = orcd_now();
	cq_push(cb->b.cq, &st->cq);
	free(j);
}

/* What a step puts on the stream: the copy of its inputs, the forward
 * pass, the copies of its outputs.  Returns a cudaError_t value. */
static int
enqueue_body(struct cuda_backend *cb, int n, int n_out, int len, bool want_logits)
{
	cudaStream_t s = cb->stream;
	size_t in_bytes = (size_t)n * (2 * sizeof(void *) + 8) + (size_t)n_out * 4;
	int rc;

	if ((rc = cudaMemcpyAsync(cb->d_in, cb->h_in, in_bytes, cudaMemcpyHostToDevice, s)) != 0 ||
	    (rc = forward(cb, n, n_out, len)) != 0)
		return rc;
	if (n_out > 0 && (rc = cudaMemcpyAsync(cb->h_ids, cb->d_ids, (size_t)n_out * 4,
	    cudaMemcpyDeviceToHost, s)) != 0)
		return rc;
	if (want_logits && n_out > 0 && (rc = cudaMemcpyAsync(cb->h_logits, cb->logits,
	    (size_t)n_out * cb->m->hp.n_vocab * 4, cudaMemcpyDeviceToHost, s)) != 0)
		return rc;
	return 0;
}

/*
 * The graph of this shape, captured (and instantiated) on first use; the
 * least recently used one makes room when the cache is full.  Every
 * pointer the body uses is fixed for a shape (io_layout depends on n
 * only), and the data behind them (tokens, positions, KV rows) is read by
 * the kernels at run time, so a graph replays for every step of its shape.
 */
static cudaGraphExec_t
graph_for(struct cuda_backend *cb, int n, int n_out, int len, bool want_logits, int *rc)
{
	struct cuda_backend::graph_entry *g = NULL, *victim = &cb->graph[0];
	cudaGraph_t graph = NULL;
	cudaError_t e;
	int body;

	for (int i = 0; i < GRAPH_CACHE; i++) {
		struct cuda_backend::graph_entry *c = &cb->graph[i];

		if (c->exec != NULL && c->n == n && c->n_out == n_out && c->len == len &&
		    c->want_logits == want_logits) {
			g = c;
			break;
		}
		if (c->exec == NULL ? victim->exec != NULL : victim->exec != NULL &&
		    c->used < victim->used)
			victim = c;
	}
	if (g != NULL) {
		g->used = ++cb->graph_clock;
		return g->exec;
	}
	if ((e = cudaStreamBeginCapture(cb->stream, cudaStreamCaptureModeThreadLocal)) != 0) {
		*rc = e;
		return NULL;
	}
	body = enqueue_body(cb, n, n_out, len, want_logits);
	e = cudaStreamEndCapture(cb->stream, &graph);
	if (body != 0 || e != cudaSuccess) {
		if (graph != NULL)
			cudaGraphDestroy(graph);
		*rc = body != 0 ? body : e;
		return NULL;
	}
	if (victim->exec != NULL) /* freed once a launch in flight is done */
		cudaGraphExecDestroy(victim->exec);
	victim->exec = NULL;
	e = cudaGraphInstantiate(&victim->exec, graph, 0);
	cudaGraphDestroy(graph);
	if (e != cudaSuccess) {
		victim->exec = NULL;
		*rc = e;
		return NULL;
	}
	victim->n = n;
	victim->n_out = n_out;
	victim->len = len;
	victim->want_logits = want_logits;
	victim->used = ++cb->graph_clock;
	cb->graph_captures++;
	log_debug("cuda: graph captured for %d tokens, %d sampled, context %d%s", n, n_out, len,
	    want_logits ? ", logits copied" : "");
	return victim->exec;
}

/*
 * A prompt step and a decode step on KV slot 0 before serving, so that the
 * first requests do not pay for (and the loop never waits behind) the
 * driver's one-time work: kernel loading, the decode graph's capture.
 * Slot 0's cache rows are rewritten by its next user before being read.
 */
static int
warm_up(struct cuda_backend *cb, struct orcd_err *err)
{
	int sizes[2] = { cb->max_tokens < cb->slot_ctx ? cb->max_tokens : cb->slot_ctx, 1 };
	cudaError_t e;

	for (int k = 0; k < 2; k++) {
		int n = sizes[k], rc = 0;

		io_layout(cb->h_in, n, &cb->h);
		io_layout(cb->d_in, n, &cb->d);
		for (int t = 0; t < n; t++) {
			cb->h.tok[t] = 0;
			cb->h.pos[t] = t;
			cb->h.kptr[t] = cb->kv_k;
			cb->h.vptr[t] = cb->kv_v;
			if (cb->kv_bt > 0) {
				/* slot 0's table row, blocks 0.. (given back after) */
				cb->h.kptr[t] = (uint16_t *)cb->d_tab;
				cb->h.vptr[t] = (uint16_t *)cb->d_tab;
			}
		}
		if (cb->kv_bt > 0) {
			int nb = (n + cb->kv_bt - 1) / cb->kv_bt;

			if (nb > cb->n_kv_blocks)
				return orcd_errf(err, "cuda backend: the KV pool of %d blocks is "
				    "smaller than one step of %d tokens", cb->n_kv_blocks, n);
			for (int b = 0; b < nb; b++)
				cb->h_tab[b] = b;
			if ((e = cudaMemcpyAsync(cb->d_tab, cb->h_tab, (size_t)nb * 4,
			    cudaMemcpyHostToDevice, cb->stream)) != cudaSuccess)
				return cuda_fail(err, e, "warm-up block table");
		}
		cb->h.rows[0] = n - 1;
		int len = n < LEN_BUCKET ? LEN_BUCKET : n;
		if (len > cb->slot_ctx)
			len = cb->slot_ctx;
		if (cb->graphs && n <= GRAPH_MAX_TOKENS) {
			cudaGraphExec_t ge = graph_for(cb, n, 1, len, false, &rc);

			if (ge != NULL)
				rc = cudaGraphLaunch(ge, cb->stream);
		} else {
			rc = enqueue_body(cb, n, 1, len, false);
		}
		if (rc != 0)
			return cuda_fail(err, (cudaError_t)rc, "warm-up step");
	}
	if ((e = cudaStreamSynchronize(cb->stream)) != cudaSuccess)
		return cuda_fail(err, e, "warm-up step");
	return 0;
}

static void
run_step(struct cuda_backend *cb, struct cuda_job *j)
{
	struct backend_step *st = j->st;
	int n = 0, n_out = 0, max_len = 0, rc = 0;
	int n_vocab = cb->m->hp.n_vocab;
	bool want, eager;

	st->t_start = orcd_now();
	st->status = 0;
	for (int i = 0; i < st->n_seqs; i++) {
		struct backend_step_seq *s = &st->seqs[i];

		if (s->n_tokens < 0 || s->n_tokens > cb->max_tokens - n) {
			orcd_errf(&st->err, "cuda backend: more than %d tokens in one step",
			    cb->max_tokens);
			goto fail;
		}
		if (s->pos < 0 || s->pos + s->n_tokens > cb->slot_ctx) {
			orcd_errf(&st->err, "cuda backend: position %d is beyond the context %d",
			    s->pos + s->n_tokens, cb->slot_ctx);
			goto fail;
		}
		if (cb->kv_bt > 0 && s->pos + s->n_tokens > s->seq->n_blocks * cb->kv_bt) {
			orcd_errf(&st->err, "cuda backend: position %d has no KV block reserved",
			    s->pos + s->n_tokens - 1);
			goto fail;
		}
		n += s->n_tokens;
		if (s->sampler != NULL && ++n_out > cb->max_out) {
			orcd_errf(&st->err, "cuda backend: more than %d sequences", cb->max_out);
			goto fail;
		}
		if (s->sampler != NULL && s->n_tokens == 0) {
			orcd_errf(&st->err, "cuda backend: a sampled sequence with no tokens");
			goto fail;
		}
	}
	if (n == 0) {
		orcd_errf(&st->err, "cuda backend: empty step");
		goto fail;
	}
	io_layout(cb->h_in, n, &cb->h);
	io_layout(cb->d_in, n, &cb->d);
	n = n_out = 0;
	for (int i = 0; i < st->n_seqs; i++) {
		struct backend_step_seq *s = &st->seqs[i];
		size_t base = (size_t)s->seq->slot * cb->slot_elems;

		for (int t = 0; t < s->n_tokens; t++) {
			if (s->tokens[t] < 0 || s->tokens[t] >= n_vocab) {
				orcd_errf(&st->err, "cuda backend: token id %d outside the vocabulary",
				    s->tokens[t]);
				goto fail;
			}
			cb->h.tok[n] = s->tokens[t];
			cb->h.pos[n] = s->pos + t;
			if (cb->kv_bt > 0) {
				int32_t *tab = cb->d_tab + (size_t)s->seq->slot * cb->max_blocks;

				cb->h.kptr[n] = (uint16_t *)tab;
				cb->h.vptr[n] = (uint16_t *)tab;
			} else {
				cb->h.kptr[n] = cb->kv_k + base;
				cb->h.vptr[n] = cb->kv_v + base;
			}
			n++;
		}
		if (s->pos + s->n_tokens > max_len)
			max_len = s->pos + s->n_tokens;
		if (s->sampler != NULL)
			cb->h.rows[n_out++] = n - 1;
	}
	/* attention is planned for the context rounded up to a bucket, so
	 * graphs and eager steps run the very same kernels */
	max_len = (max_len + LEN_BUCKET - 1) / LEN_BUCKET * LEN_BUCKET;
	if (max_len > cb->slot_ctx)
		max_len = cb->slot_ctx;
	/* logits to the host when a sequence is sampled there (or the caller
	 * wants them); greedy needs only the ids */
	want = st->logits_out != NULL;
	for (int i = 0; i < st->n_seqs && !want; i++)
		want = st->seqs[i].sampler != NULL && !sampler_is_greedy(st->seqs[i].sampler);
	/* paged: blocks reserved since the last step reach the device tables
	 * first (the host rows are the loop's only while a sequence is idle) */
	for (int i = 0; cb->kv_bt > 0 && i < st->n_seqs; i++) {
		struct backend_seq *q = st->seqs[i].seq;
		size_t row = (size_t)q->slot * cb->max_blocks + (size_t)q->n_uploaded;

		if (q->n_uploaded >= q->n_blocks)
			continue;
		if ((rc = cudaMemcpyAsync(cb->d_tab + row, cb->h_tab + row,
		    (size_t)(q->n_blocks - q->n_uploaded) * 4, cudaMemcpyHostToDevice,
		    cb->stream)) != 0)
			goto cuda_error;
		q->n_uploaded = q->n_blocks;
	}
	eager = !cb->graphs || n > GRAPH_MAX_TOKENS;
	for (int i = 0; !eager && i < cb->n_nograph; i++)
		eager = cb->nograph[i].n == n && cb->nograph[i].n_out == n_out &&
		    cb->nograph[i].len == max_len && cb->nograph[i].want_logits == want;
	if (!eager) {
		cudaGraphExec_t ge = graph_for(cb, n, n_out, max_len, want, &rc);

		if (ge == NULL) {
			struct cuda_backend::nograph *ng =
			    &cb->nograph[cb->n_nograph < 16 ? cb->n_nograph++ : 15];

			ng->n = n;
			ng->n_out = n_out;
			ng->len = max_len;
			ng->want_logits = want;
			/* a shape that cannot be captured runs eagerly (the same
			 * kernels; a failing op then names itself) */
			cudaGetLastError();
			if (cb->graph_fallbacks++ < 5)
				log_warn("cuda: no CUDA graph for %d tokens, context %d (%s); "
				    "running the step's kernels one by one", n, max_len,
				    cudaGetErrorString((cudaError_t)rc));
			if ((rc = enqueue_body(cb, n, n_out, max_len, want)) != 0)
				goto cuda_error;
		} else if ((rc = cudaGraphLaunch(ge, cb->stream)) != 0) {
			goto cuda_error;
		} else {
			cb->graph_launches++;
		}
	} else if ((rc = enqueue_body(cb, n, n_out, max_len, want)) != 0) {
		goto cuda_error;
	} else {
		prof_collect(cb);
	}
	if ((rc = cudaLaunchHostFunc(cb->stream, step_done, j)) != 0)
		goto cuda_error;
	return;
cuda_error:
	orcd_errf(&st->err, "cuda backend: %s", cudaGetErrorString((cudaError_t)rc));
fail:
	st->status = -1;
	st->t_end = orcd_now();
	cq_push(cb->b.cq, &st->cq);
	free(j);
}

static void
enqueue_start(void *arg)
{
	cudaSetDevice(((struct cuda_backend *)arg)->device);
}

static void
enqueue_job(void *arg, void *job)
{
	run_step((struct cuda_backend *)arg, (struct cuda_job *)job);
}

/* ------------------------------------------------------------ ops */

static int
cuda_seq_new(struct backend *b, int n_ctx, struct backend_seq **out, struct orcd_err *err)
{
	struct cuda_backend *cb = (struct cuda_backend *)b->impl;

	*out = NULL;
	if (n_ctx > cb->slot_ctx)
		return orcd_errf(err, "cuda backend: %d positions asked, a KV slot holds %d "
		    "(ctx-size)", n_ctx, cb->slot_ctx);
	for (int i = 0; i < cb->n_slots; i++)
		if (!cb->slot_used[i]) {
			struct backend_seq *s = (struct backend_seq *)malloc(sizeof(*s));

			if (s == NULL)
				return orcd_errf(err, "cuda backend: out of memory");
			cb->slot_used[i] = true;
			cb->n_slots_used.fetch_add(1, std::memory_order_relaxed);
			s->slot = i;
			s->n_blocks = s->n_uploaded = 0;
			*out = s;
			return 0;
		}
	return orcd_errf(err, "cuda backend: all %d KV slots are in use", cb->n_slots);
}

static void
cuda_seq_free(struct backend *b, struct backend_seq *s)
{
	struct cuda_backend *cb = (struct cuda_backend *)b->impl;

	if (s == NULL)
		return;
	cb->slot_used[s->slot] = false;
	cb->n_slots_used.fetch_sub(1, std::memory_order_relaxed);
	if (cb->kv_bt > 0) {
		const int32_t *row = cb->h_tab + (size_t)s->slot * cb->max_blocks;

		for (int i = s->n_blocks - 1; i >= 0; i--)
			cb->free_blocks[cb->n_free_blocks++] = row[i];
		cb->n_blocks_used.fetch_sub(s->n_blocks, std::memory_order_relaxed);
	}
	free(s);
}

static uint64_t
cuda_seq_bytes(struct backend *b, int n_ctx)
{
	struct cuda_backend *cb = (struct cuda_backend *)b->impl;

	if (cb->kv_bt > 0)
		return ((uint64_t)n_ctx + cb->kv_bt - 1) / cb->kv_bt * 2ull * cb->block_elems *
		    sizeof(uint16_t);
	(void)n_ctx; /* every sequence takes a whole slot */
	return 2ull * cb->slot_elems * sizeof(uint16_t);
}

/* Paged: blocks for positions [0, n_pos) from the free list (the loop
 * thread, s idle); the device table row is brought up to date at the
 * sequence's next step. */
static int
cuda_seq_reserve(struct backend *b, struct backend_seq *s, int n_pos, struct orcd_err *err)
{
	struct cuda_backend *cb = (struct cuda_backend *)b->impl;
	int need;

	if (n_pos > cb->slot_ctx)
		return orcd_errf(err, "cuda backend: %d positions exceed the context of %d",
		    n_pos, cb->slot_ctx);
	if (cb->kv_bt == 0)
		return 0;
	need = (n_pos + cb->kv_bt - 1) / cb->kv_bt;
	while (s->n_blocks < need) {
		if (cb->n_free_blocks == 0)
			return orcd_errf(err, "cuda backend: the KV pool's %d blocks are all in "
			    "use", cb->n_kv_blocks);
		cb->h_tab[(size_t)s->slot * cb->max_blocks + s->n_blocks++] =
		    cb->free_blocks[--cb->n_free_blocks];
		cb->n_blocks_used.fetch_add(1, std::memory_order_relaxed);
	}
	return 0;
}

static int
cuda_step(struct backend *b, struct backend_step *st, struct orcd_err *err)
{
	struct cuda_backend *cb = (struct cuda_backend *)b->impl;
	struct cuda_job *j = (struct cuda_job *)malloc(sizeof(*j));

	if (j == NULL)
		return orcd_errf(err, "cuda backend: out of memory");
	j->st = st;
	j->cb = cb;
	if (worker_push(cb->thread, j, err) != 0) {
		free(j);
		return -1;
	}
	return 0;
}

static void
cuda_destroy(struct backend *b)
{
	struct cuda_backend *cb;

	if (b == NULL)
		return;
	cb = (struct cuda_backend *)b->impl;
	worker_stop(cb->thread);
	if (cb->stream != NULL) {
		cudaStreamSynchronize(cb->stream);
		cudaStreamDestroy(cb->stream);
	}
	for (int i = 0; i < GRAPH_CACHE; i++)
		if (cb->graph[i].exec != NULL)
			cudaGraphExecDestroy(cb->graph[i].exec);
	prof_report(cb);
	if (cb->graph_launches > 0)
		log_info("cuda: %lu steps ran as CUDA graphs (%lu captured)",
		    (unsigned long)cb->graph_launches, (unsigned long)cb->graph_captures);
	if (cb->h_logits != NULL)
		cudaFreeHost(cb->h_logits);
	if (cb->vram != NULL) {
		/* everything was allocated for the backend's lifetime: freeing it
		 * all here is the normal path, not a leak */
		vram_destroy(cb->vram, NULL);
	}
	if (cb->seal_stream != NULL)
		cudaStreamDestroy(cb->seal_stream);
	free(cb->regions);
	free(cb->free_blocks);
	free(cb->layers);
	free(cb->slot_used);
	cb->~cuda_backend();
	free(cb);
}

static int
cuda_health(struct backend *b, struct backend_health *h)
{
	struct cuda_backend *cb = (struct cuda_backend *)b->impl;
	struct vram_stats vs;

	vram_snapshot(cb->vram, &vs);
	h->vram_bytes_used = vs.total.bytes;
	h->resident = cb->resident;
	h->checked_at = cb->t_checked;
	return 0;
}

static int
cuda_verify(struct backend *b, struct orcd_err *err)
{
	struct cuda_backend *cb = (struct cuda_backend *)b->impl;
	struct vram_report r;
	int v;

	cudaSetDevice(cb->device);
	v = vram_verify_residency(cb->vram, &r, err);
	cb->resident = v == 0;
	cb->t_checked = orcd_now();
	return v;
}

static void
cuda_mem(struct backend *b, struct backend_mem *m)
{
	struct cuda_backend *cb = (struct cuda_backend *)b->impl;
	struct vram_stats vs;
	uint64_t slot = 2ull * cb->slot_elems * sizeof(uint16_t);
	uint64_t block = 2ull * cb->block_elems * sizeof(uint16_t);

	vram_snapshot(cb->vram, &vs);
	if (cb->kv_bt > 0) {
		/* the pool is allocated whole at load: what requests hold is
		 * the blocks in use, the rest of the pool is not "used" */
		uint64_t held = (uint64_t)cb->n_blocks_used.load(std::memory_order_relaxed) * block;
		uint64_t pool = (uint64_t)cb->n_kv_blocks * block;

		m->used = vs.total.bytes - pool + held;
		m->kv_used = held;
		m->kv_capacity = pool;
		m->kv_block_bytes = block;
		m->kv_block_tokens = cb->kv_bt;
		return;
	}
	m->used = vs.total.bytes;
	m->kv_used = (uint64_t)cb->n_slots_used.load(std::memory_order_relaxed) * slot;
	m->kv_capacity = (uint64_t)cb->n_slots * slot;
	m->kv_block_bytes = slot;
	m->kv_block_tokens = cb->slot_ctx;
}

/* ------------------------------------------------------------ seal */

/* A converted vector in VRAM must equal a fresh conversion of the file's
 * bytes (its digest is then the file's, computed on the host). */
static int
region_check_converted(struct cuda_backend *cb, const cuda_backend::seal_region *r,
    struct orcd_err *err)
{
	size_t n = (size_t)r->n;
	float *dev = (float *)malloc(n * sizeof(float));
	float *fresh = (float *)malloc(n * sizeof(float));
	int rc = 0;
	cudaError_t e;

	if (dev == NULL || fresh == NULL) {
		free(dev);
		free(fresh);
		return orcd_errf(err, "cuda: out of memory");
	}
	if ((e = cudaMemcpyAsync(dev, r->dev, n * sizeof(float), cudaMemcpyDeviceToHost,
	    cb->seal_stream)) != cudaSuccess || (e = cudaStreamSynchronize(cb->seal_stream)) !=
	    cudaSuccess) {
		rc = cuda_fail(err, e, "seal: reading a vector back");
	} else {
		quant_dequantize_row((enum orcd_dtype)r->type, r->host, fresh, (int64_t)n);
		if (memcmp(dev, fresh, n * sizeof(float)) != 0)
			rc = orcd_errf(err, "cuda: the converted copy of tensor '%s' in VRAM "
			    "differs from the file's bytes", r->name);
	}
	free(dev);
	free(fresh);
	return rc;
}

static int
seal_buffers(struct cuda_backend *cb, int n, struct orcd_err *err)
{
	size_t bytes = (size_t)n * (sizeof(void *) + 32 + sizeof(uint32_t));

	if (n <= cb->seal_cap)
		return 0;
	if (cb->seal_dev != NULL)
		vram_free(cb->vram, cb->seal_dev, NULL);
	if (cb->seal_host != NULL)
		vram_free(cb->vram, cb->seal_host, NULL);
	cb->seal_dev = cb->seal_host = NULL;
	cb->seal_cap = 0;
	if (vram_alloc(cb->vram, bytes, VRAM_SCRATCH, "seal digests", &cb->seal_dev, err) != 0 ||
	    vram_alloc_io_pinned(cb->vram, bytes, "seal digests", &cb->seal_host, err) != 0)
		return -1;
	cb->seal_cap = n;
	return 0;
}

/* Chunk digests over the bytes in VRAM: every chunk that lies in a raw
 * region is digested by the GPU kernel on the low-priority stream, in
 * batches; a chunk of a converted vector is digested on the host after
 * its VRAM copy is checked against the file. */
static int
cuda_weights_digest(struct backend *b, const void *const *chunk_host,
    const uint32_t *chunk_len, int n_chunks, uint8_t (*digests)[32], struct orcd_err *err)
{
	struct cuda_backend *cb = (struct cuda_backend *)b->impl;
	int rc = -1, n_dev = 0;
	int *dev_idx = NULL;
	bool *checked = NULL;
	cudaError_t e;

	if (n_chunks <= 0)
		return orcd_errf(err, "cuda: no chunks to digest");
	pthread_mutex_lock(&cb->seal_mu);
	cudaSetDevice(cb->device);
	dev_idx = (int *)malloc((size_t)n_chunks * sizeof(int));
	checked = (bool *)calloc((size_t)cb->n_regions + 1, sizeof(bool));
	if (dev_idx == NULL || checked == NULL) {
		orcd_errf(err, "cuda: out of memory for %d chunks", n_chunks);
		goto out;
	}
	if (seal_buffers(cb, n_chunks, err) != 0)
		goto out;
	{
		uint8_t **hp = (uint8_t **)cb->seal_host;
		uint32_t *hl = (uint32_t *)((uint8_t *)cb->seal_host +
		    (size_t)cb->seal_cap * (sizeof(void *) + 32));

		for (int i = 0; i < n_chunks; i++) {
			const uint8_t *p = (const uint8_t *)chunk_host[i];
			const cuda_backend::seal_region *r = region_find(cb, p);

			if (r == NULL || chunk_len[i] == 0 || chunk_len[i] > SEAL_CHUNK_BYTES ||
			    (uint64_t)(p - r->host) + chunk_len[i] > r->nbytes) {
				orcd_errf(err, "cuda: chunk %d is not inside a tensor held in VRAM", i);
				goto out;
			}
			if (!r->raw) {
				if (!checked[r - cb->regions]) {
					if (region_check_converted(cb, r, err) != 0)
						goto out;
					checked[r - cb->regions] = true;
				}
				seal_chunk_digest(p, chunk_len[i], digests[i]);
				continue;
			}
			hp[n_dev] = r->dev + (p - r->host);
			hl[n_dev] = chunk_len[i];
			dev_idx[n_dev++] = i;
		}
		if (n_dev > 0) {
			uint8_t *dbase = (uint8_t *)cb->seal_dev;
			uint8_t **dp = (uint8_t **)dbase;
			uint8_t *dout = dbase + (size_t)cb->seal_cap * sizeof(void *);
			uint32_t *dl = (uint32_t *)(dout + (size_t)cb->seal_cap * 32);
			uint8_t *hout = (uint8_t *)cb->seal_host + (size_t)cb->seal_cap * sizeof(void *);

			if ((e = cudaMemcpyAsync(dp, hp, (size_t)n_dev * sizeof(void *),
			    cudaMemcpyHostToDevice, cb->seal_stream)) != cudaSuccess ||
			    (e = cudaMemcpyAsync(dl, hl, (size_t)n_dev * sizeof(uint32_t),
			    cudaMemcpyHostToDevice, cb->seal_stream)) != cudaSuccess ||
			    (e = (cudaError_t)cuda_seal_digests(dp, dl, n_dev, dout,
			    cb->seal_stream)) != cudaSuccess ||
			    (e = cudaMemcpyAsync(hout, dout, (size_t)n_dev * 32,
			    cudaMemcpyDeviceToHost, cb->seal_stream)) != cudaSuccess ||
			    (e = cudaStreamSynchronize(cb->seal_stream)) != cudaSuccess) {
				cuda_fail(err, e, "seal digests on the GPU");
				goto out;
			}
			for (int k = 0; k < n_dev; k++)
				memcpy(digests[dev_idx[k]], hout + (size_t)k * 32, 32);
		}
	}
	rc = 0;
out:
	free(dev_idx);
	free(checked);
	pthread_mutex_unlock(&cb->seal_mu);
	return rc;
}

/* Test only: flips the lowest bit of the VRAM copy of one byte. */
static int
cuda_debug_flip(struct backend *b, const void *chunk_host, struct orcd_err *err)
{
	struct cuda_backend *cb = (struct cuda_backend *)b->impl;
	const uint8_t *p = (const uint8_t *)chunk_host;
	const cuda_backend::seal_region *r = region_find(cb, p);
	uint8_t v;
	cudaError_t e;

	if (r == NULL)
		return orcd_errf(err, "cuda: the byte to flip is not in a tensor held in VRAM");
	pthread_mutex_lock(&cb->seal_mu);
	cudaSetDevice(cb->device);
	if (!r->raw) {
		/* a float copy: flip a bit of the first float */
		p = r->host;
	}
	uint8_t *d = r->dev + (p - r->host);
	if ((e = cudaMemcpyAsync(&v, d, 1, cudaMemcpyDeviceToHost, cb->seal_stream)) ==
	    cudaSuccess && (e = cudaStreamSynchronize(cb->seal_stream)) == cudaSuccess) {
		v ^= 1;
		if ((e = cudaMemcpyAsync(d, &v, 1, cudaMemcpyHostToDevice, cb->seal_stream)) ==
		    cudaSuccess)
			e = cudaStreamSynchronize(cb->seal_stream);
	}
	pthread_mutex_unlock(&cb->seal_mu);
	return e == cudaSuccess ? 0 : cuda_fail(err, e, "seal: flipping a byte in VRAM");
}

static const struct backend_ops cuda_ops = {
	"cuda",
	cuda_seq_new,
	cuda_seq_free,
	cuda_seq_bytes,
	cuda_step,
	cuda_destroy,
	cuda_health,
	cuda_verify,
	cuda_seq_reserve,
	cuda_mem,
	cuda_weights_digest,
	cuda_debug_flip,
	NULL,         /* seq_attach_prefix: no prefix reuse on the GPU yet */
	NULL,
};

/* ------------------------------------------------------------ create */

extern "C" int
backend_cuda_available(char *why, size_t len)
{
	int n = 0;
	cudaError_t e;

	/* Load every kernel when the context is created rather than at its
	 * first launch while serving (lazy loading takes process-wide locks
	 * that stalled the event loop); the user's setting wins. */
	setenv("CUDA_MODULE_LOADING", "EAGER", 0);
	e = cudaGetDeviceCount(&n);

	if (e != cudaSuccess || n == 0) {
		if (why != NULL)
			snprintf(why, len, "%s", e != cudaSuccess ? cudaGetErrorString(e) :
			    "no CUDA device");
		return 0;
	}
	return 1;
}

extern "C" int
backend_cuda_new(const struct model *m, const struct backend_cuda_opts *o, struct cq *cq,
    struct backend **out, struct orcd_err *err)
{
	void *mem = calloc(1, sizeof(struct cuda_backend));
	/* placement new: the struct holds std::atomic members */
	struct cuda_backend *cb = mem ? new (mem) cuda_backend() : NULL;
	const struct model_hparams *hp = &m->hp;
	struct vram_config vc;
	cudaDeviceProp prop;
	char why[256];

	*out = NULL;
	if (cb == NULL)
		return orcd_errf(err, "cuda backend: out of memory");
	cb->b.ops = &cuda_ops;
	cb->b.model = m;
	cb->b.cq = cq;
	cb->b.impl = cb;
	cb->m = m;
	if (!backend_cuda_available(why, sizeof(why))) {
		orcd_errf(err, "cuda backend: %s", why);
		goto fail;
	}
	cb->device = o->device;
	if (cudaSetDevice(cb->device) != cudaSuccess ||
	    cudaGetDeviceProperties(&prop, cb->device) != cudaSuccess) {
		orcd_errf(err, "cuda backend: cannot use device %d", cb->device);
		goto fail;
	}
	vram_config_init(&vc);
	vc.device = cb->device;
	vc.soft_limit = o->soft_limit;
	vc.hard_limit = o->hard_limit;
	vc.pinned_limit = 2 * STAGING_BYTES + (16u << 20);
	if ((cb->vram = vram_create(&vc, err)) == NULL)
		goto fail;
	if (cudaStreamCreateWithFlags(&cb->stream, cudaStreamNonBlocking) != cudaSuccess) {
		orcd_errf(err, "cuda backend: cannot create a stream");
		goto fail;
	}
	{
		/* seal re-verification: the lowest priority, so decode's kernels
		 * are scheduled ahead of its blocks */
		int lo = 0, hi = 0;

		cudaDeviceGetStreamPriorityRange(&lo, &hi);
		if (cudaStreamCreateWithPriority(&cb->seal_stream, cudaStreamNonBlocking, lo) !=
		    cudaSuccess) {
			orcd_errf(err, "cuda backend: cannot create the seal stream");
			goto fail;
		}
	}
	pthread_mutex_init(&cb->seal_mu, NULL);
	if (upload_model(cb, err) != 0 || seal_regions_build(cb, err) != 0)
		goto fail;

	cb->kv_dim = hp->n_head_kv * hp->head_dim;
	cb->slot_ctx = o->n_ctx;
	cb->n_slots = o->n_seqs;
	cb->slot_elems = (size_t)hp->n_layer * cb->slot_ctx * cb->kv_dim;
	cb->slot_used = (bool *)calloc((size_t)cb->n_slots, sizeof(bool));
	if (cb->slot_used == NULL) {
		orcd_errf(err, "cuda backend: out of memory");
		goto fail;
	}
	if (o->kv_block_tokens > 0) {
		/* paged: one pool of blocks, a block table row per slot */
		size_t kv_elems;

		if ((o->kv_block_tokens & (o->kv_block_tokens - 1)) != 0) {
			orcd_errf(err, "cuda backend: kv-block-tokens %d is not a power of two",
			    o->kv_block_tokens);
			goto fail;
		}
		cb->kv_bt = o->kv_block_tokens;
		cb->block_elems = (size_t)hp->n_layer * cb->kv_bt * cb->kv_dim;
		cb->max_blocks = (cb->slot_ctx + cb->kv_bt - 1) / cb->kv_bt;
		{
			uint64_t nb = o->kv_bytes > 0 ?
			    o->kv_bytes / (2 * cb->block_elems * sizeof(uint16_t)) :
			    (uint64_t)cb->n_slots * cb->max_blocks;

			cb->n_kv_blocks = nb > INT32_MAX ? INT32_MAX : (int)nb;
		}
		if (cb->n_kv_blocks <= 0) {
			orcd_errf(err, "cuda backend: kv-memory of %llu bytes is less than one "
			    "block of %d positions (%zu bytes)", (unsigned long long)o->kv_bytes,
			    cb->kv_bt, 2 * cb->block_elems * sizeof(uint16_t));
			goto fail;
		}
		kv_elems = cb->block_elems * (size_t)cb->n_kv_blocks;
		cb->free_blocks = (int32_t *)malloc((size_t)cb->n_kv_blocks * sizeof(int32_t));
		if (cb->free_blocks == NULL) {
			orcd_errf(err, "cuda backend: out of memory");
			goto fail;
		}
		for (int i = 0; i < cb->n_kv_blocks; i++)
			cb->free_blocks[i] = cb->n_kv_blocks - 1 - i;
		cb->n_free_blocks = cb->n_kv_blocks;
		if (vram_alloc(cb->vram, kv_elems * 2, VRAM_KV, "kv key blocks",
		    (void **)&cb->kv_k, err) != 0 ||
		    vram_alloc(cb->vram, kv_elems * 2, VRAM_KV, "kv value blocks",
		    (void **)&cb->kv_v, err) != 0 ||
		    vram_alloc(cb->vram, (size_t)cb->n_slots * cb->max_blocks * 4, VRAM_KV,
		    "kv block tables", (void **)&cb->d_tab, err) != 0 ||
		    vram_alloc_io_pinned(cb->vram, (size_t)cb->n_slots * cb->max_blocks * 4,
		    "kv block tables", (void **)&cb->h_tab, err) != 0)
			goto fail;
	} else if (vram_alloc(cb->vram, cb->slot_elems * cb->n_slots * 2, VRAM_KV, "kv keys",
	    (void **)&cb->kv_k, err) != 0 ||
	    vram_alloc(cb->vram, cb->slot_elems * cb->n_slots * 2, VRAM_KV, "kv values",
	    (void **)&cb->kv_v, err) != 0) {
		goto fail;
	}
	cb->max_tokens = o->max_step_tokens;
	cb->max_out = o->n_seqs;
	cb->graphs = o->graphs != 0;
	if (getenv("ORCD_CUDA_PROFILE") != NULL && strcmp(getenv("ORCD_CUDA_PROFILE"), "1") == 0) {
		cb->prof.on = true;
		cb->graphs = false;   /* events around every kernel: eager steps */
		for (int i = 0; i <= PROF_MAX; i++)
			if (cudaEventCreate(&cb->prof.ev[i]) != cudaSuccess) {
				cb->prof.on = false;
				break;
			}
		log_warn("ORCD_CUDA_PROFILE=1: kernels are timed one by one (slower, no graphs)");
	}
	if (alloc_scratch(cb, err) != 0 || warm_up(cb, err) != 0)
		goto fail;
	if (cuda_verify(&cb->b, err) != 0) {
		orcd_err_prefix(err, "cuda backend: residency check failed");
		goto fail;
	}
	vram_mark_baseline(cb->vram);
	if ((cb->thread = worker_start(enqueue_job, enqueue_start, cb, err)) == NULL)
		goto fail;
	{
		struct vram_stats vs;

		vram_snapshot(cb->vram, &vs);
		log_info("cuda: %s, weights %.1f MB uploaded in %.3f s (%.1f GB/s), KV %d slots x %d "
		    "positions (%.1f MB), activations+scratch %.1f MB, all device-resident",
		    prop.name, (double)vs.purpose[VRAM_WEIGHTS].bytes / 1e6, cb->load_seconds,
		    cb->load_gbps, cb->n_slots, cb->slot_ctx,
		    (double)vs.purpose[VRAM_KV].bytes / 1e6,
		    (double)(vs.purpose[VRAM_ACTIVATIONS].bytes + vs.purpose[VRAM_SCRATCH].bytes +
		    vs.purpose[VRAM_IO].bytes) / 1e6);
	}
	*out = &cb->b;
	return 0;
fail:
	cuda_destroy(&cb->b);
	return -1;
}

extern "C" struct vram *
backend_cuda_vram(struct backend *b)
{
	return ((struct cuda_backend *)b->impl)->vram;
}
