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
	void *arg;                 /* the submitter's */
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
};

struct backend {
	const struct backend_ops *ops;
	const struct model *model;
	struct cq *cq;
	void *impl;
};

/* The CPU backend: an engine thread that runs steps on the thread pool. */
int backend_cpu_new(const struct model *m, int n_threads, struct cq *cq,
    struct backend **out, struct orcd_err *err);

#ifdef __cplusplus
}
#endif
#endif
