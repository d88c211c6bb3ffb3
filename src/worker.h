/*
 * A worker thread that runs one function for each job pushed to it, in
 * order: the engine thread of the CPU backend and the enqueue thread of
 * the CUDA backend.  worker_push never blocks on the job itself.
 */
#ifndef ORCD_WORKER_H
#define ORCD_WORKER_H

#include "err.h"

#ifdef __cplusplus
extern "C" {
#endif

struct worker;

typedef void (*worker_fn)(void *arg, void *job);

/* on_start (may be NULL) runs first on the new thread (cudaSetDevice). */
struct worker *worker_start(worker_fn fn, void (*on_start)(void *arg), void *arg,
    struct orcd_err *err);
int worker_push(struct worker *w, void *job, struct orcd_err *err);
/* Stops after the job in hand; jobs still queued are not run. */
void worker_stop(struct worker *w);

#ifdef __cplusplus
}
#endif
#endif
