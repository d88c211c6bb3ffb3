/* Worker thread with a job queue (see worker.h). */
#include <pthread.h>
#include <stdbool.h>
#include <stdlib.h>
#include <sys/queue.h>

#include "worker.h"

struct job {
	STAILQ_ENTRY(job) link;
	void *job;
};

struct worker {
	pthread_t thread;
	pthread_mutex_t mu;
	pthread_cond_t cv;
	STAILQ_HEAD(, job) jobs;
	bool quit;
	worker_fn fn;
	void (*on_start)(void *arg);
	void *arg;
};

static void *
worker_main(void *v)
{
	struct worker *w = v;

	if (w->on_start != NULL)
		w->on_start(w->arg);
	pthread_mutex_lock(&w->mu);
	for (;;) {
		struct job *j;

		while (STAILQ_EMPTY(&w->jobs) && !w->quit)
			pthread_cond_wait(&w->cv, &w->mu);
		if (w->quit)
			break;
		j = STAILQ_FIRST(&w->jobs);
		STAILQ_REMOVE_HEAD(&w->jobs, link);
		pthread_mutex_unlock(&w->mu);
		w->fn(w->arg, j->job);
		free(j);
		pthread_mutex_lock(&w->mu);
	}
	pthread_mutex_unlock(&w->mu);
	return NULL;
}

struct worker *
worker_start(worker_fn fn, void (*on_start)(void *arg), void *arg, struct orcd_err *err)
{
	struct worker *w = calloc(1, sizeof(*w));

	if (w == NULL) {
		orcd_errf(err, "worker: out of memory");
		return NULL;
	}
	w->fn = fn;
	w->on_start = on_start;
	w->arg = arg;
	STAILQ_INIT(&w->jobs);
	pthread_mutex_init(&w->mu, NULL);
	pthread_cond_init(&w->cv, NULL);
	if (pthread_create(&w->thread, NULL, worker_main, w) != 0) {
		orcd_errf(err, "worker: cannot start a thread");
		pthread_mutex_destroy(&w->mu);
		pthread_cond_destroy(&w->cv);
		free(w);
		return NULL;
	}
	return w;
}

int
worker_push(struct worker *w, void *job, struct orcd_err *err)
{
	struct job *j = malloc(sizeof(*j));

	if (j == NULL)
		return orcd_errf(err, "worker: out of memory");
	j->job = job;
	pthread_mutex_lock(&w->mu);
	STAILQ_INSERT_TAIL(&w->jobs, j, link);
	pthread_cond_signal(&w->cv);
	pthread_mutex_unlock(&w->mu);
	return 0;
}

void
worker_stop(struct worker *w)
{
	if (w == NULL)
		return;
	pthread_mutex_lock(&w->mu);
	w->quit = true;
	pthread_cond_signal(&w->cv);
	pthread_mutex_unlock(&w->mu);
	pthread_join(w->thread, NULL);
	while (!STAILQ_EMPTY(&w->jobs)) {
		struct job *j = STAILQ_FIRST(&w->jobs);

		STAILQ_REMOVE_HEAD(&w->jobs, link);
		free(j);
	}
	pthread_mutex_destroy(&w->mu);
	pthread_cond_destroy(&w->cv);
	free(w);
}
