/*
 * A generation request as an explicit state machine (memcached's
 * drive_machine, curl's multi states): enum req_state, one function per
 * state, req_drive() loops until the state stops changing, and
 * req_set_state() is the only place the state changes (checked against the
 * transition table, logged at debug level with the correlation id).
 *
 *   READ_REQUEST -> ADMIT -> QUEUED -> PREFILL -> DECODE <-> WAIT_WRITABLE
 *                                                  |
 *                                                FINISH -> DONE
 *   exits from any live state: CANCELLED, DEADLINE, DISCONNECTED, FAILED
 *   (each releases the KV cache first, then writes its SSE error) -> DONE
 *
 * Cancel, deadline, disconnect and shutdown all set an abort flag; a
 * request in an engine step takes its exit when the step completes (the
 * step boundary), any other at once.
 */
#ifndef ORCD_REQ_H
#define ORCD_REQ_H

#include <stdbool.h>
#include <stdint.h>
#include <sys/queue.h>

#include "orcd/backend.h"
#include "sampler.h"
#include "sse.h"

struct orcd;
struct conn;

enum req_state {
	REQ_READ_REQUEST,
	REQ_ADMIT,
	REQ_QUEUED,
	REQ_PREFILL,
	REQ_DECODE,
	REQ_WAIT_WRITABLE,
	REQ_FINISH,
	REQ_CANCELLED,
	REQ_DEADLINE,
	REQ_DISCONNECTED,
	REQ_FAILED,
	REQ_DONE,
	REQ_STATE_COUNT
};

/* abort_flags */
#define REQ_ABORT_CANCEL     0x01
#define REQ_ABORT_DISCONNECT 0x02
#define REQ_ABORT_DEADLINE   0x04
#define REQ_ABORT_SHUTDOWN   0x08
#define REQ_ABORT_FAILED     0x10

#define REQ_MAX_STOP 4
#define REQ_MAX_STOP_BYTES 64

struct req {
	struct orcd *o;
	struct conn *conn;            /* NULL once the client is gone */
	enum req_state state;
	uint64_t id;
	char *job_id;
	char corr[96];

	/* what to do */
	int32_t *prompt;
	int n_prompt;
	int max_tokens;
	int n_ctx;                    /* KV positions to reserve */
	char *stop[REQ_MAX_STOP];
	size_t stop_len[REQ_MAX_STOP];
	int n_stop;
	bool ignore_eos;
	struct sampler_params sp;
	uint64_t deadline_ns;         /* monotonic; 0 = none */
	struct event *deadline_ev;    /* fires at the deadline when no step does */

	/* engine state (owned by the backend while in_step) */
	struct backend_seq *seq;
	struct sampler *sampler;
	int n_past;                   /* tokens in the KV cache */
	int n_gen;
	int32_t last_token;           /* input of the next decode step */
	bool in_step;
	int plan;                     /* tokens it feeds in the step being built */
	uint64_t kv_commit;           /* KV bytes claimed at admission */

	/* how it ends */
	unsigned abort_flags;
	double t_abort;
	const char *fail_code;
	char fail_msg[sizeof(((struct orcd_err *)0)->msg)];
	int fail_status;              /* HTTP status when failing before the stream */
	const char *stop_reason;

	/* output */
	struct sse_stream sse;
	bool streaming;               /* SSE headers sent */
	char *hold;                   /* text held back while it may start a stop string */
	size_t hold_len, hold_cap;

	double t_arrive, t_admit, t_started, t_first_token, t_last_token;

	TAILQ_ENTRY(req) link;        /* sched queue or active list */
	struct req *job_next;         /* sched job-id hash chain */
	bool in_queue, in_active, in_jobs;
};

const char *req_state_name(enum req_state s);
/* Whether the transition table allows from -> to (for tests too). */
bool req_transition_ok(enum req_state from, enum req_state to);

struct req *req_new(struct orcd *o, struct conn *c);
/* Frees a request that never left READ_REQUEST (parse errors). */
void req_discard(struct req *r);
/* READ_REQUEST -> ADMIT, then drives. */
void req_start(struct req *r);
void req_drive(struct req *r);
void req_set_state(struct req *r, enum req_state s);

/* Events into the machine (loop thread). */
void req_on_step(struct req *r, const struct backend_step_seq *ss, int status,
    const char *err);
void req_on_disconnect(struct req *r);
void req_on_writable(struct req *r);
void req_abort(struct req *r, unsigned flag);
/* Sets (or moves) the deadline and arms its timer (loop thread). */
void req_set_deadline(struct req *r, uint64_t deadline_ns);
/* Step-boundary deadline check: a load and a compare. */
static inline bool
req_deadline_passed(const struct req *r, uint64_t now_ns)
{
	return r->deadline_ns != 0 && now_ns >= r->deadline_ns;
}

#endif
