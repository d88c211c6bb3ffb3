/*
 * HTTP routes: POST /execute (SSE generation), POST /cancel, GET /health,
 * GET /health/live, GET /metrics.  Request bodies are parsed with jansson
 * and validated field by field; every rejection is a 4xx with a JSON error
 * naming the field.
 */
#include <errno.h>
#include <inttypes.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include <jansson.h>
#include <llhttp.h>

#include "api.h"
#include "conn.h"
#include "log.h"
#include "metrics_orcd.h"
#include "model.h"
#include "orcd.h"
#include "req.h"
#include "sched.h"
#include "seal_serve.h"
#include "tokenizer.h"

/* ------------------------------------------------------------ deadlines */

/* Parses an RFC 3339 UTC time ("2026-12-04T02:55:00.123Z" or "+00:00") into
 * nanoseconds since the epoch. */
static int
parse_rfc3339(const char *s, int64_t *out_ns)
{
	struct tm tm;
	int64_t frac_ns = 0;
	const char *p;
	int off_min = 0;

	memset(&tm, 0, sizeof(tm));
	p = strptime(s, "%Y-%m-%dT%H:%M:%S", &tm);
	if (p == NULL)
		p = strptime(s, "%Y-%m-%d %H:%M:%S", &tm);
	if (p == NULL)
		return -1;
	if (*p == '.') {
		int64_t scale = 100000000;

		for (p++; *p >= '0' && *p <= '9'; p++) {
			frac_ns += (*p - '0') * scale;
			scale /= 10;
		}
	}
	if (*p == 'Z' || *p == 'z') {
		p++;
	} else if (*p == '+' || *p == '-') {
		int hh, mm;

		if (sscanf(p + 1, "%2d:%2d", &hh, &mm) != 2)
			return -1;
		off_min = (hh * 60 + mm) * (*p == '-' ? -1 : 1);
		p += 6;
	} else {
		return -1;
	}
	if (*p != '\0')
		return -1;
	time_t t = timegm(&tm);
	if (t == (time_t)-1)
		return -1;
	*out_ns = ((int64_t)t - (int64_t)off_min * 60) * 1000000000LL + frac_ns;
	return 0;
}

/* X-Deadline (absolute) or X-Deadline-Ms (relative) -> monotonic ns; 0 when
 * absent; -1 when malformed. */
static int
request_deadline(const struct http_req *hr, uint64_t *deadline_ns, char *why, size_t whylen)
{
	const char *abs_h = http_req_header(hr, "X-Deadline");
	const char *rel_h = http_req_header(hr, "X-Deadline-Ms");
	uint64_t now = orcd_now_ns();

	*deadline_ns = 0;
	if (rel_h != NULL) {
		char *end;
		double ms;

		errno = 0;
		ms = strtod(rel_h, &end);
		if (errno != 0 || end == rel_h || *end != '\0' || !isfinite(ms) || ms < 0 ||
		    ms > 1e12) {
			snprintf(why, whylen, "X-Deadline-Ms must be a non-negative number of "
			    "milliseconds, got '%.64s'", rel_h);
			return -1;
		}
		/* relative to when the request arrived */
		uint64_t arrived = (uint64_t)(hr->t_start * 1e9);
		*deadline_ns = arrived + (uint64_t)(ms * 1e6);
		if (*deadline_ns == 0)
			*deadline_ns = 1;
		return 0;
	}
	if (abs_h != NULL) {
		int64_t wall_ns;
		struct timespec ts;

		if (parse_rfc3339(abs_h, &wall_ns) != 0) {
			snprintf(why, whylen, "X-Deadline must be an RFC 3339 UTC time "
			    "(2026-12-04T02:55:00.123Z), got '%.64s'", abs_h);
			return -1;
		}
		clock_gettime(CLOCK_REALTIME, &ts);
		int64_t wall_now = (int64_t)ts.tv_sec * 1000000000LL + ts.tv_nsec;
		int64_t left = wall_ns - wall_now;
		*deadline_ns = left <= 0 ? 1 : now + (uint64_t)left;
	}
	return 0;
}

/* ------------------------------------------------------------ /execute */

static int
get_number(json_t *params, const char *name, double lo, double hi, double *out,
    char *why, size_t whylen)
{
	json_t *v = json_object_get(params, name);

	if (v == NULL || json_is_null(v))
		return 1;
	if (!json_is_number(v)) {
		snprintf(why, whylen, "params.%s must be a number", name);
		return -1;
	}
	*out = json_number_value(v);
	if (!isfinite(*out) || *out < lo || *out > hi) {
		snprintf(why, whylen, "params.%s must be in [%g, %g], got %g", name, lo, hi, *out);
		return -1;
	}
	return 0;
}

static int
get_int(json_t *params, const char *name, long long lo, long long hi, long long *out,
    char *why, size_t whylen)
{
	json_t *v = json_object_get(params, name);

	if (v == NULL || json_is_null(v))
		return 1;
	if (!json_is_integer(v)) {
		snprintf(why, whylen, "params.%s must be an integer", name);
		return -1;
	}
	*out = json_integer_value(v);
	if (*out < lo || *out > hi) {
		snprintf(why, whylen, "params.%s must be in [%lld, %lld], got %lld", name,
		    lo, hi, *out);
		return -1;
	}
	return 0;
}

static int
parse_params(struct req *r, json_t *params, int max_new, char *why, size_t whylen)
{
	double d;
	long long i;
	int rc;

	if (params == NULL || json_is_null(params))
		return 0;
	if (!json_is_object(params)) {
		snprintf(why, whylen, "params must be an object");
		return -1;
	}
	if ((rc = get_int(params, "max_tokens", 1, max_new, &i, why, whylen)) < 0)
		return -1;
	if (rc == 0)
		r->max_tokens = (int)i;
	if ((rc = get_number(params, "temperature", 0, SAMPLER_TEMPERATURE_MAX, &d, why, whylen)) < 0)
		return -1;
	if (rc == 0)
		r->sp.temperature = (float)d;
	if ((rc = get_number(params, "top_p", 0, 1, &d, why, whylen)) < 0)
		return -1;
	if (rc == 0) {
		if (d <= 0) {
			snprintf(why, whylen, "params.top_p must be in (0, 1]");
			return -1;
		}
		r->sp.top_p = (float)d;
	}
	if ((rc = get_int(params, "top_k", 0, INT32_MAX, &i, why, whylen)) < 0)
		return -1;
	if (rc == 0)
		r->sp.top_k = (int)i;
	if ((rc = get_number(params, "min_p", 0, 1, &d, why, whylen)) < 0)
		return -1;
	if (rc == 0) {
		if (d >= 1) {
			snprintf(why, whylen, "params.min_p must be in [0, 1)");
			return -1;
		}
		r->sp.min_p = (float)d;
	}
	if ((rc = get_number(params, "repeat_penalty", 1e-6, 100, &d, why, whylen)) < 0)
		return -1;
	if (rc == 0)
		r->sp.repeat_penalty = (float)d;
	if ((rc = get_int(params, "repeat_last_n", 0, SAMPLER_REPEAT_LAST_N_MAX, &i, why, whylen)) < 0)
		return -1;
	if (rc == 0)
		r->sp.repeat_last_n = (int)i;
	if ((rc = get_int(params, "seed", 0, INT64_MAX, &i, why, whylen)) < 0)
		return -1;
	if (rc == 0)
		r->sp.seed = (uint64_t)i;

	json_t *ie = json_object_get(params, "ignore_eos");
	if (ie != NULL && !json_is_null(ie)) {
		if (!json_is_boolean(ie)) {
			snprintf(why, whylen, "params.ignore_eos must be true or false");
			return -1;
		}
		r->ignore_eos = json_is_true(ie);
	}

	json_t *stop = json_object_get(params, "stop");
	if (stop != NULL && !json_is_null(stop)) {
		size_t idx;
		json_t *v;

		if (json_is_string(stop)) {
			json_t *arr = json_array();

			json_array_append(arr, stop);
			stop = arr;
		} else if (json_is_array(stop)) {
			json_incref(stop);
		} else {
			snprintf(why, whylen, "params.stop must be a string or an array of strings");
			return -1;
		}
		if (json_array_size(stop) > REQ_MAX_STOP) {
			json_decref(stop);
			snprintf(why, whylen, "params.stop has more than %d strings", REQ_MAX_STOP);
			return -1;
		}
		json_array_foreach(stop, idx, v) {
			size_t len = json_is_string(v) ? json_string_length(v) : 0;

			if (!json_is_string(v) || len == 0 || len > REQ_MAX_STOP_BYTES) {
				json_decref(stop);
				snprintf(why, whylen, "params.stop[%zu] must be a non-empty string of "
				    "at most %d bytes", idx, REQ_MAX_STOP_BYTES);
				return -1;
			}
			r->stop[r->n_stop] = strndup(json_string_value(v), len);
			r->stop_len[r->n_stop] = len;
			r->n_stop++;
		}
		json_decref(stop);
	}
	return 0;
}

static void
api_execute(struct orcd *o, struct conn *c)
{
	const struct http_req *hr = conn_request(c);
	struct model *m = o->model;
	struct req *r;
	json_error_t je;
	json_t *root = NULL, *v;
	char why[512];
	struct orcd_err err;
	size_t n_ids;
	int n_ctx = o->cfg.ctx_size;

	if (o->phase != ORCD_READY) {
		conn_respond_error(c, 503, o->phase == ORCD_DRAINING ? "shutting_down" :
		    o->phase == ORCD_LOADING ? "loading" : "unhealthy",
		    o->phase == ORCD_LOADING ? "the model is still loading" :
		    o->phase == ORCD_DRAINING ? "the server is shutting down" :
		    "the worker is not healthy: %s", o->load_error);
		return;
	}
	/* the monitor clears the flag before the loop hears of the mismatch */
	if (o->seal != NULL && !seal_serve_sealed(o->seal)) {
		conn_respond_error(c, 503, "unhealthy", "the worker is not healthy: the "
		    "model's weights no longer match their seal");
		return;
	}
	r = req_new(o, c);
	if (r == NULL) {
		conn_respond_error(c, 503, "out_of_memory", "out of memory");
		return;
	}
	root = json_loadb(hr->body, hr->body_len, JSON_REJECT_DUPLICATES, &je);
	if (root == NULL) {
		conn_respond_error(c, 400, "invalid_json", "invalid JSON at line %d column %d: %s",
		    je.line, je.column, je.text);
		goto fail;
	}
	if (!json_is_object(root)) {
		conn_respond_error(c, 400, "invalid_request", "the body must be a JSON object");
		goto fail;
	}
	v = json_object_get(root, "job_id");
	if (v != NULL && !json_is_null(v)) {
		if (!json_is_string(v) || json_string_length(v) == 0 ||
		    json_string_length(v) > (size_t)o->cfg.max_job_id_bytes ||
		    strlen(json_string_value(v)) != json_string_length(v)) {
			conn_respond_error(c, 400, "invalid_request", "job_id must be a non-empty "
			    "string of at most %d bytes", o->cfg.max_job_id_bytes);
			goto fail;
		}
		r->job_id = strdup(json_string_value(v));
	} else {
		char gen[32];

		snprintf(gen, sizeof(gen), "job-%llu", (unsigned long long)r->id);
		r->job_id = strdup(gen);
	}
	v = json_object_get(root, "prompt");
	if (v == NULL || !json_is_string(v)) {
		conn_respond_error(c, 400, "invalid_request", "prompt is required and must be a string");
		goto fail;
	}
	if (tokenizer_encode(m->tok, json_string_value(v), json_string_length(v), true, false,
	    &r->prompt, &n_ids, &err) != 0) {
		conn_respond_error(c, 400, "invalid_prompt", "%s", err.msg);
		goto fail;
	}
	if (n_ids == 0) {
		/* an empty prompt with no BOS: start from BOS if there is one */
		if (tokenizer_bos(m->tok) < 0) {
			conn_respond_error(c, 400, "invalid_prompt", "the prompt is empty and the "
			    "model has no BOS token");
			goto fail;
		}
		free(r->prompt);
		r->prompt = malloc(sizeof(int32_t));
		r->prompt[0] = tokenizer_bos(m->tok);
		n_ids = 1;
	}
	if (n_ids >= (size_t)n_ctx) {
		conn_respond_error(c, 400, "context_length_exceeded", "the prompt has %zu tokens; "
		    "the context size is %d (ctx-size)", n_ids, n_ctx);
		goto fail;
	}
	r->n_prompt = (int)n_ids;
	r->max_tokens = o->cfg.default_max_tokens;
	if (parse_params(r, json_object_get(root, "params"), n_ctx - r->n_prompt, why,
	    sizeof(why)) != 0) {
		conn_respond_error(c, 400, "invalid_params", "%s (the prompt has %d tokens, the "
		    "context size is %d)", why, r->n_prompt, n_ctx);
		goto fail;
	}
	if (r->max_tokens > n_ctx - r->n_prompt)
		r->max_tokens = n_ctx - r->n_prompt;
	r->n_ctx = r->n_prompt + r->max_tokens;
	if (sampler_params_validate(&r->sp, &err) != 0) {
		conn_respond_error(c, 400, "invalid_params", "%s", err.msg);
		goto fail;
	}
	if (request_deadline(hr, &r->deadline_ns, why, sizeof(why)) != 0) {
		conn_respond_error(c, 400, "invalid_deadline", "%s", why);
		goto fail;
	}
	json_decref(root);
	req_start(r);
	return;
fail:
	json_decref(root);
	req_discard(r);
}

/* ------------------------------------------------------------ /cancel */

static void
api_cancel(struct orcd *o, struct conn *c)
{
	const struct http_req *hr = conn_request(c);
	json_error_t je;
	json_t *root = json_loadb(hr->body, hr->body_len, 0, &je), *v;
	struct req *r;

	if (root == NULL) {
		conn_respond_error(c, 400, "invalid_json", "invalid JSON at line %d column %d: %s",
		    je.line, je.column, je.text);
		return;
	}
	v = json_object_get(root, "job_id");
	if (!json_is_object(root) || v == NULL || !json_is_string(v)) {
		json_decref(root);
		conn_respond_error(c, 400, "invalid_request", "job_id is required and must be a string");
		return;
	}
	r = o->sched ? sched_find_job(o->sched, json_string_value(v)) : NULL;
	if (r == NULL) {
		conn_respond_error(c, 404, "not_found", "no running job with this job_id");
		json_decref(root);
		return;
	}
	{
		char body[512], e[1600];
		int n;

		e[sse_json_escape(r->job_id, strlen(r->job_id) > 256 ? 256 : strlen(r->job_id), e)] = 0;
		n = snprintf(body, sizeof(body), "{\"job_id\":\"%s\",\"status\":\"cancelling\","
		    "\"state\":\"%s\"}\n", e, req_state_name(r->state));
		log_msg(LOG_INFO, r->corr, "cancel requested for job %s (%s)", r->job_id,
		    req_state_name(r->state));
		json_decref(root);
		/* answer first: aborting may end the stream of another connection */
		conn_respond(c, 202, "application/json", body, (size_t)n, NULL);
	}
	req_abort(r, REQ_ABORT_CANCEL);
}

/* ------------------------------------------------------------ health, metrics */

static void
api_health(struct orcd *o, struct conn *c)
{
	double t0 = orcd_now();

	conn_respond(c, o->health.status, "application/json", o->health.json,
	    (size_t)o->health.len, "Cache-Control: no-store\r\n");
	metric_histogram_observe(o->m->health_latency, orcd_now() - t0);
}

static void
api_metrics(struct orcd *o, struct conn *c)
{
	char *text = NULL;
	ssize_t n;

	metric_gauge_set(o->m->uptime, orcd_now() - o->t_start);
	orcd_metrics_mem(o);
	n = metrics_render(o->metrics, &text);
	if (n < 0) {
		conn_respond_error(c, 500, "internal_error", "cannot render the metrics");
		return;
	}
	conn_respond(c, 200, METRICS_CONTENT_TYPE, text, (size_t)n, NULL);
	free(text);
}

/* ------------------------------------------------------------ routing */

struct route {
	const char *path;
	int method;
	void (*fn)(struct orcd *o, struct conn *c);
};

static void
api_live(struct orcd *o, struct conn *c)
{
	static const char body[] = "{\"status\":\"alive\"}\n";

	conn_respond(c, 200, "application/json", body, sizeof(body) - 1, NULL);
}

static const struct route routes[] = {
	{ "/execute", HTTP_POST, api_execute },
	{ "/cancel", HTTP_POST, api_cancel },
	{ "/health", HTTP_GET, api_health },
	{ "/health/live", HTTP_GET, api_live },
	{ "/metrics", HTTP_GET, api_metrics },
};

void
api_dispatch(struct orcd *o, struct conn *c)
{
	const struct http_req *hr = conn_request(c);
	bool path_known = false;

	for (size_t i = 0; i < sizeof(routes) / sizeof(routes[0]); i++) {
		if (strcmp(hr->path, routes[i].path) != 0)
			continue;
		path_known = true;
		if (hr->method == routes[i].method ||
		    (routes[i].method == HTTP_GET && hr->method == HTTP_HEAD)) {
			log_debug("%s %s", llhttp_method_name(hr->method), hr->url);
			routes[i].fn(o, c);
			return;
		}
	}
	if (path_known) {
		char allow[64];
		char body[256];
		int n;
		const char *want = NULL;

		for (size_t i = 0; i < sizeof(routes) / sizeof(routes[0]); i++)
			if (strcmp(hr->path, routes[i].path) == 0)
				want = llhttp_method_name(routes[i].method);
		snprintf(allow, sizeof(allow), "Allow: %s\r\n", want);
		n = snprintf(body, sizeof(body), "{\"error\":{\"code\":\"method_not_allowed\","
		    "\"message\":\"%s needs %s\"}}\n", hr->path, want);
		conn_respond(c, 405, "application/json", body, (size_t)n, allow);
		return;
	}
	conn_respond_error(c, 404, "not_found", "no such endpoint: %.128s", hr->path);
}
