/*
 * Choosing and creating a backend by name ("cpu", "cuda", or NULL/"auto":
 * CUDA when it is built and a GPU is present, else the CPU), shared by
 * `orcd serve` and `orcd generate`.
 */
#ifndef ORCD_BACKEND_OPEN_H
#define ORCD_BACKEND_OPEN_H

#include <stdint.h>

#include "orcd/backend.h"

struct backend_open_opts {
	const char *name;          /* NULL or "auto", "cpu", "cuda" */
	int threads;               /* CPU: 0 = all */
	int compute_nice;          /* CPU: -1 SCHED_IDLE, 0 none, else nice */
	int n_seqs;                /* CUDA: KV slots */
	int n_ctx;                 /* CUDA: positions per slot */
	int max_step_tokens;       /* CUDA */
	uint64_t vram_soft_limit, vram_hard_limit;
	int cuda_graphs;           /* CUDA: 1 (default) small steps as graphs */
	uint64_t kv_bytes;         /* CPU: KV pool bytes, 0 = default */
	int kv_block_tokens;       /* positions per KV block, 0 = default */
	int cuda_kv_paged;         /* CUDA: 1 = a paged KV pool, 0 = a slot per sequence */
};

void backend_open_opts_init(struct backend_open_opts *o);
int backend_open(const struct model *m, const struct backend_open_opts *o, struct cq *cq,
    struct backend **out, struct orcd_err *err);
/* "cuda" when `auto` would pick CUDA here, else "cpu". */
const char *backend_auto_name(void);

#endif
