/*
 * Completion queue: the one way other threads (CPU engine, CUDA host
 * callbacks, model loader, monitor) hand results to the loop thread.  A
 * mutex-protected STAILQ plus an eventfd registered with the event_base;
 * cq_push() never blocks on the loop, the loop drains everything queued in
 * one callback and runs each item's function on the loop thread.
 */
#ifndef ORCD_CQ_H
#define ORCD_CQ_H

#include <sys/queue.h>

#include "err.h"

struct event_base;
struct cq;

struct cq_item {
	STAILQ_ENTRY(cq_item) link;
	/* Runs on the loop thread; owns the item from then on. */
	void (*fn)(struct cq_item *item);
};

struct cq *cq_new(struct event_base *base, struct orcd_err *err);
void cq_free(struct cq *q);
/* Any thread. */
void cq_push(struct cq *q, struct cq_item *item);
/* Items delivered so far (loop thread). */
unsigned long cq_delivered(const struct cq *q);

#endif
