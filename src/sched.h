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

struct backend_mem;

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

/*
 * Memory (the VRAM monitor over the backend's tracked bytes).  Above the
 * soft limit admission pauses (new requests get 429, running ones go on);
 * above the hard limit the newest requests are aborted (SSE error
 * vram_limit) until usage is under it again.  The check reads cached
 * counters: O(1), no device call.
 */
enum sched_mem_level { SCHED_MEM_OK, SCHED_MEM_SOFT, SCHED_MEM_HARD };
enum sched_mem_level sched_check_limits(struct sched *s);
bool sched_mem_pressure(struct sched *s);
void sched_mem_read(const struct sched *s, struct backend_mem *m);
const struct backend_mem *sched_mem_baseline(const struct sched *s);
/* One log line: tracked, baseline, limits, KV held and committed. */
void sched_log_snapshot(struct sched *s);
/* Predicted seconds until a new request of n_prompt tokens has its first
 * token (0: no estimate yet). */
double sched_predict_start_s(const struct sched *s, int n_prompt);

#endif
