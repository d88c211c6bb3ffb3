/* Scheduler (see sched.h). */
#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/queue.h>

#include <event2/event.h>

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
	TAILQ_HEAD(reqhead, req) active;
	int n_queued, n_active;
	struct req *jobs[JOB_BUCKETS];
	struct backend_step step;
	struct backend_step_seq *seqs;
	int cap_seqs;
	bool inflight;
	double t_submit;
	/* memory (the VRAM monitor): limits on the backend's tracked bytes */
	uint64_t soft_limit, hard_limit;
	struct backend_mem base;   /* after load, no request: the leak baseline */
	uint64_t committed;        /* KV bytes the active requests may grow to */
	bool over_soft;
	double ewma_step_s;        /* recent step time, for the wait prediction */
	/* step time against step tokens, t = a + b * tokens, fitted by
	 * exponentially weighted least squares over recent steps: it sizes
	 * prompt chunks so a step that carries one stays within
	 * prefill-latency-ratio times a decode-only step */
	double fw, fx, fy, fxx, fxy;
	struct event *wait_ev;     /* max_wait_ms: a small decode step held */
	bool waited;
};

static void sched_step_done(struct cq_item *item);

static void
wait_cb(evutil_socket_t fd, short what, void *arg)
{
	struct sched *s = arg;

	s->waited = true;
	sched_kick(s);
}

void
sched_mem_read(const struct sched *s, struct backend_mem *m)
{
	struct backend *b = s->o->backend;

	memset(m, 0, sizeof(*m));
	if (b != NULL && b->ops->mem != NULL)
		b->ops->mem(b, m);
}

const struct backend_mem *
sched_mem_baseline(const struct sched *s)
{
	return &s->base;
}

/* O(1): one read of the backend's cached counters and two compares. */
enum sched_mem_level
sched_check_limits(struct sched *s)
{
	struct backend_mem m;
	enum sched_mem_level lv = SCHED_MEM_OK;

	if (s->soft_limit == 0 && s->hard_limit == 0)
		return SCHED_MEM_OK;
	sched_mem_read(s, &m);
	if (s->hard_limit != 0 && m.used > s->hard_limit)
		lv = SCHED_MEM_HARD;
	else if (s->soft_limit != 0 && m.used > s->soft_limit)
		lv = SCHED_MEM_SOFT;
	if (lv != SCHED_MEM_OK && !s->over_soft) {
		s->over_soft = true;
		metric_counter_inc(s->o->m->mem_soft_violations);
		log_warn("tracked memory %.1f MB is above the %s limit %.1f MB: admission "
		    "paused", (double)m.used / 1e6, lv == SCHED_MEM_HARD ? "hard" : "soft",
		    (double)(lv == SCHED_MEM_HARD ? s->hard_limit : s->soft_limit) / 1e6);
	} else if (lv == SCHED_MEM_OK && s->over_soft) {
		s->over_soft = false;
		log_info("tracked memory %.1f MB is back under the limits: admission resumes",
		    (double)m.used / 1e6);
	}
	return lv;
}

bool
sched_mem_pressure(struct sched *s)
{
	return sched_check_limits(s) != SCHED_MEM_OK;
}

double
sched_predict_start_s(const struct sched *s, int n_prompt)
{
	const struct orcd *o = s->o;
	double tokens = n_prompt, steps;
	const struct req *r;

	if (s->ewma_step_s <= 0)
		return 0;   /* nothing measured yet: no prediction */
	TAILQ_FOREACH(r, &s->queue, link)
		tokens += r->n_prompt;
	steps = tokens / (o->cfg.max_step_tokens > 0 ? o->cfg.max_step_tokens : 1);
	/* every step also carries the running streams' tokens */
	if (s->n_active > 0)
		steps *= 1.0 + s->n_active / (double)o->cfg.max_step_tokens;
	return (steps < 1 ? 1 : steps) * s->ewma_step_s;
}

static void
mem_log_leak(struct sched *s)
{
	struct backend_mem m;
	uint64_t leaked;

	sched_mem_read(s, &m);
	leaked = m.used > s->base.used ? m.used - s->base.used : 0;
	if (m.kv_used > s->base.kv_used && m.kv_used - s->base.kv_used > leaked)
		leaked = m.kv_used - s->base.kv_used;
	metric_gauge_set(s->o->m->leaked_bytes, (double)leaked);
	if (leaked != 0 || s->committed != 0)
		log_error("memory leak: all requests drained but tracked memory is %" PRIu64
		    " bytes (baseline %" PRIu64 "), KV %" PRIu64 " bytes held, %" PRIu64
		    " committed", m.used, s->base.used, m.kv_used, s->committed);
}

void
sched_log_snapshot(struct sched *s)
{
	struct backend_mem m;

	sched_mem_read(s, &m);
	log_info("memory: tracked %.1f MB (baseline %.1f, soft %.1f, hard %.1f), KV %.1f of "
	    "%.1f MB held, %.1f MB committed, %d active, %d queued",
	    (double)m.used / 1e6, (double)s->base.used / 1e6, (double)s->soft_limit / 1e6,
	    (double)s->hard_limit / 1e6, (double)m.kv_used / 1e6, (double)m.kv_capacity / 1e6,
	    (double)s->committed / 1e6, s->n_active, s->n_queued);
}

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
	s->soft_limit = (uint64_t)o->cfg.mem_soft_limit;
	s->hard_limit = (uint64_t)o->cfg.mem_hard_limit;
	if (s->hard_limit != 0 && s->soft_limit > s->hard_limit) {
		free(s->seqs);
		free(s);
		orcd_errf(err, "mem-soft-limit (%ld) is above mem-hard-limit (%ld)",
		    o->cfg.mem_soft_limit, o->cfg.mem_hard_limit);
		return NULL;
	}
	sched_mem_read(s, &s->base);
	if ((s->soft_limit != 0 && s->soft_limit <= s->base.used) ||
	    (s->hard_limit != 0 && s->hard_limit <= s->base.used)) {
		orcd_errf(err, "the memory limits (soft %" PRIu64 ", hard %" PRIu64 " bytes) "
		    "must be above the %" PRIu64 " bytes tracked after load", s->soft_limit,
		    s->hard_limit, s->base.used);
		free(s->seqs);
		free(s);
		return NULL;
	}
	if (o->cfg.max_wait_ms > 0 && o->base != NULL) {
		s->wait_ev = evtimer_new(o->base, wait_cb, s);
		if (s->wait_ev != NULL)
			event_priority_set(s->wait_ev, ORCD_PRIO_TIMER);
	}
	return s;
}

void
sched_free(struct sched *s)
{
	if (s == NULL)
		return;
	if (s->wait_ev != NULL)
		event_free(s->wait_ev);
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
		s->committed -= r->kv_commit;
		r->kv_commit = 0;
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

/* Moves queued requests into the active set while there is room: a batch
 * slot, memory under the soft limit, and KV the request may grow to that
 * no active request has a claim on (so a running stream never finds the
 * cache full). */
static void
admit(struct sched *s)
{
	struct backend *b = s->o->backend;
	struct backend_mem m;
	struct req *r;
	struct orcd_err err;

	sched_mem_read(s, &m);
	while (s->n_active < s->o->cfg.max_batch && (r = TAILQ_FIRST(&s->queue)) != NULL) {
		uint64_t need = b->ops->seq_bytes(b, r->n_ctx);

		if (sched_check_limits(s) != SCHED_MEM_OK)
			break;
		if (m.kv_capacity != 0 && s->committed + need > m.kv_capacity) {
			if (s->n_active == 0) {
				/* it can never fit: say so rather than wait forever */
				r->fail_code = "vram_limit";
				snprintf(r->fail_msg, sizeof(r->fail_msg), "the request needs "
				    "%.1f MB of KV cache, the pool has %.1f MB (kv-memory)",
				    (double)need / 1e6, (double)m.kv_capacity / 1e6);
				req_abort(r, REQ_ABORT_FAILED);
				continue;
			}
			break;
		}
		if (b->ops->seq_new(b, r->n_ctx, &r->seq, &err) != 0) {
			if (s->n_active == 0) {
				/* nothing running would free anything: fail it */
				r->fail_code = "vram_limit";
				snprintf(r->fail_msg, sizeof(r->fail_msg), "cannot allocate the KV "
				    "cache: %.400s", err.msg);
				req_abort(r, REQ_ABORT_FAILED);
				continue;
			}
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
		r->kv_commit = need;
		s->committed += need;
		if (s->o->cfg.prefix_cache && b->ops->seq_attach_prefix != NULL) {
			/* the last prompt token is always computed: its logits
			 * give the first token */
			int got = b->ops->seq_attach_prefix(b, r->seq, r->prompt, r->n_prompt - 1);

			if (got > 0) {
				r->n_past = got;
				metric_counter_add(s->o->m->prompt_reused, (uint64_t)got);
				log_msg(LOG_DEBUG, r->corr, "%d of %d prompt tokens from the prefix "
				    "cache", got, r->n_prompt);
			}
		}
		req_set_state(r, REQ_PREFILL);
	}
	update_gauges(s);
}

/* Over the hard limit: abort the newest requests until under it.  Runs
 * between steps (nothing in flight), so each abort frees its KV at once. */
static void
emergency_cleanup(struct sched *s)
{
	struct backend_mem m;
	struct req *r;

	if (s->hard_limit == 0)
		return;
	for (;;) {
		sched_mem_read(s, &m);
		if (m.used <= s->hard_limit)
			break;
		/* the newest live request */
		for (r = TAILQ_LAST(&s->active, reqhead); r != NULL && r->abort_flags != 0;
		    r = TAILQ_PREV(r, reqhead, link))
			;
		if (r == NULL) {
			log_error("tracked memory %.1f MB is above the hard limit %.1f MB with "
			    "no request left to abort", (double)m.used / 1e6,
			    (double)s->hard_limit / 1e6);
			break;
		}
		metric_counter_inc(s->o->m->mem_hard_violations);
		metric_counter_inc(s->o->m->emergency_aborts);
		log_msg(LOG_WARN, r->corr, "tracked memory %.1f MB is above the hard limit "
		    "%.1f MB: aborting the newest request (job %s, %d tokens in its cache)",
		    (double)m.used / 1e6, (double)s->hard_limit / 1e6,
		    r->job_id ? r->job_id : "-", r->n_past);
		r->fail_code = "vram_limit";
		snprintf(r->fail_msg, sizeof(r->fail_msg), "aborted to bring memory under the "
		    "hard limit (%.1f MB in use, limit %.1f MB)", (double)m.used / 1e6,
		    (double)s->hard_limit / 1e6);
		req_abort(r, REQ_ABORT_FAILED);
	}
}

/* Prompt tokens a step with n_dec decoding streams may carry so that its
 * predicted time stays within prefill-latency-ratio times a decode-only
 * step (at least PREFILL_MIN_TOKENS, so prompts progress); -1: no limit
 * (ratio 0, or no fit yet). */
#define PREFILL_MIN_TOKENS 16

static int
prefill_cap(const struct sched *s, int n_dec)
{
	double ratio = s->o->cfg.prefill_latency_ratio;
	double var, a, b, t_dec, cap;

	if (ratio <= 0 || s->fw < 4)
		return -1;
	var = s->fw * s->fxx - s->fx * s->fx;
	if (var <= 1e-9 * s->fw * s->fw)
		return -1;   /* every step had the same size: no slope yet */
	b = (s->fw * s->fxy - s->fx * s->fy) / var;
	a = (s->fy - b * s->fx) / s->fw;
	if (b <= 0)
		return -1;
	if (a < 0)
		a = 0;
	t_dec = a + b * n_dec;
	cap = (ratio * t_dec - a) / b - n_dec;
	if (cap < PREFILL_MIN_TOKENS)
		cap = PREFILL_MIN_TOKENS;
	return cap > 1e6 ? 1000000 : (int)cap;
}

/* Tokens each active request feeds in the next step (r->plan), decoding
 * streams first (one token each), then prompt chunks, within the step's
 * budget; reserves the KV for them. */
static void
plan_step(struct sched *s)
{
	struct orcd *o = s->o;
	struct backend *b = o->backend;
	int n = 0, budget = o->cfg.max_step_tokens;
	struct req *r, *next;
	struct orcd_err err;

	TAILQ_FOREACH(r, &s->active, link) {
		r->plan = 0;
		/* prompt blocks the engine has filled become reusable */
		if (o->cfg.prefix_cache && b->ops->seq_publish != NULL && r->n_past > 0 &&
		    !r->in_step)
			b->ops->seq_publish(b, r->seq, r->prompt,
			    r->n_past < r->n_prompt ? r->n_past : r->n_prompt);
	}
	for (int pass = 0; pass < 2; pass++) {
		enum req_state want = pass == 0 ? REQ_DECODE : REQ_PREFILL;

		if (pass == 1 && n > 0) {
			int cap = prefill_cap(s, n);

			if (cap >= 0 && cap < budget)
				budget = cap;
		}
		TAILQ_FOREACH(r, &s->active, link) {
			if (r->state != want || r->abort_flags != 0 || n >= s->cap_seqs ||
			    budget == 0)
				continue;
			int chunk = 1;

			if (want == REQ_PREFILL) {
				int left = r->n_prompt - r->n_past;

				chunk = left < o->cfg.prefill_chunk ? left : o->cfg.prefill_chunk;
				if (chunk > budget)
					chunk = budget;
			}
			r->plan = chunk;
			n++;
			budget -= chunk;
		}
	}
	if (b->ops->seq_reserve == NULL)
		return;
	for (r = TAILQ_FIRST(&s->active); r != NULL; r = next) {
		next = TAILQ_NEXT(r, link);
		if (r->plan == 0 || b->ops->seq_reserve(b, r->seq, r->n_past + r->plan, &err) == 0)
			continue;
		/* admission keeps every claim covered: this is a bug or an
		 * outside shrink of the pool; fail the one request, not all */
		log_msg(LOG_ERROR, r->corr, "KV reservation failed: %s", err.msg);
		r->plan = 0;
		r->fail_code = "vram_limit";
		snprintf(r->fail_msg, sizeof(r->fail_msg), "%s", err.msg);
		req_abort(r, REQ_ABORT_FAILED);
	}
}

/* max_wait_ms: a step of only a few decoding streams waits that long for
 * an arrival, whose prefill then goes first instead of queueing behind a
 * step in flight.  An arrival (a planned prefill) ends the wait at once. */
static bool
hold_small_batch(struct sched *s)
{
	struct orcd *o = s->o;
	struct req *r;
	int n_decode = 0;
	bool hold;

	if (s->wait_ev == NULL)
		return false;
	/* waiting requests that cannot be admitted now: an arrival would
	 * not end the wait */
	hold = s->n_queued == 0 && !s->waited;
	TAILQ_FOREACH(r, &s->active, link) {
		if (!hold)
			break;
		if (r->plan == 0 || r->abort_flags != 0)
			continue;
		hold = r->state == REQ_DECODE;   /* a prefill: go now */
		n_decode++;
	}
	if (!hold || n_decode == 0 || n_decode * 4 >= o->cfg.max_batch) {
		s->waited = false;
		event_del(s->wait_ev);
		return false;
	}
	if (!evtimer_pending(s->wait_ev, NULL)) {
		struct timeval tv = { o->cfg.max_wait_ms / 1000,
		    (suseconds_t)(o->cfg.max_wait_ms % 1000) * 1000 };

		evtimer_add(s->wait_ev, &tv);
	}
	return true;
}

void
sched_kick(struct sched *s)
{
	struct orcd *o = s->o;
	int n = 0, tokens = 0;
	struct req *r;
	struct orcd_err err;

	if (s->inflight || o->backend == NULL)
		return;
	admit(s);
	plan_step(s);
	emergency_cleanup(s);
	if (hold_small_batch(s))
		return;
	/* decoding streams first, then prompt chunks, as planned */
	for (int pass = 0; pass < 2; pass++) {
		TAILQ_FOREACH(r, &s->active, link) {
			if (r->plan == 0 || r->abort_flags != 0 ||
			    (r->state == REQ_DECODE) != (pass == 0))
				continue;
			struct backend_step_seq *q = &s->seqs[n++];

			q->seq = r->seq;
			q->pos = r->n_past;
			q->owner = r;
			if (r->state == REQ_DECODE) {
				q->tokens = &r->last_token;
				q->n_tokens = 1;
				q->sampler = r->sampler;
			} else {
				q->tokens = r->prompt + r->n_past;
				q->n_tokens = r->plan;
				q->sampler = r->n_past + r->plan == r->n_prompt ? r->sampler : NULL;
			}
		}
	}
	if (n == 0) {
		if (s->n_active == 0 && s->n_queued == 0)
			mem_log_leak(s);
		return;
	}
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
	if (st->status == 0) {
		double dt = st->t_end - st->t_start;

		s->ewma_step_s = s->ewma_step_s > 0 ? 0.8 * s->ewma_step_s + 0.2 * dt : dt;
		/* the fit: a decay of 0.98 per step remembers ~50 steps */
		double x = st->n_tokens;
		s->fw = 0.98 * s->fw + 1;
		s->fx = 0.98 * s->fx + x;
		s->fy = 0.98 * s->fy + dt;
		s->fxx = 0.98 * s->fxx + x * x;
		s->fxy = 0.98 * s->fxy + x * dt;
	}
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
