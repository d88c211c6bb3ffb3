/*
 * A fixed pthread pool for data-parallel loops in the CPU forward pass.
 * pool_run() splits n tasks over the workers and the calling thread and
 * returns when all are done.  Workers spin briefly between runs (a decode
 * step issues a few hundred runs back to back) and then sleep on a condition
 * variable, so an idle engine costs no CPU.
 */
#ifndef ORCD_CPU_POOL_H
#define ORCD_CPU_POOL_H

struct pool;

/* fn(arg, task, worker) for task in [0, n); worker in [0, pool_size). */
typedef void (*pool_fn)(void *arg, int task, int worker);

/* n_threads <= 0 picks the number of online CPUs. */
struct pool *pool_new(int n_threads);
void pool_free(struct pool *p);
int pool_size(const struct pool *p);
void pool_run(struct pool *p, pool_fn fn, void *arg, int n_tasks);

#endif
