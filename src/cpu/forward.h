/*
 * The CPU engine: a transformer forward pass (llama / qwen2) over a batch of
 * tokens that may belong to different sequences, each with its own KV cache.
 * Matrix products run on the thread pool with the quantized kernels of
 * quant.h; numerics follow llama.cpp's CPU backend (f16 KV cache, activations
 * converted to each weight's dot-product type) so greedy outputs match it.
 */
#ifndef ORCD_CPU_FORWARD_H
#define ORCD_CPU_FORWARD_H

#include <stdbool.h>
#include <stdint.h>

#include "err.h"

struct model;
struct cpu_engine;
struct pool;

/* KV cache of one sequence: n_ctx positions for every layer, f16. */
struct cpu_kv {
	int n_ctx;
	int n_used;        /* positions written so far */
	int kv_dim;        /* n_head_kv * head_dim */
	int n_layer;
	uint16_t *k;       /* [n_layer][n_ctx][kv_dim] */
	uint16_t *v;       /* [n_layer][kv_dim][n_ctx]: transposed, as llama.cpp */
};

struct cpu_batch {
	int n_tokens;
	const int32_t *tokens;
	const int32_t *pos;       /* position of each token in its sequence */
	struct cpu_kv *const *kv; /* sequence (KV cache) of each token */
	const bool *logits;       /* which tokens need logits; NULL: last only */
};

/* n_threads <= 0: all online CPUs. */
int cpu_engine_new(const struct model *m, int n_threads, struct cpu_engine **out,
    struct orcd_err *err);
void cpu_engine_free(struct cpu_engine *e);
int cpu_engine_threads(const struct cpu_engine *e);
/* The engine's thread pool (for work next to the forward pass, such as
 * sampling every sequence of a step in parallel). */
struct pool *cpu_engine_pool(struct cpu_engine *e);

int cpu_kv_init(const struct cpu_engine *e, int n_ctx, struct cpu_kv *kv,
    struct orcd_err *err);
void cpu_kv_release(struct cpu_kv *kv);
/* Bytes a cache of n_ctx positions takes for this model. */
uint64_t cpu_kv_bytes(const struct model *m, int n_ctx);

/* Runs the batch; writes n_vocab logits for every token that asks for them,
 * in batch order, into logits. */
int cpu_forward(struct cpu_engine *e, const struct cpu_batch *b, float *logits,
    struct orcd_err *err);

#endif
