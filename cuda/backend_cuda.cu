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
#include "log.h"
#include "model.h"
#include "orcd.h"
#include "sampler.h"
#include "worker.h"
}

#define STAGING_BYTES (32u << 20)

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

	/* scratch for max_tokens tokens and max_out logits rows */
	int max_tokens, max_out;
	float *x, *xn, *q, *k, *v, *att, *gate, *up, *xo, *logits;
	void *act[2];
	size_t act_cap;
	void *att_ws;
	size_t att_ws_bytes;
	int *d_tok, *d_pos, *d_rows, *d_ids;
	uint16_t **d_kptr, **d_vptr;

	/* pinned host IO (one step in flight at a time) */
	struct io_in {
		int *tok, *pos, *rows;
		uint16_t **kptr, **vptr;
	} h;
	void *h_in;
	size_t h_in_bytes;
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
	    alloc_dev(cb, T * 4, VRAM_IO, "tokens", (void **)&cb->d_tok, err) ||
	    alloc_dev(cb, T * 4, VRAM_IO, "positions", (void **)&cb->d_pos, err) ||
	    alloc_dev(cb, L * 4, VRAM_IO, "logit rows", (void **)&cb->d_rows, err) ||
	    alloc_dev(cb, L * 4, VRAM_IO, "sampled ids", (void **)&cb->d_ids, err) ||
	    alloc_dev(cb, T * sizeof(void *), VRAM_IO, "k pointers", (void **)&cb->d_kptr, err) ||
	    alloc_dev(cb, T * sizeof(void *), VRAM_IO, "v pointers", (void **)&cb->d_vptr, err))
		return -1;
	/* pinned host side of the step inputs and outputs */
	cb->h_in_bytes = T * (4 + 4 + 2 * sizeof(void *)) + L * 4;
	if (vram_alloc_io_pinned(cb->vram, cb->h_in_bytes, "step inputs", &cb->h_in, err) != 0 ||
	    vram_alloc_io_pinned(cb->vram, L * 4, "sampled ids", (void **)&cb->h_ids, err) != 0)
		return -1;
	uint8_t *p = (uint8_t *)cb->h_in;
	cb->h.kptr = (uint16_t **)p; p += T * sizeof(void *);
	cb->h.vptr = (uint16_t **)p; p += T * sizeof(void *);
	cb->h.tok = (int *)p; p += T * 4;
	cb->h.pos = (int *)p; p += T * 4;
	cb->h.rows = (int *)p;
	/* host copies of logits for host-side sampling (rare: non-greedy) */
	cb->max_host_logits = cb->max_out;
	CK(cudaMallocHost((void **)&cb->h_logits, L * (size_t)hp->n_vocab * 4), "pinned logits");
	return 0;
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
	return cuda_quantize_act(t, ac->src, ac->ld, ac->rows, ac->n, ac->buf[slot], *stride,
	    cb->stream);
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
forward(struct cuda_backend *cb, struct backend_step *st, int n_tok, int n_out, int max_len)
{
	const struct model_hparams *hp = &cb->m->hp;
	const int E = hp->n_embd, F = hp->n_ff;
	const int qd = hp->n_head * hp->head_dim, kd = hp->n_head_kv * hp->head_dim;
	cudaStream_t s = cb->stream;
	struct act_cache ac;
	int rc;

#define R(x) do { if ((rc = (x)) != 0) return rc; } while (0)
	R(cuda_embed(cb->tok_embd.type, cb->tok_embd.d, cb->tok_embd.row_bytes, hp->n_vocab, E,
	    cb->d_tok, n_tok, cb->x, E, s));
	for (int il = 0; il < hp->n_layer; il++) {
		const cuda_layer *L = &cb->layers[il];
		size_t layer_off = (size_t)il * cb->slot_ctx * cb->kv_dim;

		R(cuda_rmsnorm(cb->x, E, L->attn_norm, n_tok, E, hp->rms_eps, cb->xn, E, s));
		act_set(cb, &ac, cb->xn, E, n_tok, E);
		R(mm(cb, &ac, &L->wq, cb->q, qd, NULL));
		R(mm(cb, &ac, &L->wk, cb->k, kd, NULL));
		R(mm(cb, &ac, &L->wv, cb->v, kd, NULL));
		R(cuda_rope_kv(n_tok, hp->n_head, hp->n_head_kv, hp->head_dim, hp->n_rot,
		    hp->rope_type == MODEL_ROPE_NEOX, hp->rope_freq_base, hp->rope_freq_scale,
		    cb->d_pos, cb->q, qd, cb->k, kd, cb->v, kd, L->bq, L->bk, L->bv, cb->d_kptr,
		    cb->d_vptr, layer_off, cb->slot_ctx, s));
		R(cuda_attention(n_tok, hp->n_head, hp->n_head_kv, hp->head_dim, cb->d_pos, cb->q, qd,
		    cb->d_kptr, cb->d_vptr, layer_off, cb->slot_ctx, max_len, 0, cb->att_ws,
		    cb->att_ws_bytes, cb->att, qd, s));
		act_set(cb, &ac, cb->att, qd, n_tok, qd);
		R(mm(cb, &ac, &L->wo, cb->x, E, cb->x));
		R(cuda_rmsnorm(cb->x, E, L->ffn_norm, n_tok, E, hp->rms_eps, cb->xn, E, s));
		act_set(cb, &ac, cb->xn, E, n_tok, E);
		R(mm(cb, &ac, &L->gate, cb->gate, F, NULL));
		R(mm(cb, &ac, &L->up, cb->up, F, NULL));
		R(cuda_swiglu(cb->gate, F, cb->gate, F, cb->up, F, n_tok, F, s));
		act_set(cb, &ac, cb->gate, F, n_tok, F);
		R(mm(cb, &ac, &L->down, cb->x, E, cb->x));
	}
	if (n_out == 0)
		return 0; /* a step of prompt chunks that sample nothing yet */
	gather_rows<<<n_out, 256, 0, s>>>(cb->x, E, cb->d_rows, n_out, E, cb->xo);
	R(cudaGetLastError());
	R(cuda_rmsnorm(cb->xo, E, cb->output_norm, n_out, E, hp->rms_eps, cb->xo, E, s));
	act_set(cb, &ac, cb->xo, E, n_out, E);
	R(mm(cb, &ac, &cb->output, cb->logits, hp->n_vocab, NULL));
	R(cuda_argmax(cb->logits, hp->n_vocab, n_out, hp->n_vocab, cb->d_ids, s));
#undef R
	(void)st;
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

static void
run_step(struct cuda_backend *cb, struct cuda_job *j)
{
	struct backend_step *st = j->st;
	int n = 0, n_out = 0, max_len = 0, rc;
	int n_vocab = cb->m->hp.n_vocab;

	st->t_start = orcd_now();
	st->status = 0;
	if (st->n_tokens > cb->max_tokens) {
		orcd_errf(&st->err, "cuda backend: %d tokens in one step, the limit is %d",
		    st->n_tokens, cb->max_tokens);
		goto fail;
	}
	for (int i = 0; i < st->n_seqs; i++) {
		struct backend_step_seq *s = &st->seqs[i];
		size_t base = (size_t)s->seq->slot * cb->slot_elems;

		if (s->pos + s->n_tokens > cb->slot_ctx) {
			orcd_errf(&st->err, "cuda backend: position %d is beyond the context %d",
			    s->pos + s->n_tokens, cb->slot_ctx);
			goto fail;
		}
		for (int t = 0; t < s->n_tokens; t++) {
			if (s->tokens[t] < 0 || s->tokens[t] >= n_vocab) {
				orcd_errf(&st->err, "cuda backend: token id %d outside the vocabulary",
				    s->tokens[t]);
				goto fail;
			}
			cb->h.tok[n] = s->tokens[t];
			cb->h.pos[n] = s->pos + t;
			cb->h.kptr[n] = cb->kv_k + base;
			cb->h.vptr[n] = cb->kv_v + base;
			n++;
		}
		if (s->pos + s->n_tokens > max_len)
			max_len = s->pos + s->n_tokens;
		if (s->sampler != NULL) {
			if (n_out >= cb->max_out) {
				orcd_errf(&st->err, "cuda backend: more than %d sequences", cb->max_out);
				goto fail;
			}
			cb->h.rows[n_out++] = n - 1;
		}
	}
	if (n == 0) {
		orcd_errf(&st->err, "cuda backend: empty step");
		goto fail;
	}
	{
		cudaStream_t s = cb->stream;

		/* h_in is laid out as kptr | vptr | tok | pos | rows, as are the
		 * device arrays' contents: one copy each */
		if ((rc = cudaMemcpyAsync(cb->d_kptr, cb->h.kptr, (size_t)n * sizeof(void *),
		    cudaMemcpyHostToDevice, s)) != 0 ||
		    (rc = cudaMemcpyAsync(cb->d_vptr, cb->h.vptr, (size_t)n * sizeof(void *),
		    cudaMemcpyHostToDevice, s)) != 0 ||
		    (rc = cudaMemcpyAsync(cb->d_tok, cb->h.tok, (size_t)n * 4, cudaMemcpyHostToDevice,
		    s)) != 0 ||
		    (rc = cudaMemcpyAsync(cb->d_pos, cb->h.pos, (size_t)n * 4, cudaMemcpyHostToDevice,
		    s)) != 0 ||
		    (n_out > 0 && (rc = cudaMemcpyAsync(cb->d_rows, cb->h.rows, (size_t)n_out * 4,
		    cudaMemcpyHostToDevice, s)) != 0))
			goto cuda_error;
		if ((rc = forward(cb, st, n, n_out, max_len)) != 0)
			goto cuda_error;
		if (n_out > 0 && (rc = cudaMemcpyAsync(cb->h_ids, cb->d_ids, (size_t)n_out * 4,
		    cudaMemcpyDeviceToHost, s)) != 0)
			goto cuda_error;
		/* logits to the host when a sequence is sampled there (or the
		 * caller wants them); greedy needs only the ids */
		bool want = st->logits_out != NULL;
		for (int i = 0; i < st->n_seqs && !want; i++)
			want = st->seqs[i].sampler != NULL && !sampler_is_greedy(st->seqs[i].sampler);
		if (want && n_out > 0 && (rc = cudaMemcpyAsync(cb->h_logits, cb->logits,
		    (size_t)n_out * n_vocab * 4, cudaMemcpyDeviceToHost, s)) != 0)
			goto cuda_error;
		if ((rc = cudaLaunchHostFunc(s, step_done, j)) != 0)
			goto cuda_error;
	}
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
			s->slot = i;
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
	free(s);
}

static uint64_t
cuda_seq_bytes(struct backend *b, int n_ctx)
{
	struct cuda_backend *cb = (struct cuda_backend *)b->impl;

	(void)n_ctx; /* every sequence takes a whole slot */
	return 2ull * cb->slot_elems * sizeof(uint16_t);
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
	if (cb->h_logits != NULL)
		cudaFreeHost(cb->h_logits);
	if (cb->vram != NULL) {
		/* everything was allocated for the backend's lifetime: freeing it
		 * all here is the normal path, not a leak */
		vram_destroy(cb->vram, NULL);
	}
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

static const struct backend_ops cuda_ops = {
	"cuda",
	cuda_seq_new,
	cuda_seq_free,
	cuda_seq_bytes,
	cuda_step,
	cuda_destroy,
	cuda_health,
	cuda_verify,
};

/* ------------------------------------------------------------ create */

extern "C" int
backend_cuda_available(char *why, size_t len)
{
	int n = 0;
	cudaError_t e = cudaGetDeviceCount(&n);

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
	if (upload_model(cb, err) != 0)
		goto fail;

	cb->kv_dim = hp->n_head_kv * hp->head_dim;
	cb->slot_ctx = o->n_ctx;
	cb->n_slots = o->n_seqs;
	cb->slot_elems = (size_t)hp->n_layer * cb->slot_ctx * cb->kv_dim;
	cb->slot_used = (bool *)calloc((size_t)cb->n_slots, sizeof(bool));
	if (cb->slot_used == NULL ||
	    vram_alloc(cb->vram, cb->slot_elems * cb->n_slots * 2, VRAM_KV, "kv keys",
	    (void **)&cb->kv_k, err) != 0 ||
	    vram_alloc(cb->vram, cb->slot_elems * cb->n_slots * 2, VRAM_KV, "kv values",
	    (void **)&cb->kv_v, err) != 0)
		goto fail;
	cb->max_tokens = o->max_step_tokens;
	cb->max_out = o->n_seqs;
	if (alloc_scratch(cb, err) != 0)
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
