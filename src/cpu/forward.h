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

/*
 * Paged KV cache.  One pool of fixed-size blocks (block_tokens positions of
 * every layer, f16) is mapped at startup; a sequence holds a table of block
 * ids that grows as it advances (cpu_kv_reserve, on the loop thread between
 * steps) and gives every block back the moment it ends.  Block layout:
 * K [n_layer][block_tokens][kv_dim]; V [n_layer][kv_dim][block_tokens]
 * (transposed, as llama.cpp keeps V).  The pool's free list is touched by
 * one thread only (the loop); its counters are atomics any thread may read.
 */
struct cpu_kv_pool {
	int block_tokens;
	int n_blocks;
	int kv_dim;        /* n_head_kv * head_dim */
	int n_layer;
	size_t block_elems;   /* f16 elements of K (or of V) in one block */
	uint16_t *k, *v;      /* [n_blocks][block_elems] each */
	size_t map_bytes;
	int32_t *free_ids;    /* stack of free block ids */
	int n_free;
	int n_used_atomic;    /* blocks held by sequences (atomic) */
	/* Prefix reuse: a full block of prompt positions can be published
	 * under the hash of its tokens and of every token before it; a later
	 * sequence whose prompt starts the same way holds it too (reference
	 * counted, read only).  Unheld published blocks stay cached, oldest
	 * first in an LRU, until a new block is needed. */
	int32_t *ref;         /* [n_blocks] holders */
	uint64_t *hash;       /* [n_blocks] chain hash; 0: not published */
	int32_t *tokens;      /* [n_blocks][block_tokens] the published tokens */
	int32_t *lru_prev, *lru_next;   /* cached blocks, head = oldest */
	int lru_head, lru_tail, n_cached;
	int32_t *map;         /* open addressing: block id or -1, by hash */
	int map_cap;          /* a power of two, >= 2 n_blocks */
	uint64_t n_reused;    /* positions attached from the cache */
};

struct cpu_kv {
	struct cpu_kv_pool *pool;
	int n_ctx;         /* most positions this sequence may hold */
	int n_used;        /* positions written so far */
	int n_blocks;      /* blocks held: they cover n_blocks * block_tokens */
	int32_t *blocks;   /* [ceil(n_ctx / block_tokens)] */
	int n_published;   /* leading blocks published or attached */
	uint64_t chain;    /* hash through block n_published - 1 */
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

/* A pool of n_blocks blocks of block_tokens positions for this model
 * (lazily committed anonymous memory). */
int cpu_kv_pool_new(const struct model *m, int n_blocks, int block_tokens,
    struct cpu_kv_pool **out, struct orcd_err *err);
void cpu_kv_pool_free(struct cpu_kv_pool *p);
/* Bytes one block takes (K and V of every layer). */
uint64_t cpu_kv_block_bytes(const struct model *m, int block_tokens);
int cpu_kv_pool_used(const struct cpu_kv_pool *p);   /* any thread */

/* A sequence of at most n_ctx positions holding no block yet. */
int cpu_kv_init(struct cpu_kv_pool *p, int n_ctx, struct cpu_kv *kv,
    struct orcd_err *err);
/* Blocks for positions [0, n_pos): -1 (blocks held so far are kept) when
 * the pool has too few free blocks or n_pos exceeds n_ctx. */
int cpu_kv_reserve(struct cpu_kv *kv, int n_pos, struct orcd_err *err);
/* Gives every block back and frees the table. */
void cpu_kv_release(struct cpu_kv *kv);
/* Prefix reuse (the loop thread, kv idle): attaches the cached blocks that
 * hold the longest run of whole blocks of tokens[0, n) and returns the
 * positions they cover (0 when kv already holds blocks). */
int cpu_kv_attach_prefix(struct cpu_kv *kv, const int32_t *tokens, int n);
/* Publishes the whole blocks of kv within positions [0, n_done), whose
 * tokens are tokens[0, n_done) (a prompt the engine has processed). */
void cpu_kv_publish(struct cpu_kv *kv, const int32_t *tokens, int n_done);
/* Bytes a cache of n_ctx positions takes for this model. */
uint64_t cpu_kv_bytes(const struct model *m, int n_ctx);

/* Runs the batch; writes n_vocab logits for every token that asks for them,
 * in batch order, into logits. */
int cpu_forward(struct cpu_engine *e, const struct cpu_batch *b, float *logits,
    struct orcd_err *err);

#endif
