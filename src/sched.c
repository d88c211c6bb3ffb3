/* Scheduler (see sched.h). */
#include <stdlib.h>
#include <string.h>
#include <sys/queue.h>

#include "orcd/backend.h"
#include "log.h"
#include "metrics_orcd.h"
#include "orcd.h"
#include "req.h"
#include "sched.h"

#define JOB_BUCKETS 4096

struct sched {
	struct orcd *o;
	TAILQ_HEAD(, req) queue;
	TAILQ_HEAD(, req) active;
	int n_queued, n_active;
	struct req *jobs[JOB_BUCKETS];
	struct backend_step step;
	struct backend_step_seq *seqs;
	int cap_seqs;
	bool inflight;
	double t_submit;
};

static void sched_step_done(struct cq_item *item);

struct sched *
sched_new(struct orcd *o, struct orcd_err *err)
{
	struct sched *s = calloc(1, sizeof(*s));

	if (s == NULL) {
		orcd_errf(err, "sched: out of memory");
		return NULL;
	}
	s->o = o;
	TAILQ_INIT(&s->queue);
	TAILQ_INIT(&s->active);
	s->cap_seqs = o->cfg.max_batch;
	s->seqs = calloc((size_t)s->cap_seqs, sizeof(*s->seqs));
	if (s->seqs == NULL) {
		free(s);
		orcd_errf(err, "sched: out of memory");
		return NULL;
	}
	s->step.cq.fn = sched_step_done;
	s->step.arg = s;
	return s;
}

void
sched_free(struct sched *s)
{
	if (s == NULL)
		return;
	free(s->seqs);
	free(s);
}

static unsigned
job_hash(const char *id)
{
	unsigned h = 2166136261u;

	for (; *id != '\0'; id++)
		h = (h ^ (unsigned char)*id) * 16777619u;
	return h % JOB_BUCKETS;
}

int
sched_register_job(struct sched *s, struct req *r)
{
	unsigned h = job_hash(r->job_id);

	if (sched_find_job(s, r->job_id) != NULL)
		return -1;
	r->job_next = s->jobs[h];
	s->jobs[h] = r;
	r->in_jobs = true;
	return 0;
}

struct req *
sched_find_job(const struct sched *s, const char *job_id)
{
	for (struct req *r = s->jobs[job_hash(job_id)]; r != NULL; r = r->job_next)
		if (strcmp(r->job_id, job_id) == 0)
			return r;
	return NULL;
}

static void
job_unregister(struct sched *s, struct req *r)
{
	struct req **pp = &s->jobs[job_hash(r->job_id)];

	for (; *pp != NULL; pp = &(*pp)->job_next)
		if (*pp == r) {
			*pp = r->job_next;
			break;
		}
	r->in_jobs = false;
}

static void
update_gauges(struct sched *s)
{
	metric_gauge_set(s->o->m->active, s->n_active);
	metric_gauge_set(s->o->m->queued, s->n_queued);
}

bool
sched_can_enqueue(const struct sched *s)
{
	return s->n_queued < s->o->cfg.max_queue;
}

void
sched_enqueue(struct sched *s, struct req *r)
{
	TAILQ_INSERT_TAIL(&s->queue, r, link);
	r->in_queue = true;
	s->n_queued++;
	update_gauges(s);
}

void
sched_forget(struct sched *s, struct req *r)
{
	if (r->in_queue) {
		TAILQ_REMOVE(&s->queue, r, link);
		r->in_queue = false;
		s->n_queued--;
	}
	if (r->in_active) {
		TAILQ_REMOVE(&s->active, r, link);
		r->in_active = false;
		s->n_active--;
	}
	if (r->in_jobs)
		job_unregister(s, r);
	update_gauges(s);
}

int
sched_n_active(const struct sched *s)
{
	return s->n_active;
}

int
sched_n_queued(const struct sched *s)
{
	return s->n_queued;
}

bool
sched_busy(const struct sched *s)
{
	return s->inflight;
}

void
sched_abort_all(struct sched *s, unsigned flag)
{
	struct req *r, *next;

	for (r = TAILQ_FIRST(&s->queue); r != NULL; r = next) {
		next = TAILQ_NEXT(r, link);
		req_abort(r, flag);
	}
	for (r = TAILQ_FIRST(&s->active); r != NULL; r = next) {
		next = TAILQ_NEXT(r, link);
		req_abort(r, flag);
	}
}

/* Moves queued requests into the active set while there is room. */
static void
admit(struct sched *s)
{
	struct backend *b = s->o->backend;
	struct req *r;
	struct orcd_err err;

	while (s->n_active < s->o->cfg.max_batch && (r = TAILQ_FIRST(&s->queue)) != NULL) {
		if (b->ops->seq_new(b, r->n_ctx, &r->seq, &err) != 0) {
			log_msg(LOG_WARN, r->corr, "cannot allocate the KV cache (%s); "
			    "request stays queued", err.msg);
			break;
		}
		TAILQ_REMOVE(&s->queue, r, link);
		r->in_queue = false;
		s->n_queued--;
		TAILQ_INSERT_TAIL(&s->active, r, link);
		r->in_active = true;
		s->n_active++;
		req_set_state(r, REQ_PREFILL);
	}
	update_gauges(s);
}

void
sched_kick(struct sched *s)
{
	struct orcd *o = s->o;
	int n = 0, budget = o->cfg.max_step_tokens, tokens = 0;
	struct req *r;
	struct orcd_err err;

	if (s->inflight || o->backend == NULL)
		return;
	admit(s);
	/* Decoding streams first (one token each), then prompt chunks. */
	TAILQ_FOREACH(r, &s->active, link) {
		if (r->state != REQ_DECODE || r->abort_flags != 0 || n >= s->cap_seqs ||
		    budget == 0)
			continue;
		struct backend_step_seq *q = &s->seqs[n++];

		q->seq = r->seq;
		q->tokens = &r->last_token;
		q->n_tokens = 1;
		q->pos = r->n_past;
		q->sampler = r->sampler;
		q->owner = r;
		budget--;
	}
	TAILQ_FOREACH(r, &s->active, link) {
		if (r->state != REQ_PREFILL || r->abort_flags != 0 || n >= s->cap_seqs ||
		    budget == 0)
			continue;
		int left = r->n_prompt - r->n_past;
		int chunk = left < o->cfg.prefill_chunk ? left : o->cfg.prefill_chunk;

		if (chunk > budget)
			chunk = budget;
		struct backend_step_seq *q = &s->seqs[n++];

		q->seq = r->seq;
		q->tokens = r->prompt + r->n_past;
		q->n_tokens = chunk;
		q->pos = r->n_past;
		q->sampler = chunk == left ? r->sampler : NULL;
		q->owner = r;
		budget -= chunk;
	}
	if (n == 0)
		return;
	for (int i = 0; i < n; i++) {
		((struct req *)s->seqs[i].owner)->in_step = true;
		tokens += s->seqs[i].n_tokens;
	}
	s->step.seqs = s->seqs;
	s->step.n_seqs = n;
	s->step.n_tokens = tokens;
	s->inflight = true;
	s->t_submit = orcd_now();
	if (o->backend->ops->step(o->backend, &s->step, &err) != 0) {
		/* deliver the failure through the normal completion path */
		s->step.status = -1;
		s->step.err = err;
		s->step.t_start = s->step.t_end = s->t_submit;
		cq_push(o->cq, &s->step.cq);
	}
}

static void
sched_step_done(struct cq_item *item)
{
	struct backend_step *st = (struct backend_step *)item;
	struct sched *s = st->arg;
	struct orcd *o = s->o;
	uint64_t now_ns;
	struct req *r, *next;

	double t0 = orcd_now();

	s->inflight = false;
	metric_histogram_observe(o->m->step_seconds, st->t_end - st->t_start);
	metric_histogram_observe(o->m->step_batch, st->n_seqs);
	metric_histogram_observe(o->m->step_tokens, st->n_tokens);
	if (st->status != 0)
		log_error("engine step failed: %s", st->err.msg);
	/* Aborted requests first: their KV is freed before the frames of the
	 * other streams are built. */
	for (int i = 0; i < st->n_seqs; i++) {
		struct backend_step_seq *q = &st->seqs[i];

		if (((struct req *)q->owner)->abort_flags != 0) {
			req_on_step(q->owner, q, st->status, st->err.msg);
			q->owner = NULL;   /* the request may be gone now */
		}
	}
	for (int i = 0; i < st->n_seqs; i++)
		if (st->seqs[i].owner != NULL)
			req_on_step(st->seqs[i].owner, &st->seqs[i], st->status, st->err.msg);

	/* Step boundary: deadlines of every live request. */
	now_ns = orcd_now_ns();
	for (r = TAILQ_FIRST(&s->active); r != NULL; r = next) {
		next = TAILQ_NEXT(r, link);
		if (req_deadline_passed(r, now_ns))
			req_abort(r, REQ_ABORT_DEADLINE);
	}
	for (r = TAILQ_FIRST(&s->queue); r != NULL; r = next) {
		next = TAILQ_NEXT(r, link);
		if (req_deadline_passed(r, now_ns))
			req_abort(r, REQ_ABORT_DEADLINE);
	}
	sched_kick(s);
	metric_histogram_observe(o->m->step_handler, orcd_now() - t0);
	if (o->phase == ORCD_DRAINING)
		orcd_maybe_exit(o);
}
