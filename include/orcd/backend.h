/*
 * The backend interface: what the scheduler needs from an engine (CPU now,
 * CUDA next).  A step is asynchronous: backend->ops->step() returns at once
 * and the finished step comes back to the loop thread through the
 * completion queue (step->cq.fn runs there).  While a step is in flight the
 * backend owns the step, its sequences' KV state and samplers; the loop
 * touches none of them until the completion.
 */
#ifndef ORCD_BACKEND_H
#define ORCD_BACKEND_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "cq.h"   /* src/: the completion queue and error type are shared */
#include "err.h"

#ifdef __cplusplus
extern "C" {
#endif

struct backend;
struct backend_seq;   /* one sequence's KV cache */
struct model;
struct sampler;
struct vram;

struct backend_step_seq {
	struct backend_seq *seq;
	const int32_t *tokens;     /* tokens to feed (a prompt chunk or one token) */
	int n_tokens;
	int pos;                   /* position of tokens[0] in the sequence */
	struct sampler *sampler;   /* NULL: no token wanted after this chunk */
	int32_t out_token;         /* set by the backend when sampler != NULL */
	void *owner;               /* the scheduler's request; opaque here */
};

struct backend_step {
	struct cq_item cq;         /* fn set by the submitter */
	int n_seqs;
	struct backend_step_seq *seqs;
	int n_tokens;              /* sum of seqs[i].n_tokens */
	int status;                /* 0, or -1 with err */
	struct orcd_err err;
	double t_start, t_end;     /* monotonic seconds, set by the backend */
	float *logits_out;         /* NULL, or host memory for the logits rows of
	                            * the sampled sequences (in order), n_vocab each */
	void *arg;                 /* the submitter's */
};

/* What /health reports about the backend (cached by the caller). */
struct backend_health {
	uint64_t vram_bytes_used;  /* tracked device bytes (0 on the CPU) */
	bool resident;             /* last residency check passed */
	double checked_at;         /* monotonic seconds of that check, 0 never */
};

/* Memory the backend tracks, for the scheduler's limits and leak check. */
struct backend_mem {
	uint64_t used;             /* tracked bytes in use: every device
	                            * allocation (CUDA), the KV blocks that
	                            * sequences hold (CPU) */
	uint64_t kv_used;          /* bytes of KV cache held by sequences */
	uint64_t kv_capacity;      /* bytes of KV cache the backend has */
	uint64_t kv_block_bytes;   /* one block (CPU) or one slot (CUDA) */
	int kv_block_tokens;       /* positions per block, or per slot */
};

struct backend_ops {
	const char *name;
	int (*seq_new)(struct backend *b, int n_ctx, struct backend_seq **out,
	    struct orcd_err *err);
	void (*seq_free)(struct backend *b, struct backend_seq *s);
	/* Bytes of KV state a sequence of n_ctx positions takes. */
	uint64_t (*seq_bytes)(struct backend *b, int n_ctx);
	int (*step)(struct backend *b, struct backend_step *st, struct orcd_err *err);
	void (*destroy)(struct backend *b);
	/* Cheap, any thread: cached counters only. */
	int (*health)(struct backend *b, struct backend_health *h);
	/* Residency verification (the monitor thread, not the loop); returns
	 * the number of violations, or -1.  NULL: nothing to verify. */
	int (*verify)(struct backend *b, struct orcd_err *err);
	/* Makes s hold positions [0, n_pos) before a step feeds them (the
	 * loop thread, s not in flight); -1 when the KV memory is short.
	 * NULL: seq_new reserved everything already. */
	int (*seq_reserve)(struct backend *b, struct backend_seq *s, int n_pos,
	    struct orcd_err *err);
	/* Cheap, any thread: cached counters only. */
	void (*mem)(struct backend *b, struct backend_mem *m);
	/* Seal digests (doc/seal.md), any thread but the loop: for each chunk,
	 * given by its host pointer into the mmap'd GGUF tensor data and its
	 * length (1 .. 1 MiB), the chunk digest computed over the copy of
	 * those bytes that the backend actually computes with.  NULL: sealing
	 * is not supported by this backend. */
	int (*weights_digest)(struct backend *b, const void *const *chunk_host,
	    const uint32_t *chunk_len, int n_chunks, uint8_t (*digests)[32],
	    struct orcd_err *err);
	/* Test only (ORCD_TEST_SEAL_FLIP): flips the lowest bit of the
	 * backend's copy of the byte at chunk_host (a host pointer into the
	 * tensor data, as above).  NULL: not supported. */
	int (*debug_flip)(struct backend *b, const void *chunk_host, struct orcd_err *err);
	/* Prefix reuse (the loop thread; s new and idle): attaches cached KV
	 * for the longest whole-block prefix of tokens[0, n) and returns the
	 * positions it covers, which need no prefill.  NULL: no reuse. */
	int (*seq_attach_prefix)(struct backend *b, struct backend_seq *s,
	    const int32_t *tokens, int n);
	/* Makes the whole blocks of s within prompt positions [0, n_done)
	 * reusable by later sequences (the loop thread; s idle). */
	void (*seq_publish)(struct backend *b, struct backend_seq *s, const int32_t *tokens,
	    int n_done);
};

struct backend {
	const struct backend_ops *ops;
	const struct model *model;
	struct cq *cq;
	void *impl;
};

/* seq_new with every position reserved up front (tools and tests that
 * run one sequence of known length). */
static inline int
backend_seq_new_full(struct backend *b, int n_ctx, struct backend_seq **out,
    struct orcd_err *err)
{
	if (b->ops->seq_new(b, n_ctx, out, err) != 0)
		return -1;
	if (b->ops->seq_reserve != NULL && b->ops->seq_reserve(b, *out, n_ctx, err) != 0) {
		b->ops->seq_free(b, *out);
		*out = NULL;
		return -1;
	}
	return 0;
}

/* The CPU backend: an engine thread that runs steps on the thread pool,
 * its KV cache a pool of kv_bytes (0: n_seqs sequences of n_ctx
 * positions, at most a quarter of the host's memory) in blocks of
 * kv_block_tokens positions (0: 32). */
struct backend_cpu_opts {
	int n_threads;             /* 0: all CPUs */
	uint64_t kv_bytes;
	int kv_block_tokens;
	int n_seqs, n_ctx;         /* the default pool's size; 0: 64 x 4096 */
};

int backend_cpu_new(const struct model *m, int n_threads, struct cq *cq,
    struct backend **out, struct orcd_err *err);
int backend_cpu_new_opts(const struct model *m, const struct backend_cpu_opts *o,
    struct cq *cq, struct backend **out, struct orcd_err *err);

struct backend_cuda_opts {
	int device;
	int n_seqs;               /* KV slots = the most sequences at once */
	int n_ctx;                /* positions per slot */
	int max_step_tokens;
	uint64_t soft_limit, hard_limit;   /* VRAM bytes, 0 = none */
	int graphs;               /* 1: small steps run as CUDA graphs */
	int kv_block_tokens;      /* > 0: paged KV in blocks of this many
	                           * positions (a power of two); 0: a slot of
	                           * n_ctx positions per sequence */
	uint64_t kv_bytes;        /* paged: the pool (0: n_seqs x n_ctx) */
};

/* The CUDA backend (cuda/backend_cuda.cu).  Without a CUDA build these are
 * absent (ORCD_HAVE_CUDA undefined). */
int backend_cuda_available(char *why, size_t len);
int backend_cuda_new(const struct model *m, const struct backend_cuda_opts *o,
    struct cq *cq, struct backend **out, struct orcd_err *err);
struct vram *backend_cuda_vram(struct backend *b);

#ifdef __cplusplus
}
#endif
#endif
