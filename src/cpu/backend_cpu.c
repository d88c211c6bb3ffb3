/*
 * The CPU backend (include/orcd/backend.h): one engine thread takes steps
 * from a queue, runs the forward pass for the whole batch on the thread pool
 * (the engine thread is the pool's caller), samples one token for every
 * sequence that wants one and pushes the step back to the loop through the
 * completion queue.  The loop thread never computes.
 *
 * Seal digests run over what the engine reads: the mmap for the matrices
 * and embeddings, and the float copies for the norm weights and biases
 * (model.c converts those at load; an F32 tensor's copy holds the same
 * bytes as the file, any other type's copy is checked against a fresh
 * conversion of the mapped bytes).
 */
#include <errno.h>
#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/queue.h>
#include <time.h>
#include <unistd.h>

#include "orcd/backend.h"
#include "orcd/dtype.h"
#include "cpu/forward.h"
#include "cpu/pool.h"
#include "cpu/quant.h"
#include "model.h"
#include "orcd.h"
#include "sampler.h"
#include "seal.h"
#include "worker.h"

struct backend_seq {
	struct cpu_kv kv;
};

#define KV_BLOCK_TOKENS_DEFAULT 32

/* Seal digests of the weights use at most this many threads: a
 * re-verification runs beside serving and should not take every core. */
#define SEAL_DIGEST_THREADS 4

/* A tensor the engine reads from a float copy rather than the mmap. */
struct cpu_copy {
	const uint8_t *src;       /* the tensor's bytes in the mmap */
	uint64_t nbytes;
	int type;                 /* its file type */
	float *copy;              /* n floats, owned by the model */
	int64_t n;
	char name[96];
};

struct cpu_backend {
	struct backend b;
	struct cpu_engine *engine;
	struct worker *thread;     /* the engine thread */
	/* engine-thread scratch */
	int cap_tokens;
	int32_t *tokens, *pos;
	struct cpu_kv **kvs;
	bool *want;
	float *logits;
	int cap_logits;
	int *sample_seq;          /* logits row k belongs to seqs[sample_seq[k]] */
	struct cpu_kv_pool *kv;    /* free list: loop thread only */
	uint64_t block_bytes;
	/* seal digests (the monitor or loader thread) */
	struct cpu_copy *copies;
	int n_copies;
	int digest_threads;
};

static int
reserve(struct cpu_backend *cb, int n_tokens, int n_logits, struct orcd_err *err)
{
	if (n_tokens > cb->cap_tokens) {
		free(cb->tokens); free(cb->pos); free(cb->kvs); free(cb->want);
		cb->tokens = malloc((size_t)n_tokens * sizeof(*cb->tokens));
		cb->pos = malloc((size_t)n_tokens * sizeof(*cb->pos));
		cb->kvs = malloc((size_t)n_tokens * sizeof(*cb->kvs));
		cb->want = malloc((size_t)n_tokens * sizeof(*cb->want));
		cb->cap_tokens = n_tokens;
		if (!cb->tokens || !cb->pos || !cb->kvs || !cb->want) {
			cb->cap_tokens = 0;
			return orcd_errf(err, "cpu backend: out of memory for %d tokens", n_tokens);
		}
	}
	if (n_logits > cb->cap_logits) {
		free(cb->logits);
		free(cb->sample_seq);
		cb->logits = malloc((size_t)n_logits * (size_t)cb->b.model->hp.n_vocab * sizeof(float));
		cb->sample_seq = malloc((size_t)n_logits * sizeof(int));
		cb->cap_logits = n_logits;
		if (cb->logits == NULL || cb->sample_seq == NULL) {
			cb->cap_logits = 0;
			return orcd_errf(err, "cpu backend: out of memory for logits");
		}
	}
	return 0;
}

struct sample_job {
	struct cpu_backend *cb;
	struct backend_step *st;
};

static void
sample_task(void *arg, int k, int worker)
{
	struct sample_job *j = arg;
	struct backend_step_seq *s = &j->st->seqs[j->cb->sample_seq[k]];

	s->out_token = sampler_sample(s->sampler,
	    j->cb->logits + (size_t)k * (size_t)j->cb->b.model->hp.n_vocab);
}

static void
run_step(struct cpu_backend *cb, struct backend_step *st)
{
	int n = 0, n_logits = 0;

	st->t_start = orcd_now();
	st->status = 0;
	for (int i = 0; i < st->n_seqs; i++)
		n_logits += st->seqs[i].sampler != NULL;
	if (reserve(cb, st->n_tokens, n_logits, &st->err) != 0) {
		st->status = -1;
		goto done;
	}
	for (int i = 0; i < st->n_seqs; i++) {
		struct backend_step_seq *s = &st->seqs[i];

		for (int j = 0; j < s->n_tokens; j++) {
			cb->tokens[n] = s->tokens[j];
			cb->pos[n] = s->pos + j;
			cb->kvs[n] = &s->seq->kv;
			cb->want[n] = s->sampler != NULL && j == s->n_tokens - 1;
			n++;
		}
	}
	struct cpu_batch batch = { .n_tokens = n, .tokens = cb->tokens, .pos = cb->pos,
	    .kv = cb->kvs, .logits = cb->want };
	if (n == 0 || cpu_forward(cb->engine, &batch, cb->logits, &st->err) != 0) {
		if (n == 0)
			orcd_errf(&st->err, "cpu backend: empty step");
		st->status = -1;
		goto done;
	}
	/* Sampling: each sequence's own sampler on its own logits row, spread
	 * over the pool (tens of microseconds each at a 152k vocabulary). */
	int k = 0;
	for (int i = 0; i < st->n_seqs; i++) {
		if (st->seqs[i].sampler == NULL)
			continue;
		cb->sample_seq[k] = i;
		k++;
	}
	struct sample_job sj = { .cb = cb, .st = st };
	pool_run(cpu_engine_pool(cb->engine), sample_task, &sj, k);
	if (st->logits_out != NULL)
		memcpy(st->logits_out, cb->logits,
		    (size_t)k * (size_t)cb->b.model->hp.n_vocab * sizeof(float));
done:
	st->t_end = orcd_now();
	cq_push(cb->b.cq, &st->cq);
}

static void
engine_job(void *arg, void *job)
{
	run_step(arg, job);
}

static int
cpu_seq_new(struct backend *b, int n_ctx, struct backend_seq **out, struct orcd_err *err)
{
	struct cpu_backend *cb = b->impl;
	struct backend_seq *s;

	*out = NULL;
	s = calloc(1, sizeof(*s));
	if (s == NULL)
		return orcd_errf(err, "cpu backend: out of memory");
	if (cpu_kv_init(cb->kv, n_ctx, &s->kv, err) != 0) {
		free(s);
		return -1;
	}
	*out = s;
	return 0;
}

static void
cpu_seq_free(struct backend *b, struct backend_seq *s)
{
	if (s == NULL)
		return;
	cpu_kv_release(&s->kv);
	free(s);
}

static int
cpu_seq_reserve(struct backend *b, struct backend_seq *s, int n_pos, struct orcd_err *err)
{
	return cpu_kv_reserve(&s->kv, n_pos, err);
}

static int
cpu_seq_attach_prefix(struct backend *b, struct backend_seq *s, const int32_t *tokens, int n)
{
	return cpu_kv_attach_prefix(&s->kv, tokens, n);
}

static void
cpu_seq_publish(struct backend *b, struct backend_seq *s, const int32_t *tokens, int n_done)
{
	cpu_kv_publish(&s->kv, tokens, n_done);
}

static uint64_t
cpu_seq_bytes(struct backend *b, int n_ctx)
{
	struct cpu_backend *cb = b->impl;
	uint64_t bt = (uint64_t)cb->kv->block_tokens;

	return ((uint64_t)n_ctx + bt - 1) / bt * cb->block_bytes;
}

static void
cpu_mem(struct backend *b, struct backend_mem *m)
{
	struct cpu_backend *cb = b->impl;

	m->kv_used = (uint64_t)cpu_kv_pool_used(cb->kv) * cb->block_bytes;
	m->used = m->kv_used;
	m->kv_capacity = (uint64_t)cb->kv->n_blocks * cb->block_bytes;
	m->kv_block_bytes = cb->block_bytes;
	m->kv_block_tokens = cb->kv->block_tokens;
}

static int
cpu_step(struct backend *b, struct backend_step *st, struct orcd_err *err)
{
	struct cpu_backend *cb = b->impl;

	return worker_push(cb->thread, st, err);
}

static void
cpu_destroy(struct backend *b)
{
	struct cpu_backend *cb;

	if (b == NULL)
		return;
	cb = b->impl;
	worker_stop(cb->thread);
	cpu_kv_pool_free(cb->kv);
	cpu_engine_free(cb->engine);
	free(cb->tokens); free(cb->pos); free(cb->kvs); free(cb->want);
	free(cb->logits);
	free(cb->sample_seq);
	free(cb->copies);
	free(cb);
}

static int
cpu_health(struct backend *b, struct backend_health *h)
{
	h->vram_bytes_used = 0;
	h->resident = true;  /* host memory is where the CPU engine's model lives */
	h->checked_at = 0;
	return 0;
}

/* ------------------------------------------------------------ seal */

static int
add_copy(struct cpu_backend *cb, const char *name, float *copy, struct orcd_err *err)
{
	const struct gguf_tensor *t;
	struct cpu_copy *c;

	if (copy == NULL)
		return 0; /* an optional tensor the model does not have */
	t = gguf_find_tensor(cb->b.model->gguf, name);
	if (t == NULL)
		return orcd_errf(err, "cpu backend: tensor '%s' has a copy but no data", name);
	c = &cb->copies[cb->n_copies++];
	c->src = t->data;
	c->nbytes = t->nbytes;
	c->type = t->type;
	c->copy = copy;
	c->n = (int64_t)t->ne[0];
	snprintf(c->name, sizeof(c->name), "%s", name);
	return 0;
}

/* The model's float copies: per layer the two norms and up to three
 * biases, and the output norm (model.c's bind_vector calls). */
static int
find_copies(struct cpu_backend *cb, struct orcd_err *err)
{
	const struct model *m = cb->b.model;
	char name[96];

	cb->copies = calloc((size_t)m->hp.n_layer * 5 + 1, sizeof(*cb->copies));
	if (cb->copies == NULL)
		return orcd_errf(err, "cpu backend: out of memory");
	for (int il = 0; il < m->hp.n_layer; il++) {
		const struct model_layer *L = &m->layers[il];
		static const char *names[] = { "attn_norm.weight", "ffn_norm.weight",
		    "attn_q.bias", "attn_k.bias", "attn_v.bias" };
		float *v[] = { L->attn_norm, L->ffn_norm, L->bq, L->bk, L->bv };

		for (int k = 0; k < 5; k++) {
			snprintf(name, sizeof(name), "blk.%d.%s", il, names[k]);
			if (add_copy(cb, name, v[k], err) != 0)
				return -1;
		}
	}
	return add_copy(cb, "output_norm.weight", m->output_norm, err);
}

static struct cpu_copy *
copy_find(struct cpu_backend *cb, const uint8_t *p)
{
	for (int i = 0; i < cb->n_copies; i++)
		if (p >= cb->copies[i].src && p < cb->copies[i].src + cb->copies[i].nbytes)
			return &cb->copies[i];
	return NULL;
}

/* A copy that is not the file's bytes (a converted F16/BF16 vector) must
 * equal a fresh conversion of the mapped bytes. */
static int
copy_check(const struct cpu_copy *c, struct orcd_err *err)
{
	float *fresh = malloc((size_t)c->n * sizeof(float));
	int rc = 0;

	if (fresh == NULL)
		return orcd_errf(err, "cpu backend: out of memory");
	quant_dequantize_row(c->type, c->src, fresh, c->n);
	if (memcmp(fresh, c->copy, (size_t)c->n * sizeof(float)) != 0)
		rc = orcd_errf(err, "cpu backend: the converted copy of tensor '%s' the "
		    "engine reads differs from its mapped bytes", c->name);
	free(fresh);
	return rc;
}

static int
cpu_weights_digest(struct backend *b, const void *const *chunk_host,
    const uint32_t *chunk_len, int n_chunks, uint8_t (*digests)[32],
    struct orcd_err *err)
{
	struct cpu_backend *cb = b->impl;
	const struct gguf_file *g = b->model->gguf;
	const void **read_at;
	bool *checked;
	int rc = -1;

	if (n_chunks <= 0)
		return orcd_errf(err, "cpu backend: no chunks to digest");
	read_at = malloc((size_t)n_chunks * sizeof(*read_at));
	checked = calloc((size_t)cb->n_copies + 1, sizeof(*checked));
	if (read_at == NULL || checked == NULL) {
		orcd_errf(err, "cpu backend: out of memory for %d chunks", n_chunks);
		goto out;
	}
	for (int i = 0; i < n_chunks; i++) {
		const uint8_t *p = chunk_host[i];
		struct cpu_copy *c;

		if (p < g->base || chunk_len[i] > g->size ||
		    (size_t)(p - g->base) > g->size - chunk_len[i]) {
			orcd_errf(err, "cpu backend: chunk %d is not inside the model file", i);
			goto out;
		}
		read_at[i] = p;
		if ((c = copy_find(cb, p)) == NULL)
			continue;
		if (c->type == ORCD_DTYPE_F32) {
			if ((uint64_t)(p - c->src) + chunk_len[i] > c->nbytes) {
				orcd_errf(err, "cpu backend: chunk %d runs past tensor '%s'",
				    i, c->name);
				goto out;
			}
			read_at[i] = (const uint8_t *)c->copy + (p - c->src);
		} else if (!checked[c - cb->copies]) {
			if (copy_check(c, err) != 0)
				goto out;
			checked[c - cb->copies] = true;
		}
	}
	rc = seal_digest_host(read_at, chunk_len, (size_t)n_chunks, cb->digest_threads,
	    digests, NULL, NULL, 0, err);
out:
	free(read_at);
	free(checked);
	return rc;
}

static int
cpu_debug_flip(struct backend *b, const void *chunk_host, struct orcd_err *err)
{
	struct cpu_backend *cb = b->impl;
	const struct gguf_file *g = b->model->gguf;
	const uint8_t *p = chunk_host;
	struct cpu_copy *c = copy_find(cb, p);
	long page = sysconf(_SC_PAGESIZE);
	uint8_t *pg;

	if (p < g->base || p >= g->base + g->size)
		return orcd_errf(err, "cpu backend: the byte to flip is not in the model");
	if (c != NULL && c->type == ORCD_DTYPE_F32) {
		((uint8_t *)c->copy)[p - c->src] ^= 1;
		return 0;
	}
	if (!g->mapped)
		return orcd_errf(err, "cpu backend: the model is not an mmap'd file");
	/* MAP_PRIVATE: the write makes a private copy of the page; the file
	 * is untouched */
	pg = (uint8_t *)((uintptr_t)p & ~(uintptr_t)(page - 1));
	if (mprotect(pg, (size_t)page, PROT_READ | PROT_WRITE) != 0)
		return orcd_errf(err, "cpu backend: mprotect: %s", strerror(errno));
	pg[p - pg] ^= 1;
	if (mprotect(pg, (size_t)page, PROT_READ) != 0)
		return orcd_errf(err, "cpu backend: mprotect: %s", strerror(errno));
	return 0;
}

static const struct backend_ops cpu_ops = {
	.name = "cpu",
	.health = cpu_health,
	.seq_new = cpu_seq_new,
	.seq_free = cpu_seq_free,
	.seq_bytes = cpu_seq_bytes,
	.step = cpu_step,
	.destroy = cpu_destroy,
	.seq_reserve = cpu_seq_reserve,
	.mem = cpu_mem,
	.weights_digest = cpu_weights_digest,
	.debug_flip = cpu_debug_flip,
	.seq_attach_prefix = cpu_seq_attach_prefix,
	.seq_publish = cpu_seq_publish,
};

/* Default pool: n_seqs sequences of n_ctx positions, at most a quarter of
 * the host's memory (the mapping is committed only as blocks are touched). */
static uint64_t
default_kv_bytes(const struct model *m, int n_seqs, int n_ctx, int bt)
{
	uint64_t per = ((uint64_t)(n_ctx > 0 ? n_ctx : 4096) + (uint64_t)bt - 1) / (uint64_t)bt;
	uint64_t want = (uint64_t)(n_seqs > 0 ? n_seqs : 64) * per * cpu_kv_block_bytes(m, bt);
	long pages = sysconf(_SC_PHYS_PAGES), psz = sysconf(_SC_PAGESIZE);

	if (pages > 0 && psz > 0 && want > (uint64_t)pages * (uint64_t)psz / 4)
		want = (uint64_t)pages * (uint64_t)psz / 4;
	return want;
}

int
backend_cpu_new_opts(const struct model *m, const struct backend_cpu_opts *o,
    struct cq *cq, struct backend **out, struct orcd_err *err)
{
	struct cpu_backend *cb = calloc(1, sizeof(*cb));
	int bt = o->kv_block_tokens > 0 ? o->kv_block_tokens : KV_BLOCK_TOKENS_DEFAULT;
	uint64_t bytes = o->kv_bytes > 0 ? o->kv_bytes :
	    default_kv_bytes(m, o->n_seqs, o->n_ctx, bt);
	uint64_t n_blocks;

	*out = NULL;
	if (cb == NULL)
		return orcd_errf(err, "cpu backend: out of memory");
	if (bt < 4 || (bt & (bt - 1)) != 0) {
		/* whole groups of 4 cache rows per block keep the score sums in
		 * the contiguous cache's order */
		free(cb);
		return orcd_errf(err, "cpu backend: kv-block-tokens %d must be a power of two, "
		    "at least 4", bt);
	}
	cb->block_bytes = cpu_kv_block_bytes(m, bt);
	n_blocks = bytes / cb->block_bytes;
	if (n_blocks == 0) {
		uint64_t bb = cb->block_bytes;

		free(cb);
		return orcd_errf(err, "cpu backend: kv-memory of %" PRIu64 " bytes is less "
		    "than one block of %d positions (%" PRIu64 " bytes)", bytes, bt, bb);
	}
	if (n_blocks > INT32_MAX)
		n_blocks = INT32_MAX;
	cb->b.ops = &cpu_ops;
	cb->b.model = m;
	cb->b.cq = cq;
	cb->b.impl = cb;
	cb->digest_threads = o->n_threads > 0 && o->n_threads < SEAL_DIGEST_THREADS ?
	    o->n_threads : SEAL_DIGEST_THREADS;
	if (find_copies(cb, err) != 0) {
		free(cb->copies);
		free(cb);
		return -1;
	}
	if (cpu_kv_pool_new(m, (int)n_blocks, bt, &cb->kv, err) != 0) {
		free(cb->copies);
		free(cb);
		return -1;
	}
	if (cpu_engine_new(m, o->n_threads, &cb->engine, err) != 0) {
		cpu_kv_pool_free(cb->kv);
		free(cb->copies);
		free(cb);
		return -1;
	}
	if ((cb->thread = worker_start(engine_job, NULL, cb, err)) == NULL) {
		cpu_engine_free(cb->engine);
		cpu_kv_pool_free(cb->kv);
		free(cb->copies);
		free(cb);
		return -1;
	}
	*out = &cb->b;
	return 0;
}

int
backend_cpu_new(const struct model *m, int n_threads, struct cq *cq,
    struct backend **out, struct orcd_err *err)
{
	struct backend_cpu_opts o = { .n_threads = n_threads };

	return backend_cpu_new_opts(m, &o, cq, out, err);
}
