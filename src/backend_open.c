/* Backend selection (see backend_open.h). */
#include <errno.h>
#include <sched.h>
#include <stdlib.h>
#include <string.h>
#include <sys/resource.h>

#include "config.h"
#include "backend_open.h"
#include "log.h"

void
backend_open_opts_init(struct backend_open_opts *o)
{
	memset(o, 0, sizeof(*o));
	o->n_seqs = 64;
	o->n_ctx = 4096;
	o->max_step_tokens = 512;
	o->cuda_graphs = 1;
}

const char *
backend_auto_name(void)
{
#ifdef ORCD_HAVE_CUDA
	if (backend_cuda_available(NULL, 0))
		return "cuda";
#endif
	return "cpu";
}

/* The CPU engine's threads inherit the calling thread's priority: lower it
 * so the event loop preempts them (the caller is a loader thread). */
static void
lower_compute_priority(int nice_value)
{
	if (nice_value < 0) {
		struct sched_param sp = { 0 };

		if (sched_setscheduler(0, SCHED_IDLE, &sp) != 0)
			log_warn("cannot make the compute threads SCHED_IDLE: %s", strerror(errno));
	} else if (nice_value > 0 && setpriority(PRIO_PROCESS, 0, nice_value) != 0) {
		log_warn("cannot lower the compute threads' priority: %s", strerror(errno));
	}
}

int
backend_open(const struct model *m, const struct backend_open_opts *o, struct cq *cq,
    struct backend **out, struct orcd_err *err)
{
	const char *name = o->name;

	*out = NULL;
	if (name == NULL || strcmp(name, "auto") == 0)
		name = backend_auto_name();
	if (strcmp(name, "cpu") == 0) {
		lower_compute_priority(o->compute_nice);
		struct backend_cpu_opts co = {
			.n_threads = o->threads,
			.kv_bytes = o->kv_bytes,
			.kv_block_tokens = o->kv_block_tokens,
			.n_seqs = o->n_seqs,
			.n_ctx = o->n_ctx,
		};

		return backend_cpu_new_opts(m, &co, cq, out, err);
	}
	if (strcmp(name, "cuda") == 0) {
#ifdef ORCD_HAVE_CUDA
		/* ORCD_CUDA_KV_PAGED=1 turns the paged pool on for every caller
		 * (tests and benchmarks run both layouts with it) */
		const char *pg = getenv("ORCD_CUDA_KV_PAGED");
		int paged = o->cuda_kv_paged || (pg != NULL && strcmp(pg, "1") == 0);
		struct backend_cuda_opts co = {
			.device = 0,
			.n_seqs = o->n_seqs,
			.n_ctx = o->n_ctx,
			.max_step_tokens = o->max_step_tokens,
			.soft_limit = o->vram_soft_limit,
			.hard_limit = o->vram_hard_limit,
			.graphs = o->cuda_graphs,
			.kv_block_tokens = paged ?
			    (o->kv_block_tokens > 0 ? o->kv_block_tokens : 32) : 0,
			.kv_bytes = paged ? o->kv_bytes : 0,
		};

		return backend_cuda_new(m, &co, cq, out, err);
#else
		return orcd_errf(err, "the CUDA backend is not built into this orcd (configure "
		    "--with-cuda on a machine with nvcc); available: cpu");
#endif
	}
	return orcd_errf(err, "unknown backend '%s' (cpu, cuda or auto)", name);
}
