/*
 * Server configuration: defaults, a config file of `key = value` lines and
 * command-line flags (flags win).  Every key has a flag of the same name
 * (`max_body_bytes` <-> `--max-body-bytes`).  Values are validated with an
 * error that names the key and, for files, the line.
 */
#ifndef ORCD_CONF_H
#define ORCD_CONF_H

#include <stdbool.h>
#include <stddef.h>
#include <stdio.h>

#include "err.h"

#define CONF_MAX_LISTEN 8

struct conf {
	char *model;
	char *listen[CONF_MAX_LISTEN];
	int n_listen;
	char *backend;            /* "cpu" (default) or "cuda" */
	int threads;              /* CPU threads; 0 = all */
	int compute_nice;         /* nice value of the compute threads */
	int max_connections;
	long max_header_bytes;
	long max_body_bytes;
	int header_timeout_ms;
	int body_timeout_ms;
	int keepalive_timeout_ms;
	long write_high_watermark;
	double shutdown_grace_s;
	char *ready_file;
	int log_level;            /* enum log_level */
	int ctx_size;             /* per-request context (prompt + generated) */
	int max_batch;            /* sequences per step */
	int max_queue;            /* waiting requests before 429 */
	int prefill_chunk;        /* prompt tokens per sequence per step */
	int max_step_tokens;      /* tokens per step, all sequences */
	int default_max_tokens;
	int deadline_min_ms;      /* reject (504) deadlines closer than this */
	int health_interval_ms;   /* /health snapshot refresh */
	double residency_interval_s; /* VRAM residency re-verification, 0 = off */
	int cuda_graphs;             /* CUDA: decode steps as CUDA graphs */
	int max_job_id_bytes;
	long kv_memory;              /* KV pool bytes (CPU), 0 = default */
	int kv_block_tokens;         /* positions per KV block */
	int cuda_kv_paged;           /* CUDA: paged KV pool instead of slots */
	int prefix_cache;            /* reuse KV of shared prompt prefixes */
	long mem_soft_limit;         /* tracked bytes: above, admission pauses */
	long mem_hard_limit;         /* tracked bytes: above, newest aborted */
	double mem_snapshot_interval_s; /* memory snapshot log period, 0 = off */
	int max_wait_ms;             /* hold a small decode batch for arrivals */
	double prefill_latency_ratio; /* a step with a prompt chunk vs decode-only */
	char *seal;                  /* seal file of the model, NULL: not sealed */
	char *seal_key_file;
	double seal_reverify_s;      /* seconds between re-verifications, 0 = off */
	char *audit_log;             /* file, "-" or "stderr"; NULL: none */
};

void conf_defaults(struct conf *c);
void conf_free(struct conf *c);
/* argv[0] is the subcommand ("serve"); handles --config FILE first, then
 * the flags.  Returns 0, 1 for --help (usage printed), -1 with err. */
int conf_parse_args(struct conf *c, int argc, char **argv, struct orcd_err *err);
int conf_load_file(struct conf *c, const char *path, struct orcd_err *err);
/* Sets one key from text (shared by file and flags). */
int conf_set(struct conf *c, const char *key, const char *value, struct orcd_err *err);
void conf_usage(FILE *f);

#endif
