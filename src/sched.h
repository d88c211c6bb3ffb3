/*
 * The scheduler: admission queue, batch building and the one engine step in
 * flight.  Every step batches all decoding requests (one token each) plus
 * chunks of prompt for requests in prefill, within max_step_tokens, so a
 * long prompt never stalls running streams.  When a step completes (on the
 * loop, via the completion queue) the results go to each request, the
 * deadline of every live request is checked, and the next step is submitted
 * before the loop returns to write the tokens to the sockets.
 */
#ifndef ORCD_SCHED_H
#define ORCD_SCHED_H

#include <stdbool.h>
#include <stdint.h>

#include "err.h"

struct orcd;
struct req;
struct sched;

struct sched *sched_new(struct orcd *o, struct orcd_err *err);
void sched_free(struct sched *s);

/* Admission capacity: false when the queue is full (429). */
bool sched_can_enqueue(const struct sched *s);
void sched_enqueue(struct sched *s, struct req *r);
/* Removes r from whichever list holds it (exits, DONE). */
void sched_forget(struct sched *s, struct req *r);
/* Builds and submits a step if none is in flight and there is work. */
void sched_kick(struct sched *s);

/* Job ids of live requests (for /cancel). */
int sched_register_job(struct sched *s, struct req *r);
struct req *sched_find_job(const struct sched *s, const char *job_id);

int sched_n_active(const struct sched *s);
int sched_n_queued(const struct sched *s);
bool sched_busy(const struct sched *s);     /* a step is in flight */
/* Sets flag on every live request (shutdown). */
void sched_abort_all(struct sched *s, unsigned flag);

#endif
