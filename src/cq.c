/* Completion queue (see cq.h). */
#include <errno.h>
#include <pthread.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>
#include <sys/eventfd.h>
#include <unistd.h>

#include <event2/event.h>

#include "cq.h"

struct cq {
	pthread_mutex_t mu;
	STAILQ_HEAD(, cq_item) items;
	int efd;
	struct event *ev;
	unsigned long delivered;
};

static void
cq_drain(evutil_socket_t fd, short what, void *arg)
{
	struct cq *q = arg;
	STAILQ_HEAD(, cq_item) batch;
	struct cq_item *it;
	uint64_t v;

	/* Reset the counter first: a push after this read wakes us again. */
	if (read(q->efd, &v, sizeof(v)) < 0 && errno != EAGAIN)
		return;
	pthread_mutex_lock(&q->mu);
	STAILQ_INIT(&batch);
	STAILQ_CONCAT(&batch, &q->items);
	pthread_mutex_unlock(&q->mu);
	while ((it = STAILQ_FIRST(&batch)) != NULL) {
		STAILQ_REMOVE_HEAD(&batch, link);
		q->delivered++;
		it->fn(it);
	}
}

struct cq *
cq_new(struct event_base *base, struct orcd_err *err)
{
	struct cq *q = calloc(1, sizeof(*q));

	if (q == NULL) {
		orcd_errf(err, "completion queue: out of memory");
		return NULL;
	}
	pthread_mutex_init(&q->mu, NULL);
	STAILQ_INIT(&q->items);
	q->efd = eventfd(0, EFD_NONBLOCK | EFD_CLOEXEC);
	if (q->efd < 0) {
		orcd_errf(err, "completion queue: eventfd: %s", strerror(errno));
		free(q);
		return NULL;
	}
	q->ev = event_new(base, q->efd, EV_READ | EV_PERSIST, cq_drain, q);
	if (q->ev == NULL || event_add(q->ev, NULL) != 0) {
		orcd_errf(err, "completion queue: cannot register the eventfd");
		cq_free(q);
		return NULL;
	}
	return q;
}

void
cq_free(struct cq *q)
{
	if (q == NULL)
		return;
	if (q->ev != NULL)
		event_free(q->ev);
	close(q->efd);
	pthread_mutex_destroy(&q->mu);
	free(q);
}

void
cq_push(struct cq *q, struct cq_item *item)
{
	uint64_t one = 1;
	int was_empty;

	pthread_mutex_lock(&q->mu);
	was_empty = STAILQ_EMPTY(&q->items);
	STAILQ_INSERT_TAIL(&q->items, item, link);
	pthread_mutex_unlock(&q->mu);
	/* Only the first item of a batch needs a wake-up. */
	if (was_empty && write(q->efd, &one, sizeof(one)) < 0) {
		/* EAGAIN: the counter is saturated, the loop is awake anyway */
	}
}

unsigned long
cq_delivered(const struct cq *q)
{
	return q->delivered;
}
