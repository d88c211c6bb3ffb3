/*
 * Thread pool (see pool.h).  One run at a time: the caller publishes the job
 * and bumps a generation counter; workers claim task indices with an atomic
 * counter; the last one to finish lets the caller return.
 */
#include <pthread.h>
#include <sched.h>
#include <stdatomic.h>
#include <stdbool.h>
#include <stdlib.h>
#include <unistd.h>

#include "cpu/pool.h"

/* Spin iterations before a worker goes to sleep (about 100-200 us). */
#define POOL_SPIN 20000

struct pool {
	int n_threads;          /* including the caller */
	pthread_t *threads;
	pthread_mutex_t mu;
	pthread_cond_t wake;
	pthread_cond_t done_cv;
	atomic_uint generation;
	atomic_int next_task;
	atomic_int remaining;   /* workers still inside the current run */
	atomic_int sleepers;
	atomic_bool quit;
	pool_fn fn;
	void *arg;
	int n_tasks;
};

struct worker_arg {
	struct pool *p;
	int id;
};

static inline void
cpu_relax(void)
{
#if defined(__x86_64__) || defined(__i386__)
	__builtin_ia32_pause();
#endif
}

static void
work(struct pool *p, int id)
{
	int t;

	while ((t = atomic_fetch_add_explicit(&p->next_task, 1,
	    memory_order_relaxed)) < p->n_tasks)
		p->fn(p->arg, t, id);
}

static void *
worker_main(void *v)
{
	struct worker_arg *wa = v;
	struct pool *p = wa->p;
	int id = wa->id;
	unsigned seen = 0;

	free(wa);
	for (;;) {
		unsigned g;
		int spins = 0;

		while ((g = atomic_load_explicit(&p->generation,
		    memory_order_acquire)) == seen && !atomic_load(&p->quit)) {
			if (++spins < POOL_SPIN) {
				/* yield now and then: on an oversubscribed machine the
				 * thread we wait for may need this core */
				if ((spins & 255) == 0)
					sched_yield();
				else
					cpu_relax();
				continue;
			}
			pthread_mutex_lock(&p->mu);
			atomic_fetch_add(&p->sleepers, 1);
			while (atomic_load(&p->generation) == seen &&
			    !atomic_load(&p->quit))
				pthread_cond_wait(&p->wake, &p->mu);
			atomic_fetch_sub(&p->sleepers, 1);
			pthread_mutex_unlock(&p->mu);
			spins = 0;
		}
		if (atomic_load(&p->quit))
			return NULL;
		seen = g;
		work(p, id);
		if (atomic_fetch_sub_explicit(&p->remaining, 1,
		    memory_order_acq_rel) == 1) {
			pthread_mutex_lock(&p->mu);
			pthread_cond_signal(&p->done_cv);
			pthread_mutex_unlock(&p->mu);
		}
	}
}

struct pool *
pool_new(int n_threads)
{
	struct pool *p;

	if (n_threads <= 0) {
		long n = sysconf(_SC_NPROCESSORS_ONLN);
		n_threads = n > 0 ? (int)n : 1;
	}
	if (n_threads > 256)
		n_threads = 256;
	p = calloc(1, sizeof(*p));
	if (p == NULL)
		return NULL;
	p->n_threads = n_threads;
	pthread_mutex_init(&p->mu, NULL);
	pthread_cond_init(&p->wake, NULL);
	pthread_cond_init(&p->done_cv, NULL);
	p->threads = calloc((size_t)n_threads, sizeof(*p->threads));
	if (p->threads == NULL)
		goto fail;
	for (int i = 1; i < n_threads; i++) {
		struct worker_arg *wa = malloc(sizeof(*wa));

		if (wa == NULL)
			goto fail;
		wa->p = p;
		wa->id = i;
		if (pthread_create(&p->threads[i], NULL, worker_main, wa) != 0) {
			free(wa);
			p->n_threads = i;
			goto fail;
		}
	}
	return p;
fail:
	pool_free(p);
	return NULL;
}

void
pool_free(struct pool *p)
{
	if (p == NULL)
		return;
	pthread_mutex_lock(&p->mu);
	atomic_store(&p->quit, true);
	pthread_cond_broadcast(&p->wake);
	pthread_mutex_unlock(&p->mu);
	for (int i = 1; i < p->n_threads; i++)
		if (p->threads != NULL && p->threads[i])
			pthread_join(p->threads[i], NULL);
	free(p->threads);
	pthread_mutex_destroy(&p->mu);
	pthread_cond_destroy(&p->wake);
	pthread_cond_destroy(&p->done_cv);
	free(p);
}

int
pool_size(const struct pool *p)
{
	return p->n_threads;
}

void
pool_run(struct pool *p, pool_fn fn, void *arg, int n_tasks)
{
	if (n_tasks <= 0)
		return;
	if (p->n_threads == 1 || n_tasks == 1) {
		for (int t = 0; t < n_tasks; t++)
			fn(arg, t, 0);
		return;
	}
	p->fn = fn;
	p->arg = arg;
	p->n_tasks = n_tasks;
	atomic_store_explicit(&p->next_task, 0, memory_order_relaxed);
	atomic_store_explicit(&p->remaining, p->n_threads - 1, memory_order_relaxed);
	atomic_fetch_add(&p->generation, 1);
	if (atomic_load(&p->sleepers) > 0) {
		pthread_mutex_lock(&p->mu);
		pthread_cond_broadcast(&p->wake);
		pthread_mutex_unlock(&p->mu);
	}
	work(p, 0);
	/* Wait for the workers: spin first, then sleep. */
	for (int spins = 0; atomic_load_explicit(&p->remaining,
	    memory_order_acquire) > 0; spins++) {
		if (spins < POOL_SPIN) {
			if ((spins & 255) == 255)
				sched_yield();
			else
				cpu_relax();
			continue;
		}
		pthread_mutex_lock(&p->mu);
		while (atomic_load(&p->remaining) > 0)
			pthread_cond_wait(&p->done_cv, &p->mu);
		pthread_mutex_unlock(&p->mu);
	}
}
