/*
 * The server's metric set: every orcd_* series registered once at startup
 * (metrics.h does the storage and exposition), with small helpers for the
 * places that update them.
 */
#ifndef ORCD_METRICS_ORCD_H
#define ORCD_METRICS_ORCD_H

#include "metrics.h"

struct orcd;

enum req_outcome {
	OUTCOME_DONE,
	OUTCOME_CANCELLED,
	OUTCOME_DEADLINE,
	OUTCOME_DISCONNECTED,
	OUTCOME_FAILED,
	OUTCOME_SHUTDOWN,
	OUTCOME_COUNT
};

#define ORCD_METRICS_HTTP_CODES 16

struct orcd_metrics {
	struct metric_counter *http[ORCD_METRICS_HTTP_CODES];
	int http_code[ORCD_METRICS_HTTP_CODES];
	struct metric_counter *http_other;
	struct metric_gauge *connections;
	struct metric_counter *requests[OUTCOME_COUNT];
	struct metric_counter *deadline_aborts;
	struct metric_counter *prompt_tokens;
	struct metric_counter *prompt_reused;
	struct metric_counter *gen_tokens;
	struct metric_gauge *active;
	struct metric_gauge *queued;
	struct metric_gauge *ready;
	struct metric_histogram *ttft;
	struct metric_histogram *itl;
	struct metric_histogram *e2e;
	struct metric_histogram *queue_wait;
	struct metric_histogram *cancel_latency;
	struct metric_histogram *disconnect_latency;
	struct metric_histogram *step_batch;
	struct metric_histogram *step_tokens;
	struct metric_histogram *step_seconds;
	struct metric_histogram *step_handler;
	struct metric_histogram *health_latency;
	struct metric_gauge *phase_model_load;
	struct metric_gauge *phase_backend_init;
	struct metric_gauge *phase_http_start;
	struct metric_gauge *shutdown_seconds;
	struct metric_gauge *uptime;
	struct metric_histogram *loop_lag;
	struct metric_gauge *loop_lag_max;
	/* memory (the VRAM monitor) */
	struct metric_gauge *mem_used;
	struct metric_gauge *mem_baseline;
	struct metric_gauge *mem_soft_limit;
	struct metric_gauge *mem_hard_limit;
	struct metric_gauge *kv_used;
	struct metric_gauge *kv_capacity;
	struct metric_gauge *kv_block;
	struct metric_counter *mem_soft_violations;
	struct metric_counter *mem_hard_violations;
	struct metric_counter *emergency_aborts;
	struct metric_gauge *leaked_bytes;
	/* with --seal only (NULL otherwise) */
	struct metric_histogram *seal_verify_seconds;
	struct metric_counter *seal_verifications[2];   /* ok, failed */
	struct metric_gauge *sealed;
};

/* Sets the memory gauges from the scheduler's view (loop thread). */
void orcd_metrics_mem(struct orcd *o);

int orcd_metrics_init(struct orcd *o);
void orcd_metrics_free(struct orcd *o);
void orcd_metrics_http(struct orcd *o, int status);
void orcd_metrics_conn_gauge(struct orcd *o, int n);
const char *orcd_outcome_name(enum req_outcome k);

#endif
