/*
 * The request state machine (see req.h).  One function per state; on-enter
 * work (the `started` event, metrics) lives in req_set_state's hooks so each
 * state function stays small.
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <event2/buffer.h>
#include <event2/event.h>

#include "conn.h"
#include "log.h"
#include "metrics_orcd.h"
#include "model.h"
#include "orcd.h"
#include "req.h"
#include "sched.h"
#include "tokenizer.h"

static const char *state_names[REQ_STATE_COUNT] = {
	"READ_REQUEST", "ADMIT", "QUEUED", "PREFILL", "DECODE", "WAIT_WRITABLE",
	"FINISH", "CANCELLED", "DEADLINE", "DISCONNECTED", "FAILED", "DONE",
};

const char *
req_state_name(enum req_state s)
{
	return (unsigned)s < REQ_STATE_COUNT ? state_names[s] : "?";
}

#define EXITS ((1u << REQ_CANCELLED) | (1u << REQ_DEADLINE) | \
    (1u << REQ_DISCONNECTED) | (1u << REQ_FAILED))

/* allowed[from] = bit set of the states `from` may go to */
static const unsigned allowed[REQ_STATE_COUNT] = {
	[REQ_READ_REQUEST] = 1u << REQ_ADMIT,
	[REQ_ADMIT] = (1u << REQ_QUEUED) | (1u << REQ_FAILED) | (1u << REQ_DEADLINE),
	[REQ_QUEUED] = (1u << REQ_PREFILL) | EXITS,
	[REQ_PREFILL] = (1u << REQ_DECODE) | (1u << REQ_FINISH) | EXITS,
	[REQ_DECODE] = (1u << REQ_WAIT_WRITABLE) | (1u << REQ_FINISH) | EXITS,
	[REQ_WAIT_WRITABLE] = (1u << REQ_DECODE) | EXITS,
	[REQ_FINISH] = 1u << REQ_DONE,
	[REQ_CANCELLED] = 1u << REQ_DONE,
	[REQ_DEADLINE] = 1u << REQ_DONE,
	[REQ_DISCONNECTED] = 1u << REQ_DONE,
	[REQ_FAILED] = 1u << REQ_DONE,
	[REQ_DONE] = 0,
};

bool
req_transition_ok(enum req_state from, enum req_state to)
{
	return (unsigned)from < REQ_STATE_COUNT && (unsigned)to < REQ_STATE_COUNT &&
	    (allowed[from] & (1u << to)) != 0;
}

struct req *
req_new(struct orcd *o, struct conn *c)
{
	struct req *r = calloc(1, sizeof(*r));

	if (r == NULL)
		return NULL;
	r->o = o;
	r->conn = c;
	r->id = ++o->next_id;
	r->state = REQ_READ_REQUEST;
	r->t_arrive = conn_request(c)->t_start;
	snprintf(r->corr, sizeof(r->corr), "%s", conn_corr_id(c));
	sampler_params_default(&r->sp);
	return r;
}

static void
req_free(struct req *r)
{
	if (r->deadline_ev != NULL)
		event_free(r->deadline_ev);
	free(r->job_id);
	free(r->prompt);
	for (int i = 0; i < r->n_stop; i++)
		free(r->stop[i]);
	free(r->hold);
	sampler_free(r->sampler);
	free(r);
}

void
req_discard(struct req *r)
{
	req_free(r);
}

/* ------------------------------------------------------------ output */

static void
emit_event(struct req *r, const char *name, const char *fmt, ...)
	__attribute__((format(printf, 3, 4)));

static void
emit_event(struct req *r, const char *name, const char *fmt, ...)
{
	char buf[1024];
	va_list ap;
	int n;

	if (r->conn == NULL || !r->streaming)
		return;
	va_start(ap, fmt);
	n = vsnprintf(buf, sizeof(buf), fmt, ap);
	va_end(ap);
	if (n < 0)
		return;
	if ((size_t)n >= sizeof(buf))
		n = sizeof(buf) - 1;
	sse_event(&r->sse, name, buf, (size_t)n);
}

/* JSON-escapes s into a static-size buffer (messages, job ids). */
static const char *
esc(const char *s, char *buf, size_t cap)
{
	size_t n = strlen(s);

	if (n * 6 + 1 > cap)
		n = (cap - 1) / 6;
	buf[sse_json_escape(s, n, buf)] = '\0';
	return buf;
}

static void
end_stream(struct req *r)
{
	if (r->conn != NULL && r->streaming) {
		struct conn *c = r->conn;

		sse_finish(&r->sse);
		r->conn = NULL;
		conn_stream_end(c);
	}
}

/* Emits held-back text (stop-string path) as one token event. */
static void
flush_hold(struct req *r, size_t n)
{
	if (n == 0 || r->conn == NULL)
		return;
	sse_token_text(&r->sse, r->n_gen - 1, r->hold, n);
	memmove(r->hold, r->hold + n, r->hold_len - n);
	r->hold_len -= n;
}

/*
 * Stop strings: text is held back while its tail could still be the start
 * of a stop string.  Returns true if a stop string completed (the text
 * before it is emitted, the stop string is not).
 */
static bool
stop_feed(struct req *r, const char *text, size_t len)
{
	if (r->hold_len + len > r->hold_cap) {
		size_t cap = (r->hold_len + len) * 2 + 64;
		char *p = realloc(r->hold, cap);

		if (p == NULL)
			return false;
		r->hold = p;
		r->hold_cap = cap;
	}
	memcpy(r->hold + r->hold_len, text, len);
	r->hold_len += len;
	for (int i = 0; i < r->n_stop; i++) {
		char *hit = memmem(r->hold, r->hold_len, r->stop[i], r->stop_len[i]);

		if (hit != NULL) {
			flush_hold(r, (size_t)(hit - r->hold));
			r->hold_len = 0;
			return true;
		}
	}
	/* keep the longest tail that is a prefix of some stop string */
	size_t keep = 0;
	for (int i = 0; i < r->n_stop; i++) {
		size_t maxk = r->stop_len[i] - 1 < r->hold_len ? r->stop_len[i] - 1 : r->hold_len;

		for (size_t k = maxk; k > keep; k--)
			if (memcmp(r->hold + r->hold_len - k, r->stop[i], k) == 0) {
				keep = k;
				break;
			}
	}
	flush_hold(r, r->hold_len - keep);
	return false;
}

/* ------------------------------------------------------------ state changes */

static void
on_enter(struct req *r, enum req_state s)
{
	struct orcd *o = r->o;
	double now = orcd_now();
	char jb[1600];

	switch (s) {
	case REQ_PREFILL:
		r->t_started = now;
		metric_histogram_observe(o->m->queue_wait, now - r->t_admit);
		emit_event(r, "started", "{\"job_id\":\"%s\",\"queue_ms\":%.3f,"
		    "\"prompt_tokens\":%d}", esc(r->job_id, jb, sizeof(jb)),
		    (now - r->t_admit) * 1e3, r->n_prompt);
		break;
	default:
		break;
	}
}

void
req_set_state(struct req *r, enum req_state s)
{
	if (!req_transition_ok(r->state, s)) {
		log_msg(LOG_ERROR, r->corr, "BUG: request %llu: invalid transition %s -> %s",
		    (unsigned long long)r->id, req_state_name(r->state), req_state_name(s));
		abort();
	}
	if (log_enabled(LOG_DEBUG))
		log_msg(LOG_DEBUG, r->corr, "request %llu: %s -> %s",
		    (unsigned long long)r->id, req_state_name(r->state), req_state_name(s));
	if (r->o->trace != NULL)
		r->o->trace(r->o->trace_arg, r, (int)r->state, (int)s);
	r->state = s;
	on_enter(r, s);
}

/* Which exit an abort flag leads to (disconnect wins: nobody to tell). */
static enum req_state
abort_state(unsigned flags)
{
	if (flags & REQ_ABORT_DISCONNECT)
		return REQ_DISCONNECTED;
	if (flags & REQ_ABORT_FAILED)
		return REQ_FAILED;
	if (flags & REQ_ABORT_CANCEL)
		return REQ_CANCELLED;
	if (flags & REQ_ABORT_DEADLINE)
		return REQ_DEADLINE;
	return REQ_FAILED; /* shutdown: a failure with its own code */
}

void
req_abort(struct req *r, unsigned flag)
{
	if (r->state >= REQ_FINISH)
		return;
	if (r->abort_flags == 0)
		r->t_abort = orcd_now();
	r->abort_flags |= flag;
	req_drive(r);
}

/* ------------------------------------------------------------ states */

/* The step boundary checks deadlines while steps run; this timer covers a
 * request that waits with no step in flight (queued behind nothing, or
 * paused by a client that does not read). */
static void
deadline_cb(evutil_socket_t fd, short what, void *arg)
{
	req_abort(arg, REQ_ABORT_DEADLINE);
}

void
req_set_deadline(struct req *r, uint64_t deadline_ns)
{
	uint64_t now = orcd_now_ns();
	uint64_t left = deadline_ns > now ? deadline_ns - now : 0;
	struct timeval tv = { (time_t)(left / 1000000000u),
	    (suseconds_t)((left % 1000000000u) / 1000u) };

	r->deadline_ns = deadline_ns;
	if (r->deadline_ev == NULL) {
		r->deadline_ev = evtimer_new(r->o->base, deadline_cb, r);
		if (r->deadline_ev != NULL)
			event_priority_set(r->deadline_ev, ORCD_PRIO_TIMER);
	}
	if (r->deadline_ev != NULL)
		evtimer_add(r->deadline_ev, &tv);
}

static void
st_admit(struct req *r)
{
	struct orcd *o = r->o;
	struct orcd_err err;
	bool chunked;

	r->t_admit = orcd_now();
	if (r->deadline_ns != 0 && orcd_now_ns() + (uint64_t)o->cfg.deadline_min_ms * 1000000u >=
	    r->deadline_ns) {
		r->fail_status = 504;
		r->fail_code = "deadline_exceeded";
		snprintf(r->fail_msg, sizeof(r->fail_msg), "the deadline has passed or is "
		    "closer than %d ms", o->cfg.deadline_min_ms);
		req_set_state(r, REQ_DEADLINE);
		return;
	}
	if (!sched_can_enqueue(o->sched)) {
		r->fail_status = 429;
		r->fail_code = "queue_full";
		snprintf(r->fail_msg, sizeof(r->fail_msg), "%d requests are waiting "
		    "(max-queue); retry later", sched_n_queued(o->sched));
		req_set_state(r, REQ_FAILED);
		return;
	}
	if (sched_mem_pressure(o->sched)) {
		r->fail_status = 429;
		r->fail_code = "memory_pressure";
		snprintf(r->fail_msg, sizeof(r->fail_msg), "tracked memory is above the "
		    "memory limits (mem-soft-limit, mem-hard-limit); admission is paused, "
		    "retry later");
		req_set_state(r, REQ_FAILED);
		return;
	}
	if (r->deadline_ns != 0) {
		double wait = sched_predict_start_s(o->sched, r->n_prompt);

		if (wait > 0 && orcd_now_ns() + (uint64_t)(wait * 1e9) >= r->deadline_ns) {
			r->fail_status = 504;
			r->fail_code = "deadline_exceeded";
			snprintf(r->fail_msg, sizeof(r->fail_msg), "the deadline is %.0f ms away, "
			    "the predicted wait for the first token is %.0f ms",
			    (double)(r->deadline_ns - orcd_now_ns()) / 1e6, wait * 1e3);
			req_set_state(r, REQ_DEADLINE);
			return;
		}
	}
	if (sched_register_job(o->sched, r) != 0) {
		r->fail_status = 409;
		r->fail_code = "duplicate_job_id";
		snprintf(r->fail_msg, sizeof(r->fail_msg), "a request with this job_id "
		    "is already running");
		req_set_state(r, REQ_FAILED);
		return;
	}
	r->sampler = sampler_new(&r->sp, o->model->hp.n_vocab, &err);
	if (r->sampler == NULL) {
		r->fail_status = 400;
		r->fail_code = "invalid_params";
		snprintf(r->fail_msg, sizeof(r->fail_msg), "%s", err.msg);
		req_set_state(r, REQ_FAILED);
		return;
	}
	for (int i = 0; i < r->n_prompt; i++)
		sampler_accept(r->sampler, r->prompt[i]);
	struct evbuffer *out = conn_stream_begin(r->conn, r, "text/event-stream",
	    "Cache-Control: no-cache\r\nX-Accel-Buffering: no\r\n", &chunked);
	sse_stream_init(&r->sse, out, chunked);
	r->streaming = true;
	log_msg(LOG_INFO, r->corr, "execute job %s: %d prompt tokens, max_tokens %d",
	    r->job_id, r->n_prompt, r->max_tokens);
	sched_enqueue(o->sched, r);
	req_set_state(r, REQ_QUEUED);
	if (r->deadline_ns != 0)
		req_set_deadline(r, r->deadline_ns);
	sched_kick(o->sched);
}

/* QUEUED, PREFILL, DECODE, WAIT_WRITABLE: only aborts move them here;
 * everything else is driven by the scheduler's step completions. */
static void
st_live(struct req *r)
{
	if (r->abort_flags == 0 || r->in_step)
		return;
	req_set_state(r, abort_state(r->abort_flags));
}

static void
release_kv(struct req *r)
{
	struct orcd *o = r->o;

	sched_forget(o->sched, r);
	if (r->seq != NULL) {
		o->backend->ops->seq_free(o->backend, r->seq);
		r->seq = NULL;
	}
}

static void
st_finish(struct req *r)
{
	struct orcd *o = r->o;
	double now = orcd_now();
	double gen_s = r->t_last_token > r->t_first_token ? r->t_last_token - r->t_first_token : 0;
	char out[4];
	size_t n;

	release_kv(r);
	if (r->n_stop > 0 && r->hold_len > 0 && strcmp(r->stop_reason, "stop") != 0)
		flush_hold(r, r->hold_len);
	if (r->conn != NULL && (n = sse_flush_utf8(&r->sse, out)) > 0)
		sse_token_text(&r->sse, r->n_gen - 1, out, n);
	emit_event(r, "end", "{\"tokens\":%d,\"stop_reason\":\"%s\",\"timings\":{"
	    "\"queue_ms\":%.3f,\"prompt_tokens\":%d,\"prompt_ms\":%.3f,\"ttft_ms\":%.3f,"
	    "\"decode_tokens_per_s\":%.2f,\"total_ms\":%.3f}}", r->n_gen, r->stop_reason,
	    (r->t_started - r->t_admit) * 1e3, r->n_prompt,
	    (r->t_first_token - r->t_started) * 1e3, (r->t_first_token - r->t_arrive) * 1e3,
	    gen_s > 0 ? (r->n_gen - 1) / gen_s : 0.0, (now - r->t_arrive) * 1e3);
	metric_histogram_observe(o->m->e2e, now - r->t_arrive);
	metric_counter_inc(o->m->requests[OUTCOME_DONE]);
	log_msg(LOG_INFO, r->corr, "job %s done: %d tokens (%s) in %.1f ms", r->job_id,
	    r->n_gen, r->stop_reason, (now - r->t_arrive) * 1e3);
	end_stream(r);
	req_set_state(r, REQ_DONE);
}

static void
st_exit(struct req *r)
{
	struct orcd *o = r->o;
	double now;
	enum req_outcome k;
	const char *code, *msg;
	char mb[2048];

	release_kv(r); /* before anything else */
	now = orcd_now();
	switch (r->state) {
	case REQ_CANCELLED:
		k = OUTCOME_CANCELLED;
		code = "cancelled";
		msg = "the request was cancelled";
		metric_histogram_observe(o->m->cancel_latency, now - r->t_abort);
		break;
	case REQ_DEADLINE:
		k = OUTCOME_DEADLINE;
		code = "deadline_exceeded";
		msg = r->fail_msg[0] ? r->fail_msg : "the deadline passed during generation";
		metric_counter_inc(o->m->deadline_aborts);
		break;
	case REQ_DISCONNECTED:
		k = OUTCOME_DISCONNECTED;
		code = "disconnected";
		msg = "the client went away";
		metric_histogram_observe(o->m->disconnect_latency, now - r->t_abort);
		break;
	default:
		if (r->abort_flags & REQ_ABORT_SHUTDOWN) {
			k = OUTCOME_SHUTDOWN;
			code = "shutting_down";
			msg = "the server is shutting down";
		} else {
			k = OUTCOME_FAILED;
			code = r->fail_code ? r->fail_code : "internal_error";
			msg = r->fail_msg[0] ? r->fail_msg : "the request failed";
		}
		break;
	}
	metric_counter_inc(o->m->requests[k]);
	if (r->conn != NULL && !r->streaming) {
		/* rejected before the stream began: a plain HTTP error */
		int status = r->fail_status ? r->fail_status : 500;
		struct conn *c = r->conn;

		r->conn = NULL;
		conn_respond_error(c, status, code, "%s", msg);
	} else {
		log_msg(k == OUTCOME_FAILED ? LOG_WARN : LOG_INFO, r->corr,
		    "job %s ended: %s after %d tokens (%.1f ms)", r->job_id ? r->job_id : "-",
		    code, r->n_gen, (now - r->t_arrive) * 1e3);
		emit_event(r, "error", "{\"code\":\"%s\",\"message\":\"%s\",\"tokens\":%d}",
		    code, esc(msg, mb, sizeof(mb)), r->n_gen);
		end_stream(r);
	}
	req_set_state(r, REQ_DONE);
}

void
req_drive(struct req *r)
{
	for (;;) {
		enum req_state before = r->state;

		switch (r->state) {
		case REQ_READ_REQUEST:
			return;
		case REQ_ADMIT:
			st_admit(r);
			break;
		case REQ_QUEUED:
		case REQ_PREFILL:
		case REQ_DECODE:
		case REQ_WAIT_WRITABLE:
			st_live(r);
			break;
		case REQ_FINISH:
			st_finish(r);
			break;
		case REQ_CANCELLED:
		case REQ_DEADLINE:
		case REQ_DISCONNECTED:
		case REQ_FAILED:
			st_exit(r);
			break;
		case REQ_DONE:
			req_free(r);
			return;
		case REQ_STATE_COUNT:
			abort();
		}
		if (r->state == before)
			return;
	}
}

void
req_start(struct req *r)
{
	req_set_state(r, REQ_ADMIT);
	req_drive(r);
}

/* ------------------------------------------------------------ events */

/* A sampled token: stop checks, then the SSE frame. */
static void
deliver_token(struct req *r, int32_t tok)
{
	struct orcd *o = r->o;
	const struct tokenizer *t = o->model->tok;
	double now = orcd_now();

	if (!r->ignore_eos && tokenizer_is_eog(t, tok)) {
		r->stop_reason = "eos";
		req_set_state(r, REQ_FINISH);
		return;
	}
	if (r->n_gen == 0) {
		r->t_first_token = now;
		metric_histogram_observe(o->m->ttft, now - r->t_arrive);
	} else {
		metric_histogram_observe(o->m->itl, now - r->t_last_token);
	}
	r->t_last_token = now;
	r->n_gen++;
	r->last_token = tok;
	sampler_accept(r->sampler, tok);
	metric_counter_inc(o->m->gen_tokens);
	if (r->conn != NULL) {
		if (r->n_stop == 0) {
			sse_token(&r->sse, o->vocab, r->n_gen - 1, tok);
		} else {
			size_t plen;
			const char *p = tokenizer_piece(t, tok, &plen);
			char *buf = malloc(TOKENIZER_UTF8_OUT_MAX(plen));

			if (buf != NULL) {
				size_t n = tokenizer_utf8_feed(&r->sse.u8, p, plen, buf);
				bool hit = stop_feed(r, buf, n);

				free(buf);
				if (hit) {
					r->stop_reason = "stop";
					req_set_state(r, REQ_FINISH);
					return;
				}
			}
		}
	}
	if (r->n_gen >= r->max_tokens) {
		r->stop_reason = "length";
		req_set_state(r, REQ_FINISH);
	} else if (r->n_past >= r->n_ctx) {
		r->stop_reason = "context";
		req_set_state(r, REQ_FINISH);
	} else if (r->state == REQ_PREFILL) {
		req_set_state(r, REQ_DECODE);
	}
	if (r->state == REQ_DECODE && r->conn != NULL && conn_output_full(r->conn))
		req_set_state(r, REQ_WAIT_WRITABLE);
}

void
req_on_step(struct req *r, const struct backend_step_seq *ss, int status, const char *err)
{
	r->in_step = false;
	if (status != 0) {
		r->fail_code = "engine_error";
		snprintf(r->fail_msg, sizeof(r->fail_msg), "%s", err);
		req_abort(r, REQ_ABORT_FAILED);
		return;
	}
	r->n_past += ss->n_tokens;
	if (r->state == REQ_PREFILL)
		metric_counter_add(r->o->m->prompt_tokens, (uint64_t)ss->n_tokens);
	if (r->abort_flags == 0 && ss->sampler != NULL)
		deliver_token(r, ss->out_token);
	req_drive(r);
}

void
req_on_disconnect(struct req *r)
{
	r->conn = NULL;
	req_abort(r, REQ_ABORT_DISCONNECT);
}

void
req_on_writable(struct req *r)
{
	if (r->state == REQ_WAIT_WRITABLE && r->conn != NULL && !conn_output_full(r->conn)) {
		req_set_state(r, REQ_DECODE);
		sched_kick(r->o->sched);
	}
}
