/* The server's metric set (see metrics_orcd.h). */
#include <stdio.h>
#include <stdlib.h>

#include "orcd/backend.h"
#include "metrics_orcd.h"
#include "orcd.h"
#include "sched.h"

static const char *outcome_names[OUTCOME_COUNT] = {
	"done", "cancelled", "deadline", "disconnected", "failed", "shutdown",
};

const char *
orcd_outcome_name(enum req_outcome k)
{
	return k < OUTCOME_COUNT ? outcome_names[k] : "unknown";
}

int
orcd_metrics_init(struct orcd *o)
{
	static const int codes[] = { 200, 202, 400, 404, 405, 408, 413, 429, 431,
	    500, 503, 504, 505 };
	/* latency buckets: 100 us .. ~100 s, x2 */
	double lat[21], small[16], batch[13], tokens[14], fine[48];
	struct orcd_metrics *m = calloc(1, sizeof(*m));
	struct metrics *r = metrics_new();
	char labels[64];

	if (m == NULL || r == NULL) {
		free(m);
		metrics_free(r);
		return -1;
	}
	o->m = m;
	o->metrics = r;
	metrics_buckets_exponential(0.0001, 2.0, 21, lat);
	metrics_buckets_exponential(0.00001, 2.0, 16, small);
	metrics_buckets_exponential(1, 2.0, 13, batch);
	metrics_buckets_exponential(1, 2.0, 14, tokens);
	/* abort latencies are compared with one decode step: finer buckets */
	metrics_buckets_exponential(0.00001, 1.25, 48, fine);

	for (size_t i = 0; i < sizeof(codes) / sizeof(codes[0]); i++) {
		snprintf(labels, sizeof(labels), "code=\"%d\"", codes[i]);
		m->http[i] = metrics_counter(r, "orcd_http_responses_total",
		    "HTTP responses by status code", labels);
		m->http_code[i] = codes[i];
	}
	m->http_other = metrics_counter(r, "orcd_http_responses_total",
	    "HTTP responses by status code", "code=\"other\"");
	m->connections = metrics_gauge(r, "orcd_connections", "open client connections", NULL);
	for (int k = 0; k < OUTCOME_COUNT; k++) {
		snprintf(labels, sizeof(labels), "outcome=\"%s\"", outcome_names[k]);
		m->requests[k] = metrics_counter(r, "orcd_requests_total",
		    "generation requests by how they ended", labels);
	}
	m->deadline_aborts = metrics_counter(r, "orcd_deadline_aborts_total",
	    "requests ended by their deadline (before or during generation)", NULL);
	m->prompt_tokens = metrics_counter(r, "orcd_prompt_tokens_total", "prompt tokens processed", NULL);
	m->prompt_reused = metrics_counter(r, "orcd_prompt_tokens_reused_total",
	    "prompt tokens whose KV came from the prefix cache (no prefill)", NULL);
	m->gen_tokens = metrics_counter(r, "orcd_generated_tokens_total", "tokens generated", NULL);
	m->active = metrics_gauge(r, "orcd_active_requests", "requests in prefill or decode", NULL);
	m->queued = metrics_gauge(r, "orcd_queued_requests", "admitted requests waiting for a slot", NULL);
	m->ready = metrics_gauge(r, "orcd_ready", "1 when the model is loaded and the worker healthy", NULL);
	m->ttft = metrics_histogram(r, "orcd_time_to_first_token_seconds",
	    "request received to first token written", NULL, lat, 21);
	m->itl = metrics_histogram(r, "orcd_inter_token_seconds",
	    "time between consecutive tokens of a stream", NULL, lat, 21);
	m->e2e = metrics_histogram(r, "orcd_request_duration_seconds",
	    "request received to last event written", NULL, lat, 21);
	m->queue_wait = metrics_histogram(r, "orcd_queue_wait_seconds",
	    "admission to the first scheduled step", NULL, lat, 21);
	m->cancel_latency = metrics_histogram(r, "orcd_cancel_latency_seconds",
	    "cancel request seen to KV cache freed", NULL, fine, 48);
	m->disconnect_latency = metrics_histogram(r, "orcd_disconnect_abort_seconds",
	    "client disconnect seen to KV cache freed", NULL, fine, 48);
	m->step_batch = metrics_histogram(r, "orcd_step_batch_size",
	    "sequences per engine step", NULL, batch, 13);
	m->step_tokens = metrics_histogram(r, "orcd_step_tokens",
	    "tokens per engine step", NULL, tokens, 14);
	m->step_seconds = metrics_histogram(r, "orcd_step_seconds",
	    "engine step duration", NULL, fine, 48);
	m->step_handler = metrics_histogram(r, "orcd_step_handler_seconds",
	    "event-loop time to hand a step's tokens to the requests and submit the next",
	    NULL, small, 16);
	m->health_latency = metrics_histogram(r, "orcd_health_handler_seconds",
	    "GET /health handler time", NULL, small, 16);
	m->phase_model_load = metrics_gauge(r, "orcd_startup_phase_seconds",
	    "duration of each startup phase", "phase=\"model_load\"");
	m->phase_backend_init = metrics_gauge(r, "orcd_startup_phase_seconds",
	    "duration of each startup phase", "phase=\"backend_init\"");
	m->phase_http_start = metrics_gauge(r, "orcd_startup_phase_seconds",
	    "duration of each startup phase", "phase=\"http_start\"");
	m->shutdown_seconds = metrics_gauge(r, "orcd_shutdown_seconds",
	    "duration of the last graceful shutdown (drain)", NULL);
	m->uptime = metrics_gauge(r, "orcd_uptime_seconds", "seconds since start", NULL);
	m->loop_lag = metrics_histogram(r, "orcd_loop_lag_seconds",
	    "lateness of a periodic event-loop timer (how long the loop was blocked)",
	    NULL, small, 16);
	m->loop_lag_max = metrics_gauge(r, "orcd_loop_lag_max_seconds",
	    "largest event-loop timer lateness since start", NULL);
	m->mem_used = metrics_gauge(r, "orcd_memory_tracked_bytes",
	    "memory the backend tracks (VRAM allocations on CUDA, KV blocks held on the CPU)", NULL);
	m->mem_baseline = metrics_gauge(r, "orcd_memory_baseline_bytes",
	    "tracked memory after load with no request (the leak check's reference)", NULL);
	m->mem_soft_limit = metrics_gauge(r, "orcd_memory_soft_limit_bytes",
	    "tracked memory above which admission pauses (0 = none)", NULL);
	m->mem_hard_limit = metrics_gauge(r, "orcd_memory_hard_limit_bytes",
	    "tracked memory above which the newest requests are aborted (0 = none)", NULL);
	m->kv_used = metrics_gauge(r, "orcd_kv_used_bytes", "KV cache held by requests", NULL);
	m->kv_capacity = metrics_gauge(r, "orcd_kv_capacity_bytes", "KV cache the backend has", NULL);
	m->kv_block = metrics_gauge(r, "orcd_kv_block_bytes",
	    "bytes of one KV block (CPU) or one sequence slot (CUDA)", NULL);
	m->mem_soft_violations = metrics_counter(r, "orcd_memory_soft_violations_total",
	    "times tracked memory went above the soft limit", NULL);
	m->mem_hard_violations = metrics_counter(r, "orcd_memory_hard_violations_total",
	    "hard-limit checks that found tracked memory above the limit", NULL);
	m->emergency_aborts = metrics_counter(r, "orcd_memory_emergency_aborts_total",
	    "requests aborted to bring memory under the hard limit", NULL);
	m->leaked_bytes = metrics_gauge(r, "orcd_leaked_bytes",
	    "tracked memory above the baseline when the last request drained (should be 0)", NULL);
	if (o->cfg.seal != NULL) {
		double sec[16];

		/* a verification of a small model takes milliseconds, of a large
		 * one on the CPU tens of seconds */
		metrics_buckets_exponential(0.001, 2.0, 16, sec);
		m->seal_verify_seconds = metrics_histogram(r, "orcd_seal_verify_seconds",
		    "duration of a seal verification (load and re-verifications)", NULL,
		    sec, 16);
		m->seal_verifications[0] = metrics_counter(r, "orcd_seal_verifications_total",
		    "seal verifications by result", "result=\"ok\"");
		m->seal_verifications[1] = metrics_counter(r, "orcd_seal_verifications_total",
		    "seal verifications by result", "result=\"failed\"");
		m->sealed = metrics_gauge(r, "orcd_sealed",
		    "1 while the served weights match their seal", NULL);
	}
	return 0;
}

void
orcd_metrics_mem(struct orcd *o)
{
	struct backend_mem mem;

	if (o->m == NULL || o->sched == NULL)
		return;
	sched_mem_read(o->sched, &mem);
	metric_gauge_set(o->m->mem_used, (double)mem.used);
	metric_gauge_set(o->m->mem_baseline, (double)sched_mem_baseline(o->sched)->used);
	metric_gauge_set(o->m->mem_soft_limit, (double)o->cfg.mem_soft_limit);
	metric_gauge_set(o->m->mem_hard_limit, (double)o->cfg.mem_hard_limit);
	metric_gauge_set(o->m->kv_used, (double)mem.kv_used);
	metric_gauge_set(o->m->kv_capacity, (double)mem.kv_capacity);
	metric_gauge_set(o->m->kv_block, (double)mem.kv_block_bytes);
}

void
orcd_metrics_free(struct orcd *o)
{
	metrics_free(o->metrics);
	free(o->m);
	o->metrics = NULL;
	o->m = NULL;
}

void
orcd_metrics_http(struct orcd *o, int status)
{
	struct orcd_metrics *m = o->m;

	if (m == NULL)
		return;
	for (int i = 0; i < ORCD_METRICS_HTTP_CODES && m->http[i] != NULL; i++)
		if (m->http_code[i] == status) {
			metric_counter_inc(m->http[i]);
			return;
		}
	metric_counter_inc(m->http_other);
}

void
orcd_metrics_conn_gauge(struct orcd *o, int n)
{
	if (o->m != NULL)
		metric_gauge_set(o->m->connections, n);
}
